"""`uffdtrace serve` as a daemon: the HTTP endpoint comes up first, then the
tracer runs on the main thread as `record` runs (uffdtrace/recording.py),
its records going to a MetricsState instead of a file; SIGTERM, SIGINT or
SIGHUP ends it cleanly (BPF detached, final snapshot taken, endpoint closed,
exit 0).

A tracer that cannot start or dies (BPF load refused, a bug) does not take
the endpoint down: `uffdtrace_up` goes to 0 and `uffdtrace_tracer_error_info`
says why, /ready answers 503 with the reason, and the last numbers stay
scrapable.  Readiness is signalled once the tracer is running or has failed:
sd_notify READY=1 under systemd (Type=notify), --ready-file, /ready.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from . import bpfstats, sdnotify
from .errors import UserError
from .httpendpoint import Endpoint
from .metrics import PREFIX, MetricsState
from .recording import record
from .session import Session
from .signals import stop_on_signals
from .tracefile import TraceRecords


SERVE_RUN_THREADS = 4096


class MetricsSink(TraceRecords):
    """The records `record` would write, fed to the metrics state."""

    def __init__(self, state: MetricsState):
        super().__init__()
        self.state = state

    def write(self, record: dict):
        self.state.add(record)


def proc_comm(pid: int) -> str | None:
    """A live process's name, for one no record named (it only succeeded)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return None


class TracerStatus:
    """starting -> tracing -> stopped, or failed (with the reason)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.phase, self.error = "starting", None
        self.tier: str | None = None
        self.programs: dict[str, int] = {}     # BPF program name -> fd, while tracing

    def tracing(self, session: Session):
        with self.lock:
            self.phase, self.tier = "tracing", session.tier
            self.programs = bpfstats.program_fds(session.bpf)

    def stopped(self):
        with self.lock:
            self.phase, self.programs = "stopped", {}

    def failed(self, reason: str):
        with self.lock:
            self.phase, self.error, self.programs = "failed", reason, {}

    def readiness(self) -> tuple[bool, str]:
        with self.lock:
            if self.phase == "tracing":
                return True, f"tracing ({self.tier} tier)"
            return False, f"tracer failed: {self.error}" if self.error else self.phase


class HealthCollector(Collector):
    """What only a live tracer has: is it up, why not, what it costs."""

    def __init__(self, status: TracerStatus, state: MetricsState):
        self.status, self.state = status, state

    def collect(self):
        with self.status.lock:
            phase, error, programs = self.status.phase, self.status.error, \
                dict(self.status.programs)
        yield GaugeMetricFamily(f"{PREFIX}_up", "1 while the tracer runs; 0 while it starts, "
                                "after it stopped, or when it failed (see "
                                "uffdtrace_tracer_error_info)", value=int(phase == "tracing"))
        if error is not None:
            yield InfoMetricFamily(f"{PREFIX}_tracer_error", "Why the tracer is not running",
                                   value={"reason": error})
        yield GaugeMetricFamily(f"{PREFIX}_tracked_processes", "Processes the exporter keeps a "
                                "label for: bounded by the kernel's outcome map, exited ones "
                                "retired", value=self.state.tracked_pids())
        enabled = bpfstats.stats_enabled()
        if enabled is not None:
            yield GaugeMetricFamily(f"{PREFIX}_bpf_stats_enabled", "kernel.bpf_stats_enabled: "
                                    "BPF run time is only measured while it is 1",
                                    value=int(enabled))
        stats = bpfstats.read_stats(programs)
        if stats:
            run_time = CounterMetricFamily(f"{PREFIX}_bpf_program_run_seconds", "Time the "
                                           "tracer's BPF programs ran (while "
                                           "kernel.bpf_stats_enabled is 1)", labels=["program"],
                                           unit="seconds")
            runs = CounterMetricFamily(f"{PREFIX}_bpf_program_runs", "Runs of the tracer's BPF "
                                       "programs (while kernel.bpf_stats_enabled is 1)",
                                       labels=["program"])
            for s in stats:
                run_time.add_metric([s.name], s.run_time_ns / 1e9)
                runs.add_metric([s.name], s.run_count)
            yield run_time
            yield runs


class ReadyFile:
    """--ready-file: written (atomically) once ready, removed at exit."""

    def __init__(self, path: str | None):
        self.path = path

    def write(self, text: str):
        if self.path is None:
            return
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UserError(f"cannot write --ready-file {self.path}: {exc.strerror}") from None

    def remove(self):
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def serve(session: Session, endpoint: Endpoint, state: MetricsState, status: TracerStatus,
          ready_file: ReadyFile, banner) -> int:
    """Run until a stop signal; 0 when stopped by one."""
    endpoint.start()
    url = endpoint.url
    try:
        with stop_on_signals() as signalled:
            try:
                _trace(session, state, status, signalled,
                       lambda why: _ready(ready_file, url, why, banner))
            except UserError as exc:
                status.failed(str(exc))
            except Exception as exc:   # noqa: BLE001 - a bug: shown, and the endpoint stays
                traceback.print_exc()
                status.failed(f"internal error: {type(exc).__name__}: {exc}")
            if status.phase == "failed":
                print(f"uffdtrace serve: tracer failed: {status.error}; {url}/metrics "
                      "stays up (uffdtrace_up 0)", file=sys.stderr, flush=True)
                _ready(ready_file, url, f"tracer failed: {status.error}", None)
                while not signalled:
                    time.sleep(0.2)
    finally:
        sdnotify.notify("STOPPING=1")
        endpoint.close()
        ready_file.remove()
    return 0


def _trace(session: Session, state: MetricsState, status: TracerStatus, signalled, ready):
    session.close_exited_runs = True    # or an exited thread's last repeats would never count
    # each kept failure is a diagnosed move (KBs): days of threads that failed
    # once must not add up (the metrics re-link repeats from the records)
    session.limit_run_links(SERVE_RUN_THREADS)
    with session:
        session.start()         # a signal meanwhile is kept in `signalled`
        if signalled:
            return
        status.tracing(session)
        ready(f"tracing ({session.tier} tier)")
        try:
            # the outcome counts of exited processes leave the kernel's map
            # (MetricsState keeps them under their comm): it never fills
            record(session, MetricsSink(state), retire_exited=True)
        finally:
            status.stopped()


def _ready(ready_file: ReadyFile, url: str, why: str, banner):
    ready_file.write(url)
    sdnotify.notify("READY=1", f"STATUS={why}; metrics at {url}/metrics")
    if banner is not None:
        banner(url)
