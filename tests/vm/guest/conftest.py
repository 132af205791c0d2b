"""Fixtures for tests that run inside a test VM (see tests/vm/README.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def expected_release() -> str:
    return os.environ["UFFDTRACE_GUEST_RELEASE"]


@pytest.fixture(scope="session")
def job_dir() -> Path:
    """Files written here come back to the host (GuestResult.files)."""
    return Path(os.environ["UFFDTRACE_JOB_DIR"])


@pytest.fixture(scope="session")
def save_for_host(job_dir):
    def save(name: str, data) -> None:
        (job_dir / name).write_text(json.dumps(data, indent=1) + "\n")
    return save


@pytest.fixture(scope="session")
def kernel_tier_recording(tmp_path_factory):
    """The one `uffdtrace record --stacks` the user-path and --stacks test
    files share (tests/vm/guest/recording.py: one BPF compile for both)."""
    from tests.vm.guest import recording
    return recording.record(tmp_path_factory.mktemp("record"))


# Per-test limit inside a guest.  Everything runs under TCG (one emulated
# vCPU, several times slower than the host), so the suite's 300 s is what a
# BPF compile plus a recorded workload can take there: measured 205-276 s on
# 7.3 alone, and over 300 s on 6.12 while the host ran another VM.  The
# guest run as a whole stays bounded by the host's GUEST_TESTS_TIMEOUT.
GUEST_TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    """Inside a guest: the TCG time limit for each test without its own.
    Named explicitly on the host (tests/vm/conftest.py ignores this
    directory otherwise), the guest tests skip instead of failing."""
    if os.environ.get("UFFDTRACE_IN_GUEST") == "1":
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(GUEST_TEST_TIMEOUT_S))
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="runs only inside a test VM: "
                            ".venv/bin/python -m tests.vm pytest")
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(skip)
