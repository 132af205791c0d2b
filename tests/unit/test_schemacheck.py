"""The schema compiler the reader validates with: its verdicts match the
reference implementation (jsonschema) on random values, it is stricter
where it says so, and it refuses keywords it does not implement."""
from __future__ import annotations

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uffdtrace.schemacheck import SchemaDefinitionError, SchemaError, compile_schema
from uffdtrace.traceschema import RECORD_TYPES, strict_schema

ROOT = strict_schema()


def verdict(check, value) -> bool:
    try:
        return check(value)
    except SchemaError:
        return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 65, 2 ** 65) |
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()) |
    st.text(max_size=8).filter(lambda s: not s.endswith("\n")) | st.sampled_from(["ok", "EBUSY", "pin", "ksm", "observed", "move"]),
    lambda children: st.lists(children, max_size=3) |
    st.dictionaries(st.sampled_from(["kind", "pid", "type", "start", "x", "range", "flags"]),
                    children, max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(sorted(ROOT["definitions"])), json_values)
def test_same_verdicts_as_jsonschema_on_random_values(definition, value):
    schema = {**ROOT, "$ref": f"#/definitions/{definition}"}
    del schema["allOf"], schema["properties"], schema["required"], schema["type"]
    expected = jsonschema.Draft7Validator(schema).is_valid(value)
    assert verdict(compile_schema(ROOT["definitions"][definition], ROOT), value) == expected


def test_every_record_type_compiles():
    for record_type in RECORD_TYPES:
        assert callable(compile_schema(ROOT["definitions"][record_type], ROOT))


@pytest.mark.parametrize("schema, value, message", [
    ({"type": "integer"}, 5.0, " must be integer"),
    ({"type": "integer"}, True, " must be integer"),
    ({"const": 1}, True, " must be 1"),
    ({"type": "string", "pattern": "^E[A-Z]+$"}, "EBUSY\n", " must match pattern"),
    ({"properties": {"a": {"items": {"maximum": 3}}}}, {"a": [1, 9]},
     ".a[1] must be smaller than or equal to 3"),
    ({"required": ["a", "b"]}, {"a": 1}, " must contain ['b'] properties"),
    ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "z": 2},
     " must not contain 'z'"),
])
def test_stricter_rules_and_messages(schema, value, message):
    with pytest.raises(SchemaError) as info:
        compile_schema(schema)(value)
    assert str(info.value).startswith(message)


def test_unsupported_keywords_are_refused_not_ignored():
    with pytest.raises(SchemaDefinitionError, match="oneOf"):
        compile_schema({"oneOf": [{"type": "null"}, {"type": "integer"}]})
    with pytest.raises(SchemaDefinitionError, match=r"\$ref with sibling"):
        compile_schema({"$ref": "#/definitions/a", "type": "null", "definitions": {"a": {}}})
