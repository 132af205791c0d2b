"""No kernel pointer leaves the machine.

A trace is attached to bug reports; kernel addresses (folio, struct page,
mm) would reveal the KASLR layout and page frame numbers the physical one.
The writer passes every record through one KernelValueScrubber, which
replaces such values with stable per-trace identifiers: equal values in one
trace get equal ids (so "the same folio failed twice" survives), the key is
random per trace and never written, so ids cannot be reversed or matched
across traces.  User addresses stay: they are the user's own.

Which fields are kernel values -- the convention for anyone adding one:
* a kernel address: named `kptr`, `folio`, or ending in `_kptr` / `_folio`
  -> "kptr-<16 hex>";
* a page frame number: named `pfn` or ending in `_pfn` -> "pfn-<16 hex>".
Safety net: any other integer >= 2**63 (the kernel half of the address
space on x86-64 and arm64) is replaced too, unless the field is one of the
user-supplied values below; the trace schema then rejects the record in the
tests, so an undeclared kernel field is caught before it ships.
"""
from __future__ import annotations

import hashlib
import os
import re

import orjson

KPTR_NAMES = frozenset({"kptr", "folio"})
KPTR_SUFFIXES = ("_kptr", "_folio")
PFN_NAMES = frozenset({"pfn"})
PFN_SUFFIXES = ("_pfn",)
# Integers the user passed in (their own addresses, lengths, garbage): kept
# whatever their value.
USER_VALUE_NAMES = frozenset({"dst", "src", "len", "mode", "move", "move_before", "addr",
                              "fail_addr", "src_addr", "dst_addr", "start", "end", "range",
                              "vm_start", "vm_end",
                              # flag words, not addresses (VM_SEALED is bit 63 on 6.x)
                              "vm_flags"})
KERNEL_HALF = 1 << 63
# What a serialized record must contain for scrub() to change anything: a
# kernel-value field name, or a run of 19+ digits (>= 2**63 has 19).  Most
# records contain neither: checked with C-speed bytes operations (a regex
# or a Python walk of every record would cost more than writing it).
_NAME_MARKS = (b'kptr":', b'folio":', b'pfn":')
_DIGITS_AS_9 = bytes.maketrans(b"0123456789", b"9" * 10)
_LONG_NUMBER = b"9" * 19


def _may_hold_kernel_values(line: bytes) -> bool:
    return any(mark in line for mark in _NAME_MARKS) or \
        _LONG_NUMBER in line.translate(_DIGITS_AS_9)


# An integer member under a kernel-value name, in a serialized record.
# (Inside a string JSON escapes every quote, so `"pfn":1` in a comm reads
# `\"pfn\":1`: no match.)
_KERNEL_MEMBER = re.compile(rb'"((?:[A-Za-z0-9_]*_)?(?:kptr|folio|pfn))":(-?[0-9]+)(?=[,}])')
# What that member-by-member pass cannot judge: a list under a kernel-value
# name (each element is judged by that name), or a number of 19+ digits (the
# safety net: in a list, or a user's own value): then the record is walked.
_LIST_MARKS = tuple(mark + b"[" for mark in _NAME_MARKS)


def _left_for_the_walk(line: bytes) -> bool:
    return any(mark in line for mark in _LIST_MARKS) or \
        _LONG_NUMBER in line.translate(_DIGITS_AS_9)


class KernelValueScrubber:
    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else os.urandom(16)

    def identifier(self, kind: str, value: int) -> str:
        """The stable id of a kernel value: "<kind>-<16 hex digits>"."""
        digest = hashlib.blake2b(value.to_bytes(16, "little", signed=True), key=self._key,
                                 digest_size=8, person=kind.encode()[:16])
        return f"{kind}-{digest.hexdigest()}"

    def _kind(self, name: str) -> str | None:
        if name in KPTR_NAMES or name.endswith(KPTR_SUFFIXES):
            return "kptr"
        if name in PFN_NAMES or name.endswith(PFN_SUFFIXES):
            return "pfn"
        return None

    def _value(self, name: str, value):
        if type(value) is int:
            kind = self._kind(name)
            if kind is not None:
                return self.identifier(kind, value)
            if value >= KERNEL_HALF and name not in USER_VALUE_NAMES:
                return self.identifier("kptr", value)
            return value
        if type(value) is dict:
            return self.scrub(value)
        if type(value) is list:
            return [self._value(name, v) for v in value]
        return value

    def scrub(self, record: dict) -> dict:
        """`record` with every kernel value replaced (a new dict; nested too).
        A record of rows (`successes`) names its columns in `fields`: each
        value is judged by its column's name."""
        out = {name: self._value(name, value) for name, value in record.items()
               if name != "rows"}
        if "rows" in record:
            columns = record.get("fields")
            out["rows"] = [[self._value(name, v) for name, v in zip(columns, row)]
                           for row in record["rows"]] if columns else \
                self._value("rows", record["rows"])
        return out

    def serialize(self, record: dict) -> bytes:
        """`record` as one scrubbed JSON line (UTF-8, with its newline): the
        writer's only way to turn a record into bytes.  orjson: several
        times faster than the json module, which matters at 100,000+
        records a second."""
        line = orjson.dumps(record)
        if not _may_hold_kernel_values(line):
            return line + b"\n"
        # Most that may are failures with page states (a "pfn" member each):
        # replacing those members in the line is ~10x cheaper than walking
        # every field of the record; what that pass cannot judge is walked.
        if "rows" in record or _left_for_the_walk(line):
            return orjson.dumps(self.scrub(record)) + b"\n"
        return _KERNEL_MEMBER.sub(self._scrub_member, line) + b"\n"

    def _scrub_member(self, match: re.Match) -> bytes:
        name, value = match.group(1).decode(), int(match.group(2))
        new = self._value(name, value)
        return match.group(0) if new is value else b'"%s":"%s"' % (match.group(1), new.encode())
