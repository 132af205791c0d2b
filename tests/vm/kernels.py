"""The VM kernel matrix, and getting each kernel ready to boot.

A matrix entry names a Debian suite and a range of kernel series; the exact
version is resolved from the suite's signed Packages index (the newest
amd64 flavour in range), then linux-image plus its matching linux-headers
and everything they pull in from the same source build (-common, kbuild,
and on newer kernels linux-binary/-modules/-base) are downloaded, verified
and unpacked -- never installed -- into CACHE/<release>/root.

A resolved kernel is remembered (CACHE/matrix/<name>.json), so later runs,
and test runs in particular, need no network: `prefetch` during setup does
the downloading.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import debian

CACHE = Path(os.environ.get("UFFDTRACE_VM_CACHE", "/var/cache/uffdtrace/vm"))
# Versioned packages of one kernel build; generic ones (linux-base,
# gcc-*-for-host, kmod) are host tools we neither need nor install.
KERNEL_PACKAGES = re.compile(r"linux-(image|binary|modules|base|headers|kbuild)-\d")


@dataclass(frozen=True)
class Kernel:
    name: str                 # stable id used by tests and the CLI
    suite: str                # Debian suite holding it
    min_series: tuple         # (major, minor) inclusive
    max_series: tuple | None  # inclusive, None = newest
    why: str                  # what this kernel covers in the matrix


# A kernel is only usable with its own headers (bcc compiles against them).
# trixie-backports still lists 6.18 and 6.19 images but no longer their
# headers (index of 2026-11-23), so the newest entry is 7.x; resolve() skips
# any kernel whose headers are gone.
MATRIX = [
    Kernel("bookworm-6.12", "bookworm-backports", (6, 12), (6, 12),
           "Debian 12's backports kernel: move_pages_pte is inlined into move_pages"),
    Kernel("trixie-newest", "trixie-backports", (6, 18), None,
           "newest Debian 13 backports kernel (7.3.4 when added): batched "
           "move_pages_ptes, move_pages inlined into userfaultfd_ioctl"),
]
BY_NAME = {k.name: k for k in MATRIX}


class StageError(Exception):
    """A step failed; names the kernel and the stage (download, unpack, ...)."""

    def __init__(self, kernel: str, stage: str, message: str):
        super().__init__(f"VM kernel {kernel}: {stage} failed: {message}")
        self.kernel, self.stage, self.message = kernel, stage, message


@dataclass(frozen=True)
class Prepared:
    """An unpacked kernel, every path absolute on the host (and, since the
    guest sees the host root, in the guest too)."""
    name: str
    suite: str
    version: str              # Debian package version
    release: str              # uname -r
    root: str                 # the dpkg-deb -x tree
    vmlinuz: str
    modules: str              # .../lib/modules/<release>
    headers_build: str
    headers_source: str
    packages: list            # [{package, version, size, sha256}]

    @classmethod
    def load(cls, path: Path) -> "Prepared":
        return cls(**json.loads(path.read_text()))


def _series(abi: str) -> tuple[int, int]:
    major, minor = abi.split(".")[:2]
    return int(major), int(minor)


def resolve(kernel: Kernel, index: dict) -> list[debian.Deb]:
    """Newest linux-image-<abi>-amd64 in range whose whole closure the index
    has, with its matching headers."""
    images = []
    for name in index:
        m = re.fullmatch(r"linux-image-(\d+\.\d+[^-]*)-amd64", name)
        if not m:
            continue
        series = _series(m.group(1))
        if series >= kernel.min_series and (kernel.max_series is None
                                            or series <= kernel.max_series):
            images.append((debian.newest(index, name), m.group(1)))
    images.sort(key=lambda pair: debian.version_key(pair[0].version), reverse=True)
    problems = []
    for image, abi in images:
        try:
            return debian.closure(index, [image.package, f"linux-headers-{abi}-amd64"],
                                  KERNEL_PACKAGES)
        except debian.DebianError as exc:
            problems.append(str(exc))
    series = f"{kernel.min_series}..{kernel.max_series or 'newest'}"
    raise debian.DebianError(f"no complete amd64 kernel {series} in {kernel.suite}"
                             + (f" ({problems[0]})" if problems else ""))


def _index_modules(root: Path, release: str) -> Path:
    """Write modules.dep & co. (the package's postinst would run depmod).
    Newer packages ship /usr/lib/modules; depmod -b looks in lib/modules,
    so give the tree the merged-/usr link a real root has."""
    if not (root / "lib").exists() and (root / "usr/lib/modules").is_dir():
        (root / "lib").symlink_to("usr/lib")
    modules = root / "lib/modules" / release
    if not (modules / "kernel").is_dir():
        raise debian.DebianError(f"no modules for {release} in {root}")
    proc = subprocess.run(["depmod", "-b", str(root), release], capture_output=True, text=True)
    if proc.returncode != 0 or not (modules / "modules.dep").exists():
        raise debian.DebianError(f"depmod -b {root} {release}: {proc.stderr.strip()}")
    return modules


def _link_headers(root: Path, modules: Path, release: str) -> tuple[Path, Path]:
    """Point <modules>/build and /source at the unpacked headers with
    relative links, so they resolve wherever the tree is seen from."""
    build = root / "usr/src" / f"linux-headers-{release}"
    common = [p for p in (root / "usr/src").glob("linux-headers-*-common")]
    if not (build / "include").is_dir() or len(common) != 1:
        raise debian.DebianError(f"headers for {release} not found under {root}/usr/src")
    for link, target in (("build", build), ("source", common[0])):
        path = modules / link
        if path.is_symlink() or path.exists():
            path.unlink()
        # relative to the real directory: on newer trees lib/ is a link to usr/lib
        path.symlink_to(os.path.relpath(target.resolve(), modules.resolve()))
    return build, common[0]


def _pointer(kernel: Kernel) -> Path:
    return CACHE / "matrix" / f"{kernel.name}.json"


def cached(kernel: Kernel) -> Prepared | None:
    """The kernel last prepared for this matrix entry, if still complete."""
    try:
        prepared = Prepared.load(_pointer(kernel))
    except (OSError, ValueError, TypeError):
        return None
    return prepared if Path(prepared.vmlinuz).exists() and Path(prepared.modules).is_dir() \
        else None


def prepare(kernel: Kernel, *, offline: bool = False, log=print) -> Prepared:
    """Resolve the newest version, download and unpack it (or reuse it).
    offline=True never touches the network and fails if nothing is cached;
    when the network fails, a cached kernel is used (and said so)."""
    previous = cached(kernel)
    if offline:
        if previous is None:
            raise StageError(kernel.name, "download",
                             f"not in the cache {CACHE} (run scripts/setup.sh, which "
                             "prefetches the VM kernels)")
        return previous
    try:
        debs = resolve(kernel, debian.packages_index(kernel.suite))
    except debian.DebianError as exc:
        if previous is not None:
            log(f"{kernel.name}: cannot resolve in {kernel.suite} ({exc}); "
                f"using the cached {previous.release}")
            return previous
        raise StageError(kernel.name, "download", f"resolving in {kernel.suite}: {exc}") from None
    image = next(d for d in debs if d.package.startswith("linux-image-"))
    release = image.package.removeprefix("linux-image-")
    record = CACHE / release / "kernel.json"
    if record.exists():                    # unpacked by an earlier run
        text = record.read_text()
    else:
        text = json.dumps(asdict(_download_and_unpack(kernel, debs, image, release, log)),
                          indent=1)
        record.write_text(text)
    _pointer(kernel).parent.mkdir(parents=True, exist_ok=True)
    _pointer(kernel).write_text(text)
    _prune_unreferenced(log)
    return Prepared.load(record)


def _download_and_unpack(kernel: Kernel, debs: list, image, release: str, log) -> Prepared:
    dest = CACHE / release
    total = sum(d.size for d in debs)
    log(f"{kernel.name}: downloading {release} ({image.version}) from {kernel.suite}: "
        f"{len(debs)} packages, {total / 1e6:.0f} MB")
    started = time.monotonic()
    root = dest / "root"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        debian.unpack(debs, root, log=lambda m: log(f"{kernel.name}: {m}"))
    except debian.UnpackError as exc:
        raise StageError(kernel.name, "unpack", str(exc)) from None
    except debian.DebianError as exc:
        raise StageError(kernel.name, "download", str(exc)) from None
    except OSError as exc:
        raise StageError(kernel.name, "unpack", str(exc)) from None
    try:
        modules = _index_modules(root, release)
        build, source = _link_headers(root, modules, release)
        # Older packages install /boot/vmlinuz-R, newer ones /usr/lib/modules/R/vmlinuz.
        vmlinuz = next((p for p in (root / "boot" / f"vmlinuz-{release}", modules / "vmlinuz")
                        if p.exists()), None)
        if vmlinuz is None:
            raise debian.DebianError(f"no vmlinuz for {release} in {root}")
    except (debian.DebianError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise StageError(kernel.name, "unpack", str(exc)) from None
    log(f"{kernel.name}: {release} unpacked in {time.monotonic() - started:.0f} s")
    return Prepared(
        name=kernel.name, suite=kernel.suite, version=image.version, release=release,
        root=str(root), vmlinuz=str(vmlinuz), modules=str(modules),
        headers_build=str(build), headers_source=str(source),
        packages=[{k: v for k, v in asdict(d).items() if k != "depends"} for d in debs])


def _prune_unreferenced(log) -> None:
    """Remove kernels no matrix entry points at any more (a newer version
    replaced them): each is a few hundred MB."""
    keep = {p.release for k in MATRIX if (p := cached(k))}
    for tree in CACHE.iterdir():
        if (tree / "kernel.json").exists() and tree.name not in keep:
            log(f"removing {tree}: no longer in the matrix")
            shutil.rmtree(tree, ignore_errors=True)
