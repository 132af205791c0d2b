"""`check`'s refinement of /proc verdicts by the kernel's own page state
(uffdtrace/checkkernel.py), rule by rule, on page states as
bpf/ut_peek.bpf.c returns them."""
from __future__ import annotations

import pytest

from uffdtrace.checkkernel import refine
from uffdtrace.movecheck import Verdict
from uffdtrace.native import lib
from uffdtrace.walkstate import WalkedPage

ANON = ("ANON", "ANON_EXCLUSIVE")


def page(where="PTE_PRESENT", *flags, refcount=1, mapcount=1, pincount=0):
    L = lib()
    bits = sum(getattr(L, f"UT_PS_{f}") for f in flags) | L.UT_PS_FOLIO
    return WalkedPage(addr=0x7f0000000000, entry=0, pfn=0x1234, flags=bits, refcount=refcount,
                      mapcount=mapcount, page_mapcount=mapcount, pincount=pincount,
                      where=getattr(L, f"UT_PSW_{where}"), level=L.UT_PSL_PAGE, order=0,
                      swp_type=0)


PROC = {k: Verdict(k, "inferred", f"/proc says {k}") for k in
        ("movable", "thp_split", "not_exclusive", "pinned", "movable_thp")}


@pytest.mark.parametrize("proc, state, kind, evidence, why", [
    ("movable", page("PTE_PRESENT", "ANON"), "shared", "observed", "not PageAnonExclusive"),
    ("movable", page("PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED", refcount=1025), "pinned",
     "observed", "a pin /proc does not list"),
    ("thp_split", page("PTE_PRESENT", *ANON, "LARGE", "MAYBE_DMA_PINNED", pincount=1),
     "pinned_split", "observed", "pincount 1"),
    ("movable", page("PTE_PRESENT", *ANON, refcount=1), "movable", "observed",
     "anon-exclusive, not pinned"),
    ("not_exclusive", page("PTE_PRESENT", "KSM"), "ksm", "observed", "KSM folio"),
    ("not_exclusive", page("PTE_PRESENT", "ANON", mapcount=2), "shared", "observed",
     "mapcount 2"),
    # a page gone since /proc was read: /proc's verdict stands
    ("movable", page("PTE_NONE"), "movable", "inferred", "/proc says movable"),
    # the kernel does not overturn a registration it also sees pinned
    ("pinned", page("PTE_PRESENT", *ANON, "MAYBE_DMA_PINNED", refcount=1025), "pinned",
     "observed", "folio_maybe_dma_pinned"),
    ("movable_thp", page("PMD_HUGE", *ANON, "LARGE"), "movable_thp", "inferred",
     "/proc says movable_thp"),
])
def test_refine(proc, state, kind, evidence, why):
    v = refine(PROC[proc], state, Verdict)
    assert (v.kind, v.evidence) == (kind, evidence), v
    assert why in v.why, v.why
