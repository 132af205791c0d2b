"""Tracepoint-tier enrichment: right after a move fails, read from /proc what
the kernel does not tell us (VMA flags, page state).  Evidence: *inferred*."""
from __future__ import annotations

from dataclasses import dataclass

from .pagestate import PageState, ProcessGone, read_page_states


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    perms: str                 # e.g. "rw-p"
    path: str                  # "" for anonymous memory
    flags: frozenset[str] | None   # smaps VmFlags: rd wr sh um uw lo ht pf io ...;
                                   # None: not read (from /proc/PID/maps)

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s" or (self.flags is not None and "sh" in self.flags)

    @property
    def anonymous(self) -> bool:
        return not self.path.startswith("/")

    # ---- the questions vma_rules.py asks (walkvma.WalkedVma answers them too) ----
    @property
    def vm_flag_names(self) -> frozenset[str]:
        return self.flags or frozenset()

    @property
    def registered(self) -> bool:
        """Registered with a userfaultfd in any mode (missing, wp, minor)."""
        return bool(self.vm_flag_names & {"um", "uw", "ui"})

    @property
    def registered_elsewhere(self) -> bool | None:
        return None    # smaps does not say with which userfaultfd

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "perms": self.perms, "path": self.path,
                "flags": sorted(self.flags) if self.flags is not None else None}


def read_vmas(pid: int, addrs: list[int], vm_flags: bool = True) -> dict[int, Vma | None]:
    """The VMA containing each address.  With vm_flags, from /proc/PID/smaps;
    without, from /proc/PID/maps (flags None), several times cheaper: smaps
    makes the kernel walk the page tables of every VMA for its statistics."""
    found: dict[int, Vma | None] = dict.fromkeys(addrs)
    try:
        f = open(f"/proc/{pid}/{'smaps' if vm_flags else 'maps'}")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None

    def place(header, flags):
        lo, hi, perms, path = header
        hits = [a for a in addrs if lo <= a < hi]
        if hits:
            vma = Vma(lo, hi, perms, path, flags)
            for a in hits:
                found[a] = vma

    with f:
        header = None
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                header = (lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else "")
                if not vm_flags:
                    place(header, None)
            elif line.startswith("VmFlags:") and header:
                place(header, frozenset(line.split()[1:]))
    return found


@dataclass(frozen=True)
class Enrichment:
    """Userspace view of a failed move at the address where it stopped."""

    src_addr: int
    dst_addr: int
    src_vma: Vma | None
    dst_vma: Vma | None
    src_page: PageState | None
    dst_page: PageState | None
    error: str | None = None   # why nothing could be read (process exited...)

    def to_json(self) -> dict:
        def j(x):
            return x.to_json() if x is not None else None
        return {"src_addr": self.src_addr, "dst_addr": self.dst_addr,
                "src_vma": j(self.src_vma), "dst_vma": j(self.dst_vma),
                "src_page": j(self.src_page), "dst_page": j(self.dst_page),
                "error": self.error}


def enrich(pid: int, src: int, dst: int, vm_flags: bool = True) -> Enrichment:
    """Read VMAs and page state at src/dst (the failing position).  VmFlags
    (costly: see read_vmas) only with vm_flags."""
    try:
        vmas = read_vmas(pid, [src, dst], vm_flags)
        src_page, dst_page = read_page_states(pid, [src, dst])
    except (ProcessGone, ProcessLookupError, FileNotFoundError):
        # The process may exit at any point between our reads.
        return Enrichment(src, dst, None, None, None, None,
                          error=f"process {pid} exited before its pages could be read")
    except OSError as exc:
        return Enrichment(src, dst, None, None, None, None,
                          error=f"cannot read /proc/{pid}: {exc.strerror}")
    return Enrichment(src, dst, vmas[src], vmas[dst], src_page, dst_page)
