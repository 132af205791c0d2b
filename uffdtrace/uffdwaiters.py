"""Unread non-cooperative userfaultfd events, as user space can see them in
/proc: a thread that raised one (fork, mremap, madvise(MADV_DONTNEED/
REMOVE), munmap of a registered range) sleeps in
userfaultfd_event_wait_completion() until the monitor reads it, and
meanwhile the uffd's mmap_changing is up: every UFFDIO_MOVE on that uffd
fails with EAGAIN and moves nothing.

/proc/PID/task/TID/wchan names the function a thread sleeps in (readable by
the process's owner); /proc/PID/task/TID/stack (root only) shows the caller,
which names the event.  Which of the process's uffds the event is queued on
is not exported: a waiter is evidence *inferred* for a move on any of them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

WAIT_FUNCTION = "userfaultfd_event_wait_completion"
# the function that queued the event and waits (fs/userfaultfd.c) -> its event
RAISERS = {"userfaultfd_remove": "remove", "dup_userfaultfd_complete": "fork",
           "mremap_userfaultfd_complete": "remap", "userfaultfd_unmap_complete": "unmap"}


@dataclass(frozen=True)
class EventWaiter:
    pid: int
    tid: int
    comm: str           # untrusted: escape before markup
    event: str | None   # fork, remap, remove, unmap; None: the stack was not readable

    def describe(self) -> str:
        what = f"UFFD_EVENT_{self.event.upper()}" if self.event else "a uffd event"
        return (f"thread {self.tid} ({self.comm}) of pid {self.pid} raised {what} and sleeps "
                f"in {WAIT_FUNCTION}() until the monitor reads it")


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _event_from_stack(stack: str | None) -> str | None:
    """The event of a waiter's kernel stack: the frame after the wait."""
    if not stack:
        return None
    frames = [line.split("] ", 1)[-1].split("+", 1)[0].strip() for line in stack.splitlines()]
    for i, fn in enumerate(frames):
        if fn == WAIT_FUNCTION and i + 1 < len(frames):
            return RAISERS.get(frames[i + 1])
    return None


def event_waiters(pid: int) -> tuple[list[EventWaiter], str | None]:
    """The threads of `pid` asleep until their uffd event is read, and what
    could not be read (None: everything)."""
    task_dir = f"/proc/{pid}/task"
    try:
        tids = sorted(int(t) for t in os.listdir(task_dir) if t.isdigit())
    except OSError as exc:
        return [], f"cannot list {task_dir}: {exc.strerror}"
    waiters, unreadable, no_stack = [], 0, 0
    for tid in tids:
        wchan = _read(f"{task_dir}/{tid}/wchan")
        if wchan is None:
            unreadable += 1
            continue
        if wchan.strip() != WAIT_FUNCTION:
            continue
        event = _event_from_stack(_read(f"{task_dir}/{tid}/stack"))
        no_stack += event is None
        comm = (_read(f"{task_dir}/{tid}/comm") or "?").strip()
        waiters.append(EventWaiter(pid, tid, comm, event))
    why = []
    if unreadable:
        why.append(f"wchan of {unreadable} threads unreadable")
    if no_stack:
        why.append("which event a waiter raised needs /proc/PID/task/TID/stack (root)")
    return waiters, "; ".join(why) or None
