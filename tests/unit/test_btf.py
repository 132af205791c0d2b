"""The BTF reader: every kind on hand-built blobs, and the running kernel's
BTF checked against the kernel's own description of its tracepoint records."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.btfbuild import BtfBuilder
from uffdtrace.kernel import btf, tracefs


def one_of_each_kind(b: BtfBuilder) -> dict[str, int]:
    """A type of every kind the specification has, then a struct after them
    all: reading it right needs every earlier kind skipped by its exact size."""
    ids = {}
    ids["int"] = b.int_("int", 4, signed=True)
    ids["long"] = b.int_("long", 8)
    ids["ptr"] = b.ptr(ids["int"])
    ids["array"] = b.array(ids["int"], ids["int"], 5)
    ids["struct"] = b.struct("pair", 8, [("a", ids["int"], 0, 0), ("b", ids["int"], 32, 0)])
    ids["union"] = b.union("either", 8, [("l", ids["long"], 0, 0), ("i", ids["int"], 0, 0)])
    ids["enum"] = b.enum("colour", [("RED", 1), ("NEG", -3)], signed=True)
    ids["fwd"] = b.fwd("opaque")
    ids["typedef"] = b.typedef("pair_t", ids["struct"])
    ids["volatile"] = b.volatile(ids["typedef"])
    ids["const"] = b.const(ids["volatile"])
    ids["restrict"] = b.restrict(ids["ptr"])
    ids["proto"] = b.func_proto(ids["int"], [("x", ids["int"]), ("y", ids["ptr"])])
    ids["func"] = b.func("frob", ids["proto"])
    ids["var"] = b.var("counter", ids["int"])
    ids["datasec"] = b.datasec(".data..percpu", 4, [(ids["var"], 0, 4)])
    ids["float"] = b.float_("double", 8)
    ids["decl_tag"] = b.decl_tag("user", ids["struct"], 1)
    ids["type_tag"] = b.type_tag("rcu", ids["int"])
    ids["enum64"] = b.enum64("big", [("HUGE", 1 << 40), ("MINUS", -2)], signed=True)
    ids["sentinel"] = b.struct("sentinel", 24, [
        ("first", ids["long"], 0, 0), ("arr", ids["array"], 64, 0)])
    return ids


def test_every_kind_is_skipped_by_its_exact_size():
    b = BtfBuilder()
    ids = one_of_each_kind(b)
    parsed = btf.Btf(b.build())
    assert parsed.type_count == len(b.types)
    assert {parsed.kind(ids[k]) for k in ids} == set(btf.KIND_NAMES)
    assert parsed.find("sentinel", (btf.KIND_STRUCT,)) == [ids["sentinel"]]
    arr = parsed.member("sentinel", "arr")
    assert (arr.byte_offset, arr.size) == (8, 20)
    assert parsed.func_ids(["frob", "nope"]) == {"frob": ids["func"], "nope": None}
    assert parsed.enum_value("RED") == 1 and parsed.enum_value("NEG") == -3
    assert parsed.enum_value("HUGE", "big") == 1 << 40
    assert parsed.enum_value("MINUS") == -2
    # typedef -> volatile -> const chains resolve to the struct
    assert parsed.resolve(ids["const"]) == ids["struct"]
    assert parsed.size(ids["const"]) == 8 and parsed.size(ids["float"]) == 8


def test_big_endian_blobs_read_the_same():
    b = BtfBuilder(endian=">")
    ids = one_of_each_kind(b)
    parsed = btf.Btf(b.build())
    assert parsed.member("sentinel", "arr").byte_offset == 8
    assert parsed.enum_value("HUGE") == 1 << 40
    assert parsed.type_count == ids["sentinel"]


@pytest.mark.parametrize("kind", [0, 20, 31])
def test_an_unknown_kind_is_an_error_not_a_misparse(kind):
    b = BtfBuilder()
    b.int_("int", 4)
    b.add(kind, "mystery", vlen=3)
    b.struct("after", 4, [])
    with pytest.raises(btf.BtfError, match=f"unknown BTF kind {kind}"):
        btf.Btf(b.build())


def test_broken_blobs_are_errors():
    good = BtfBuilder()
    good.int_("int", 4)
    data = good.build()
    with pytest.raises(btf.BtfError, match="magic"):
        btf.Btf(b"\0\0" + data[2:])
    with pytest.raises(btf.BtfError, match="too short"):
        btf.Btf(data[:10])
    with pytest.raises(btf.BtfError, match="beyond the end"):
        btf.Btf(data[:-3])
    cut = BtfBuilder()
    cut.struct("s", 8, [("a", 1, 0, 0)])
    blob = bytearray(cut.build())
    blob[12:16] = (len(cut.types[0]) - 4).to_bytes(4, "little")   # type_len too short
    with pytest.raises(btf.BtfError):
        btf.Btf(bytes(blob))


def test_members_are_found_through_anonymous_structs_and_unions():
    b = BtfBuilder()
    long_ = b.int_("long", 8)
    int_ = b.int_("int", 4)
    inner = b.struct("", 16, [("x", long_, 0, 0), ("y", long_, 64, 0)])
    anon_union = b.union("", 16, [("", inner, 0, 0), ("z", long_, 0, 0)])
    named = b.struct("named", 8, [("q", int_, 32, 0)])
    b.struct("outer", 40, [("a", int_, 0, 0), ("", anon_union, 64, 0),
                           ("n", named, 192, 0), ("tail", int_, 256, 0)])
    b.struct("bits", 4, [("lo", int_, 0, 3), ("hi", int_, 3, 5)], bitfields=True)
    parsed = btf.Btf(b.build())
    assert parsed.member("outer", "y").byte_offset == 16
    assert parsed.member("outer", "z").byte_offset == 8
    assert parsed.member("outer", "n.q").byte_offset == 28
    assert parsed.member("outer", "nope") is None
    assert parsed.member("nostruct", "a") is None
    hi = parsed.member("bits", "hi")
    assert (hi.bit_offset, hi.bitfield_size, hi.size) == (3, 5, 0)
    with pytest.raises(btf.BtfError, match="looked up in a INT"):
        parsed.member("outer", "a.b")


def test_an_enumerator_with_two_values_is_an_error():
    b = BtfBuilder()
    b.enum("one", [("X", 1)])
    b.enum("two", [("X", 2)])
    parsed = btf.Btf(b.build())
    with pytest.raises(btf.BtfError, match="several values"):
        parsed.enum_value("X")
    assert parsed.enum_value("X", "two") == 2


# ---- the running kernel ----
@pytest.fixture(scope="module")
def vmlinux():
    if not Path(btf.VMLINUX_BTF).exists():
        pytest.skip(f"no {btf.VMLINUX_BTF} on this kernel")
    return btf.Btf.load()


def test_tracepoint_records_agree_with_btf(vmlinux):
    """Each tracepoint's format file is the kernel's own statement of where
    its record's fields are; BTF describes the same record as struct
    trace_event_raw_<event>.  Every field both name must agree."""
    events = tracefs.find()
    if events is None or not os.access(events / "events", os.R_OK):
        pytest.skip("tracefs is not readable here (root, and tracefs mounted)")
    compared, mismatches = 0, []
    for fmt in sorted((events / "events").glob("*/*/format")):
        struct_name = f"trace_event_raw_{fmt.parent.name}"
        if vmlinux.find_one(struct_name, btf.KIND_STRUCT) is None:
            continue
        for name, (offset, size) in tracefs.field_offsets(
                events, fmt.parent.parent.name, fmt.parent.name).items():
            member = vmlinux.member(struct_name, name)
            if member is None or name.startswith("common_"):
                continue
            compared += 1
            if (member.byte_offset, member.size) != (offset, size):
                mismatches.append((struct_name, name, member.byte_offset, member.size,
                                   offset, size))
    assert mismatches == []
    assert compared > 500, f"only {compared} fields compared"


def test_folio_overlays_page_as_the_kernel_asserts(vmlinux):
    """include/linux/mm_types.h FOLIO_MATCH: these folio fields sit exactly
    on the struct page fields of the same name."""
    for name in ("flags", "mapping", "_mapcount", "_refcount", "memcg_data"):
        folio, page = vmlinux.member("folio", name), vmlinux.member("page", name)
        assert folio and page and folio.byte_offset == page.byte_offset, name
    assert vmlinux.member("folio", "__page_1").byte_offset == vmlinux.struct_size("page")


def test_pg_anon_exclusive_is_an_alias_of_another_page_flag(vmlinux):
    pageflags = vmlinux.find("pageflags", (btf.KIND_ENUM,))[0]
    values = vmlinux.enumerators(pageflags)
    owners = [n for n, v in values.items()
              if v == values["PG_anon_exclusive"] and n != "PG_anon_exclusive"]
    assert set(owners) & {"PG_owner_2", "PG_mappedtodisk"}, owners
    assert values["PG_anon_exclusive"] < values["__NR_PAGEFLAGS"]
