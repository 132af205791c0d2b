"""User mistakes get one clear line and exit 2, never a traceback."""
from __future__ import annotations

import pytest

from tests.helpers import uffdtrace
from uffdtrace.workload.runner import scenario_names


@pytest.mark.parametrize("args, message", [
    (["workload", "-s", "nope"], "unknown scenario 'nope'"),
    (["workload", "-s", "partial", "--pages", "1"], "needs --pages >= 2"),
    (["workload", "-s", "ok", "--pages", "0"], "--pages must be at least 1"),
    (["workload", "-s", "ok", "--iterations", "0"], "--iterations must be at least 1"),
    (["workload", "-s", "mixed", "--rate", "0"], "--rate must be positive"),
    (["workload"], "needs --scenario"),
])
def test_bad_usage_is_one_line(args, message):
    proc = uffdtrace(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uffdtrace: ") and message in lines[0]


def test_argparse_errors_exit_2_without_traceback():
    proc = uffdtrace("workload", "--pages", "many")
    assert proc.returncode == 2 and "invalid int value" in proc.stderr


@pytest.mark.parametrize("command", [[], ["doctor"], ["workload"]])
def test_help_has_examples(command):
    proc = uffdtrace(*command, "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout


def test_list_names_every_scenario():
    proc = uffdtrace("workload", "--list")
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert listed == set(scenario_names())
    assert len(listed) >= 16
    # a scenario's other right answer is listed with its expected one
    assert "success or EEXIST" in next(line for line in proc.stdout.splitlines()
                                       if line.split()[0] == "contended")


@pytest.mark.parametrize("args, message", [
    (["trace", "-p", "1", "--", "true"], "either -p PID or a COMMAND"),
    (["record", "-o", "/nonexistent-dir/t.jsonl", "-d", "1"], "cannot write /nonexistent-dir"),
    (["trace", "-d", "-1"], "-d must be >= 0"),
])
def test_tracing_bad_usage_is_one_line(args, message):
    proc = uffdtrace(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.parametrize("command", ["trace", "record"])
def test_ebpf_prints_the_configured_program_without_tracing(command):
    extra = ["-o", "/dev/null"] if command == "record" else []
    proc = uffdtrace(command, *extra, "-p", "4242", "--failed-only", "--ebpf")
    assert proc.returncode == 0
    assert "#define UT_PID 4242" in proc.stdout and "#define UT_FAILED_ONLY 1" in proc.stdout
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)" in proc.stdout
