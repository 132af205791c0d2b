"""Every tracing command takes the session options from one builder
(uffdtrace/commands/tracing.py), and configures its Session the same way."""
from __future__ import annotations

import argparse

import pytest

from tests.helpers import uffdtrace
from uffdtrace import recording
from uffdtrace.cli import build_parser
from uffdtrace.commands.tracing import (SESSION_DEFAULTS, add_session_options,
                                        session_from_args)

TRACING_COMMANDS = ("trace", "record", "top", "serve")
# serve asks the kernel for failures only (successes are counted there)
SUCCESS_OPTIONS = ("failed_only", "sample_successes")


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions}


def test_the_defaults_table_is_what_the_builder_adds():
    p = argparse.ArgumentParser()
    add_session_options(p)
    added = {a.dest: a.default for a in p._actions if a.dest != "help"}
    assert added == SESSION_DEFAULTS


@pytest.mark.parametrize("command", TRACING_COMMANDS)
def test_every_tracing_command_has_the_session_options(command):
    reference = argparse.ArgumentParser()
    add_session_options(reference)
    have = options(subparser(command))
    for dest, action in options(reference).items():
        if dest == "help" or (command == "top" and dest == "tid"):
            continue          # top has no -t: a replay cannot filter threads
        if command == "serve" and (dest in SUCCESS_OPTIONS or dest == "stacks"):
            # serve asks for failures only, and exports numbers, never stacks
            assert dest not in have or not have[dest].option_strings
            continue
        assert have[dest].option_strings == action.option_strings, (command, dest)
        assert have[dest].default == action.default and have[dest].choices == action.choices


@pytest.mark.parametrize("command", TRACING_COMMANDS[:3])
def test_each_command_configures_the_same_session(command):
    argv = {"trace": [], "record": ["-o", "/dev/null"], "top": []}[command]
    args = build_parser().parse_args([command, *argv, "-p", "7", "--failed-only",
                                      "--sample-successes", "9", "--no-cost-stats",
                                      "--no-state-at-exit", "--tier", "tracepoint",
                                      "--kernel-hooks", "kprobe"])
    s = session_from_args(args, [])
    c = s.config
    assert (c.pid, c.tid, c.failed_only, c.success_sample, c.cost_stats, c.follow) == \
        (7, 0, True, 9, False, False)
    assert (s.requested_tier, s.kernel_hooks) == ("tracepoint", "kprobe")
    assert not s.want_state_at_exit
    # ... and the trace header's filters say so, whichever command records
    assert recording.filters(s, [], 0) == {"pid": 7, "tid": 0, "failed_only": True,
                                           "duration": 0, "command": []}


def test_serve_configures_a_failures_only_session():
    args = build_parser().parse_args(["serve", "-p", "7", "--no-cost-stats", "--tier",
                                      "tracepoint", "--coalesce-ms", "50"])
    c = session_from_args(args, []).config
    assert (c.pid, c.failed_only, c.success_sample, c.cost_stats, c.coalesce_ms) == \
        (7, True, 1, False, 50)


def test_top_help_lists_the_new_options_with_examples():
    out = uffdtrace("top", "--help").stdout
    options_part, examples = out.split("examples:")
    for option in ("--tier", "--kernel-hooks", "--sample-successes", "--no-cost-stats"):
        assert option in options_part
    assert "--sample-successes 100 --no-cost-stats" in examples
    assert "--tier tracepoint" in examples


@pytest.mark.parametrize("args, message", [
    (["--replay", "t.jsonl", "--tier", "kernel"], "--tier: live tracing only, not --replay"),
    (["--replay", "t.jsonl", "--no-cost-stats", "--sample-successes", "5"],
     "--sample-successes, --no-cost-stats: live tracing only"),
    (["--sample-successes", "0"], "--sample-successes must be >= 1"),
])
def test_top_session_option_mistakes_are_one_line(args, message):
    proc = uffdtrace("top", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uffdtrace: ") and message in lines[0]
