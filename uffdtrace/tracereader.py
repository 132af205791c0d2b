"""Reading trace files: a stream of records, each parsed and checked
against the trace schema before anyone sees it, so report, export and
`top --replay` can trust every field's type and range.

    status = ReadStatus()
    for record in iter_records("t.jsonl", status):
        ...                      # header first, then move/pin/ksm/aggregates, footer
                                 # (a `successes` record comes as its moves)
    if status.truncated: print(status.truncated)

A problem is one TraceFormatError, ``PATH:LINE: problem`` (exit code 2).
The one tolerated problem is a partial last line -- what a recorder killed
mid-write leaves -- reported in ``status.truncated``, not raised: every
complete line before it is still read.  Memory is bounded by the longest
allowed line (MAX_LINE_BYTES), never by the file's size.  gzip-compressed
traces (as attached to bug reports) are read transparently.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import stat
import zlib
from dataclasses import dataclass
from typing import Iterator

import orjson

from . import successes
from .errors import UserError
from .schemacheck import SchemaError, compile_schema
from .textsafe import one_line
from .traceschema import FORMAT, FORMAT_VERSION, READABLE_VERSIONS, RECORD_TYPES, tolerant_schema

MAX_LINE_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


class TraceFormatError(UserError):
    """A trace file that cannot be read: ``PATH:LINE: problem``."""

    def __init__(self, path: str, line: int, problem: str):
        super().__init__(f"{path}:{line}: {one_line(problem, 300)}")
        self.path, self.line, self.problem = path, line, problem


@dataclass
class ReadStatus:
    """Filled in while iter_records runs; final once it is exhausted."""

    lines: int = 0                 # lines read
    records: int = 0               # records yielded
    header: dict | None = None
    footer: dict | None = None     # None: the recorder did not finish the trace
    truncated: str | None = None   # "PATH:LINE: ..." when the last line is partial


@functools.cache
def _validators() -> dict:
    """One compiled check per record type, built on first use."""
    schema = tolerant_schema()
    return {t: compile_schema(schema["definitions"][t], schema) for t in RECORD_TYPES}


def _validator(record_type: str):
    return _validators().get(record_type)


def _parse(line: bytes):
    """One JSON value.  orjson: strict RFC 8259 (no NaN/Infinity, valid UTF-8,
    no lone surrogates, nesting depth <= 1024) and several times faster than
    the json module, which matters at a million lines."""
    return orjson.loads(line)


def _open(path: str):
    """The file as a binary stream (gunzipped if need be)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise UserError(f"cannot read {path}: not a regular file")
    os.set_blocking(fd, True)
    raw = os.fdopen(fd, "rb")
    if raw.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _check_header(path: str, lineno: int, record: dict):
    kind = record.get("type")
    if kind != "header" or record.get("format") != FORMAT:
        got = f"a {kind!r} record" if isinstance(kind, str) else "no header"
        raise TraceFormatError(path, lineno, f"not a uffdtrace trace: the first record must "
                               f"be a {FORMAT} header, found {got}")
    version = record.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise TraceFormatError(path, lineno, f"trace format version {version} is newer than "
                               f"this uffdtrace reads ({FORMAT_VERSION}): upgrade uffdtrace")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise TraceFormatError(path, lineno, f"unsupported trace format version "
                               f"{json.dumps(version)[:40]} (this uffdtrace reads "
                               f"{', '.join(map(str, READABLE_VERSIONS))})")


def _check(path: str, lineno: int, record, status: ReadStatus) -> dict:
    """`record` if it may stand at this place in the file; else raise."""
    if not isinstance(record, dict):
        raise TraceFormatError(path, lineno, f"expected a JSON object, found "
                               f"{type(record).__name__.replace('dict', 'object')}")
    if status.header is None:
        _check_header(path, lineno, record)
    kind = record.get("type")
    if not isinstance(kind, str):
        raise TraceFormatError(path, lineno, "record has no string \"type\"")
    validate = _validator(kind)
    if validate is None:
        raise TraceFormatError(path, lineno, f"unknown record type {kind!r}")
    if status.footer is not None:
        raise TraceFormatError(path, lineno, f"{kind} record after the footer")
    if kind == "header" and status.header is not None:
        raise TraceFormatError(path, lineno, "a second header")
    try:
        validate(record)
    except SchemaError as exc:
        raise TraceFormatError(path, lineno, f"{kind} record: {str(exc).lstrip('.')}") from None
    return record


def _lines(path: str, stream) -> Iterator[tuple[int, bytes]]:
    lineno = 0
    while True:
        try:
            line = stream.readline(MAX_LINE_BYTES + 1)
        except EOFError:       # gzip stream cut short: like a partial last line
            return
        except (OSError, zlib.error) as exc:
            raise TraceFormatError(path, lineno + 1, f"cannot read: {exc}") from None
        if not line:
            return
        lineno += 1
        if len(line) > MAX_LINE_BYTES:
            raise TraceFormatError(path, lineno, f"line longer than {MAX_LINE_BYTES} bytes")
        yield lineno, line


def _success_moves(path: str, lineno: int, record: dict, status: ReadStatus) -> Iterator[dict]:
    """The move records a `successes` record stands for (successes.py)."""
    try:
        successes.check(record)
    except successes.SuccessesError as exc:
        raise TraceFormatError(path, lineno, f"successes record: {exc}") from None
    for move in successes.moves(record):
        status.records += 1
        yield move


def iter_records(path: str, status: ReadStatus | None = None) -> Iterator[dict]:
    """Every record of the trace at `path`, validated, header first.

    Raises TraceFormatError for a malformed file; a partial last line ends
    the iteration and is described in ``status.truncated``.  Blank lines are
    ignored.
    """
    status = status if status is not None else ReadStatus()
    stream, raw = _open(path)
    with raw, stream:
        for lineno, line in _lines(path, stream):
            status.lines = lineno
            if not line.strip():
                continue
            try:
                record = _parse(line)
            except orjson.JSONDecodeError as exc:
                if line.endswith(b"\n"):
                    raise TraceFormatError(path, lineno, f"not valid JSON: {exc}") from None
                if status.header is None:
                    raise TraceFormatError(path, lineno, "the file ends inside its header "
                                           "(nothing was recorded)") from None
                status.truncated = (f"{path}:{lineno}: the trace ends in a partial line "
                                    "(recorder killed?); read up to the line before")
                return
            _check(path, lineno, record, status)
            if record["type"] == "successes":
                yield from _success_moves(path, lineno, record, status)
                continue
            if record["type"] == "header":
                status.header = record
            elif record["type"] == "footer":
                status.footer = record
            status.records += 1
            yield record
    if status.header is None:
        raise TraceFormatError(path, max(status.lines, 1), "empty trace: no header")
