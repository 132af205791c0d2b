"""struct ut_vma_state, as Python: the VMA bpf/ut_vmastate.h found at a
user address when a failed move returned.

Layout and codes (UT_VSW_* what the walk found, UT_VS_* flags) come through
cffi from bpf/uffdtrace_event.h; vm_flags are decoded into smaps mnemonics
(vmaflags.py), so a WalkedVma answers the same questions as an enrich.Vma
read from /proc (start, end, flags, shared, anonymous, registered) and goes
through the same rules (vma_rules.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import vmaflags
from .native import lib
from .walkstate import codes, flag_bits, record_from_bytes


VMA_FLAGS = "UT_VS_"


@dataclass(frozen=True)
class WalkedVma:
    """The VMA containing `addr`, as the kernel's VMA tree had it."""

    addr: int
    vm_start: int
    vm_end: int
    vm_flags: int
    flags: int
    where: int
    depth: int
    node_type: int
    pad: int = 0

    @classmethod
    def from_bytes(cls, raw: bytes) -> "WalkedVma":
        return record_from_bytes(cls, "struct ut_vma_state", raw)

    @property
    def where_name(self) -> str:
        return codes("UT_VSW_").get(self.where, f"where {self.where}")

    @property
    def found(self) -> bool:
        return self.where == lib().UT_VSW_FOUND

    @property
    def absent(self) -> bool:
        """Read, and no VMA contains addr."""
        return self.where == lib().UT_VSW_NONE

    def has(self, flag: str) -> bool:
        """flag: a UT_VS_* name without the prefix, e.g. "UFFD_CTX"."""
        return bool(self.flags & flag_bits(VMA_FLAGS)[flag])

    # ---- the questions vma_rules.py asks (enrich.Vma answers them too) ----
    @property
    def start(self) -> int:
        return self.vm_start

    @property
    def end(self) -> int:
        return self.vm_end

    @cached_property
    def vm_flag_names(self) -> frozenset[str]:
        """smaps mnemonics of vm_flags (rd wr sh um lo ht ...)."""
        return vmaflags.names(self.vm_flags)

    @property
    def shared(self) -> bool:
        return "sh" in self.vm_flag_names

    @property
    def anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops (a MAP_SHARED|MAP_ANONYMOUS VMA is shmem)."""
        return not self.has("VM_OPS")

    @property
    def registered(self) -> bool:
        """Registered with some userfaultfd (vm_userfaultfd_ctx.ctx set)."""
        return self.has("UFFD_CTX")

    @property
    def registered_elsewhere(self) -> bool | None:
        """Registered, but with another userfaultfd than the moving fd's;
        None when the moving fd's context could not be read."""
        if not self.registered or not self.has("UFFD_CTX_KNOWN"):
            return None
        return not self.has("THIS_UFFD")

    def to_json(self) -> dict:
        """As a trace records it: codes by name, vm_flags raw and decoded."""
        return {"addr": self.addr, "where": self.where_name.lower(),
                "vm_start": self.vm_start, "vm_end": self.vm_end, "vm_flags": self.vm_flags,
                "vm_flag_names": sorted(self.vm_flag_names) if self.found else [],
                "flags": sorted(n.lower() for n, bit in flag_bits(VMA_FLAGS).items() if self.flags & bit),
                "depth": self.depth}

    def describe(self, name: str) -> str:
        """One line for a diagnosis's notes."""
        if not self.found:
            return f"{name} VMA of {self.addr:#x} at exit: {self.where_name.lower()}"
        set_ = [n.lower() for n in ("UFFD_CTX", "THIS_UFFD", "ANON_VMA", "FILE", "VM_OPS")
                if self.has(n)]
        return (f"{name} VMA at exit: {self.vm_start:#x}-{self.vm_end:#x} "
                f"[{' '.join(sorted(self.vm_flag_names))}] set: {' '.join(set_) or '-'}")
