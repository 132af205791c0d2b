"""The real `uffdtrace top` in a real terminal: tmux runs it in a detached
session of fixed size; the test reads the screen (capture-pane), presses
keys, and checks the exit status and that the terminal was given back
(alternate screen left, cursor shown, mouse reporting off)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_bcc_root

from tests.helpers import ROOT

TMUX = shutil.which("tmux")
WIDTH, HEIGHT = 130, 40
KNOWN_CAUSES = ("page_pinned", "dst_populated", "src_hole", "page_shared",
                "invalid_misaligned", "invalid_cross_mm")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Terminal:
    """One tmux server of our own (-L), one session, one pane."""

    def __init__(self, tmp_path: Path, command: list[str], *, user: str | None = None):
        self.socket = f"uffdtrace-test-{os.getpid()}-{id(self)}"
        self.rc_file = tmp_path / "rc"
        run = shlex.join(command)
        if user:
            run = shlex.join(["setpriv", f"--reuid={user}", f"--regid={user}",
                              "--clear-groups"]) + " " + run
        # After the program: its status, a marker, and a pause so the pane
        # (and the terminal state it left) can still be inspected.
        script = (f"cd {shlex.quote(str(ROOT))} && {run}; echo $? > {self.rc_file}; "
                  "echo UFFDTRACE-EXITED; sleep 120")
        # Our own config: a detached session gets default-size, not -x/-y.
        self.config = tmp_path / "tmux.conf"
        self.config.write_text(f"set -g default-size {WIDTH}x{HEIGHT}\n")
        self.tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT),
                  "sh", "-c", script)

    def tmux(self, *args: str) -> str:
        # The server passes its environment on: COLUMNS/LINES (set by the
        # test process's libraries) would override the pane's real size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([TMUX, "-L", self.socket, "-f", str(self.config), *args],
                              check=True, capture_output=True, text=True, timeout=30,
                              env=env).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def flags(self) -> dict[str, str]:
        names = ["alternate_on", "cursor_flag", "mouse_any_flag", "mouse_sgr_flag",
                 "mouse_button_flag", "mouse_standard_flag"]
        values = self.tmux("display-message", "-p", "-t", "top",
                           " ".join(f"#{{{n}}}" for n in names)).split()
        return dict(zip(names, values))

    def press(self, *keys: str):
        for key in keys:
            self.tmux("send-keys", "-t", "top", key)
            time.sleep(0.3)

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen()}")

    def exit_status(self, timeout: float = 30) -> int:
        self.wait_for(lambda s: "UFFDTRACE-EXITED" in s, timeout, "the program to exit")
        return int(self.rc_file.read_text())

    def close(self):
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmp_path):
    made = []

    def start(command, **kw):
        made.append(Terminal(tmp_path, command, **kw))
        return made[-1]

    yield start
    for t in made:
        t.close()


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc: no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def uffdtrace_top(*args: str) -> list[str]:
    return [sys.executable, "-m", "uffdtrace", "top", *args]


def assert_terminal_restored(term: Terminal):
    flags = term.flags()
    assert flags["alternate_on"] == "0", flags
    assert flags["cursor_flag"] == "1", flags
    assert all(flags[f] == "0" for f in flags if f.startswith("mouse")), flags
    screen = term.screen()
    assert "Traceback" not in screen, screen
    assert "╭─ Processes" not in screen, screen     # the TUI is gone from the screen


def test_demo_live_in_a_real_terminal(terminal, root_required):
    require_bcc_root()
    term = terminal(uffdtrace_top("--demo"))
    screen = term.wait_for(
        lambda s: re.search(r"│\s+\d+\s+uffdtrace\s+\d", s) and
        any(c in s for c in KNOWN_CAUSES) and "Recent failures" in s,
        90, "process rows and diagnosed failures")
    assert "uffdtrace top" in screen and "demo" in screen and "dropped " in screen
    workload_pid = int(re.search(r"│\s+(\d+)\s+uffdtrace\s+\d", screen).group(1))

    term.press("f")
    term.wait_for(lambda s: "failures only" in s, 10, "failures-only mode")
    term.press("Tab", "Enter")
    detail = term.wait_for(lambda s: "Failure #" in s and "Diagnosis" in s, 10,
                           "the detail view")
    assert "remedy" in detail and "evidence" in detail
    term.press("Escape")
    term.wait_for(lambda s: "Recent failures" in s and "Failure #" not in s, 10,
                  "the main view again")
    term.press("?")
    term.wait_for(lambda s: "Evidence levels" in s, 10, "the help screen")
    term.press("Escape")
    term.wait_for(lambda s: "Recent failures" in s, 10, "the main view again")
    term.press("q")
    assert term.exit_status() == 0
    assert_terminal_restored(term)
    # the demo workload was stopped with the TUI
    deadline = time.monotonic() + 10
    while Path(f"/proc/{workload_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{workload_pid}").exists()


def test_readme_demo_script_starts_top_in_a_terminal(terminal, root_required):
    # `make demo` = setup, then scripts/demo.sh: in a terminal, it is top --demo.
    require_bcc_root()
    if not (ROOT / ".venv/bin/uffdtrace").exists():
        pytest.skip("scripts/demo.sh runs .venv/bin/uffdtrace: run scripts/setup.sh")
    term = terminal(["bash", "scripts/demo.sh"])
    term.wait_for(lambda s: re.search(r"│\s+\d+\s+uffdtrace\s+\d", s) and "demo" in s, 90,
                  "top --demo's process rows")
    term.press("q")
    assert term.exit_status() == 0
    assert_terminal_restored(term)
    assert "compiling and attaching" in term.screen()   # the normal screen is back


def test_tracer_failure_shows_its_reason_and_q_exits(terminal, root_required):
    # A real tracer failure: not root (setpriv drops to nobody).
    term = terminal(uffdtrace_top(), user="65534")
    term.wait_for(lambda s: "tracing needs root" in s and "uffdtrace top: error" in s, 60,
                  "the error screen")
    term.press("q")
    assert term.exit_status() == 2
    assert_terminal_restored(term)
    screen = term.screen()
    assert "uffdtrace: live: could not start: tracing needs root" in screen


def test_sigterm_leaves_like_q(terminal):
    from tests.tui.topapp import MIXED
    term = terminal(uffdtrace_top("--replay", str(MIXED), "--speed", "0"))
    term.wait_for(lambda s: "ended: end of" in s, 30, "the replayed trace")
    shell = int(term.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
    top = children(shell)
    assert len(top) == 1, top
    os.kill(top[0], signal.SIGTERM)
    assert term.exit_status() == 0
    assert_terminal_restored(term)


def test_replay_with_hostile_names_in_a_real_terminal(terminal, tmp_path):
    from tests.tui.topapp import records, write_trace
    recs = records()
    for r in recs:
        if r["type"] in ("move", "pin"):
            r["comm"] = "[@click=app.quit]x"
    path = write_trace(tmp_path / "evil.jsonl", recs)
    term = terminal(uffdtrace_top("--replay", str(path), "--speed", "0"))
    term.wait_for(lambda s: "ended: end of" in s and "[@click=app.qui" in s, 30,
                  "the replayed trace")
    term.press("Enter")
    term.wait_for(lambda s: "([@click=app.quit]x)" in s, 10, "the detail view")
    term.press("Escape", "q")
    assert term.exit_status() == 0
    assert_terminal_restored(term)
