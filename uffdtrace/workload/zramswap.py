"""A small zram swap device for swap scenarios, always taken down again.

Swapped-out anonymous pages leave swap entries in the page tables, which
UFFDIO_MOVE handles on its own path (move_swap_pte: only an exclusive swap
entry moves).  Making them needs a swap device; zram (compressed RAM) needs
no disk.  A fresh device is hot-added, so a zram0 someone else uses is never
touched, and its number is written to a restore file *before* swapon, so a
run killed with SIGKILL is undone by the next one (as ksm.py does).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..errors import UserError

ZRAM_CONTROL = Path("/sys/class/zram-control")
RESTORE_FILE = Path("/run/uffdtrace-zram-swap.json")
DEFAULT_SIZE = 64 << 20
# Higher than any swap a machine normally has, so pages go here first.
PRIORITY = 32000


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}")


def _take_down(device: int) -> None:
    dev = f"/dev/zram{device}"
    with open("/proc/swaps") as f:
        if any(line.split()[0] == dev for line in f.readlines()[1:]):
            _run("swapoff", dev)
    block = Path(f"/sys/block/zram{device}")
    if block.exists():
        (block / "reset").write_text("1")
        (ZRAM_CONTROL / "hot_remove").write_text(str(device))


def restore_stale() -> int | None:
    """Take down the device of a run that died before doing it."""
    try:
        device = json.loads(RESTORE_FILE.read_text())["device"]
    except (OSError, ValueError, KeyError):
        return None
    _take_down(device)
    RESTORE_FILE.unlink(missing_ok=True)
    return device


class ZramSwap:
    """Context manager: a swap device of `size` bytes inside, none after."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self.size = size
        self.device: int | None = None
        self.loaded_module = False

    def __enter__(self):
        if os.geteuid() != 0:
            raise UserError("a zram swap device needs root")
        if not (ZRAM_CONTROL / "hot_add").exists():
            # a modular zram (Debian's kernels); built in on the development host
            proc = subprocess.run(["modprobe", "zram", "num_devices=0"], capture_output=True,
                                  text=True)
            if proc.returncode or not (ZRAM_CONTROL / "hot_add").exists():
                raise UserError("this kernel has no zram (no /sys/class/zram-control, and "
                                f"modprobe zram: {proc.stderr.strip() or proc.returncode})")
            self.loaded_module = True
        restore_stale()
        self.device = int((ZRAM_CONTROL / "hot_add").read_text())
        RESTORE_FILE.write_text(json.dumps({"device": self.device}))
        try:
            Path(f"/sys/block/zram{self.device}/disksize").write_text(str(self.size))
            _run("mkswap", f"/dev/zram{self.device}")
            _run("swapon", "-p", str(PRIORITY), f"/dev/zram{self.device}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.device is not None:
            _take_down(self.device)
            RESTORE_FILE.unlink(missing_ok=True)
            self.device = None
        if self.loaded_module:
            subprocess.run(["modprobe", "-r", "zram"], capture_output=True)
            self.loaded_module = False
