"""Who is responsible for a failed move: the typed culprits a diagnosis
names, with the one JSON form each has in trace files.

Every producer (diagnose.py, kernel_evidence.py) builds culprits through
these classes and every consumer (trace lines, writer, report, export, top)
reads them back through `culprit_from_json`, so an optional field -- a pin
seen by a GUP hook has no registered range, a KSM merge seen in the kernel
tier has no ksmd pid -- is optional everywhere, never a KeyError somewhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# How a pin was seen (the schema's pin_culprit.source).
PIN_REGISTRATION = "pin registration"   # io_uring_register(2) fixed buffers (tracepoint)
GUP_HOOK = "GUP hook"                   # pin_user_pages*() in the kernel tier


@dataclass(frozen=True)
class PinCulprit:
    """The process that pinned the page a move needed."""

    pid: int
    comm: str
    method: str                          # how it was pinned: events.pin_method_name() of
                                         # the method alone (longterm says the rest)
    longterm: bool                       # FOLL_LONGTERM (io_uring fixed buffers always are)
    source: str                          # PIN_REGISTRATION or GUP_HOOK
    ts_ns: int | None = None             # when the pin was taken
    tid: int | None = None               # the pinning thread, where known
    range: tuple[int, int] | None = None  # (address, length) pinned, where known
    # --stacks: the pinner's stack when it pinned (stacks.py), where the pin
    # record had one; not part of what makes two culprits the same
    stack: dict | None = field(default=None, compare=False)

    kind = "pin"

    def to_json(self) -> dict:
        out = {"kind": self.kind, "pid": self.pid, "tid": self.tid, "comm": self.comm,
               "method": self.method, "longterm": self.longterm, "ts_ns": self.ts_ns,
               "range": list(self.range) if self.range is not None else None,
               "source": self.source}
        if self.stack is not None:
            out["stack"] = self.stack
        return out

    @classmethod
    def from_json(cls, d: dict) -> PinCulprit:
        rng = d.get("range")
        return cls(pid=d["pid"], comm=d["comm"], method=d["method"],
                   longterm=bool(d.get("longterm", d.get("source") == PIN_REGISTRATION)),
                   source=d.get("source") or PIN_REGISTRATION, ts_ns=d.get("ts_ns"),
                   tid=d.get("tid"), range=(rng[0], rng[1]) if rng else None,
                   stack=d.get("stack"))

    @property
    def method_label(self) -> str:
        # traces before the method/longterm split carry the flag in the text
        if not self.longterm or "LONGTERM" in self.method:
            return self.method
        return f"{self.method}, long-term (FOLL_LONGTERM)"

    def describe(self) -> str:
        """One line of plain text (untrusted comm: escape before markup)."""
        text = f"pinned by pid {self.pid} ({self.comm}) via {self.method_label}"
        if self.range is not None:
            text += f": {self.range[0]:#x}+{self.range[1]} bytes"
        return text


@dataclass(frozen=True)
class KsmCulprit:
    """The KSM merge that made the page a move needed a shared KSM page."""

    merged_ts_ns: int | None = None      # when a ksm tracepoint saw it; None: before tracing
    ksmd_pid: int | None = None          # who merged it, where seen

    kind = "ksm"

    def to_json(self) -> dict:
        return {"kind": self.kind, "merged_ts_ns": self.merged_ts_ns, "ksmd_pid": self.ksmd_pid}

    @classmethod
    def from_json(cls, d: dict) -> KsmCulprit:
        return cls(merged_ts_ns=d.get("merged_ts_ns"), ksmd_pid=d.get("ksmd_pid"))

    @property
    def seen_merging(self) -> bool:
        return self.merged_ts_ns is not None

    def describe(self) -> str:
        if not self.seen_merging:
            return "merged by KSM before tracing started"
        who = f"ksmd (pid {self.ksmd_pid})" if self.ksmd_pid is not None else "KSM"
        return f"merged by {who} while tracing"


@dataclass(frozen=True)
class UffdEventCulprit:
    """A non-cooperative userfaultfd event (fork, remap, remove, unmap)
    raised and not yet read by the monitor, which keeps mmap_changing up;
    the thread that raised it sleeps until it is read."""

    event: str          # fork, remap, remove, unmap (UFFD_EVENT_*, lower-cased)
    pid: int
    tid: int
    comm: str

    kind = "uffd_event"

    def to_json(self) -> dict:
        return {"kind": self.kind, "event": self.event, "pid": self.pid, "tid": self.tid,
                "comm": self.comm}

    @classmethod
    def from_json(cls, d: dict) -> UffdEventCulprit:
        return cls(event=d["event"], pid=d["pid"], tid=d["tid"], comm=d["comm"])

    def describe(self) -> str:
        """One line of plain text (untrusted comm: escape before markup)."""
        return (f"UFFD_EVENT_{self.event.upper()} raised by pid {self.pid} tid {self.tid} "
                f"({self.comm}), unread by the monitor")


Culprit = PinCulprit | KsmCulprit | UffdEventCulprit
_KINDS = {c.kind: c for c in (PinCulprit, KsmCulprit, UffdEventCulprit)}


def culprit_from_json(d: dict | None) -> Culprit | None:
    """The culprit of a diagnosis as written in a trace (None: none named).
    A kind this version does not know reads as None."""
    if not d:
        return None
    cls = _KINDS.get(d.get("kind"))
    return cls.from_json(d) if cls is not None else None
