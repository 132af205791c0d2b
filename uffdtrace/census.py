"""A movability census of a whole process (`uffdtrace check --census`):
bytes per verdict of every private anonymous VMA, the largest blockers of
each class and what fixes each, from /proc alone -- the page verdicts of
movecheck.py, streamed over pagemap in chunks so memory stays bounded
whatever the process maps."""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from .enrich import Vma
from .movecheck import FIXES
from .native import PAGE_SIZE
from .pagestate import PM_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAP, kpageflags
from .procpins import RegisteredBuffer, io_uring_buffers
from .procview import open_reader, read_vmas, require_process, unseen_by
from .taxonomy import CauseCode as C, cause
from .vma_rules import SPECIAL_VMFLAGS

CENSUS_CHUNK_PAGES = 1 << 16          # 512 KiB of pagemap per read
# The census reads /proc only (the kernel view walks one page per lookup:
# `check` of a range uses it): what that leaves unseen.
CENSUS_BLIND = [
    "pins other than io_uring fixed buffers (O_DIRECT in flight, VFIO, RDMA): no /proc "
    "file lists them (`check` of a range reads them in the kernel)",
    "PG_anon_exclusive: a page shared with a child that has exited stays non-exclusive "
    "(EBUSY) until written, yet reads as mapped once (`check` of a range reads it in the "
    "kernel)"]
CENSUS_BLOCKERS = 5                   # the largest runs kept of each blocking class
BLOCKING = ("ksm", "pinned", "shared", "not_exclusive", "refused")
CENSUS_KINDS = ("movable", "thp", "zero_page", "swapped", "ksm", "pinned", "shared",
                "not_exclusive", "refused")
CENSUS_LABELS = {
    "movable": "moves",
    "thp": "moves; in huge pages (whole aligned 2 MiB moves keep them huge, others split)",
    "zero_page": "the zero page (moves on 6.9+)",
    "swapped": "swapped out (moves if the swap entry is exclusive)",
    "ksm": "KSM-merged: EBUSY",
    "pinned": "pinned by an io_uring fixed buffer: EBUSY",
    "shared": "shared after fork (mapped more than once): EBUSY",
    "not_exclusive": "not exclusive (KSM or fork; kpageflags unreadable): EBUSY",
    "refused": "in a VMA a move refuses (EINVAL)",
}
CENSUS_CAUSE = {"movable": C.OK, "thp": C.OK, "zero_page": C.OK, "swapped": C.OK,
                "ksm": C.PAGE_KSM, "pinned": C.PAGE_PINNED, "shared": C.PAGE_SHARED,
                "not_exclusive": C.BUSY_UNKNOWN}


@dataclass
class VmaCensus:
    vma: Vma
    bytes: Counter
    refusal: str | None = None     # a cause code when the whole VMA refuses moves
    skipped: bool = False          # nothing populated (smaps Rss and Swap 0): not read

    def to_json(self) -> dict:
        return {"start": self.vma.start, "end": self.vma.end, "perms": self.vma.perms,
                "path": self.vma.path, "refusal": self.refusal, "skipped": self.skipped,
                "bytes": dict(self.bytes)}


@dataclass
class CensusResult:
    pid: int
    comm: str
    vmas: list[VmaCensus]
    # the largest runs of each blocking class: (bytes, start, kind, culprit)
    blockers: list[tuple[int, int, str, str | None]]
    pins: list[RegisteredBuffer]
    excluded: dict[str, int]       # VMAs not private anonymous: count and Rss
    unseen: list[str]
    pages_read: int
    ksm_stat: dict[str, str]

    def totals(self) -> Counter:
        total: Counter = Counter()
        for v in self.vmas:
            total.update(v.bytes)
        return total

    def fixes(self) -> dict[str, dict]:
        out = {}
        total = self.totals()
        for kind in CENSUS_KINDS:
            if not total.get(kind) or kind in ("movable", "zero_page"):
                continue
            code = CENSUS_CAUSE.get(kind)
            entry = {"bytes": total[kind]}
            if code:
                entry["cause"] = code
                entry["remedy"] = cause(code).remedy
            fix = FIXES.get({"thp": "thp_split", "swapped": "swap_shared"}.get(kind, kind))
            if kind == "refused":
                codes = sorted({v.refusal for v in self.vmas if v.refusal})
                entry["causes"] = codes
                entry["remedy"] = "; ".join(f"{c}: {cause(c).remedy}" for c in codes)
            if kind == "pinned" and self.pins:
                rings = sorted({(p.pid, p.fd) for p in self.pins})
                fix += "; rings: " + ", ".join(f"pid {p} fd {fd}" for p, fd in rings)
            if kind == "ksm" and self.ksm_stat.get("ksm_merge_any") == "yes":
                fix = ("prctl(PR_SET_MEMORY_MERGE, 0) in the process (it merges all its "
                       "memory: ksm_merge_any), then " + fix)
            entry["fix"] = fix
            out[kind] = entry
        return out

    def to_json(self) -> dict:
        return {
            "pid": self.pid, "comm": self.comm,
            "totals": dict(self.totals()),
            "vmas": [v.to_json() for v in self.vmas],
            "blockers": [{"bytes": b, "start": s, "end": s + b, "kind": k, "culprit": c}
                         for b, s, k, c in self.blockers],
            "fixes": self.fixes(),
            "io_uring_buffers": [p.to_json() for p in self.pins],
            "excluded_vmas": self.excluded, "unseen": self.unseen,
            "pages_read": self.pages_read, "ksm_stat": self.ksm_stat,
            "labels": CENSUS_LABELS,
        }


def _ksm_stat(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/ksm_stat") as f:
            return dict(line.rstrip("\n").split(None, 1) for line in f if " " in line)
    except OSError:
        return {}


def census(pid: int, chunk_pages: int = CENSUS_CHUNK_PAGES) -> CensusResult:
    """Bytes per verdict of every private anonymous VMA of pid: pagemap read
    in chunks of `chunk_pages` (memory stays bounded by the chunk, whatever
    the process maps), VMAs with nothing populated skipped."""
    comm = require_process(pid)
    stats: dict = {}
    vmas = read_vmas(pid, stats)
    reader = open_reader(pid)
    F = kpageflags()
    ksm_bit, thp_bit, zero_bit = 1 << F["ksm"], 1 << F["thp"], 1 << F["zero_page"]
    flags_known = None
    pins, why_not = io_uring_buffers(pid)
    result = CensusResult(pid, comm, [], [], pins, {"vmas": 0, "rss": 0}, [], 0,
                          _ksm_stat(pid))
    blockers: dict[str, list[tuple[int, int, str, str | None]]] = {}

    def keep(entry):
        heap = blockers.setdefault(entry[2], [])
        heapq.heappush(heap, entry)
        if len(heap) > CENSUS_BLOCKERS:
            heapq.heappop(heap)

    with reader:
        for vma in vmas:
            st = stats.get(vma.start, {})
            if vma.shared or not vma.anonymous or vma.flags & set(SPECIAL_VMFLAGS):
                result.excluded["vmas"] += 1
                result.excluded["rss"] += st.get("Rss", 0)
                continue
            vc = VmaCensus(vma, Counter())
            result.vmas.append(vc)
            if "wr" not in vma.flags:
                vc.refusal = C.INVALID_SRC_NOT_WRITABLE
                populated = st.get("Rss", 0) + st.get("Swap", 0)
                if populated:
                    vc.bytes["refused"] = populated
                    keep((populated, vma.start, "refused", vc.refusal))
                continue
            if not st.get("Rss") and not st.get("Swap"):
                vc.skipped = True
                continue
            vma_pins = [p for p in pins if p.addr < vma.end and vma.start < p.addr + p.len]
            run_kind, run_start, run_culprit = None, 0, None

            def close_run(end):
                if run_kind is not None:
                    keep((end - run_start, run_start, run_kind, run_culprit))

            counts = vc.bytes
            addr = vma.start
            while addr < vma.end:
                n = min(chunk_pages, (vma.end - addr) // PAGE_SIZE)
                words = reader.entries(addr, n)
                result.pages_read += n
                if words.count(0) == n:      # nothing populated in this chunk
                    close_run(addr)
                    run_kind = None
                    addr += n * PAGE_SIZE
                    continue
                kflags = reader.flags([w & PM_PFN_MASK for w in words
                                       if w & PM_PRESENT and w & PM_PFN_MASK])
                chunk_pins = [p for p in vma_pins
                              if p.addr < addr + n * PAGE_SIZE and addr < p.addr + p.len]
                if flags_known is None and reader.pfns_visible is not None:
                    flags_known = reader.kpageflags_readable and reader.pfns_visible
                not_excl = "shared" if flags_known or st.get("KSM") == 0 else "not_exclusive"
                local = Counter()
                for i, w in enumerate(words):
                    if w & PM_PRESENT:
                        f = kflags.get(w & PM_PFN_MASK, 0)
                        if f & zero_bit:
                            kind = "zero_page"
                        elif f & ksm_bit:
                            kind = "ksm"
                        elif not w & PM_EXCLUSIVE:
                            kind = not_excl
                        elif chunk_pins and any(p.covers(addr + i * PAGE_SIZE)
                                                for p in chunk_pins):
                            kind = "pinned"
                        elif f & thp_bit:
                            kind = "thp"
                        else:
                            kind = "movable"
                    elif w & PM_SWAP:
                        kind = "swapped"
                    else:
                        kind = None
                    if kind is not None:
                        local[kind] += 1
                    blocking = kind if kind in ("ksm", "pinned", "shared",
                                                "not_exclusive") else None
                    if blocking != run_kind:
                        close_run(addr + i * PAGE_SIZE)
                        run_kind, run_start = blocking, addr + i * PAGE_SIZE
                        run_culprit = None
                        if blocking == "pinned":
                            run_culprit = next(p.describe() for p in chunk_pins
                                               if p.covers(run_start))
                for kind, pages in local.items():
                    counts[kind] += pages * PAGE_SIZE
                addr += n * PAGE_SIZE
            close_run(vma.end)
            run_kind = None
        result.unseen = unseen_by(reader) + CENSUS_BLIND
    if why_not:
        result.unseen.append(f"io_uring buffers: {why_not}")
    result.unseen.append("a VMA's registration and protections matter only against a "
                         "destination: run `check --dst` for a planned move")
    result.blockers = sorted((b for heap in blockers.values() for b in heap), reverse=True)
    return result
