"""The kernel-tier BPF program on this machine's verifier.

The host refuses fentry and has no kprobe PMU, so the kernel tier runs only
in the QEMU tier (tests/vm).  But kprobe-type programs still *load* here:
compiling the kernel tier in kprobe mode with every hook enabled and loading
each program puts all of its code through the real verifier on every run.
"""
from __future__ import annotations


import pytest

from tests.conftest import require_bcc_root

from uffdtrace import bpfprog, kernel_tier, stateatexit


@pytest.fixture(scope="module")
def bcc():
    require_bcc_root()
    import bcc
    return bcc


def all_hooks_plan(mechanism: str) -> kernel_tier.KernelPlan:
    # move_pages_pte and move_pages_ptes never coexist, but their hooks are
    # independent: enabling both compiles both.
    return kernel_tier.KernelPlan(mechanism, {n: n for n in kernel_tier.HOOKED_FUNCTIONS})


@pytest.mark.parametrize("stacks", [False, True], ids=["", "stacks"])
def test_every_kprobe_hook_passes_the_verifier(bcc, stacks):
    plan = all_hooks_plan(kernel_tier.KPROBE)
    # with the state-at-exit reader, as the tracer compiles it here; and
    # with --stacks (the pinner's kernel + user stacks in the GUP hooks)
    reader = stateatexit.prepare()
    assert reader.usable, reader.reason
    text = bpfprog.program_text(bpfprog.ProgramConfig(stacks=stacks),
                                {**plan.defines(), **reader.defines()})
    b = bcc.BPF(text=text.encode(), cflags=bpfprog.cflags())
    try:
        attachments = plan.kprobe_attachments()
        # every hooked function has an entry or a return program
        assert {sym for _, sym, _ in attachments} == set(kernel_tier.HOOKED_FUNCTIONS)
        failures = {}
        for fn_name, _symbol, _is_return in attachments:
            try:
                b.load_func(fn_name.encode(), bcc.BPF.KPROBE)
            except Exception as exc:   # bcc raises a bare Exception with the log on stderr
                failures[fn_name] = str(exc)
        assert failures == {}
    finally:
        b.cleanup()
