"""The kernel's own page state at addresses of another process (or this
one), read in BPF by bpf/ut_peek.bpf.c: the facts /proc does not export --
PageAnonExclusive, folio_maybe_dma_pinned(), refcount, pincount -- for
`uffdtrace check`.

Each batch of UT_PEEK_BATCH addresses is one armed request and one read of
/proc/PID/mem at address 0: that takes the process's mmap_lock in this
thread (the tracepoint the program runs on) and fails without touching a
page.  Needs root (BPF; /proc/PID/mem of another user's process).
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading

from ..bpfprog import CompiledProgram
from ..native import lib
from ..walkstate import WalkedPage
from . import calibrate as calibrate_mod
from . import layout as layout_mod
from .pageprobe import program_defines

PROGRAM = "ut_peek.bpf.c"


class PageViewError(Exception):
    """The kernel view cannot be had here (the message says why)."""


class KernelPageView(CompiledProgram):
    def __init__(self, layout: layout_mod.Layout, cal: calibrate_mod.Calibration):
        super().__init__(PROGRAM, program_defines(layout, cal))
        self._zero = ctypes.c_int(0)
        self._lock = threading.Lock()

    def read(self, pid: int, addrs: list[int]) -> list[WalkedPage]:
        """The page state at each address of process `pid`, in order."""
        batch = lib().UT_PEEK_BATCH
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        except OSError as exc:
            raise PageViewError(f"cannot open /proc/{pid}/mem: {exc.strerror}") from None
        try:
            with self._lock:
                out: list[WalkedPage] = []
                for i in range(0, len(addrs), batch):
                    out += self._read_batch(fd, pid, addrs[i:i + batch])
                return out
        finally:
            os.close(fd)

    def _read_batch(self, fd: int, pid: int, addrs: list[int]) -> list[WalkedPage]:
        table = self.bpf[b"peek_req"]
        req = table[self._zero]
        walks = req.walks
        req.tid, req.self, req.n, req.armed = threading.get_native_id(), \
            int(pid == os.getpid()), len(addrs), 1
        for i, a in enumerate(addrs):
            req.addrs[i] = a
        table[self._zero] = req
        try:
            os.pread(fd, 1, 0)      # nothing is mapped at 0: EIO, after the lock
        except OSError:
            pass
        if table[self._zero].walks != walks + 1:
            raise PageViewError(f"the mmap_lock of pid {pid} was not seen taken (did it exit?)")
        results = self.bpf[b"peek_out"]
        return [WalkedPage.from_bytes(bytes(results[ctypes.c_int(i)]))
                for i in range(len(addrs))]


@functools.cache
def shared() -> KernelPageView:
    """One view per process (bcc compiles it in a few seconds); PageViewError
    says why there is none."""
    if os.geteuid() != 0:
        raise PageViewError("the kernel view needs root (BPF)")
    try:
        lay = layout_mod.running()
        cal = calibrate_mod.calibration_for_this_boot(lay)
    except (layout_mod.LayoutError, calibrate_mod.CalibrationError, OSError) as exc:
        raise PageViewError(f"page-table walk unavailable: {exc}") from None
    try:
        return KernelPageView(lay, cal)
    except Exception as exc:   # noqa: BLE001 - bcc raises bare Exceptions
        raise PageViewError(f"the BPF program did not load: {exc}") from None
