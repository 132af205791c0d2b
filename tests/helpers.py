"""Helpers the tests share: run the real CLI and parse its output."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# scenario -> (cause, underlying cause of a partial move): what a correct
# diagnosis says in every tier (the evidence level differs by tier)
SCENARIO_CAUSES = {
    "ok": ("ok", None),
    "thp": ("ok", None),
    "src_hole_allowed": ("ok", None),
    "pinned": ("partial", "page_pinned"),
    "partial": ("partial", "dst_populated"),
    "ksm": ("page_ksm", None),
    "fork_shared": ("page_shared", None),
    "dst_populated": ("dst_populated", None),
    "src_hole": ("src_hole", None),
    "misaligned": ("invalid_misaligned", None),
    "dst_not_registered": ("invalid_dst_not_registered", None),
    "vma_shared": ("invalid_vma_shared", None),
    "src_readonly": ("invalid_src_not_writable", None),
    "cross_mm": ("invalid_cross_mm", None),
    # swap, unsplittable THP, mmap_changing (issue 16)
    "swapped": ("ok", None),
    "swap_shared": ("swap_not_exclusive", None),
    "thp_pinned": ("thp_split_failed", None),
    "mmap_changing": ("mmap_changing", None),
    # issue 16: request, VMA and huge-page classes
    "zero_len": ("invalid_zero_len", None),
    "bad_mode": ("invalid_bad_mode", None),
    "crosses_vma": ("invalid_crosses_vma", None),
    "dst_thp": ("dst_populated", None),        # the dst PMD is a huge page
    "huge_zero_page": ("ok", None),            # moved whole (6.9+: zero pages move)
    # the move paths (questions 6, 7)
    "zero_page": ("ok", None),
    "thp_split": ("ok", None),
    # issue 16, question 9: threads faulting on the pages it moves
    "fault_wake": ("ok", None),
    # issue 16: contended -- success, or the alt_errno of OUTCOME_CAUSES
    "contended": ("ok", None),
}

# (scenario, errno) -> (cause, underlying): a scenario whose calls may end
# another way than SCENARIO_CAUSES says (its Scenario.alt_errno)
OUTCOME_CAUSES = {
    # Linux 6.18: moved, then the rerun step's EEXIST (scenarios.py _contended)
    ("contended", "EEXIST"): ("moved_then_eexist", None),
}


def expected_cause(scenario: str, errno: str | None = None) -> tuple[str, str | None]:
    """What a correct diagnosis of a call of `scenario` that returned
    `errno` says (cause, underlying cause of a partial move)."""
    return OUTCOME_CAUSES.get((scenario, errno), SCENARIO_CAUSES[scenario])


# Question 6: the one path each successful move of these scenarios takes,
# given what its setup found (the workload's facts); None: not asserted
def scenario_path(scenario: str, facts: dict) -> str | None:
    needs = {"thp": ("src_thp", "pmd"), "huge_zero_page": ("src_huge_zero", "huge_zero_pmd"),
             "zero_page": ("src_zero_page", "zero_page")}
    if scenario in needs:
        fact, path = needs[scenario]
        return path if facts.get(fact) else None
    return {"ok": "pte", "thp_split": "pte", "src_hole_allowed": "src_hole",
            "swapped": "swap_entry"}.get(scenario)


def assert_move_path(scenario: str, facts: dict, move: dict, splits_hooked: bool):
    """A successful move record of `scenario` counts its pages on its
    scenario's path alone (question 6) -- in the kernel tier, where this
    kernel inlines the PTE step (6.12), as pages no step was seen moving; in
    the tracepoint tier, the first PATH_READS destination entries, read at
    exit -- and a kernel-tier thp_split move the one THP it split (question
    7; the tracepoint tier sees no split)."""
    from uffdtrace import movepaths
    from uffdtrace.native import lib
    path = scenario_path(scenario, facts)
    if path is None:
        return
    p = movepaths.paths(move, 4096)
    assert p is not None, move
    pmd = path in ("pmd", "huge_zero_pmd")
    units = move["len"] // (movepaths.HUGE_PAGES * 4096 if pmd else 4096)
    want = dict.fromkeys(p.counts, 0)
    if p.read_at_exit:
        want[path] = read = min(units, movepaths.PATH_READS)
        unseen = (units - read) * (movepaths.HUGE_PAGES if pmd else 1)
        assert (p.counts, p.unseen_pages) == (want, unseen), (scenario, move)
        assert p.kinds_told_apart and (p.thp_splits, p.split_pages) == (0, 0), move
        return
    if pmd or move["kflags"] & lib().UT_K_PTE_STEPS:
        want[path] = units
        assert (p.counts, p.unseen_pages) == (want, 0), (scenario, move)
        assert p.kinds_told_apart, move
    else:
        assert (p.counts, p.unseen_pages) == (want, units), (scenario, move)
    split = scenario == "thp_split" and facts.get("src_thp") and splits_hooked
    assert (p.thp_splits, p.split_pages) == ((1, movepaths.HUGE_PAGES) if split else (0, 0)), \
        (scenario, move)


# EINVAL from the VMAs: explained by the VMAs the kernel's VMA tree held
# when the failed move returned (bpf/ut_vmastate.h), in both tiers, so the
# memory may be unmapped right after the call (--hold 0).  Every other
# scenario is observed in the kernel too (the request itself, the ioctl
# hook, or the page state read when a failed move returns).
VMA_SCENARIOS = frozenset({"dst_not_registered", "vma_shared", "src_readonly",
                           "crosses_vma"})


MOVE_KEY = ("tid", "dst", "src", "len")


def paired(calls: list[dict], moves: list) -> list[tuple[dict, object]]:
    """Each call a workload made, with the traced move that is it: the same
    thread and request, the earliest not taken yet (time order across
    threads is not the list's: `contended` lists its movers' calls in page
    order).  moves: TracedMoves or trace records; a call with no such move
    (a success the tracer dropped) is paired with None."""
    def field(m, name):
        return m[name] if isinstance(m, dict) else getattr(m.event, name)

    by_key: dict[tuple, list] = {}
    for m in sorted(moves, key=lambda m: field(m, "ts_ns")):
        by_key.setdefault(tuple(field(m, k) for k in MOVE_KEY), []).append(m)
    out = []
    for c in calls:
        same = by_key.get(tuple(c[k] for k in MOVE_KEY))
        out.append((c, same.pop(0) if same else None))
    return out


def seen_calls(calls: list[dict], moves: list, lost: int) -> list[dict]:
    """The calls the tracer saw: any it missed must be among the `lost` it
    counted (uffdtrace.records.events_lost).  Measured on 7.3 (one vCPU): the movers of
    `contended` preempt each other inside the fentry programs, and the
    kernel skips a program a thread enters while another run of it is under
    way on that CPU (48 moves of 1280 missed, as many recursion_misses in
    the userfaultfd_ioctl program's fdinfo)."""
    pairs = paired(calls, moves)
    unseen = [c for c, m in pairs if m is None]
    assert len(unseen) <= lost, (f"{len(unseen)} moves unseen, {lost} counted lost",
                                 unseen[:5])
    if unseen:
        print(f"{len(unseen)} moves unseen by the tracer, {lost} counted lost "
              "(recursion misses, ring buffers full)")
    return [c for c, m in pairs if m is not None]


def failure_story(records: list[dict], pid: int) -> list[tuple]:
    """A process's failures as the trace has them, one tuple a record, to
    say in a failed assertion why a livelock counted what it counted."""
    out = []
    for r in records:
        if r.get("pid") != pid:
            continue
        if r["type"] == "move":
            state = r.get("src_state") or {}
            out.append(("move", r["ts_ns"], r["tid"], r["src"], r["errno"],
                        r["diagnosis"]["cause"], state.get("pfn"), state.get("flags")))
        elif r["type"] in ("repeat", "livelock"):
            out.append((r["type"], r.get("closed_by") or r.get("state"), r.get("count")
                        or r.get("failures"), r["first_ts_ns"], r.get("last_ts_ns")))
    return out


def trace_records(path) -> list[dict]:
    """A trace's records as every reader sees them, through uffdtrace's own
    reader: a `successes` record comes as its move records, a partial last
    line (a recorder killed mid-write) is left out."""
    from uffdtrace.tracereader import iter_records
    return list(iter_records(str(path)))


def evidence_of(scenario: str, tier: str, errno: str | None = None) -> str:
    """The evidence level the diagnosis of a call of `scenario` that
    returned `errno` has in `tier`."""
    if scenario == "cross_mm" and tier == "tracepoint":
        return "inferred"       # no ioctl hook: the unwritten `move` says it
    if expected_cause(scenario, errno)[0] == "moved_then_eexist" and tier == "tracepoint":
        return "inferred"       # the page at dst: moved by this call or an earlier one?
    # mmap_changing too: the uffd's counter and its unread event are read
    # when the move returns (bpf/ut_uffdstate.h), in both tiers
    return "observed"


def uffdtrace(*args: str, timeout: float = 120, check_clean_stderr: bool = True,
              preexec=None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI (python -m uffdtrace) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "uffdtrace", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, preexec_fn=preexec, **kw)
    if check_clean_stderr:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def uffdtrace_json(*args: str, **kw) -> dict:
    proc = uffdtrace(*args, "--json", **kw)
    assert proc.stdout.strip(), f"no JSON on stdout (rc={proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def traced_workload(session, *args, expect_outcomes: bool = True):
    """Run a workload while polling the session; its JSON and traced moves.
    expect_outcomes=False accepts a run whose moves did not end as the
    scenario expects (the workload then exits 1, still printing its JSON)."""
    session.drain()
    # stdout and stderr in files: a pipe nobody reads while the workload runs
    # would block a workload whose JSON outgrows it (contended: MBs)
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", *args,
                                 "--json"], cwd=ROOT, stdout=stdout, stderr=stderr, text=True)
        items = []
        while proc.poll() is None:
            items += session.poll(50)
        stdout.seek(0)
        stderr.seek(0)
        stdout, stderr = stdout.read(), stderr.read()
    items += session.drain()
    assert proc.returncode == 0 or (not expect_outcomes and proc.returncode == 1), stderr
    out = json.loads(stdout)
    pids = {c["pid"] for c in out["calls"]} | {out["pid"]}
    moves = [i for i in items if hasattr(i, "diagnosis") and i.event.pid in pids]
    return out, moves


def record_then_sigkill(trace, seconds: float = 2.0):
    """`uffdtrace record` of a steady mixed workload, SIGKILLed (with its
    workload) `seconds` after it said it was recording: what a crashed
    recorder leaves behind.  (Not a fixed time from launch: compiling the
    BPF program takes seconds, more on a loaded machine.)"""
    import os
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "record", "-o", str(trace),
                             "--", sys.executable, "-m", "uffdtrace", "workload", "-s", "mixed",
                             "-d", "0", "--rate", "300"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        banner = proc.stderr.readline()
        assert "Recording" in banner, banner
        time.sleep(seconds)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
