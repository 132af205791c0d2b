"""Where a syscall wrapper keeps its return address: the CFA rule of an
ELF file's unwind table (.eh_frame) at one instruction, x86-64 only.

Why: --stacks walks user stacks by frame pointers, and a syscall wrapper
(glibc's ioctl(), syscall()) sets up no frame pointer, so the walk goes from
the wrapper straight to its caller's caller and the function that issued
the call -- the one the user wants named -- is skipped.  The BPF program
keeps the words at the user stack pointer (struct ut_stack_ids.sp_words);
this module says which of them is the return address: the unwind table
gives the canonical frame address as rsp + N at the syscall's instruction,
and the return address sits at CFA - 8.  glibc 2.36's ioctl() (variadic: a
va_list below its return address) has N = 0x60, its syscall() N = 8.

Only what that needs: CIEs and FDEs of .eh_frame, the CFA rule (register
and offset) through the call-frame instructions; anything else (a CFA
expression, another register) answers None, and the caller says so.
"""
from __future__ import annotations

import struct
from bisect import bisect_right

RSP, RBP = 7, 6            # DWARF register numbers on x86-64
_SECTION = struct.Struct("<IIQQQQIIQQ")   # Elf64_Shdr
_SEGMENT = struct.Struct("<IIQQQQQQ")     # Elf64_Phdr
PT_LOAD = 1


class _Reader:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def u(self, fmt: str) -> int:
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def _leb128(self, signed: bool) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7f) << shift
            shift += 7
            if byte < 0x80:
                return value - (1 << shift) if signed and byte & 0x40 else value

    def uleb(self) -> int:
        return self._leb128(signed=False)

    def sleb(self) -> int:
        return self._leb128(signed=True)

    def pointer(self, encoding: int, section_vaddr: int, section_off: int) -> int:
        """A DW_EH_PE_* encoded pointer (absolute or pc-relative)."""
        field_vaddr = section_vaddr + (self.pos - section_off)
        fmt = encoding & 0x0f
        value = {0x00: lambda: self.u("Q"), 0x01: self.uleb, 0x02: lambda: self.u("H"),
                 0x03: lambda: self.u("I"), 0x04: lambda: self.u("Q"), 0x09: self.sleb,
                 0x0a: lambda: self.u("h"), 0x0b: lambda: self.u("i"),
                 0x0c: lambda: self.u("q")}[fmt]()
        if encoding & 0x70 == 0x10:    # pcrel
            value += field_vaddr
        return value & 0xffff_ffff_ffff_ffff


class _Cie:
    def __init__(self, r: _Reader, end: int, vaddr: int, off: int):
        version = r.u("B")
        aug = b""
        while (c := r.data[r.pos]) != 0:
            aug += bytes([c])
            r.pos += 1
        r.pos += 1
        if b"eh" in aug:
            r.u("Q")
        self.code_align, self.data_align = r.uleb(), r.sleb()
        if version == 1:
            r.u("B")
        else:
            r.uleb()
        self.fde_encoding, self.has_aug_data = 0, aug.startswith(b"z")
        if self.has_aug_data:
            aug_end = r.uleb()
            aug_end += r.pos
            for c in aug[1:]:
                if c == ord("R"):
                    self.fde_encoding = r.u("B")
                elif c == ord("P"):
                    r.pointer(r.u("B"), vaddr, off)
                elif c == ord("L"):
                    r.u("B")
            r.pos = aug_end
        self.instructions = r.data[r.pos:end]


class _Table:
    """One file's FDEs, sorted by start address."""

    def __init__(self, data: bytes):
        self.data, self.starts, self.fdes, self.load_bias = data, [], [], []
        shoff, shentsize, shnum, shstrndx = (struct.unpack_from("<Q", data, 0x28)[0],
                                             *struct.unpack_from("<HHH", data, 0x3a))
        phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 0x20)[0],
                                   *struct.unpack_from("<HH", data, 0x36))
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = \
                _SEGMENT.unpack_from(data, phoff + i * phentsize)
            if p_type == PT_LOAD:
                self.load_bias.append((p_offset, p_offset + p_filesz, p_vaddr - p_offset))
        sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        names_off = sections[shstrndx][4]
        for sh in sections:
            name = data[names_off + sh[0]:data.index(b"\0", names_off + sh[0])]
            if name == b".eh_frame":
                self._index(sh[3], sh[4], sh[5])
        order = sorted(range(len(self.starts)), key=self.starts.__getitem__)
        self.starts = [self.starts[i] for i in order]
        self.fdes = [self.fdes[i] for i in order]

    def _index(self, vaddr: int, off: int, size: int):
        cies: dict[int, _Cie] = {}
        pos, end = off, off + size
        while pos + 4 <= end:
            length = struct.unpack_from("<I", self.data, pos)[0]
            if length == 0:
                break
            header = 4
            if length == 0xffff_ffff:
                length, header = struct.unpack_from("<Q", self.data, pos + 4)[0], 12
            body, entry_end = pos + header, pos + header + length
            cie_id = struct.unpack_from("<I", self.data, body)[0]
            r = _Reader(self.data, body + 4)
            if cie_id == 0:
                cies[pos] = _Cie(r, entry_end, vaddr, off)
            else:
                cie = cies.get(body - cie_id)
                if cie is not None:
                    start = r.pointer(cie.fde_encoding, vaddr, off)
                    span = r.pointer(cie.fde_encoding & 0x0f, vaddr, off)
                    if cie.has_aug_data:
                        r.pos += r.uleb()
                    self.starts.append(start)
                    self.fdes.append((start, start + span, cie, r.pos, entry_end, vaddr, off))
            pos = entry_end

    def vaddr_of(self, file_offset: int) -> int | None:
        for start, stop, bias in self.load_bias:
            if start <= file_offset < stop:
                return file_offset + bias
        return None

    def cfa_rule(self, pc: int) -> tuple[int, int] | None:
        i = bisect_right(self.starts, pc) - 1
        if i < 0:
            return None
        start, stop, cie, ins_pos, ins_end, vaddr, off = self.fdes[i]
        if not start <= pc < stop:
            return None
        state = _run(cie, cie.instructions, start, pc, None, vaddr, off)
        if state is None:
            return None
        return _run(cie, self.data[ins_pos:ins_end], start, pc, state, vaddr, off)


def _run(cie: _Cie, code: bytes, loc: int, pc: int, state, vaddr: int, off: int):
    """Execute call-frame instructions up to `pc`: (cfa_register,
    cfa_offset), or None when the CFA is not register + offset."""
    reg, cfa_off = state if state else (RSP, 8)
    saved = []
    r = _Reader(code, 0)
    while r.pos < len(code):
        op = r.u("B")
        high, low = op & 0xc0, op & 0x3f
        if high == 0x40:
            loc += low * cie.code_align
        elif high == 0x80:
            r.uleb()
        elif high == 0xc0:
            pass
        elif op == 0x00:
            continue
        elif op == 0x01:
            loc = r.pointer(cie.fde_encoding, vaddr, off)
        elif op in (0x02, 0x03, 0x04):
            loc += r.u({0x02: "B", 0x03: "H", 0x04: "I"}[op]) * cie.code_align
        elif op in (0x05, 0x09, 0x14, 0x2f):
            r.uleb(), r.uleb()
        elif op in (0x06, 0x07, 0x08, 0x2e):
            r.uleb()
        elif op == 0x0a:
            saved.append((reg, cfa_off))
        elif op == 0x0b:
            if saved:
                reg, cfa_off = saved.pop()
        elif op == 0x0c:
            reg, cfa_off = r.uleb(), r.uleb()
        elif op == 0x0d:
            reg = r.uleb()
        elif op == 0x0e:
            cfa_off = r.uleb()
        elif op == 0x0f:
            return None      # a CFA expression
        elif op in (0x10, 0x16):
            r.uleb()
            r.pos += r.uleb()
        elif op in (0x11, 0x15):
            r.uleb(), r.sleb()
        elif op == 0x12:
            reg, cfa_off = r.uleb(), r.sleb() * cie.data_align
        elif op == 0x13:
            cfa_off = r.sleb() * cie.data_align
        else:
            return None      # an instruction this reader does not know
        if loc > pc:
            # the row that covers pc ended before this advance
            break
    return reg, cfa_off


_TABLES: dict = {}     # file identity -> _Table or None
MAX_TABLES = 32


def _table(path: str, key) -> _Table | None:
    if key in _TABLES:
        return _TABLES[key]
    try:
        with open(path, "rb") as f:
            data = f.read()
        table = _Table(data) if data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1 \
            else None   # 64-bit little-endian ELF only
    except (OSError, ValueError, IndexError, KeyError, struct.error):
        table = None
    if len(_TABLES) >= MAX_TABLES:
        _TABLES.clear()
    _TABLES[key] = table
    return table


def cfa_rule(path: str, file_offset: int, key=None) -> tuple[int, int] | None:
    """At the instruction at `file_offset` of ELF file `path`: the CFA as
    (DWARF register, offset) -- (RSP, N): the return address is N - 8 bytes
    above the stack pointer; (RBP, 16): a frame-pointer frame -- or None
    when the unwind table does not say it plainly.  `key` names the file
    for the cache (default: path): e.g. its (device, inode) when `path` is
    a process's /proc/PID/map_files/ link."""
    table = _table(path, path if key is None else key)
    if table is None:
        return None
    pc = table.vaddr_of(file_offset)
    if pc is None:
        return None
    try:
        return table.cfa_rule(pc)
    except (ValueError, IndexError, KeyError, struct.error):
        return None


def return_address_slot(path: str, file_offset: int, key=None) -> int | None:
    """How far above the stack pointer the return address is at that
    instruction (bytes), or None when the CFA is not rsp-based."""
    rule = cfa_rule(path, file_offset, key)
    return rule[1] - 8 if rule and rule[0] == RSP and rule[1] >= 8 else None
