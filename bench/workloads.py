"""What runs under each condition: native loops, no Python per operation.

Move loops ping-pong pages between two registered areas (uffdw_move_loop):
every call moves populated pages; each loop resumes the ping-pong where the
previous one stopped, so no call fails unless a failure is planned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from uffdtrace.native import PAGE_SIZE, Mapping, Uffd, bystander_loop, hpage_size, lib
from uffdtrace.pagestate import read_page_states
from uffdtrace.workload.zram import ZramDevice


@dataclass
class Sample:
    ops: int
    wall_ns: int
    cpu_ns: int          # CPU time of the measuring thread
    failed: int = 0
    errors: dict[str, int] | None = None   # failed moves by errno
    first_error_call: int | None = None    # the first one's index in the loop

    @property
    def rate(self) -> float:
        """Operations per wall-clock second."""
        return self.ops / self.wall_ns * 1e9

    @property
    def cpu_rate(self) -> float:
        """Operations per CPU-second of the measuring thread: blind to the
        time other processes took the CPU, so steadier on a shared machine."""
        return self.ops / self.cpu_ns * 1e9


class MoveWorkload:
    """Ping-pong moves of `chunk` bytes between two areas of `slots` chunks."""

    makes_moves = True

    def __init__(self, key: str, label: str, chunk: int, slots: int, thp: bool = False):
        self.key, self.label, self.chunk, self.slots, self.thp = key, label, chunk, slots, thp
        self.count = 2 * slots
        self._step = 0
        self._uffd = self._a = self._b = None

    def setup(self):
        align = hpage_size() if self.thp else PAGE_SIZE
        self._uffd = Uffd()
        self._a = Mapping(self.chunk * self.slots, align=align)
        self._b = Mapping(self.chunk * self.slots, align=align)
        for m in (self._a, self._b):
            # small-page workloads stay small: khugepaged collapsing a
            # populated range into a THP would make a ping-pong move fail
            m.madvise(lib().MADV_HUGEPAGE if self.thp else lib().MADV_NOHUGEPAGE)
            # bystanders run in forked children of this process: a fork
            # leaves every page it shared not anon-exclusive, even after the
            # child exits, and every later move fails EBUSY (the 7.3 guest's
            # kernel-tier run failed all its moves so, under every condition)
            m.madvise(lib().MADV_DONTFORK)
        self._a.fill()
        self._uffd.register(self._a)
        self._uffd.register(self._b)

    def run(self, count: int | None = None, rate: int = 0, fail_every: int = 0) -> Sample:
        s = self._uffd.move_loop(self._a, self._b, self.chunk, count or self.count,
                                 rate=rate, fail_every=fail_every, first_step=self._step)
        self._step = s.next_step     # the next loop resumes the ping-pong here
        return Sample(s.calls, s.ns, s.cpu_ns, s.failed, s.errors, s.first_error_call)

    def calibrate(self, seconds: float):
        """Pick the count that takes about `seconds` untraced."""
        self.run(self.count)                         # warm up page tables
        sample = self.run(self.count * 4)
        self.count = max(self.count, int(sample.rate * seconds))

    def still_thp(self) -> bool | None:
        """Are the moved pages still PMD-mapped huge pages (None if not THP)?
        Each chunk is in a or in b, wherever the ping-pong left it."""
        if not self.thp:
            return None
        offsets = [i * self.chunk for i in range(self.slots)]
        a = read_page_states(os.getpid(), [self._a.addr + o for o in offsets])
        b = read_page_states(os.getpid(), [self._b.addr + o for o in offsets])
        return all(x.has("thp") or y.has("thp") for x, y in zip(a, b))

    def close(self):
        for obj in (self._a, self._b, self._uffd):
            if obj is not None:
                obj.close()


def move_workloads() -> list[MoveWorkload]:
    huge = hpage_size()
    return [
        MoveWorkload("move-4k", "4 KiB moves", PAGE_SIZE, slots=64),
        MoveWorkload("move-64p", "64-page moves (256 KiB)", 64 * PAGE_SIZE, slots=16),
        MoveWorkload("move-thp", f"{huge >> 20} MiB THP moves", huge, slots=4, thp=True),
    ]


class BystanderWorkload:
    """Work that moves no page at all, but crosses hooks a tracer may attach:
    a hook's cost is paid by every process that reaches it.  `note` says
    which kernel path one operation takes (enum uffdw_bystander_kind)."""

    makes_moves = False

    def __init__(self, key: str, label: str, kind: str, note: str, pages: int = 1,
                 source: "DirectReadSource | None" = None):
        self.key, self.label, self.kind, self.note = key, label, kind, note
        self.pages, self.source = pages, source
        self.count = 1000
        self._fd = -1

    def setup(self):
        """Raises UserError or OSError when the workload cannot run here."""
        if self.source is not None:
            self._fd = self.source.open()

    def run(self, count: int | None = None) -> Sample:
        """In a forked child: a bystander is another process, one that never
        used a userfaultfd (the bench process moves pages, and the kernel
        tier tracks the short-term pins of processes that did)."""
        n = count or self.count
        wall, cpu = bystander_loop(self.kind, n, pages=self.pages, fd=self._fd, in_child=True)
        return Sample(n, wall, cpu)

    def calibrate(self, seconds: float):
        self.run(self.count)
        sample = self.run(self.count * 20)
        self.count = max(1000, int(sample.rate * seconds))

    def still_thp(self) -> None:
        return None

    def close(self):
        if self.source is not None:
            self.source.close()
        self._fd = -1


class DirectReadSource:
    """Something to read with O_DIRECT: a zram device of our own.  Reading
    it pins the reader's buffer as any O_DIRECT read does (the block layer's
    bio_iov_iter_get_pages -> iov_iter_extract_pages -> pin_user_pages_fast,
    FOLL_PIN; unpinned when the bio completes), and it is RAM: a disk's
    latency would hide what the pin hooks cost.  (tmpfs and the QEMU
    guest's 9p root refuse O_DIRECT.)"""

    SIZE = 1 << 20
    RESTORE_FILE = Path("/run/uffdtrace-zram-bench.json")

    def __init__(self):
        self._device: ZramDevice | None = None
        self.fd = -1

    def open(self) -> int:
        self._device = ZramDevice(self.SIZE, self.RESTORE_FILE).__enter__()
        try:
            self.fd = os.open(self._device.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        return self.fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._device is not None:
            self._device.__exit__(None, None, None)
            self._device = None


FAULT_PAGES = 16
DIRECT_READ_PAGES = 4
MPROTECT_PAGES = 16


def bystander_workloads() -> list[BystanderWorkload]:
    return [
        BystanderWorkload("ioctl", "FIONREAD ioctl loop", "ioctl",
                          "sys_enter/exit_ioctl tracepoints fire for every ioctl of the machine"),
        BystanderWorkload("getppid", "getppid loop (a syscall that is not an ioctl)", "getppid",
                          "any enabled syscall tracepoint puts every syscall on the slow path"),
        BystanderWorkload("fault", f"mmap + touch {FAULT_PAGES} pages + munmap", "fault",
                          f"{FAULT_PAGES} anonymous faults (lock_vma_under_rcu, PTE walk, "
                          "new folio, __anon_vma_prepare), then zap + TLB flush",
                          pages=FAULT_PAGES),
        BystanderWorkload("fork", "fork + child _exit + waitpid", "fork",
                          "copy_page_range of the bench process (PTEs, folio refs), "
                          "wrprotect + TLB flush, exit_mmap of the child"),
        BystanderWorkload("direct_read", f"O_DIRECT pread of {DIRECT_READ_PAGES} pages "
                          "(zram)", "direct_read",
                          "GUP: pin_user_pages_fast (FOLL_PIN) of the buffer, unpin at bio "
                          "completion", pages=DIRECT_READ_PAGES, source=DirectReadSource()),
        BystanderWorkload("mprotect", f"mprotect {MPROTECT_PAGES} pages RO / RW in turn",
                          "mprotect", "change_protection PTE walk + TLB flush per call",
                          pages=MPROTECT_PAGES),
    ]
