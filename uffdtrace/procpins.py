"""Long-term pins user space can see in /proc: io_uring registered (fixed)
buffers, listed by the kernel in /proc/PID/fdinfo/<ring fd> ("UserBufs:"),
and the machine's outstanding FOLL_PIN count in /proc/vmstat.

io_uring pins every page of a registered buffer with FOLL_LONGTERM for as
long as it stays registered, so a buffer listed there is a pinned range
(evidence *observed*: the kernel's own table).  Other pins (O_DIRECT in
flight, VFIO, RDMA) leave no trace in /proc; only their machine-wide count.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

_BUF = re.compile(r"^\s*\d+:\s*(0x[0-9a-f]+)/(\d+)", re.I)


@dataclass(frozen=True)
class RegisteredBuffer:
    pid: int        # the process whose fd table holds the ring
    comm: str
    fd: int         # the ring's fd in that process
    addr: int
    len: int

    def covers(self, addr: int) -> bool:
        return self.addr <= addr < self.addr + self.len

    def describe(self) -> str:
        """One line (comm is untrusted: escape it before any markup)."""
        return (f"io_uring fixed buffer {self.addr:#x}+{self.len} of pid {self.pid} "
                f"({self.comm}), ring fd {self.fd}")

    def to_json(self) -> dict:
        return {"pid": self.pid, "comm": self.comm, "fd": self.fd, "addr": self.addr,
                "len": self.len}


def comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return "?"


def io_uring_buffers(pid: int) -> tuple[list[RegisteredBuffer], str | None]:
    """The registered buffers of every io_uring ring in pid's fd table, and
    why the table could not be read (None when it could)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError as exc:
        return [], f"cannot list {fd_dir}: {exc.strerror}"
    comm = comm_of(pid)
    found = []
    for name in fds:
        try:
            if os.readlink(f"{fd_dir}/{name}") != "anon_inode:[io_uring]":
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                text = f.read()
        except OSError:
            continue   # closed meanwhile
        in_bufs = False
        for line in text.splitlines():
            if line.startswith("UserBufs:"):
                in_bufs = True
                continue
            if in_bufs:
                m = _BUF.match(line)
                if not m:
                    in_bufs = False
                    continue
                found.append(RegisteredBuffer(pid, comm, int(name), int(m.group(1), 16),
                                              int(m.group(2))))
    return found, None


def outstanding_pins() -> int | None:
    """Pages pinned with FOLL_PIN on the whole machine right now (vmstat
    nr_foll_pin_acquired - nr_foll_pin_released), None when unreadable."""
    counts = {}
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key in ("nr_foll_pin_acquired", "nr_foll_pin_released"):
                    counts[key] = int(value)
    except OSError:
        return None
    if len(counts) != 2:
        return None
    return counts["nr_foll_pin_acquired"] - counts["nr_foll_pin_released"]
