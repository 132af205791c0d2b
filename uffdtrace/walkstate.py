"""struct ut_page_state, as Python: what bpf/ut_pagestate.h read in the kernel.

The layout and every code are read through cffi from bpf/uffdtrace_event.h
(UT_PSW_* where the walk stopped, UT_PSL_* its level, UT_PS_* flags): no
name or value is typed again here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .native import ffi, lib


@lru_cache(maxsize=None)
def record_fields() -> tuple[str, ...]:
    """The C struct's field names, in order (the header is their one home)."""
    return tuple(name for name, _ in ffi().typeof("struct ut_page_state").fields)


@lru_cache(maxsize=None)
def codes(prefix: str) -> dict[int, str]:
    """value -> name (without the prefix) of the header's #defines PREFIX*."""
    L = lib()
    return {getattr(L, n): n[len(prefix):] for n in dir(L) if n.startswith(prefix)}


def record_from_bytes(cls, ctype: str, raw: bytes):
    """A dataclass whose fields are the C struct's, from its bytes (a map
    value read outside the event stream: probes, calibration)."""
    F = ffi()
    size = F.sizeof(ctype)
    if len(raw) < size:
        raise ValueError(f"{ctype} is {size} bytes, got {len(raw)}")
    buf = F.from_buffer(bytearray(raw[:size]))   # owns the bytes while read
    c = F.cast(ctype + " *", buf)
    return cls(**{name: getattr(c, name) for name, _ in F.typeof(ctype).fields})


@lru_cache(maxsize=None)
def flag_bits(prefix: str = "UT_PS_") -> dict[str, int]:
    """The header's flag #defines PREFIX*: name (without the prefix) -> bit
    (UT_PS_: a page state's, UT_VS_: a VMA state's)."""
    return {name: bit for bit, name in codes(prefix).items()}


@dataclass(frozen=True)
class WalkedPage:
    """One address as the kernel's page tables and folio described it."""

    addr: int
    entry: int
    pfn: int
    flags: int
    refcount: int
    mapcount: int
    page_mapcount: int
    pincount: int
    where: int
    level: int
    order: int
    swp_type: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> "WalkedPage":
        return record_from_bytes(cls, "struct ut_page_state", raw)

    @property
    def where_name(self) -> str:
        return codes("UT_PSW_").get(self.where, f"where {self.where}")

    @property
    def level_name(self) -> str:
        return codes("UT_PSL_").get(self.level, f"level {self.level}")

    @property
    def flag_names(self) -> frozenset[str]:
        return frozenset(name for name, bit in flag_bits().items() if self.flags & bit)

    def has(self, flag: str) -> bool:
        """flag: a UT_PS_* name without the prefix, e.g. "ANON_EXCLUSIVE"."""
        return bool(self.flags & flag_bits()[flag])

    def to_json(self) -> dict:
        """As a trace records it: names for the codes; no raw entry (it holds
        a physical address); `pfn` is scrubbed into a per-trace id by the
        writer like every pfn."""
        return {"addr": self.addr, "where": self.where_name.lower(),
                "level": self.level_name.lower(), "flags": sorted(n.lower() for n in
                                                                  self.flag_names),
                "pfn": self.pfn, "refcount": self.refcount, "mapcount": self.mapcount,
                "page_mapcount": self.page_mapcount, "pincount": self.pincount,
                "order": self.order, "swp_type": self.swp_type}

    def __str__(self) -> str:
        flags = ",".join(sorted(self.flag_names)) or "-"
        return (f"{self.addr:#x}: {self.where_name} at {self.level_name} pfn={self.pfn:#x} "
                f"flags={flags} ref={self.refcount} map={self.mapcount} "
                f"pagemap={self.page_mapcount} pin={self.pincount} order={self.order} "
                f"swp_type={self.swp_type} entry={self.entry:#x}")
