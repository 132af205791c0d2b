"""Why move_pages() refused two VMAs with EINVAL, in the kernel's order.

One set of rules for both sources of VMA facts: enrich.Vma (read from
/proc/PID/smaps after the call: evidence inferred) and walkvma.WalkedVma
(read in the kernel's VMA tree when the call returned: evidence observed).
Both answer the same questions (VmaFacts); the caller picks the evidence.
"""
from __future__ import annotations

from typing import Protocol

from .events import MoveEvent
from .taxonomy import CauseCode as C

# smaps mnemonics of the VMAs vma_move_compatible() refuses
SPECIAL_VMFLAGS = {"ht": "hugetlb", "pf": "PFNMAP", "io": "IO", "mm": "MIXEDMAP",
                   "ss": "shadow stack"}
ACCESS_VMFLAGS = frozenset({"rd", "wr", "ex"})


class VmaFacts(Protocol):
    """What the rules ask of a VMA."""

    @property
    def end(self) -> int: ...
    @property
    def shared(self) -> bool: ...
    @property
    def anonymous(self) -> bool: ...
    @property
    def vm_flag_names(self) -> frozenset[str]: ...
    @property
    def registered(self) -> bool: ...        # with any userfaultfd
    @property
    def registered_elsewhere(self) -> bool | None: ...   # None: unknown


def invalid_from_vmas(move: MoveEvent, src: VmaFacts, dst: VmaFacts) -> tuple[C, list[str]]:
    """The EINVAL cause two VMAs show (INVALID_UNKNOWN when they show none),
    with the notes that say what was seen."""
    if move.src + move.len > src.end or move.dst + move.len > dst.end:
        side = "src" if move.src + move.len > src.end else "dst"
        return C.INVALID_CROSSES_VMA, [f"{side} range extends past its VMA's end "
                                       f"({(dst if side == 'dst' else src).end:#x})"]
    if src.shared or dst.shared:
        return C.INVALID_VMA_SHARED, [f"{'src' if src.shared else 'dst'} VMA is shared"]
    for vma, name in ((src, "src"), (dst, "dst")):
        special = [label for f, label in SPECIAL_VMFLAGS.items() if f in vma.vm_flag_names]
        if special:
            return C.INVALID_SPECIAL_VMA, [f"{name} VMA is {', '.join(special)}"]
    if not src.anonymous or not dst.anonymous:
        which = " and ".join(n for v, n in ((src, "src"), (dst, "dst")) if not v.anonymous)
        return C.INVALID_VMA_NOT_ANON, [f"{which} VMA not anonymous (file-backed or shmem)"]
    src_access, dst_access = (v.vm_flag_names & ACCESS_VMFLAGS for v in (src, dst))
    if "wr" not in src_access:
        notes = ["src VMA not writable (no wr)"]
        if src_access != dst_access:
            notes.append("src and dst protections differ too")
        return C.INVALID_SRC_NOT_WRITABLE, notes
    if src_access != dst_access or ("lo" in src.vm_flag_names) != ("lo" in dst.vm_flag_names):
        return C.INVALID_VMA_FLAGS_MISMATCH, ["protection or mlock flags differ"]
    if not dst.registered:
        return C.INVALID_DST_NOT_REGISTERED, ["dst VMA not registered with any userfaultfd"]
    if dst.registered_elsewhere:
        return C.INVALID_DST_NOT_REGISTERED, [
            "dst VMA registered with another userfaultfd than the one moving"]
    return C.INVALID_UNKNOWN, ["the VMAs pass every check uffdtrace knows"]
