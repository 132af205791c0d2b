"""Successful moves in bulk: the trace file's `successes` record.

A success needs no diagnosis beyond "ok", yet written as one `move` record
each it cost the collector ~40 us (an object, a dict, a JSON line): about a
core at 25,000 moves/s.  `record` therefore writes the successes drained in
one go (events.SuccessBatch) as one record of rows,

    {"type": "successes", "fields": ["pid", "tid", ...], "rows": [[1234, ...], ...]}

and every reader sees the `move` records they stand for (moves()), each the
very dict the one-at-a-time path writes for that success
(session.TracedMove.to_json): report, export and `top` need no second path.

Readers check the rows column by column against the move record's schema
(check()): the same rules as a `move` record, at C speed over a column
instead of a validator call per record.
"""
from __future__ import annotations

import functools
from typing import Iterator

import orjson

from .diagnose import PinTable, diagnose
from .events import MoveEvent, SuccessBatch, success_rows
from .traceschema import strict_schema

RECORD_TYPE = "successes"
# Rows a record holds at most: a row is ~130 bytes, at worst ~900 (every
# number at its widest, comms of escapes); 1,024 stay under the reader's
# 1 MiB line limit.
MAX_ROWS = 1024


def records(batch: SuccessBatch) -> Iterator[dict]:
    """The `successes` records of a batch (MAX_ROWS rows each at most)."""
    fields = list(success_rows().fields)
    rows = batch.rows()
    for start in range(0, len(rows), MAX_ROWS):
        yield {"type": RECORD_TYPE, "fields": fields, "rows": rows[start:start + MAX_ROWS]}


@functools.cache
def _template() -> dict:
    """A success's move record with every field of the row left to fill:
    the JSON the one-at-a-time path writes (TracedMove.to_json), as a reader
    parses it."""
    from .session import TracedMove   # session imports this module's users
    names = success_rows().fields
    blank = MoveEvent(**{n: "" if n in ("comm", "pinner_comm") else 0 for n in names})
    record = TracedMove(blank, diagnose(blank, None, PinTable()), None).to_json()
    record = orjson.loads(orjson.dumps(record))      # enums as the file has them
    for n in names:
        del record[n]
    return record


def moves(record: dict) -> Iterator[dict]:
    """The `move` records a checked `successes` record stands for, in order."""
    template, fields = _template(), record["fields"]
    for row in record["rows"]:
        yield {**template, **dict(zip(fields, row))}


class SuccessesError(ValueError):
    """A `successes` record whose rows break the move record's rules."""


@functools.cache
def _column_rules() -> dict[str, tuple]:
    """For each scalar field of a move record: ("int", min, max) or
    ("str", max_length), from the trace schema (one source of the rules)."""
    schema = strict_schema()
    definitions = schema["definitions"]

    def resolve(node: dict) -> dict:
        merged = {}
        while True:
            merged = {**node, **merged}
            ref = node.get("$ref")
            if ref is None:
                return merged
            node = definitions[ref.rsplit("/", 1)[1]]
            merged.pop("$ref", None)

    rules = {}
    for name, prop in definitions["move"]["properties"].items():
        rule = resolve(prop)
        if rule.get("type") == "integer":
            rules[name] = ("int", rule["minimum"], rule["maximum"])
        elif rule.get("type") == "string" and "pattern" not in rule:
            rules[name] = ("str", rule.get("maxLength"))
    return rules


def check(record: dict):
    """Raise SuccessesError unless every row of `record` makes a valid
    success move record.  Fields this uffdtrace does not know are kept and
    not checked (a newer writer's); required move fields must all be there."""
    fields, rows = record["fields"], record["rows"]
    if len(set(fields)) != len(fields):
        raise SuccessesError("fields are not unique")
    missing = set(_required()) - set(fields)
    if missing:
        raise SuccessesError(f"fields lack {', '.join(sorted(missing))}")
    for i, row in enumerate(rows):
        if len(row) != len(fields):
            raise SuccessesError(f"row {i} has {len(row)} values for {len(fields)} fields")
    if not rows:
        return
    rules = _column_rules()
    for name, column in zip(fields, zip(*rows)):
        rule = rules.get(name)
        if rule is None:
            continue
        if rule[0] == "int":
            if not all(type(v) is int for v in column):
                raise SuccessesError(f"{name} values must be integers")
            if min(column) < rule[1] or max(column) > rule[2]:
                raise SuccessesError(f"{name} value out of range [{rule[1]}, {rule[2]}]")
        else:
            if not all(type(v) is str for v in column):
                raise SuccessesError(f"{name} values must be strings")
            if rule[1] is not None and max(map(len, column)) > rule[1]:
                raise SuccessesError(f"{name} value longer than {rule[1]} characters")
    ret = fields.index("ret")
    if min(row[ret] for row in rows) < 0:
        raise SuccessesError("a row with ret < 0 is no success")


@functools.cache
def _required() -> tuple[str, ...]:
    """The move record's required fields a row must give (the rest come
    from the template)."""
    return tuple(n for n in strict_schema()["definitions"]["move"]["required"]
                 if n not in _template() and n != "type")
