"""Decode the records the BPF program sends (layout: bpf/uffdtrace_event.h,
read through cffi: never re-typed here)."""
from __future__ import annotations

import errno as errno_mod
from dataclasses import asdict, dataclass

from .native import errno_name, ffi, lib


@dataclass(frozen=True)
class MoveEvent:
    """One UFFDIO_MOVE ioctl as the kernel saw it."""

    pid: int
    tid: int
    comm: str
    fd: int
    ts_ns: int
    latency_ns: int
    dst: int
    src: int
    len: int
    mode: int
    ret: int
    move: int
    move_before: int
    flags: int
    tlb_flushes: int
    tlb_full_flushes: int
    tlb_remote_ipis: int
    tlb_pages: int
    mmap_lock_acquires: int
    mmap_lock_wait_ns: int
    lock_contentions: int
    lock_wait_ns: int
    step_err: int
    steps: int
    fail_addr: int
    retries: int
    folio_flags: int
    thp_splits: int

    @property
    def errno(self) -> str | None:
        return errno_name(-self.ret) if self.ret < 0 else None

    @property
    def failed(self) -> bool:
        return self.ret < 0

    @property
    def partial(self) -> bool:
        return self.ret == -errno_mod.EAGAIN and self.move > 0

    @property
    def move_written(self) -> bool | None:
        """Did the kernel write `move`?  None when we cannot tell (same value)."""
        if self.flags & lib().UT_F_MOVE_UNREADABLE:
            return None
        return True if self.move != self.move_before else None

    def to_json(self) -> dict:
        return {**asdict(self), "errno": self.errno}


@dataclass(frozen=True)
class PinEvent:
    """A long-term pin (io_uring fixed buffer) registered, or all of a ring's released."""

    released: bool
    pid: int
    tid: int
    comm: str
    fd: int
    ts_ns: int
    addr: int
    len: int
    opcode: int
    index: int

    def to_json(self) -> dict:
        return asdict(self)


_MOVE_FIELDS = [f for f in MoveEvent.__dataclass_fields__ if f != "comm"]
_PIN_FIELDS = ["pid", "tid", "fd", "ts_ns", "addr", "len", "opcode", "index"]


def _comm(raw) -> str:
    return ffi().string(raw).decode("utf-8", "replace")


def decode(data, size: int) -> MoveEvent | PinEvent | None:
    """A record from the ring buffer (`data` is its address), or None if unknown."""
    F, L = ffi(), lib()
    kind = F.cast("__u32 *", data)[0]
    if kind == L.UT_EV_MOVE and size >= F.sizeof("struct ut_move_event"):
        e = F.cast("struct ut_move_event *", data)
        return MoveEvent(comm=_comm(e.comm), **{f: getattr(e, f) for f in _MOVE_FIELDS})
    if kind in (L.UT_EV_PIN, L.UT_EV_UNPIN) and size >= F.sizeof("struct ut_pin_event"):
        p = F.cast("struct ut_pin_event *", data)
        return PinEvent(released=kind == L.UT_EV_UNPIN, comm=_comm(p.comm),
                        **{f: getattr(p, f) for f in _PIN_FIELDS})
    return None
