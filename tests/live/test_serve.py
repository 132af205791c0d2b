"""`uffdtrace serve` against the real thing: Debian's Prometheus server
scrapes it every second while workload scenarios run, and its HTTP query
API must show each scenario's failures by cause with exact counts; promtool
accepts the exposition; a soak under failure storms keeps memory flat and
the counters exact; SIGTERM ends it cleanly, a tracer that cannot load
leaves the endpoint up with uffdtrace_up 0.

The tracer is machine-wide and other processes may move pages: every
workload names itself (`workload --comm`) and the queries select it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import ROOT, expected_cause, uffdtrace
from tests.unit.test_metrics import dashboard_metric_names

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
SCRAPE_S = 1
# workload -s mixed-storm fails in turn with these (uffdtrace/workload/failcycle.py)
STORM_CAUSES = {"EEXIST": "dst_populated", "EBUSY": "page_pinned", "ENOENT": "src_hole"}
SOAK_S = 25
# A failure storm (coalesced in the kernel into a few records a second),
# then every failure class at a steady rate, forking children (cross_mm):
# a new process every round, and none that could fill the ring buffer on a
# busy machine (test_storms.py covers that, and drops are counted then).
SOAK_ROUNDS = (["-s", "failure-storm", "--iterations", "100000"],
               ["-s", "mixed", "-d", "1", "--rate", "300"])
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def http_get(url: str, accept: str | None = None, timeout: float = 10) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Serve:
    """A `uffdtrace serve` process on a free port, ready (its --ready-file
    written) when constructed."""

    def __init__(self, tmp: Path, *args: str, env: dict | None = None):
        self.ready_file, self.log = tmp / "ready", tmp / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uffdtrace", "serve", "--listen", "127.0.0.1:0",
                 "--ready-file", str(self.ready_file), *args], cwd=ROOT, stdout=log,
                stderr=log, env={**os.environ, **(env or {})})
        wait_for(lambda: self.ready_file.exists() or self.proc.poll() is not None, 180,
                 "serve to be ready")
        assert self.proc.poll() is None, self.stderr()
        self.url = self.ready_file.read_text().strip()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self, accept: str = OPENMETRICS) -> str:
        """/metrics as Prometheus asks for it (OpenMetrics: strictly parsed
        by samples()), or in the Prometheus text format (accept=text/plain)."""
        status, body = http_get(self.url + "/metrics", accept)
        assert status == 200, body
        return body

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("serve did not stop within 60 s of SIGTERM")


def samples(text: str, name: str) -> dict[tuple, float]:
    from tests.unit.test_metrics import samples as parse
    return {labels: v for (n, labels), v in parse(text).items() if n == name}


def comm_sum(text: str, name: str, comm: str, label: str) -> Counter:
    out = Counter()
    for labels, v in samples(text, name).items():
        labels = dict(labels)
        if labels.get("comm") == comm:
            out[labels[label]] += int(v)
    return out


def workload(comm: str, *args: str) -> dict:
    proc = uffdtrace("workload", "--comm", comm, *args, "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def causes_made(out: dict) -> Counter:
    """The failures a workload made, by the cause a correct diagnosis names
    (a partial move under its underlying cause)."""
    if out["calls"]:
        made = Counter()
        for call in out["calls"]:
            if call["ret"] != 0:
                cause, underlying = expected_cause(call["scenario"], call["errno"])
                made[underlying or cause] += 1
        return made
    if out["scenario"] == "failure-storm":
        return Counter({"dst_populated": out["summary"]["failed"]})
    return Counter({STORM_CAUSES[e]: n for e, n in out["summary"]["errors"].items()})


def results_made(out: dict) -> Counter:
    """The moves a workload made by result, as uffdtrace_moves_total counts them."""
    s = out["summary"]
    return +Counter({"ok": s["ok"], **s["errors"]})


@pytest.fixture(scope="module")
def notify_socket(tmp_path_factory):
    path = tmp_path_factory.mktemp("notify") / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0)
    yield path, sock
    sock.close()


@pytest.fixture(scope="module")
def serve(live, tmp_path_factory, notify_socket):
    s = Serve(tmp_path_factory.mktemp("serve"), env={"NOTIFY_SOCKET": str(notify_socket[0])})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def prometheus(serve, tmp_path_factory):
    if not (os.access(PROMETHEUS, os.X_OK) and os.access(PROMTOOL, os.X_OK)):
        pytest.skip("Debian's prometheus package is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlparse(serve.url).netloc
    (d / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  scrape_timeout: {SCRAPE_S}s\n"
        f"scrape_configs:\n  - job_name: uffdtrace\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    url = f"http://127.0.0.1:{free_port()}"
    log = open(d / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}",
                             f"--storage.tsdb.path={d / 'data'}",
                             f"--web.listen-address={url[len('http://'):]}"],
                            stdout=log, stderr=log, cwd=d)
    try:
        wait_for(lambda: proc.poll() is not None or _status(url + "/-/ready") == 200, 60,
                 "prometheus to be ready")
        assert proc.poll() is None, (d / "prometheus.log").read_text()
        # serve is a healthy target before any test counts on it
        wait_for(lambda: query(url, 'up{job="uffdtrace"} == 1'), 30, "the first scrape")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _status(url: str) -> int | None:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return None


def query(prometheus: str, expr: str) -> list[dict]:
    status, body = http_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expr}))
    assert status == 200, body
    out = json.loads(body)
    assert out["status"] == "success", out
    return out["data"]["result"]


def by_label(result: list[dict], label: str) -> Counter:
    return Counter({r["metric"][label]: int(float(r["value"][1])) for r in result})


# --- Prometheus scraping serve ------------------------------------------------

SCENARIO_RUNS = {          # comm suffix -> workload arguments
    "mix": ["-s", "mixed", "-d", "1", "--rate", "150"],
    "fstorm": ["-s", "failure-storm", "--iterations", "50000"],
    "mstorm": ["-s", "mixed-storm", "--iterations", "30000"],
    "pin": ["-s", "pinned"],
    "ksm": ["-s", "ksm"],
    "swapsh": ["-s", "swap_shared"],
    "thppin": ["-s", "thp_pinned"],
}


@pytest.fixture(scope="module")
def scenarios(prometheus):
    """Each run under its own comm, so that each is its own series."""
    tag = f"u{os.getpid() % 100000}"
    return {f"{tag}{name}": workload(f"{tag}{name}", *args)
            for name, args in SCENARIO_RUNS.items()}


def eventually(fetch, want, timeout: float = 30):
    """fetch() once it equals `want`, or its last value after `timeout` s
    (a scrape a second; repeat counts come within --coalesce-ms)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(1)


def test_prometheus_shows_every_scenarios_failures_by_cause_exactly(prometheus, scenarios):
    for comm, out in scenarios.items():
        made = causes_made(out)
        assert sum(made.values()) == out["summary"]["failed"] > 0, out["summary"]
        expr = f'sum by (cause) (uffdtrace_move_failures_total{{comm="{comm}"}})'
        assert eventually(lambda: by_label(query(prometheus, expr), "cause"), made) == made, \
            out["scenario"]


def test_prometheus_shows_the_kernels_move_counts_by_result(prometheus, scenarios):
    for comm, out in scenarios.items():
        made = results_made(out)
        expr = f'sum by (result) (uffdtrace_moves_total{{comm="{comm}"}})'
        assert eventually(lambda: by_label(query(prometheus, expr), "result"), made) == made, \
            out["scenario"]


def test_promtool_accepts_the_exposition(serve, scenarios):
    body = serve.metrics("text/plain")
    assert "uffdtrace_move_failures_total{" in body and "# EOF" not in body
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # what Prometheus itself asks for: OpenMetrics, which a strict parser reads
    om = serve.metrics()
    assert om.endswith("# EOF\n") and samples(om, "uffdtrace_up") == {(): 1.0}


def test_every_metric_the_dashboard_queries_is_exposed(serve, scenarios):
    from tests.unit.test_metrics import samples as parse
    exposed = {name for name, _ in parse(serve.metrics())}
    assert not dashboard_metric_names() - exposed


def test_readiness_is_signalled(serve, notify_socket):
    _, sock = notify_socket
    message = sock.recv(4096).decode()
    assert "READY=1" in message.splitlines() and "STATUS=tracing" in message
    assert http_get(serve.url + "/ready") == (200, "tracing (tracepoint tier)\n") or \
        http_get(serve.url + "/ready")[1].startswith("tracing (kernel tier)")
    assert http_get(serve.url + "/nope")[0] == 404


def test_a_port_in_use_is_a_one_line_error(serve):
    port = urllib.parse.urlparse(serve.url).port
    proc = uffdtrace("serve", "--listen", f"127.0.0.1:{port}", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"uffdtrace: cannot listen on 127.0.0.1:{port}: address already " \
        "in use\n"


def test_sigterm_stops_serve_cleanly(serve, notify_socket):
    """Last of the module's serve tests: it stops the shared one."""
    assert serve.stop() == 0, serve.stderr()
    assert not serve.ready_file.exists()
    assert "Traceback" not in serve.stderr()
    _, sock = notify_socket
    # every datagram not read yet (READY=1 too, when this test runs alone)
    sock.settimeout(5)
    said = []
    while not any("STOPPING=1" in d for d in said):
        try:
            said.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    assert any("STOPPING=1" in d for d in said), said


# --- on its own -----------------------------------------------------------------

def test_a_tracer_that_cannot_load_leaves_the_endpoint_up(live, tmp_path):
    s = Serve(tmp_path, "--tier", "kernel")
    try:
        up = samples(s.metrics(), "uffdtrace_up")
        if up == {(): 1.0}:
            pytest.skip("the kernel tier loads on this kernel: nothing fails here")
        assert up == {(): 0.0}
        (labels,) = samples(s.metrics(), "uffdtrace_tracer_error_info")
        assert "kernel tier" in dict(labels)["reason"]
        status, body = http_get(s.url + "/ready")
        assert status == 503 and body.startswith("tracer failed: ")
    finally:
        assert s.stop() == 0, s.stderr()
    assert "tracer failed" in s.stderr() and "Traceback" not in s.stderr()


def test_soak_flat_memory_and_exact_counters_under_storms(live, tmp_path):
    """SOAK_S seconds of storms, a new process every round (each retired
    from the kernel's outcome map once it exits, its last run of repeats
    sent once its thread is gone): serve's RSS stays flat and its counters
    equal what the workloads made."""
    s = Serve(tmp_path, "--per-pid", "--max-pids", "10")
    comm = f"soak{os.getpid() % 100000}"
    made_causes, made_results, rss = Counter(), Counter(), []
    try:
        start = time.monotonic()
        rounds = 0
        while time.monotonic() - start < SOAK_S:
            out = workload(comm, *SOAK_ROUNDS[rounds % len(SOAK_ROUNDS)])
            made_causes += causes_made(out)
            made_results += results_made(out)
            rss.append((time.monotonic() - start, s.rss_kib()))
            rounds += 1

        def counted():
            text = s.metrics()
            return (comm_sum(text, "uffdtrace_move_failures_total", comm, "cause"),
                    comm_sum(text, "uffdtrace_moves_total", comm, "result"))
        seen = eventually(counted, (made_causes, made_results))
        text = s.metrics()
        tracked = samples(text, "uffdtrace_tracked_processes")[()]
        drops = {dict(k)["kind"]: v for k, v in samples(text, "uffdtrace_drops_total").items()}
        assert seen == (made_causes, made_results), ({k: v for k, v in drops.items() if v},
                                                     seen[0] - made_causes, made_causes - seen[0])
    finally:
        assert s.stop() == 0, s.stderr()
    print(f"soak: {rounds} rounds, {sum(made_results.values())} failing moves, "
          f"RSS KiB over time {rss}")
    assert rounds >= 6
    assert drops["ringbuf_drops"] == drops["repeat_drops"] == 0
    assert tracked < rounds        # exited workloads were retired from the kernel's map
    # after the first rounds (imports, caches, the first storm's buffers)
    # memory does not grow with the rounds
    settled = [kib for t, kib in rss if t >= SOAK_S / 3]
    assert max(settled) - settled[0] < 4 * 1024, rss
