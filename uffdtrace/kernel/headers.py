"""Which kernel headers bcc will compile against, and whether they belong
to this kernel.

bcc 0.26 takes BCC_KERNEL_SOURCE; else /lib/modules/$(uname -r)/source when
build/ is beside it (build/ then supplies the generated headers), else
build/; and /sys/kernel/kheaders.tar.xz when that tree has no
include/ directory (BCC_KERNEL_SOURCE included: a path without include/ falls
through to kheaders).  find() names the tree by its build directory, which
says the release it was built for, and takes a tree with an include/ in it as
headers.  It must not say "found" where bcc finds nothing: bcc 0.26 then
compiles with no kernel headers at all and can crash (SIGSEGV in clang's
record layout for a map of a struct it could not declare) instead of failing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

FALLBACK_HINT = ("run scripts/setup.sh: it installs this kernel's headers, or links "
                 "Debian 6.12 headers (enough for the tracepoint tier) when none exist")


@dataclass(frozen=True)
class Headers:
    path: str | None          # tree bcc will use (build dir), None if none
    source: str               # how bcc finds it
    release: str | None       # the kernel release the tree was built for
    matches_running: bool

    def to_json(self) -> dict:
        return {"path": self.path, "found_via": self.source, "release": self.release,
                "matches_running_kernel": self.matches_running,
                "hint": None if self.path else FALLBACK_HINT}


def tree_release(tree: Path) -> str | None:
    try:
        return (tree / "include/config/kernel.release").read_text().strip()
    except OSError:
        pass
    try:
        text = (tree / "include/generated/utsrelease.h").read_text()
    except OSError:
        return None
    m = re.search(r'UTS_RELEASE\s+"([^"]+)"', text)
    return m.group(1) if m else None


def find(release: str | None = None) -> Headers:
    release = release or os.uname().release
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        if (Path(env) / "include").is_dir():
            rel = tree_release(Path(env))
            return Headers(env, "BCC_KERNEL_SOURCE", rel, rel == release)
    else:
        build = Path("/lib/modules") / release / "build"
        if (build / "include").is_dir():
            rel = tree_release(build)
            return Headers(str(build.resolve()), f"{build}", rel, rel == release)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Headers("/sys/kernel/kheaders.tar.xz", "kheaders", release, True)
    return Headers(None, "none", None, False)
