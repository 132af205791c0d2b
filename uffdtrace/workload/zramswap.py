"""A small zram swap device for swap scenarios, always taken down again.

Swapped-out anonymous pages leave swap entries in the page tables, which
UFFDIO_MOVE handles on its own path (move_swap_pte: only an exclusive swap
entry moves).  Making them needs a swap device; zram (compressed RAM) needs
no disk.  The device is hot-added and taken down by zram.ZramDevice (a
restore file undoes a run killed with SIGKILL, as ksm.py does).
"""
from __future__ import annotations

from pathlib import Path

from .zram import ZramDevice, restore_stale as _restore_stale, run

RESTORE_FILE = Path("/run/uffdtrace-zram-swap.json")
DEFAULT_SIZE = 64 << 20
# Higher than any swap a machine normally has, so pages go here first.
PRIORITY = 32000


def restore_stale() -> int | None:
    """Take down the swap device of a run that died before doing it."""
    return _restore_stale(RESTORE_FILE)


class ZramSwap(ZramDevice):
    """Context manager: a swap device of `size` bytes inside, none after."""

    def __init__(self, size: int = DEFAULT_SIZE):
        super().__init__(size, RESTORE_FILE)

    def ready(self) -> None:
        run("mkswap", self.path)
        run("swapon", "-p", str(PRIORITY), self.path)
