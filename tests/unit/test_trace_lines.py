"""`uffdtrace trace` lines: a TLB count that was not measured shows as '-',
never as 0; a move says the paths its pages took (read at exit in the
tracepoint tier)."""
from __future__ import annotations

from uffdtrace.commands.trace import format_move
from uffdtrace.diagnose import PinTable, diagnose
from uffdtrace.events import decode
from uffdtrace.native import ffi, lib
from uffdtrace.session import TracedMove


def _move(flags: int, tlb_flushes: int, **fields) -> TracedMove:
    rec = ffi().new("struct ut_move_event *", {
        "type": lib().UT_EV_MOVE, "pid": 42, "len": 4096, "flags": flags,
        "tlb_flushes": tlb_flushes, "comm": b"mover", **fields})
    e = decode(ffi().buffer(rec)[:])
    return TracedMove(e, diagnose(e, None, PinTable()), None)


def _tlb_column(line: str) -> str:
    return line.split()[-2]   # ... USEC TLB  CAUSE


def test_measured_tlb_count_is_shown():
    assert _tlb_column(format_move(_move(lib().UT_F_COST_STATS, 3), 0)) == "3"
    assert _tlb_column(format_move(_move(lib().UT_F_COST_STATS, 0), 0)) == "0"


def test_unmeasured_tlb_count_is_a_dash():
    assert _tlb_column(format_move(_move(0, 0), 0)) == "-"


def test_a_kernel_tier_move_says_its_paths():
    kernel = lib().UT_F_KERNEL_TIER
    steps = lib().UT_K_PTE_STEPS | lib().UT_K_PATHS_READ
    line = format_move(_move(kernel, 0, len=2 << 20, kflags=steps, path_pmds=1, thp_splits=1,
                             split_pages=512), 0)
    assert line.endswith("ok; 1 whole THP by PMD; split 1 large folio: 512 pages of "
                         "huge-page coverage lost"), line
    # a move whose steps the tier did not see, or that moved nothing: no paths
    assert format_move(_move(0, 0, path_pmds=1), 0).endswith("ok")
    assert format_move(_move(kernel, 0, kflags=steps), 0).endswith("ok")


def test_a_tracepoint_tier_move_says_the_paths_read_at_exit():
    at_exit = lib().UT_K_PATHS_AT_EXIT | lib().UT_K_PATHS_READ
    line = format_move(_move(0, 0, kflags=at_exit, path_zero_pages=1), 0)
    assert line.endswith("ok; 1 zero page"), line
