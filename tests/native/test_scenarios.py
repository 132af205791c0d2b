"""Each workload scenario makes this kernel give its outcome, every time.

The expectations below are written independently of the scenario registry:
they are what Linux 6.18 answers (see the foundation issue and
reference/kernel-uffdio-move.md), so a wrong scenario cannot vouch for itself.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, uffdtrace, uffdtrace_json

PAGE = os.sysconf("SC_PAGE_SIZE")
HPAGE = 2 << 20
KSM = Path("/sys/kernel/mm/ksm")
KSM_RESTORE_FILE = Path("/run/uffdtrace-ksm-restore.json")
KSM_TOUCHED = ("run", "pages_to_scan", "sleep_millisecs")


def untouched(c):   # rejected before move_pages(): the kernel never writes `move`
    return c["move"] == 0


def neg(err):
    return lambda c: c["move"] == -err


def everything(c):
    return c["move"] == c["len"]


def half(c):
    return c["move"] == c["len"] // 2


# scenario: (errno, calls per round, len of each call, check of `move`)
EXPECTED = {
    "ok": (None, 4, PAGE, everything),
    "thp": (None, 1, HPAGE, everything),
    "dst_populated": ("EEXIST", 1, PAGE, neg(errno.EEXIST)),
    "partial": ("EAGAIN", 1, 8 * PAGE, half),
    "src_hole": ("ENOENT", 1, 4 * PAGE, neg(errno.ENOENT)),
    "src_hole_allowed": (None, 1, 4 * PAGE, everything),
    "pinned": ("EAGAIN", 1, 8 * PAGE, half),
    "ksm": ("EBUSY", 4, PAGE, neg(errno.EBUSY)),
    "fork_shared": ("EBUSY", 2, PAGE, neg(errno.EBUSY)),
    "misaligned": ("EINVAL", 1, PAGE, untouched),
    "dst_not_registered": ("EINVAL", 1, PAGE, neg(errno.EINVAL)),
    "vma_shared": ("EINVAL", 1, PAGE, neg(errno.EINVAL)),
    "src_readonly": ("EINVAL", 1, PAGE, neg(errno.EINVAL)),
    "cross_mm": ("EINVAL", 1, PAGE, untouched),
    # swap, unsplittable THP, mmap_changing (issue 16), as 6.18 answers:
    # an exclusive swap entry moves; one fork() shared is refused
    "swapped": (None, 2, PAGE, everything),
    "swap_shared": ("EBUSY", 2, PAGE, neg(errno.EBUSY)),
    # part of a pinned THP: the PMD is split, the folio split fails, EBUSY at
    # once (thp_split_page_failed counts one attempt, no retry)
    "thp_pinned": ("EBUSY", 1, 4 * PAGE, neg(errno.EBUSY)),
    # userfaultfd_move()'s own check writes -EAGAIN to `move`
    "mmap_changing": ("EAGAIN", 4, 2 * PAGE, neg(errno.EAGAIN)),   # one per event
    # issue 16: request, VMA and huge-page classes
    # validate_range(): len 0 is EINVAL before move_pages(), `move` untouched
    "zero_len": ("EINVAL", 1, 0, untouched),
    # the ioctl's mode check, before move_pages(): untouched
    "bad_mode": ("EINVAL", 1, PAGE, untouched),
    # move_pages(): src_start + len > src_vma->vm_end, after the VMA lookup
    "crosses_vma": ("EINVAL", 1, 4 * PAGE, neg(errno.EINVAL)),
    # move_pages(): pmd_trans_huge(dst_pmdval) -> EEXIST before any page moves
    "dst_thp": ("EEXIST", 1, HPAGE, neg(errno.EEXIST)),
    # move_pages_huge_pmd(): the huge zero PMD moves whole (6.9+)
    "huge_zero_page": (None, 1, HPAGE, everything),
    # the move paths (questions 6, 7): move_zeropage_pte moves the zero page
    # (6.9+); a 4 KiB move out of a THP splits it first
    "zero_page": (None, 4, PAGE, everything),
    "thp_split": (None, 1, PAGE, everything),
    # issue 16: 4 threads, 64 pages of one THP: success, or ALSO's EEXIST
    "contended": (None, 64, PAGE, everything),
}
# scenario: {another errno this kernel may answer: check of `move`}
ALSO = {
    # 6.18: a move that took an internal retry (the huge folio locked by
    # another mover) and moved its page, then reran the step: EEXIST
    "contended": {"EEXIST": neg(errno.EEXIST)},
}
# Scenarios that set up a swap device: root, and a test of their own.
SWAP_SCENARIOS = ("swapped", "swap_shared")
SWAP_RESTORE_FILE = Path("/run/uffdtrace-zram-swap.json")
ROUNDS = 3


def check_call(scenario: str, call: dict):
    want_errno, _, want_len, move_ok = EXPECTED[scenario]
    if call["errno"] in ALSO.get(scenario, {}):
        want_errno, move_ok = call["errno"], ALSO[scenario][call["errno"]]
    assert call["errno"] == want_errno, (scenario, call)
    assert call["ret"] == (0 if want_errno is None else -1), (scenario, call)
    assert call["len"] == want_len, (scenario, call)
    assert move_ok(call), (scenario, call)


def ksm_settings() -> dict[str, str]:
    return {k: (KSM / k).read_text().strip() for k in KSM_TOUCHED}


@pytest.fixture
def ksm_root():
    if os.geteuid() != 0:
        pytest.skip("the ksm scenario needs root to drive ksmd")
    if not KSM.is_dir():
        pytest.skip("kernel built without KSM")


@pytest.mark.parametrize("scenario", [s for s in EXPECTED
                                      if s != "ksm" and s not in SWAP_SCENARIOS])
def test_scenario_outcome_every_round(scenario):
    out = uffdtrace_json("workload", "-s", scenario, "--iterations", str(ROUNDS))
    assert out["scenario"] == scenario
    assert out["problems"] == []
    calls = out["calls"]
    assert len(calls) == EXPECTED[scenario][1] * ROUNDS
    for call in calls:
        check_call(scenario, call)
        assert call["scenario"] == scenario
        # every call but cross_mm's (another mm) and thp_pinned's (a child
        # sharing the mm, killable) comes from the workload process itself
        assert (call["pid"] != out["pid"]) == (scenario in ("cross_mm", "thp_pinned"))


def test_contended_moves_every_page_exactly_once():
    """Four threads on one 2 MiB THP, every round: whatever each call
    answers, each page ends at dst with its own content and leaves src (the
    workload checks, `problems` says)."""
    out = uffdtrace_json("workload", "-s", "contended", "--pages", "512", "--iterations", "5")
    assert out["problems"] == []
    assert [f["src_thp"] for f in out["setup"]] == [True] * 5
    assert len(out["calls"]) == 5 * 512
    for call in out["calls"]:
        check_call("contended", call)
    # real threads of the workload, four per round, never the main thread
    assert len({c["tid"] for c in out["calls"]}) == 4 * 5
    assert all(c["pid"] == out["pid"] != c["tid"] for c in out["calls"])
    # each EEXIST is one the round counted as moved (its page checked at dst)
    assert sum(f["moved_then_eexist"] for f in out["setup"]) == \
        sum(c["errno"] == "EEXIST" for c in out["calls"])


def test_ksm_outcome_and_settings_restored(ksm_root):
    before = ksm_settings()
    out = uffdtrace_json("workload", "-s", "ksm", "--iterations", "2", timeout=180)
    assert len(out["calls"]) == 2 * EXPECTED["ksm"][1]
    for call in out["calls"]:
        check_call("ksm", call)
    # the workload verified (kpageflags) that exactly the moved pages were merged
    merged = [page for facts in out["setup"] for page in facts["ksm_pages"]]
    assert sorted(merged) == sorted(c["src"] for c in out["calls"])
    assert ksm_settings() == before
    assert not KSM_RESTORE_FILE.exists()


def test_thp_moves_a_real_huge_page():
    out = uffdtrace_json("workload", "-s", "thp", "--pages", "2")
    assert [c["len"] for c in out["calls"]] == [HPAGE, HPAGE]
    (facts,) = out["setup"]
    assert facts["src_thp"] is True, "src was not a THP: the move took the PTE path"
    assert facts["dst_thp_after"] is True, "dst is not a THP after the move"


def test_crosses_vma_src_really_spans_two_vmas():
    out = uffdtrace_json("workload", "-s", "crosses_vma")
    (call,) = out["calls"]
    (facts,) = out["setup"]
    # the VMA holding src ends inside the range: half of it, at the split
    assert facts["src_vma_end"] == call["src"] + call["len"] // 2 < facts["src_end"]
    assert call["mode"] == 0


def test_bad_mode_has_only_an_unknown_bit():
    (call,) = uffdtrace_json("workload", "-s", "bad_mode")["calls"]
    assert call["mode"] and not call["mode"] & 0b11     # neither DONTWAKE nor ALLOW_SRC_HOLES


def test_dst_thp_moves_onto_a_real_huge_page():
    if os.geteuid() != 0:
        pytest.skip("kpageflags (THP) needs root")
    out = uffdtrace_json("workload", "-s", "dst_thp", "--pages", "2")
    assert [c["len"] for c in out["calls"]] == [HPAGE, HPAGE]
    (facts,) = out["setup"]
    assert facts["dst_thp"] is True, "dst was not a THP: the move met a PTE table"
    assert facts["src_thp"] is True


def test_huge_zero_page_moves_as_one_pmd():
    if os.geteuid() != 0:
        pytest.skip("kpageflags (zero page, THP) needs root")
    if Path("/sys/kernel/mm/transparent_hugepage/use_zero_page").read_text().strip() != "1":
        pytest.skip("transparent_hugepage/use_zero_page is off: no huge zero page")
    out = uffdtrace_json("workload", "-s", "huge_zero_page", "--pages", "2")
    assert [c["move"] for c in out["calls"]] == [HPAGE, HPAGE]
    (facts,) = out["setup"]
    assert facts["src_huge_zero"] is True, "the read fault did not map the huge zero page"
    assert facts["dst_huge_zero_after"] is True, "dst is not the huge zero page after the move"


def test_zero_page_and_thp_split_set_up_what_they_say():
    if os.geteuid() != 0:
        pytest.skip("kpageflags (zero page, THP) needs root")
    (facts,) = uffdtrace_json("workload", "-s", "zero_page")["setup"]
    assert facts["src_zero_page"] is True, "the read faults did not map the zero page"
    out = uffdtrace_json("workload", "-s", "thp_split", "--pages", "2")
    assert [c["move"] for c in out["calls"]] == [PAGE, PAGE]
    (facts,) = out["setup"]
    assert facts["src_thp"] is True, "src was not a THP before the move"
    assert facts["src_thp_after"] is False, "the 4 KiB move left src a THP: nothing split"


def test_pinned_move_stops_at_the_first_pinned_page():
    out = uffdtrace_json("workload", "-s", "pinned")
    (call,) = out["calls"]
    (facts,) = out["setup"]
    pin = facts["pinned"]
    assert pin["pid"] == out["pid"] and pin["method"] == "io_uring fixed buffer"
    assert call["src"] + call["move"] == pin["addr"]


def test_partial_move_stops_at_the_populated_dst_page():
    out = uffdtrace_json("workload", "-s", "partial", "--pages", "16")
    (call,) = out["calls"]
    (facts,) = out["setup"]
    assert call["move"] == 8 * PAGE
    assert call["dst"] + call["move"] == facts["populated_dst"]


def test_storm_counts_every_move():
    out = uffdtrace_json("workload", "-s", "storm", "--iterations", "20000")
    s = out["summary"]
    assert (s["calls"], s["ok"], s["failed"]) == (20000, 20000, 0)
    assert s["bytes_moved"] == 20000 * PAGE


def test_mixed_reproduces_every_class_at_its_rate():
    out = uffdtrace_json("workload", "-s", "mixed", "-d", "2", "--rate", "400")
    assert out["problems"] == []
    assert set(out["summary"]["errors"]) >= {"EAGAIN", "EBUSY", "EEXIST", "EINVAL", "ENOENT"}
    for call in out["calls"]:
        check_call(call["scenario"], call)
    # paced: roughly rate x duration moves, not a flood
    assert 300 <= out["summary"]["calls"] <= 1000


def _workload_processes(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd and proc.name.isdigit():
            pids.append(int(proc.name))
    return pids


def test_mixed_iterations_runs_whole_cycles():
    from uffdtrace.workload.scenarios import MIXED_CYCLE
    out = uffdtrace_json("workload", "-s", "mixed", "--iterations", "2", "--rate", "100000")
    rounds = [c["scenario"] for c in out["calls"]]
    # every class, each exactly twice as often as it is in one cycle
    for name in set(MIXED_CYCLE):
        per_round = len(uffdtrace_json("workload", "-s", name)["calls"])
        assert rounds.count(name) == 2 * MIXED_CYCLE.count(name) * per_round, name


def endless_mixed_until_sigterm(rate: str, seconds: float) -> dict:
    """`workload -s mixed -d 0` (what top --demo runs), stopped by SIGTERM:
    its JSON."""
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", "-s", "mixed",
                             "-d", "0", "--rate", rate, "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


def test_sigterm_stops_cleanly_with_results_and_no_leftover_children():
    # --rate chosen as a marker so we find exactly this run's processes
    out = endless_mixed_until_sigterm("321", 2.0)
    assert out["summary"]["interrupted"] is True
    assert out["summary"]["calls"] > 100
    time.sleep(0.2)
    assert _workload_processes("--rate 321") == []


def test_endless_mixed_keeps_a_bounded_tail_and_counts_every_call():
    # Past the bound within the run, and still paced past it (unpaced, this
    # machine makes about 4,000 moves/s).
    from uffdtrace.workload.runner import ENDLESS_KEEP
    rate, seconds = 1000, 3.0
    out = endless_mixed_until_sigterm(str(rate), seconds)
    s = out["summary"]
    assert s["calls"] > ENDLESS_KEEP, "too slow to pass the bound: nothing was tested"
    assert s["calls"] <= 1.2 * rate * seconds, "not paced once the bound was reached"
    assert len(out["calls"]) == s["calls_listed"] == ENDLESS_KEEP
    assert len(out["setup"]) <= ENDLESS_KEEP
    for call in out["calls"]:
        check_call(call["scenario"], call)


def test_ksm_settings_restored_after_sigkill(ksm_root):
    before = ksm_settings()
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", "-s", "ksm",
                             "--iterations", "1000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not KSM_RESTORE_FILE.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    assert KSM_RESTORE_FILE.exists(), "the run never saved its restore file"
    assert ksm_settings()["run"] == "1"  # SIGKILL left ksmd on...
    # ...and the next ksm run puts the original settings back first
    uffdtrace("workload", "-s", "ksm", "--pages", "2", timeout=120)
    assert ksm_settings() == before
    assert not KSM_RESTORE_FILE.exists()


@pytest.mark.parametrize("args, errors", [
    (["-s", "failure-storm", "--iterations", "3000"], {"EEXIST": 3000}),
    # in turn: EEXIST, EBUSY, ENOENT, EEXIST, ...
    (["-s", "mixed-storm", "--iterations", "3001"],
     {"EEXIST": 1001, "EBUSY": 1000, "ENOENT": 1000}),
    (["-s", "retry-loop", "-d", "0.2", "--rate", "1000"], {"EBUSY": 200}),
])
def test_failure_storms_fail_every_move_as_planned(args, errors):
    """Counted by errno in the native loop, each call by itself."""
    out = uffdtrace_json("workload", *args)
    assert out["summary"]["errors"] == errors and out["summary"]["ok"] == 0
    assert out["problems"] == []


# --- swap, unsplittable THP, mmap_changing (issue 16) ------------------------------

def _swaps() -> list[str]:
    return Path("/proc/swaps").read_text().splitlines()[1:]


@pytest.fixture
def swap_root():
    if os.geteuid() != 0:
        pytest.skip("the swap scenarios need root: they add a zram swap device")
    if not Path("/sys/class/zram-control").exists() and subprocess.run(
            ["modprobe", "-n", "zram"], capture_output=True).returncode:
        pytest.skip("this kernel has no zram")


@pytest.mark.parametrize("scenario", SWAP_SCENARIOS)
def test_swap_outcome_and_swap_removed(swap_root, scenario):
    before = _swaps()
    out = uffdtrace_json("workload", "-s", scenario, "--iterations", str(ROUNDS))
    assert out["problems"] == []
    assert len(out["calls"]) == EXPECTED[scenario][1] * ROUNDS
    for call, facts in zip(out["calls"][::2], out["setup"]):
        # the moved pages were swapped out (pagemap) when moved
        assert call["src"] in facts["swapped_out"]
    for call in out["calls"]:
        check_call(scenario, call)
        assert call["pid"] == out["pid"]
    if scenario == "swapped":
        # the swap entries themselves moved: dst is swapped out, not faulted in
        assert all(f["dst_swapped_after"] for f in out["setup"])
    else:
        assert all(f["sharing_child_pid"] > 0 for f in out["setup"])
    assert _swaps() == before
    assert not SWAP_RESTORE_FILE.exists()


def test_swap_removed_after_sigkill(swap_root):
    before = _swaps()
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", "-s", "swap_shared",
                             "--pause-before-move", "--json"], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stderr.readline()          # held before its first move
        assert line.startswith("before-move "), line + proc.stderr.read()
        added = [l for l in _swaps() if l not in before]
        assert len(added) == 1 and "/dev/zram" in added[0], added
        assert SWAP_RESTORE_FILE.exists()
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the watcher takes the device down once the dead run's pipe closes
    deadline = time.monotonic() + 20
    while (_swaps() != before or SWAP_RESTORE_FILE.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _swaps() == before
    assert not SWAP_RESTORE_FILE.exists()


def _vmstat(*names: str) -> dict[str, int]:
    with open("/proc/vmstat") as f:
        values = dict(line.split() for line in f)
    return {n: int(values.get(n, 0)) for n in names}


def test_thp_pinned_fails_its_split_once_and_is_not_killed():
    counters = ("thp_split_pmd", "thp_split_page_failed")
    before = _vmstat(*counters)
    out = uffdtrace_json("workload", "-s", "thp_pinned", "--iterations", "2")
    after = _vmstat(*counters)
    assert out["problems"] == []
    for call, facts in zip(out["calls"], out["setup"]):
        check_call("thp_pinned", call)
        assert facts["src_thp"] is True and facts["killed_after_s"] is None
        pin = facts["pinned"]
        assert pin["pid"] == out["pid"] and pin["addr"] == call["src"]
        assert pin["len"] == HPAGE
    # 6.18: per move, the PMD split once, the folio split tried once and
    # failed: no retry loop (another process may split THPs meanwhile: >=)
    assert after["thp_split_pmd"] - before["thp_split_pmd"] >= 2
    assert after["thp_split_page_failed"] - before["thp_split_page_failed"] >= 2
    assert after["thp_split_page_failed"] - before["thp_split_page_failed"] < 10


def test_a_move_that_never_returns_is_killed_and_reported():
    # The guard thp_pinned relies on, made to fire: a timeout of 0 kills the
    # mover at once, whatever the kernel was doing; the process goes on.
    from contextlib import ExitStack
    from uffdtrace.native import Mapping, Uffd
    with ExitStack() as stack:
        uffd = stack.enter_context(Uffd())
        src = stack.enter_context(Mapping(PAGE))
        dst = stack.enter_context(Mapping(PAGE))
        src.fill()
        uffd.register(dst)
        call, killed = uffd.move_in_vm_child(dst.addr, src.addr, PAGE, timeout_s=0)
        if killed:
            assert call.errno == "EINTR" and call.ret == -1 and call.pid != os.getpid()
        else:   # it finished before the kill: a real move of the shared mm
            assert call.errno is None and call.move == PAGE
        call, killed = uffd.move_in_vm_child(dst.addr, src.addr, PAGE, timeout_s=5)
        assert not killed
        # dst is populated now, or (killed before) src still is: either way a
        # real answer of this kernel, from a process sharing this mm
        assert call.errno in (None, "EEXIST"), call


@pytest.mark.parametrize("name", ["REMOVE", "UNMAP", "REMAP", "FORK"])
def test_mmap_changing_moves_nothing_until_the_event_is_read(name):
    from contextlib import ExitStack
    from uffdtrace.native import Mapping, PendingEvent, Uffd, event_feature, lib
    L = lib()
    with ExitStack() as stack:
        src = stack.enter_context(Mapping(2 * PAGE))
        dst = stack.enter_context(Mapping(2 * PAGE))
        changed = stack.enter_context(Mapping(PAGE))
        target = stack.enter_context(Mapping(PAGE))
        # closed first: nothing registered is unmapped while it is open
        uffd = stack.enter_context(Uffd(features=event_feature(name)))
        src.fill()
        uffd.register(dst)
        uffd.register(changed)
        event = PendingEvent(uffd, name, changed.addr, PAGE, target.addr)
        if name in ("UNMAP", "REMAP"):
            changed.disown()
        try:
            assert event.tid != os.getpid()
            for _ in range(3):   # as long as it is unread
                call = uffd.move(dst.addr, src.addr, 2 * PAGE)
                assert (call.errno, call.move) == ("EAGAIN", -errno.EAGAIN)
        finally:
            event.close()
        assert event.event == getattr(L, f"UFFD_EVENT_{name}")
        call = uffd.move(dst.addr, src.addr, 2 * PAGE)
        if name == "FORK":
            # the fork shared src with a child: not anon-exclusive, though
            # the child has exited (until src is written)
            assert (call.errno, call.move) == ("EBUSY", -errno.EBUSY)
        else:
            assert (call.errno, call.move) == (None, 2 * PAGE)


def test_a_uffd_that_asks_for_no_event_raises_none():
    # MADV_DONTNEED of a registered range raises nothing, moves go on
    from contextlib import ExitStack
    from uffdtrace.native import Mapping, PendingEvent, Uffd
    with ExitStack() as stack:
        removed = stack.enter_context(Mapping(PAGE))
        uffd = stack.enter_context(Uffd())
        uffd.register(removed)
        with pytest.raises(Exception, match="no UFFD_EVENT_REMOVE"):
            PendingEvent(uffd, "REMOVE", removed.addr, PAGE, timeout_s=0.5)


def test_workload_list_names_the_new_scenarios():
    proc = uffdtrace("workload", "--list")
    for name in ("swapped", "swap_shared", "thp_pinned", "mmap_changing", "contended"):
        assert name in proc.stdout, proc.stdout
