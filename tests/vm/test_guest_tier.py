"""The VM tier from the host: boot each kernel of the matrix under QEMU and
run tests/vm/guest inside it, as root, on the real Debian kernel.

Skips (with the reason) when this machine cannot run the VM at all: not
root, no QEMU, or no kernel in the cache and none downloadable.  A VM that
was expected to work and did not (boot, mount or command stage) fails.

The guests of the matrix boot side by side: each is one TCG vCPU, so two
take about the time of the slower one instead of the sum (CI time).  Their
kernels are prepared one after the other first (downloads share the cache).
"""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.vm import harness, kernels

GUEST_TESTS_TIMEOUT = 1800


def guest_pytest_argv() -> list[str]:
    return [".venv/bin/python", "-m", "pytest", "tests/vm/guest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={harness.GUEST_JOB_DIR}/junit.xml"]


def junit_counts(xml_text: str) -> dict[str, int]:
    suite = ET.fromstring(xml_text)
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def keep_last_run(result: harness.GuestResult) -> None:
    """The last run's output, console and guest reports, for people and CI
    logs: CACHE/runs/last-<kernel>/."""
    last = harness.RUNS / f"last-{result.kernel}"
    shutil.rmtree(last, ignore_errors=True)
    last.mkdir(parents=True)
    (last / "output").write_text(result.output)
    (last / "console.log").write_text(result.console)
    for name, text in result.files.items():
        (last / name).write_text(text)


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "vm tier needs root (the guest shares the host root and the kernel cache)"
    reason = harness.qemu_available()
    return f"vm tier cannot run: {reason}" if reason else None


def _run(kernel: str):
    """The guest's result, or the exception that kept it from one."""
    try:
        return harness.run_in_guest(kernel, guest_pytest_argv(), timeout=GUEST_TESTS_TIMEOUT)
    except (harness.VmUnavailable, harness.VmError) as exc:
        return exc


@pytest.fixture(scope="module")
def guest_runs() -> dict:
    """kernel name -> GuestResult, VmUnavailable, VmError, or a skip reason."""
    names = [k.name for k in kernels.MATRIX]
    reason = _cannot_run()
    if reason:
        return dict.fromkeys(names, reason)
    ready, out = [], {}
    for name in names:
        try:
            harness.prepare_kernel(name)
            ready.append(name)
        except harness.VmUnavailable as exc:
            out[name] = exc
    with ThreadPoolExecutor(max_workers=max(len(ready), 1)) as pool:
        out.update(zip(ready, pool.map(_run, ready)))
    return out


@pytest.mark.timeout(GUEST_TESTS_TIMEOUT + 2 * harness.BOOT_TIMEOUT + 600)
@pytest.mark.parametrize("kernel", [k.name for k in kernels.MATRIX])
def test_guest_tests_pass(guest_runs, kernel):
    result = guest_runs[kernel]
    if isinstance(result, str):
        pytest.skip(result)
    if isinstance(result, harness.VmUnavailable):
        pytest.skip(f"vm tier cannot run: {result}")
    if isinstance(result, harness.VmError):
        pytest.fail(str(result), pytrace=False)
    keep_last_run(result)
    where = (f"{kernel} ({result.release}): boot {result.boot_seconds:.1f} s, "
             f"guest tests {result.command_seconds:.1f} s")
    print(where)
    assert result.status == 0, f"guest tests failed on {where}\n{result.output}"
    assert "junit.xml" in result.files, f"guest pytest wrote no report on {where}\n{result.output}"
    counts = junit_counts(result.files["junit.xml"])
    assert counts["passed"] > 0, f"no guest test passed on {where}: {counts}\n{result.output}"
