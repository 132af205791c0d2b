"""`bench/run` (= python -m bench): every benchmark, one table of ratios.

    bench/run                       # everything (a few minutes)
    bench/run --quick               # fewer, shorter repetitions (about a minute)
    bench/run --only move-overhead  # one section (e.g. inside the QEMU guest)
    bench/run --json results.json   # everything measured, for the record
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from . import census, collector, failures, hookcosts, kernel_paths, machine, report, startup
from .sidebyside import side_by_side
from .tracers import (Untraced, bpftrace_one_liner, hook_floor, uffdtrace_all,
                      uffdtrace_cheapest, uffdtrace_cheapest_no_state,
                      uffdtrace_cheapest_stopped,
                      uffdtrace_cheapest_tracepoint_tier, uffdtrace_no_cost_stats,
                      uffdtrace_sampled)
from .workloads import bystander_workloads, move_workloads

SECTIONS = ["move-overhead", "bystander", "collector", "failure-rate", "stacks", "startup",
            "kernel-tier", "kernel-paths", "hook-costs", "census"]
DEFAULT_SAMPLE = 100
SECTION_TITLES = {
    "move-overhead": "move overhead", "bystander": "bystander overhead",
    "collector": "collector throughput", "failure-rate": "failure recording rate",
    "stacks": "--stacks: failure recording with and without stacks",
    "startup": "startup", "kernel-tier": "kernel tier: move and bystander overhead",
    "kernel-paths": "kernel paths of the bystanders", "hook-costs": "hook costs",
    "census": "census of a multi-GiB process",
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 repetitions of ~0.15 s points")
    p.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                   help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    p.add_argument("--reps", type=int, help="repetitions (default 7, --quick 3)")
    p.add_argument("--seconds", type=float, help="seconds per measured point "
                   "(default 0.4, --quick 0.15; the collector uses 5x, the failure storms "
                   f"5x and at least {failures.MIN_SECONDS:g} s)")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"--sample-successes for the sampled uffdtrace rows (default {DEFAULT_SAMPLE})")
    p.add_argument("--uffdtrace-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `uffdtrace record` (e.g. a tier choice)")
    p.add_argument("--json", metavar="FILE", help="write every measurement to FILE")
    args = p.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 7)
    args.seconds = args.seconds or (0.15 if args.quick else 0.4)
    if args.reps < 1 or args.seconds <= 0 or args.sample < 1:
        p.error("--reps, --seconds and --sample must be positive")
    return args


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _tier() -> tuple[str, str]:
    from uffdtrace import capabilities
    caps = capabilities.probe()
    return caps.tier, caps.tier_reason


def move_conditions(args) -> list:
    extra = tuple(args.uffdtrace_arg)
    return [Untraced(), uffdtrace_cheapest(args.sample, extra),
            uffdtrace_cheapest_no_state(args.sample, extra),
            uffdtrace_sampled(args.sample, extra), uffdtrace_all(extra),
            bpftrace_one_liner(), hook_floor()]


def bystander_conditions(args) -> list:
    extra = tuple(args.uffdtrace_arg)
    return [Untraced(), uffdtrace_no_cost_stats(extra), uffdtrace_all(extra),
            bpftrace_one_liner(), hook_floor()]


def kernel_tier_conditions(args) -> list:
    """The kernel tier, and the tracepoint tier on the same kernel."""
    extra = tuple(args.uffdtrace_arg)
    return [Untraced(), uffdtrace_cheapest(args.sample, extra),
            uffdtrace_cheapest_stopped(args.sample, extra), uffdtrace_all(extra),
            uffdtrace_cheapest_tracepoint_tier(args.sample, extra), bpftrace_one_liner()]


def kernel_tier_workloads() -> list:
    """Moves, and every bystander: the ones the kernel tier no longer hooks
    (ioctls, other syscalls) and the ones that reach its move-path and GUP
    hooks without moving a page (faults, fork, O_DIRECT pins, mprotect)."""
    return move_workloads() + bystander_workloads()


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (BPF tracing and userfaultfd)", file=sys.stderr)
        return 2
    sections = list(dict.fromkeys(args.only)) if args.only else SECTIONS
    info = {**machine.describe(), "reps": args.reps, "seconds": args.seconds,
            "sample": args.sample, "sections": sections}
    results: dict = {"machine": info}
    busy: list[float] = []
    started = time.monotonic()

    tier, tier_reason = _tier()
    info["tier"], info["tier_reason"] = tier, tier_reason
    for name in sections:
        results[name], section_busy = _run_section(name, args, tier, tier_reason)
        busy += section_busy
        # A long run (the guest's kernel-tier section takes most of an hour
        # under TCG) must not lose what it measured if it is stopped later.
        log("\n".join(render_section(name, results)))
        if args.json:
            _write_json(args.json, results)

    info["loadavg_end"] = os.getloadavg()
    info["busy_cpus"] = statistics.median(busy) if busy else None
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n".join(render(results)))
    if args.json:
        _write_json(args.json, results)
    return 0


def _write_json(path: str, results: dict):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)


def _run_section(name: str, args, tier: str, tier_reason: str) -> tuple[dict, list[float]]:
    """One section's measurements, and the busy-CPU readings of its runs."""
    log(SECTION_TITLES[name])
    if name == "move-overhead":
        comp = side_by_side(move_conditions(args), move_workloads(), args.reps, args.seconds, log)
        return comp.to_json(), comp.busy_cpus
    if name == "bystander":
        comp = side_by_side(bystander_conditions(args), bystander_workloads(), args.reps,
                            args.seconds, log)
        return comp.to_json(), comp.busy_cpus
    if name == "collector":
        return collector.run(args.seconds * 5, max(1, args.reps // 3), args.sample, log), []
    if name == "failure-rate":
        return failures.run(args.seconds * 5, max(1, args.reps // 3), log,
                            tuple(args.uffdtrace_arg)), []
    if name == "stacks":
        return failures.run(args.seconds * 5, max(1, args.reps // 3), log,
                            plan=failures.stacks_configs(tuple(args.uffdtrace_arg)),
                            rates=failures.STACK_RATES), []
    if name == "startup":
        return startup.run(max(3, args.reps // 2), log), []
    if name == "kernel-tier":
        if tier != "kernel":
            return {"skipped_all": f"this machine's tier is {tier}: {tier_reason}"}, []
        comp = side_by_side(kernel_tier_conditions(args), kernel_tier_workloads(),
                            args.reps, args.seconds, log)
        return comp.to_json(), []
    if name == "kernel-paths":
        return kernel_paths.run(log), []
    if name == "hook-costs":
        return hookcosts.run(12 if args.quick else 40, args.sample, log), []
    if name == "census":
        return census.run(max(1, args.reps // 2), log), []
    raise ValueError(name)


# The table's order: what a reader looks for first.
RENDER_ORDER = ["census", "move-overhead", "kernel-tier", "bystander", "kernel-paths",
                "collector", "failure-rate", "stacks", "startup", "hook-costs"]


def render(results: dict) -> list[str]:
    info = results["machine"]
    lines = ["uffdtrace benchmarks", *report.machine(info), ""]
    for name in RENDER_ORDER:
        if name in results:
            lines += render_section(name, results) + [""]
    lines += report.targets(results)
    lines.append(f"\n(elapsed {info['elapsed_s']} s)")
    return lines


def render_section(name: str, results: dict) -> list[str]:
    data = results[name]
    if name == "census":
        return census.render(data)
    if name == "move-overhead":
        return report.comparison(
            "Move overhead: native UFFDIO_MOVE ping-pong loops (no Python per move)", data, "/s")
    if name == "kernel-tier":
        if "skipped_all" in data:
            return ["Kernel tier: move and bystander overhead (ratios only)",
                    f"  not run here: {data['skipped_all']}"]
        return report.comparison("Kernel tier: move and bystander overhead (ratios; "
                                 "untraced rates only for scale: TCG distorts absolute "
                                 "times)", data, "/s", ratios_only=True)
    if name == "bystander":
        return report.comparison("Bystander overhead: processes that move no page", data, "/s")
    if name == "kernel-paths":
        return report.kernel_paths(data)
    if name == "collector":
        return report.collector(data)
    if name == "failure-rate":
        return report.failure_rate(data)
    if name == "stacks":
        return report.stacks(data)
    if name == "startup":
        return report.startup(data)
    if name == "hook-costs":
        return report.hook_costs(data)
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
