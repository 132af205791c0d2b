"""struct ut_page_state decoded in Python: every field and code comes from
bpf/uffdtrace_event.h through cffi."""
from __future__ import annotations

from dataclasses import fields

import pytest

from uffdtrace.native import ffi, lib
from uffdtrace.walkstate import WalkedPage, flag_bits, record_fields


def test_every_field_round_trips():
    F = ffi()
    values = {name: i + 1 for i, name in enumerate(record_fields())}
    values.update(addr=0x7F00_1234_5000, entry=0x8000_0001_2345_6067, pfn=0x123456,
                  refcount=-1, flags=lib().UT_PS_ANON | lib().UT_PS_ANON_EXCLUSIVE,
                  where=lib().UT_PSW_PTE_PRESENT, level=lib().UT_PSL_PAGE)
    c = F.new("struct ut_page_state *", values)
    got = WalkedPage.from_bytes(bytes(F.buffer(c)))
    assert {name: getattr(got, name) for name in record_fields()} == values
    assert got.where_name == "PTE_PRESENT" and got.level_name == "PAGE"
    assert got.flag_names == {"ANON", "ANON_EXCLUSIVE"}
    assert got.has("ANON") and not got.has("KSM")
    assert "PTE_PRESENT at PAGE pfn=0x123456" in str(got)


def test_the_dataclass_mirrors_the_header_and_the_struct_is_compact():
    assert tuple(f.name for f in fields(WalkedPage)) == record_fields()
    # embedded twice (src, dst) in the move event: keep it small
    assert ffi().sizeof("struct ut_page_state") == 48


def test_flags_are_distinct_bits():
    bits = list(flag_bits().values())
    assert all(b and not b & (b - 1) for b in bits)
    assert len(set(bits)) == len(bits)


def test_a_short_record_is_an_error():
    with pytest.raises(ValueError, match="48 bytes"):
        WalkedPage.from_bytes(b"\0" * 10)
