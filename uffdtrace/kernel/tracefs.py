"""Locate (and if we may, mount) tracefs; look up tracepoints."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

# tracefs's own mount point first, then the older debugfs path.  bcc 0.26
# looks at the debugfs path first whenever it exists; the order does not
# matter, as the kernel automounts the same tracefs there.
CANDIDATES = [Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")]


def _events_dir(path: Path) -> bool | None:
    """True if path/events exists, None if we may not look (not root)."""
    try:
        return (path / "events").is_dir()
    except PermissionError:
        return None


def find() -> Path | None:
    for path in CANDIDATES:
        if _events_dir(path):
            return path
    return None


def ensure_mounted() -> tuple[Path | None, str]:
    """tracefs path and what happened: 'mounted', 'mounted now', or why not."""
    path = find()
    if path:
        return path, f"mounted at {path}"
    if any(_events_dir(p) is None for p in CANDIDATES):
        return None, "not readable without root"
    if os.geteuid() != 0:
        return None, "not mounted (root could mount it: mount -t tracefs nodev /sys/kernel/tracing)"
    target = CANDIDATES[0]
    proc = subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)],
                          capture_output=True, text=True)
    if proc.returncode == 0 and find():
        return find(), f"was not mounted; mounted it now at {target}"
    return None, f"not mounted, and mounting failed: {proc.stderr.strip() or proc.returncode}"


def tracepoint_id(tracefs: Path, category: str, event: str) -> int | None:
    try:
        return int((tracefs / "events" / category / event / "id").read_text())
    except (OSError, ValueError):
        return None


def field_offsets(tracefs: Path, category: str, event: str) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of each field of a tracepoint's record, from
    its format file (the kernel's own description of the layout)."""
    fields = {}
    text = (tracefs / "events" / category / event / "format").read_text()
    for line in text.splitlines():
        parts = dict(p.strip().split(":", 1) for p in line.split(";") if ":" in p)
        if "field" in parts and "offset" in parts:
            name = parts["field"].split()[-1].split("[")[0]
            fields[name] = (int(parts["offset"]), int(parts["size"]))
    return fields
