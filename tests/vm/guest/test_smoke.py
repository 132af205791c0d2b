"""The VM pipeline works end to end: right kernel, tracing filesystems,
matching headers, and a bcc fentry program that sees the real moves a
workload makes.  Runs inside the guest only (tests/vm/conftest.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.helpers import uffdtrace
from tests.vm.guest import facts
from uffdtrace import bpfprog
from uffdtrace.kernel import headers, kallsyms
from uffdtrace.native import lib

# The outermost function of the move path that is still out of line:
# move_pages on 6.12 and 6.18; 7.3 inlines it into userfaultfd_ioctl,
# leaving the batched move_pages_ptes.
MOVE_FUNCTIONS = ["move_pages", "move_pages_ptes"]
WORKLOAD_PAGES, WORKLOAD_ROUNDS = 8, 2

COUNT_MOVES = r"""
#include <uapi/linux/ptrace.h>

BPF_HASH(ioctls, u32, u64);
BPF_HASH(moves, u32, u64);

/* Only the command is read: no kernel struct headers, so the compile stays
 * short under TCG (linux/mm.h alone costs about 30 s there). */
KFUNC_PROBE(userfaultfd_ioctl, void *file, unsigned int cmd, unsigned long arg)
{
    if (cmd != UFFDIO_MOVE_CMD)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    ioctls.increment(pid);
    return 0;
}

KFUNC_PROBE(MOVE_FUNCTION)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    moves.increment(pid);
    return 0;
}
"""


def test_kernel_is_the_expected_one(expected_release):
    assert os.uname().release == expected_release
    assert Path("/proc/kallsyms").read_text(errors="replace").count("\n") > 10000


def test_tracing_filesystems_are_mounted():
    mounts = {tuple(line.split()[1:3]) for line in Path("/proc/mounts").read_text().splitlines()}
    assert ("/sys/kernel/tracing", "tracefs") in mounts
    assert ("/sys/kernel/debug", "debugfs") in mounts
    assert ("/sys/fs/bpf", "bpf") in mounts
    assert Path("/sys/kernel/tracing/events/syscalls/sys_enter_ioctl/id").exists()


def test_headers_are_this_kernels(expected_release):
    found = headers.find(expected_release)
    assert found.release == expected_release, found
    assert found.matches_running
    assert Path(f"/lib/modules/{expected_release}/source/include/linux/kconfig.h").exists()


def test_fentry_sees_the_workloads_moves():
    syms = kallsyms.find_functions(MOVE_FUNCTIONS)
    move_fn = next((f for f in MOVE_FUNCTIONS if syms[f]), None)
    assert move_fn, f"none of {MOVE_FUNCTIONS} is in kallsyms"
    import bcc
    text = COUNT_MOVES.replace("MOVE_FUNCTION", move_fn).replace("UFFDIO_MOVE_CMD",
                                                                 hex(lib().UFFDT_IOC_MOVE))
    started = time.monotonic()
    bpf = bcc.BPF(text=text.encode(), cflags=bpfprog.cflags())
    compile_s = time.monotonic() - started
    try:
        proc = uffdtrace("workload", "--scenario", "ok", "--pages", str(WORKLOAD_PAGES),
                         "--iterations", str(WORKLOAD_ROUNDS), "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        work = json.loads(proc.stdout)
        pid = work["pid"]
        calls = work["calls"]
        assert len(calls) == WORKLOAD_PAGES * WORKLOAD_ROUNDS
        assert all(c["ret"] == 0 for c in calls), calls
        counts = {name: {k.value: v.value for k, v in bpf[name.encode()].items()}
                  for name in ("ioctls", "moves")}
    finally:
        bpf.cleanup()
    print(f"bcc compile+attach {compile_s:.1f} s; hooked {move_fn}; counts {counts}")
    # Every UFFDIO_MOVE the workload made entered userfaultfd_ioctl once,
    # and went through the move function at least once (one page per call:
    # exactly once on 6.12's move_pages).
    assert counts["ioctls"].get(pid) == len(calls), (counts, pid)
    assert counts["moves"].get(pid, 0) >= len(calls), (counts, pid)
    if move_fn == "move_pages":
        assert counts["moves"][pid] == len(calls)


def test_doctor_reports_what_the_guest_kernel_allows(expected_release, save_for_host):
    proc = uffdtrace("doctor", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    save_for_host("doctor.json", report)
    assert report["kernel_release"] == expected_release
    assert report["uffdio_move_supported"], report["uffdio_move_detail"]
    kinds = report["bpf_program_kinds"]
    assert kinds["kprobe"]["attaches"], kinds["kprobe"]
    assert kinds["fentry"]["attaches"], kinds["fentry"]
    assert report["kernel_headers"]["matches_running_kernel"], report["kernel_headers"]
    assert report["bcc"]["compiles"], report["bcc"]


def test_move_path_facts(save_for_host):
    """Which move-path functions and tracepoints this kernel has, for the
    kernel tier (the full table comes back to the host as facts.json)."""
    found = facts.collect()
    save_for_host("facts.json", found)
    fns = found["functions"]
    assert any(fns.get(f, {}).get("fentry") for f in MOVE_FUNCTIONS), \
        f"no fentry-able move function among {MOVE_FUNCTIONS}"
    for name in ("userfaultfd_ioctl", "move_pages_huge_pmd", "flush_tlb_mm_range"):
        assert fns.get(name, {}).get("fentry"), (name, fns.get(name))
    assert found["tracepoints"]["tlb:tlb_flush"]
