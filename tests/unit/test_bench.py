"""The benchmark's arithmetic and its verdicts (bench/): pairing, the
zero-drop rate, and how targets and rows that could not run are shown."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench import failures, report
from bench.__main__ import render
from bench.stats import paired_ratios
from bench.tracers import StoppedRecorder, process_cpu_ns


def test_ratios_pair_each_repetition_with_its_own_baseline():
    assert paired_ratios([90, 45, None, 80], [100, 50, 100, None]) == [0.9, 0.9]


def _comparison(skipped=None):
    cell = {"rate_median": 900e3, "rate_spread": (0.98, 1.02), "ratio_median": None,
            "ratio_range": None, "cpu_ratio_median": None, "cpu_ratio_range": None,
            "tracer_cores_median": 0.0, "rates": []}
    traced = {**cell, "rate_median": 555e3, "ratio_median": 0.612, "ratio_range": (0.59, 0.63),
              "cpu_ratio_median": 0.612, "tracer_cores_median": 0.09}
    return {"conditions": ["untraced", "uffdtrace-cheap", "bpftrace"],
            "labels": {"untraced": "untraced", "uffdtrace-cheap": "uffdtrace cheap",
                       "bpftrace": "bpftrace one-liner"},
            "workload_labels": {"move-4k": "4 KiB moves"},
            "cells": {"untraced/move-4k": cell, "uffdtrace-cheap/move-4k": traced},
            "tiers": {"uffdtrace-cheap": ["tracepoint"]},
            "skipped": skipped or {}, "busy_cpus": [1.0], "problems": []}


def test_a_condition_that_cannot_run_is_a_row_that_says_why():
    lines = report.comparison("Move overhead", _comparison({"bpftrace": "bpftrace is not "
                                                                        "installed"}), "/s")
    row = next(line for line in lines if "bpftrace one-liner" in line)
    assert "not run here: bpftrace is not installed" in row
    assert any("uffdtrace cheap (tracepoint tier)" in line and "61.2%" in line
               for line in lines)


def _collector_rows(drops_by_rate):
    return {"rows": [{"config": "uffdtrace-sampled", "label": "sampled", "target_rate": rate,
                      "achieved_rate": rate or 500e3, "drops_max": drops, "drops": drops,
                      "all_failures_kept": True, "lossless_all": not drops,
                      "collector_cores": 0.1,
                      "successes_recorded": 1, "failures_recorded": 1, "failures_made": 1,
                      "unsent": 0}
                     for rate, drops in drops_by_rate.items()],
            "skipped": {}, "fail_every": 1000, "seconds": 2}


def _verdict(lines, text):
    return next(line for line in lines if text in line)


def test_zero_drop_rate_stops_at_the_first_rate_that_dropped():
    coll = _collector_rows({50_000: 0, 100_000: 0, 200_000: 5, 400_000: 0})
    lines = report.targets({"collector": coll})
    zero = _verdict(lines, "zero drops up to 200,000")
    assert "NOT MET" in zero and "up to 100k/s" in zero
    coll = _collector_rows({50_000: 0, 100_000: 0, 200_000: 0, 0: 9})
    assert "[MET    ]" in _verdict(report.targets({"collector": coll}), "zero drops up to")


def test_targets_not_measured_say_not_run_with_the_reason():
    lines = report.targets({"kernel-tier": {"skipped_all": "this machine's tier is tracepoint"}})
    kernel = _verdict(lines, "kernel tier")
    assert "NOT RUN" in kernel and "this machine's tier is tracepoint" in kernel
    verdicts = [line for line in lines if line.startswith("  [")]
    assert len(verdicts) == len(report.TARGETS)
    assert all("NOT RUN" in line for line in verdicts)


def test_kernel_tier_row_is_shown_even_when_not_run():
    results = {"machine": {"cpu": "cpu", "cpus": 2, "memory_gib": 1, "kernel": "k",
                           "bpftrace": None, "loadavg_start": (0.5, 0, 0),
                           "loadavg_end": (0.6, 0, 0), "busy_cpus": 1.0, "date": "d",
                           "reps": 7, "seconds": 0.4, "elapsed_s": 1},
               "kernel-tier": {"skipped_all": "no kprobes here"}}
    text = "\n".join(render(results))
    assert "Kernel tier: move and bystander overhead (ratios only)\n  not run here: no kprobes here" in text
    assert "[NOT RUN] bystander ioctl overhead <= 3% (kernel tier): no kprobes here" in text


def _failure_row(config, storm, rate, made, recorded, drops=0, tier="tracepoint", reps=1):
    lossless = made == recorded and not drops
    return {"config": config, "storm": storm, "label": {"uffdtrace": "uffdtrace record",
                                                        "uffdtrace-no-state": "uffdtrace record "
                                                        "--no-state-at-exit"}[config],
            "storm_label": storm, "tier": tier, "target_rate": rate,
            "achieved_rate": rate or 300e3, "made": made, "recorded": recorded,
            "drops": drops, "drops_max": drops, "lossless": lossless,
            "lossless_all": lossless, "collector_cores": 0.5, "collector_us": 40.0,
            "lag_s": 0.1,
            "diagnoses": {"dst_populated/observed": recorded}}


def _failure_rate(*rows):
    return {"rows": list(rows), "skipped": {}, "problems": [], "seconds": 2, "reps": 1}


def test_the_failure_figure_is_the_highest_rate_before_the_first_loss():
    res = _failure_rate(
        _failure_row("uffdtrace", "eexist", 10_000, 20_000, 20_000),
        _failure_row("uffdtrace", "eexist", 50_000, 100_000, 100_000),
        _failure_row("uffdtrace", "eexist", 100_000, 200_000, 150_000, drops=50_000),
        _failure_row("uffdtrace", "pinned", 10_000, 20_000, 20_000),
        _failure_row("uffdtrace", "pinned", 50_000, 100_000, 99_999),   # lost one, no drop
        _failure_row("uffdtrace-no-state", "eexist", 10_000, 20_000, 12_000, drops=8_000))
    figures = {(f["config"], f["storm"]): f["rate"] for f in report.failure_figures(res)}
    assert figures == {("uffdtrace", "eexist"): 50_000, ("uffdtrace", "pinned"): 10_000,
                       ("uffdtrace-no-state", "eexist"): 0.0}
    verdict = _verdict(report.targets({"failure-rate": res}), ">= 50,000 failures/s")
    # one storm below 50k/s is enough to miss the target
    assert "NOT MET" in verdict and "pinned: 10k/s" in verdict and "eexist: 50k/s" in verdict
    assert "--no-state-at-exit, eexist: none" in verdict
    text = "\n".join(report.failure_rate(res))
    assert "uffdtrace record (tracepoint tier), pinned: 10k/s" in text
    assert "150000/200000" in text and "dst_populated observed 100%" in text


def test_stacks_cost_is_the_flat_out_difference_of_each_pair():
    def row(config, storm, rate, achieved, collector_us, made=100_000, recorded=100_000):
        return {**_failure_row("uffdtrace", storm, rate, made, recorded), "config": config,
                "label": f"record {config}", "achieved_rate": achieved,
                "collector_us": collector_us}
    res = _failure_rate(row("each", "eexist", 10_000, 10_000, 30.0),
                        row("each", "eexist", 0, 400_000, 20.0),          # 2.5 us a failure
                        row("each-stacks", "eexist", 0, 250_000, 26.0),   # 4 us a failure
                        row("default", "mixed", 0, 200_000, 40.0),
                        row("stacks", "mixed", 0, 100_000, 50.0, recorded=90_000))
    (eexist, mixed) = failures.stacks_cost(res)
    assert (eexist["storm"], round(eexist["thread_us"], 6), eexist["collector_us"]) == \
        ("eexist", 1.5, 6.0)
    assert (mixed["thread_us"], mixed["collector_us"], mixed["lossless"]) == (5.0, 10.0,
                                                                            (True, False))
    text = "\n".join(report.stacks(res))
    assert "eexist: +1.50 us in the failing thread (of 2.50 us without), +6.0 us of " \
        "collector CPU (of 20.0 us without)" in text
    assert "mixed: +5.00 us" in text and "a bound only" in text


def test_kernel_tier_failure_figures_are_reported_without_a_target():
    res = _failure_rate(_failure_row("uffdtrace", "eexist", 10_000, 20_000, 20_000,
                                     tier="kernel"))
    lines = report.targets({"failure-rate": res})
    assert "[FIGURE ] kernel tier: failures/s" in _verdict(lines, "kernel tier: failures/s")
    assert "NOT RUN" in _verdict(lines, "tracepoint tier: >= 50,000")


def _reader_hook_costs(median, q1, q3):
    cost = {"median_ns": median, "q1": q1, "q3": q3}
    return {"rounds": 40, "untraced_ns": [1000, 150, 100],
            "reader_cost": {"label": "reader", "cost": [cost, cost, cost]}}


@pytest.mark.parametrize("median, q1, q3, met", [
    (-2, -30, 25, True),     # within the noise, and small
    (20, 5, 40, False),      # measurable: the whole interquartile range is above zero
    (200, -50, 600, False),  # too noisy to call nothing: the median is 20% of a move
])
def test_successes_pay_nothing_when_the_readers_cost_is_within_noise_and_small(median, q1, q3,
                                                                              met):
    line = _verdict(report.targets({"hook-costs": _reader_hook_costs(median, q1, q3)}),
                    "pay nothing")
    assert ("[MET    ]" if met else "[NOT MET]") in line


def test_reader_cost_end_to_end_pairs_each_repetition():
    comp = _comparison()
    comp["conditions"].append("uffdtrace-cheap-no-state")
    comp["cells"]["uffdtrace-cheap/move-4k"]["rates"] = [500e3, 550e3, 600e3]
    comp["cells"]["uffdtrace-cheap-no-state/move-4k"] = {
        **comp["cells"]["uffdtrace-cheap/move-4k"], "rates": [520e3, 540e3, 590e3]}
    line = _verdict(report.targets({"move-overhead": comp}), "pay nothing")
    # paired 96.2%, 101.9%, 101.7%: the range holds 100%
    assert "[MET    ]" in line and "101.7% [96-102]" in line


def test_kernel_tier_bystanders_each_need_97_percent():
    comp = _comparison()
    comp["workload_labels"] = {"move-4k": "4 KiB moves", "fault": "faults", "fork": "forks",
                               "direct_read": "O_DIRECT"}
    comp["skipped_workloads"] = {"direct_read": "no zram"}
    comp["conditions"] = ["untraced", "uffdtrace-cheap"]
    for wl, ratio in (("fault", 0.99), ("fork", 0.96)):
        comp["cells"][f"uffdtrace-cheap/{wl}"] = {**comp["cells"]["uffdtrace-cheap/move-4k"],
                                                  "ratio_median": ratio,
                                                  "cpu_ratio_median": ratio}
        comp["cells"][f"untraced/{wl}"] = comp["cells"]["untraced/move-4k"]
    line = _verdict(report.targets({"kernel-tier": comp}), "each bystander")
    assert "[NOT MET]" in line and "fork 96.0%" in line and "not run here: direct_read" in line
    assert "hooks only" not in line   # not measured: not claimed
    # the collector-stopped condition is shown beside the target, not judged by it
    for wl, ratio in (("fault", 1.01), ("fork", 0.99)):
        comp["cells"][f"uffdtrace-cheap-stopped/{wl}"] = {
            **comp["cells"][f"uffdtrace-cheap/{wl}"], "ratio_median": ratio}
    line = _verdict(report.targets({"kernel-tier": comp}), "each bystander")
    assert "[NOT MET]" in line
    assert "collector stopped while measured (hooks only): fault 101.0%, fork 99.0%" in line
    text = "\n".join(report.comparison("Kernel tier", comp, "/s", ratios_only=True))
    assert "O_DIRECT: not run here: no zram" in text
    # ratios only (TCG): the untraced rate is shown for scale, traced rates are not
    assert "900k/s" in text and "555k/s" not in text


def test_kernel_paths_show_calls_per_operation_and_what_is_hooked():
    res = {"functions": ["vm_normal_folio", "handle_mm_fault", "pin_user_pages_fast"],
           "hooked": ["vm_normal_folio", "pin_user_pages_fast"],
           "missing": {"gup_put_folio": "not in kallsyms (absent or inlined)"},
           "rounds": {"fault": 2000, "direct_read": 2000},
           "per_op": {"fault": {"vm_normal_folio": 16.0, "handle_mm_fault": 16.0},
                      "direct_read": {"pin_user_pages_fast": 1.0}}}
    lines = report.kernel_paths(res)
    assert any(line.split() == ["*", "vm_normal_folio", "16.00", "-"] for line in lines)
    assert any(line.split() == ["handle_mm_fault", "16.00", "-"] for line in lines)
    assert "hooked calls per operation: fault 16.0, direct_read 1.0" in "\n".join(lines)
    assert "gup_put_folio (not in kallsyms" in lines[-1]
    assert report.kernel_paths({"skipped": "no kprobes"})[1] == "  not run here: no kprobes"


# --- settling: a tracer behind on its backlog is not charged to the next workload ---

class _BusyThenIdle:
    """A real process standing in for a tracer: it burns CPU for `busy_s`
    (a backlog being drained), then sleeps; cpu_ns() as the bench reads a
    tracer's."""

    def __init__(self, busy_s: float):
        code = ("import time; t = time.monotonic()\n"
                f"while time.monotonic() - t < {busy_s}: pass\n"
                "time.sleep(60)")
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    def cpu_ns(self) -> int:
        return process_cpu_ns(self.proc.pid)

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_settle_waits_for_the_tracer_to_catch_up():
    from bench.sidebyside import settle
    tracer = _BusyThenIdle(busy_s=1.0)
    try:
        waited = settle(tracer, idle_cores=0.0, limit_s=20)
    finally:
        tracer.close()
    assert waited is not None and waited >= 0.5


def test_settle_gives_up_on_a_tracer_that_never_catches_up():
    from bench.sidebyside import settle
    tracer = _BusyThenIdle(busy_s=60.0)
    try:
        assert settle(tracer, idle_cores=0.0, limit_s=1.0) is None
    finally:
        tracer.close()


def test_a_stopped_recorder_is_stopped_only_while_a_workload_is_measured():
    """The hooks-only condition: its process takes no CPU while measured
    (state T), and runs again between workloads, to drain and be stopped."""
    def state(pid: int) -> str:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        cond = StoppedRecorder("stopped", "stopped")
        cond.pid = proc.pid
        with cond.measuring():
            time.sleep(0.1)
            assert state(proc.pid) == "T"
            cpu = process_cpu_ns(proc.pid)
            time.sleep(0.2)
            assert process_cpu_ns(proc.pid) == cpu
        time.sleep(0.1)
        assert state(proc.pid) in ("R", "S")
    finally:
        proc.kill()
        proc.wait()
