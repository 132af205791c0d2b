"""The package under the CLI never imports the CLI: commands/ is argparse
and printing over the library, and `top` or a future `serve` reuses the
library (recording.py, session.py) without dragging a command in."""
from __future__ import annotations

import ast

from tests.helpers import ROOT

PACKAGE = ROOT / "uffdtrace"
CLI = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}


def imports_of(path) -> set[str]:
    """Every module `path` imports, relative ones resolved to absolute names."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return found


def test_no_library_module_imports_a_command():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path in CLI or PACKAGE / "commands" in path.parents:
            continue
        bad = sorted(m for m in imports_of(path) if m.startswith("uffdtrace.commands"))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_the_import_reader_sees_relative_imports():
    # the test above is only as good as this resolution
    assert "uffdtrace.recording" in imports_of(PACKAGE / "top" / "sources.py")
    assert "uffdtrace.commands.tracing" in imports_of(PACKAGE / "commands" / "top.py")
