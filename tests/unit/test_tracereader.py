"""The trace reader: every malformed class is one TraceFormatError naming
the file, the line and the problem; a partial last line is truncation."""
from __future__ import annotations

import gzip
import json

import pytest

from tests.helpers import ROOT
from uffdtrace.errors import UserError
from uffdtrace.traceschema import FORMAT_VERSION
from uffdtrace.tracereader import (MAX_LINE_BYTES, ReadStatus, TraceFormatError,
                                   iter_records)

SAMPLE = ROOT / "tests" / "data" / "pinned-early-v1.jsonl"
LINES = SAMPLE.read_bytes().splitlines(keepends=True)
HEADER, PIN, MOVE, AGGREGATES, FOOTER = LINES


def write(tmp_path, *lines: bytes, name="t.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    return str(path)


def read_all(path: str) -> tuple[list[dict], ReadStatus]:
    status = ReadStatus()
    return list(iter_records(path, status)), status


def with_field(line: bytes, **fields) -> bytes:
    record = json.loads(line)
    record.update(fields)
    return json.dumps(record).encode() + b"\n"


def test_a_complete_trace_reads_in_order():
    records, status = read_all(str(SAMPLE))
    assert [r["type"] for r in records] == ["header", "pin", "move", "aggregates", "footer"]
    assert status.footer == records[-1] and status.header == records[0]
    assert status.truncated is None and status.records == 5 == status.lines


def test_partial_last_line_is_truncation_not_an_error(tmp_path):
    path = write(tmp_path, HEADER, PIN, MOVE[:100])
    records, status = read_all(path)
    assert [r["type"] for r in records] == ["header", "pin"]
    assert status.truncated.startswith(f"{path}:3: ") and "partial line" in status.truncated
    assert status.footer is None


def test_a_complete_last_line_without_newline_is_read(tmp_path):
    path = write(tmp_path, HEADER, PIN, MOVE.rstrip(b"\n"))
    records, status = read_all(path)
    assert records[-1]["type"] == "move" and status.truncated is None


def test_blank_lines_are_ignored(tmp_path):
    records, _ = read_all(write(tmp_path, HEADER, b"\n", PIN, b"  \r\n", FOOTER))
    assert [r["type"] for r in records] == ["header", "pin", "footer"]


def test_fields_this_version_does_not_know_are_ignored(tmp_path):
    records, _ = read_all(write(tmp_path, with_field(HEADER, from_the_future=1),
                                with_field(MOVE, folio_order=3)))
    assert records[1]["folio_order"] == 3


def test_gzip_trace_reads_and_a_cut_gzip_is_truncation(tmp_path):
    data = gzip.compress(b"".join(LINES))
    path = write(tmp_path, data, name="t.jsonl.gz")
    assert [r["type"] for r in read_all(path)[0]][-1] == "footer"
    cut = write(tmp_path, data[:len(data) * 2 // 3], name="cut.jsonl.gz")
    records, status = read_all(cut)
    assert records[0]["type"] == "header" and status.footer is None


MALFORMED = [
    # (lines, line number, problem)
    ([], 1, "empty trace: no header"),
    ([HEADER[:50]], 1, "ends inside its header"),
    ([PIN], 1, "the first record must be a uffdtrace-trace header, found a 'pin' record"),
    ([b'{"hello": "world"}\n'], 1, "not a uffdtrace trace"),
    ([with_field(HEADER, format="perf")], 1, "not a uffdtrace trace"),
    ([with_field(HEADER, version=7)], 1, "format version 7 is newer than this uffdtrace "
                                         f"reads ({FORMAT_VERSION}): upgrade uffdtrace"),
    ([with_field(HEADER, version=1.0)], 1, "unsupported trace format version 1.0"),
    ([with_field(HEADER, version="1")], 1, 'unsupported trace format version "1"'),
    ([with_field(HEADER, version=0)], 1, "unsupported trace format version 0"),
    ([HEADER, b"{not json\n", FOOTER], 2, "not valid JSON"),
    ([HEADER, b"[1, 2]\n"], 2, "expected a JSON object, found list"),
    ([HEADER, b'"move"\n'], 2, "expected a JSON object, found str"),
    ([HEADER, b'{"pid": 1}\n'], 2, 'record has no string "type"'),
    ([HEADER, b'{"type": ["move"]}\n'], 2, 'record has no string "type"'),
    ([HEADER, b'{"type": "snapshot"}\n'], 2, "unknown record type 'snapshot'"),
    ([HEADER, with_field(MOVE, pid=-1)], 2, "move record: pid must be bigger than or equal to 0"),
    ([HEADER, with_field(MOVE, pid=2 ** 32)], 2, "move record: pid must be smaller than"),
    ([HEADER, with_field(MOVE, latency_ns=1.5)], 2, "move record: latency_ns must be integer"),
    ([HEADER, with_field(MOVE, len=True)], 2, "move record: len must be integer"),
    ([HEADER, with_field(MOVE, dst=4096.0)], 2, "move record: dst must be integer"),
    ([HEADER, MOVE.replace(b'"len":32768', b'"len":' + b"9" * 30)], 2,
     "move record: len must be integer"),
    ([HEADER, with_field(MOVE, comm="x" * 100)], 2, "move record: comm must be shorter than"),
    ([HEADER, with_field(MOVE, diagnosis=None)], 2, "move record: diagnosis must be object"),
    ([HEADER, with_field(MOVE, errno="eagain")], 2, "move record: errno must match pattern"),
    ([HEADER, with_field(PIN, released="no")], 2, "pin record: released must be boolean"),
    ([HEADER, MOVE.replace(b'"evidence":"inferred"', b'"evidence":"certain"')], 2,
     "move record: diagnosis.evidence must be one of"),
    ([HEADER, MOVE.replace(b'"kind":"pin"', b'"kind":"gremlin"')], 2,
     "move record: diagnosis.culprit.kind must be one of"),
    ([HEADER, with_field(AGGREGATES, counters={"ringbuf_drops": -1})], 2,
     "aggregates record: counters.ringbuf_drops must be bigger than or equal to 0"),
    ([HEADER, HEADER], 2, "a second header"),
    ([HEADER, FOOTER, MOVE], 3, "move record after the footer"),
    ([HEADER, b"NaN\n"], 2, "not valid JSON"),
    ([HEADER, b'{"type": "footer", "end_wall": 1e999}\n'], 2, "not valid JSON"),
    ([HEADER, b"[" * 5000 + b"\n"], 2, "not valid JSON"),
    ([HEADER, b'{"type": "move", "comm": "\xff\xfe"}\n'], 2, "not valid JSON"),
    ([HEADER, b'{"type": "move", "comm": "\\ud800"}\n'], 2, "not valid JSON"),
    ([HEADER, b"\x00" * 64 + b"\n"], 2, "not valid JSON"),
    ([HEADER, b"x" * (MAX_LINE_BYTES + 10)], 2, f"line longer than {MAX_LINE_BYTES} bytes"),
]


@pytest.mark.parametrize("lines, lineno, problem", MALFORMED,
                         ids=[m[2][:40] for m in MALFORMED])
def test_malformed_input_is_one_error_naming_line_and_problem(tmp_path, lines, lineno, problem):
    path = write(tmp_path, *lines)
    with pytest.raises(TraceFormatError) as info:
        read_all(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{lineno}: "), message
    assert problem in message, message
    assert "\n" not in message and len(message) < 400 + len(path)
    assert info.value.exit_code == 2 and isinstance(info.value, UserError)


def test_hostile_text_in_an_error_stays_on_one_printable_line(tmp_path):
    path = write(tmp_path, HEADER, b'{"type": "evil\\n\\u001b[31mred"}\n')
    with pytest.raises(TraceFormatError) as info:
        read_all(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


@pytest.mark.parametrize("target, problem", [
    ("missing.jsonl", "No such file or directory"),
    (".", "not a regular file"),
    ("/dev/zero", "not a regular file"),
])
def test_unreadable_paths_are_user_errors(tmp_path, target, problem):
    path = target if target.startswith("/") else str(tmp_path / target)
    with pytest.raises(UserError, match=problem):
        read_all(path)
