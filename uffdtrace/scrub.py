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
import json
import os

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
        """`record` with every kernel value replaced (a new dict; nested too)."""
        return {name: self._value(name, value) for name, value in record.items()}

    def serialize(self, record: dict) -> bytes:
        """`record` as one scrubbed JSON line (ASCII, with its newline): the
        writer's only way to turn a record into bytes."""
        line = json.dumps(record, separators=(",", ":")).encode()
        if _may_hold_kernel_values(line):
            line = json.dumps(self.scrub(record), separators=(",", ":")).encode()
        return line + b"\n"
