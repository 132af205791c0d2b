"""What userspace can learn about a page: /proc/PID/pagemap + /proc/kpageflags.

Used by the workload (to prove a scenario's setup, e.g. that ksmd really
merged the pages) and by the collector to enrich failures in the tracepoint
tier.  Everything read here is *inferred* evidence: it is the page's state
when we looked, not necessarily when the kernel made its decision.
"""
from __future__ import annotations

import os
from array import array
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


PM_UFFD_WP = 1 << 57
PM_SOFT_DIRTY = 1 << 55
# Windows of /proc/kpageflags read in one pread: PFNs closer than this many
# entries share a read (a THP's 512 consecutive PFNs are one read).
KPAGE_GAP = 64


class PagemapReader:
    """/proc/PID/pagemap, /proc/kpageflags and /proc/kpagecount, open once and
    read in batches: pagemap by chunks of consecutive pages, the per-PFN
    files by windows of nearby PFNs.  Without CAP_SYS_ADMIN the PFNs read 0
    and the per-PFN files cannot be opened: `pfns_visible` and
    `kpageflags_readable` say so."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(pid) from None
        self.kflags = self._open("/proc/kpageflags")
        self.kcount = self._open("/proc/kpagecount")
        self.pfns_visible: bool | None = None   # unknown until a present page is read

    @staticmethod
    def _open(path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return -1

    @property
    def kpageflags_readable(self) -> bool:
        return self.kflags >= 0

    @property
    def kpagecount_readable(self) -> bool:
        return self.kcount >= 0

    def entries(self, addr: int, npages: int) -> array:
        """The pagemap words of `npages` pages from page-aligned `addr`."""
        out = array("Q")
        try:
            raw = os.pread(self.pagemap, npages * 8, addr // PAGE_SIZE * 8)
        except ProcessLookupError:
            raise ProcessGone(self.pid) from None
        if len(raw) != npages * 8:
            raise ProcessGone(self.pid)
        out.frombytes(raw)
        if self.pfns_visible is None:
            for word in out:   # a present page's PFN or a swap entry's type/offset
                if word & (PM_PRESENT | PM_SWAP):
                    self.pfns_visible = bool(word & PM_PFN_MASK)
                    break
        return out

    def _per_pfn(self, fd: int, pfns) -> dict[int, int]:
        """pfn -> the 64-bit word of a per-PFN file, for each of `pfns`."""
        found: dict[int, int] = {}
        if fd < 0:
            return found
        wanted = sorted(set(pfns))
        i = 0
        while i < len(wanted):
            lo = hi = wanted[i]
            j = i + 1
            while j < len(wanted) and wanted[j] - hi <= KPAGE_GAP:
                hi = wanted[j]
                j += 1
            raw = os.pread(fd, (hi - lo + 1) * 8, lo * 8)
            words = array("Q")
            words.frombytes(raw[:len(raw) // 8 * 8])
            for pfn in wanted[i:j]:
                if pfn - lo < len(words):
                    found[pfn] = words[pfn - lo]
            i = j
        return found

    def flags(self, pfns) -> dict[int, int]:
        """pfn -> raw /proc/kpageflags word (empty when unreadable)."""
        return self._per_pfn(self.kflags, pfns)

    def mapcounts(self, pfns) -> dict[int, int]:
        """pfn -> /proc/kpagecount (how many times the page is mapped)."""
        return self._per_pfn(self.kcount, pfns)

    def close(self):
        for fd in (self.pagemap, self.kflags, self.kcount):
            if fd >= 0:
                os.close(fd)
        self.pagemap = self.kflags = self.kcount = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_flags(word: int) -> frozenset[str]:
    """The KPAGEFLAG_NAMES set in a /proc/kpageflags word."""
    return _decode_flags(word)


def read_page_states(pid: int, addrs: list[int]) -> list[PageState]:
    """Page state of each address in process `pid` (page-aligned down)."""
    with PagemapReader(pid) as reader:
        try:
            words = [reader.entries(a - a % PAGE_SIZE, 1)[0] for a in addrs]
            present_pfns = [w & PM_PFN_MASK for w in words if w & PM_PRESENT]
            kflags = reader.flags(p for p in present_pfns if p)
        except ProcessLookupError:
            raise ProcessGone(pid) from None
        states = []
        for addr, entry in zip(addrs, words):
            present = bool(entry & PM_PRESENT)
            pfn = entry & PM_PFN_MASK if present else None
            if pfn == 0:
                pfn = None  # hidden from unprivileged readers
            flags = None
            if pfn is not None and pfn in kflags:
                flags = _decode_flags(kflags[pfn])
            states.append(PageState(
                addr=addr - addr % PAGE_SIZE, present=present, swapped=bool(entry & PM_SWAP),
                exclusive=bool(entry & PM_EXCLUSIVE), pfn=pfn, flags=flags,
            ))
        return states
