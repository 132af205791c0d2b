"""The one `uffdtrace record --stacks` of the kernel tier that the guest's
user-path tests (test_kernel_tier_user_path.py) and --stacks tests
(test_stacks.py) read: every BPF compile costs about 3 minutes under TCG,
and CI's longest path is a guest's suite, so both files share one.

Recorded, one process each, in this order: the `mixed` cycle, `ksm`, the
storms, a fault_wake workload, then a failing move and an io_uring pin held
long enough for their stacks to be symbolized while the process lives.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import uffdtrace

# the storms: (scenario, its arguments, cause); made by native loops, so
# their failures are counted by the workload, not listed call by call
STORMS = {"failure-storm": (["--iterations", "30000"], "dst_populated"),
          "retry-loop": (["-d", "1.5", "--rate", "500"], "page_pinned")}

# threads of the fault_wake workload (each ~20 ms: short in guest time)
WAKE_PAGES = 4

# --stacks: one failing move and one pinned page, each held STACKS_HOLD_S so the
# collector symbolizes their stacks while the process lives (under TCG it
# reaches them later than a short workload lives; a process gone first
# leaves raw addresses and says so: tests/unit/test_stacks.py)
STACK_SCENARIOS = ("dst_populated", "pinned")
STACKS_HOLD_S = 5

# the workloads whose calls are listed one by one (each call tagged with its
# scenario): they are matched to the trace's moves call by call
LISTED = ("mixed", "ksm", *(f"stacks-{s}" for s in STACK_SCENARIOS))


def _workloads() -> dict[str, list[str]]:
    """Name -> `uffdtrace workload` arguments, in the order they run."""
    out = {"mixed": ["-s", "mixed", "--iterations", "1", "--rate", "100000",
                     # --hold: EINVAL's VMA flags are read from /proc after the call
                     "--hold", "0.3"],
           # exits 1 where the kernel moves merged pages (6.12): still recorded
           "ksm": ["-s", "ksm"]}
    out.update({name: ["-s", name, *args] for name, (args, _) in STORMS.items()})
    out["fault_wake"] = ["-s", "fault_wake", "--pages", str(WAKE_PAGES)]
    out.update({f"stacks-{s}": ["-s", s, "--hold", str(STACKS_HOLD_S)]
                for s in STACK_SCENARIOS})
    return out


@dataclass(frozen=True)
class Recording:
    trace: Path

    def workload(self, name: str) -> dict:
        """The JSON a workload of _workloads() printed."""
        return json.loads((self.trace.parent / f"{name}.json").read_text())


def record(directory: Path) -> Recording:
    trace = directory / "all.jsonl"
    py = sys.executable
    script = "".join(f"{py} -m uffdtrace workload {' '.join(args)} --json "
                     f"> {directory}/{name}.json; " for name, args in _workloads().items())
    proc = uffdtrace("record", "--stacks", "--tier", "kernel", "-o", str(trace), "--",
                     "sh", "-c", script + "exit 0", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return Recording(trace)
