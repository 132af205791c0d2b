"""Will this range move?  A pre-flight verdict per page (`check`), from what
/proc shows now and, where BPF is allowed, the kernel itself.

The rules follow the kernel's order of checks in mm/userfaultfd.c
(move_pages(), validate_move_areas(), move_pages_ptes(), move_pages_huge_pmd();
6.12 .. 7.x agree on everything used here, see reference/kernel-uffdio-move.md):

1. the request: alignment, length, mode bits; the caller must be the
   process whose memory moves (no cross-mm moves)                  -> EINVAL
2. no VMA at dst, then at src                                       -> ENOENT
3. src/dst VMA shared or the range past its end; validate_move_areas():
   same protections and mlock state, src writable, no hugetlb/PFNMAP/IO/
   MIXEDMAP, dst registered with a userfaultfd, both anonymous      -> EINVAL
4. per 2 MiB of src: no page table at all (no page ever populated there)
   is a hole before anything else; a huge PMD moves whole when src and
   dst are PMD-aligned, 2 MiB remain and dst has no page table, else it is
   split (EBUSY first if it is not exclusive)
5. per page: dst populated -> EEXIST; src hole -> ENOENT (skipped with
   ALLOW_SRC_HOLES); zero page (moves, 6.9+); not anon-exclusive (KSM,
   shared after fork) -> EBUSY; pinned -> EBUSY; in a large folio -> split
   (a pinned large folio cannot be split: EBUSY, measured on 6.18 -- one
   failed split, no retry; code reading had predicted an endless retry,
   which the thp_pinned scenario guards against); swap entry -> moves when
   exclusive, else EBUSY.

The first page that fails stops the move: a partial move returns EAGAIN
with `move` = the bytes before it, otherwise the page's own errno.

Evidence, as in a diagnosis: *observed* for what the kernel exports itself
(pagemap bits, kpageflags, VmFlags, the io_uring buffer table), *inferred*
for deductions (a page mapped once is assumed anon-exclusive and unpinned:
PageAnonExclusive and the refcount are not exported; a swap entry's
exclusive bit is not either; whether a huge page is PMD-mapped).  Where
root and BPF allow, the kernel's own page state (checkkernel.py: the
tracer's page-table walk run on the checked process's mm) settles the
first two at evidence observed.

The census of a whole process is census.py.
"""
from __future__ import annotations

import ctypes
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from .diagnose import invalid_from_request
from .checkkernel import with_kernel_view
from .enrich import Vma, iter_vmas
from .errors import UserError
from .kernel.pageview import PageViewError
from .native import PAGE_SIZE, Mapping, PendingRemoveEvent, Uffd, hpage_size, lib
from .pagestate import (PM_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAP, PagemapReader,
                        ProcessGone, kpageflags)
from .procpins import RegisteredBuffer, comm_of, io_uring_buffers
from .procview import open_reader, read_vmas, require_process, unseen_by
from .taxonomy import INFERRED, OBSERVED, CauseCode as C, cause
from .uffdwaiters import event_waiters
from .vma_rules import invalid_from_vmas

# --- verdicts ---------------------------------------------------------------------


class Kind(NamedTuple):
    cause: str          # taxonomy cause code (ok for pages that move)
    label: str          # what it means, one line


KINDS: dict[str, Kind] = {
    "movable": Kind(C.OK, "moves (mapped once; no pin seen)"),
    "movable_thp": Kind(C.OK, "moves as a whole 2 MiB huge page (one PMD)"),
    "thp_split": Kind(C.OK, "moves, but its huge page is split first"),
    "zero_page": Kind(C.OK, "the shared zero page: moves (Linux 6.9+)"),
    "swapped": Kind(C.OK, "swapped out: the swap entry moves if it is exclusive "
                    "(no fork since it was swapped out)"),
    "hole_allowed": Kind(C.OK, "not populated: skipped (ALLOW_SRC_HOLES)"),
    "hole": Kind(C.SRC_HOLE, "not populated"),
    "dst_populated": Kind(C.DST_POPULATED, "the destination page is populated"),
    "ksm": Kind(C.PAGE_KSM, "merged by KSM"),
    "shared": Kind(C.PAGE_SHARED, "shared with another process (mapped more than once)"),
    "not_exclusive": Kind(C.BUSY_UNKNOWN, "not exclusive: KSM, shared after fork or the "
                          "zero page (kpageflags unreadable)"),
    "pinned": Kind(C.PAGE_PINNED, "pinned (io_uring fixed buffer)"),
    "pinned_split": Kind(C.THP_SPLIT_FAILED, "pinned, in a huge page this move must split: "
                         "the split fails (EBUSY)"),
    "swap_shared": Kind(C.SWAP_NOT_EXCLUSIVE, "swapped out, swap entry shared after fork"),
    "zero_page_old": Kind(C.ZERO_PAGE, "the shared zero page (this kernel cannot move it)"),
    "no_vma": Kind(C.NO_VMA, "no VMA"),
}
# EINVAL refusals of the whole range take their kind from the cause code.
MOVES = frozenset(k for k, v in KINDS.items() if v.cause == C.OK)

# Concrete commands per blocking kind (the taxonomy's remedy says why).
FIXES = {
    "ksm": "madvise(addr, len, MADV_UNMERGEABLE) on the range (or MADV_POPULATE_WRITE, "
           "which copies each page; ksmd may merge it again); `echo 2 > "
           "/sys/kernel/mm/ksm/run` unmerges every KSM page of the machine",
    "shared": "madvise(addr, len, MADV_POPULATE_WRITE) on the range: each page is written "
              "and becomes exclusive (copied if still shared); MADV_DONTFORK before fork() "
              "keeps it from happening",
    "not_exclusive": "madvise(addr, len, MADV_POPULATE_WRITE) on the range (breaks KSM and "
                     "fork sharing alike); run as root to tell which",
    "pinned": "IORING_UNREGISTER_BUFFERS (io_uring_register(fd, "
              "IORING_UNREGISTER_BUFFERS, NULL, 0)) on the ring named, or move around the "
              "buffer",
    "pinned_split": "unregister the io_uring buffer, or move whole 2 MiB-aligned PMDs "
                    "(no split), or MADV_NOHUGEPAGE the source before populating it",
    "swap_shared": "madvise(addr, len, MADV_POPULATE_WRITE) on the range (swaps in and "
                   "makes each page exclusive)",
    "hole": "pass UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, or move only populated pages",
    "dst_populated": "madvise(dst, len, MADV_DONTNEED) on the destination first",
    "thp_split": "move whole 2 MiB PMDs with src and dst 2 MiB-aligned to keep huge pages",
    "zero_page_old": "write the pages first, or use Linux 6.9+",
}

CHECK_EVIDENCE = {
    OBSERVED: "read from what the kernel exports (pagemap, kpageflags, VmFlags, io_uring "
              "fdinfo), or in the kernel by BPF (anon-exclusive, maybe-DMA-pinned)",
    INFERRED: "deduced: what neither /proc nor the kernel view shows (a swap entry's "
              "exclusive bit, PMD mapping, which uffd holds an unread event; anon-exclusive "
              "and pins too when the kernel view is off) is assumed from what they do",
}


@dataclass(frozen=True)
class Verdict:
    kind: str
    evidence: str
    why: str
    culprit: str | None = None

    @property
    def cause(self) -> str:
        return KINDS[self.kind].cause if self.kind in KINDS else self.kind

    @property
    def moves(self) -> bool:
        return self.kind in MOVES

    @property
    def errno(self) -> str | None:
        """The errno this page alone would give (None: it moves)."""
        return None if self.moves else cause(self.cause).errno

    @property
    def label(self) -> str:
        return KINDS[self.kind].label if self.kind in KINDS else cause(self.kind).explanation


@dataclass(frozen=True)
class Run:
    """Consecutive src pages with the same verdict."""

    start: int
    pages: int
    verdict: Verdict

    @property
    def end(self) -> int:
        return self.start + self.pages * PAGE_SIZE

    def to_json(self, src: int, dst: int | None) -> dict:
        v = self.verdict
        out = {"start": self.start, "end": self.end, "pages": self.pages, "kind": v.kind,
               "cause": v.cause, "errno": v.errno, "evidence": v.evidence, "why": v.why,
               "culprit": v.culprit}
        if dst is not None:
            out["dst_start"] = dst + (self.start - src)
        return out


@dataclass(frozen=True)
class Prediction:
    errno: str | None          # None: every byte moves
    move: int | None           # what the kernel writes to uffdio_move.move (None: nothing)
    stop_addr: int | None      # src address where the move stops
    cause: str                 # taxonomy code (partial for a partial move)
    underlying: str | None     # a partial move's cause
    hangs: bool = False        # the kernel retries until a fatal signal

    def text(self) -> str:
        if self.hangs:
            return (f"HANGS: retries at {self.stop_addr:#x} until a fatal signal "
                    f"({self.underlying or self.cause})")
        if self.errno is None:
            return f"moves all {self.move} bytes"
        if self.cause == C.PARTIAL:
            return (f"EAGAIN after {self.move} bytes (move={self.move}): stops at "
                    f"{self.stop_addr:#x}, {self.underlying}")
        where = f" at {self.stop_addr:#x}" if self.stop_addr is not None else ""
        move = "move untouched" if self.move is None else f"move={self.move}"
        return f"{self.errno} ({move}){where}: {self.cause}"

    def to_json(self) -> dict:
        return {"errno": self.errno, "move": self.move, "stop_addr": self.stop_addr,
                "cause": self.cause, "underlying": self.underlying, "hangs": self.hangs}


class MoveRequest(NamedTuple):
    dst: int
    src: int
    len: int
    mode: int


@dataclass
class CheckResult:
    pid: int
    comm: str
    request: MoveRequest
    dst_given: bool
    prediction: Prediction
    runs: list[Run]
    src_vma: Vma | None
    dst_vma: Vma | None
    pins: list[RegisteredBuffer]
    unseen: list[str]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> Counter:
        counts: Counter = Counter()
        for r in self.runs:
            counts[r.verdict.kind] += r.pages
        return counts

    def remedies(self) -> dict[str, dict]:
        out = {}
        for r in self.runs:
            k = r.verdict.kind
            if r.verdict.moves and k not in FIXES or k in out:
                continue
            out[k] = {"cause": r.verdict.cause, "remedy": cause(r.verdict.cause).remedy,
                      "fix": FIXES.get(k)}
        return out

    def to_json(self) -> dict:
        req = self.request
        dst = req.dst if self.dst_given else None
        return {
            "pid": self.pid, "comm": self.comm, "src": req.src, "len": req.len,
            "dst": dst, "mode": req.mode, "page_size": PAGE_SIZE,
            "prediction": self.prediction.to_json(),
            "runs": [r.to_json(req.src, dst) for r in self.runs],
            "summary": dict(self.summary()),
            "remedies": self.remedies(),
            "src_vma": self.src_vma.to_json() if self.src_vma else None,
            "dst_vma": self.dst_vma.to_json() if self.dst_vma else None,
            "io_uring_buffers": [p.to_json() for p in self.pins],
            "unseen": self.unseen, "notes": self.notes,
            "evidence_levels": {str(k): v for k, v in CHECK_EVIDENCE.items()},
        }


# --- reading ----------------------------------------------------------------------


@functools.cache
def _kernel_moves_zero_page() -> bool | None:
    """Ask the running kernel, not its version: move one zero page (an
    anonymous page only ever read) into a registered destination here.
    True: it moves (move_zeropage_pte(), since 6.9); False: refused (6.8
    answers EBUSY); None: no userfaultfd to ask with."""
    try:
        with Uffd() as uffd, Mapping(PAGE_SIZE) as src, Mapping(PAGE_SIZE) as dst:
            for m in (src, dst):
                m.madvise(lib().MADV_NOHUGEPAGE)
            ctypes.string_at(src.addr, 1)     # a read fault maps the shared zero page
            uffd.register(dst)
            return uffd.move(dst.addr, src.addr, PAGE_SIZE).ret == 0
    except (OSError, UserError):
        return None


@functools.cache
def _mmap_changing_after_vma_lookup() -> bool | None:
    """Ask the running kernel where it checks mmap_changing: move a page
    here while a UFFD_EVENT_REMOVE of our own is unread.  True: after the
    VMA lookup, writing -EAGAIN to `move` (move_pages(), the 2025 fix);
    False: before it, `move` untouched (userfaultfd_move(), 6.12); None:
    no userfaultfd to ask with."""
    try:
        with Uffd(features=lib().UFFD_FEATURE_EVENT_REMOVE) as uffd, \
                Mapping(PAGE_SIZE) as src, Mapping(PAGE_SIZE) as dst, \
                Mapping(PAGE_SIZE) as removed:
            src.fill()
            for m in (dst, removed):
                uffd.register(m)
            with PendingRemoveEvent(uffd, removed.addr, PAGE_SIZE):
                call = uffd.move(dst.addr, src.addr, PAGE_SIZE)
            if call.errno != "EAGAIN":
                return None
            return call.move == -_errno_value("EAGAIN")
    except (OSError, UserError):
        return None


def _pending_event(pid, comm, req, dst_given, src_vma, dst_vma, unseen,
                   move_written: bool) -> CheckResult | None:
    """EAGAIN with nothing moved, if a thread of pid waits for its uffd
    event to be read (uffdwaiters.py): inferred, since /proc does not say
    which of the process's uffds holds the event."""
    waiters, why_not = event_waiters(pid)
    if why_not:
        unseen.append(f"unread uffd events: {why_not}")
    if not waiters:
        return None
    first = waiters[0]
    verdict = Verdict(C.MMAP_CHANGING, INFERRED, first.describe()
                      + "; until then every move on that uffd fails (mmap_changing)",
                      culprit=f"pid {first.pid} tid {first.tid} ({first.comm})")
    return _refused(pid, comm, req, dst_given, verdict, src_vma, dst_vma, unseen,
                    move_written=move_written,
                    notes=[w.describe() for w in waiters[1:]])


def _vma_at(vmas: list[Vma], addr: int) -> Vma | None:
    for v in vmas:
        if v.start <= addr < v.end:
            return v
    return None


def _fork_relatives(pid: int) -> list[int]:
    """Processes that may share anonymous pages with pid through fork: its
    parent, its descendants and its parent's other descendants."""
    ppid: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for p, pp in ppid.items():
        children.setdefault(pp, []).append(p)
    out, todo, seen = [], [pid], {pid}
    parent = ppid.get(pid)
    if parent and parent > 1:
        out.append(parent)
        todo.append(parent)
        seen.add(parent)
    while todo and len(out) < 256:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                out.append(c)
                todo.append(c)
    return out


def _sharers(pid: int, pages: dict[int, int]) -> dict[int, list[int]]:
    """addr -> the fork relatives mapping the same pagemap frame (PFN or swap
    entry) at the same address (fork keeps addresses)."""
    found: dict[int, list[int]] = {}
    if not pages:
        return found
    for other in _fork_relatives(pid):
        try:
            with PagemapReader(other) as r:
                for addr, frame in pages.items():
                    w = r.entries(addr, 1)[0]
                    if (w & (PM_PRESENT | PM_SWAP)) and (w & PM_PFN_MASK) == frame:
                        found.setdefault(addr, []).append(other)
        except (ProcessGone, OSError):
            continue
    return found


# --- check --------------------------------------------------------------------------


def _whole_range(req: MoveRequest, verdict: Verdict) -> list[Run]:
    pages = max(1, -(-req.len // PAGE_SIZE))
    return [Run(req.src - req.src % PAGE_SIZE, pages, verdict)]


def _refused(pid, comm, req, dst_given, verdict, src_vma, dst_vma, unseen, move_written,
             notes=()) -> CheckResult:
    errno = verdict.errno
    pred = Prediction(errno, -_errno_value(errno) if move_written else None, None,
                      verdict.cause, None)
    return CheckResult(pid, comm, req, dst_given, pred, _whole_range(req, verdict), src_vma,
                       dst_vma, [], unseen, list(notes))


def _errno_value(name: str) -> int:
    import errno as E
    return getattr(E, name)


def _runs(start: int, verdicts: list[Verdict]) -> list[Run]:
    runs: list[Run] = []
    for i, v in enumerate(verdicts):
        if runs and runs[-1].verdict == v:
            last = runs[-1]
            runs[-1] = Run(last.start, last.pages + 1, v)
        else:
            runs.append(Run(start + i * PAGE_SIZE, 1, v))
    return runs


def check(pid: int, src: int, length: int, dst: int | None = None, mode: int = 0,
          caller: int | None = None, kernel_view: bool | None = None) -> CheckResult:
    """What UFFDIO_MOVE(dst, src, length, mode) issued now by `caller`
    (default: pid itself, the owner of the userfaultfd) would meet, page by
    page.  Without dst only the source side is judged.  kernel_view: read
    what /proc does not export in BPF (checkkernel.py); None: where root
    and BPF allow it, False: never, True: or fail with UserError."""
    comm = require_process(pid)
    dst_given = dst is not None
    req = MoveRequest(dst if dst_given else src, src, length, mode)
    L = lib()
    holes_ok = bool(mode & L.UFFDT_MOVE_MODE_ALLOW_SRC_HOLES)
    reader = open_reader(pid)
    with reader:
        unseen = unseen_by(reader)
        code = invalid_from_request(req)
        if code:
            return _refused(pid, comm, req, dst_given,
                            Verdict(code, OBSERVED, "from the request arguments"),
                            None, None, unseen, move_written=False)
        if caller is not None and caller != pid:
            return _refused(pid, comm, req, dst_given, Verdict(
                C.INVALID_CROSS_MM, OBSERVED, f"the caller (pid {caller}) is not pid {pid}, "
                "whose memory moves: a userfaultfd only moves its creator's pages"),
                None, None, unseen, move_written=False)
        vmas = read_vmas(pid)
        if not any(v.start < src + length and src < v.end for v in vmas):
            raise UserError(f"{src:#x}+{length} is not mapped in pid {pid}")
        src_vma, dst_vma = _vma_at(vmas, src), _vma_at(vmas, req.dst)
        # mmap_changing: checked before the VMA lookup (6.12) or after it
        after_lookup = _mmap_changing_after_vma_lookup()
        if after_lookup is False:
            pending = _pending_event(pid, comm, req, dst_given, src_vma, dst_vma, unseen,
                                     move_written=False)
            if pending is not None:
                return pending
        for vma, name in ((dst_vma, "dst"), (src_vma, "src")):   # uffd_move_lock: dst first
            if vma is None:
                return _refused(pid, comm, req, dst_given, Verdict(
                    "no_vma", OBSERVED, f"no VMA at {name} {getattr(req, name):#x}"),
                    src_vma, dst_vma, unseen, move_written=True)
        if after_lookup is not False:
            pending = _pending_event(pid, comm, req, dst_given, src_vma, dst_vma, unseen,
                                     move_written=True)
            if pending is not None:
                return pending
        # Without a dst, judge the src VMA as if a compatible registered dst existed.
        as_dst = dst_vma if dst_given else Vma(src_vma.start, src_vma.end, src_vma.perms,
                                                src_vma.path, src_vma.flags | {"um"})
        code, notes = invalid_from_vmas(req, src_vma, as_dst)
        if code != C.INVALID_UNKNOWN:
            return _refused(pid, comm, req, dst_given, Verdict(code, OBSERVED,
                            "; ".join(notes) + " (VmFlags)"), src_vma, dst_vma, unseen,
                            move_written=True)
        pins, why_not = io_uring_buffers(pid)
        if why_not:
            unseen.append(f"io_uring buffers: {why_not}")
        verdicts, notes = _page_verdicts(pid, reader, req, dst_given, holes_ok, src_vma,
                                         pins)
        try:
            verdicts = with_kernel_view(pid, src, verdicts, PAGE_SIZE, Verdict, kernel_view,
                                        unseen, notes)
        except PageViewError as exc:
            raise UserError(f"the kernel view: {exc}") from None
        verdicts = _whole_pmds(req, verdicts)
    runs = _runs(src, verdicts)
    return CheckResult(pid, comm, req, dst_given, _predict(req, verdicts, holes_ok), runs,
                       src_vma, dst_vma if dst_given else None, pins, unseen, notes)


def _predict(req: MoveRequest, verdicts: list[Verdict], holes_ok: bool) -> Prediction:
    for i, v in enumerate(verdicts):
        if v.moves:
            continue
        addr = req.src + i * PAGE_SIZE
        moved = addr - req.src
        if moved:
            return Prediction("EAGAIN", moved, addr, C.PARTIAL, v.cause)
        return Prediction(v.errno, -_errno_value(v.errno), addr, v.cause, None)
    return Prediction(None, req.len, None, C.OK, None)


def _page_verdicts(pid: int, reader: PagemapReader, req: MoveRequest, dst_given: bool,
                   holes_ok: bool, src_vma: Vma, pins: list[RegisteredBuffer]
                   ) -> tuple[list[Verdict], list[str]]:
    huge = hpage_size()
    per_pmd = huge // PAGE_SIZE
    npages = req.len // PAGE_SIZE
    notes: list[str] = []
    # pagemap of whole 2 MiB regions around src and dst: whether a page table
    # exists (some page of the region populated) decides holes and PMD moves
    lo = req.src - req.src % huge
    span = -(-(req.src + req.len - lo) // huge) * huge
    src_words = reader.entries(lo, span // PAGE_SIZE)
    off = (req.src - lo) // PAGE_SIZE
    dlo = req.dst - req.dst % huge
    dspan = -(-(req.dst + req.len - dlo) // huge) * huge
    dst_words = reader.entries(dlo, dspan // PAGE_SIZE) if dst_given else None
    doff = (req.dst - dlo) // PAGE_SIZE

    def region_populated(words, index) -> bool:
        base = index - index % per_pmd
        return any(w & (PM_PRESENT | PM_SWAP) for w in words[base:base + per_pmd])

    src_range = src_words[off:off + npages]
    pfns = [w & PM_PFN_MASK for w in src_range if w & PM_PRESENT and w & PM_PFN_MASK]
    F = kpageflags()
    kflags = reader.flags(pfns)
    flags_known = reader.kpageflags_readable and bool(reader.pfns_visible)
    shared_pfns = [w & PM_PFN_MASK for w in src_range
                   if w & PM_PRESENT and not w & PM_EXCLUSIVE and w & PM_PFN_MASK]
    mapcounts = reader.mapcounts(shared_pfns)
    ksm_in_vma = None
    if not flags_known:
        stats: dict = {}
        for v in iter_vmas(pid, True, stats):
            if v.start == src_vma.start:
                ksm_in_vma = stats.get(v.start, {}).get("KSM")
                break

    def flag(w, name) -> bool:
        return bool(kflags.get(w & PM_PFN_MASK, 0) >> F[name] & 1)

    # Huge pages PMD-mapped in src (inferred: 512 present THP pages of one
    # folio at a 2 MiB-aligned address, consecutive PFNs from a head)
    def pmd_mapped(region_index: int) -> bool:
        ws = src_words[region_index:region_index + per_pmd]
        if len(ws) < per_pmd or not all(w & PM_PRESENT for w in ws) or not flags_known:
            return False
        first = ws[0] & PM_PFN_MASK
        return flag(ws[0], "thp") and flag(ws[0], "compound_head") and first % per_pmd == 0 \
            and all((w & PM_PFN_MASK) == first + k for k, w in enumerate(ws))

    huge_regions: dict[int, bool] = {}

    def huge_at(region_index: int) -> bool:
        if region_index not in huge_regions:
            huge_regions[region_index] = pmd_mapped(region_index)
        return huge_regions[region_index]

    def pin_at(addr: int, region_index: int) -> RegisteredBuffer | None:
        """The buffer pinning the folio at addr: a pin of any page of a
        PMD-mapped huge page pins all of it (one folio)."""
        pin = next((p for p in pins if p.covers(addr)), None)
        if pin is None and huge_at(region_index):
            rstart = lo + region_index * PAGE_SIZE
            pin = next((p for p in pins if p.addr < rstart + huge and rstart < p.addr + p.len),
                       None)
        return pin

    sharers: dict[int, list[int]] = {}
    if reader.pfns_visible:
        candidates = {}
        for i, w in enumerate(src_range):
            addr = req.src + i * PAGE_SIZE
            if (w & PM_PRESENT and not w & PM_EXCLUSIVE and not flag(w, "ksm")
                    and not flag(w, "zero_page")) or (w & PM_SWAP):
                candidates[addr] = w & PM_PFN_MASK
            if len(candidates) >= 4096:
                break
        sharers = _sharers(pid, candidates)

    verdicts: list[Verdict] = []
    for i in range(npages):
        addr = req.src + i * PAGE_SIZE
        w = src_words[off + i]
        region = off + i - (off + i) % per_pmd
        # a PMD-mapped huge page: one unit for the whole 2 MiB
        if w & PM_PRESENT and flag(w, "thp") and huge_at(region):
            rstart = lo + region * PAGE_SIZE
            whole = (rstart >= req.src and rstart + huge <= req.src + req.len
                     and (req.dst + (rstart - req.src)) % huge == 0)
            dst_pmd_none = not dst_given or not region_populated(
                dst_words, doff + (rstart - req.src) // PAGE_SIZE)
            pmd_move = whole and dst_pmd_none
        else:
            pmd_move = False
        verdicts.append(_page_verdict(
            addr, w, dst_words[doff + i] if dst_given else None, holes_ok,
            src_region_populated=region_populated(src_words, off + i),
            flags_known=flags_known, flag=lambda name: flag(w, name),
            pinned=pin_at(addr, region) if w & PM_PRESENT else None,
            pmd_move=pmd_move, mapcount=mapcounts.get(w & PM_PFN_MASK),
            sharers=sharers.get(addr), ksm_in_vma=ksm_in_vma))
    return verdicts, notes


def _whole_pmds(req: MoveRequest, verdicts: list[Verdict]) -> list[Verdict]:
    """A PMD moves or fails as one: a blocked page blocks its whole PMD."""
    per_pmd = hpage_size() // PAGE_SIZE
    off = req.src % hpage_size() // PAGE_SIZE
    out = list(verdicts)
    for i, v in enumerate(verdicts):
        if v.kind == "movable_thp":
            base = i - (off + i) % per_pmd
            unit = verdicts[max(base, 0):base + per_pmd]
            blocker = next((u for u in unit if not u.moves), None)
            if blocker is not None:
                out[i] = Verdict(blocker.kind, INFERRED,
                                 f"in the huge page at {req.src + base * PAGE_SIZE:#x}, "
                                 f"which moves or fails as one: {blocker.why}",
                                 blocker.culprit)
    return out


def _page_verdict(addr: int, w: int, dw: int | None, holes_ok: bool, *,
                  src_region_populated: bool, flags_known: bool, flag, pinned,
                  pmd_move: bool, mapcount: int | None, sharers: list[int] | None,
                  ksm_in_vma: int | None) -> Verdict:
    present, swapped = bool(w & PM_PRESENT), bool(w & PM_SWAP)
    hole = not present and not swapped
    # move_pages(): no src page table at all is a hole before dst is looked at
    if hole and not holes_ok and not src_region_populated:
        return Verdict("hole", OBSERVED, "pagemap: not present, nor swapped (and nothing in "
                       "its 2 MiB: no page table)")
    if dw is not None and dw & (PM_PRESENT | PM_SWAP):
        return Verdict("dst_populated", OBSERVED, "pagemap: dst page "
                       + ("present" if dw & PM_PRESENT else "swapped out"))
    if hole:
        if holes_ok:
            return Verdict("hole_allowed", OBSERVED, "pagemap: not present, nor swapped")
        return Verdict("hole", OBSERVED, "pagemap: not present, nor swapped")
    if swapped:
        if sharers:
            return Verdict("swap_shared", INFERRED, "pagemap: the same swap entry is mapped "
                           "by a fork relative", _sharers_text(sharers))
        return Verdict("swapped", INFERRED, "pagemap: swapped out; its exclusive bit is not "
                       "exported (no fork relative maps the same entry)")
    exclusive = bool(w & PM_EXCLUSIVE)
    if flags_known and flag("zero_page"):
        moves = _kernel_moves_zero_page()
        if moves is None:
            return Verdict("zero_page", INFERRED, "kpageflags: zero page (whether this kernel "
                           "moves zero pages could not be asked: no userfaultfd)")
        if moves:
            return Verdict("zero_page", OBSERVED, "kpageflags: zero page")
        return Verdict("zero_page_old", OBSERVED, "kpageflags: zero page")
    if flags_known and flag("ksm"):
        return Verdict("ksm", OBSERVED, "kpageflags: KSM")
    if not exclusive:
        if flags_known or ksm_in_vma == 0:
            times = f", mapped {mapcount} times (kpagecount)" if mapcount else ""
            return Verdict("shared", OBSERVED, "pagemap: not exclusively mapped" + times,
                           _sharers_text(sharers) if sharers else None)
        return Verdict("not_exclusive", INFERRED, "pagemap: not exclusively mapped; "
                       "kpageflags unreadable and the VMA has KSM pages")
    large = flags_known and flag("thp")
    if pinned is not None:
        if large and not pmd_move:
            return Verdict("pinned_split", INFERRED, "kpageflags: huge page; io_uring "
                           "fixed buffer covers it", pinned.describe())
        return Verdict("pinned", OBSERVED, "io_uring fdinfo: registered buffer",
                       pinned.describe())
    if large:
        if pmd_move:
            return Verdict("movable_thp", INFERRED, "kpageflags: THP, PMD-mapped (512 "
                           "consecutive frames); src and dst 2 MiB-aligned, dst PMD empty")
        return Verdict("thp_split", INFERRED, "kpageflags: part of a huge page the move "
                       "does not take whole (unaligned, shorter than 2 MiB, or dst PMD in "
                       "use)")
    return Verdict("movable", INFERRED, "pagemap: present, mapped once; no pin seen")


def _sharers_text(pids: list[int]) -> str:
    return "also mapped by " + ", ".join(f"pid {p} ({comm_of(p)})" for p in pids[:8])
