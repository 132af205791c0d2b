"""Question 9, from the ring-buffer bytes to the rows: a struct ut_wake_event
decodes (through cffi, as the BPF program lays it out), and the linker
decides, with each move's own record, who was woken, by what, after how
long, and with which evidence."""
from __future__ import annotations

import pytest

from tests.tracegen import DST, FAULTER, MONITOR, PAGE, T0, ok, wake, waiter, wake_items
from uffdtrace.events import decode
from uffdtrace.native import ffi, lib
from uffdtrace.wakes import WakeEvent, WakeLinker, move_woke

pytestmark = pytest.mark.unit


def wake_bytes(**fields) -> bytes:
    F, L = ffi(), lib()
    c = F.new("struct ut_wake_event *")
    c.type = L.UT_EV_WAKE
    for name, value in fields.items():
        if name != "waiters":
            setattr(c, name, value)
    for i, w in enumerate(fields.get("waiters", ())):
        for name, value in w.items():
            setattr(c.waiters[i], name, value)
    return bytes(F.buffer(c))


def test_a_wake_record_decodes_from_the_header_layout():
    L = lib()
    raw = wake_bytes(pid=7, tid=8, fd=3, ts_ns=123, start=0x1000, len=0x2000,
                     cause=L.UT_WAKE_BY_MOVE, flags=L.UT_WK_DONTWAKE | L.UT_WK_MORE,
                     waiting=9, in_range=6, comm=b"monitor",
                     waiters=[{"pid": 7, "tid": 20 + i, "addr": 0x1000 + i * PAGE,
                               "since_ns": 100 + i, "comm": b"faulter",
                               "since": L.UT_WAIT_FAULT_ENTRY if i else L.UT_WAIT_FIRST_SEEN,
                               "queue": L.UT_WQ_READ if i else L.UT_WQ_PENDING}
                              for i in range(L.UT_WAKE_WAITERS_MAX)])
    ev = decode(raw)
    assert isinstance(ev, WakeEvent)
    assert (ev.pid, ev.tid, ev.comm, ev.fd, ev.ts_ns, ev.cause) == (7, 8, "monitor", 3, 123, "move")
    assert (ev.start, ev.len, ev.dontwake, ev.raced, ev.more) == (0x1000, 0x2000, True, False, True)
    assert (ev.waiting, ev.in_range) == (9, 6)
    # six in range, the first UT_WAKE_WAITERS_MAX described
    assert [w.tid for w in ev.waiters] == [20, 21, 22, 23]
    assert (ev.waiters[0].since, ev.waiters[0].queue, ev.waiters[0].evidence) == \
        ("first_seen", "pending", "at_least")
    assert (ev.waiters[1].since, ev.waiters[1].queue, ev.waiters[1].evidence) == \
        ("fault_entry", "read", "exact")
    assert ev.waiters[3].addr == 0x1000 + 3 * PAGE and ev.waiters[3].comm == "faulter"


def test_a_wake_record_too_short_is_not_decoded():
    assert decode(wake_bytes(in_range=1)[:40]) is None


def records(items) -> list[dict]:
    out = []
    for item in items:
        d = item.to_json()
        out.append(d if "type" in d else {"type": "wake", **d})
    return out


def linked(items) -> WakeLinker:
    linker = WakeLinker()
    for r in records(items):
        (linker.move if r["type"] == "move" else linker.wake)(r)
    linker.finish()
    return linker


def test_who_each_move_or_wake_woke():
    linker = linked(wake_items())
    rows = {r["tid"]: r for r in linker.rows()}
    t = T0 + 3_000_000_000
    woken = rows[FAULTER]
    assert (woken["by"], woken["outcome"], woken["addr"], woken["by_tid"]) == \
        ("move", "woken", DST, MONITOR)
    assert (woken["waited_ns"], woken["wait_evidence"]) == (50_000_000, "at_least")
    # the DONTWAKE move left it asleep; the UFFDIO_WAKE 20 ms later woke it
    late = rows[FAULTER + 1]
    assert (late["by"], late["outcome"], late["ts_ns"]) == ("wake", "woken", t + 40_000_000)
    assert late["after_dontwake_move"] == {"ts_ns": t + 20_000_000, "tid": MONITOR,
                                           "comm": "monitor"}
    assert late["waited_ns"] == 90_000_000
    # the move failed before its page (EEXIST): nothing woke it
    assert rows[FAULTER + 2]["outcome"] == "not_moved"
    assert linker.counts == {"woken_by_move": 1, "woken_by_wake": 1, "left_by_dontwake": 0,
                             "not_moved": 1, "unknown": 0}


def test_exact_waits_in_the_kernel_tier():
    rows = linked(wake_items(since="fault_entry")).rows()
    assert {r["wait_evidence"] for r in rows} == {"exact"}


def test_a_dontwake_move_with_no_wake_seen_leaves_its_thread_asleep():
    items = [item for item in wake_items() if not (isinstance(item, WakeEvent)
                                                    and item.cause == "wake")]
    linker = linked(items)
    assert linker.counts["left_by_dontwake"] == 1 and linker.counts["woken_by_wake"] == 0
    row = next(r for r in linker.rows() if r["tid"] == FAULTER + 1)
    assert (row["by"], row["outcome"]) == ("move", "dontwake")


def test_a_move_whose_record_is_missing_says_unknown():
    linker = linked([wake(T0, DST, (waiter(FAULTER, DST, T0 - 5),))])
    assert [r["outcome"] for r in linker.rows()] == ["unknown"]


@pytest.mark.parametrize("ret, moved, outcome", [
    (0, PAGE * 2, "woken"),            # a success moved its whole len
    (-11, PAGE, "not_moved"),          # partial: stopped before the waiter's page
    (-11, PAGE * 2, "woken"),          # partial, past it
    (-17, -17, "not_moved"),           # moved nothing
])
def test_a_move_wakes_only_the_pages_it_moved(ret, moved, outcome):
    w = records([wake(T0, DST, (waiter(FAULTER, DST + PAGE, T0),), length=2 * PAGE)])[0]
    m = {"ret": ret, "move": moved, "len": 2 * PAGE}
    assert move_woke(w, m, w["waiters"][0]) == outcome


def test_a_wake_links_to_its_own_threads_move_only():
    # a move of another thread at the same instant is not the one
    other = ok(pid=MONITOR, tid=MONITOR + 1, ts_ns=T0, dst=DST)
    linker = linked([wake(T0, DST, (waiter(FAULTER, DST, T0),)), other])
    assert [r["outcome"] for r in linker.rows()] == ["unknown"]


def moves_first(items) -> list:
    """Each move record before its wake record: the two come from different
    ring buffers, and a backlog in one can put either first."""
    out = list(items)
    for i in range(len(out) - 1):
        if isinstance(out[i], WakeEvent) and not isinstance(out[i + 1], WakeEvent):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def test_a_move_record_before_its_wake_record_links_the_same():
    reordered = moves_first(wake_items())
    assert not isinstance(reordered[0], WakeEvent)
    assert linked(reordered).rows() == linked(wake_items()).rows()


def test_a_move_without_the_flag_waits_for_no_wake_record():
    linker = WakeLinker()
    for item in records([ok(pid=MONITOR, tid=MONITOR, ts_ns=T0, dst=DST)]):
        linker.move(item)
    assert not linker.moved
