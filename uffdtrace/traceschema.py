"""The trace file's JSON Schema (uffdtrace/trace_schema.json, documented in
docs/trace-format.md), loaded once.

Two readings of the one schema:
* strict: exactly what writers may emit (tests validate every produced
  record against it, so an undocumented field fails a test);
* tolerant: what readers accept: the same rules with every
  `additionalProperties: false` dropped, so a reader ignores fields it does
  not know instead of rejecting a trace written by a newer uffdtrace.
"""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources

FORMAT = "uffdtrace-trace"
# 2 added the `successes` record; a version 1 file is a version 2 file
# without one, so the reader reads both.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
RECORD_TYPES = ("header", "move", "successes", "pin", "ksm", "repeat", "wake", "livelock", "aggregates", "footer")


@functools.cache
def strict_schema() -> dict:
    text = resources.files("uffdtrace").joinpath("trace_schema.json").read_text("utf-8")
    return json.loads(text)


def _drop_closed_objects(node):
    if isinstance(node, dict):
        return {k: _drop_closed_objects(v) for k, v in node.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_drop_closed_objects(v) for v in node]
    return node


@functools.cache
def tolerant_schema() -> dict:
    return _drop_closed_objects(copy.deepcopy(strict_schema()))
