"""How this process asks its own tracepoint programs about an address.

madvise(addr, 0, advice) with an advice no kernel knows: the kernel refuses
it (EINVAL) without touching anything, but the syscalls:sys_enter_madvise
tracepoint has already run, in this thread, with this mm, carrying addr.
Each program picks its own advice value and ignores every other call.
"""
from __future__ import annotations

import errno

from ..native import lib

# Invalid madvise advices (real ones are below 200): one per program kind.
CALIBRATE_ADVICE = 0x75740001
PROBE_ADVICE = 0x75740002


def ask(addr: int, advice: int) -> None:
    rc = lib().uffdw_madvise(addr, 0, advice)
    if rc != -errno.EINVAL:
        # an advice the kernel accepted would have done something
        raise RuntimeError(f"madvise(0x{addr:x}, 0, {advice:#x}) returned {rc}, not -EINVAL")
