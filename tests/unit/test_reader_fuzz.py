"""Fuzzing the trace reader and everything downstream of it: whatever the
bytes, reading, reporting and exporting either succeed or raise one
TraceFormatError -- never another exception, never a hang."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tracegen import kernel_items, mixed_items, write_trace
from uffdtrace.chrometrace import export
from uffdtrace.commands.report import render
from uffdtrace.tracereader import TraceFormatError
from uffdtrace.tracesummary import summarize

FUZZ = settings(max_examples=150, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow])

_DIR = Path(tempfile.mkdtemp(prefix="uffdtrace-fuzz-"))
_VALID = _DIR / "valid.jsonl"
write_trace(_VALID, mixed_items() + kernel_items())  # both tiers' shapes
VALID_LINES = _VALID.read_bytes().splitlines(keepends=True)
VALID_RECORDS = [json.loads(line) for line in VALID_LINES]


def consume(data: bytes) -> bool:
    """Read, report and export `data`; True if it was accepted."""
    path = _DIR / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        summary = summarize(str(path))
        render(summary)
        json.dumps(summary)
        export(str(path), io.StringIO())
        return True
    except TraceFormatError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:") and "\n" not in message
        return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data):
    consume(data)


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_after_a_valid_header(data):
    consume(VALID_LINES[0] + data)


@FUZZ
@given(st.data())
def test_byte_mutations_of_a_valid_trace(data):
    lines = list(VALID_LINES)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        line = bytearray(lines[i])
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "cut", "swap"]))
        at = data.draw(st.integers(0, max(len(line) - 1, 0)))
        if op == "flip" and line:
            line[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            line[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del line[at:at + data.draw(st.integers(1, 8))]
        elif op == "cut":
            del line[at:]
        else:
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            continue
        lines[i] = bytes(line)
    consume(b"".join(lines))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(st.data())
def test_structural_mutations_of_valid_records(data):
    """A field anywhere in a record replaced by arbitrary JSON: accepted
    records must still report and export (the schema is what makes the
    downstream code safe)."""
    records = json.loads(json.dumps(VALID_RECORDS))
    for _ in range(data.draw(st.integers(1, 3))):
        record = data.draw(st.sampled_from(records))
        path = data.draw(st.sampled_from([p for p in _paths(record) if p]))
        target = record
        for key in path[:-1]:
            target = target[key]
        if data.draw(st.booleans()):
            target[path[-1]] = data.draw(json_values)
        elif isinstance(target, dict):
            del target[path[-1]]
    consume(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def test_the_unmutated_trace_is_accepted():
    """The fuzzers start from a trace the reader accepts (else they prove nothing)."""
    assert consume(b"".join(VALID_LINES))
