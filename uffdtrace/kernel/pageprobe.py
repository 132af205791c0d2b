"""Ask the kernel, through bpf/ut_pagestate.h, what backs an address of this
process: the page-state reader run on demand, outside any move.

For tests (the reader against real pages), and for a self-check of the
calibration.  The program (bpf/ut_pageprobe.bpf.c) calls
ut_page_state_current() with the layout and calibration compiled in, as a
tracing program would.
"""
from __future__ import annotations

import ctypes
import os

from ..bpfprog import CompiledProgram
from ..walkstate import WalkedPage
from . import calibrate as calibrate_mod
from . import layout as layout_mod
from . import marker

PROGRAM = "ut_pageprobe.bpf.c"


def program_defines(layout: layout_mod.Layout, cal: calibrate_mod.Calibration) -> dict[str, int]:
    """Every UT_L_* constant ut_page_state_read() needs."""
    return {**layout.defines(), **cal.defines()}


class PageStateProbe(CompiledProgram):
    def __init__(self, layout: layout_mod.Layout, cal: calibrate_mod.Calibration,
                 extra_text: str = ""):
        """extra_text is appended to the program (tests add functions to
        put through the verifier as other program types)."""
        super().__init__(PROGRAM, {**program_defines(layout, cal),
                                   "UT_PROBE_ADVICE": marker.PROBE_ADVICE,
                                   "UT_PROBE_PID": os.getpid()}, extra_text)
        self._zero = ctypes.c_int(0)

    def read(self, addr: int) -> WalkedPage:
        calls = self.bpf[b"probe_calls"]
        before = calls[self._zero].value
        marker.ask(addr, marker.PROBE_ADVICE)
        if calls[self._zero].value != before + 1:
            raise RuntimeError("the page-state probe did not run on syscalls:sys_enter_madvise")
        return WalkedPage.from_bytes(bytes(self.bpf[b"probe_out"][self._zero]))
