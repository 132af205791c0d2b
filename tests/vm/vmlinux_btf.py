"""The BTF (and config) of a cached VM kernel, without booting it.

BTF is the .BTF section of vmlinux; a Debian vmlinuz is a bzImage whose
payload is the compressed vmlinux ELF.  The section is cut out once and kept
beside the unpacked kernel (<cache>/<release>/vmlinux.btf), so unit tests can
check the layout facts of every kernel of the matrix on the host.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from . import kernels

# payload magics, in the order a bzImage is likely to carry them
_ZSTD, _XZ, _GZIP = b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"\x1f\x8b\x08"


def _decompress(image: bytes) -> bytes | None:
    """The vmlinux ELF inside a bzImage, or None if no known payload."""
    for magic, unpack in ((_ZSTD, _unzstd), (_XZ, _unxz), (_GZIP, _ungzip)):
        start = image.find(magic)
        while start != -1:
            elf = unpack(image[start:])
            if elf and elf.startswith(b"\x7fELF"):
                return elf
            start = image.find(magic, start + 1)
    return None


def _unzstd(data: bytes) -> bytes | None:
    if not shutil.which("zstd"):
        return None
    # zstd stops with an error at the bzImage's trailing bytes, after the frame
    return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True).stdout


def _unxz(data: bytes) -> bytes | None:
    try:
        return lzma.LZMADecompressor().decompress(data)
    except lzma.LZMAError:
        return None


def _ungzip(data: bytes) -> bytes | None:
    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    except (OSError, EOFError):
        return None


def elf_section(elf: bytes, wanted: str) -> bytes | None:
    """A section of a little-endian ELF64 file, by name."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for name_off, _type, _flags, _addr, offset, size in headers:
        end = elf.index(b"\0", names_at + name_off)
        if elf[names_at + name_off:end].decode() == wanted:
            return elf[offset:offset + size]
    return None


def btf_path(name: str) -> Path | None:
    """vmlinux BTF of the cached matrix kernel `name`, or None if the kernel
    is not cached or its BTF cannot be extracted here."""
    prepared = kernels.cached(kernels.BY_NAME[name])
    if prepared is None:
        return None
    out = kernels.CACHE / prepared.release / "vmlinux.btf"
    if not os.access(out.parent, os.W_OK):   # not root: keep it in /tmp instead
        out = Path(tempfile.gettempdir()) / f"uffdtrace-{prepared.release}-vmlinux.btf"
    if out.exists():
        return out
    try:
        elf = _decompress(Path(prepared.vmlinuz).read_bytes())
    except OSError:
        return None
    section = elf_section(elf, ".BTF") if elf else None
    if not section:
        return None
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(section)
    tmp.replace(out)
    return out


def config_path(name: str) -> Path | None:
    """The kernel config Debian ships beside the cached kernel."""
    prepared = kernels.cached(kernels.BY_NAME[name])
    if prepared is None:
        return None
    for path in (Path(prepared.modules) / "config",
                 Path(prepared.root) / "boot" / f"config-{prepared.release}"):
        if path.exists():
            return path
    return None
