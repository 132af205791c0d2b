"""The collector's table of long-term pins: what a release forgets."""
from __future__ import annotations

from uffdtrace.diagnose import PinTable
from uffdtrace.events import PinEvent
from uffdtrace.native import PAGE_SIZE, lib

RANGE_A, RANGE_B = 0x10000000, 0x20000000


def pin(addr=0, length=0, *, released=False, fd=5, method=None, pid=42) -> PinEvent:
    method = lib().UT_PIN_IO_URING_REGISTER if method is None else method
    return PinEvent(released=released, pid=pid, tid=pid, comm="app", fd=fd, ts_ns=1,
                    addr=addr, len=length, opcode=lib().IORING_REGISTER_BUFFERS, index=0,
                    method=method, gup_flags=0)


def gup(**kw) -> PinEvent:
    return pin(fd=0, method=lib().UT_PIN_USER_PAGES_FAST | lib().UT_PIN_LONGTERM, **kw)


def test_io_uring_unregister_forgets_every_buffer_of_that_ring_only():
    t = PinTable()
    t.add(pin(RANGE_A, 4 * PAGE_SIZE, fd=5))
    t.add(pin(RANGE_B, 4 * PAGE_SIZE, fd=6))
    t.add(pin(released=True, fd=5))
    assert t.covering(42, RANGE_A) is None
    assert t.covering(42, RANGE_B + PAGE_SIZE).fd == 6


def test_gup_release_of_one_page_forgets_its_whole_range_only():
    t = PinTable()
    t.add(gup(addr=RANGE_A, length=4 * PAGE_SIZE))
    t.add(gup(addr=RANGE_B, length=4 * PAGE_SIZE))
    t.add(gup(addr=RANGE_A + 2 * PAGE_SIZE, length=PAGE_SIZE, released=True))
    assert t.covering(42, RANGE_A) is None and t.covering(42, RANGE_A + 3 * PAGE_SIZE) is None
    assert t.covering(42, RANGE_B) is not None


def test_release_by_another_process_forgets_nothing():
    t = PinTable()
    t.add(gup(addr=RANGE_A, length=PAGE_SIZE))
    t.add(gup(addr=RANGE_A, length=PAGE_SIZE, released=True, pid=7))
    assert t.covering(42, RANGE_A) is not None
