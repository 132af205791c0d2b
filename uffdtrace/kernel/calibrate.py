"""Where the running kernel keeps its direct map and vmemmap, found and proved.

The page-state reader (bpf/ut_pagestate.h) reaches page tables through the
direct map (page_offset_base) and struct pages through the vmemmap
(vmemmap_base).  Both are randomized at boot (CONFIG_RANDOMIZE_MEMORY), and
kallsyms may hide them (it has no data symbols on the development host,
which has no /proc/kcore either), so they are measured on the running
kernel, never assumed:

* direct map: mm->pgd is a direct-map address, the base is 1 GiB aligned
  (kernel_randomize_memory() aligns every region to PUD_SIZE) and at most
  "highest RAM address" below it.  Each candidate walks this process's page
  tables for a page it wrote, with 4 and 5 levels; the one that yields the
  pfn /proc/self/pagemap reports gives the base and the paging depth.
* vmemmap: pagemap:mm_lru_insertion records a folio pointer and its pfn,
  which differ by vmemmap_base + pfn * sizeof(struct page); every sample
  must agree.
* the zero page and the huge zero folio: read-fault a page (a 2 MiB
  MADV_HUGEPAGE range) and ask pagemap and kpageflags.  Faulting the huge
  zero folio also pins it for this process's lifetime (MMF_HUGE_ZERO_FOLIO),
  so its pfn stays valid while the tracer runs.

Then everything is verified together: the reader, with the found values,
must describe several pages this process owns exactly as pagemap does (pfn,
anon, exclusive, mapped once, and folio->index == address >> PAGE_SHIFT).
Anything else is a CalibrationError with a one-line reason.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..bpfprog import CompiledProgram
from ..native import PAGE_SIZE, Mapping, hpage_size, lib
from ..pagestate import read_page_states
from ..walkstate import WalkedPage
from . import layout as layout_mod
from . import marker, tracefs

PROGRAM = "ut_calibrate.bpf.c"
GIB = 1 << 30
# The lowest address of the kernel half with 5 (and so also 4) levels.
KERNEL_HALF = 0xFF00000000000000
# What the program is asked to do (UT_CAL_* in bpf/ut_calibrate.bpf.c).
MODES = {"UT_CAL_PGD": 1, "UT_CAL_BASES": 2, "UT_CAL_VERIFY": 3}
LRU_TRACEPOINT = "pagemap:mm_lru_insertion"
LRU_SAMPLE_ROUNDS = 20
LRU_PAGES = 64


class CalibrationError(Exception):
    """The bases could not be found or did not verify: one-line reason."""


@dataclass(frozen=True)
class Calibration:
    page_offset_base: int
    vmemmap_base: int
    levels: int
    zero_pfn: int
    huge_zero_pfn: int          # 0: no huge zero folio (THP off or use_zero_page=0)
    seconds: float = field(default=0.0, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def defines(self) -> dict[str, int]:
        """The UT_L_* constants ut_page_state_read() needs."""
        return {"UT_L_PAGE_OFFSET_BASE": self.page_offset_base,
                "UT_L_VMEMMAP_BASE": self.vmemmap_base,
                "UT_L_PGTABLE_LEVELS": self.levels,
                "UT_L_ZERO_PFN": self.zero_pfn,
                "UT_L_HUGE_ZERO_PFN": self.huge_zero_pfn}

    def describe(self) -> list[str]:
        """For `uffdtrace doctor`.  The bases themselves are KASLR secrets:
        they stay in the tracer and the BPF program."""
        return [f"{self.levels}-level paging; direct map and vmemmap bases calibrated and "
                f"verified in {self.seconds * 1000:.0f} ms", *self.notes]


def max_physical_address(path: str = "/proc/iomem") -> int:
    """One past the highest System RAM byte (root sees real addresses)."""
    top = 0
    for line in Path(path).read_text().splitlines():
        span, _, name = line.partition(" : ")
        if name.strip() == "System RAM" and not line.startswith(" "):
            top = max(top, int(span.split("-")[1], 16) + 1)
    if top <= 1:
        raise CalibrationError(f"{path} shows no System RAM addresses (not root?)")
    return top


def _pfn_and_flags(addr: int):
    state = read_page_states(os.getpid(), [addr])[0]
    if not state.present or state.pfn is None:
        raise CalibrationError(f"/proc/self/pagemap hides the pfn of 0x{addr:x} "
                               "(CAP_SYS_ADMIN is needed to see PFNs)")
    return state


def find_zero_pfn() -> int:
    """The shared zero page: what a read fault of anonymous memory maps."""
    with Mapping(PAGE_SIZE) as m:
        ctypes.string_at(m.addr, 1)
        state = _pfn_and_flags(m.addr)
    if not state.has("zero_page"):
        raise CalibrationError("a read-faulted anonymous page is not the zero page "
                               "(kpageflags)")
    return state.pfn


def find_huge_zero_pfn() -> tuple[int, str]:
    """The huge zero folio's first pfn (0 if there is none), and how we know.
    The fault also makes this process hold the folio until it exits."""
    size = hpage_size()
    with Mapping(2 * size, align=size) as m:
        try:
            m.madvise(lib().MADV_HUGEPAGE)
        except OSError as exc:
            return 0, f"no huge zero page: MADV_HUGEPAGE refused ({exc.strerror})"
        ctypes.string_at(m.addr, 1)
        state = _pfn_and_flags(m.addr)
    if state.has("zero_page") and state.has("thp"):
        return state.pfn, "huge zero folio found (kpageflags ZERO_PAGE|THP)"
    return 0, ("no huge zero folio: a MADV_HUGEPAGE read fault maps the small zero page "
               "(THP off or use_zero_page=0)")


def program_defines(layout: layout_mod.Layout) -> dict[str, int]:
    """What bpf/ut_calibrate.bpf.c is compiled with: the layout, the marker
    advice, and where mm_lru_insertion keeps its folio and pfn (from its
    format file: its record has a type bcc could only declare with heavy
    headers)."""
    events = tracefs.find()
    try:
        lru = tracefs.field_offsets(events, *LRU_TRACEPOINT.split(":"))
        folio_at, pfn_at = lru["folio"][0], lru["pfn"][0]
    except (OSError, TypeError, KeyError) as exc:
        raise CalibrationError(f"tracepoint {LRU_TRACEPOINT} has no folio/pfn fields "
                               f"here ({exc!r}): the vmemmap base cannot be measured") from None
    return {**layout.defines(), **MODES, "UT_CAL_ADVICE": marker.CALIBRATE_ADVICE,
            "UT_CAL_LRU_FOLIO": folio_at, "UT_CAL_LRU_PFN": pfn_at}


class Calibrator(CompiledProgram):
    """The calibration program, compiled once; calibrate() and verify()
    may run any number of times.

    `bpf`: a bcc program that already contains bpf/ut_calibrate.bpf.c
    (compiled with program_defines()), e.g. the tracer's own, so that
    calibrating costs no compile of its own; it is not cleaned up here."""

    def __init__(self, layout: layout_mod.Layout | None = None, bpf=None):
        self.layout = layout or layout_mod.load()
        started = time.monotonic()
        if bpf is None:
            super().__init__(PROGRAM, program_defines(self.layout))
        else:
            self.bpf, self.text = bpf, None
        self.owned = bpf is None
        self.compile_seconds = time.monotonic() - started
        self._zero = ctypes.c_int(0)
        # array sizes as compiled (UT_CAL_ADDRS, UT_CAL_CANDIDATES)
        cfg = self.bpf[b"cal_cfg"][self._zero]
        self.verify_pages, self.candidates = len(cfg.addr), len(cfg.base)

    def close(self):
        if self.owned:
            super().close()

    # ---- talking to the program ----
    def _request(self, mode: int, addrs: list[int], bases: list[int] = (),
                 walk: Calibration | None = None):
        table = self.bpf[b"cal_cfg"]
        cfg = table[self._zero]
        cfg.pid, cfg.mode = os.getpid(), mode
        for i in range(self.verify_pages):
            cfg.addr[i] = addrs[i] if i < len(addrs) else 0
        for i in range(self.candidates):
            cfg.base[i] = bases[i] if i < len(bases) else 0
        if walk is not None:
            cfg.walk.page_offset_base = walk.page_offset_base
            cfg.walk.vmemmap_base = walk.vmemmap_base
            cfg.walk.zero_pfn = walk.zero_pfn
            cfg.walk.huge_zero_pfn = walk.huge_zero_pfn
            cfg.walk.levels = walk.levels
        table[self._zero] = cfg
        before = self.bpf[b"cal_out"][self._zero].calls
        marker.ask(addrs[0], marker.CALIBRATE_ADVICE)
        out = self.bpf[b"cal_out"][self._zero]
        if out.calls != before + 1:
            raise CalibrationError("the calibration program did not run on "
                                   "syscalls:sys_enter_madvise")
        return out

    def _vmemmap_samples(self, pages: Mapping) -> list[int]:
        """vmemmap bases from LRU insertions; new folios join the LRU in
        per-CPU batches, which MADV_COLD drains (lru_add_drain)."""
        seen = self.bpf[b"cal_vmemmap_seen"]
        seen[self._zero] = ctypes.c_uint64(0)
        # attached only while sampling: it fires on every LRU insertion
        self.bpf.attach_tracepoint(tp=LRU_TRACEPOINT.encode(), fn_name=b"ut_cal_lru_insertion")
        try:
            pages.madvise(lib().MADV_COLD)
            for _ in range(LRU_SAMPLE_ROUNDS):
                if seen[self._zero].value:
                    break
                with Mapping(LRU_PAGES * PAGE_SIZE) as extra:
                    extra.madvise(lib().MADV_NOHUGEPAGE)
                    extra.fill()
                    extra.madvise(lib().MADV_COLD)
        finally:
            self.bpf.detach_tracepoint(tp=LRU_TRACEPOINT.encode())
        count = min(seen[self._zero].value, len(self.bpf[b"cal_vmemmap"]))
        return [self.bpf[b"cal_vmemmap"][ctypes.c_int(i)].value for i in range(count)]

    # ---- the steps ----
    def calibrate(self) -> Calibration:
        started = time.monotonic()
        with Mapping(self.verify_pages * PAGE_SIZE) as pages:
            pages.madvise(lib().MADV_NOHUGEPAGE)
            pages.fill()
            addrs = [pages.page(i) for i in range(self.verify_pages)]
            notes = []
            zero_pfn = find_zero_pfn()
            huge_zero_pfn, note = find_huge_zero_pfn()
            notes.append(note)
            expected = _pfn_and_flags(addrs[0]).pfn
            pgd = self._request(MODES["UT_CAL_PGD"], addrs).pgd
            if not pgd:
                raise CalibrationError("current->mm->pgd could not be read")
            matches = self._direct_map_candidates(addrs, pgd, expected)
            samples = self._vmemmap_samples(pages)
            if not samples:
                raise CalibrationError("no pagemap:mm_lru_insertion event was seen: the "
                                       "vmemmap base cannot be measured")
            if len(set(samples)) != 1:
                raise CalibrationError(f"pagemap:mm_lru_insertion gave {len(set(samples))} "
                                       "different vmemmap bases")
            vmemmap = samples[0]
            errors = []
            for base, levels in matches:
                cal = Calibration(base, vmemmap, levels, zero_pfn, huge_zero_pfn)
                try:
                    self.verify(cal, pages)
                except CalibrationError as exc:
                    errors.append(str(exc))
                    continue
                notes.append(f"verified on {self.verify_pages} pages against /proc/self/pagemap "
                             f"({len(samples)} LRU samples for the vmemmap base)")
                return Calibration(base, vmemmap, levels, zero_pfn, huge_zero_pfn,
                                   seconds=time.monotonic() - started, notes=tuple(notes))
            raise CalibrationError(errors[0] if errors else "no candidate to verify")

    def _direct_map_candidates(self, addrs: list[int], pgd: int,
                               expected: int) -> list[tuple[int, int]]:
        """(base, levels) pairs whose walk maps addrs[0] to its pagemap pfn."""
        top = pgd & ~(GIB - 1)
        count = math.ceil(max_physical_address() / GIB) + 1
        bases = [top - i * GIB for i in range(count) if top - i * GIB >= KERNEL_HALF]
        matches = []
        for start in range(0, len(bases), self.candidates):
            chunk = bases[start:start + self.candidates]
            out = self._request(MODES["UT_CAL_BASES"], addrs, chunk)
            for i, base in enumerate(chunk):
                if out.pfn4[i] == expected:
                    matches.append((base, 4))
                if out.pfn5[i] == expected:
                    matches.append((base, 5))
        if not matches:
            raise CalibrationError(
                f"no 1 GiB-aligned direct-map base below mm->pgd maps 0x{addrs[0]:x} to pfn "
                f"0x{expected:x} as /proc/self/pagemap says (tried {len(bases)} bases, "
                "4 and 5 levels)")
        return matches

    def verify(self, cal: Calibration, pages: Mapping | None = None) -> None:
        """Raise CalibrationError unless the reader, with `cal`, describes
        pages this process wrote exactly as /proc/self/pagemap does."""
        if pages is None:
            with Mapping(self.verify_pages * PAGE_SIZE) as fresh:
                fresh.madvise(lib().MADV_NOHUGEPAGE)
                fresh.fill()
                return self.verify(cal, fresh)
        addrs = [pages.page(i) for i in range(self.verify_pages)]
        out = self._request(MODES["UT_CAL_VERIFY"], addrs, walk=cal)
        for i, addr in enumerate(addrs):
            expected = _pfn_and_flags(addr).pfn
            got = WalkedPage.from_bytes(bytes(out.state[i]))
            problem = _verify_problem(got, expected, out.index[i])
            if problem:
                raise CalibrationError(f"calibration does not verify at 0x{addr:x}: {problem}")


def _verify_problem(got: WalkedPage, pfn: int, index: int) -> str | None:
    """Why a page this process wrote (anon, exclusive, mapped once) is not
    what the reader says, or None."""
    if got.where_name == "READ_FAILED" and got.level_name == "PAGE":
        return f"the struct page of pfn 0x{got.pfn:x} could not be read (vmemmap base wrong)"
    if got.where_name != "PTE_PRESENT":
        return f"the walk stopped at {got.level_name}: {got.where_name} (direct-map base or " \
               "paging levels wrong)"
    if got.pfn != pfn:
        return f"the walk gave pfn 0x{got.pfn:x}, pagemap 0x{pfn:x} (direct-map base wrong)"
    if not got.has("FOLIO"):
        return "its struct page could not be read (vmemmap base wrong)"
    if index != got.addr >> 12 or not got.has("ANON") or got.mapcount != 1:
        return (f"its struct page (index 0x{index:x}, mapcount {got.mapcount}, "
                f"flags {sorted(got.flag_names)}) is not this anonymous page's "
                "(vmemmap base wrong)")
    if not got.has("ANON_EXCLUSIVE") or got.has("LARGE") or got.refcount < 1:
        return f"its folio is not a small exclusive anonymous page: {got}"
    return None


def calibrate(layout: layout_mod.Layout | None = None) -> Calibration:
    """Compile, calibrate, verify, clean up: a Calibration or CalibrationError."""
    with Calibrator(layout) as calibrator:
        return calibrator.calibrate()


# ---- once per boot ----
# The bases and the paging depth are fixed from boot to shutdown, so the
# first tracer start of a boot calibrates (and verifies) and later starts
# reuse them.  /run is cleared at boot and only root may write there.
CACHE_FILE = Path("/run/uffdtrace-calibration.json")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _cache_key(layout: layout_mod.Layout) -> dict:
    # the layout facts the calibration program was compiled with
    return {"boot_id": BOOT_ID.read_text().strip(), "layout": layout.defines()}


def calibration_for_this_boot(layout: layout_mod.Layout | None = None,
                              cache_file: Path = CACHE_FILE) -> Calibration:
    """The cached calibration of this boot, else a new one (then cached).
    The huge zero folio can be freed and reallocated between tracer runs,
    so it is measured again every time (pagemap only, no BPF)."""
    layout = layout or layout_mod.load()
    started, key = time.monotonic(), _cache_key(layout)
    try:
        saved = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("key") == key:
        huge_zero_pfn, note = find_huge_zero_pfn()
        c = saved["calibration"]
        return Calibration(c["page_offset_base"], c["vmemmap_base"], c["levels"],
                           c["zero_pfn"], huge_zero_pfn, seconds=time.monotonic() - started,
                           notes=(f"reused this boot's calibration ({cache_file})", note))
    cal = calibrate(layout)
    record = {"key": key, "calibration": {f: getattr(cal, f) for f in (
        "page_offset_base", "vmemmap_base", "levels", "zero_pfn")}}
    tmp = cache_file.with_suffix(".tmp")
    # the bases are KASLR secrets: root only, from the start
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(json.dumps(record))
    tmp.replace(cache_file)
    return cal
