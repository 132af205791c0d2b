"""Debian archive access with the standard library and Debian's own
apt_pkg (dpkg's version order): signed indexes, checked .deb downloads, and
unpacking without installing.

The chain of trust is apt's: InRelease is verified with gpgv against
debian-archive-keyring, Packages.xz against the SHA256 in InRelease, each
.deb against the SHA256 in Packages.  Nothing here touches dpkg's database:
`dpkg-deb -x` only extracts files.
"""
from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cmp_to_key
from pathlib import Path

import apt_pkg   # Debian's python3-apt (scripts/setup.sh installs it)

apt_pkg.init_system()

MIRROR = os.environ.get("UFFDTRACE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCH = "amd64"
TIMEOUT = 60          # seconds per network read, not per file


class DebianError(Exception):
    """Anything that stops us from getting a verified package."""


class UnpackError(DebianError):
    """The package was fetched and verified, but could not be extracted."""


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    filename: str     # path below MIRROR
    size: int
    sha256: str
    depends: str

    @property
    def url(self) -> str:
        return f"{MIRROR}/{self.filename}"


# ---- Debian version ordering ----------------------------------------------

def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as dpkg orders a and b (libapt-pkg's own comparison:
    the epoch ends at the first colon, the revision at the last hyphen)."""
    result = apt_pkg.version_compare(a, b)
    return (result > 0) - (result < 0)


version_key = cmp_to_key(compare_versions)


# ---- network ---------------------------------------------------------------

def fetch(url: str, dest: Path, sha256: str | None = None, attempts: int = 3) -> float:
    """Download url to dest (atomically), checking sha256 if given.
    Returns the seconds it took.  Retries transient network errors."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=TIMEOUT) as resp, open(part, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            break
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                part.unlink(missing_ok=True)
                raise DebianError(f"cannot download {url}: {exc}") from None
            time.sleep(2 * attempt)
    if sha256 and digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise DebianError(f"{url}: SHA256 {digest.hexdigest()} does not match the "
                          f"signed index ({sha256})")
    part.replace(dest)
    return time.monotonic() - started


# ---- signed indexes --------------------------------------------------------

def _verified_release(suite: str, workdir: Path) -> str:
    inrelease = workdir / "InRelease"
    fetch(f"{MIRROR}/dists/{suite}/InRelease", inrelease)
    if not KEYRING.exists():
        raise DebianError(f"{KEYRING} missing: install debian-archive-keyring")
    proc = subprocess.run(["gpgv", "--keyring", str(KEYRING), "--output", "-", str(inrelease)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DebianError(f"{suite}: InRelease signature does not verify: "
                          f"{proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout      # only the signed content


def _index_sha256(release: str, name: str) -> str:
    section = release.split("\nSHA256:", 1)[-1]
    for line in section.splitlines()[1:]:
        if not line.startswith(" "):
            break
        digest, _size, path = line.split()
        if path == name:
            return digest
    raise DebianError(f"InRelease lists no SHA256 for {name}")


def parse_packages(text: str) -> dict[str, list[Deb]]:
    index: dict[str, list[Deb]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
        if "Package" not in fields or "Filename" not in fields:
            continue
        deb = Deb(fields["Package"], fields["Version"], fields["Filename"],
                  int(fields.get("Size", 0)), fields.get("SHA256", ""),
                  fields.get("Depends", ""))
        index.setdefault(deb.package, []).append(deb)
    return index


def packages_index(suite: str, component: str = "main") -> dict[str, list[Deb]]:
    """Package name -> every version the suite's signed index lists."""
    name = f"{component}/binary-{ARCH}/Packages.xz"
    with tempfile.TemporaryDirectory(prefix="uffdtrace-index-") as tmp:
        workdir = Path(tmp)
        release = _verified_release(suite, workdir)
        packages = workdir / "Packages.xz"
        fetch(f"{MIRROR}/dists/{suite}/{name}", packages, _index_sha256(release, name))
        return parse_packages(lzma.decompress(packages.read_bytes()).decode())


def newest(index: dict[str, list[Deb]], package: str, version: str | None = None) -> Deb | None:
    candidates = [d for d in index.get(package, []) if version in (None, d.version)]
    return max(candidates, key=lambda d: version_key(d.version)) if candidates else None


def closure(index: dict[str, list[Deb]], roots: list[str], follow: re.Pattern) -> list[Deb]:
    """roots plus every dependency whose name matches `follow`, transitively.
    Of alternatives (a | b) the first one the index has is taken; an exact
    `(= version)` is honoured."""
    chosen: dict[str, Deb] = {}
    todo = [(name, None) for name in roots]
    while todo:
        name, version = todo.pop()
        if name in chosen:
            continue
        deb = newest(index, name, version)
        if deb is None:
            raise DebianError(f"package {name} {version or ''} is not in the index".strip())
        chosen[name] = deb
        for group in filter(None, (g.strip() for g in deb.depends.split(","))):
            alts = [re.match(r"\s*([^\s(]+)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", alt).groups()
                    for alt in group.split("|")]
            wanted = [(dep, exact) for dep, exact in alts if follow.match(dep)]
            present = [(dep, exact) for dep, exact in wanted if newest(index, dep, exact)]
            if present:
                todo.append(present[0])
            elif wanted:
                dep, exact = wanted[0]
                raise DebianError(f"{deb.package} needs {dep} {exact or ''}, which is not "
                                  "in the index".replace("  ", " "))
    return sorted(chosen.values(), key=lambda d: d.package)


# ---- unpack ------------------------------------------------------------------

def download_debs(debs: list[Deb], workdir: Path, log=print) -> list[Path]:
    paths = []
    for deb in debs:
        path = workdir / Path(deb.filename).name
        seconds = fetch(deb.url, path, deb.sha256)
        log(f"downloaded {deb.package} {deb.version}: {deb.size / 1e6:.1f} MB in {seconds:.1f} s")
        paths.append(path)
    return paths


def unpack(debs: list[Deb], dest: Path, log=print) -> None:
    """Download, verify and extract debs into dest (all or nothing)."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="uffdtrace-debs-", dir=dest.parent) as tmp:
        for path in download_debs(debs, Path(tmp), log):
            proc = subprocess.run(["dpkg-deb", "-x", str(path), str(partial)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise UnpackError(f"dpkg-deb -x {path.name}: {proc.stderr.strip()}")
            path.unlink()     # keep the disk footprint at one unpacked tree
    shutil.rmtree(dest, ignore_errors=True)
    partial.replace(dest)
