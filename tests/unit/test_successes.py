"""Successes in bulk (events.SuccessBatch, the `successes` trace record):
decoded from the very bytes the ring buffer holds, written as rows, and
read back as exactly the move records the one-at-a-time path writes."""
from __future__ import annotations

import errno as E
import json

import pytest

from tests.tracegen import T0, failed, ok, repeat, success_batch, write_trace
from uffdtrace.events import decode, success_rows
from uffdtrace.livelock import LivelockDetector
from uffdtrace.scrub import KernelValueScrubber
from uffdtrace.successes import MAX_ROWS
from uffdtrace.tracereader import TraceFormatError, iter_records

pytestmark = pytest.mark.unit


def _varied(n: int) -> list:
    """Successes whose every field differs from move to move and field to field."""
    return [ok(pid=100 + i, tid=200 + i, comm=f"mover{i}", fd=3 + i, ts_ns=T0 + 1000 * i,
               latency_ns=5000 + i, dst=0x7f0000000000 + i * 4096, src=0x7f1000000000 + i * 4096,
               len=4096 * (i + 1), mode=i % 2, move=4096 * (i + 1), move_before=0,
               flags=1, tlb_flushes=i, mmap_lock_acquires=2, lock_wait_ns=7 + i)
            for i in range(n)]


def test_a_batch_decodes_each_record_as_decode_does():
    moves = _varied(5)
    batch = success_batch(moves)
    spec = success_rows()
    assert [m.event for m in moves] == batch.moves()
    for i, m in enumerate(moves):
        frame = batch.frames[i * spec.stride:(i + 1) * spec.stride]
        size = int.from_bytes(frame[:4], "little")
        assert decode(frame[8:8 + size]) == m.event


def test_rows_read_back_as_the_move_records_written_one_by_one(tmp_path):
    moves = _varied(7)
    one_by_one, bulk = tmp_path / "one.jsonl", tmp_path / "bulk.jsonl"
    write_trace(one_by_one, moves, aggregates=False)
    write_trace(bulk, [success_batch(moves)], aggregates=False)
    assert '"type":"successes"' in bulk.read_text()
    assert '"type":"successes"' not in one_by_one.read_text()

    def moves_of(path):
        return [r for r in iter_records(str(path)) if r["type"] == "move"]
    assert moves_of(bulk) == moves_of(one_by_one)
    footer = [r for r in iter_records(str(bulk)) if r["type"] == "footer"][0]
    assert footer["moves"] == 7


def test_a_big_batch_is_split_under_the_line_limit(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [success_batch([ok(ts_ns=T0 + i) for i in range(2 * MAX_ROWS + 5)])],
                aggregates=False)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [len(r["rows"]) for r in lines if r["type"] == "successes"] == \
        [MAX_ROWS, MAX_ROWS, 5]
    assert sum(r["type"] == "move" for r in iter_records(str(path))) == 2 * MAX_ROWS + 5


def _rewrite_successes(path, change):
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        record = json.loads(line)
        if record["type"] == "successes":
            change(record)
            lines[n] = json.dumps(record)
            return n + 1, lines
    raise AssertionError("no successes record")


def _set(column, value):
    def change(record):
        record["rows"][1][record["fields"].index(column)] = value
    return change


@pytest.mark.parametrize("change, problem", [
    (_set("ret", -11), "a row with ret < 0 is no success"),
    (_set("pid", -1), "pid value out of range"),
    (_set("latency_ns", 2 ** 64), "must be integer or string"),   # orjson: a float
    (_set("move", 2 ** 63), "move value out of range"),
    (_set("tid", "7"), "tid values must be integers"),
    (_set("fd", True), "must be integer or string"),
    (_set("comm", 5), "comm values must be strings"),
    (_set("comm", "x" * 65), "comm value longer than 64"),
    (lambda r: r["rows"][0].pop(), "row 0 has"),
    (lambda r: r["fields"].__setitem__(1, "pid"), "fields are not unique"),
    (lambda r: [r["fields"].pop(0)] + [row.pop(0) for row in r["rows"]], "fields lack pid"),
])
def test_a_bad_row_is_one_error_naming_its_line(tmp_path, change, problem):
    path = tmp_path / "t.jsonl"
    write_trace(path, [success_batch(_varied(3))])
    lineno, lines = _rewrite_successes(path, change)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError) as info:
        list(iter_records(str(path)))
    assert str(info.value).startswith(f"{path}:{lineno}: successes record")
    assert problem in str(info.value)


def test_a_field_this_reader_does_not_know_is_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, [success_batch(_varied(2))])

    def add(record):
        record["fields"].append("newer_field")
        for row in record["rows"]:
            row.append(9)
    _, lines = _rewrite_successes(path, add)
    path.write_text("\n".join(lines) + "\n")
    moves = [r for r in iter_records(str(path)) if r["type"] == "move"]
    assert [m["newer_field"] for m in moves] == [9, 9]


def test_kernel_values_in_rows_are_judged_by_their_column():
    scrub = KernelValueScrubber(key=b"k" * 16)
    record = {"type": "successes", "fields": ["pid", "move_before", "pinner_ts_ns"],
              "rows": [[1, 2 ** 63 + 5, 2 ** 63 + 7]]}
    out = json.loads(scrub.serialize(record))
    assert out["rows"][0][:2] == [1, 2 ** 63 + 5]       # a user's own value stays
    assert out["rows"][0][2].startswith("kptr-")         # a kernel-half value does not


def test_a_success_in_a_batch_ends_a_livelock_chain():
    detector = LivelockDetector(min_s=0.05)
    first = failed(E.EBUSY, "page_pinned", pid=9, tid=9, ts_ns=T0)
    flagged = detector.feed([first, repeat(first, 99, span_ns=99_000_000)])
    assert [x.state for x in flagged] == ["ongoing"]
    earlier = success_batch([ok(pid=9, tid=9, ts_ns=T0 - 10), ok(pid=9, tid=10, ts_ns=T0 + 10)])
    assert detector.feed([earlier]) == []          # before the chain / another thread
    later = success_batch([ok(pid=9, tid=9, ts_ns=T0 + 200_000_000)])
    assert [x.state for x in detector.feed([later])] == ["ended"]
    assert detector.finish() == []


def test_one_polls_records_come_in_time_order():
    """The failure ring is drained before the success ring: the session
    puts them back in time order, cutting the successes between failures."""
    from tests.tracegen import pin
    from uffdtrace.session import Session, TracedMove, item_time
    fail = failed(E.EEXIST, "dst_populated", ts_ns=T0 + 50)
    later = failed(E.EBUSY, "page_pinned", ts_ns=T0 + 400)
    run = repeat(later, 3, span_ns=100)       # follows the move it repeats
    early_pin = pin(300, 0x7f1000000000, 4096, ts_ns=T0 + 10)
    batch = success_batch([ok(ts_ns=T0 + t) for t in (300, 5, 60, 20, 700)])
    session = Session(batch_successes=True)
    out = session._in_time_order([fail, later, run, early_pin], batch)
    assert [item_time(i) - T0 if not hasattr(i, "rows") else
            [r[success_rows().fields.index("ts_ns")] - T0 for r in i.rows()] for i in out] == \
        [[5], 10, [20], 50, [60, 300], 400, 400, [700]]
    session.batch_successes = False
    out = session._in_time_order([fail, later, run, early_pin], batch)
    assert [item_time(i) - T0 for i in out] == [5, 10, 20, 50, 60, 300, 400, 400, 700]
    assert out.index(later) + 1 == out.index(run)
    assert all(i.diagnosis.cause == "ok" for i in out if isinstance(i, TracedMove)
               and not i.event.failed)
