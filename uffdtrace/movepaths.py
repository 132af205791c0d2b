"""Which path each page of a move took (user question 6), and the large
folios the move split (question 7): the one reading of a move record's
`path_*`, `thp_splits` and `split_pages` fields, for report, export, `top`
and `trace` lines.

Only the kernel tier sees them: its hooks on the step functions count each
successful step by the destination entry it left (bpf/uffdtrace_kernel.bpf.c,
ut_step_path).  The tracepoint tier sees the ioctl, not its steps: there
paths() answers None, and the readers say the tier cannot tell -- never a
guess from the request's shape.
"""
from __future__ import annotations

from dataclasses import dataclass

from .native import lib
from .records import bytes_moved

HUGE_PAGES = 512          # base pages of a PMD (x86-64: 2 MiB of 4 KiB)

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
    # pages moved that no hooked step counted: the PTE step function is
    # inlined on this kernel (6.12), so only PMD steps are seen
    unseen_pages: int
    thp_splits: int             # large folios split (split-then-PTE)
    split_pages: int            # their base pages: the huge-page coverage lost
    splits_of_unknown_size: int  # of thp_splits, folios whose order could not be read

    def to_json(self) -> dict:
        return {"counts": self.counts, "kinds_told_apart": self.kinds_told_apart,
                "unseen_pages": self.unseen_pages, "thp_splits": self.thp_splits,
                "split_pages": self.split_pages,
                "splits_of_unknown_size": self.splits_of_unknown_size}


def paths(move: dict, page_size: int) -> MovePaths | None:
    """The paths of a move record, or None when its tier does not see them."""
    if not move.get("flags", 0) & lib().UT_F_KERNEL_TIER or "path_pmds" not in move:
        return None
    kflags = move.get("kflags", 0)
    counts = {key: move.get(field, 0) for key, field, _, _ in PATHS}
    unseen = 0
    if not kflags & lib().UT_K_PTE_STEPS:
        pmd_pages = (counts["pmd"] + counts["huge_zero_pmd"]) * HUGE_PAGES
        unseen = max(bytes_moved(move) // page_size - pmd_pages, 0)
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

    def result(self) -> MovePaths:
        return MovePaths(dict(self.counts), self.kinds_told_apart, self.unseen_pages,
                         self.thp_splits, self.split_pages, self.unknown)


def describe(p: MovePaths) -> str:
    """One line: the paths taken, then the splits, e.g. "3 pages by PTE, 1
    whole THP by PMD; split 1 large folio: 512 pages of huge-page coverage lost"."""
    parts = [f"{n:,} {one if n == 1 else many}"
             for (key, _, one, many) in PATHS if (n := p.counts[key])]
    if p.unseen_pages:
        parts.append(f"{p.unseen_pages:,} pages by PTE steps this kernel inlines "
                     "(zero page and swap entries not told apart)")
    text = ", ".join(parts) or "no page moved"
    if p.counts["pte"] and not p.kinds_told_apart:
        text += " (destination entries not read: zero pages and swap entries count as PTE)"
    if p.thp_splits:
        text += (f"; split {p.thp_splits:,} large folio{'' if p.thp_splits == 1 else 's'}: "
                 f"{p.split_pages:,} pages of huge-page coverage lost")
        if p.splits_of_unknown_size:
            text += f" (and {p.splits_of_unknown_size:,} of unknown size)"
    return text


NOT_SEEN = "seen by the kernel tier only: this trace's tier sees the ioctl, not its steps"
