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
    assert "ut_kernel_finish(struct ut_move_inflight *rec)\n{" in text
    off = bpfprog.program_text(bpfprog.ProgramConfig(),
                               kernel_tier.KernelPlan(None).defines())
    assert "ut_kernel_finish(struct ut_move_inflight *rec)\n{" not in off


def test_hooking_the_handler_and_gup_replaces_the_syscall_tracepoints():
    # compiled in both cases, so a typo in either branch would fail in bcc
    # (tests/live/test_kernel_tier_program.py); here: which branch is chosen
    anchor_only = kernel_tier.KernelPlan(kernel_tier.FENTRY, {"move_pages": "move_pages"})
    assert not anchor_only.moves_from_handler and not anchor_only.pins_from_gup
    assert anchor_only.defines()["UT_MOVES_FROM_HANDLER"] == 0
    full = kernel_tier.KernelPlan(kernel_tier.KPROBE, {
        "userfaultfd_ioctl": "userfaultfd_ioctl", "pin_user_pages_fast": "pin_user_pages_fast",
        "unpin_user_folio": "unpin_user_folio"})
    defines = full.defines()
    assert defines["UT_MOVES_FROM_HANDLER"] == defines["UT_PINS_FROM_GUP"] == 1
    # kprobe mode: the handler's return is where the move ends
    assert ("ut_krp__userfaultfd_ioctl", "userfaultfd_ioctl", True) in full.kprobe_attachments()
    pins_no_unpins = kernel_tier.KernelPlan(kernel_tier.FENTRY, {
        "pin_user_pages_fast": "pin_user_pages_fast"})
    assert not pins_no_unpins.pins_from_gup   # releases would go unseen


def test_probes_named_in_the_header_follow_the_plan():
    from uffdtrace.session import Session
    s = Session(tier="tracepoint")
    assert "syscalls:sys_enter_ioctl" in s.probes and "syscalls:sys_exit_ioctl" in s.probes
    s.kernel_plan = kernel_tier.KernelPlan(kernel_tier.FENTRY, {
        "userfaultfd_ioctl": "userfaultfd_ioctl", "pin_user_pages_fast": "pin_user_pages_fast",
        "unpin_user_page": "unpin_user_page"})
    probes = s.probes
    assert not any(p.startswith("syscalls:") for p in probes), probes
    assert "fentry:userfaultfd_ioctl" in probes and "raw:tlb_flush" in probes

