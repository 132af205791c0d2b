"""Decoding ring-buffer records: the struct layout comes from cffi's view of
bpf/uffdtrace_event.h, so every field must land where the C struct has it."""
from __future__ import annotations

import dataclasses

import pytest

from uffdtrace.events import TAG_FIELD, MoveEvent, PinEvent, _Layout, decode
from uffdtrace.native import ffi, lib
from uffdtrace.stacks import StackIds
from uffdtrace.walkstate import WalkedPage
from uffdtrace.walkvma import WalkedVma

NESTED = {"src_state": WalkedPage, "dst_state": WalkedPage, "src_vma_state": WalkedVma,
          "dst_vma_state": WalkedVma, "stack_ids": StackIds}
# the words at the user stack pointer: each one distinct, so a word read
# from the wrong index cannot go unnoticed
SP_WORDS = [0x1000 + i for i in range(16)]


def _same_nested(decoded, nested):
    for g in dataclasses.fields(decoded):
        if g.name == "sp_words":   # an array: kept as its bytes
            assert decoded.words() == tuple(nested.sp_words)
        else:
            assert getattr(decoded, g.name) == getattr(nested, g.name), g.name


def _record(ctype: str, values: dict):
    rec = ffi().new(f"{ctype} *", values)
    return rec, bytes(ffi().buffer(rec)), ffi().sizeof(ctype)


def _distinct_values(ctype: str) -> dict:
    """A different value in every numeric field (negative where signed), so a
    field read from a neighbour's offset cannot go unnoticed."""
    values = {}
    for i, (name, field) in enumerate(ffi().typeof(ctype).fields):
        if field.type.kind == "array":
            continue
        if field.type.kind == "struct":
            values[name] = _distinct_values(field.type.cname)
            continue
        signed = field.type.cname.startswith("int")
        bits = 8 * ffi().sizeof(field.type)
        big = (1 << (bits - 2)) + i * (0x10001 if bits > 16 else 1)
        values[name] = -big if signed else big
    return values


def test_move_event_every_field_from_its_offset():
    values = _distinct_values("struct ut_move_event")
    values.update(type=lib().UT_EV_MOVE, comm=b"mover\0junk", pinner_comm=b"pinner\0x")
    values["stack_ids"]["sp_words"] = SP_WORDS
    rec, raw, size = _record("struct ut_move_event", values)
    e = decode(raw[:size])
    assert isinstance(e, MoveEvent)
    for f in dataclasses.fields(MoveEvent):
        if f.name in NESTED:      # nested: field by field too
            nested = getattr(rec, f.name)
            assert isinstance(getattr(e, f.name), NESTED[f.name])
            _same_nested(getattr(e, f.name), nested)
        elif f.name == "uffd_state":     # arrays of structs: its own test below
            assert e.uffd_state is not None
        elif f.name not in ("comm", "pinner_comm"):
            assert getattr(e, f.name) == getattr(rec, f.name), f.name
    assert e.comm == "mover" and e.pinner_comm == "pinner"


def test_uffd_state_pending_events_from_their_offsets():
    L = lib()
    events = [{"pid": 1000 + i, "tid": 2000 + i, "event": L.UFFD_EVENT_FORK + i,
               "comm": f"raiser{i}".encode() + b"\0junk"} for i in range(L.UT_UFFD_PENDING_MAX)]
    state = {"mmap_changing": 3, "where": L.UT_USW_READ, "queued": 6, "more": 1,
             "events": events}
    _, raw, size = _record("struct ut_move_event", {"type": L.UT_EV_MOVE, "ret": -11,
                                                    "uffd_state": state})
    us = decode(raw[:size]).uffd_state
    assert (us.mmap_changing, us.where, us.queued, us.more) == (3, "read", 6, True)
    # the first UT_UFFD_PENDING_MAX of the 6 queued, in queue order
    assert [(p.pid, p.tid, p.event, p.comm) for p in us.pending] == [
        (1000, 2000, "fork", "raiser0"), (1001, 2001, "remap", "raiser1"),
        (1002, 2002, "remove", "raiser2"), (1003, 2003, "unmap", "raiser3")]
    # a move whose uffd was never read carries none
    _, raw, size = _record("struct ut_move_event", {"type": L.UT_EV_MOVE, "ret": -11})
    assert decode(raw[:size]).uffd_state is None


def test_decoded_move_is_still_frozen_and_comparable():
    values = {"type": lib().UT_EV_MOVE, "pid": 7, "ret": -16, "comm": b"x"}
    _, raw, size = _record("struct ut_move_event", values)
    a, b = decode(raw[:size]), decode(raw[:size])
    assert a == b and a.errno == "EBUSY" and a.failed
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.pid = 8


@pytest.mark.parametrize("kind, released", [("UT_EV_PIN", False), ("UT_EV_UNPIN", True)])
def test_pin_event_fields_and_release(kind, released):
    values = _distinct_values("struct ut_pin_event")
    values.update(type=getattr(lib(), kind), comm=b"ring")
    values["stack_ids"]["sp_words"] = SP_WORDS
    rec, raw, size = _record("struct ut_pin_event", values)
    p = decode(raw[:size])
    assert isinstance(p, PinEvent) and p.released is released and p.comm == "ring"
    assert p.stack is None      # resolved by the collector, not decoded
    _same_nested(p.stack_ids, rec.stack_ids)
    for f in dataclasses.fields(PinEvent):
        if f.name not in ("comm", "released", "stack_ids", "stack"):
            assert getattr(p, f.name) == getattr(rec, f.name), f.name


def test_unknown_or_short_records_are_none():
    _, raw, size = _record("struct ut_move_event", {"type": 99})
    assert decode(raw[:size]) is None
    _, raw, size = _record("struct ut_move_event", {"type": lib().UT_EV_MOVE})
    success_bytes = ffi().offsetof("struct ut_move_event", "src_state")
    assert decode(raw[:success_bytes - 8]) is None


def test_a_success_is_sent_without_its_page_states():
    """UT_MOVE_SUCCESS_BYTES: the record up to src_state; unread states are None."""
    _, raw, size = _record("struct ut_move_event", {"type": lib().UT_EV_MOVE, "pid": 5,
                                                     "src_state": {"where": 12, "pfn": 9}})
    success_bytes = ffi().offsetof("struct ut_move_event", "src_state")
    short = decode(raw[:success_bytes])
    assert short.pid == 5 and short.src_state is None and short.dst_state is None
    full = decode(raw[:size])
    assert full.src_state.pfn == 9 and full.src_state.where_name == "PTE_PRESENT"
    assert full.dst_state is None


# Fields a decoded event has beyond its record: PinEvent.released is the tag
# (UT_EV_UNPIN), not a field of its own.
DERIVED = {"MoveEvent": set(), "PinEvent": {"released", "stack"}}   # stack: resolved from stack_ids


@pytest.mark.parametrize("ctype, cls", [("struct ut_move_event", MoveEvent),
                                        ("struct ut_pin_event", PinEvent)])
def test_every_wire_field_is_decoded_and_every_decoded_field_is_on_the_wire(ctype, cls):
    wire = {name for name, _ in ffi().typeof(ctype).fields} - {TAG_FIELD}
    decoded = {f.name for f in dataclasses.fields(cls)} - DERIVED[cls.__name__]
    assert wire == decoded


def test_a_record_field_the_event_lacks_is_refused():
    # what happens when a field is added to the C struct and not to MoveEvent
    fewer = dataclasses.make_dataclass(
        "MoveEventMissingOne",
        [(f.name, f.type) for f in dataclasses.fields(MoveEvent) if f.name != "split_err"],
        frozen=True)
    with pytest.raises(TypeError, match="split_err"):
        _Layout("struct ut_move_event", fewer)
