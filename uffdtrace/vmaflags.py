"""A VMA's raw vm_flags as the mnemonics /proc/PID/smaps prints (VmFlags:
rd wr sh um ...), so that VMAs read in the kernel at exit and VMAs read from
smaps after the call go through the same rules (vma_rules.py).

The bit of each VM_* flag: the running kernel's `VMA_<NAME>_BIT` enumerator
where its BTF has one (7.x declares the flags by bit), else the #define value
of include/linux/mm.h below -- only flags whose value never changed since
UFFDIO_MOVE exists (6.8) are listed; VM_UFFD_MINOR did change (38 on 6.12,
41 on 7.3) and is therefore read only from BTF.
"""
from __future__ import annotations

from functools import lru_cache

from .kernel import layout as layout_mod

# smaps mnemonic (fs/proc/task_mmu.c, show_smap_vma_flags) -> (VM_ name, the
# #define bit; None: only from BTF)
FLAGS: dict[str, tuple[str, int | None]] = {
    "rd": ("READ", 0),
    "wr": ("WRITE", 1),
    "ex": ("EXEC", 2),
    "sh": ("SHARED", 3),
    "um": ("UFFD_MISSING", 9),
    "pf": ("PFNMAP", 10),
    "uw": ("UFFD_WP", 12),
    "lo": ("LOCKED", 13),
    "io": ("IO", 14),
    "ht": ("HUGETLB", 22),
    "mm": ("MIXEDMAP", 28),
    "ss": ("SHADOW_STACK", 37),    # VM_HIGH_ARCH_5 on x86-64
    "ui": ("UFFD_MINOR", None),
}


def bits_from(layout: layout_mod.Layout | None) -> dict[str, int]:
    """mnemonic -> bit: the layout's enumerators first, then the #defines."""
    values = layout.values if layout is not None else {}
    out = {}
    for mnemonic, (name, define) in FLAGS.items():
        bit = values.get(f"VMA_{name}_BIT", define)
        if bit is not None:
            out[mnemonic] = bit
    return out


@lru_cache(maxsize=1)
def bits() -> dict[str, int]:
    """The running kernel's bits (the #defines alone when its BTF is unreadable)."""
    try:
        lay = layout_mod.running()
    except layout_mod.LayoutError:
        lay = None
    return bits_from(lay)


def names(vm_flags: int) -> frozenset[str]:
    """The smaps mnemonics of the flags set in vm_flags (those listed in FLAGS)."""
    return frozenset(m for m, bit in bits().items() if vm_flags >> bit & 1)
