"""The running kernel's struct layouts and enum values, for BPF programs.

bcc compiles against whatever kernel headers it finds, and on a custom
kernel those belong to another version: an `offsetof()` from them is a
guess.  The running kernel's BTF is not.  This module reads every offset and
internal constant the page-state reader (bpf/ut_pagestate.h) and the kernel
tier need from /sys/kernel/btf/vmlinux and hands them to the BPF program as
`#define UT_L_<NAME> <value>`.

A fact is looked up by member path through anonymous structs and unions, and
by each name the kernel has used for it (compound_head became compound_info
in 7.x; page.index became __folio_index in 6.17).  What this kernel lacks is
reported as missing together with what depends on it: an optional fact gets
`UT_L_HAS_<NAME> 0` (the BPF code leaves that part out), a required one
makes `load()` raise LayoutError.  Nothing is ever guessed.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass, field

from . import btf

PREFIX = "UT_L_"


class LayoutError(Exception):
    """A fact the page-state reader cannot do without is missing."""


@dataclass(frozen=True)
class Offset:
    """The byte offset of a member: the first path this kernel has wins."""

    name: str
    struct: str
    paths: tuple[str, ...]
    used_for: str
    required: bool = True


@dataclass(frozen=True)
class Enumerator:
    """An enum constant; enum=None searches every enum (anonymous ones too)."""

    name: str
    enumerators: tuple[str, ...]
    enum: str | None
    used_for: str
    required: bool = True


# What the page-state reader and the kernel tier read, in the order a reader
# meets them: current -> mm -> page tables -> struct page -> folio; VMA and
# uffd context for the kernel tier.
OFFSETS = (
    Offset("TASK_MM", "task_struct", ("mm",), "the caller's mm (page-table walk)"),
    Offset("MM_PGD", "mm_struct", ("pgd",), "the top page table (page-table walk)"),
    Offset("PAGE_FLAGS", "page", ("flags",), "PageAnonExclusive of the mapped page"),
    Offset("PAGE_COMPOUND_HEAD", "page", ("compound_head", "compound_info"),
           "the folio of a tail page"),
    Offset("PAGE_MAPCOUNT", "page", ("_mapcount",), "the mapped page's own mapcount"),
    Offset("FOLIO_FLAGS", "folio", ("flags",), "large, locked, swap-cache folio"),
    Offset("FOLIO_MAPPING", "folio", ("mapping",), "anon / KSM folio"),
    Offset("FOLIO_INDEX", "folio", ("index", "__folio_index"),
           "calibration check: an anon page's index is its address >> PAGE_SHIFT"),
    Offset("FOLIO_REFCOUNT", "folio", ("_refcount",), "refcount, maybe-DMA-pinned (small)"),
    Offset("FOLIO_MAPCOUNT", "folio", ("_mapcount",), "mapcount of a small folio"),
    Offset("FOLIO_FLAGS_1", "folio", ("_flags_1",), "order of a large folio (_flags_1 & 0xff)",
           required=False),
    Offset("FOLIO_PINCOUNT", "folio", ("_pincount",), "maybe-DMA-pinned (large folio)",
           required=False),
    Offset("FOLIO_LARGE_MAPCOUNT", "folio", ("_large_mapcount",), "mapcount of a large folio",
           required=False),
    Offset("FOLIO_ENTIRE_MAPCOUNT", "folio", ("_entire_mapcount",),
           "PMD mappings of a large folio", required=False),
    Offset("VMA_VM_START", "vm_area_struct", ("vm_start",), "VMA range (kernel tier)",
           required=False),
    Offset("VMA_VM_END", "vm_area_struct", ("vm_end",), "VMA range (kernel tier)",
           required=False),
    Offset("VMA_VM_FLAGS", "vm_area_struct", ("vm_flags",), "VMA flags (kernel tier)",
           required=False),
    Offset("VMA_VM_OPS", "vm_area_struct", ("vm_ops",), "anonymous VMA test (kernel tier)",
           required=False),
    Offset("VMA_UFFD_CTX", "vm_area_struct", ("vm_userfaultfd_ctx.ctx",),
           "the uffd a VMA is registered with (kernel tier)", required=False),
    Offset("UFFD_CTX_MM", "userfaultfd_ctx", ("mm",), "cross-mm moves (kernel tier)",
           required=False),
    Offset("FILE_PRIVATE_DATA", "file", ("private_data",),
           "a uffd file's context (kernel tier; the VMA reader's registration test)",
           required=False),
    # the VMA reader (bpf/ut_vmastate.h): mm->mm_mt, a maple tree of VMAs
    Offset("MM_MT_ROOT", "mm_struct", ("mm_mt.ma_root",), "the root of the VMA tree (VMA reader)",
           required=False),
    Offset("MT_NODE_PARENT", "maple_node", ("parent",),
           "a dead maple node points to itself (VMA reader)", required=False),
    Offset("MT_R64_PIVOT", "maple_node", ("mr64.pivot",), "range_64/leaf_64 pivots (VMA reader)",
           required=False),
    Offset("MT_R64_SLOT", "maple_node", ("mr64.slot",), "range_64/leaf_64 slots (VMA reader)",
           required=False),
    Offset("MT_R64_META_END", "maple_node", ("mr64.meta.end",),
           "data end of a range_64 node that is not full (VMA reader)", required=False),
    Offset("MT_A64_PIVOT", "maple_node", ("ma64.pivot",), "arange_64 pivots (VMA reader)",
           required=False),
    Offset("MT_A64_SLOT", "maple_node", ("ma64.slot",), "arange_64 slots (VMA reader)",
           required=False),
    Offset("MT_A64_META_END", "maple_node", ("ma64.meta.end",),
           "data end of an arange_64 node (VMA reader)", required=False),
    Offset("VMA_ANON_VMA", "vm_area_struct", ("anon_vma",), "anon_vma set (VMA reader)",
           required=False),
    Offset("VMA_VM_FILE", "vm_area_struct", ("vm_file",), "file-backed VMA (VMA reader)",
           required=False),
    # the moving fd's userfaultfd context: current->files->fdt->fd[fd]->private_data
    Offset("TASK_FILES", "task_struct", ("files",), "the moving fd's file (VMA reader)",
           required=False),
    Offset("FILES_FDT", "files_struct", ("fdt",), "the moving fd's file (VMA reader)",
           required=False),
    Offset("FDTABLE_MAX_FDS", "fdtable", ("max_fds",), "the moving fd's file (VMA reader)",
           required=False),
    Offset("FDTABLE_FD", "fdtable", ("fd",), "the moving fd's file (VMA reader)",
           required=False),
    # the uffd reader (bpf/ut_uffdstate.h): mmap_changing and the events
    # queued on ctx->event_wqh, each a userfaultfd_wait_queue on the stack
    # of the thread that raised it
    Offset("UFFD_CTX_MMAP_CHANGING", "userfaultfd_ctx", ("mmap_changing",),
           "mmap_changing of the moving uffd (uffd reader)", required=False),
    Offset("UFFD_CTX_EVENT_WQH_HEAD", "userfaultfd_ctx", ("event_wqh.head",),
           "the queue of unread non-cooperative events (uffd reader)", required=False),
    Offset("WQ_ENTRY_PRIVATE", "wait_queue_entry", ("private",),
           "the thread waiting for its event to be read (uffd reader)", required=False),
    Offset("WQ_ENTRY_ENTRY", "wait_queue_entry", ("entry",),
           "the queue's list links (uffd reader)", required=False),
    Offset("UWQ_MSG_EVENT", "userfaultfd_wait_queue", ("msg.event",),
           "the event's type, UFFD_EVENT_* (uffd reader)", required=False),
    Offset("UWQ_WQ", "userfaultfd_wait_queue", ("wq",),
           "the event's queue entry (uffd reader)", required=False),
    Offset("TASK_PID", "task_struct", ("pid",), "the raising thread (uffd reader)",
           required=False),
    Offset("TASK_TGID", "task_struct", ("tgid",), "the raising process (uffd reader)",
           required=False),
    Offset("TASK_COMM", "task_struct", ("comm",), "the raising thread's name (uffd reader)",
           required=False),
    # the waiter reader (ut_uffdstate.h, ut_uffd_waiters_read): threads
    # asleep in handle_userfault() on the uffd's two fault queues
    Offset("UFFD_CTX_FAULT_PENDING_WQH_HEAD", "userfaultfd_ctx", ("fault_pending_wqh.head",),
           "faults not yet read by the monitor (waiter reader)", required=False),
    Offset("UFFD_CTX_FAULT_WQH_HEAD", "userfaultfd_ctx", ("fault_wqh.head",),
           "faults read by the monitor, not yet resolved (waiter reader)", required=False),
    Offset("UWQ_MSG_ADDRESS", "userfaultfd_wait_queue", ("msg.arg.pagefault.address",),
           "the address a waiter faulted on (waiter reader)", required=False),
    Offset("TASK_NVCSW", "task_struct", ("nvcsw",),
           "a waiter's context switches: asleep since first seen? (waiter reader)",
           required=False),
    Offset("TASK_NIVCSW", "task_struct", ("nivcsw",),
           "a waiter's context switches: asleep since first seen? (waiter reader)",
           required=False),
    Offset("VM_FAULT_ADDRESS", "vm_fault", ("address",),
           "the faulting address at handle_userfault() entry (kernel tier: exact waits)",
           required=False),
)


@dataclass(frozen=True)
class Slots:
    """How many pointer-sized elements an array member holds (a maple node's
    pivots: MAPLE_RANGE64_SLOTS - 1, MAPLE_ARANGE64_SLOTS - 1)."""

    name: str
    struct: str
    path: str
    used_for: str
    required: bool = False


SLOTS = (
    Slots("MT_R64_PIVOTS", "maple_node", "mr64.pivot", "pivots of a range_64/leaf_64 node "
          "(VMA reader)"),
    Slots("MT_A64_PIVOTS", "maple_node", "ma64.pivot", "pivots of an arange_64 node (VMA reader)"),
)

ENUMERATORS = (
    Enumerator("PG_HEAD", ("PG_head",), "pageflags", "large folio (PG_head)"),
    # an alias whose target changed across versions (PG_mappedtodisk, then
    # PG_owner_2): only the kernel's own enum knows the bit
    Enumerator("PG_ANON_EXCLUSIVE", ("PG_anon_exclusive",), "pageflags",
               "PageAnonExclusive of the mapped page"),
    Enumerator("PG_LOCKED", ("PG_locked",), "pageflags", "folio locked (split, migration)",
               required=False),
    Enumerator("PG_SWAPBACKED", ("PG_swapbacked",), "pageflags", "swap-backed folio",
               required=False),
    Enumerator("PG_SWAPCACHE", ("PG_swapcache",), "pageflags", "folio in the swap cache",
               required=False),
    # FOLL_* are in anonymous enums (include/linux/mm_types.h, mm/internal.h)
    Enumerator("FOLL_WRITE", ("FOLL_WRITE",), None, "GUP flags (kernel tier)", required=False),
    Enumerator("FOLL_LONGTERM", ("FOLL_LONGTERM",), None, "long-term pins (kernel tier)",
               required=False),
    Enumerator("FOLL_PIN", ("FOLL_PIN",), None, "pins vs plain GUP references (kernel tier)",
               required=False),
    # the tlb:tlb_flush reasons the tracepoint tier counts by (UT_TLB_*)
    Enumerator("TLB_FLUSH_ON_TASK_SWITCH", ("TLB_FLUSH_ON_TASK_SWITCH",), "tlb_flush_reason",
               "TLB flushes not caused by a move", required=False),
    Enumerator("TLB_REMOTE_SHOOTDOWN", ("TLB_REMOTE_SHOOTDOWN",), "tlb_flush_reason",
               "TLB flushes other CPUs do for a move", required=False),
    Enumerator("TLB_REMOTE_SEND_IPI", ("TLB_REMOTE_SEND_IPI",), "tlb_flush_reason",
               "TLB-flush IPIs a move sends", required=False),
    # maple node types, encoded in bits 3..6 of a node pointer (VMA reader)
    Enumerator("MAPLE_LEAF_64", ("maple_leaf_64",), "maple_type", "leaf nodes (VMA reader)",
               required=False),
    Enumerator("MAPLE_RANGE_64", ("maple_range_64",), "maple_type",
               "inner nodes; below it, leaves (VMA reader)", required=False),
    Enumerator("MAPLE_ARANGE_64", ("maple_arange_64",), "maple_type",
               "inner nodes with gaps (VMA reader)", required=False),
    # VM_* flag bits: an enum only since 7.x (before, #defines:
    # uffdtrace/vmaflags.py has the values that never changed)
    *(Enumerator(f"VMA_{flag}_BIT", (f"VMA_{flag}_BIT",), None,
                 "VM_* bit (else the #define value in uffdtrace/vmaflags.py)",
                 required=False)
      for flag in ("READ", "WRITE", "EXEC", "SHARED", "UFFD_MISSING", "PFNMAP", "UFFD_WP",
                   "LOCKED", "IO", "HUGETLB", "MIXEDMAP", "SHADOW_STACK", "UFFD_MINOR")),
)

# What the VMA reader (bpf/ut_vmastate.h) cannot do without; the moving
# fd's userfaultfd context (UFFD_CTX_FACTS) only adds "registered with
# *this* userfaultfd".
VMA_READER_FACTS = ("TASK_MM", "MM_MT_ROOT", "MT_NODE_PARENT", "MT_R64_PIVOT", "MT_R64_SLOT",
                    "MT_R64_META_END", "MT_A64_PIVOT", "MT_A64_SLOT", "MT_A64_META_END",
                    "MT_R64_PIVOTS", "MT_A64_PIVOTS", "MAPLE_LEAF_64", "MAPLE_RANGE_64",
                    "MAPLE_ARANGE_64", "VMA_VM_START", "VMA_VM_END", "VMA_VM_FLAGS",
                    "VMA_VM_OPS", "VMA_UFFD_CTX", "VMA_ANON_VMA", "VMA_VM_FILE")
UFFD_CTX_FACTS = ("TASK_FILES", "FILES_FDT", "FDTABLE_MAX_FDS", "FDTABLE_FD",
                  "FILE_PRIVATE_DATA")
# What the uffd reader (bpf/ut_uffdstate.h) needs besides UFFD_CTX_FACTS.
UFFD_READER_FACTS = UFFD_CTX_FACTS + (
    "UFFD_CTX_MMAP_CHANGING", "UFFD_CTX_EVENT_WQH_HEAD", "WQ_ENTRY_PRIVATE", "WQ_ENTRY_ENTRY",
    "UWQ_MSG_EVENT", "UWQ_WQ", "TASK_PID", "TASK_TGID", "TASK_COMM")
# What the waiter reader (who a move or UFFDIO_WAKE wakes) needs besides
# those (it finds the uffd's context the same way, and includes
# ut_vmastate.h for it).
WAITER_READER_FACTS = VMA_READER_FACTS + UFFD_READER_FACTS + (
    "UFFD_CTX_FAULT_PENDING_WQH_HEAD", "UFFD_CTX_FAULT_WQH_HEAD", "UWQ_MSG_ADDRESS",
    "TASK_NVCSW", "TASK_NIVCSW", "VM_FAULT_ADDRESS")

# include/linux/swap.h: swap types [0, MAX_SWAPFILES) are swap devices; above
# them, in this order: one hwpoison type (CONFIG_MEMORY_FAILURE), three
# migration types, the device-private types, one PTE-marker type (the last of
# the 2^5).  MAX_SWAPFILES shrinks with the config, so it is read from BTF:
# the type of `swap_info[MAX_SWAPFILES]` (an array of swap_info_struct
# pointers) is in BTF even though the variable is not.
SWAP_TYPES = 1 << 5
SWP_MIGRATION_NUM = 3
SWP_PTE_MARKER_NUM = 1
# the fewest types the specials above can take (no hwpoison, no device)
_MIN_SPECIAL = SWP_MIGRATION_NUM + SWP_PTE_MARKER_NUM
# ... and the most (hwpoison + 4 device-private types, as in 6.12)
_MAX_SPECIAL = _MIN_SPECIAL + 1 + 4
# A global function that exists exactly when CONFIG_MEMORY_FAILURE does.
MEMORY_FAILURE_FUNC = "memory_failure"


# Facts the BPF code can do without: each gets UT_L_HAS_<NAME> 0/1.
OPTIONAL = tuple(f.name for f in (*OFFSETS, *ENUMERATORS, *SLOTS) if not f.required) + \
    ("MAX_SWAPFILES",)


@dataclass(frozen=True)
class Missing:
    name: str
    looked_for: str
    used_for: str
    required: bool


@dataclass
class Layout:
    """The facts, where they came from, and what this kernel lacks."""

    source: str
    values: dict[str, int] = field(default_factory=dict)    # NAME -> value
    origin: dict[str, str] = field(default_factory=dict)    # NAME -> where it came from
    missing: list[Missing] = field(default_factory=list)

    def defines(self) -> dict[str, int]:
        """UT_L_<NAME> -> value, and UT_L_HAS_<NAME> -> 0/1 for each optional fact."""
        out = {PREFIX + name: value for name, value in self.values.items()}
        for name in OPTIONAL:
            out[f"{PREFIX}HAS_{name}"] = int(name in self.values)
        return out

    def lacks(self, names: tuple[str, ...]) -> list[str]:
        """Which of these facts this kernel's layout does not have."""
        return [name for name in names if name not in self.values]

    def describe(self) -> list[str]:
        """One line per fact, for `uffdtrace doctor`."""
        lines = [f"from {self.source}:"]
        lines += [f"  {PREFIX}{name} = {self._shown(name)}  ({self.origin[name]})"
                  for name in self.values]
        lines += [f"  missing {PREFIX}{m.name}: no {m.looked_for} on this kernel; "
                  f"{'needed' if m.required else 'not available'}: {m.used_for}"
                  for m in self.missing]
        return lines

    def _shown(self, name: str) -> str:
        value = self.values[name]
        return f"0x{value:x}" if value >= 1 << 16 else str(value)


def _offsets(b: btf.Btf, layout: Layout):
    for fact in OFFSETS:
        found = None
        for path in fact.paths:
            found = b.member(fact.struct, path)
            if found:
                break
        if found is None or found.bitfield_size or found.bit_offset % 8:
            layout.missing.append(Missing(fact.name, " or ".join(
                f"{fact.struct}.{p}" for p in fact.paths), fact.used_for, fact.required))
            continue
        layout.values[fact.name] = found.byte_offset
        layout.origin[fact.name] = f"offsetof({found.path}), {found.size} bytes"


def _enumerators(b: btf.Btf, layout: Layout):
    for fact in ENUMERATORS:
        value, used = None, None
        for name in fact.enumerators:
            value = b.enum_value(name, fact.enum)
            if value is not None:
                used = name
                break
        where = f"enum {fact.enum}" if fact.enum else "an enum"
        if value is None:
            layout.missing.append(Missing(fact.name, f"{' or '.join(fact.enumerators)} in {where}",
                                          fact.used_for, fact.required))
            continue
        layout.values[fact.name] = value
        layout.origin[fact.name] = f"{used} in {where}"


def _slots(b: btf.Btf, layout: Layout):
    for fact in SLOTS:
        found = b.member(fact.struct, fact.path)
        if found is None or not found.size or found.size % btf.POINTER_SIZE:
            layout.missing.append(Missing(fact.name, f"array {fact.struct}.{fact.path}",
                                          fact.used_for, fact.required))
            continue
        layout.values[fact.name] = found.size // btf.POINTER_SIZE
        layout.origin[fact.name] = f"sizeof({found.path}) / {btf.POINTER_SIZE}"


def _sizes(b: btf.Btf, layout: Layout):
    size = b.struct_size("page")
    if size is None:
        layout.missing.append(Missing("SIZEOF_PAGE", "struct page",
                                      "struct page of a pfn (vmemmap)", True))
        return
    layout.values["SIZEOF_PAGE"] = size
    layout.origin["SIZEOF_PAGE"] = "sizeof(struct page)"


def _swap_types(b: btf.Btf, layout: Layout):
    """MAX_SWAPFILES and the first migration type: which non-present PTEs are
    swap entries (move_swap_pte) and which are migration entries (retried)."""
    used_for = "swap vs migration vs other non-present entries"
    sis = b.find_one("swap_info_struct", btf.KIND_STRUCT)
    lengths: set[int] = set()
    for ptr in b.pointers_to(sis) if sis else ():
        lengths |= b.array_lengths(ptr)
    plausible = {n for n in lengths if SWAP_TYPES - _MAX_SPECIAL <= n <= SWAP_TYPES - _MIN_SPECIAL}
    if len(plausible) != 1:
        layout.missing.append(Missing(
            "MAX_SWAPFILES", "single array type struct swap_info_struct *[MAX_SWAPFILES] "
            f"(array lengths seen: {sorted(lengths)})", used_for, False))
        return
    max_swapfiles = plausible.pop()
    hwpoison = int(b.func_ids([MEMORY_FAILURE_FUNC])[MEMORY_FAILURE_FUNC] is not None)
    layout.values["MAX_SWAPFILES"] = max_swapfiles
    layout.origin["MAX_SWAPFILES"] = "length of the swap_info[] array type"
    layout.values["SWP_MIGRATION_FIRST"] = max_swapfiles + hwpoison
    layout.origin["SWP_MIGRATION_FIRST"] = (
        f"MAX_SWAPFILES + {hwpoison} hwpoison type "
        f"({'a' if hwpoison else 'no'} FUNC {MEMORY_FAILURE_FUNC} in BTF)")


def from_btf(b: btf.Btf) -> Layout:
    """Every fact this BTF has; missing ones are listed, never filled in."""
    layout = Layout(source=b.source)
    _offsets(b, layout)
    _enumerators(b, layout)
    _slots(b, layout)
    _sizes(b, layout)
    _swap_types(b, layout)
    return layout


@functools.lru_cache(maxsize=1)
def running() -> Layout:
    """The running kernel's layout, read once per process (LayoutError)."""
    return load()


def load(path: str = btf.VMLINUX_BTF) -> Layout:
    """The running kernel's layout; LayoutError when a required fact is
    missing (the message names each, and what depends on it)."""
    try:
        layout = from_btf(btf.Btf.load(path))
    except (OSError, btf.BtfError) as exc:
        raise LayoutError(f"cannot read kernel BTF: {exc}") from exc
    required = [m for m in layout.missing if m.required]
    if required:
        raise LayoutError("; ".join(f"this kernel's BTF has no {m.looked_for} "
                                    f"(needed for {m.used_for})" for m in required))
    return layout
