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
    # kernel tier (zero in the tracepoint tier): see uffdtrace_event.h
    kflags: int
    kernel_ret: int
    split_err: int
    folio_lookups: int
    src_vma: int
    dst_vma: int
    tlb_range_flushes: int
    tlb_range_bytes: int
    pinner_pid: int
    pinner_ts_ns: int
    pinner_method: int
    pinner_gup_flags: int
    pinner_comm: str
    ksm_merged_ts_ns: int
    pte_at_fail: int

    @property
    def kernel_tier(self) -> bool:
        return bool(self.flags & lib().UT_F_KERNEL_TIER)

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
    method: int          # UT_PIN_* (bpf/uffdtrace_event.h)
    gup_flags: int

    def to_json(self) -> dict:
        return asdict(self)


def pin_method_name(method: int) -> str:
    """UT_PIN_* (ut_pin_event.method, ut_move_event.pinner_method) as text."""
    L = lib()
    names = {L.UT_PIN_IO_URING_REGISTER: "io_uring fixed buffer (io_uring_register)",
             L.UT_PIN_USER_PAGES_FAST: "pin_user_pages_fast()",
             L.UT_PIN_USER_PAGES: "pin_user_pages()",
             L.UT_PIN_USER_PAGES_REMOTE: "pin_user_pages_remote()",
             L.UT_PIN_USER_PAGES_UNLOCKED: "pin_user_pages_unlocked()"}
    name = names.get(method & L.UT_PIN_METHOD_MASK, f"pin method {method}")
    return name + (", FOLL_LONGTERM" if method & L.UT_PIN_LONGTERM else "")


# char[16] fields (task comms): decoded as text
_STRING_FIELDS = {"comm", "pinner_comm"}


def _fields(cls, skip=()) -> list[str]:
    return [f for f in cls.__dataclass_fields__ if f not in skip]


def _decode_struct(cls, struct, **extra):
    """A dataclass from the cffi struct fields of the same names."""
    values = {}
    for name in _fields(cls, extra):
        raw = getattr(struct, name)
        values[name] = _comm(raw) if name in _STRING_FIELDS else raw
    return cls(**values, **extra)


def _comm(raw) -> str:
    return ffi().string(raw).decode("utf-8", "replace")


def decode(data, size: int) -> MoveEvent | PinEvent | None:
    """A record from the ring buffer (`data` is its address), or None if unknown."""
    F, L = ffi(), lib()
    kind = F.cast("__u32 *", data)[0]
    if kind == L.UT_EV_MOVE and size >= F.sizeof("struct ut_move_event"):
        return _decode_struct(MoveEvent, F.cast("struct ut_move_event *", data))
    if kind in (L.UT_EV_PIN, L.UT_EV_UNPIN) and size >= F.sizeof("struct ut_pin_event"):
        return _decode_struct(PinEvent, F.cast("struct ut_pin_event *", data),
                              released=kind == L.UT_EV_UNPIN)
    return None
