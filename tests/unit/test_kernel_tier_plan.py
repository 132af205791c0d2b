"""The kernel-tier plan turns into the program bcc compiles."""
from __future__ import annotations

from uffdtrace import bpfprog, kernel_tier


def test_the_plan_turns_hooks_into_defines():
    plan = kernel_tier.KernelPlan(kernel_tier.FENTRY, {"move_pages": "move_pages",
                                                       "move_pages_ptes": "move_pages_ptes"})
    text = bpfprog.program_text(bpfprog.ProgramConfig(), plan.defines())
    assert "#define UT_HOOK_move_pages 1" in text
    assert "#define UT_K_FENTRY 1" in text
    assert "UT_HOOK_move_pages_huge_pmd 1" not in text
    # the kernel-tier file is appended only when the tier is on
    assert "ut_kernel_finish(struct ut_move_event *rec)\n{" in text
    off = bpfprog.program_text(bpfprog.ProgramConfig(),
                               kernel_tier.KernelPlan(None).defines())
    assert "ut_kernel_finish(struct ut_move_event *rec)\n{" not in off
