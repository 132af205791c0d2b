"""The conditions a workload runs under: untraced, uffdtrace, bpftrace.

Each tracer is a separate process, started and stopped around a batch of
measurements, as a user would run it.  Its CPU time is read from /proc so the
collector's cost is measured, not assumed.
"""
from __future__ import annotations

import glob
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from uffdtrace import records
from uffdtrace.native import lib

ROOT = Path(__file__).resolve().parent.parent
TRACE_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None   # traces can be large
# A compile under QEMU's TCG has taken more than 120 s (kernel tier, every hook).
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
MOVE_CMD = f"{lib().UFFDT_IOC_MOVE:#x}"   # UFFDIO_MOVE (bpf/uffd_move_abi.h)

# What a user would otherwise run on the same hooks: count the results of
# UFFDIO_MOVE ioctls (sys_exit_ioctl, entered with cmd == UFFDIO_MOVE).
BPFTRACE_ONE_LINER = (
    f"tracepoint:syscalls:sys_enter_ioctl /args->cmd == {MOVE_CMD}/ {{ @inmove[tid] = 1 }} "
    "tracepoint:syscalls:sys_exit_ioctl /@inmove[tid]/ "
    "{ @result[args->ret] = count(); delete(@inmove[tid]) }")


def process_cpu_ns(pid: int) -> int:
    """CPU time used by every thread of `pid` (schedstat: ns, not ticks)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass   # a thread that just exited
    return total


def _perf_event_fds(pid: int) -> int:
    n = 0
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            n += os.readlink(fd) == "anon_inode:[perf_event]"
        except OSError:
            pass
    return n


@dataclass
class TracerReport:
    """What a tracer said about the run it traced."""

    moves_seen: int | None = None       # UFFDIO_MOVEs the tracer saw (all processes)
    ready_s: float | None = None        # start until attached
    detail: dict = field(default_factory=dict)


class Condition:
    """What every condition has: a process (or none) and what it does
    around each measured workload run."""

    pid: int | None = None

    def measuring(self):
        """Around each measured workload run (see StoppedRecorder)."""
        return nullcontext()


class Untraced(Condition):
    key = "untraced"
    label = "untraced"

    def unavailable(self) -> str | None:
        return None

    def start(self):
        pass

    def cpu_ns(self) -> int:
        return 0

    def stop(self) -> TracerReport:
        return TracerReport()


class TracerStartError(RuntimeError):
    """A tracer process that never said it was ready."""


class TracerStopError(RuntimeError):
    """A tracer process that did not stop on SIGINT in STOP_TIMEOUT_S."""


class _Process(Condition):
    """A tracer process that says on one of its output lines when it is ready."""

    ready_marker = ""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None
        self.spawned_at: float | None = None
        self.pid: int | None = None

    def _spawn(self, argv: list[str], **kw):
        t0 = self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, text=True, cwd=ROOT, **kw)
        self.pid = self.proc.pid
        stream = self.proc.stderr if kw.get("stderr") == subprocess.PIPE else self.proc.stdout
        self._early = self._wait_ready(stream, t0)
        self.ready_s = time.monotonic() - t0

    def _wait_ready(self, stream, t0: float) -> list[str]:
        lines: list[str] = []
        sel = selectors.DefaultSelector()
        sel.register(stream, selectors.EVENT_READ)
        try:
            while time.monotonic() - t0 < START_TIMEOUT_S:
                if not sel.select(timeout=1):
                    continue
                line = stream.readline()
                if not line:
                    break
                lines.append(line)
                if self.ready_marker in line:
                    return lines
        finally:
            sel.close()
        self._kill()
        raise TracerStartError(f"{self.label} did not start within {START_TIMEOUT_S} s: "
                               f"{''.join(lines)[-500:]}")

    def cpu_ns(self) -> int:
        return process_cpu_ns(self.pid) if self.pid else 0

    def _interrupt(self) -> tuple[str, str]:
        """SIGINT, repeated: bpftrace 0.17 misses a SIGINT that arrives just
        before it blocks in epoll_wait without a timeout."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            self.proc.send_signal(signal.SIGINT)
            try:
                out, err = self.proc.communicate(timeout=2)
                return out or "", err or ""
            except subprocess.TimeoutExpired:
                continue
        # SIGABRT makes a Python tracer (PYTHONFAULTHANDLER) print where it hangs
        self.proc.send_signal(signal.SIGABRT)
        out, err = self.proc.communicate()
        raise TracerStopError(f"{self.label} did not stop on SIGINT within {STOP_TIMEOUT_S} s: "
                              f"{(err or out)[-3000:]}")

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class Uffdtrace(_Process):
    """`uffdtrace record`, the tracer people leave running."""

    ready_marker = "Recording UFFDIO_MOVE"

    def __init__(self, key: str, label: str, args: tuple[str, ...] = (), keep_moves: bool = False):
        super().__init__()
        self.key, self.label, self.args = key, label, args
        self.keep_moves = keep_moves     # parse every move record (collector section)
        self.path: str | None = None

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "tracing needs root"
        return None

    def start(self):
        fd, self.path = tempfile.mkstemp(prefix="uffdtrace-bench-", suffix=".jsonl",
                                         dir=TRACE_DIR)
        os.close(fd)
        try:
            self._spawn([sys.executable, "-m", "uffdtrace", "record", "-o", self.path,
                         *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        except BaseException:
            os.unlink(self.path)
            raise

    def stop(self) -> TracerReport:
        _, err = self._interrupt()
        try:
            return self._read_trace(err)
        finally:
            os.unlink(self.path)

    def _read_trace(self, stderr: str) -> TracerReport:
        header = footer = aggregates = None
        moves = failures = 0
        by_pid: dict[int, list[int]] = {}   # pid -> [moves, failures] (keep_moves only)
        # pid -> {"cause/evidence": failures} (keep_moves only); the cause a
        # partial move stopped on counts as its cause
        diagnoses: dict[int, dict[str, int]] = {}
        linker = records.RepeatLinker()

        def count(pid: int, n: int, key: str | None):
            counts = by_pid.setdefault(pid, [0, 0])
            counts[0] += n
            if key is not None:
                counts[1] += n
                per_pid = diagnoses.setdefault(pid, {})
                per_pid[key] = per_pid.get(key, 0) + n

        def cause_key(move: dict | None) -> str:
            if move is None:
                return "unknown/first failure lost"
            d = move["diagnosis"]
            return f"{records.effective_cause(d)}/{d['evidence']}"

        with open(self.path) as f:
            for line in f:
                if line.startswith('{"type":"move"'):
                    moves += 1
                    failed = '"errno":null' not in line
                    failures += failed
                    if self.keep_moves:
                        move = json.loads(line)
                        linker.move(move)
                        count(move["pid"], 1, cause_key(move) if failed else None)
                elif line.startswith('{"type":"successes"'):
                    # successes in bulk: one row a move (uffdtrace/successes.py)
                    bulk = orjson.loads(line)
                    moves += len(bulk["rows"])
                    if self.keep_moves:
                        pid_at = bulk["fields"].index("pid")
                        for pid, n in Counter(row[pid_at] for row in bulk["rows"]).items():
                            count(pid, n, None)
                elif line.startswith('{"type":"repeat"'):
                    # a run's repeats: that many failures like the move it repeats
                    rep = json.loads(line)
                    moves += rep["count"]
                    failures += rep["count"]
                    if self.keep_moves:
                        count(rep["pid"], rep["count"], cause_key(linker.of(rep)))
                elif line.startswith('{"type":"aggregates"'):
                    aggregates = line
                elif line.startswith('{"type":"header"'):
                    header = json.loads(line)
                elif line.startswith('{"type":"footer"'):
                    footer = json.loads(line)
        if header is None or footer is None:
            raise RuntimeError(f"{self.label}: incomplete trace file: {stderr[-500:]}")
        counters = json.loads(aggregates)["counters"] if aggregates else {}
        return TracerReport(
            moves_seen=counters.get("moves_entered"), ready_s=self.ready_s,
            detail={"tier": header.get("tier"), "success_sample": header.get("success_sample"),
                    "recorded_moves": moves, "recorded_failures": failures,
                    "drops": footer.get("drops"), "counters": counters,
                    "by_pid": by_pid, "diagnoses": diagnoses})


class Bpftrace(_Process):
    """A bpftrace program on the same tracepoints."""

    # bpftrace prints "Attaching N probes..." *before* attaching them (and
    # attaching syscall tracepoints can take a while on a busy kernel): it is
    # ready once it holds one perf event per CPU (its output buffer) plus one
    # per tracepoint.
    ready_marker = "Attaching"
    ATTACH_TIMEOUT_S = 30

    def __init__(self, key: str, label: str, program: str):
        super().__init__()
        self.key, self.label, self.program = key, label, program

    def unavailable(self) -> str | None:
        if not shutil.which("bpftrace"):
            return "bpftrace is not installed"
        if os.geteuid() != 0:
            return "bpftrace needs root"
        return None

    def start(self):
        self._spawn(["bpftrace", "-e", self.program], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT)
        wanted = (os.cpu_count() or 1) + self.program.count("tracepoint:")
        deadline = time.monotonic() + self.ATTACH_TIMEOUT_S
        while _perf_event_fds(self.pid) < wanted:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self._kill()
                raise RuntimeError(f"{self.label}: probes not attached after "
                                   f"{self.ATTACH_TIMEOUT_S} s")
            time.sleep(0.01)
        self.ready_s = time.monotonic() - self.spawned_at

    def stop(self) -> TracerReport:
        out, _ = self._interrupt()
        counts = {}
        for line in out.splitlines():
            if line.startswith("@result["):
                key, _, value = line.partition("]: ")
                counts[int(key[len("@result["):])] = int(value)
        seen = sum(counts.values()) if "@result" in self.program else None
        return TracerReport(moves_seen=seen, ready_s=self.ready_s, detail={"results": counts})


class StoppedRecorder(Uffdtrace):
    """`uffdtrace record` with its process stopped (SIGSTOP) while each
    workload is measured, continued between workloads: its BPF programs
    stay attached and run, its collector takes no CPU and is never woken.
    Beside the running recorder, this separates what the hooks cost from
    what the collector's CPU costs -- on a guest of one vCPU the collector
    runs on the workload's CPU.  A stopped collector drains nothing, so moves
    beyond the ring buffers' room are counted as drops, not recorded."""

    @contextmanager
    def measuring(self):
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)


def uffdtrace_all(extra: tuple[str, ...] = ()) -> Uffdtrace:
    return Uffdtrace("uffdtrace", "uffdtrace record", extra)


def uffdtrace_sampled(n: int, extra: tuple[str, ...] = ()) -> Uffdtrace:
    return Uffdtrace("uffdtrace-sampled", f"uffdtrace record --sample-successes {n}",
                     ("--sample-successes", str(n), *extra))


def uffdtrace_cheapest(n: int, extra: tuple[str, ...] = ()) -> Uffdtrace:
    """The configuration to leave running: sampled, no cost-statistics hooks."""
    return Uffdtrace("uffdtrace-cheap",
                     f"uffdtrace record --sample-successes {n} --no-cost-stats",
                     ("--sample-successes", str(n), "--no-cost-stats", *extra))


def uffdtrace_cheapest_stopped(n: int, extra: tuple[str, ...] = ()) -> StoppedRecorder:
    """The cheapest configuration, its collector stopped while measured: the
    hooks' own cost (StoppedRecorder)."""
    return StoppedRecorder("uffdtrace-cheap-stopped",
                           f"uffdtrace record --sample-successes {n} --no-cost-stats, "
                           "collector stopped while measured (hooks only)",
                           ("--sample-successes", str(n), "--no-cost-stats", *extra))


def uffdtrace_cheapest_no_state(n: int, extra: tuple[str, ...] = ()) -> Uffdtrace:
    """The same with the page-state reader off: a successful move should
    cost the same (the reader runs only when a move fails)."""
    return Uffdtrace("uffdtrace-cheap-no-state",
                     f"uffdtrace record --sample-successes {n} --no-cost-stats --no-state-at-exit",
                     ("--sample-successes", str(n), "--no-cost-stats", "--no-state-at-exit",
                      *extra))


def uffdtrace_cheapest_tracepoint_tier(n: int, extra: tuple[str, ...] = ()) -> Uffdtrace:
    """The same, forced to the tracepoint tier: compared with the kernel tier
    on the same kernel (the QEMU guest)."""
    return Uffdtrace("uffdtrace-cheap-tracepoint",
                     f"uffdtrace record --sample-successes {n} --no-cost-stats --tier tracepoint",
                     ("--sample-successes", str(n), "--no-cost-stats", "--tier", "tracepoint",
                      *extra))


def uffdtrace_no_cost_stats(extra: tuple[str, ...] = ()) -> Uffdtrace:
    return Uffdtrace("uffdtrace-nocost", "uffdtrace record --no-cost-stats",
                     ("--no-cost-stats", *extra))


def bpftrace_one_liner() -> Bpftrace:
    return Bpftrace("bpftrace", "bpftrace one-liner", BPFTRACE_ONE_LINER)


class HookFloor(_Process):
    """Empty BPF programs on the two ioctl tracepoints, attached by bcc as
    uffdtrace attaches its own (bench/hook_floor.py): what any tracer of
    these tracepoints pays before doing anything."""

    key = "hook-floor"
    label = "empty BPF programs on the 2 ioctl tracepoints (bcc)"
    ready_marker = "attached"

    def unavailable(self) -> str | None:
        return None if os.geteuid() == 0 else "tracing needs root"

    def start(self):
        self._spawn([sys.executable, "-m", "bench.hook_floor"], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT)

    def stop(self) -> TracerReport:
        self._interrupt()
        return TracerReport(ready_s=self.ready_s)


def hook_floor() -> HookFloor:
    return HookFloor()
