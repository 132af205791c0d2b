"""Compile (a subset of) JSON Schema draft 7 into a Python function.

The trace reader validates every record it yields -- a million of them in a
large trace -- so validation must cost little more than the JSON parse.
This turns a schema into straight-line Python source (one `if` per rule, no
exceptions on the success path), compiled once.  It supports exactly the
keywords uffdtrace/trace_schema.json uses and refuses any other, so the
schema can never rely on a rule the reader silently ignores; the tests
check its verdicts against the reference implementation (jsonschema).

Deliberate differences from the letter of draft 7, both stricter:
* "integer" means a JSON number written without fraction or exponent (a
  Python int), as in draft 4: 5.0 is not an integer here;
* `$` in a pattern matches only at the very end (ECMA-262), not before a
  final newline as Python's `re` would.
"""
from __future__ import annotations

import re
from typing import Callable

ANNOTATIONS = {"$schema", "$id", "title", "description", "$comment", "definitions"}
TYPE_TESTS = {
    "null": "{v} is None", "boolean": "type({v}) is bool", "integer": "type({v}) is int",
    "number": "type({v}) in (int, float)", "string": "type({v}) is str",
    "array": "type({v}) is list", "object": "type({v}) is dict",
}
KEYWORD_TYPES = {   # keyword -> the types it applies to
    "minimum": ("integer", "number"), "maximum": ("integer", "number"),
    "maxLength": ("string",), "pattern": ("string",),
    "required": ("object",), "properties": ("object",), "additionalProperties": ("object",),
    "propertyNames": ("object",), "maxProperties": ("object",),
    "items": ("array",), "minItems": ("array",), "maxItems": ("array",),
}
SUPPORTED = ANNOTATIONS | set(KEYWORD_TYPES) | {"type", "const", "enum", "allOf", "if", "then",
                                                "$ref"}


class SchemaError(ValueError):
    """A value that does not follow the schema; the message names where."""


class SchemaDefinitionError(Exception):
    """The schema uses something this compiler does not support."""


def _same(a, b) -> bool:
    """JSON equality: true is not 1."""
    return type(a) is type(b) and a == b


class _Compiler:
    def __init__(self, root: dict):
        self.root = root
        self.lines: list[str] = []
        self.constants: dict[str, object] = {}
        self.helpers: dict[str, str] = {}      # if-schemas compiled as predicates
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value) -> str:
        name = self.name("K")
        self.constants[name] = value
        return name

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            if set(node) - ANNOTATIONS - {"$ref"}:
                raise SchemaDefinitionError("$ref with sibling keywords is ignored in draft 7")
            ref = node["$ref"]
            if not ref.startswith("#/definitions/"):
                raise SchemaDefinitionError(f"unsupported $ref {ref}")
            node = self.root["definitions"][ref.removeprefix("#/definitions/")]
        return node

    def emit(self, depth: int, line: str):
        self.lines.append("    " * depth + line)

    def fail(self, depth: int, where: str, message: str):
        """Raise SchemaError: `where` is a Python expression for the path."""
        self.emit(depth, f"raise SchemaError({where} + {message!r})")

    def scalar_test(self, schema: dict, v: str) -> str | None:
        """One boolean expression that is true exactly when `v` follows a
        scalar-only schema (the common case: most fields), or None."""
        types = schema.get("type")
        if types is None or set(schema) - ANNOTATIONS - {
                "type", "const", "enum", "minimum", "maximum", "maxLength", "pattern"}:
            return None
        terms = []
        for t in [types] if isinstance(types, str) else types:
            term = [TYPE_TESTS[t].format(v=v)]
            if t in ("integer", "number"):
                if "minimum" in schema:
                    term.append(f"{v} >= {schema['minimum']!r}")
                if "maximum" in schema:
                    term.append(f"{v} <= {schema['maximum']!r}")
            elif t == "string":
                if "maxLength" in schema:
                    term.append(f"len({v}) <= {schema['maxLength']}")
                if "pattern" in schema:
                    term.append(f"{self.pattern(schema['pattern'])}.search({v}) is not None")
            terms.append("(" + " and ".join(term) + ")")
        test = " or ".join(terms)
        if "const" in schema:
            test = f"({test}) and _same({v}, {self.constant(schema['const'])})"
        if "enum" in schema:
            test = f"({test}) and {self.enum_test(schema['enum'], v)}"
        return test

    def pattern(self, pattern: str) -> str:
        ecma = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
        return self.constant(re.compile(ecma))

    def enum_test(self, values: list, v: str) -> str:
        if all(type(x) is str for x in values):
            return f"(type({v}) is str and {v} in {self.constant(frozenset(values))})"
        return f"any(_same({v}, x) for x in {self.constant(tuple(values))})"

    def node(self, schema: dict, v: str, where: str, depth: int):
        schema = self.resolve(schema)
        unknown = set(schema) - SUPPORTED
        if unknown:
            raise SchemaDefinitionError(f"unsupported keywords {sorted(unknown)}")
        fast = self.scalar_test(schema, v)
        if fast is not None:
            # the detailed checks below only run to name what is wrong
            self.emit(depth, f"if not ({fast}):")
            depth += 1
        types = schema.get("type")
        types = [types] if isinstance(types, str) else types
        if types is not None:
            test = " or ".join(TYPE_TESTS[t].format(v=v) for t in types)
            self.emit(depth, f"if not ({test}):")
            self.fail(depth + 1, where, f" must be {' or '.join(types)}")
        if "const" in schema:
            self.emit(depth, f"if not _same({v}, {self.constant(schema['const'])}):")
            self.fail(depth + 1, where, f" must be {schema['const']!r}")
        if "enum" in schema:
            self.emit(depth, f"if not {self.enum_test(schema['enum'], v)}:")
            self.fail(depth + 1, where, f" must be one of {schema['enum']}")
        for family in (("integer", "number"), ("string",), ("object",), ("array",)):
            keywords = [k for k in schema if KEYWORD_TYPES.get(k, ()) == family or
                        (family == ("integer", "number") and k in ("minimum", "maximum"))]
            if not keywords:
                continue
            guaranteed = types is not None and set(types) <= set(family)
            inner = depth
            if not guaranteed:
                self.emit(depth, "if " + " or ".join(TYPE_TESTS[t].format(v=v) for t in family)
                          + ":")
                inner = depth + 1
            getattr(self, "family_" + family[0])(schema, v, where, inner)
        for sub in schema.get("allOf", ()):
            self.node(sub, v, where, depth)
        if "if" in schema:
            if "then" not in schema:
                raise SchemaDefinitionError("if without then")
            self.emit(depth, f"if {self.predicate(schema['if'])}({v}):")
            self.node(schema["then"], v, where, depth + 1)

    def predicate(self, schema: dict) -> str:
        """A function name: True when a value follows `schema`."""
        inner = _Compiler(self.root)
        inner.counter = self.counter + 1000
        check = inner.compile_source(schema)
        self.counter = inner.counter
        name = self.name("P")
        self.helpers.update(inner.helpers)
        self.constants.update(inner.constants)
        self.helpers[name] = check
        return name

    def family_integer(self, schema, v, where, depth):
        if "minimum" in schema:
            self.emit(depth, f"if {v} < {schema['minimum']!r}:")
            self.fail(depth + 1, where, f" must be bigger than or equal to {schema['minimum']}")
        if "maximum" in schema:
            self.emit(depth, f"if {v} > {schema['maximum']!r}:")
            self.fail(depth + 1, where, f" must be smaller than or equal to {schema['maximum']}")

    def family_string(self, schema, v, where, depth):
        if "maxLength" in schema:
            self.emit(depth, f"if len({v}) > {schema['maxLength']}:")
            self.fail(depth + 1, where, f" must be shorter than or equal to "
                                        f"{schema['maxLength']} characters")
        if "pattern" in schema:
            self.emit(depth, f"if {self.pattern(schema['pattern'])}.search({v}) is None:")
            self.fail(depth + 1, where, f" must match pattern {schema['pattern']}")

    def family_object(self, schema, v, where, depth):
        required = schema.get("required", [])
        if required:
            self.emit(depth, f"if not {self.constant(frozenset(required))} <= {v}.keys():")
            self.emit(depth + 1, f"raise SchemaError({where} + ' must contain ' + "
                                 f"repr(sorted({self.constant(frozenset(required))} - "
                                 f"{v}.keys())) + ' properties')")
        if "maxProperties" in schema:
            self.emit(depth, f"if len({v}) > {schema['maxProperties']}:")
            self.fail(depth + 1, where, f" must have at most {schema['maxProperties']} "
                                        "properties")
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            item = self.name("v")
            sub_where = f"{where} + {'.' + key!r}"
            if key in required:
                self.emit(depth, f"{item} = {v}[{key!r}]")
                self.node(sub, item, sub_where, depth)
            else:
                self.emit(depth, f"if {key!r} in {v}:")
                self.emit(depth + 1, f"{item} = {v}[{key!r}]")
                self.node(sub, item, sub_where, depth + 1)
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        if extra is True and names is None:
            return
        key, item = self.name("k"), self.name("v")
        known = self.constant(frozenset(properties))
        self.emit(depth, f"for {key}, {item} in {v}.items():")
        key_where = f"{where} + '.' + str({key})"
        if names is not None:
            self.node(dict(names, type="string"), key, f"{where} + ' property name ' + "
                      f"repr({key})", depth + 1)
        if extra is False:
            self.emit(depth + 1, f"if {key} not in {known}:")
            self.emit(depth + 2, f"raise SchemaError({where} + ' must not contain ' + "
                                 f"repr({key}))")
        elif extra is not True:
            self.emit(depth + 1, f"if {key} not in {known}:")
            self.node(extra, item, key_where, depth + 2)

    def family_array(self, schema, v, where, depth):
        if "minItems" in schema:
            self.emit(depth, f"if len({v}) < {schema['minItems']}:")
            self.fail(depth + 1, where, f" must contain at least {schema['minItems']} items")
        if "maxItems" in schema:
            self.emit(depth, f"if len({v}) > {schema['maxItems']}:")
            self.fail(depth + 1, where, f" must contain at most {schema['maxItems']} items")
        if "items" in schema:
            index, item = self.name("i"), self.name("v")
            self.emit(depth, f"for {index}, {item} in enumerate({v}):")
            self.node(schema["items"], item, f"{where} + '[' + str({index}) + ']'", depth + 1)

    def compile_source(self, schema: dict) -> str:
        """Source of `def check(value) -> bool` (True; raises SchemaError).
        Builtins, helpers and constants are bound as default arguments: local
        lookups, the cheapest Python has."""
        self.lines = []
        self.node(schema, "value", "''", 1)
        names = ["type", "len", "_same", "SchemaError", *self.constants]
        return (f"def check(value, {', '.join(f'{n}={n}' for n in names)}):\n"
                + "\n".join(self.lines) + "\n    return True\n")


def compile_schema(schema: dict, root: dict | None = None) -> Callable[[object], bool]:
    """A function that returns True for a value following `schema` and raises
    SchemaError (message: "path.to.field must ...") otherwise.  `root`
    holds the definitions `$ref`s point into (default: `schema`)."""
    compiler = _Compiler(root if root is not None else schema)
    source = compiler.compile_source(schema)
    scope = {"SchemaError": SchemaError, "_same": _same, **compiler.constants}
    for name, helper in compiler.helpers.items():
        local: dict = {}
        exec(compile(helper, f"<schema {name}>", "exec"), scope, local)   # noqa: S102
        check = local["check"]

        def predicate(value, _check=check):
            try:
                return _check(value)
            except SchemaError:
                return False
        scope[name] = predicate
    local = {}
    exec(compile(source, "<schema>", "exec"), scope, local)   # noqa: S102 - our own schema
    return local["check"]
