"""Setting up the state-at-exit reader for a tracer: the running kernel's
layout (from its BTF) compiled into the program, and the page-table walk's
bases (calibrated once per boot) written into its `walk_cfg` map after it
loads -- they are KASLR secrets, so they never appear in the program text
(`--ebpf`) or in a trace.

When a failed move returns, the program then reads the kernel's own page
state at the address where the move stopped and at its destination
(bpf/ut_pagestate.h, docs/kernel-state.md), and for EINVAL and ENOENT the
VMAs there (bpf/ut_vmastate.h, which needs the layout only).  When the layout or the
calibration cannot be had, the reader is off and says why; diagnosis then
falls back to reading /proc after the call (evidence `inferred`).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from .kernel import calibrate, layout


@dataclass(frozen=True)
class StateReader:
    """The reader's configuration, or why there is none (`reason`)."""

    layout: layout.Layout | None = None
    calibration: calibrate.Calibration | None = None
    reason: str = ""
    notes: tuple[str, ...] = field(default=())
    # the VMA reader (bpf/ut_vmastate.h) needs the layout only, no
    # calibration: it is on unless turned off or this kernel lacks a fact
    vmas_wanted: bool = True
    # the fault-waiter reader (who a move or UFFDIO_WAKE wakes): on unless
    # turned off (bench/hookcosts.py measures the move's entry check so)
    waiters_wanted: bool = True

    @property
    def usable(self) -> bool:
        return self.calibration is not None

    def _lacking(self, facts) -> str:
        """Why a reader needing `facts` of the layout is off ("" if none is missing)."""
        lacking = self.layout.lacks(facts)
        return "this kernel's BTF lacks " + ", ".join(layout.PREFIX + n for n in lacking) \
            if lacking else ""

    @property
    def vma_reason(self) -> str:
        """Why the VMA reader is off ("" when it is on)."""
        if not self.vmas_wanted:
            return self.reason or "turned off"
        if self.layout is None:
            return self.reason or "kernel layout unknown"
        return self._lacking(layout.VMA_READER_FACTS)

    @property
    def vmas_usable(self) -> bool:
        return not self.vma_reason

    @property
    def uffd_reason(self) -> str:
        """Why the uffd reader is off ("" when it is on): it finds the
        moving fd's context the VMA reader's way (ut_vs_uffd_ctx)."""
        if not self.vmas_usable:
            return self.vma_reason
        return self._lacking(layout.UFFD_READER_FACTS)

    @property
    def waiters_reason(self) -> str:
        """Why the waiter reader is off ("" when it is on).  It reads the
        uffd's fault queues at a move's or UFFDIO_WAKE's entry: a feature of
        its own, on whenever the layout allows, whatever the readers at exit."""
        if not self.waiters_wanted:
            return "turned off"
        if self.layout is None:
            return self.reason or "kernel layout unknown"
        return self._lacking(layout.WAITER_READER_FACTS)

    def defines(self) -> dict[str, int]:
        """#defines for the tracer's program: the layout (struct offsets, no
        secrets; the kernel tier reads structures at them too) and whether
        the readers run."""
        layout_defines = self.layout.defines() if self.layout is not None else {}
        return {"UT_STATE_AT_EXIT": int(self.usable), "UT_VMAS_AT_EXIT": int(self.vmas_usable),
                "UT_UFFD_AT_EXIT": int(not self.uffd_reason),
                "UT_WAITERS": int(not self.waiters_reason), **layout_defines}

    def install(self, bpf) -> None:
        """Give the loaded program its walk bases (before any move is traced
        that matters: moves ending earlier carry no page state)."""
        if not self.usable:
            return
        table = bpf[b"walk_cfg"]
        cfg = table.Leaf()
        cal = self.calibration
        cfg.page_offset_base = cal.page_offset_base
        cfg.vmemmap_base = cal.vmemmap_base
        cfg.zero_pfn = cal.zero_pfn
        cfg.huge_zero_pfn = cal.huge_zero_pfn
        cfg.levels = cal.levels
        table[ctypes.c_int(0)] = cfg

    def describe(self) -> str:
        if not self.usable:
            return f"off: {self.reason}"
        return "on: " + "; ".join(self.calibration.describe()[:1])

    def describe_vmas(self) -> str:
        """The VMA reader, for doctor and the tier line."""
        if not self.vmas_usable:
            return f"off: {self.vma_reason}"
        ctx = "" if not self.layout.lacks(layout.UFFD_CTX_FACTS) else \
            " (the moving fd's userfaultfd context not readable: registration seen, not whose)"
        return "on: the VMAs of EINVAL/ENOENT failures, from mm->mm_mt (maple tree)" + ctx

    def describe_waiters(self) -> str:
        """The waiter reader, for doctor."""
        if self.waiters_reason:
            return f"off: {self.waiters_reason}"
        return ("on: the threads asleep in a uffd page fault that each UFFDIO_MOVE or "
                "UFFDIO_WAKE wakes, read at its entry")

    def describe_uffd(self) -> str:
        """The uffd reader, for doctor."""
        if self.uffd_reason:
            return f"off: {self.uffd_reason}"
        return ("on: mmap_changing and the unread events of the moving uffd, for EAGAIN "
                "failures that moved nothing")


def _layout() -> tuple[layout.Layout | None, str]:
    try:
        return layout.running(), ""
    except layout.LayoutError as exc:
        return None, f"kernel layout unknown: {exc}"


def prepare() -> StateReader:
    """The reader for this kernel, or one that says why it is off."""
    lay, why = _layout()
    if lay is None:
        return StateReader(reason=why)
    try:
        cal = calibrate.calibration_for_this_boot(lay)
    except (calibrate.CalibrationError, OSError) as exc:
        return StateReader(layout=lay, reason=f"page-table walk not calibrated: {exc}")
    except Exception as exc:   # noqa: BLE001 - bcc raises bare Exceptions on compile errors
        return StateReader(layout=lay, reason=f"calibration program failed: {exc}")
    return StateReader(lay, cal)


def off(reason: str) -> StateReader:
    """The reader turned off; the layout stays (the kernel tier needs it)."""
    return StateReader(layout=_layout()[0], reason=reason, vmas_wanted=False)
