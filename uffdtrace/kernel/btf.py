"""A reader of the kernel's own BTF (/sys/kernel/btf/vmlinux).

Two uses: fentry programs are loaded against a FUNC type id (and a FUNC
exists only for functions the compiler kept out of line, so this also tells
which move-path functions were inlined away); and struct layouts and enum
values of the *running* kernel, which bcc cannot get from the headers it
compiles with (they may belong to another kernel version).

Every kind of the BTF specification is walked by its exact size; a kind this
reader does not know raises BtfError, because skipping it by a wrong size
would silently mis-parse every later type.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from functools import cached_property

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

# Documentation/bpf/btf.rst, "Type encoding"
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC = 8, 9, 10, 11, 12
KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG = 13, 14, 15, 16, 17
KIND_TYPE_TAG, KIND_ENUM64 = 18, 19
KIND_NAMES = {KIND_INT: "INT", KIND_PTR: "PTR", KIND_ARRAY: "ARRAY", KIND_STRUCT: "STRUCT",
              KIND_UNION: "UNION", KIND_ENUM: "ENUM", KIND_FWD: "FWD", KIND_TYPEDEF: "TYPEDEF",
              KIND_VOLATILE: "VOLATILE", KIND_CONST: "CONST", KIND_RESTRICT: "RESTRICT",
              KIND_FUNC: "FUNC", KIND_FUNC_PROTO: "FUNC_PROTO", KIND_VAR: "VAR",
              KIND_DATASEC: "DATASEC", KIND_FLOAT: "FLOAT", KIND_DECL_TAG: "DECL_TAG",
              KIND_TYPE_TAG: "TYPE_TAG", KIND_ENUM64: "ENUM64"}
# Bytes after the 12-byte btf_type header: (fixed, per vlen item), for every kind.
TRAILER = {KIND_INT: (4, 0), KIND_PTR: (0, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12),
           KIND_UNION: (0, 12), KIND_ENUM: (0, 8), KIND_FWD: (0, 0), KIND_TYPEDEF: (0, 0),
           KIND_VOLATILE: (0, 0), KIND_CONST: (0, 0), KIND_RESTRICT: (0, 0), KIND_FUNC: (0, 0),
           KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_FLOAT: (0, 0),
           KIND_DECL_TAG: (4, 0), KIND_TYPE_TAG: (0, 0), KIND_ENUM64: (0, 12)}
# Kinds that only qualify or rename another type (btf_type.type).
_ALIASES = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
# Kinds worth finding by name.
_NAMED = (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_TYPEDEF, KIND_FUNC)
POINTER_SIZE = 8   # x86-64: the only architecture uffdtrace reads page tables of
NAME_SCANS_BEFORE_INDEX = 200


class BtfError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    """A struct/union member as found by Btf.member(): its place in the
    outermost struct, whatever anonymous structs/unions it sits in."""

    path: str
    byte_offset: int
    size: int           # bytes of the member's type (0 for a bitfield)
    type_id: int
    bitfield_size: int = 0
    bit_offset: int = 0  # from the start of the outermost struct


@functools.lru_cache(maxsize=4)
def _load_once(cls, path: str) -> "Btf":
    with open(path, "rb") as f:
        return cls(f.read(), path)


class Btf:
    """Parsed vmlinux BTF: type headers indexed once, details decoded on use."""

    def __init__(self, data: bytes, source: str = "<bytes>"):
        self.source = source
        self.data = data
        if len(data) < 24:
            raise BtfError(f"{source}: too short for a BTF header")
        magic = struct.unpack_from("<H", data, 0)[0]
        if magic == BTF_MAGIC:
            self._e = "<"
        elif magic == 0x9FEB:
            self._e = ">"
        else:
            raise BtfError(f"{source}: bad BTF magic 0x{magic:x}")
        version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from(self._e + "BBIIIII", data, 2)
        if version != 1:
            raise BtfError(f"{source}: BTF version {version}, only 1 is known")
        self._types = hdr_len + type_off
        self._types_end = self._types + type_len
        self._strings = hdr_len + str_off
        self._strings_end = self._strings + str_len
        if self._types_end > len(data) or self._strings_end > len(data):
            raise BtfError(f"{source}: type or string section beyond the end of the data")
        self._index()

    @classmethod
    def load(cls, path: str = VMLINUX_BTF) -> "Btf":
        """The parsed file, indexed once per process: the layout reader and
        the hook planner both need vmlinux's BTF, and indexing it costs
        ~0.4 s of every start."""
        return _load_once(cls, path)

    # ---- the one pass over every type ----
    def _index(self):
        data, unpack = self.data, struct.Struct(self._e + "II").unpack_from
        offsets = [0]   # type id 0 is void
        kinds = bytearray(1)
        named: dict[int, list[int]] = {}
        trailers = [TRAILER.get(k) for k in range(32)]
        pos, end, type_id = self._types, self._types_end, 1
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"{self.source}: type {type_id} is cut short")
            name_off, info = unpack(data, pos)
            kind = info >> 24 & 0x1F
            trailer = trailers[kind]
            if trailer is None:
                raise BtfError(f"{self.source}: type {type_id} has unknown BTF kind {kind}: "
                               "its size is unknown, so no later type can be read")
            offsets.append(pos)
            kinds.append(kind)
            if name_off and kind in _NAMED:
                named.setdefault(name_off, []).append(type_id)
            pos += 12 + trailer[0] + trailer[1] * (info & 0xFFFF)
            type_id += 1
        if pos != end:
            raise BtfError(f"{self.source}: the last type runs past the type section")
        self._offsets = offsets
        self._finds = 0
        self._kinds = bytes(kinds)
        self._named_by_off = named

    def _ids_of_kind(self, *kinds: int):
        for kind in kinds:
            pos = self._kinds.find(kind)
            while pos != -1:
                yield pos
                pos = self._kinds.find(kind, pos + 1)

    @property
    def type_count(self) -> int:
        return len(self._offsets) - 1

    def string(self, off: int) -> str:
        start = self._strings + off
        if off < 0 or start >= self._strings_end:
            raise BtfError(f"{self.source}: string offset {off} out of range")
        return self.data[start:self.data.index(b"\0", start)].decode()

    @cached_property
    def _by_name(self) -> dict[str, list[int]]:
        """name -> type ids of the named kinds, decoded once on first use."""
        by_name: dict[str, list[int]] = {}
        data, strings = self.data, self._strings
        for off, ids in self._named_by_off.items():
            start = strings + off
            name = data[start:data.index(b"\0", start)].decode()
            by_name.setdefault(name, []).extend(ids)
        for ids in by_name.values():
            ids.sort()
        return by_name

    def _header(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(name_off, kind, vlen, kind_flag, size_or_type) of a type id."""
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"{self.source}: no type id {type_id}")
        name_off, info, size_type = struct.unpack_from(self._e + "III", self.data,
                                                       self._offsets[type_id])
        return name_off, info >> 24 & 0x1F, info & 0xFFFF, info >> 31, size_type

    def kind(self, type_id: int) -> int:
        if not 0 < type_id < len(self._kinds):
            raise BtfError(f"{self.source}: no type id {type_id}")
        return self._kinds[type_id]

    def name(self, type_id: int) -> str:
        return self.string(self._header(type_id)[0])

    def find(self, name: str, kinds: tuple[int, ...]) -> list[int]:
        """Type ids named `name` of one of `kinds`."""
        # A few lookups (a layout) scan the string section for the name;
        # many (a whole-kernel check) are cheaper with every name decoded once.
        self._finds += 1
        if self._finds > NAME_SCANS_BEFORE_INDEX:
            ids = self._by_name.get(name, ())
        else:
            ids = [t for off in self._string_offsets(name)
                   for t in self._named_by_off.get(off, ())]
        return sorted(t for t in ids if self.kind(t) in kinds)

    def find_one(self, name: str, kind: int) -> int | None:
        """The type `name` of `kind`; several (BTF keeps a struct twice when
        two compilation units saw different definitions) must agree in
        size, else it is an error."""
        ids = self.find(name, (kind,))
        if not ids:
            return None
        sizes = {self.size(t) for t in ids} if kind in (KIND_STRUCT, KIND_UNION) else {0}
        if len(sizes) > 1:
            raise BtfError(f"{self.source}: {KIND_NAMES[kind]} {name} has "
                           f"{len(ids)} definitions of different sizes {sorted(sizes)}")
        return ids[0]

    # ---- types ----
    def resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers to the type they stand for."""
        for _ in range(64):
            if type_id == 0:
                return 0
            _, kind, _, _, ref = self._header(type_id)
            if kind not in _ALIASES:
                return type_id
            type_id = ref
        raise BtfError(f"{self.source}: typedef/qualifier chain too long at type {type_id}")

    def size(self, type_id: int) -> int:
        """sizeof() of a type, in bytes."""
        type_id = self.resolve(type_id)
        if type_id == 0:
            raise BtfError(f"{self.source}: sizeof(void)")
        _, kind, _, _, size_type = self._header(type_id)
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
                    KIND_DATASEC):
            return size_type
        if kind == KIND_PTR:
            return POINTER_SIZE
        if kind == KIND_ARRAY:
            elem, _index, nelems = self._array(type_id)
            return nelems * self.size(elem)
        raise BtfError(f"{self.source}: type {type_id} ({KIND_NAMES[kind]}) has no size")

    def _array(self, type_id: int) -> tuple[int, int, int]:
        return struct.unpack_from(self._e + "III", self.data, self._offsets[type_id] + 12)

    def members(self, type_id: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a struct/union."""
        _, kind, vlen, kind_flag, _ = self._header(type_id)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"{self.source}: type {type_id} is a {KIND_NAMES[kind]}, "
                           "not a struct or union")
        out = []
        pos = self._offsets[type_id] + 12
        for _ in range(vlen):
            name_off, mtype, offset = struct.unpack_from(self._e + "III", self.data, pos)
            if kind_flag:   # bitfield size in the top 8 bits
                out.append((self.string(name_off), mtype, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append((self.string(name_off), mtype, offset, 0))
            pos += 12
        return out

    def _find_member(self, type_id: int, name: str) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of `name` in a struct/union,
        looking through anonymous struct/union members as C does."""
        for mname, mtype, bit_off, bits in self.members(type_id):
            if mname == name:
                return mtype, bit_off, bits
            if not mname:
                inner = self.resolve(mtype)
                if self.kind(inner) in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name)
                    if found:
                        return found[0], bit_off + found[1], found[2]
        return None

    def member(self, struct_name: str, path: str) -> Member | None:
        """Where `path` (member names joined by dots, e.g. "flags.f") lies in
        `struct struct_name` (or a union of that name), or None if this
        kernel's struct has no such member."""
        type_id = self.find_one(struct_name, KIND_STRUCT) or \
            self.find_one(struct_name, KIND_UNION)
        if type_id is None:
            return None
        bit_offset, bits, mtype = 0, 0, type_id
        for part in path.split("."):
            container = self.resolve(mtype)
            if self.kind(container) not in (KIND_STRUCT, KIND_UNION):
                raise BtfError(f"{self.source}: {struct_name}.{path}: {part!r} is looked "
                               f"up in a {KIND_NAMES[self.kind(container)]}")
            found = self._find_member(container, part)
            if found is None:
                return None
            mtype, off, bits = found
            bit_offset += off
        return Member(path=f"{struct_name}.{path}", byte_offset=bit_offset // 8,
                      size=0 if bits else self.size(mtype), type_id=mtype,
                      bitfield_size=bits, bit_offset=bit_offset)

    def struct_size(self, struct_name: str) -> int | None:
        type_id = self.find_one(struct_name, KIND_STRUCT)
        return None if type_id is None else self.size(type_id)

    # ---- enums ----
    def enumerators(self, type_id: int) -> dict[str, int]:
        """Name -> value of an ENUM or ENUM64 (signedness from kind_flag)."""
        _, kind, vlen, signed, _ = self._header(type_id)
        if kind not in (KIND_ENUM, KIND_ENUM64):
            raise BtfError(f"{self.source}: type {type_id} is a {KIND_NAMES[kind]}, not an enum")
        pos, out = self._offsets[type_id] + 12, {}
        for _ in range(vlen):
            name_off = struct.unpack_from(self._e + "I", self.data, pos)[0]
            out[self.string(name_off)] = self._enumerator_at(kind, signed, pos)
            pos += 8 if kind == KIND_ENUM else 12
        return out

    def _string_offsets(self, name: str) -> set[int]:
        """Every offset in the string section where `name` is stored."""
        needle, found = b"\0" + name.encode() + b"\0", set()
        pos = self.data.find(needle, self._strings, self._strings_end)
        while pos != -1:
            found.add(pos + 1 - self._strings)
            pos = self.data.find(needle, pos + 1, self._strings_end)
        if self.data[self._strings:self._strings_end].startswith(needle[1:]):
            found.add(0)
        return found

    def enum_values(self, names: list[str]) -> dict[str, set[int]]:
        """Every value each enumerator name has in any enum of this BTF,
        anonymous enums included (FOLL_PIN lives in one).  Names are matched
        by string offset, so no enumerator name is decoded."""
        wanted: dict[int, str] = {}
        for name in names:
            for off in self._string_offsets(name):
                wanted[off] = name
        out: dict[str, set[int]] = {name: set() for name in names}
        if not wanted:
            return out
        data, e = self.data, self._e
        for type_id in self._ids_of_kind(KIND_ENUM, KIND_ENUM64):
            _, kind, vlen, signed, _ = self._header(type_id)
            pos = self._offsets[type_id] + 12
            step = 8 if kind == KIND_ENUM else 12
            for _ in range(vlen):
                name_off = struct.unpack_from(e + "I", data, pos)[0]
                if name_off in wanted:
                    out[wanted[name_off]].add(self._enumerator_at(kind, signed, pos))
                pos += step
        return out

    def _enumerator_at(self, kind: int, signed: int, pos: int) -> int:
        if kind == KIND_ENUM:
            return struct.unpack_from(self._e + ("i" if signed else "I"), self.data, pos + 4)[0]
        lo, hi = struct.unpack_from(self._e + "II", self.data, pos + 4)
        val = hi << 32 | lo
        return val - (1 << 64) if signed and val >= 1 << 63 else val

    def enum_value(self, name: str, enum: str | None = None) -> int | None:
        """The value of enumerator `name` (in `enum <enum>` if given), or
        None.  A name with several different values is an error."""
        if enum is not None:
            for type_id in self.find(enum, (KIND_ENUM, KIND_ENUM64)):
                values = self.enumerators(type_id)
                if name in values:
                    return values[name]
            return None
        values = self.enum_values([name])[name]
        if len(values) > 1:
            raise BtfError(f"{self.source}: enumerator {name} has several values "
                           f"{sorted(values)}")
        return values.pop() if values else None

    # ---- functions ----
    def func_ids(self, names: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for n in names:
            ids = self.find(n, (KIND_FUNC,))
            out[n] = ids[0] if ids else None
        return out

    def array_lengths(self, elem_type_id: int) -> set[int]:
        """Lengths of every array type whose element is `elem_type_id`."""
        out = set()
        for type_id in self._ids_of_kind(KIND_ARRAY):
            elem, _index, nelems = self._array(type_id)
            if elem == elem_type_id:
                out.add(nelems)
        return out

    def pointers_to(self, type_id: int) -> list[int]:
        """PTR type ids that point at `type_id` (directly)."""
        return [t for t in self._ids_of_kind(KIND_PTR) if self._header(t)[4] == type_id]


def find_funcs(names: list[str], path: str = VMLINUX_BTF) -> dict[str, int | None]:
    """BTF type id of each named FUNC, or None where BTF has no such FUNC."""
    return Btf.load(path).func_ids(names)
