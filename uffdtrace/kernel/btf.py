"""Just enough of a BTF reader to find FUNC type ids in vmlinux BTF.

fentry programs are loaded against a BTF id, and a FUNC entry exists only
for functions the compiler kept out of line, so this also tells which
move-path functions were inlined away.
"""
from __future__ import annotations

import struct

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
KIND_FUNC = 12
# Bytes that follow the 12-byte btf_type header, per kind: (fixed, per vlen item).
_TRAILER = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8),
            14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}


class BtfError(Exception):
    pass


def find_funcs(names: list[str], path: str = VMLINUX_BTF) -> dict[str, int | None]:
    """BTF type id of each named FUNC, or None where BTF has no such FUNC."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise BtfError(f"{path}: too short for a BTF header")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = \
        struct.unpack_from("<HBBIIIII", data, 0)
    if magic != BTF_MAGIC:
        raise BtfError(f"{path}: bad BTF magic 0x{magic:x}")
    wanted = {n.encode(): n for n in names}
    strings = hdr_len + str_off
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    found: dict[str, int] = {}
    type_id = 1
    while pos < end:
        name_off, info, _ = struct.unpack_from("<III", data, pos)
        kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
        if kind == KIND_FUNC:
            start = strings + name_off
            name = data[start:data.index(b"\0", start)]
            if name in wanted:
                found[wanted[name]] = type_id
        fixed, per_item = _TRAILER.get(kind, (0, 0))
        pos += 12 + fixed + per_item * vlen
        type_id += 1
    return {n: found.get(n) for n in names}
