"""Shared test plumbing.

Tests are marked by tier from their directory (tests/unit -> unit, ...), so
`pytest -m native` runs one tier.  Tiers that cannot run here skip with the
reason (pytest -ra prints it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TIERS = ("unit", "tui", "native", "live", "vm")
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def root_required():
    if os.geteuid() != 0:
        pytest.skip("needs root")


def require_bcc_root():
    """Skip unless live tracing can run here: root and an importable bcc."""
    if os.geteuid() != 0:
        pytest.skip("live tracing needs root")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("bcc is not importable (python3-bpfcc missing)")


@pytest.fixture(scope="module")
def live():
    require_bcc_root()
