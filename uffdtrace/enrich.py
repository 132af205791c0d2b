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


# smaps fields (kB) kept by iter_vmas(stats=True), e.g. for `uffdtrace check --census`
SMAPS_STATS = ("Rss", "Anonymous", "Swap", "KSM", "AnonHugePages", "Locked")


def _vma_header(line: str) -> tuple[int, int, str, str] | None:
    if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
        parts = line.split(None, 5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        return lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""
    return None


def iter_vmas(pid: int, vm_flags: bool = True, stats: dict | None = None):
    """Every VMA of `pid`, in address order.  With vm_flags from
    /proc/PID/smaps (VmFlags), else from /proc/PID/maps (flags None; several
    times cheaper: smaps makes the kernel walk the page tables of every VMA).
    stats: a dict that receives, per VMA start, its SMAPS_STATS in bytes
    (only with vm_flags)."""
    try:
        f = open(f"/proc/{pid}/{'smaps' if vm_flags else 'maps'}")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    with f:
        header = None
        numbers: dict[str, int] = {}
        try:
            for line in f:
                parsed = _vma_header(line)
                if parsed is not None:
                    header = parsed
                    numbers = {}
                    if not vm_flags:
                        yield Vma(*header, None)
                elif line.startswith("VmFlags:") and header:
                    if stats is not None:
                        stats[header[0]] = numbers
                    yield Vma(*header, frozenset(line.split()[1:]))
                elif stats is not None and header:
                    key, _, rest = line.partition(":")
                    if key in SMAPS_STATS:
                        numbers[key] = int(rest.split()[0]) * 1024
        except ProcessLookupError:
            raise ProcessGone(pid) from None


def read_vmas(pid: int, addrs: list[int], vm_flags: bool = True) -> dict[int, Vma | None]:
    """The VMA containing each address.  With vm_flags, from /proc/PID/smaps;
    without, from /proc/PID/maps (flags None): see iter_vmas."""
    found: dict[int, Vma | None] = dict.fromkeys(addrs)
    for vma in iter_vmas(pid, vm_flags):
        for a in addrs:
            if vma.start <= a < vma.end:
                found[a] = vma
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
