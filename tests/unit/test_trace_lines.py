"""`uffdtrace trace` lines: a TLB count that was not measured shows as '-',
never as 0."""
from __future__ import annotations

from uffdtrace.commands.trace import format_move
from uffdtrace.diagnose import PinTable, diagnose
from uffdtrace.events import decode
from uffdtrace.native import ffi, lib
from uffdtrace.session import TracedMove


def _move(flags: int, tlb_flushes: int) -> TracedMove:
    rec = ffi().new("struct ut_move_event *", {
        "type": lib().UT_EV_MOVE, "pid": 42, "len": 4096, "flags": flags,
        "tlb_flushes": tlb_flushes, "comm": b"mover"})
    e = decode(ffi().buffer(rec)[:])
    return TracedMove(e, diagnose(e, None, PinTable()), None)


def _tlb_column(line: str) -> str:
    return line.split()[-2]   # ... USEC TLB  CAUSE


def test_measured_tlb_count_is_shown():
    assert _tlb_column(format_move(_move(lib().UT_F_COST_STATS, 3), 0)) == "3"
    assert _tlb_column(format_move(_move(lib().UT_F_COST_STATS, 0), 0)) == "0"


def test_unmeasured_tlb_count_is_a_dash():
    assert _tlb_column(format_move(_move(0, 0), 0)) == "-"
