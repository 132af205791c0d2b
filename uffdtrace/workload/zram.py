"""A zram block device of our own, always taken down again.

zram (compressed RAM) is a block device that needs no disk: the swap
scenarios swap to one, and the benchmarks read one with O_DIRECT, which
pins the reader's buffer (FOLL_PIN) the way an O_DIRECT database read does,
without a disk's latency hiding what the pin costs.  A fresh device is
hot-added, so a zram0 someone else uses is never touched, and its number is
written to a restore file (one per use) *before* it is put to use, so a run
killed with SIGKILL is undone by the next one of the same use.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..errors import UserError

ZRAM_CONTROL = Path("/sys/class/zram-control")


def run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise UserError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}")


def take_down(device: int) -> None:
    dev = f"/dev/zram{device}"
    with open("/proc/swaps") as f:
        if any(line.split()[0] == dev for line in f.readlines()[1:]):
            run("swapoff", dev)
    block = Path(f"/sys/block/zram{device}")
    if block.exists():
        (block / "reset").write_text("1")
        (ZRAM_CONTROL / "hot_remove").write_text(str(device))


def restore_stale(restore_file: Path) -> int | None:
    """Take down the device of a run that died before doing it."""
    try:
        device = json.loads(restore_file.read_text())["device"]
    except (OSError, ValueError, KeyError):
        return None
    take_down(device)
    restore_file.unlink(missing_ok=True)
    return device


class ZramDevice:
    """Context manager: /dev/zram<device> of `size` bytes inside, gone after.
    Subclasses put it to use in ready() (mkswap and swapon, ...)."""

    def __init__(self, size: int, restore_file: Path):
        self.size, self.restore_file = size, restore_file
        self.device: int | None = None
        self.loaded_module = False

    @property
    def path(self) -> str:
        return f"/dev/zram{self.device}"

    def ready(self) -> None:
        """Put the fresh device to use (nothing by default)."""

    def __enter__(self):
        if os.geteuid() != 0:
            raise UserError("a zram device needs root")
        if not (ZRAM_CONTROL / "hot_add").exists():
            # a modular zram (Debian's kernels); built in on the development host
            proc = subprocess.run(["modprobe", "zram", "num_devices=0"], capture_output=True,
                                  text=True)
            if proc.returncode or not (ZRAM_CONTROL / "hot_add").exists():
                raise UserError("this kernel has no zram (no /sys/class/zram-control, and "
                                f"modprobe zram: {proc.stderr.strip() or proc.returncode})")
            self.loaded_module = True
        restore_stale(self.restore_file)
        self.device = int((ZRAM_CONTROL / "hot_add").read_text())
        self.restore_file.write_text(json.dumps({"device": self.device}))
        try:
            Path(f"/sys/block/zram{self.device}/disksize").write_text(str(self.size))
            self.ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.device is not None:
            take_down(self.device)
            self.restore_file.unlink(missing_ok=True)
            self.device = None
        if self.loaded_module:
            subprocess.run(["modprobe", "-r", "zram"], capture_output=True)
            self.loaded_module = False
