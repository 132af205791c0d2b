"""`uffdtrace check` with the kernel's own view of each page (bpf/ut_peek.bpf.c
through kernel/pageview.py): the facts /proc does not export settle what it
could only infer.

A page /proc shows present and mapped once may still be refused: not
PageAnonExclusive (it was shared with a child of fork that has since
exited: EBUSY until written), or pinned by something /proc does not list
(O_DIRECT in flight, VFIO, RDMA: folio_maybe_dma_pinned()).  The kernel
view turns those verdicts into observed ones, in move_pages_pte()'s order
(KSM and exclusivity before pins).  Reading is bounded: the first
KERNEL_VIEW_MAX_PAGES pages a move would reach whose verdict it can change.
"""
from __future__ import annotations

from .kernel import pageview
from .taxonomy import OBSERVED
from .walkstate import WalkedPage

KERNEL_VIEW_MAX_PAGES = 4096
# verdicts of present pages that the kernel's facts can confirm or overturn
REFINABLE = frozenset({"movable", "movable_thp", "thp_split", "not_exclusive", "shared",
                       "pinned", "pinned_split"})
MAPPED = frozenset({"PTE_PRESENT", "PMD_HUGE"})


def _facts(ps: WalkedPage) -> str:
    text = f"refcount {ps.refcount}, mapcount {ps.mapcount}"
    return text + (f", pincount {ps.pincount}" if ps.has("LARGE") else "")


def refine(verdict, ps: WalkedPage, verdict_cls):
    """The verdict with what the kernel had at the page (verdict_cls:
    movecheck.Verdict, passed in so the dependency runs one way)."""
    if ps.where_name not in MAPPED or not ps.has("FOLIO"):
        return verdict           # changed since /proc was read: keep what it said
    if ps.has("KSM"):
        return verdict_cls("ksm", OBSERVED, "kernel: a KSM folio", verdict.culprit)
    if not ps.has("ANON_EXCLUSIVE"):
        return verdict_cls("shared", OBSERVED, "kernel: not PageAnonExclusive ("
                           + _facts(ps) + "): shared copy-on-write since a fork, even if the "
                           "child has exited; refused until written", verdict.culprit)
    if ps.has("MAYBE_DMA_PINNED"):
        if verdict.kind in ("pinned", "pinned_split"):
            return verdict_cls(verdict.kind, OBSERVED, verdict.why + "; kernel: "
                               "folio_maybe_dma_pinned() (" + _facts(ps) + ")", verdict.culprit)
        kind = "pinned_split" if verdict.kind == "thp_split" else "pinned"
        return verdict_cls(kind, OBSERVED, "kernel: folio_maybe_dma_pinned() (" + _facts(ps)
                           + "): a pin /proc does not list (O_DIRECT in flight, VFIO, RDMA, "
                           "an io_uring ring of another process) or 1,024+ plain references "
                           "(e.g. vmsplice into pipes)", verdict.culprit)
    if verdict.kind in ("movable", "thp_split"):
        return verdict_cls(verdict.kind, OBSERVED, verdict.why + "; kernel: anon-exclusive, "
                           "not pinned (" + _facts(ps) + ")", verdict.culprit)
    return verdict


def with_kernel_view(pid: int, src: int, verdicts: list, page_size: int, verdict_cls,
                     wanted: bool | None, unseen: list[str], notes: list[str]) -> list:
    """verdicts refined by the kernel view (wanted None: if it can be had,
    else said in `unseen`; True: it must be had; False: not asked)."""
    if wanted is False:
        unseen.append("the kernel's own view (--no-kernel-view): PageAnonExclusive and "
                      "pins other than io_uring fixed buffers are inferred")
        return verdicts
    at = [i for i, v in enumerate(verdicts) if v.kind in REFINABLE][:KERNEL_VIEW_MAX_PAGES]
    if not at:
        return verdicts          # holes, swap entries, refusals: nothing it could change
    try:
        states = pageview.shared().read(pid, [src + i * page_size for i in at])
    except pageview.PageViewError as exc:
        if wanted:
            raise
        unseen.append(f"the kernel's own view ({exc}): PageAnonExclusive and pins other "
                      "than io_uring fixed buffers are inferred")
        return verdicts
    out = list(verdicts)
    for i, ps in zip(at, states):
        out[i] = refine(verdicts[i], ps, verdict_cls)
    left = sum(v.kind in REFINABLE for v in verdicts) - len(at)
    if left:
        notes.append(f"the kernel's view was read for the first {len(at)} pages it could "
                     f"change; {left} more are judged from /proc alone")
    return out
