"""struct ut_uffd_state, as Python: what the moving userfaultfd held when a
move returned EAGAIN having moved nothing (bpf/ut_uffdstate.h) -- its
mmap_changing counter and the non-cooperative events queued and unread,
each with the thread that raised it and sleeps until it is read.

Layout and codes (UT_USW_*) come through cffi from bpf/uffdtrace_event.h;
event names from the uapi header (UFFD_EVENT_*).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .culprits import UffdEventCulprit
from .native import ffi, lib
from .walkstate import codes

EVENT_PREFIX = "UFFD_EVENT_"


@lru_cache(maxsize=None)
def event_names() -> dict[int, str]:
    """uffd_msg.event -> fork, remap, remove, unmap, pagefault."""
    L = lib()
    return {getattr(L, n): n[len(EVENT_PREFIX):].lower() for n in dir(L)
            if n.startswith(EVENT_PREFIX)}


def event_name(value: int) -> str:
    return event_names().get(value, f"event {value:#x}")


@dataclass(frozen=True)
class UffdState:
    mmap_changing: int
    where: str          # UT_USW_* name, lower-cased: read, no_ctx, read_failed, raced
    queued: int         # events on the queue, counted up to the walk's bound
    more: bool          # the queue goes on past that bound
    pending: tuple[UffdEventCulprit, ...]   # the first UT_UFFD_PENDING_MAX, oldest first

    @classmethod
    def from_bytes(cls, raw: bytes) -> UffdState:
        F = ffi()
        buf = F.from_buffer(bytearray(raw[:F.sizeof("struct ut_uffd_state")]))
        c = F.cast("struct ut_uffd_state *", buf)
        shown = min(c.queued, lib().UT_UFFD_PENDING_MAX)
        pending = tuple(UffdEventCulprit(event_name(e.event), e.pid, e.tid,
                                         F.string(e.comm).decode("utf-8", "replace"))
                        for e in (c.events[i] for i in range(shown)))
        where = codes("UT_USW_").get(c.where, f"where {c.where}").lower()
        return cls(c.mmap_changing, where, c.queued, bool(c.more), pending)

    @property
    def read(self) -> bool:
        """mmap_changing was read (the queue maybe only in part: raced)."""
        return self.where in ("read", "raced")

    def to_json(self) -> dict:
        return {"mmap_changing": self.mmap_changing, "where": self.where,
                "queued": self.queued, "more": self.more,
                "pending": [p.to_json() for p in self.pending]}

    @classmethod
    def from_json(cls, d: dict) -> UffdState:
        return cls(d["mmap_changing"], d["where"], d["queued"], d["more"],
                   tuple(UffdEventCulprit.from_json(p) for p in d["pending"]))
