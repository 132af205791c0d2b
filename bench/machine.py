"""The machine a benchmark ran on, and how busy it was meanwhile."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else None


def describe() -> dict:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": _cpu_model(), "cpus": os.cpu_count(), "kernel": os.uname().release,
        "memory_gib": round(mem_kib / 2**20, 1), "python": platform.python_version(),
        "bpftrace": _tool_version(["bpftrace", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": os.getloadavg(),
    }


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]          # idle + iowait
    total = sum(fields[:8])               # guest time is already in user
    return total - idle, total


@dataclass
class BusyMeter:
    """Average number of busy CPUs between start() and stop(): ours and others'."""

    busy0: int = 0
    total0: int = 0

    def start(self):
        self.busy0, self.total0 = _cpu_jiffies()

    def stop(self) -> float:
        busy, total = _cpu_jiffies()
        if total == self.total0:
            return 0.0
        return (busy - self.busy0) / (total - self.total0) * (os.cpu_count() or 1)
