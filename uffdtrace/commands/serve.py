"""`uffdtrace serve`: a long-running tracer exposing Prometheus/OpenMetrics
metrics on /metrics (uffdtrace/serving.py; the metrics: uffdtrace/metrics.py)."""
from __future__ import annotations

import os
import sys

from prometheus_client import ProcessCollector

from . import command_parser
from ..errors import UserError
from ..httpendpoint import Endpoint
from ..metrics import COMM_LIMIT, PID_LIMIT, PID_TTL_S, MetricsState, registry_of
from ..serving import HealthCollector, ReadyFile, TracerStatus, proc_comm, serve
from .tracing import add_session_options, sampling_note, session_from_args

DEFAULT_LISTEN = "127.0.0.1:9464"

EXAMPLES = f"""\
examples:
  uffdtrace serve                          # metrics on http://{DEFAULT_LISTEN}/metrics
  uffdtrace serve --listen :9464           # on every interface
  uffdtrace serve --per-pid --max-pids 20  # also per-process series, for 20 processes
  uffdtrace serve --no-cost-stats          # cheapest: no per-move TLB/lock-wait hooks
  curl -s localhost:9464/metrics | promtool check metrics
  systemctl enable --now uffdtrace         # as a service: contrib/systemd/uffdtrace.service

Moves, bytes, latency and size histograms, TLB flushes, pins and drops come
from the in-kernel counters (exact); failures by cause, errno and evidence
from the diagnosed failure records and their repeat counts.  Only failures
are sent by the kernel: successes are counted there.  SIGTERM ends it
cleanly; under systemd (Type=notify) it says READY=1 once tracing.
"""


def add_parser(sub):
    p = command_parser(sub, "serve", help="expose UFFDIO_MOVE metrics for Prometheus",
                       description="Trace UFFDIO_MOVE on this machine until stopped and expose "
                       "the aggregates as Prometheus/OpenMetrics metrics on /metrics (/ready: "
                       "200 once tracing).  A tracer that fails leaves the endpoint up with "
                       "uffdtrace_up 0 and the reason.", examples=EXAMPLES)
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN}; :PORT: every "
                   "interface; port 0: any free one)")
    p.add_argument("--ready-file", metavar="FILE",
                   help="write the endpoint's URL to FILE once ready (removed at exit)")
    p.add_argument("--max-comms", type=int, default=COMM_LIMIT, metavar="N",
                   help=f"process names with their own `comm` label (default {COMM_LIMIT}); "
                   "the ones seen later are counted as comm=\"other\"")
    p.add_argument("--per-pid", action="store_true",
                   help="also export per-process series (pid label) for up to --max-pids "
                   "processes at a time: first come, a slot frees when one has not moved "
                   "for --pid-ttl seconds")
    p.add_argument("--max-pids", type=int, default=PID_LIMIT, metavar="N",
                   help=f"with --per-pid: at most N processes (default {PID_LIMIT})")
    p.add_argument("--pid-ttl", type=float, default=PID_TTL_S, metavar="SECONDS",
                   help="with --per-pid: a process that has not moved for this long loses its "
                   f"series (default {PID_TTL_S:g}); its counts stay in its comm's")
    add_session_options(p, successes=False, stacks=False)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.max_comms < 1 or args.max_pids < 1 or args.pid_ttl <= 0:
        raise UserError("--max-comms and --max-pids must be >= 1, --pid-ttl > 0")
    session = session_from_args(args, [])
    if os.geteuid() != 0:
        session.choose_tier()       # the one-line reason trace, record and top give
    state = MetricsState(comm_limit=args.max_comms, per_pid=args.per_pid,
                         pid_limit=args.max_pids, pid_ttl_s=args.pid_ttl, comm_of=proc_comm)
    status = TracerStatus()
    registry = registry_of(state, HealthCollector(status, state))
    ProcessCollector(registry=registry)     # process_cpu_seconds_total: the tracer's cost
    endpoint = Endpoint(args.listen, registry, status.readiness)

    def banner(url: str):
        print(f"Serving UFFDIO_MOVE metrics on {url}/metrics ({session.tier} tier; "
              f"{sampling_note(session)}). SIGTERM or Ctrl-C ends.", file=sys.stderr, flush=True)

    return serve(session, endpoint, state, status, ReadyFile(args.ready_file), banner)
