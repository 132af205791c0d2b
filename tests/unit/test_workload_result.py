"""A workload's result: what it keeps of an endless run, and what it counts."""
from __future__ import annotations

from uffdtrace.commands.workload import render
from uffdtrace.native import MoveCall
from uffdtrace.workload.runner import WorkloadResult


def call(i: int, errno: str | None = None, move: int = 4096) -> MoveCall:
    ret = -1 if errno else 0
    return MoveCall(dst=0x1000 * i, src=0x9000 * i, len=4096, mode=0, ret=ret, errno=errno,
                    move=move, pid=1, tid=1, ns=1000)


def test_a_bounded_result_keeps_the_latest_calls_and_counts_them_all():
    r = WorkloadResult("mixed", keep=3)
    r.add_calls([("ok", call(i)) for i in range(5)])
    r.add_calls([("dst_populated", call(5, "EEXIST", -17))])
    for i in range(10):
        r.setup.append({"round": i})
        r.problems.append(f"problem {i}")
    s = r.summary()
    assert (s["calls"], s["ok"], s["failed"], s["errors"]) == (6, 5, 1, {"EEXIST": 1})
    assert s["bytes_moved"] == 5 * 4096 and s["calls_listed"] == 3
    out = r.to_json()
    assert [c["dst"] for c in out["calls"]] == [0x3000, 0x4000, 0x5000]
    assert out["setup"] == [{"round": i} for i in (7, 8, 9)]
    assert out["problems"] == ["problem 7", "problem 8", "problem 9"]


def test_the_per_scenario_table_counts_every_call_not_only_the_kept_ones():
    r = WorkloadResult("mixed", keep=3)
    r.add_calls([("ok", call(i)) for i in range(25)])
    r.add_calls([("dst_populated", call(i, "EEXIST", -17)) for i in range(5)])
    text = render(r)
    assert "ok x25" in text and "EEXIST x5" in text
    assert "ok 25, failed 5 (EEXIST: 5)" in text


def test_an_unbounded_result_keeps_every_call():
    r = WorkloadResult("ok")
    r.add_calls([("ok", call(i)) for i in range(2000)])
    assert len(r.to_json()["calls"]) == r.summary()["calls"] == 2000
