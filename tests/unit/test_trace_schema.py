"""The schema is the format's one definition: every record the writer
produces validates against it (strictly: no undocumented field), the
reader's fast validator agrees with the reference implementation, and the
documentation covers every record and field."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tests.helpers import ROOT
from tests.tracegen import (T0, mixed_items, ok, storm_items, success_batch, wake_items,
                           write_large_trace, write_trace)
from uffdtrace.schemacheck import SchemaError
from uffdtrace.taxonomy import CAUSES, EVIDENCE_LEVELS
from uffdtrace.tracereader import ReadStatus, iter_records
from uffdtrace.tracereader import _validator as reader_validator
from uffdtrace.traceschema import RECORD_TYPES, strict_schema

DOC = ROOT / "docs" / "trace-format.md"


@pytest.fixture(scope="module")
def strict():
    jsonschema.Draft7Validator.check_schema(strict_schema())
    return jsonschema.Draft7Validator(strict_schema())


def assert_all_valid(strict, path):
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines
    for n, line in enumerate(lines, 1):
        errors = [e.message for e in strict.iter_errors(json.loads(line))]
        assert not errors, f"line {n}: {errors}"
    return [json.loads(line) for line in lines]


def test_every_record_of_a_written_trace_is_valid_and_documented(strict, tmp_path):
    path = tmp_path / "mixed.jsonl"
    more_successes = success_batch([ok(ts_ns=T0 + 9_000_000 + i) for i in range(3)])
    write_trace(path, mixed_items() + storm_items() + wake_items() + [more_successes],
                success_sample=1)
    records = assert_all_valid(strict, path)
    assert {r["type"] for r in records} == set(RECORD_TYPES)


def test_large_trace_template_records_are_valid(strict, tmp_path):
    path = tmp_path / "large.jsonl"
    write_large_trace(path, 300)
    assert len(assert_all_valid(strict, path)) == 303


def test_the_early_v1_sample_still_reads(strict):
    assert_all_valid(strict, ROOT / "tests" / "data" / "pinned-early-v1.jsonl")


def test_strict_schema_rejects_an_undocumented_field(strict, tmp_path):
    path = tmp_path / "t.jsonl"
    write_trace(path, mixed_items())
    move = next(json.loads(line) for line in open(path) if '"type":"move"' in line)
    move["undocumented"] = 1
    assert not strict.is_valid(move)
    # ...which the (tolerant) reader accepts: newer writers stay readable
    before = sum(r["type"] == "move" for r in iter_records(str(path)))
    lines = open(path).read().splitlines()
    lines.insert(1, json.dumps(move))
    path.write_text("\n".join(lines) + "\n")
    assert sum(r["type"] == "move" for r in iter_records(str(path))) == before + 1


def test_reader_and_reference_validator_agree_on_mutated_records(strict, tmp_path):
    """Each field of a real record replaced by values of other types and
    ranges: the reader's compiled validator rejects exactly what the
    reference implementation rejects."""
    path = tmp_path / "t.jsonl"
    write_trace(path, mixed_items())
    base = [json.loads(line) for line in open(path)]
    probes = [None, True, -1, 0, 2 ** 32, 2 ** 64, 1.5, "", "x" * 5000, [], {}, "EBUSY"]
    disagreements = []
    for record in base[1:]:
        for key in record:
            if key == "type":
                continue
            for value in probes:
                mutated = {**record, key: value}
                expected = strict.is_valid(mutated)
                try:
                    reader_validator(record["type"])(mutated)
                    got = True
                except SchemaError:
                    got = False
                if got != expected:
                    disagreements.append((record["type"], key, value))
    assert not disagreements


def test_taxonomy_codes_and_evidence_levels_fit_the_schema():
    d = strict_schema()["definitions"]
    code = re.compile(d["code"]["pattern"])
    assert all(code.match(c) for c in CAUSES)
    assert tuple(d["evidence"]["enum"]) == EVIDENCE_LEVELS


def test_documentation_names_every_record_field_and_cause():
    doc = DOC.read_text()
    defs = strict_schema()["definitions"]
    missing = []
    for name, definition in defs.items():
        for prop in definition.get("properties", {}):
            if f"`{prop}`" not in doc:
                missing.append(f"{name}.{prop}")
    for prop in defs["header"]["properties"]["filters"]["properties"]:
        if f"`{prop}`" not in doc:
            missing.append(f"filters.{prop}")
    for code in CAUSES:
        if f"`{code}`" not in doc:
            missing.append(f"cause {code}")
    assert not missing


def test_reader_reports_validated_counts(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = write_trace(path, mixed_items())
    status = ReadStatus()
    records = list(iter_records(str(path), status))
    assert status.footer["moves"] == writer.moves == sum(r["type"] == "move" for r in records)
    assert status.footer["ksm"] == 1 and status.footer["pins"] == 1


def test_a_huge_command_line_still_gives_a_readable_trace(strict, tmp_path):
    path = tmp_path / "t.jsonl"
    command = ["sh", "-c", "x" * 200_000, *[f"arg{i}" for i in range(5000)]]
    write_trace(path, mixed_items(), filters={"pid": 0, "tid": 0, "failed_only": False,
                                              "duration": 0, "command": command})
    records = assert_all_valid(strict, path)
    recorded = records[0]["filters"]["command"]
    assert recorded[:2] == ["sh", "-c"] and "more characters" in recorded[2]
    assert recorded[-1] == f"...[{len(command) - 256} more arguments]"
    assert list(iter_records(str(path)))[-1]["type"] == "footer"
