"""The layout facts (UT_L_*) from BTF: a missing fact is reported with what
depends on it, renamed members are found under their other name, and the
swap-type split matches each kernel's own config."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from tests.btfbuild import BtfBuilder
from tests.vm import vmlinux_btf
from uffdtrace.kernel import btf, layout


def minimal_kernel(b: BtfBuilder, *, compound="compound_head", with_pincount=True,
                   swap_array=28, memory_failure=True) -> None:
    """Just the structs and enums the layout reads, at made-up offsets."""
    u64, s32 = b.int_("long unsigned int", 8), b.int_("int", 4, signed=True)
    ptr = b.ptr(u64)
    b.struct("task_struct", 64, [("state", u64, 0, 0), ("mm", ptr, 8 * 40, 0)])
    b.struct("mm_struct", 256, [("pgd", ptr, 8 * 120, 0)])
    tail = b.struct("", 8, [(compound, u64, 0, 0)])
    lru = b.struct("", 40, [("lru", u64, 0, 0), ("mapping", ptr, 128, 0),
                            ("__folio_index", u64, 192, 0)])
    words = b.union("", 40, [("", lru, 0, 0), ("", tail, 0, 0)])
    b.struct("page", 64, [("flags", u64, 0, 0), ("", words, 64, 0),
                          ("_mapcount", s32, 384, 0), ("_refcount", s32, 416, 0)])
    head = [("flags", u64, 0, 0), ("mapping", ptr, 192, 0), ("index", u64, 256, 0),
            ("_mapcount", s32, 384, 0), ("_refcount", s32, 416, 0),
            ("_flags_1", u64, 512, 0), ("_large_mapcount", s32, 640, 0)]
    if with_pincount:
        head.append(("_pincount", s32, 736, 0))
    b.struct("folio", 256, head)
    b.enum("pageflags", [("PG_locked", 0), ("PG_head", 6), ("PG_owner_2", 11),
                         ("PG_anon_exclusive", 11), ("__NR_PAGEFLAGS", 24)])
    sis = b.struct("swap_info_struct", 8, [("flags", u64, 0, 0)])
    b.array(b.ptr(sis), s32, swap_array)
    if memory_failure:
        b.func("memory_failure", b.func_proto(s32, []))


def test_facts_come_from_the_blob_and_the_missing_are_named():
    b = BtfBuilder()
    minimal_kernel(b, compound="compound_info", with_pincount=False)
    lay = layout.from_btf(btf.Btf(b.build(), "synthetic"))
    assert lay.values["TASK_MM"] == 40 and lay.values["MM_PGD"] == 120
    # 7.x's name for the word, through an anonymous union and struct
    assert lay.values["PAGE_COMPOUND_HEAD"] == 8
    assert "compound_info" in lay.origin["PAGE_COMPOUND_HEAD"]
    assert lay.values["PG_ANON_EXCLUSIVE"] == 11
    assert lay.values["SIZEOF_PAGE"] == 64
    defines = lay.defines()
    assert defines["UT_L_HAS_FOLIO_PINCOUNT"] == 0 and "UT_L_FOLIO_PINCOUNT" not in defines
    assert defines["UT_L_HAS_FOLIO_LARGE_MAPCOUNT"] == 1
    missing = {m.name: m for m in lay.missing}
    assert "maybe-DMA-pinned" in missing["FOLIO_PINCOUNT"].used_for
    assert "folio._pincount" in missing["FOLIO_PINCOUNT"].looked_for
    text = "\n".join(lay.describe())
    assert "missing UT_L_FOLIO_PINCOUNT: no folio._pincount" in text
    assert "UT_L_MM_PGD = 120" in text


def test_a_required_fact_missing_refuses_to_load(tmp_path):
    b = BtfBuilder()
    minimal_kernel(b, compound="renamed_again")
    blob = tmp_path / "vmlinux"
    blob.write_bytes(b.build())
    with pytest.raises(layout.LayoutError, match=r"no page\.compound_head or "
                       r"page\.compound_info \(needed for the folio of a tail page\)"):
        layout.load(str(blob))


def test_unreadable_btf_is_a_layout_error(tmp_path):
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"not btf at all, but long enough")
    with pytest.raises(layout.LayoutError, match="bad BTF magic"):
        layout.load(str(bad))


@pytest.mark.parametrize("max_swapfiles, hwpoison", [(28, False), (27, True), (24, True)])
def test_swap_types(max_swapfiles, hwpoison):
    b = BtfBuilder()
    minimal_kernel(b, swap_array=max_swapfiles, memory_failure=hwpoison)
    lay = layout.from_btf(btf.Btf(b.build()))
    assert lay.values["MAX_SWAPFILES"] == max_swapfiles
    assert lay.values["SWP_MIGRATION_FIRST"] == max_swapfiles + hwpoison


def test_no_plausible_swap_array_leaves_the_swap_split_out():
    b = BtfBuilder()
    minimal_kernel(b, swap_array=10)
    lay = layout.from_btf(btf.Btf(b.build()))
    assert lay.defines()["UT_L_HAS_MAX_SWAPFILES"] == 0
    assert any(m.name == "MAX_SWAPFILES" and "[10]" in m.looked_for for m in lay.missing)


# ---- real kernels: the host's, and the VM matrix's (read from their vmlinuz) ----
def _config(text: str, option: str) -> bool:
    return re.search(rf"^{option}=y$", text, re.M) is not None


def expected_swap_types(config: str, headers: Path | None) -> tuple[int | None, int]:
    """include/linux/swap.h arithmetic on the kernel's own config: (MAX_SWAPFILES,
    or None when the device-private count cannot be known without headers;
    number of hwpoison types).  Five type bits; above the swap devices: one
    hwpoison, three migration, the device-private types, one PTE marker."""
    hwpoison = int(_config(config, "CONFIG_MEMORY_FAILURE"))
    migration = 3 if _config(config, "CONFIG_MIGRATION") else 0
    device = 0
    if _config(config, "CONFIG_DEVICE_PRIVATE"):
        if headers is None:
            return None, hwpoison
        swap_h = (headers / "include/linux/swap.h").read_text()
        device = int(re.search(r"#ifdef CONFIG_DEVICE_PRIVATE\s*\n#define SWP_DEVICE_NUM (\d+)",
                               swap_h).group(1))
    return 32 - device - migration - hwpoison - 1, hwpoison


KERNELS = ["host", "bookworm-6.12", "trixie-newest"]


def _kernel(name: str) -> tuple[btf.Btf, str, Path | None]:
    """(BTF, config text, headers source tree or None) of a matrix kernel."""
    if name == "host":
        if not Path(btf.VMLINUX_BTF).exists() or not Path("/proc/config.gz").exists():
            pytest.skip("the host has no BTF or no /proc/config.gz")
        return btf.Btf.load(), gzip.open("/proc/config.gz", "rt").read(), None
    from tests.vm import kernels
    path, config = vmlinux_btf.btf_path(name), vmlinux_btf.config_path(name)
    if path is None or config is None:
        pytest.skip(f"VM kernel {name} is not cached (make setup prefetches it) or its "
                    "BTF cannot be extracted here")
    prepared = kernels.cached(kernels.BY_NAME[name])
    return btf.Btf.load(str(path)), config.read_text(), Path(prepared.headers_source)


@pytest.mark.parametrize("name", KERNELS)
def test_every_matrix_kernel_has_every_required_fact(name):
    kernel, config, headers = _kernel(name)
    lay = layout.from_btf(kernel)
    assert [m for m in lay.missing if m.required] == []
    # the VM_* flag bits are an enum only from 7.x; before, vmaflags.py's
    # #define values stand in (test_vm_flag_bits_match_every_kernel)
    assert [m.name for m in lay.missing if not VM_BIT.match(m.name)] == []
    # the VMA reader runs on every kernel of the matrix
    assert lay.lacks(layout.VMA_READER_FACTS) == [] and lay.lacks(layout.UFFD_CTX_FACTS) == []
    assert (lay.values["MT_R64_PIVOTS"], lay.values["MT_A64_PIVOTS"]) == (15, 9)
    # independent of BTF: include/linux/swap.h arithmetic on the kernel's config
    max_swapfiles, hwpoison = expected_swap_types(config, headers)
    if max_swapfiles is not None:
        assert lay.values["MAX_SWAPFILES"] == max_swapfiles
    assert lay.values["SWP_MIGRATION_FIRST"] == lay.values["MAX_SWAPFILES"] + hwpoison
    # the tail page's word names the member this kernel's own header declares
    # (compound_info from 7.x); the host has no header tree of its own
    if headers is not None:
        mm_types = (headers / "include/linux/mm_types.h").read_text()
        used = "compound_info" if "compound_info" in lay.origin["PAGE_COMPOUND_HEAD"] \
            else "compound_head"
        assert re.search(rf"unsigned long {used};", mm_types)


VM_BIT = re.compile(r"^VMA_[A-Z_]+_BIT$")


def _header_vm_bits(headers: Path) -> dict[str, int]:
    """VM_<NAME> -> bit, from include/linux/mm.h's plain hex #defines and the
    BIT(VM_..._BIT) ones (the kernels before the VMA_*_BIT enum)."""
    text = (headers / "include/linux/mm.h").read_text()
    out = {m[1]: int(m[2], 16).bit_length() - 1
           for m in re.finditer(r"#define VM_([A-Z_]+)\s+0x([0-9a-f]+)\b", text)}
    bits = {m[1]: int(m[2]) for m in re.finditer(r"#\s*define VM_([A-Z_0-9]+)_BIT\s+(\d+)", text)}
    out.update({name: bits[name] for name in bits})
    arch = {m[1]: int(m[2]) for m in re.finditer(r"#define VM_HIGH_ARCH_BIT_(\d)\s+(\d+)", text)}
    out.update({m[1]: arch[m[2]] for m in re.finditer(
        r"#\s*define VM_([A-Z_]+)\s+VM_HIGH_ARCH_(\d)\b", text) if m[2] in arch})
    return out


@pytest.mark.parametrize("name", KERNELS)
def test_vm_flag_bits_match_every_kernel(name):
    """vmaflags.py's #define values are what each kernel uses: its own
    VMA_*_BIT enum (7.x BTF), or its own include/linux/mm.h (6.12)."""
    from uffdtrace import vmaflags
    kernel, _, headers = _kernel(name)
    lay = layout.from_btf(kernel)
    from_enum = {f"VMA_{n}_BIT" in lay.values for n, _ in vmaflags.FLAGS.values()}
    if from_enum == {True}:
        for mnemonic, (vm_name, define) in vmaflags.FLAGS.items():
            if define is not None:
                assert lay.values[f"VMA_{vm_name}_BIT"] == define, mnemonic
        return
    if headers is None:
        pytest.skip(f"{name}: no VMA_*_BIT enum in its BTF and no header tree to compare with")
    declared = _header_vm_bits(headers)
    for mnemonic, (vm_name, define) in vmaflags.FLAGS.items():
        if define is not None:
            assert declared[vm_name] == define, (mnemonic, declared.get(vm_name))
