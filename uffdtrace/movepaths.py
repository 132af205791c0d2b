"""Which path each page of a move took (user question 6), and the large
folios the move split (question 7): the one reading of a move record's
`path_*`, `thp_splits` and `split_pages` fields, for report, export, `top`
and `trace` lines.

The kernel tier's hooks on the step functions count each successful step
by the destination entry it left (bpf/uffdtrace_kernel.bpf.c, ut_step_path),
and see each split.  The tracepoint tier sees the ioctl, not its steps: its
page-state reader reads the destination entries a sent move left, at exit
(bpf/uffdtrace.bpf.c, paths_at_exit: at most PATH_READS of them), and no
split.  A move with neither answers None, and the readers say so -- never a
guess from the request's shape.
"""
from __future__ import annotations

from dataclasses import dataclass

from .native import lib
from .records import bytes_moved

HUGE_PAGES = 512          # base pages of a PMD (x86-64: 2 MiB of 4 KiB)
PATH_READS = 16           # destination entries paths_at_exit reads at most (UT_PATH_READS)

# (key, record field, one, many): each path's count, in the order they print
PATHS = (("pte", "path_pte_pages", "page by PTE", "pages by PTE"),
         ("zero_page", "path_zero_pages", "zero page", "zero pages"),
         ("swap_entry", "path_swap_pages", "swap entry", "swap entries"),
         ("src_hole", "path_hole_pages", "src hole skipped", "src holes skipped"),
         ("pmd", "path_pmds", "whole THP by PMD", "whole THPs by PMD"),
         ("huge_zero_pmd", "path_huge_zero_pmds", "huge zero page by PMD",
          "huge zero pages by PMD"))


@dataclass(frozen=True)
class MovePaths:
    """A move's paths, or the sum of many moves' (Tally)."""

    counts: dict[str, int]      # key -> pages or PMDs (PATHS), zero ones included
    kinds_told_apart: bool      # zero pages, swap entries, holes told from present pages
    # pages moved that were not counted: kernel tier, the PTE step function
    # is inlined on this kernel (6.12), so only PMD steps are seen; read at
    # exit, the pages past the first PATH_READS entries
    unseen_pages: int
    thp_splits: int             # large folios split (split-then-PTE)
    split_pages: int            # their base pages: the huge-page coverage lost
    splits_of_unknown_size: int  # of thp_splits, folios whose order could not be read
    # tracepoint tier: counts are the destination entries read at exit, and
    # splits are not seen (thp_splits and split_pages are 0, not "none")
    read_at_exit: bool = False

    def to_json(self) -> dict:
        return {"counts": self.counts, "kinds_told_apart": self.kinds_told_apart,
                "unseen_pages": self.unseen_pages, "thp_splits": self.thp_splits,
                "split_pages": self.split_pages,
                "splits_of_unknown_size": self.splits_of_unknown_size,
                "read_at_exit": self.read_at_exit,
                "splits_seen": not self.read_at_exit}


def paths(move: dict, page_size: int) -> MovePaths | None:
    """The paths of a move record, or None when nothing in it says them."""
    kflags = move.get("kflags", 0)
    kernel_tier = move.get("flags", 0) & lib().UT_F_KERNEL_TIER
    at_exit = not kernel_tier and kflags & lib().UT_K_PATHS_AT_EXIT
    if not (kernel_tier or at_exit) or "path_pmds" not in move:
        return None
    counts = {key: move.get(field, 0) for key, field, _, _ in PATHS}
    pmd_pages = (counts["pmd"] + counts["huge_zero_pmd"]) * HUGE_PAGES
    moved_pages = bytes_moved(move) // page_size
    if at_exit:
        counted = pmd_pages + sum(counts[key] for key, _, _, _ in PATHS
                                  if key not in ("pmd", "huge_zero_pmd"))
        return MovePaths(counts, True, max(moved_pages - counted, 0), 0, 0, 0,
                         read_at_exit=True)
    unseen = 0 if kflags & lib().UT_K_PTE_STEPS else max(moved_pages - pmd_pages, 0)
    splits = move.get("thp_splits", 0)
    split_pages = move.get("split_pages", 0)
    return MovePaths(counts, bool(kflags & lib().UT_K_PATHS_READ), unseen, splits,
                     split_pages, splits if splits and not split_pages else 0)


class Tally:
    """The paths of many moves summed (a process's, in `report`)."""

    def __init__(self):
        self.counts = dict.fromkeys((key for key, _, _, _ in PATHS), 0)
        self.kinds_told_apart = True
        self.unseen_pages = self.thp_splits = self.split_pages = self.unknown = 0
        self.moves = 0
        self.read_at_exit = False

    def add(self, p: MovePaths, weight: int = 1):
        """Count `p` as `weight` moves (a sampled success, a repeated failure)."""
        self.moves += weight
        for key, n in p.counts.items():
            self.counts[key] += n * weight
        self.kinds_told_apart &= p.kinds_told_apart or not p.counts["pte"]
        self.unseen_pages += p.unseen_pages * weight
        self.thp_splits += p.thp_splits * weight
        self.split_pages += p.split_pages * weight
        self.unknown += p.splits_of_unknown_size * weight
        # one trace has one tier: its moves are all read one way
        self.read_at_exit |= p.read_at_exit

    def result(self) -> MovePaths:
        return MovePaths(dict(self.counts), self.kinds_told_apart, self.unseen_pages,
                         self.thp_splits, self.split_pages, self.unknown, self.read_at_exit)


def describe(p: MovePaths, tier_note: bool = True) -> str:
    """One line: the paths taken, then the splits, e.g. "3 pages by PTE, 1
    whole THP by PMD; split 1 large folio: 512 pages of huge-page coverage lost".
    tier_note=False leaves out what a tracepoint-tier reading cannot see
    (a `trace` line per move, where the header said it once)."""
    parts = [f"{n:,} {one if n == 1 else many}"
             for (key, _, one, many) in PATHS if (n := p.counts[key])]
    if p.unseen_pages and p.read_at_exit:
        parts.append(f"{p.unseen_pages:,} pages past the first {PATH_READS} entries read")
    elif p.unseen_pages:
        parts.append(f"{p.unseen_pages:,} pages by PTE steps this kernel inlines "
                     "(zero page and swap entries not told apart)")
    text = ", ".join(parts) or "no page moved"
    if p.counts["pte"] and not p.kinds_told_apart:
        text += " (destination entries not read: zero pages and swap entries count as PTE)"
    if p.read_at_exit:
        return text + (" (destination entries read at exit; splits seen by the kernel tier "
                       "only)" if tier_note else "")
    if p.thp_splits:
        text += (f"; split {p.thp_splits:,} large folio{'' if p.thp_splits == 1 else 's'}: "
                 f"{p.split_pages:,} pages of huge-page coverage lost")
        if p.splits_of_unknown_size:
            text += f" (and {p.splits_of_unknown_size:,} of unknown size)"
    return text


NOT_SEEN = ("not seen in this trace: the kernel tier counts each step; the tracepoint tier "
            "reads the destination entries at exit with its page-state reader, which this "
            "trace ran without")
