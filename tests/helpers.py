"""Helpers the tests share: run the real CLI and parse its output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def uffdtrace(*args: str, timeout: float = 120, check_clean_stderr: bool = True,
              preexec=None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI (python -m uffdtrace) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "uffdtrace", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, preexec_fn=preexec, **kw)
    if check_clean_stderr:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def uffdtrace_json(*args: str, **kw) -> dict:
    proc = uffdtrace(*args, "--json", **kw)
    assert proc.stdout.strip(), f"no JSON on stdout (rc={proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)
