"""The benchmark's arithmetic and its verdicts (bench/): pairing, the
zero-drop rate, and how targets and rows that could not run are shown."""
from __future__ import annotations

from bench import report
from bench.__main__ import render
from bench.stats import paired_ratios


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
                      "all_failures_kept": True, "collector_cores": 0.1,
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
    assert all("NOT RUN" in line for line in lines[1:])


def test_kernel_tier_row_is_shown_even_when_not_run():
    results = {"machine": {"cpu": "cpu", "cpus": 2, "memory_gib": 1, "kernel": "k",
                           "bpftrace": None, "loadavg_start": (0.5, 0, 0),
                           "loadavg_end": (0.6, 0, 0), "busy_cpus": 1.0, "date": "d",
                           "reps": 7, "seconds": 0.4, "elapsed_s": 1},
               "kernel-tier": {"skipped_all": "no kprobes here"}}
    text = "\n".join(render(results))
    assert "Kernel tier: move and bystander overhead (ratios only)\n  not run here: no kprobes here" in text
    assert "[NOT RUN] bystander ioctl overhead <= 3% (kernel tier): no kprobes here" in text
