"""--stacks in the kernel tier, inside the guest, on the guest's one
`uffdtrace record --stacks --tier kernel` (tests/vm/guest/recording.py):
among its workloads a failing move and a move blocked by an io_uring pin.
The move's stack is taken at userfaultfd_ioctl()'s exit and the pin's in
the pin_user_pages*() hook, so this is where the pinner's *kernel* stack is
seen (the host's tracepoint tier takes none): the pin record names the
io_uring path that pinned and the workload's own function that asked for
it; each failure names uffdw_move.  Report and export say the same.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers import uffdtrace
from tests.vm.guest.recording import STACK_SCENARIOS
from uffdtrace import stacks
from uffdtrace.tracereader import iter_records


@pytest.fixture(scope="module")
def recorded(kernel_tier_recording):
    """(trace, the stack workloads' outputs by scenario, every record)."""
    trace = kernel_tier_recording.trace
    made = {s: kernel_tier_recording.workload(f"stacks-{s}") for s in STACK_SCENARIOS}
    return trace, made, list(iter_records(str(trace)))


def _own(stack: dict) -> dict:
    return next(fr for fr in stack["frames"] if fr["space"] == "user"
                and not stacks.in_wrapper(fr))


def test_failures_name_uffdw_move(recorded):
    trace, made, records = recorded
    assert records[0]["tier"] == "kernel" and records[0]["stacks"] is True
    pids = {out["pid"] for out in made.values()}
    failures = [r for r in records if r["type"] == "move" and r["ret"] < 0 and r["pid"] in pids]
    assert failures
    for r in failures:
        own = _own(r["stack"])
        assert stacks.function(own) == "uffdw_move", r["stack"]
        assert own["source"] == stacks.STACK_POINTER
        assert all(fr["space"] == "user" for fr in r["stack"]["frames"])


def test_the_pinners_kernel_and_user_stack(recorded):
    trace, made, records = recorded
    pins = [r for r in records if r["type"] == "pin" and not r["released"]
            and r["pid"] == made["pinned"]["pid"]]
    assert pins
    for p in pins:
        frames = p["stack"]["frames"]
        kernel = [fr for fr in frames if fr["space"] == "kernel"]
        # kernel frames first, symbol+offset only: no kernel address is written
        assert kernel and frames[:len(kernel)] == kernel, frames
        assert all(fr["addr"] is None and fr["sym"] for fr in kernel), kernel
        # the io_uring registration that pinned the pages
        assert any((stacks.function(fr) or "").startswith("io_") for fr in kernel), kernel
        assert stacks.function(_own(p["stack"])) == "uffdw_iouring_pin", frames
    proc = uffdtrace("report", str(trace), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    (pinner,) = [p for p in s["pinners"] if p["pid"] == made["pinned"]["pid"]]
    assert pinner["pinned_by"].startswith("uffdw_iouring_pin"), pinner
    assert pinner["kernel_path"], pinner
    rows = {c["cause"]: c for c in s["causes"]}
    # the trace's other workloads issue these causes too (the storms from
    # native loops): among the issuers, the stack workloads' own
    for cause in ("dst_populated", "page_pinned"):
        assert any(i["stack"].startswith("uffdw_move ← ") for i in rows[cause]["issuers"]), \
            rows[cause]
