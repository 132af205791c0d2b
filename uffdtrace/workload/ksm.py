"""Turn ksmd on for the ksm scenario, and always put every setting back.

The settings are saved to a restore file *before* anything is changed, so
even a run killed with SIGKILL is undone: the next run that enters KsmTuning
restores the stale file first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError

KSM_DIR = Path("/sys/kernel/mm/ksm")
RESTORE_FILE = Path("/run/uffdtrace-ksm-restore.json")
# Aggressive but short-lived: merge a handful of pages within ~100 ms.
FAST_SCAN = {"pages_to_scan": "5000", "sleep_millisecs": "10", "run": "1"}


def _read(name: str) -> str:
    return (KSM_DIR / name).read_text().strip()


def _write(name: str, value: str):
    (KSM_DIR / name).write_text(value)


def _apply(settings: dict[str, str]):
    # "run" last, so ksmd wakes up with the other settings already in force.
    for name in sorted(settings, key=lambda n: n == "run"):
        _write(name, settings[name])


def restore_stale() -> dict[str, str] | None:
    """Undo the settings of a run that died before restoring them."""
    try:
        saved = json.loads(RESTORE_FILE.read_text())
    except (OSError, ValueError):
        return None
    _apply(saved)
    RESTORE_FILE.unlink(missing_ok=True)
    return saved


class KsmTuning:
    """Context manager: ksmd scanning fast inside, original settings after."""

    def __init__(self):
        self.saved: dict[str, str] = {}

    def __enter__(self):
        if not KSM_DIR.is_dir():
            raise UserError("this kernel has no KSM (/sys/kernel/mm/ksm is missing)")
        if os.geteuid() != 0:
            raise UserError("the ksm scenario needs root: it turns ksmd on and back off")
        restore_stale()
        self.saved = {name: _read(name) for name in FAST_SCAN}
        tmp = RESTORE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.saved))
        os.replace(tmp, RESTORE_FILE)
        _apply(FAST_SCAN)
        return self

    def __exit__(self, *exc):
        _apply(self.saved)
        RESTORE_FILE.unlink(missing_ok=True)
