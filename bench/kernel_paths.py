"""Which kernel functions each bystander reaches, and how often per
operation: the kernel tier's hooked functions (uffdtrace/kernel_tier.py) and
a few markers of each path, counted by kprobes while each bystander loop
runs with its own comm.  It checks each bystander's note ("what kernel path
it exercises") and shows how many hook calls one operation pays for.

Runs where kprobes attach (the QEMU guest); elsewhere it says why not.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from uffdtrace.kernel import kallsyms
from uffdtrace.kernel_tier import HOOKED_FUNCTIONS

from .workloads import bystander_workloads

# Markers: that a bystander takes the path its note names.
MARKERS = ["handle_mm_fault", "copy_page_range", "exit_mmap", "change_protection",
           "iov_iter_extract_pages", "bio_release_pages", "unpin_user_folio", "gup_put_folio"]
ROUNDS = {"fork": 200}           # per bystander (default DEFAULT_ROUNDS)
DEFAULT_ROUNDS = 2000
PR_SET_NAME = 15


def _program(n: int) -> str:
    probes = "".join(f"int fn_{i}(struct pt_regs *ctx) {{ return count({i}); }}\n"
                     for i in range(n))
    return """
#include <uapi/linux/ptrace.h>
struct key_t { u32 fn; char comm[16]; };
BPF_HASH(calls, struct key_t, u64, 4096);
static int count(u32 fn) {
    struct key_t k = {};
    k.fn = fn;
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    calls.increment(k);
    return 0;
}
""" + probes


def _set_comm(name: str):
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def run(log: Callable[[str], None]) -> dict:
    import bcc
    names = list(dict.fromkeys([*HOOKED_FUNCTIONS, *MARKERS]))
    syms = kallsyms.find_functions(names)
    present = [n for n in names if syms[n]]
    b = bcc.BPF(text=_program(len(present)).encode(), cflags=["-w"])
    attached, missing = [], {n: "not in kallsyms (absent or inlined)" for n in names
                             if not syms[n]}
    try:
        for i, name in enumerate(present):
            try:
                b.attach_kprobe(event=syms[name].name.encode(), fn_name=f"fn_{i}".encode())
                attached.append(name)
            except Exception as exc:   # noqa: BLE001 - bcc raises bare Exceptions
                missing[name] = f"kprobe: {exc}"
        if not attached:
            refused = [f"{n}: {why}" for n, why in missing.items() if why.startswith("kprobe")]
            return {"skipped": "no kprobe attaches here (" + (refused or ["none present"])[0]
                    + ")"}
        with open("/proc/self/comm") as f:
            own_comm = f.read().strip()
        rounds = {}
        try:
            for w in bystander_workloads():
                try:
                    w.setup()
                except Exception as exc:   # noqa: BLE001
                    missing[f"bystander {w.key}"] = str(exc)
                    continue
                try:
                    log(f"  {w.label}")
                    rounds[w.key] = ROUNDS.get(w.key, DEFAULT_ROUNDS)
                    _set_comm(f"by-{w.key}")
                    w.run(rounds[w.key])
                finally:
                    _set_comm(own_comm)
                    w.close()
        finally:
            _set_comm(own_comm)
        per_op: dict[str, dict[str, float]] = {wl: {} for wl in rounds}
        for k, v in b[b"calls"].items():
            comm = k.comm.decode(errors="replace")
            wl = comm.removeprefix("by-")
            if comm.startswith("by-") and wl in rounds:
                per_op[wl][present[k.fn]] = v.value / rounds[wl]
    finally:
        b.cleanup()
    return {"functions": attached, "hooked": [n for n in attached if n in HOOKED_FUNCTIONS],
            "missing": missing, "rounds": rounds, "per_op": per_op,
            "labels": {w.key: w.label for w in bystander_workloads() if w.key in rounds}}
