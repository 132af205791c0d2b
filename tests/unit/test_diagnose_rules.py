"""Both rule engines, one row per branch: the tracepoint tier's inference
from page state read after the call (diagnose.py) and the kernel tier's
observed evidence (kernel_evidence.py).  Every row goes through the one
entry point, diagnose(), and its result is checked three ways: the
expected cause/underlying/evidence/culprit, errno consistency (never a
cause the errno rules out), and the trace record it makes, written by the
real writer and validated against the strict schema."""
from __future__ import annotations

import errno as E
import json
from dataclasses import dataclass, field, replace

import jsonschema
import pytest

from tests.tracegen import PAGE, T0, move_event, pin
from uffdtrace.culprits import (GUP_HOOK, PIN_REGISTRATION, KsmCulprit, PinCulprit,
                                UffdEventCulprit)
from uffdtrace.diagnose import PinTable, diagnose
from uffdtrace.enrich import Enrichment, Vma
from uffdtrace.native import lib
from uffdtrace.pagestate import PageState
from uffdtrace.session import TracedMove
from uffdtrace.taxonomy import CAUSES, contradiction
from uffdtrace.tracefile import TraceWriter
from uffdtrace.traceschema import strict_schema
from uffdtrace import vmaflags
from uffdtrace.walkstate import WalkedPage
from uffdtrace.walkuffd import UffdState
from uffdtrace.walkvma import WalkedVma

L = lib()
SRC, DST = 0x7f1000000000, 0x7f0000000000


# -- building blocks -----------------------------------------------------------

def page(addr=SRC, *, present=True, swapped=False, exclusive=True, flags=("anon",), pfn=0x1234):
    return PageState(addr, present, swapped, exclusive, pfn,
                     frozenset(flags) if flags is not None else None)


HOLE = dict(present=False, exclusive=False, flags=None)


def vma(start, *, perms="rw-p", path="", flags=("rd", "wr", "mr", "mw", "me", "ac")):
    return Vma(start, start + 16 * PAGE, perms, path, frozenset(flags))


SRC_VMA = vma(SRC)
DST_VMA = vma(DST, flags=("rd", "wr", "mr", "mw", "me", "ac", "um"))


def state(src=None, dst=None, src_vma=SRC_VMA, dst_vma=DST_VMA, offset=0, error=None):
    """What the collector read from /proc at the failing position."""
    return Enrichment(SRC + offset, DST + offset, src_vma, dst_vma,
                      src if src is not None else page(SRC + offset),
                      dst if dst is not None else page(DST + offset, **HOLE), error)


GONE = Enrichment(SRC, DST, None, None, None, None)
EXITED = Enrichment(SRC, DST, None, None, None, None, error="process 100 exited")


def failure(err, *, moved=0, move_unwritten=False, **kw):
    """A failed move as the tracepoint tier sends it (`move` = -errno, or
    the bytes moved, or untouched when the kernel never wrote it)."""
    move = 0 if move_unwritten else (moved if moved else -err)
    fields = dict(src=SRC, dst=DST, len=8 * PAGE)
    fields.update(kw)
    return move_event(ret=-err, move=move, move_before=0, **fields)


def kernel_failure(err, *, kflags=0, **kw):
    """A failed move as the kernel tier sends it: userfaultfd_ioctl and
    move_pages() seen, plus whatever the row adds."""
    return failure(err, flags=L.UT_F_KERNEL_TIER,
                   kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES | kflags, **kw)


def walked(addr, where, *flags, refcount=1, mapcount=1, pincount=0, order=0):
    """A page as bpf/ut_pagestate.h reads it at the end of a failed move."""
    bits = sum(getattr(L, f"UT_PS_{f}") for f in flags)
    folio = L.UT_PS_FOLIO if where in ("PTE_PRESENT", "PMD_HUGE") else 0
    return WalkedPage(addr=addr, entry=0, pfn=0x4321, flags=bits | folio, refcount=refcount,
                      mapcount=mapcount, page_mapcount=mapcount, pincount=pincount,
                      where=getattr(L, f"UT_PSW_{where}"), level=L.UT_PSL_PAGE, order=order,
                      swp_type=0)


ANON = ("ANON", "ANON_EXCLUSIVE")


def at_exit(err, src=("PTE_PRESENT", *ANON), dst=("PTE_NONE",), moved=0, kernel=False,
            base=SRC, **kw):
    """A failed move (of src `base`) whose pages' state was read before it
    returned, where it stopped: `moved` bytes in."""
    fields = dict(src=base, flags=L.UT_F_STATE_AT_EXIT | (L.UT_F_KERNEL_TIER if kernel else 0),
                  src_state=walked(base + moved, *src), dst_state=walked(DST + moved, *dst))
    if kernel:
        fields["kflags"] = L.UT_K_IOCTL_SEEN
    fields.update(kw)
    return failure(err, moved=moved, **fields)


RW_ANON = ("rd", "wr")


def walked_vma(addr, where="FOUND", *set_, vm=RW_ANON, pages=16):
    """A VMA as bpf/ut_vmastate.h finds it at exit: `set_` are UT_VS_* names
    (without the prefix), `vm` the smaps mnemonics of its vm_flags."""
    bits = vmaflags.bits()
    start = addr - addr % (16 * PAGE)
    found = where == "FOUND"
    return WalkedVma(addr=addr, vm_start=start if found else 0,
                     vm_end=start + pages * PAGE if found else 0,
                     vm_flags=sum(1 << bits[f] for f in vm) if found else 0,
                     flags=sum(getattr(L, f"UT_VS_{f}") for f in set_),
                     where=getattr(L, f"UT_VSW_{where}"), depth=2, node_type=1)


MINE = ("UFFD_CTX", "UFFD_CTX_KNOWN", "THIS_UFFD", "ANON_VMA")


def vmas_at_exit(err, src_vma=("FOUND", "ANON_VMA"), dst_vma=("FOUND", *MINE),
                 src_vm=RW_ANON, dst_vm=RW_ANON + ("um",), **kw):
    """A failed move whose VMAs were looked up before it returned (and, as
    the program does for every failure, its pages)."""
    pages = dict(src=("PTE_NONE",) if err == E.ENOENT else ("PTE_PRESENT", *ANON))
    ev = at_exit(err, **pages, src_vma_state=walked_vma(SRC, *src_vma, vm=src_vm),
                 dst_vma_state=walked_vma(DST, *dst_vma, vm=dst_vm), **kw)
    return replace(ev, flags=ev.flags | L.UT_F_VMAS_AT_EXIT)


@dataclass
class Row:
    name: str
    event: object
    en: Enrichment | None = None
    cause: str = ""
    evidence: str = ""
    underlying: str | None = None
    culprit: type | None = None
    note: str | None = None           # a note that must be there (a substring)
    pins: list = field(default_factory=list)
    ksm: dict | None = None


PINNED_AT = SRC + 4 * PAGE
# io_uring pins the registering process's own memory: the mover (pid 100)
IO_URING_PIN = pin(100, PINNED_AT, 4 * PAGE, comm="mover")
GUP_PINNER = dict(pinner_pid=300, pinner_comm="fio", pinner_ts_ns=T0 + 7,
                  pinner_method=L.UT_PIN_USER_PAGES_FAST | L.UT_PIN_LONGTERM)

TRACEPOINT_ROWS = [
    Row("success", move_event(src=SRC, dst=DST), None, "ok", "observed"),
    # -- no page state to go on: the errno, or an observed registration --
    Row("partial, pin registration, memory gone", failure(E.EAGAIN, moved=4 * PAGE), GONE,
        "partial", "inferred", "page_pinned", PinCulprit, pins=[IO_URING_PIN]),
    Row("EBUSY, pin registration, memory gone", failure(E.EBUSY, src=PINNED_AT), GONE,
        "page_pinned", "inferred", culprit=PinCulprit, pins=[IO_URING_PIN]),
    Row("EAGAIN, nothing moved, pin registration: not a pin", failure(E.EAGAIN, src=PINNED_AT),
        GONE, "mmap_changing", "errno", note="nothing moved", pins=[IO_URING_PIN]),
    Row("ENOENT, a VMA missing", failure(E.ENOENT), state(src_vma=None), "no_vma", "inferred"),
    Row("ENOENT, both VMAs gone: unmapped after the call", failure(E.ENOENT), GONE,
        "src_hole", "errno", note="gone"),
    Row("EBUSY, process exited", failure(E.EBUSY), EXITED, "busy_unknown", "errno",
        note="exited"),
    Row("EEXIST, memory gone", failure(E.EEXIST), GONE, "dst_populated", "errno"),
    Row("ENOENT, not inspected", failure(E.ENOENT), None, "src_hole", "errno"),
    Row("partial, memory gone", failure(E.EAGAIN, moved=PAGE), GONE, "partial", "errno"),
    # -- page state, in the kernel's order of checks --
    Row("EEXIST, dst populated", failure(E.EEXIST), state(dst=page(DST)),
        "dst_populated", "inferred"),
    Row("EEXIST, dst a swap entry", failure(E.EEXIST),
        state(dst=page(DST, present=False, swapped=True)), "dst_populated", "inferred"),
    Row("ENOENT, src hole", failure(E.ENOENT), state(src=page(**HOLE)), "src_hole", "inferred"),
    Row("ENOENT, src hole despite ALLOW_SRC_HOLES", failure(E.ENOENT, mode=2),
        state(src=page(**HOLE)), "src_hole", "inferred", note="ALLOW_SRC_HOLES"),
    Row("EBUSY, KSM merge seen", failure(E.EBUSY),
        state(src=page(flags=("anon", "ksm"), exclusive=False)), "page_ksm", "inferred",
        culprit=KsmCulprit, ksm={"merged_ts_ns": T0 + 5, "ksmd_pid": 42}),
    Row("EBUSY, KSM merged before tracing", failure(E.EBUSY),
        state(src=page(flags=("anon", "ksm"), exclusive=False)), "page_ksm", "inferred",
        culprit=KsmCulprit, note="before tracing"),
    Row("EBUSY, registration covers the page", failure(E.EBUSY, src=PINNED_AT),
        state(offset=4 * PAGE), "page_pinned", "inferred", culprit=PinCulprit, pins=[IO_URING_PIN]),
    Row("EBUSY, zero page", failure(E.EBUSY), state(src=page(flags=("zero_page",))),
        "zero_page", "inferred"),
    Row("EBUSY, swap entry not exclusive", failure(E.EBUSY),
        state(src=page(present=False, swapped=True, exclusive=False)),
        "swap_not_exclusive", "inferred"),
    Row("EBUSY, shared after fork", failure(E.EBUSY), state(src=page(exclusive=False)),
        "page_shared", "inferred"),
    Row("EBUSY, THP and a partial-PMD move", failure(E.EBUSY),
        state(src=page(flags=("anon", "thp"))), "thp_split_failed", "inferred"),
    Row("EBUSY, nothing visible", failure(E.EBUSY), state(), "busy_unknown", "inferred",
        note="present and exclusive"),
    Row("EBUSY, page state unreadable", failure(E.EBUSY),
        Enrichment(SRC, DST, SRC_VMA, DST_VMA, None, None), "busy_unknown", "inferred",
        note="unknown"),
    Row("partial, stopped by a populated dst", failure(E.EAGAIN, moved=4 * PAGE),
        state(dst=page(DST + 4 * PAGE), offset=4 * PAGE), "partial", "inferred",
        "dst_populated"),
    Row("partial, stopped by a pin", failure(E.EAGAIN, moved=4 * PAGE),
        state(offset=4 * PAGE), "partial", "inferred", "page_pinned", PinCulprit,
        pins=[IO_URING_PIN]),
    Row("EEXIST, a dst huge page (dst_thp)", failure(E.EEXIST, len=512 * PAGE),
        state(dst=page(DST, flags=("anon", "thp"))), "dst_populated", "inferred",
        note="(a huge page)"),
    # -- the pages changed after the call: never a cause the errno rules out --
    Row("EEXIST, but now the dst is empty and the src a hole", failure(E.EEXIST),
        state(src=page(**HOLE)), "dst_populated", "errno", note="EEXIST rules out"),
    Row("EEXIST, but now nothing stops a move", failure(E.EEXIST), state(),
        "dst_populated", "errno", note="changed since"),
    Row("ENOENT, but now the dst is populated", failure(E.ENOENT),
        state(dst=page(DST)), "src_hole", "errno", note="ENOENT rules out"),
    Row("EBUSY, but now the dst is populated", failure(E.EBUSY),
        state(dst=page(DST), src=page(flags=("anon", "ksm"))), "busy_unknown", "errno",
        note="EBUSY rules out"),
    Row("ENOENT, but now the src is mapped and exclusive", failure(E.ENOENT), state(),
        "src_hole", "errno", note="changed since"),
    # -- EINVAL --
    Row("EINVAL, zero length", failure(E.EINVAL, move_unwritten=True, len=0), GONE,
        "invalid_zero_len", "observed"),
    Row("EINVAL, misaligned", failure(E.EINVAL, move_unwritten=True, dst=DST + 1), GONE,
        "invalid_misaligned", "observed"),
    Row("EINVAL, unknown mode bits", failure(E.EINVAL, move_unwritten=True, mode=8), GONE,
        "invalid_bad_mode", "observed"),
    Row("EINVAL before move_pages(): cross-mm", failure(E.EINVAL, move_unwritten=True), GONE,
        "invalid_cross_mm", "inferred"),
    Row("EINVAL, VMAs gone", failure(E.EINVAL), GONE, "invalid_unknown", "errno"),
    Row("EINVAL, crosses the VMA end", failure(E.EINVAL, len=32 * PAGE), state(),
        "invalid_crosses_vma", "inferred"),
    Row("EINVAL, shared VMA", failure(E.EINVAL), state(src_vma=vma(SRC, perms="rw-s")),
        "invalid_vma_shared", "inferred"),
    Row("EINVAL, special VMA", failure(E.EINVAL),
        state(src_vma=vma(SRC, flags=("rd", "wr", "pf"))), "invalid_special_vma", "inferred"),
    Row("EINVAL, file-backed", failure(E.EINVAL), state(src_vma=vma(SRC, path="/lib/x.so")),
        "invalid_vma_not_anon", "inferred"),
    Row("EINVAL, src read-only", failure(E.EINVAL),
        state(src_vma=vma(SRC, perms="r--p", flags=("rd",))), "invalid_src_not_writable",
        "inferred"),
    Row("EINVAL, both read-only", failure(E.EINVAL),
        state(src_vma=vma(SRC, perms="r--p", flags=("rd",)),
              dst_vma=vma(DST, perms="r--p", flags=("rd", "um"))),
        "invalid_src_not_writable", "inferred"),
    Row("EINVAL, protections differ", failure(E.EINVAL),
        state(src_vma=vma(SRC, flags=("rd", "wr", "ex"))), "invalid_vma_flags_mismatch",
        "inferred"),
    Row("EINVAL, dst not registered", failure(E.EINVAL), state(dst_vma=vma(DST)),
        "invalid_dst_not_registered", "inferred"),
    Row("EINVAL, VMAs look valid now", failure(E.EINVAL), state(), "invalid_unknown",
        "inferred"),
    # -- errno only --
    Row("EAGAIN, nothing moved", failure(E.EAGAIN), None, "mmap_changing", "errno"),
    Row("ESRCH", failure(E.ESRCH), None, "no_mm", "errno"),
    Row("ENOMEM", failure(E.ENOMEM), None, "nomem", "errno"),
    Row("EFAULT", failure(E.EFAULT), None, "fault", "errno"),
    Row("EINTR", failure(E.EINTR), None, "interrupted", "errno"),
    Row("an errno nobody expects", failure(E.E2BIG), None, "unknown", "errno"),
]

AT_EXIT_ROWS = [
    Row("EEXIST: the dst PTE present at exit", at_exit(E.EEXIST, dst=("PTE_PRESENT", *ANON)),
        None, "dst_populated", "observed", note="dst 0x7f0000000000 at exit: pte_present"),
    Row("EEXIST: a dst THP at exit", at_exit(E.EEXIST, dst=("PMD_HUGE", "LARGE", *ANON)),
        None, "dst_populated", "observed"),
    Row("ENOENT: no src PTE at exit", at_exit(E.ENOENT, src=("PTE_NONE",)), None,
        "src_hole", "observed"),
    Row("ENOENT: no src page table at exit", at_exit(E.ENOENT, src=("PMD_NONE",)), None,
        "src_hole", "observed"),
    Row("EBUSY: a KSM page, merge seen", at_exit(E.EBUSY, src=("PTE_PRESENT", "KSM")),
        None, "page_ksm", "observed", culprit=KsmCulprit,
        ksm={"merged_ts_ns": T0 + 5, "ksmd_pid": 42}),
    Row("EBUSY: a KSM page merged before tracing", at_exit(E.EBUSY, src=("PTE_PRESENT", "KSM")),
        None, "page_ksm", "observed", culprit=KsmCulprit, note="before tracing"),
    Row("EBUSY: not anon-exclusive", at_exit(E.EBUSY, src=("PTE_PRESENT", "ANON")), None,
        "page_shared", "observed", note="mapped 1 times"),
    Row("EBUSY: pinned, registration seen", at_exit(E.EBUSY, src=(
        "PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED"), base=PINNED_AT), None, "page_pinned",
        "observed", culprit=PinCulprit, pins=[IO_URING_PIN]),
    Row("EBUSY: pinned, no pin seen", at_exit(E.EBUSY, src=(
        "PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED")), None, "page_pinned", "observed",
        note="pinned before tracing"),
    Row("EBUSY: the zero page", at_exit(E.EBUSY, src=("PTE_PRESENT", "ZERO_PAGE")), None,
        "zero_page", "observed"),
    Row("EBUSY: a swap entry not exclusive", at_exit(E.EBUSY, src=("PTE_SWAP",)), None,
        "swap_not_exclusive", "observed"),
    Row("EBUSY: a pinned PTE-mapped large folio", at_exit(E.EBUSY, src=(
        "PTE_PRESENT", *ANON, "LARGE", "MAYBE_DMA_PINNED")), None, "thp_split_failed",
        "observed", note="it is pinned"),
    Row("partial: stopped by a populated dst", at_exit(
        E.EAGAIN, moved=4 * PAGE, dst=("PTE_PRESENT", *ANON)), None, "partial", "observed",
        "dst_populated"),
    Row("partial: stopped by a pinned page", at_exit(
        E.EAGAIN, moved=4 * PAGE, src=("PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED")), None,
        "partial", "observed", "page_pinned", PinCulprit, pins=[IO_URING_PIN]),
    Row("kernel tier: the step's EBUSY and a KSM page", at_exit(
        E.EBUSY, src=("PTE_PRESENT", "KSM"), kernel=True, kflags=L.UT_K_IOCTL_SEEN |
        L.UT_K_MOVE_PAGES | L.UT_K_STEP_FAILED, step_err=-E.EBUSY, steps=1), None,
        "page_ksm", "observed", culprit=KsmCulprit),
    Row("kernel tier: a pinned page and the GUP hooks' pinner", at_exit(
        E.EBUSY, src=("PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED"), kernel=True,
        folio_flags=L.UT_FOLIO_SEEN | L.UT_FOLIO_PINNED_SEEN, **GUP_PINNER), None,
        "page_pinned", "observed", culprit=PinCulprit),
    Row("only the dst read, and it is empty: not explained", at_exit(
        E.EBUSY, src_state=None), None, "busy_unknown", "errno"),
    Row("EEXIST, but the state at exit shows a hole: not trusted", at_exit(
        E.EEXIST, src=("PTE_NONE",)), None, "dst_populated", "errno"),
    Row("EBUSY, an ordinary exclusive page at exit: not explained", at_exit(E.EBUSY), None,
        "busy_unknown", "errno"),
    Row("EBUSY, an exclusive swap entry: not explained", at_exit(
        E.EBUSY, src=("PTE_SWAP", "SWP_EXCLUSIVE")), None, "busy_unknown", "errno"),
]

# The VMAs at exit: EINVAL and ENOENT explained with the memory gone (en
# GONE: /proc has nothing), by the same rules as VMAs read from /proc.
SHMEM = ("FOUND", "VM_OPS", "FILE")
VMA_ROWS = [
    Row("EINVAL: dst registered with no userfaultfd", vmas_at_exit(
        E.EINVAL, dst_vma=("FOUND", "UFFD_CTX_KNOWN", "ANON_VMA"), dst_vm=RW_ANON), GONE,
        "invalid_dst_not_registered", "observed", note="dst VMA at exit: 0x7f0000000000-"),
    Row("EINVAL: dst registered with another userfaultfd", vmas_at_exit(
        E.EINVAL, dst_vma=("FOUND", "UFFD_CTX", "UFFD_CTX_KNOWN")), GONE,
        "invalid_dst_not_registered", "observed", note="another userfaultfd"),
    Row("EINVAL: a shared src (MAP_SHARED anonymous: shmem)", vmas_at_exit(
        E.EINVAL, src_vma=SHMEM, src_vm=RW_ANON + ("sh",)), GONE, "invalid_vma_shared",
        "observed", note="src VMA is shared"),
    Row("EINVAL: a private file mapping", vmas_at_exit(E.EINVAL, src_vma=SHMEM), GONE,
        "invalid_vma_not_anon", "observed", note="src VMA not anonymous"),
    Row("EINVAL: a read-only src", vmas_at_exit(E.EINVAL, src_vm=("rd",)), GONE,
        "invalid_src_not_writable", "observed", note="protections differ too"),
    Row("EINVAL: a PFNMAP dst", vmas_at_exit(E.EINVAL, dst_vm=RW_ANON + ("um", "pf", "io")),
        GONE, "invalid_special_vma", "observed", note="dst VMA is PFNMAP, IO"),
    Row("EINVAL: mlocked src only", vmas_at_exit(E.EINVAL, src_vm=RW_ANON + ("lo",)), GONE,
        "invalid_vma_flags_mismatch", "observed"),
    Row("EINVAL: the range crosses the src VMA's end", vmas_at_exit(E.EINVAL, len=32 * PAGE),
        GONE, "invalid_crosses_vma", "observed", note="past its VMA's end (0x7f1000010000)"),
    Row("EINVAL: VMAs pass every check: the errno is all there is", vmas_at_exit(E.EINVAL),
        GONE, "invalid_unknown", "errno", note="vm_page_prot"),
    Row("EINVAL before move_pages() (move unwritten): cross-mm, whatever the VMAs", vmas_at_exit(
        E.EINVAL, move_unwritten=True), GONE, "invalid_cross_mm", "inferred"),
    Row("EINVAL: misaligned before any VMA", vmas_at_exit(
        E.EINVAL, move_unwritten=True, len=8 * PAGE + 8), GONE, "invalid_misaligned",
        "observed"),
    Row("EINVAL: the src walk raced: /proc, said so", vmas_at_exit(E.EINVAL, src_vma=("RACED",)),
        state(src_vma=vma(SRC, perms="rw-s")), "invalid_vma_shared", "inferred",
        note="did not find both (src raced)"),
    Row("EINVAL: the walk failed and the memory is gone", vmas_at_exit(
        E.EINVAL, dst_vma=("READ_FAILED",)), GONE, "invalid_unknown", "errno",
        note="dst read_failed"),
    Row("EINVAL: VMA reader off: /proc, said so", failure(E.EINVAL), state(dst_vma=vma(DST)),
        "invalid_dst_not_registered", "inferred", note="VMA reader off"),
    Row("ENOENT: no src VMA at exit (the page walk sees a hole too)", vmas_at_exit(
        E.ENOENT, src_vma=("NONE",)), GONE, "no_vma", "observed", note="no VMA at src"),
    Row("ENOENT: no dst VMA at exit", vmas_at_exit(E.ENOENT, dst_vma=("NONE",)), GONE, "no_vma",
        "observed", note="no VMA at dst"),
    Row("ENOENT: both VMAs there: the page state's hole", vmas_at_exit(E.ENOENT), GONE,
        "src_hole", "observed"),
]

KERNEL_ROWS = [
    Row("not past the ioctl: cross-mm seen", failure(
        E.EINVAL, move_unwritten=True, flags=L.UT_F_KERNEL_TIER,
        kflags=L.UT_K_IOCTL_SEEN | L.UT_K_CROSS_MM), None, "invalid_cross_mm", "observed"),
    Row("not past the ioctl: mmap_changing", failure(
        E.EAGAIN, flags=L.UT_F_KERNEL_TIER, kflags=L.UT_K_IOCTL_SEEN), None,
        "mmap_changing", "observed"),
    Row("not past the ioctl, nothing seen: the request decides", failure(
        E.EINVAL, move_unwritten=True, dst=DST + 1, flags=L.UT_F_KERNEL_TIER,
        kflags=L.UT_K_IOCTL_SEEN), None, "invalid_misaligned", "observed"),
    Row("EINVAL in move_pages(): the VMAs' flags from /proc", kernel_failure(E.EINVAL),
        state(src_vma=vma(SRC, perms="rw-s")), "invalid_vma_shared", "inferred"),
    Row("EEXIST from a step", kernel_failure(
        E.EEXIST, kflags=L.UT_K_STEP_FAILED, step_err=-E.EEXIST, steps=1, fail_addr=SRC),
        None, "dst_populated", "observed", note="step returned -EEXIST"),
    Row("ENOENT from a step", kernel_failure(
        E.ENOENT, kflags=L.UT_K_STEP_FAILED, step_err=-E.ENOENT, steps=1, fail_addr=SRC),
        None, "src_hole", "observed", note="found no source page"),
    Row("EBUSY from a failed folio split", kernel_failure(
        E.EBUSY, kflags=L.UT_K_STEP_FAILED, step_err=-E.EBUSY, steps=1, fail_addr=SRC,
        split_err=-16), None, "thp_split_failed", "observed", note="split returned -16"),
    Row("retries are counted in the notes", kernel_failure(
        E.EEXIST, kflags=L.UT_K_STEP_FAILED, step_err=-E.EEXIST, steps=4, retries=3,
        fail_addr=SRC), None, "dst_populated", "observed", note="3 internal -EAGAIN retries"),
    Row("move_pages() itself returned EEXIST (no step hook)", kernel_failure(
        E.EEXIST, kflags=L.UT_K_MOVE_PAGES_RETURNED, kernel_ret=-E.EEXIST), None,
        "dst_populated", "observed", note="move_pages() returned -EEXIST"),
    Row("partial on 6.12, no step hook: the state at exit explains it", at_exit(
        E.EAGAIN, moved=4 * PAGE, dst=("PTE_PRESENT", *ANON), kernel=True,
        kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES | L.UT_K_MOVE_PAGES_RETURNED,
        kernel_ret=4 * PAGE), None, "partial", "observed", "dst_populated"),
    Row("partial: a GUP pin the hooks saw, at exit", at_exit(
        E.EAGAIN, moved=4 * PAGE, src=("PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED"),
        kernel=True, kflags=L.UT_K_IOCTL_SEEN | L.UT_K_STEP_FAILED, step_err=-E.EBUSY,
        steps=2, fail_addr=SRC + 4 * PAGE, folio_flags=L.UT_FOLIO_SEEN | L.UT_FOLIO_PINNED_SEEN,
        **GUP_PINNER), None, "partial", "observed", "page_pinned", PinCulprit),
    Row("EBUSY step, but a populated dst at exit: not trusted", at_exit(
        E.EBUSY, dst=("PTE_PRESENT", *ANON), kernel=True,
        kflags=L.UT_K_IOCTL_SEEN | L.UT_K_STEP_FAILED, step_err=-E.EBUSY, steps=1), None,
        "busy_unknown", "errno"),
    Row("nothing seen where it stopped: inference decides", kernel_failure(
        E.EBUSY, kflags=L.UT_K_STEP_FAILED, step_err=-E.EBUSY, steps=1, fail_addr=SRC),
        state(src=page(exclusive=False)), "page_shared", "inferred"),
]


# -- swap, unsplittable THP, mmap_changing (issue 16) --------------------------------

PINNED_THP = page(PINNED_AT, flags=("anon", "thp"))
TRACEPOINT_ROWS += [
    Row("EBUSY, a pinned THP the move covers in part: the split fails before any pin check",
        failure(E.EBUSY, src=PINNED_AT), state(offset=4 * PAGE, src=PINNED_THP),
        "thp_split_failed", "inferred", culprit=PinCulprit, note="io_uring",
        pins=[IO_URING_PIN]),
    Row("EBUSY, a THP shared after fork: not exclusive, no split tried",
        failure(E.EBUSY), state(src=page(flags=("anon", "thp"), exclusive=False)),
        "page_shared", "inferred"),
    Row("EAGAIN, nothing moved, pages unremarkable: mmap_changing at errno level",
        failure(E.EAGAIN), state(), "mmap_changing", "errno", note="nothing moved"),
]
AT_EXIT_ROWS += [
    Row("EBUSY: a pinned large folio (PMD split), registration seen", at_exit(
        E.EBUSY, src=("PTE_PRESENT", *ANON, "LARGE", "MAYBE_DMA_PINNED"), base=PINNED_AT),
        None, "thp_split_failed", "observed", culprit=PinCulprit, note="it is pinned",
        pins=[IO_URING_PIN]),
    Row("EBUSY: an exclusive swap entry is no swap_not_exclusive", at_exit(
        E.EBUSY, src=("PTE_SWAP", "SWP_EXCLUSIVE")), None, "busy_unknown", "errno"),
    Row("EAGAIN, nothing moved: the page state names no cause (mmap_changing)", at_exit(
        E.EAGAIN), None, "mmap_changing", "errno", note="nothing moved"),
    Row("EAGAIN, nothing moved, a shared src at exit: still not page_shared", at_exit(
        E.EAGAIN, src=("PTE_PRESENT", "ANON")), None, "mmap_changing", "errno"),
    Row("EINTR: a pinned large folio at exit does not explain EINTR", at_exit(
        E.EINTR, src=("PTE_PRESENT", *ANON, "LARGE", "MAYBE_DMA_PINNED")), None,
        "interrupted", "errno"),
]
KERNEL_ROWS += [
    Row("not past the ioctl: mmap_changing, `move` untouched (before the 2025 fix)", failure(
        E.EAGAIN, move_unwritten=True, flags=L.UT_F_KERNEL_TIER, kflags=L.UT_K_IOCTL_SEEN),
        None, "mmap_changing", "observed"),
    Row("EAGAIN from move_pages() itself, nothing moved: not the ioctl's check", kernel_failure(
        E.EAGAIN, kflags=L.UT_K_MOVE_PAGES_RETURNED, kernel_ret=-E.EAGAIN), None,
        "mmap_changing", "errno"),
]


# -- issue 16: zero_len, bad_mode, crosses_vma, dst_thp, huge_zero_page, in the
# shape their workload scenarios reach the tracer (pages and VMAs are read at
# exit for every failure, EINVAL too) --
BAD_MODE = 1 << 16          # workload.scenarios.BAD_MODE_BIT
IN_IOCTL_ONLY = dict(flags=L.UT_F_KERNEL_TIER | L.UT_F_STATE_AT_EXIT | L.UT_F_VMAS_AT_EXIT,
                     kflags=L.UT_K_IOCTL_SEEN)   # 7.3: move_pages() inlined, no step reached


def _src_vma_pages(ev, pages, vm=RW_ANON):
    """`ev` with a src VMA of `pages` pages (it ends at SRC + pages pages)."""
    return replace(ev, src_vma_state=walked_vma(SRC, "FOUND", "ANON_VMA", vm=vm, pages=pages))


VMA_ROWS += [
    Row("zero_len: len 0, everything read at exit: the request decides", vmas_at_exit(
        E.EINVAL, move_unwritten=True, len=0, dst=("PTE_PRESENT", *ANON)), GONE,
        "invalid_zero_len", "observed", note="from the request"),
    Row("bad_mode: an unknown mode bit, everything read at exit", vmas_at_exit(
        E.EINVAL, move_unwritten=True, mode=BAD_MODE), GONE, "invalid_bad_mode", "observed"),
    Row("bad_mode: an unknown bit beside ALLOW_SRC_HOLES", vmas_at_exit(
        E.EINVAL, move_unwritten=True, mode=BAD_MODE | L.UFFDT_MOVE_MODE_ALLOW_SRC_HOLES),
        GONE, "invalid_bad_mode", "observed"),
    Row("crosses_vma: src VMA of 2 pages, a move of 4", _src_vma_pages(
        vmas_at_exit(E.EINVAL, len=4 * PAGE), 2), GONE, "invalid_crosses_vma", "observed",
        note="src range extends past its VMA's end (0x7f1000002000)"),
    Row("crosses_vma: a move that ends exactly at the VMA's end is not it", _src_vma_pages(
        vmas_at_exit(E.EINVAL, len=2 * PAGE), 2, vm=("rd",)), GONE,
        "invalid_src_not_writable", "observed"),
]

AT_EXIT_ROWS += [
    Row("dst_thp: EEXIST, the dst PMD a huge page at exit", at_exit(
        E.EEXIST, src=("PMD_HUGE", "LARGE", *ANON), dst=("PMD_HUGE", "LARGE", *ANON),
        len=512 * PAGE), None, "dst_populated", "observed",
        note="the dst PMD is a huge page"),
    Row("6.8: EBUSY on the huge zero page", at_exit(
        E.EBUSY, src=("PMD_HUGE", "HUGE_ZERO_PAGE"), len=512 * PAGE), None, "zero_page",
        "observed", note="the huge zero page"),
]

KERNEL_ROWS += [
    Row("zero_len on 7.3: only the ioctl seen", failure(
        E.EINVAL, move_unwritten=True, len=0, **IN_IOCTL_ONLY), None, "invalid_zero_len",
        "observed"),
    Row("bad_mode on 7.3: only the ioctl seen", failure(
        E.EINVAL, move_unwritten=True, mode=BAD_MODE, **IN_IOCTL_ONLY), None,
        "invalid_bad_mode", "observed"),
    Row("crosses_vma on 7.3: no step reached, the VMAs at exit", _src_vma_pages(replace(
        vmas_at_exit(E.EINVAL, len=4 * PAGE), flags=IN_IOCTL_ONLY["flags"],
        kflags=L.UT_K_IOCTL_SEEN), 2), None, "invalid_crosses_vma", "observed"),
    Row("crosses_vma on 6.12: move_pages() returned EINVAL, the VMAs at exit", _src_vma_pages(
        replace(vmas_at_exit(E.EINVAL, len=4 * PAGE), flags=IN_IOCTL_ONLY["flags"],
                kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES | L.UT_K_MOVE_PAGES_RETURNED,
                kernel_ret=-E.EINVAL), 2), None, "invalid_crosses_vma", "observed"),
    Row("dst_thp on 7.3: EEXIST from move_pages()'s own PMD check, no step", at_exit(
        E.EEXIST, src=("PMD_HUGE", "LARGE", *ANON), dst=("PMD_HUGE", "LARGE", *ANON),
        len=512 * PAGE, kernel=True), None, "dst_populated", "observed",
        note="pmd_huge"),
    Row("dst_thp on 6.12: move_pages() returned EEXIST", at_exit(
        E.EEXIST, src=("PMD_HUGE", "LARGE", *ANON), dst=("PMD_HUGE", "LARGE", *ANON),
        len=512 * PAGE, kernel=True, kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES |
        L.UT_K_MOVE_PAGES_RETURNED, kernel_ret=-E.EEXIST), None, "dst_populated", "observed",
        note="move_pages() returned -EEXIST"),
]


# -- mmap_changing from the uffd's own state at exit (bpf/ut_uffdstate.h) --
REMOVER = UffdEventCulprit("remove", 100, 101, "madviser")
FORKER = UffdEventCulprit("fork", 100, 100, "[x]'\\")   # untrusted comm, as sent


def uffd_at_exit(err=E.EAGAIN, *, mmap_changing=1, pending=(REMOVER,), where="read",
                 more=False, **kw):
    """A failed move whose uffd was read before it returned (and, as the
    program does for every failure, its pages)."""
    ev = at_exit(err, **kw)
    state = UffdState(mmap_changing, where, len(pending), more, tuple(pending))
    return replace(ev, flags=ev.flags | L.UT_F_UFFD_AT_EXIT, uffd_state=state)


UFFD_ROWS = [
    Row("EAGAIN, nothing moved, an unread REMOVE: observed, its raiser the culprit",
        uffd_at_exit(), None, "mmap_changing", "observed", culprit=UffdEventCulprit,
        note="mmap_changing = 1 at exit"),
    Row("two unread events: the oldest is the culprit, the other in the notes", uffd_at_exit(
        mmap_changing=2, pending=(FORKER, REMOVER), more=True), None, "mmap_changing",
        "observed", culprit=UffdEventCulprit, note="UFFD_EVENT_REMOVE raised by pid 100 tid 101"),
    Row("counter up, the queue raced empty: observed, no culprit", uffd_at_exit(
        pending=(), where="raced"), None, "mmap_changing", "observed",
        note="changed while it was read"),
    Row("counter back at 0 by exit: says nothing, the errno decides", uffd_at_exit(
        mmap_changing=0, pending=()), None, "mmap_changing", "errno"),
    Row("the fd's context not found: the errno decides", uffd_at_exit(
        mmap_changing=0, pending=(), where="no_ctx"), None, "mmap_changing", "errno"),
    Row("kernel tier: the uffd state names who raised it", uffd_at_exit(
        move_unwritten=True, kernel=True), None, "mmap_changing", "observed",
        culprit=UffdEventCulprit),
]


@pytest.fixture(scope="module")
def strict():
    return jsonschema.Draft7Validator(strict_schema())


def run(row: Row):
    pins = PinTable()
    for p in row.pins:
        pins.add(p)
    lookup = (lambda pfn: row.ksm) if row.ksm is not None else None
    return diagnose(row.event, row.en, pins, lookup)


def check(row: Row, strict, tmp_path):
    d = run(row)
    got = (str(d.cause), d.underlying and str(d.underlying), str(d.evidence))
    assert got == (row.cause, row.underlying, row.evidence), d.notes
    if row.culprit is None:
        assert d.culprit is None, d.culprit
    else:
        assert isinstance(d.culprit, row.culprit)
    if row.note is not None:
        assert any(row.note in n for n in d.notes), d.notes
    e = row.event
    assert contradiction(d.cause, d.underlying, e.errno, e.partial) is None
    assert d.effective_cause in CAUSES
    # the record it makes is what the format allows, and reads back the same
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(str(path))
    writer.items([TracedMove(e, d, row.en)])
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        assert not [x.message for x in strict.iter_errors(r)], r
    record = records[-1]
    assert record["diagnosis"]["cause"] == row.cause
    return d, record


# -- contended: several threads moving pages of one huge page at once (issue 16) ----
# Linux 6.18's move_pages() keeps an internal -EAGAIN (the large folio was
# locked by another mover) after the retried step succeeds, reruns the step
# and returns the -EEXIST of its now populated dst: the page moved.
MOVED_AWAY = dict(src=("PTE_NONE",), dst=("PTE_PRESENT", *ANON))
TRACEPOINT_ROWS += [
    Row("EEXIST, dst populated and src empty: moved (by this call or an earlier one)",
        failure(E.EEXIST, len=PAGE), state(src=page(**HOLE), dst=page(DST)),
        "moved_then_eexist", "inferred", note="this move (or an earlier one) moved it"),
    Row("ENOENT, dst populated and src empty: not a cause ENOENT allows",
        failure(E.ENOENT, len=PAGE), state(src=page(**HOLE), dst=page(DST)),
        "src_hole", "errno", note="ENOENT rules out"),
]
AT_EXIT_ROWS += [
    Row("EEXIST: the page at dst and src empty at exit: inferred, not observed",
        at_exit(E.EEXIST, len=PAGE, **MOVED_AWAY), None, "moved_then_eexist", "inferred",
        note="dst 0x7f0000000000 at exit: pte_present"),
    Row("partial: stopped where the page is at dst and src empty", at_exit(
        E.EAGAIN, moved=4 * PAGE, **MOVED_AWAY), None, "partial", "inferred",
        "moved_then_eexist"),
]
KERNEL_ROWS += [
    Row("EEXIST after a retry and a step that moved its page: observed", kernel_failure(
        E.EEXIST, len=PAGE, kflags=L.UT_K_STEP_FAILED, step_err=-E.EEXIST, steps=3,
        retries=1, fail_addr=SRC), None, "moved_then_eexist", "observed",
        note="1 step(s) moved pages that the result does not count"),
    Row("EEXIST after retries, no step succeeded: dst populated before", kernel_failure(
        E.EEXIST, len=PAGE, kflags=L.UT_K_STEP_FAILED, step_err=-E.EEXIST, steps=2,
        retries=1, fail_addr=SRC), None, "dst_populated", "observed"),
    Row("the kernel saw no uncounted step: its EEXIST beats the state at exit", at_exit(
        E.EEXIST, len=PAGE, kernel=True, kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES |
        L.UT_K_STEP_FAILED, step_err=-E.EEXIST, steps=1, **MOVED_AWAY), None,
        "dst_populated", "observed"),
    Row("EEXIST, no step hook (6.12): move_pages()'s own -EEXIST decides", at_exit(
        E.EEXIST, len=PAGE, kernel=True, kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES |
        L.UT_K_MOVE_PAGES_RETURNED, kernel_ret=-E.EEXIST, **MOVED_AWAY), None,
        "dst_populated", "observed"),
]

@pytest.mark.parametrize("row", TRACEPOINT_ROWS, ids=lambda r: r.name)
def test_tracepoint_tier_rule(row, strict, tmp_path):
    assert not row.event.kernel_tier
    check(row, strict, tmp_path)


@pytest.mark.parametrize("row", AT_EXIT_ROWS, ids=lambda r: r.name)
def test_state_at_exit_rule(row, strict, tmp_path):
    assert row.event.state_at_exit
    check(row, strict, tmp_path)


@pytest.mark.parametrize("row", VMA_ROWS, ids=lambda r: r.name)
def test_vmas_at_exit_rule(row, strict, tmp_path):
    d, record = check(row, strict, tmp_path)
    # the record carries what the walk found, by name
    e = row.event
    if e.vmas_at_exit:
        assert record["src_vma_state"]["where"] == e.src_vma_state.where_name.lower()
        assert record["dst_vma_state"]["vm_flag_names"] == sorted(
            e.dst_vma_state.vm_flag_names)


@pytest.mark.parametrize("row", UFFD_ROWS, ids=lambda r: r.name)
def test_uffd_at_exit_rule(row, strict, tmp_path):
    d, record = check(row, strict, tmp_path)
    e = row.event
    assert record["uffd_state"] == e.uffd_state.to_json()
    assert UffdState.from_json(record["uffd_state"]) == e.uffd_state
    if d.culprit is not None:
        assert d.culprit == e.uffd_state.pending[0]
        assert record["diagnosis"]["culprit"] == {"kind": "uffd_event", **{
            k: getattr(d.culprit, k) for k in ("event", "pid", "tid", "comm")}}


@pytest.mark.parametrize("row", KERNEL_ROWS, ids=lambda r: r.name)
def test_kernel_tier_rule(row, strict, tmp_path):
    assert row.event.kernel_tier
    check(row, strict, tmp_path)


def test_culprits_carry_what_each_source_knows(strict, tmp_path):
    registered = next(r for r in TRACEPOINT_ROWS if r.name.startswith("partial, stopped by a pin"))
    d, record = check(registered, strict, tmp_path)
    assert d.culprit == PinCulprit(pid=100, comm="mover", method="io_uring fixed buffer "
                                   "(io_uring_register)", longterm=True,
                                   source=PIN_REGISTRATION, ts_ns=IO_URING_PIN.ts_ns, tid=100,
                                   range=(PINNED_AT, 4 * PAGE))
    gup = next(r for r in KERNEL_ROWS if "GUP pin" in r.name)
    d, record = check(gup, strict, tmp_path)
    assert d.culprit == PinCulprit(pid=300, comm="fio", method="pin_user_pages_fast()",
                                   longterm=True, source=GUP_HOOK, ts_ns=T0 + 7)
    assert record["diagnosis"]["culprit"]["range"] is None
    assert d.culprit.describe() == ("pinned by pid 300 (fio) via pin_user_pages_fast(), "
                                    "long-term (FOLL_LONGTERM)")
    inferred = next(r for r in TRACEPOINT_ROWS if r.name == "EBUSY, KSM merge seen")
    assert run(inferred).culprit == KsmCulprit(merged_ts_ns=T0 + 5, ksmd_pid=42)


def test_every_errno_a_move_can_return_is_covered():
    """Each errno of the kernel's move path has at least one row per tier
    that can answer it (the kernel tier defers the rest to inference)."""
    seen = {r.event.errno for r in TRACEPOINT_ROWS}
    assert {"EEXIST", "ENOENT", "EBUSY", "EINVAL", "EAGAIN", "ESRCH", "ENOMEM", "EFAULT",
            "EINTR"} <= seen
