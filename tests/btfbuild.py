"""Build BTF blobs by hand, to test the reader on every kind and on bad input.

Written from Documentation/bpf/btf.rst, independently of
uffdtrace/kernel/btf.py: each helper emits the exact bytes the
specification gives for its kind.
"""
from __future__ import annotations

import struct


class BtfBuilder:
    def __init__(self, endian: str = "<"):
        self.e = endian
        self.types: list[bytes] = []
        self.strings = bytearray(b"\0")

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind: int, name: str = "", vlen: int = 0, size_type: int = 0,
            trailer: bytes = b"", kind_flag: int = 0) -> int:
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types.append(struct.pack(self.e + "III", self.s(name), info, size_type) + trailer)
        return len(self.types)   # type ids start at 1

    def _pack(self, fmt: str, *values) -> bytes:
        return struct.pack(self.e + fmt, *values)

    # one helper per kind (Documentation/bpf/btf.rst 2.2)
    def int_(self, name: str, size: int, signed: bool = False) -> int:
        encoding = 1 if signed else 0
        return self.add(1, name, 0, size, self._pack("I", encoding << 24 | size * 8))

    def ptr(self, target: int) -> int:
        return self.add(2, "", 0, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.add(3, "", 0, 0, self._pack("III", elem, index, nelems))

    def composite(self, kind: int, name: str, size: int, members, bitfields: bool = False) -> int:
        body = b"".join(
            self._pack("III", self.s(n), t, (bits << 24 | off) if bitfields else off)
            for n, t, off, bits in members)
        return self.add(kind, name, len(members), size, body, int(bitfields))

    def struct(self, name: str, size: int, members, bitfields: bool = False) -> int:
        """members: (name, type id, bit offset, bitfield size)."""
        return self.composite(4, name, size, members, bitfields)

    def union(self, name: str, size: int, members, bitfields: bool = False) -> int:
        return self.composite(5, name, size, members, bitfields)

    def enum(self, name: str, values, size: int = 4, signed: bool = False) -> int:
        body = b"".join(self._pack("Ii" if signed else "II", self.s(n), v) for n, v in values)
        return self.add(6, name, len(values), size, body, int(signed))

    def fwd(self, name: str, union: bool = False) -> int:
        return self.add(7, name, 0, 0, kind_flag=int(union))

    def typedef(self, name: str, target: int) -> int:
        return self.add(8, name, 0, target)

    def volatile(self, target: int) -> int:
        return self.add(9, "", 0, target)

    def const(self, target: int) -> int:
        return self.add(10, "", 0, target)

    def restrict(self, target: int) -> int:
        return self.add(11, "", 0, target)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add(12, name, linkage, proto)

    def func_proto(self, ret: int, params) -> int:
        body = b"".join(self._pack("II", self.s(n), t) for n, t in params)
        return self.add(13, "", len(params), ret, body)

    def var(self, name: str, target: int, linkage: int = 1) -> int:
        return self.add(14, name, 0, target, self._pack("I", linkage))

    def datasec(self, name: str, size: int, vars_) -> int:
        body = b"".join(self._pack("III", t, off, sz) for t, off, sz in vars_)
        return self.add(15, name, len(vars_), size, body)

    def float_(self, name: str, size: int) -> int:
        return self.add(16, name, 0, size)

    def decl_tag(self, name: str, target: int, component_idx: int = -1) -> int:
        return self.add(17, name, 0, target, self._pack("i", component_idx))

    def type_tag(self, name: str, target: int) -> int:
        return self.add(18, name, 0, target)

    def enum64(self, name: str, values, size: int = 8, signed: bool = False) -> int:
        body = b"".join(self._pack("III", self.s(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)
                        for n, v in values)
        return self.add(19, name, len(values), size, body, int(signed))

    def build(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack(self.e + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types),
                             len(types), len(self.strings))
        return header + types + bytes(self.strings)
