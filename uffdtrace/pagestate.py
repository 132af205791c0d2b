"""What userspace can learn about a page: /proc/PID/pagemap + /proc/kpageflags.

Used by the workload (to prove a scenario's setup, e.g. that ksmd really
merged the pages) and by the collector to enrich failures in the tracepoint
tier.  Everything read here is *inferred* evidence: it is the page's state
when we looked, not necessarily when the kernel made its decision.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache

from .native import PAGE_SIZE, lib

# Documentation/admin-guide/mm/pagemap.rst
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE_SHARED = 1 << 61
PM_EXCLUSIVE = 1 << 56
PM_PFN_MASK = (1 << 55) - 1

# The /proc/kpageflags bits a move decision depends on: KPF_<NAME> in
# include/uapi/linux/kernel-page-flags.h, whose values come through cffi.
KPAGEFLAG_NAMES = ("locked", "dirty", "lru", "writeback", "mmap", "anon", "swapcache",
                   "swapbacked", "compound_head", "compound_tail", "huge", "hwpoison",
                   "nopage", "ksm", "thp", "zero_page")


@lru_cache(maxsize=None)
def kpageflags() -> dict[str, int]:
    """name -> bit number of each KPAGEFLAG_NAMES flag."""
    return {name: getattr(lib(), f"KPF_{name.upper()}") for name in KPAGEFLAG_NAMES}


class ProcessGone(Exception):
    """The process exited before its pages could be read."""


@dataclass(frozen=True)
class PageState:
    addr: int
    present: bool
    swapped: bool
    exclusive: bool        # "page exclusively mapped" (pagemap bit 56)
    pfn: int | None        # None when the reader may not see PFNs (no CAP_SYS_ADMIN)
    flags: frozenset[str] | None  # kpageflags names; None if unreadable

    def has(self, flag: str) -> bool | None:
        """True/False for a kpageflags bit, None when it could not be read."""
        return None if self.flags is None else flag in self.flags

    def to_json(self) -> dict:
        return {
            "present": self.present, "swapped": self.swapped,
            "exclusive": self.exclusive,
            "flags": sorted(self.flags) if self.flags is not None else None,
        }


def _decode_flags(word: int) -> frozenset[str]:
    return frozenset(name for name, bit in kpageflags().items() if word >> bit & 1)


def read_page_states(pid: int, addrs: list[int]) -> list[PageState]:
    """Page state of each address in process `pid` (page-aligned down)."""
    try:
        pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    try:
        kflags = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        kflags = -1
    try:
        states = []
        for addr in addrs:
            page = addr - addr % PAGE_SIZE
            raw = os.pread(pagemap, 8, page // PAGE_SIZE * 8)
            if len(raw) != 8:
                raise ProcessGone(pid)
            (entry,) = struct.unpack("<Q", raw)
            present = bool(entry & PM_PRESENT)
            pfn = entry & PM_PFN_MASK if present else None
            if pfn == 0:
                pfn = None  # hidden from unprivileged readers
            flags = None
            if pfn is not None and kflags >= 0:
                fraw = os.pread(kflags, 8, pfn * 8)
                if len(fraw) == 8:
                    flags = _decode_flags(struct.unpack("<Q", fraw)[0])
            states.append(PageState(
                addr=page, present=present, swapped=bool(entry & PM_SWAP),
                exclusive=bool(entry & PM_EXCLUSIVE), pfn=pfn, flags=flags,
            ))
        return states
    except ProcessLookupError:
        raise ProcessGone(pid) from None
    finally:
        os.close(pagemap)
        if kflags >= 0:
            os.close(kflags)
