"""uffdtrace: eBPF tracing and diagnostics for Linux UFFDIO_MOVE."""
from __future__ import annotations

__version__ = "0.1.0"


def check(pid: int, src: int, length: int, dst: int | None = None, mode: int = 0,
          caller: int | None = None, kernel_view: bool | None = None):
    """What UFFDIO_MOVE(dst, src, length, mode) would meet now in process
    `pid`, page by page, and its predicted result: a movecheck.CheckResult
    (.prediction.errno / .move, .runs, .to_json()).  kernel_view: read
    anon-exclusive and pins in the kernel (BPF, root); None: where allowed.
    See uffdtrace.movecheck."""
    from .movecheck import check as _check
    return _check(pid, src, length, dst=dst, mode=mode, caller=caller,
                  kernel_view=kernel_view)


def census(pid: int):
    """Bytes per movability verdict of every private anonymous VMA of `pid`
    (a census.CensusResult).  See uffdtrace.census."""
    from .census import census as _census
    return _census(pid)
