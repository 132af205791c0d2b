"""Probe which BPF program kinds this kernel really loads and attaches.

Each probe loads "r0 = 0; exit" of one kind with raw bpf() (native/
bpfprobe.c) and attaches it for real: no version inference, no bcc, no
headers needed.  Results are three-valued: True, False, or None (could not
tell, e.g. no privileges).
"""
from __future__ import annotations

import errno
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..native import ffi, lib

KPROBE_PMU_TYPE = Path("/sys/bus/event_source/devices/kprobe/type")


@dataclass(frozen=True)
class Probe:
    loads: bool | None
    attaches: bool | None
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def _why(rc: int, action: str) -> str:
    err = -rc
    text = f"{action}: {errno.errorcode.get(err, err)} ({os.strerror(err)})"
    if err == errno.EPERM and os.geteuid() != 0:
        text += "; run as root"
    return text


class _Loaded:
    """A loaded probe program, closed on exit."""

    def __init__(self, prog_type: int, attach_type: int = 0, btf_id: int = 0):
        self.fd = lib().bpfp_load(prog_type, attach_type, btf_id, ffi().NULL, 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.fd >= 0:
            lib().bpfp_close(self.fd)


def _attach_result(rc: int, what: str) -> Probe:
    if rc >= 0:
        lib().bpfp_close(rc)
        return Probe(True, True, f"loaded and attached to {what}")
    return Probe(True, False, _why(rc, f"loaded; attach to {what} failed"))


STACK_DEPTH = 127   # bcc's BPF_STACK_TRACE frames (PERF_MAX_STACK_DEPTH)


def probe_stacks() -> str:
    """Can --stacks run here: is a stack-trace map created for real?"""
    fd = lib().bpfp_stack_map(STACK_DEPTH)
    if fd < 0:
        return "unavailable: " + _why(fd, "creating a stack-trace map")
    lib().bpfp_close(fd)
    return ("available: a stack-trace map is created; user stacks are walked by frame "
            "pointers (code built without them shows part of its stack)")


def probe_tracepoint(tracepoint_id: int | None, name: str) -> Probe:
    with _Loaded(lib().BPF_PROG_TYPE_TRACEPOINT) as prog:
        if prog.fd < 0:
            return Probe(False, False, _why(prog.fd, "load"))
        if tracepoint_id is None:
            return Probe(True, None, f"loaded; tracepoint {name} not found in tracefs")
        return _attach_result(lib().bpfp_attach_tracepoint(prog.fd, tracepoint_id), name)


def probe_raw_tracepoint(name: str) -> Probe:
    with _Loaded(lib().BPF_PROG_TYPE_RAW_TRACEPOINT) as prog:
        if prog.fd < 0:
            return Probe(False, False, _why(prog.fd, "load"))
        return _attach_result(lib().bpfp_attach_raw(prog.fd, name.encode()), name)


def kprobe_pmu_type() -> int | None:
    try:
        return int(KPROBE_PMU_TYPE.read_text())
    except (OSError, ValueError):
        return None


def probe_kprobes(functions: list[str]) -> tuple[Probe, dict[str, Probe]]:
    """Kind-level result and one attach result per function."""
    with _Loaded(lib().BPF_PROG_TYPE_KPROBE) as prog:
        if prog.fd < 0:
            res = Probe(False, False, _why(prog.fd, "load"))
            return res, {f: res for f in functions}
        pmu = kprobe_pmu_type()
        if pmu is None:
            res = Probe(True, False, "loaded; no kprobe PMU in sysfs (kernel built "
                        "without CONFIG_KPROBES?), so nothing can attach")
            return res, {f: res for f in functions}
        per = {f: _attach_result(lib().bpfp_attach_kprobe(prog.fd, pmu, f.encode()),
                                 f"kprobe:{f}") for f in functions}
    attached = [f for f, p in per.items() if p.attaches]
    kind = Probe(True, bool(attached),
                 f"attached to {len(attached)} of {len(per)} move-path functions")
    return kind, per


def probe_fentry(functions: dict[str, int | None]) -> tuple[Probe, dict[str, Probe]]:
    """fentry on each function with a BTF id (id None = no BTF FUNC)."""
    per: dict[str, Probe] = {}
    for name, btf_id in functions.items():
        if btf_id is None:
            per[name] = Probe(None, False, "no BTF FUNC (inlined or absent)")
            continue
        with _Loaded(lib().BPF_PROG_TYPE_TRACING, lib().BPF_TRACE_FENTRY, btf_id) as prog:
            if prog.fd < 0:
                per[name] = Probe(False, False, _why(prog.fd, "fentry load"))
                continue
            per[name] = _attach_result(lib().bpfp_attach_raw(prog.fd, ffi().NULL),
                                       f"fentry:{name}")
    tried = [p for p in per.values() if p.loads is not None]
    if not tried:
        return Probe(None, None, "no function with BTF to try"), per
    loads = any(p.loads for p in tried)
    attached = [n for n, p in per.items() if p.attaches]
    detail = (f"attached to {len(attached)} of {len(per)} move-path functions" if loads
              else tried[0].detail)
    return Probe(loads, bool(attached), detail), per
