"""`uffdtrace check --census` on a multi-GiB process: wall time and the
census process's peak RSS (os.wait4), for small-page and THP memory and a
large reservation with nothing populated.

The target is a child process that maps and writes the memory, then waits;
the census runs as `python -m uffdtrace check -p PID --census --json`, like
a user would run it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30

TARGET = r"""
import sys, time
from uffdtrace.native import Mapping, lib, hpage_size
small, huge, sparse = (int(x) << 30 for x in sys.argv[1:4])
keep = []
if small:
    m = Mapping(small); m.madvise(lib().MADV_NOHUGEPAGE); m.fill(); keep.append(m)
if huge:
    h = Mapping(huge, align=hpage_size()); h.madvise(lib().MADV_HUGEPAGE); h.fill(); keep.append(h)
if sparse:
    s = Mapping(sparse); s.fill(length=1 << 20); keep.append(s)   # 1 MiB of it written
print("ready", flush=True)
sys.stdin.readline()
"""

CASES = [  # (name, GiB of 4 KiB pages, GiB of THP, GiB reserved and 1 MiB written)
    ("4 GiB small pages", 4, 0, 0),
    ("4 GiB THP", 0, 4, 0),
    ("4 GiB small + 4 GiB THP + 16 GiB sparse", 4, 4, 16),
]


# Forked from a small process, so the census's peak RSS is its own (a child
# forked from this bench process would start with the bench's RSS).
WRAPPER = r"""
import json, os, subprocess, sys, time
t0 = time.monotonic()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out, err = proc.stdout.read(), proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall_s": time.monotonic() - t0, "rc": os.waitstatus_to_exitcode(status),
                  "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "out": out.decode(), "err": err.decode()[-300:]}))
"""


def _census(pid: int) -> dict:
    wrapped = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "uffdtrace",
                              "check", "-p", str(pid), "--census", "--json"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    r = json.loads(wrapped.stdout)
    if r["rc"] != 0:
        raise RuntimeError(f"census failed: {r['err']}")
    result = json.loads(r["out"])
    return {"wall_s": round(r["wall_s"], 2), "cpu_s": round(r["cpu_s"], 2),
            "peak_rss_mib": round(r["maxrss_kib"] / 1024, 1),
            "pages_read": result["pages_read"],
            "totals_gib": {k: round(v / GIB, 3) for k, v in result["totals"].items()}}


def run(reps: int, log: Callable[[str], None]) -> dict:
    out = {}
    for name, small, huge, sparse in CASES:
        log(f"  census: {name}")
        target = subprocess.Popen([sys.executable, "-c", TARGET, str(small), str(huge),
                                   str(sparse)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            if target.stdout.readline().strip() != "ready":
                out[name] = {"error": "the target process did not start"}
                continue
            runs = [_census(target.pid) for _ in range(reps)]
            runs.sort(key=lambda r: r["wall_s"])
            best = runs[len(runs) // 2]
            out[name] = {**best, "wall_s_all": [r["wall_s"] for r in runs],
                         "mapped_gib": small + huge + sparse}
        finally:
            target.stdin.write("\n")
            target.stdin.flush()
            target.wait()
    return out


def render(results: dict) -> list[str]:
    lines = ["Census: `uffdtrace check -p PID --census` of a multi-GiB process (median run)",
             f"  {'TARGET':<42} {'WALL s':>7} {'CPU s':>6} {'PEAK RSS':>9} {'PAGEMAP':>10}  "
             "VERDICTS (GiB)"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"  {name:<42} {r['error']}")
            continue
        verdicts = ", ".join(f"{k} {v}" for k, v in r["totals_gib"].items())
        lines.append(f"  {name:<42} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
                     f"{r['peak_rss_mib']:>6.1f} MiB {r['pages_read']:>10}  {verdicts}")
    return lines


if __name__ == "__main__":
    res = run(int(sys.argv[1]) if len(sys.argv) > 1 else 3, lambda m: print(m, file=sys.stderr))
    print("\n".join(render(res)))
    print(json.dumps(res))
