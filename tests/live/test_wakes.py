"""Question 9 in the tracepoint tier, end to end: `record` of the
fault_wake workload (threads faulting on missing pages, served by moves,
every other one DONTWAKE then UFFDIO_WAKE), then report, export --perfetto
and top --replay of that trace (tests/wakecheck.py)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import uffdtrace
from tests import wakecheck


@pytest.fixture(scope="module")
def recorded(live, tmp_path_factory):
    d = tmp_path_factory.mktemp("wake")
    trace = d / "wake.jsonl"
    proc = uffdtrace("record", "-o", str(trace), "--", sys.executable, "-m", "uffdtrace",
                     "workload", "-s", "fault_wake", "--pages", "6", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return trace, json.loads(proc.stdout)


def test_wake_records(recorded):
    wakecheck.check_wake_records(*recorded, "tracepoint")


def test_report(recorded):
    wakecheck.check_report(*recorded, "tracepoint")


def test_export(recorded, tmp_path):
    wakecheck.check_export(*recorded, tmp_path)


@pytest.mark.asyncio
async def test_top_replay(recorded):
    await wakecheck.check_top_replay(*recorded)
