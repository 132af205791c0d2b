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
