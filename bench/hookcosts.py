"""Where the time goes: the kernel-side cost of each hook and of each piece
of uffdtrace's BPF, per operation, without any collector process.

Every variant is compiled once in this process; then, many times over in a
shuffled order, one variant at a time is attached, a short burst of each
workload runs, and it is detached again.  Each burst is paired with the
untraced burst of the same round, so the reported cost is a median of
differences taken seconds apart (with the interquartile range), in CPU time
of the looping thread.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

from uffdtrace import bpfprog, stateatexit
from uffdtrace.native import PAGE_SIZE, bystander_loop

from .stats import median
from .tracers import BPFTRACE_ONE_LINER, MOVE_CMD
from .workloads import MoveWorkload

EMPTY_IOCTL_HOOKS = """
TRACEPOINT_PROBE(syscalls, sys_enter_ioctl) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_ioctl) { return 0; }
"""
# The bpftrace one-liner's logic (tracers.BPFTRACE_ONE_LINER), written for
# bcc so that both are attached the same way.
ONE_LINER_IN_BCC = """
BPF_HASH(inmove, u32, u64, 10240);
BPF_PERCPU_HASH(result, s64, u64, 10240);
TRACEPOINT_PROBE(syscalls, sys_enter_ioctl) {
    if ((u32)args->cmd != MOVE_CMD) return 0;
    u32 tid = bpf_get_current_pid_tgid(); u64 one = 1;
    inmove.update(&tid, &one);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_ioctl) {
    u32 tid = bpf_get_current_pid_tgid();
    if (!inmove.lookup(&tid)) return 0;
    s64 ret = args->ret; u64 zero = 0, *n = result.lookup_or_try_init(&ret, &zero);
    if (n) (*n)++;
    inmove.delete(&tid);
    return 0;
}
""".replace("MOVE_CMD", MOVE_CMD)
RAW_SYSCALL_HOOKS = """
#include <asm/ptrace.h>
#include <asm/unistd.h>
RAW_TRACEPOINT_PROBE(sys_enter) { if (ctx->args[1] != __NR_ioctl) return 0; return 0; }
RAW_TRACEPOINT_PROBE(sys_exit) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0]; long nr = 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    return 0;
}
"""
BIG = bpfprog.DEFAULT_RINGBUF_PAGES   # room for every sampled event: nobody drains here
NO_READER_FLAG = " --no-state-at-exit"


def cheapest(sample: int) -> str:
    """The configuration to leave running."""
    return f"uffdtrace --sample-successes {sample} --no-cost-stats"


def _uffdtrace(reader: stateatexit.StateReader, **options) -> tuple[str, stateatexit.StateReader]:
    """uffdtrace's program as `record` compiles it (tracepoint tier), with the
    page-state reader `reader` (installed once the program is loaded)."""
    config = bpfprog.ProgramConfig(ringbuf_pages=BIG, success_ringbuf_pages=BIG, **options)
    return bpfprog.program_text(config, reader.defines()), reader


def _unavailable(reader: stateatexit.StateReader) -> str:
    """What a row with the reader on says when this kernel cannot have it."""
    return "" if reader.usable else f" (page-state reader unavailable: {reader.reason})"


def variants(sample: int, reader: stateatexit.StateReader
             ) -> list[tuple[str, str, stateatexit.StateReader]]:
    """(label, program, its page-state reader).  uffdtrace's rows have the
    reader on, as `record` runs, but where the row says otherwise."""
    off = _unavailable(reader)
    no_reader = stateatexit.off(NO_READER_FLAG.strip())
    return [
        ("empty programs on the 2 ioctl tracepoints", EMPTY_IOCTL_HOOKS, no_reader),
        ("  + an empty raw tlb_flush hook", EMPTY_IOCTL_HOOKS
         + "RAW_TRACEPOINT_PROBE(tlb_flush) { return 0; }\n", no_reader),
        ("empty raw sys_enter/sys_exit hooks instead (every syscall)", RAW_SYSCALL_HOOKS,
         no_reader),
        ("bpftrace one-liner's logic, in bcc", ONE_LINER_IN_BCC, no_reader),
        ("uffdtrace --failed-only --no-cost-stats" + off,
         *_uffdtrace(reader, failed_only=True, cost_stats=False)),
        (cheapest(sample) + off, *_uffdtrace(reader, success_sample=sample, cost_stats=False)),
        (cheapest(sample) + NO_READER_FLAG,
         *_uffdtrace(no_reader, success_sample=sample, cost_stats=False)),
        # the fault-waiter check at each move's entry (who it wakes: the
        # fd's uffd context, two queue heads), off: its cost is the difference
        (cheapest(sample) + NO_READER_FLAG + ", no fault-waiter check",
         *_uffdtrace(dataclasses.replace(no_reader, waiters_wanted=False),
                     success_sample=sample, cost_stats=False)),
        (f"uffdtrace --sample-successes {sample}" + off,
         *_uffdtrace(reader, success_sample=sample)),
    ]


class _Attachable:
    """A compiled program whose probes can be attached and detached at will."""

    def __init__(self, label: str, text: str, reader: stateatexit.StateReader):
        import bcc
        self.label = label
        self.bpf = bcc.BPF(text=text.encode(), cflags=bpfprog.cflags())
        reader.install(self.bpf)
        self.tracepoints = list(self.bpf.tracepoint_fds)
        self.raw = list(self.bpf.raw_tracepoint_fds)
        self.detach()

    def attach(self):
        for tp in self.tracepoints:
            category, event = tp.decode().split(":")
            self.bpf.attach_tracepoint(tp=tp, fn_name=f"tracepoint__{category}__{event}".encode())
        for tp in self.raw:
            self.bpf.attach_raw_tracepoint(tp=tp, fn_name=b"raw_tracepoint__" + tp)

    def detach(self):
        for tp in self.tracepoints:
            self.bpf.detach_tracepoint(tp)
        for tp in self.raw:
            self.bpf.detach_raw_tracepoint(tp)

    def close(self):
        self.bpf.cleanup()


WORKLOADS = [("4 KiB move", 20_000), ("FIONREAD ioctl", 50_000), ("getppid", 50_000)]


def _paired_cost(runs: list[list[float]], base: list[list[float]]) -> list[dict]:
    """Per workload: the median and interquartile range of runs[r] - base[r]
    over rounds r (both measured in the same round, seconds apart)."""
    cols = []
    for i in range(len(WORKLOADS)):
        diffs = sorted(x[i] - b[i] for x, b in zip(runs, base))
        cols.append({"median_ns": median(diffs), "q1": diffs[len(diffs) // 4],
                     "q3": diffs[3 * len(diffs) // 4]})
    return cols


def run(rounds: int, sample: int, log: Callable[[str], None]) -> dict:
    reader = stateatexit.prepare()
    progs = [_Attachable(*v) for v in variants(sample, reader)]
    mover = MoveWorkload("hookcost", "4 KiB moves", PAGE_SIZE, slots=64)
    mover.setup()
    samples: dict[str, list[list[float]]] = {"untraced": [], **{p.label: [] for p in progs}}
    try:
        for r in range(rounds):
            if r % 10 == 0:
                log(f"  round {r + 1}/{rounds}")
            order = [None, *progs]
            random.shuffle(order)
            for prog in order:
                if prog:
                    prog.attach()
                try:
                    move = mover.run(WORKLOADS[0][1])
                    per_op = [move.cpu_ns / move.ops]
                    for kind, count in (("ioctl", WORKLOADS[1][1]), ("getppid", WORKLOADS[2][1])):
                        per_op.append(bystander_loop(kind, count)[1] / count)
                finally:
                    if prog:
                        prog.detach()
                samples[prog.label if prog else "untraced"].append(per_op)
    finally:
        mover.close()
        for p in progs:
            p.close()
    base = samples["untraced"]
    rows = [{"label": label, "cost": _paired_cost(runs, base)}
            for label, runs in samples.items() if label != "untraced"]
    # what the page-state reader adds, without the untraced noise in between
    on = cheapest(sample) + _unavailable(reader)
    reader_cost = {"label": "page-state reader on minus off (" + cheapest(sample) + ")",
                   "reader": reader.describe(),
                   "cost": _paired_cost(samples[on], samples[cheapest(sample) + NO_READER_FLAG])}
    return {"rounds": rounds, "workloads": [w for w, _ in WORKLOADS],
            "untraced_ns": [median([b[i] for b in base]) for i in range(len(WORKLOADS))],
            "rows": rows, "reader_cost": reader_cost}
