"""Reading a process's memory layout from /proc for `check` and its
census, with one-line errors (UserError) for what a user gets wrong or
cannot read: no such process, it exited, another user's process."""
from __future__ import annotations

import os

from .enrich import Vma, iter_vmas
from .errors import UserError
from .pagestate import PagemapReader, ProcessGone
from .procpins import comm_of


def require_process(pid: int) -> str:
    """The comm of process `pid` (UserError: no such process)."""
    if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
        raise UserError(f"no process with pid {pid}")
    return comm_of(pid)


def open_reader(pid: int) -> PagemapReader:
    try:
        return PagemapReader(pid)
    except ProcessGone:
        raise UserError(f"process {pid} exited") from None
    except PermissionError:
        raise UserError(f"no permission to read /proc/{pid}/pagemap (another user's "
                        "process: run as root or as its owner)") from None


def read_vmas(pid: int, stats: dict | None = None) -> list[Vma]:
    try:
        return list(iter_vmas(pid, vm_flags=True, stats=stats))
    except ProcessGone:
        raise UserError(f"process {pid} exited") from None
    except PermissionError:
        raise UserError(f"no permission to read /proc/{pid}/smaps (another user's process: "
                        "run as root or as its owner)") from None


def unseen_by(reader: PagemapReader) -> list[str]:
    """What this reader could not see, one line each."""
    out = []
    if reader.pfns_visible is False:
        out.append("page frame numbers (zeroed for readers without CAP_SYS_ADMIN): KSM, "
                   "zero pages and huge pages cannot be told apart, sharers not named")
    if not reader.kpageflags_readable:
        out.append("/proc/kpageflags (root only): KSM, THP and zero-page flags")
    if not reader.kpagecount_readable:
        out.append("/proc/kpagecount (root only): how many times a shared page is mapped")
    return out
