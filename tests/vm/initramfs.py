"""Build the test VM's initramfs: static busybox, tests/vm/init.sh as /init,
and the guest kernel's own modules that mounting the host root needs.

Debian builds 9p, its virtio transport and overlayfs as modules, so they go
into the initramfs decompressed (busybox insmod does not read .ko.xz) and
are loaded in dependency order taken from the kernel's modules.dep.  The
archive is written in the kernel's "newc" cpio format directly, cached next
to the kernel and rebuilt when any input changes.
"""
from __future__ import annotations

import gzip
import hashlib
import lzma
import shlex
import struct
import subprocess
from pathlib import Path

from .kernels import Prepared

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"
BUSYBOX_CANDIDATES = [Path("/bin/busybox"), Path("/usr/bin/busybox")]
# What init.sh mounts that Debian builds as modules (virtio_pci and tmpfs
# are built in on every Debian amd64 kernel we use; modules.dep adds netfs & co).
NEEDED_MODULES = ["9pnet_virtio", "9p", "overlay"]
OVERLAY_SIZE = "1G"
PT_INTERP = 3


class InitramfsError(Exception):
    pass


def is_static_elf(path: Path) -> bool:
    """An ELF64 executable without a PT_INTERP (dynamic loader) header."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != PT_INTERP
               for i in range(phnum))


def busybox() -> Path:
    """A statically linked busybox (Debian's busybox-static): the initramfs
    has no C library."""
    for path in BUSYBOX_CANDIDATES:
        if path.exists() and is_static_elf(path):
            return path
    raise InitramfsError("no static busybox: install busybox-static")


def _module_name(path: str) -> str:
    name = Path(path).name.split(".ko")[0]
    return name.replace("-", "_")


def module_load_order(modules_dir: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to modules_dir) of wanted modules and their
    dependencies, each after everything it depends on."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name.replace("-", "_") not in by_name:
            raise InitramfsError(f"module {name} not in {modules_dir}/modules.dep "
                                 "(built into this kernel? then drop it from NEEDED_MODULES)")
        visit(by_name[name.replace("-", "_")])
    return order


def decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True,
                              check=True).stdout
    return data


class Cpio:
    """Minimal writer of the kernel's initramfs format (cpio "newc")."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.out += b"\0" * (-len(self.out) % 4) + data
        self.out += b"\0" * (-len(self.out) % 4)
        self.ino += 1

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def build(kernel: Prepared, log=print) -> Path:
    """The initramfs for this kernel, built if missing or out of date."""
    modules_dir = Path(kernel.modules)
    order = module_load_order(modules_dir, NEEDED_MODULES)
    conf = "".join(f"{k}={shlex.quote(v)}\n" for k, v in (
        ("RELEASE", kernel.release), ("MODULES_DIR", kernel.modules),
        ("OVERLAY_SIZE", OVERLAY_SIZE)))
    box = busybox()
    inputs = hashlib.sha256()
    for part in (INIT_SCRIPT.read_bytes(), conf.encode(), box.read_bytes(),
                 *map(str.encode, order)):
        inputs.update(hashlib.sha256(part).digest())
    target = Path(kernel.root).parent / "initramfs.cpio"
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists() and stamp.read_text() == inputs.hexdigest():
        return target
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "etc", "modules", "lower", "rw", "newroot"):
        archive.dir(d)
    archive.file("bin/busybox", box.read_bytes(), 0o755)
    archive.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    archive.file("etc/uffdtrace-vm.conf", conf.encode())
    names = []
    for rel in order:
        name = Path(rel).name.split(".ko")[0] + ".ko"
        archive.file(f"modules/{name}", decompressed(modules_dir / rel))
        names.append(name)
    archive.file("modules/order", ("\n".join(names) + "\n").encode())
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(archive.finish())
    tmp.replace(target)
    stamp.write_text(inputs.hexdigest())
    log(f"{kernel.name}: initramfs {target} ({target.stat().st_size // 1024} KiB, "
        f"modules: {' '.join(names)})")
    return target
