"""Decode the records the BPF program sends (layout: bpf/uffdtrace_event.h,
read through cffi: never re-typed here).

Decoding runs once per event in the collector, so it is one C-level
struct.unpack whose format is derived from cffi's view of the header,
not a Python attribute read per field.
"""
from __future__ import annotations

import errno as errno_mod
import struct
from bisect import bisect_left
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import itemgetter

from .native import errno_name, ffi, lib
from .stacks import StackIds
from .walkstate import WalkedPage
from .walkuffd import UffdState
from .walkvma import WalkedVma
from .wakes import WakeEvent, decode_wake


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
    # the path each moved page took (kernel tier: per step; tracepoint
    # tier: the destination entries read at exit), the folios split (kernel
    # tier only); uffdtrace/movepaths.py reads them
    path_pte_pages: int = 0
    path_zero_pages: int = 0
    path_swap_pages: int = 0
    path_hole_pages: int = 0
    path_pmds: int = 0
    path_huge_zero_pmds: int = 0
    split_pages: int = 0
    # UT_F_STATE_AT_EXIT: the pages where a failed move stopped, as the
    # kernel had them when the call returned (None: not read)
    src_state: WalkedPage | None = None
    dst_state: WalkedPage | None = None
    # UT_F_VMAS_AT_EXIT: the VMAs there, as the kernel had them then
    src_vma_state: WalkedVma | None = None
    dst_vma_state: WalkedVma | None = None
    # UT_F_UFFD_AT_EXIT: the moving uffd's mmap_changing and unread events
    uffd_state: UffdState | None = None
    # --stacks: the stack ids taken for a sent failure (None: none taken);
    # resolved by the collector (TracedMove.stack), never written as such
    stack_ids: StackIds | None = None

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
        del out["stack_ids"]   # ids of a map that dies with the session
        for name in ("src_state", "dst_state", "src_vma_state", "dst_vma_state", "uffd_state"):
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
    stack_ids: StackIds | None = None   # --stacks: as taken
    stack: dict | None = None           # ... and resolved (stacks.py; the collector sets it)

    def to_json(self) -> dict:
        out = dict(vars(self))
        del out["stack_ids"]
        return out


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
# The Python class each nested C struct decodes to: by the struct's own
# layout, or (a struct with arrays) by the class's from_bytes, through cffi.
_NESTED = {"struct ut_page_state": WalkedPage, "struct ut_vma_state": WalkedVma,
           "struct ut_uffd_state": UffdState, "struct ut_stack_ids": StackIds}
_NESTED_FROM_BYTES = {"struct ut_uffd_state"}


# Every record starts with it (uffdtrace_event.h): decode() dispatches on it,
# it is no field of the decoded event.
TAG_FIELD = "type"


def _record_format(ctype: str, end: int | None = None) -> tuple[str, list[str]]:
    """The struct format of a C record (or of its first `end` bytes: whole
    fields only) from cffi's field offsets, and its fields' names."""
    F = ffi()
    ct = F.typeof(ctype)
    end = F.sizeof(ct) if end is None else end
    fmt, pos, names = "<", 0, []
    for name, field in ct.fields:
        if field.offset + F.sizeof(field.type) > end:
            break
        if field.offset > pos:
            fmt += f"{field.offset - pos}x"
        if field.type.kind == "array":   # char[16]: task comms; other arrays as bytes
            fmt += f"{F.sizeof(field.type)}s"
        elif field.type.kind == "struct":   # decoded by its own layout
            fmt += f"{F.sizeof(field.type)}s"
        else:
            fmt += _STRUCT_CODES[field.type.cname]
        names.append(name)
        pos = field.offset + F.sizeof(field.type)
    fmt += f"{end - pos}x" if end > pos else ""
    return fmt, names


class _Layout:
    """struct.Struct for a C record, built from cffi's field offsets, and the
    getter that picks a dataclass's fields (in its order) out of the tuple.
    Every field of the record but its tag must be a field of the dataclass:
    a field added to the C struct cannot be silently left undecoded."""

    def __init__(self, ctype: str, cls):
        F = ffi()
        ct = F.typeof(ctype)
        fmt, names = _record_format(ctype)
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
        # char arrays (comm, pinner_comm) are decoded as text; other arrays
        # (ut_stack_ids.sp_words) stay bytes, for their class to read
        self.text_at = [i for i, n in enumerate(order)
                        if dict(ct.fields)[n].type.kind == "array"
                        and dict(ct.fields)[n].type.item.cname == "char"]
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


class _FromBytes:
    """A nested record decoded by its class's from_bytes."""

    def __init__(self, cls):
        self.cls = cls

    def decode_nested(self, raw: bytes):
        return self.cls.from_bytes(raw) if any(raw) else None


@lru_cache(maxsize=None)
def _nested_layout(cname: str) -> _Layout | _FromBytes:
    if cname in _NESTED_FROM_BYTES:
        return _FromBytes(_NESTED[cname])
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


def decode(raw: bytes) -> MoveEvent | PinEvent | RepeatEvent | WakeEvent | None:
    """A record from the ring buffer (ringbuf.frames), or None if unknown."""
    move, pin, ev_move, ev_pin, ev_unpin = _layouts()
    raw, size = bytes(raw), len(raw)
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
    if kind == lib().UT_EV_WAKE:
        return decode_wake(raw)
    return None


class _SuccessRows:
    """How a drained run of successes decodes in bulk: every success record
    has one size (the move record up to its page states), so its frames
    (ringbuf.frames) sit at one stride and struct.iter_unpack reads them
    all in one C loop.  A row is the record's fields in the header's order,
    without the tag; comms decoded to text."""

    def __init__(self):
        size = _success_bytes()
        fmt, names = _record_format("struct ut_move_event", size)
        header = lib().BPF_RINGBUF_HDR_SZ       # each frame's (ringdrain.h)
        stride = (header + size + 7) & ~7
        if names[0] != TAG_FIELD or not fmt.startswith("<I"):
            raise TypeError("struct ut_move_event must start with its 32-bit tag")
        # frame header and tag skipped; the padding to the stride too
        body = f"{header + 4}x" + fmt[2:]
        self.struct = struct.Struct("<" + body + f"{stride - header - size}x")
        if self.struct.size != stride:
            raise TypeError(f"success frame format {body!r} is not {stride} bytes")
        self.record_size, self.stride = size, stride
        self.fields = tuple(names[1:])
        move_fields = {f.name for f in fields(MoveEvent)}
        if set(self.fields) - move_fields:
            raise TypeError(f"{sorted(set(self.fields) - move_fields)} are not MoveEvent fields")
        ct = dict(ffi().typeof("struct ut_move_event").fields)
        self.text_at = tuple(i for i, n in enumerate(self.fields) if ct[n].type.kind == "array")
        # the text fields are the last ones (a faster decode)
        self.text_tail = self.text_at == tuple(range(len(self.fields) - len(self.text_at),
                                                     len(self.fields)))


@lru_cache(maxsize=None)
def success_rows() -> _SuccessRows:
    return _SuccessRows()


class _TextCache(dict):
    """A comm's bytes -> its text, decoded once per batch (a batch has a
    handful of distinct comms): a hit is a C-level dict lookup."""

    def __missing__(self, raw: bytes) -> str:
        text = self[raw] = _comm(raw)
        return text


class SuccessBatch:
    """Successful moves taken from their ring buffer in one drain, kept as
    the kernel framed them (native/ringdrain.c) and decoded in bulk: at
    100,000+ moves/s there is no time to make an object of each.  rows()
    feeds the trace file's `successes` record; moves() makes MoveEvents for
    consumers that want objects (the same decode, one at a time)."""

    __slots__ = ("frames", "count", "_rows")

    def __init__(self, frames: bytes, count: int):
        spec = success_rows()
        if len(frames) != count * spec.stride:
            raise ValueError(f"{count} successes do not fill {len(frames)} bytes "
                             f"at {spec.stride} a record")
        self.frames, self.count = frames, count
        self._rows: list[list] | None = None

    @classmethod
    def of_rows(cls, rows: list[list]) -> SuccessBatch:
        """A batch of rows already decoded (a part of another batch)."""
        batch = object.__new__(cls)
        batch.frames, batch.count, batch._rows = None, len(rows), rows
        return batch

    def rows(self) -> list[list]:
        """One list per success: success_rows().fields' values (decoded
        once; do not modify)."""
        if self._rows is None:
            self._rows = self._decode()
        return self._rows

    def split_at(self, times: list[int]) -> list[SuccessBatch]:
        """The batch in time order (ts_ns), cut before each of the sorted
        `times`: len(times) + 1 batches, some maybe empty."""
        ts = success_rows().fields.index("ts_ns")
        rows = sorted(self.rows(), key=itemgetter(ts))
        out, start = [], 0
        for t in times:
            end = bisect_left(rows, t, lo=start, key=itemgetter(ts))
            out.append(SuccessBatch.of_rows(rows[start:end]))
            start = end
        out.append(SuccessBatch.of_rows(rows[start:]))
        return out

    def last_ts_by_tid(self) -> dict[int, int]:
        """Each thread's latest success in the batch (its ts_ns)."""
        names = success_rows().fields
        tid, ts = names.index("tid"), names.index("ts_ns")
        out: dict[int, int] = {}
        for row in self.rows():
            if row[ts] > out.get(row[tid], -1):
                out[row[tid]] = row[ts]
        return out

    def _decode(self) -> list[list]:
        spec = success_rows()
        text = _TextCache()
        if spec.text_tail:
            # the usual layout: the comms are the record's last fields, so a
            # row is the numbers as unpacked and the comms looked up: one
            # comprehension, no per-field Python loop
            n = spec.text_at[0]
            if len(spec.text_at) == 2:
                return [[*v[:n], text[v[n]], text[v[n + 1]]]
                        for v in spec.struct.iter_unpack(self.frames)]
        rows = []
        for values in spec.struct.iter_unpack(self.frames):
            row = list(values)
            for i in spec.text_at:
                row[i] = text[row[i]]
            rows.append(row)
        return rows

    def moves(self) -> list[MoveEvent]:
        names = success_rows().fields
        return [MoveEvent(**dict(zip(names, row))) for row in self.rows()]
