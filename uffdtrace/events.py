"""Decode the records the BPF program sends (layout: bpf/uffdtrace_event.h,
read through cffi: never re-typed here).

Decoding runs once per event in the collector, so it is one C-level
struct.unpack whose format is derived from cffi's view of the header,
not a Python attribute read per field.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import struct
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import itemgetter

from .native import errno_name, ffi, lib
from .walkstate import WalkedPage
from .walkvma import WalkedVma


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
    pinner_pid: int
    pinner_ts_ns: int
    pinner_method: int
    pinner_gup_flags: int
    pinner_comm: str
    # UT_F_STATE_AT_EXIT: the pages where a failed move stopped, as the
    # kernel had them when the call returned (None: not read)
    src_state: WalkedPage | None = None
    dst_state: WalkedPage | None = None
    # UT_F_VMAS_AT_EXIT: the VMAs there, as the kernel had them then
    src_vma_state: WalkedVma | None = None
    dst_vma_state: WalkedVma | None = None

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
    def cost_stats(self) -> bool:
        """Were TLB flushes and lock waits counted (else those fields are 0)?"""
        return bool(self.flags & lib().UT_F_COST_STATS)

    @property
    def move_written(self) -> bool | None:
        """Did the kernel write `move`?  None when we cannot tell (same value)."""
        if self.flags & lib().UT_F_MOVE_UNREADABLE:
            return None
        return True if self.move != self.move_before else None

    @property
    def state_at_exit(self) -> bool:
        return bool(self.flags & lib().UT_F_STATE_AT_EXIT)

    @property
    def vmas_at_exit(self) -> bool:
        return bool(self.flags & lib().UT_F_VMAS_AT_EXIT)

    def to_json(self) -> dict:
        # vars(), not asdict(): no recursive deep copy for a flat record.
        out = {**vars(self), "errno": self.errno}
        for name in ("src_state", "dst_state", "src_vma_state", "dst_vma_state"):
            state = out[name]
            out[name] = state.to_json() if state is not None else None
        return out


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
        return dict(vars(self))


@dataclass(frozen=True)
class RepeatEvent:
    """A closed run of identical failures: `count` more failures of thread
    `tid` exactly like its move event at `first_ts_ns` (the run's first),
    counted in the kernel instead of sent (struct ut_repeat_event)."""

    pid: int
    tid: int
    closed_by: int       # UT_RUN_CLOSED_*
    first_ts_ns: int
    last_ts_ns: int
    count: int
    latency_total_ns: int
    latency_max_ns: int

    @property
    def closed_by_name(self) -> str:
        return run_closed_name(self.closed_by)

    def to_json(self) -> dict:
        out = dict(vars(self))
        out["closed_by"] = self.closed_by_name
        return out


RUN_CLOSED_PREFIX = "UT_RUN_CLOSED_"


@lru_cache(maxsize=None)
def run_closed_names() -> dict[int, str]:
    """UT_RUN_CLOSED_* values -> their lower-cased names ("different",
    "success", "time", "end")."""
    L = lib()
    return {getattr(L, n): n[len(RUN_CLOSED_PREFIX):].lower() for n in dir(L)
            if n.startswith(RUN_CLOSED_PREFIX)}


def run_closed_name(value: int) -> str:
    return run_closed_names().get(value, f"closed_by {value}")


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


_STRUCT_CODES = {"uint8_t": "B", "int8_t": "b", "uint16_t": "H", "int16_t": "h",
                 "uint32_t": "I", "int32_t": "i", "uint64_t": "Q", "int64_t": "q"}
# The Python class each nested C struct decodes to.
_NESTED = {"struct ut_page_state": WalkedPage, "struct ut_vma_state": WalkedVma}


# Every record starts with it (uffdtrace_event.h): decode() dispatches on it,
# it is no field of the decoded event.
TAG_FIELD = "type"


class _Layout:
    """struct.Struct for a C record, built from cffi's field offsets, and the
    getter that picks a dataclass's fields (in its order) out of the tuple.
    Every field of the record but its tag must be a field of the dataclass:
    a field added to the C struct cannot be silently left undecoded."""

    def __init__(self, ctype: str, cls):
        F = ffi()
        ct = F.typeof(ctype)
        fmt, pos, names = "<", 0, []
        for name, field in ct.fields:
            if field.offset > pos:
                fmt += f"{field.offset - pos}x"
            if field.type.kind == "array":   # char[16]: task comms
                fmt += f"{field.type.length}s"
            elif field.type.kind == "struct":   # decoded by its own layout
                fmt += f"{F.sizeof(field.type)}s"
            else:
                fmt += _STRUCT_CODES[field.type.cname]
            names.append(name)
            pos = field.offset + F.sizeof(field.type)
        fmt += f"{F.sizeof(ct) - pos}x" if F.sizeof(ct) > pos else ""
        self.struct = struct.Struct(fmt)
        assert self.struct.size == F.sizeof(ct), (ctype, fmt)
        self.size = self.struct.size
        order = [f.name for f in fields(cls) if f.name in names]
        undecoded = set(names) - set(order) - {TAG_FIELD}
        if undecoded:
            raise TypeError(f"{ctype} fields {sorted(undecoded)} are not fields of "
                            f"{cls.__name__}")
        self.pick = itemgetter(*[names.index(n) for n in order])
        self.cls, self.order = cls, order
        # every dataclass field comes from the record: positional (fastest)
        self.positional = order == [f.name for f in fields(cls)]
        # char arrays (comm, pinner_comm) are decoded as text
        self.text_at = [i for i, n in enumerate(order)
                        if dict(ct.fields)[n].type.kind == "array"]
        # nested structs by their own layout
        self.nested_at = [(i, _nested_layout(dict(ct.fields)[n].type.cname))
                          for i, n in enumerate(order)
                          if dict(ct.fields)[n].type.kind == "struct"]

    def decode(self, raw: bytes, **extra):
        """The dataclass; fields it has beyond the record come from `extra`."""
        values = list(self.pick(self.struct.unpack_from(raw)))
        for i in self.text_at:
            values[i] = _comm(values[i])
        for i, layout in self.nested_at:
            values[i] = layout.decode_nested(values[i])
        if self.positional:
            # A frozen dataclass's __init__ sets each field through
            # object.__setattr__; filling __dict__ at once is several times
            # faster and gives the same (still frozen) object.
            obj = object.__new__(self.cls)
            obj.__dict__.update(zip(self.order, values))
            return obj
        return self.cls(**dict(zip(self.order, values)), **extra)


    def decode_nested(self, raw: bytes):
        """A nested record, or None when it was never filled in (all zero:
        a success carries its pages' states unread)."""
        return self.decode(raw) if any(raw) else None


@lru_cache(maxsize=None)
def _nested_layout(cname: str) -> _Layout:
    return _Layout(cname, _NESTED[cname])


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@lru_cache(maxsize=None)
def _success_bytes() -> int:
    """What a successful move sends: the record up to its page states
    (UT_MOVE_SUCCESS_BYTES in bpf/uffdtrace.bpf.c)."""
    return ffi().offsetof("struct ut_move_event", "src_state")


@lru_cache(maxsize=None)
def _layouts() -> tuple[_Layout, _Layout, int, int, int]:
    L = lib()
    return (_Layout("struct ut_move_event", MoveEvent), _Layout("struct ut_pin_event", PinEvent),
            L.UT_EV_MOVE, L.UT_EV_PIN, L.UT_EV_UNPIN)


@lru_cache(maxsize=None)
def _repeat_layout() -> _Layout:
    return _Layout("struct ut_repeat_event", RepeatEvent)


def decode_repeat(raw: bytes) -> RepeatEvent:
    """A struct ut_repeat_event's bytes (from the ring buffer, or a run still
    open in the `runs` map when tracing stops)."""
    return _repeat_layout().decode(raw)


def decode(data, size: int) -> MoveEvent | PinEvent | RepeatEvent | None:
    """A record from the ring buffer (`data` is its address), or None if unknown."""
    move, pin, ev_move, ev_pin, ev_unpin = _layouts()
    raw = ctypes.string_at(data, size)
    kind = int.from_bytes(raw[:4], "little")
    if kind == lib().UT_EV_REPEAT and size >= _repeat_layout().size:
        return decode_repeat(raw)
    if kind == ev_move and size >= move.size:
        return move.decode(raw)
    if kind == ev_move and size >= _success_bytes():
        # a success: sent without its (unread) page states
        return move.decode(raw + bytes(move.size - size))
    if kind in (ev_pin, ev_unpin) and size >= pin.size:
        return pin.decode(raw, released=kind == ev_unpin)
    return None
