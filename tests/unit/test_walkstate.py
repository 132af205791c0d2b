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


# ---- struct ut_vma_state (bpf/ut_vmastate.h) ----
def _vma_bytes(**values) -> bytes:
    F = ffi()
    return bytes(F.buffer(F.new("struct ut_vma_state *", values)))


def test_a_walked_vma_round_trips_and_answers_the_rules_questions():
    from uffdtrace import vmaflags
    from uffdtrace.walkvma import WalkedVma
    L = lib()
    bits = vmaflags.bits()
    raw = 1 << bits["rd"] | 1 << bits["wr"] | 1 << bits["um"] | 1 << 63   # + an undecoded bit
    got = WalkedVma.from_bytes(_vma_bytes(
        addr=0x7F00_0000_1000, vm_start=0x7F00_0000_0000, vm_end=0x7F00_0001_0000,
        vm_flags=raw, flags=L.UT_VS_UFFD_CTX | L.UT_VS_UFFD_CTX_KNOWN | L.UT_VS_ANON_VMA,
        where=L.UT_VSW_FOUND, depth=3, node_type=1))
    assert (got.start, got.end, got.vm_flags, got.depth) == (0x7F00_0000_0000,
                                                             0x7F00_0001_0000, raw, 3)
    assert got.found and not got.absent and got.where_name == "FOUND"
    assert got.vm_flag_names == {"rd", "wr", "um"}
    assert got.anonymous and not got.shared and got.registered
    # registered, the moving fd's context known, and not it: another uffd's
    assert got.registered_elsewhere is True
    record = got.to_json()
    assert record["where"] == "found" and record["vm_flag_names"] == ["rd", "um", "wr"]
    assert record["flags"] == ["anon_vma", "uffd_ctx", "uffd_ctx_known"]
    assert "0x7f0000000000-0x7f0000010000 [rd um wr]" in got.describe("dst")


def test_a_walked_vma_that_says_less():
    from uffdtrace.walkvma import WalkedVma
    L = lib()
    shmem = WalkedVma.from_bytes(_vma_bytes(where=L.UT_VSW_FOUND, flags=L.UT_VS_VM_OPS |
                                            L.UT_VS_UFFD_CTX))
    assert not shmem.anonymous and shmem.registered_elsewhere is None   # ctx unknown
    gap = WalkedVma.from_bytes(_vma_bytes(addr=0x1000, where=L.UT_VSW_NONE))
    assert gap.absent and not gap.found and gap.to_json()["vm_flag_names"] == []
    assert gap.describe("src") == "src VMA of 0x1000 at exit: none"


def test_vm_flag_bits_prefer_the_kernels_enum():
    from uffdtrace import vmaflags
    from uffdtrace.kernel.layout import Layout
    fallback = vmaflags.bits_from(None)
    assert "ui" not in fallback          # VM_UFFD_MINOR moved: only from BTF
    lay = Layout(source="test", values={"VMA_UFFD_MINOR_BIT": 41, "VMA_WRITE_BIT": 1})
    assert vmaflags.bits_from(lay) == {**fallback, "ui": 41}
