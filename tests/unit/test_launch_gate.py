"""`record -- COMMAND` starts COMMAND held at a gate until its pid is
traced (uffdtrace.recording.launch_gated): not one of its moves may come
before.  Checked with a stand-in for the session's follow_pid, which is
all the gate waits on, and where there is no /dev/fd (a VM without udev,
a container), as the QEMU guests first showed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from uffdtrace.recording import launch_gated

pytestmark = pytest.mark.unit

HELD_S = 0.3


class _Follower:
    """What launch_gated asks of a Session: follow_pid.  It checks that
    COMMAND has not run while its pid was being made traced."""

    def __init__(self, marker: Path):
        self.marker, self.ran_early = marker, None

    def follow_pid(self, pid: int):
        time.sleep(HELD_S)
        self.ran_early = self.marker.exists()


def _gated_touch(marker: Path) -> tuple[_Follower, int]:
    follower = _Follower(marker)
    proc = launch_gated(follower, ["touch", str(marker)])
    return follower, proc.wait(timeout=10)


def test_command_runs_only_after_its_pid_is_traced(tmp_path):
    marker = tmp_path / "ran"
    follower, status = _gated_touch(marker)
    assert follower.ran_early is False
    assert status == 0 and marker.exists()


def test_the_gate_holds_without_dev_fd(tmp_path, root_required):
    """In a mount namespace whose /dev has no fd link (only null)."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.unit.test_launch_gate import _gated_touch
        assert not Path("/dev/fd").exists()
        follower, status = _gated_touch(Path({str(tmp_path / "ran")!r}))
        print(follower.ran_early, status)
    """)
    inner = f"mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && exec {sys.executable} -c \"$0\""
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner,
                           script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "0"], proc.stderr
    assert proc.stderr == ""

