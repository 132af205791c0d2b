"""A zram block device of our own, always taken down again.

zram (compressed RAM) is a block device that needs no disk: the swap
scenarios swap to one, and the benchmarks read one with O_DIRECT, which
pins the reader's buffer (FOLL_PIN) the way an O_DIRECT database read does,
without a disk's latency hiding what the pin costs.  A fresh device is
hot-added, so a zram0 someone else uses is never touched, and its number is
written to a restore file (one per use) *before* it is put to use.  A run
killed with SIGKILL is undone by a watcher process (`python -m
uffdtrace.workload.zram --watch FILE`) that waits for the end of a pipe from
the run and takes the device down when the pipe closes with the file still
there; should the watcher die too, the next run of the same use does it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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
        self._watcher = _start_watcher(self.restore_file)
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
        _stop_watcher(getattr(self, "_watcher", None))
        self._watcher = None
        if self.loaded_module:
            subprocess.run(["modprobe", "-r", "zram"], capture_output=True)
            self.loaded_module = False


def _start_watcher(restore_file: Path) -> subprocess.Popen | None:
    """A process that takes the device down if this one dies first (its
    stdin, a pipe from us, closes).  Its own session: a signal to our
    process group does not reach it.  None if it cannot be started (then
    the next run restores)."""
    try:
        return subprocess.Popen([sys.executable, "-m", "uffdtrace.workload.zram", "--watch",
                                 str(restore_file)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True,
                                # this very package, wherever it is imported from
                                cwd=Path(__file__).resolve().parents[2])
    except OSError:
        return None


def _stop_watcher(watcher: subprocess.Popen | None) -> None:
    if watcher is None:
        return
    watcher.stdin.close()        # the restore file is gone: it has nothing to do
    try:
        watcher.wait(timeout=10)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait()


def _watch(restore_file: Path) -> None:
    """Block until stdin closes (the run ended, however), then undo what a
    run that died left behind."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        restore_stale(restore_file)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--watch":
        _watch(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m uffdtrace.workload.zram --watch RESTORE_FILE")
