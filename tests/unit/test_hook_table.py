"""The declarative tables of BPF programs against the BPF source itself.

kernel_tier.HOOKS says which programs each hooked kernel function has (entry,
exit, saved arguments) and bpfprog.TRACEPOINTS which tracepoints the program
attaches under which #define.  Both are checked here against what the C
preprocessor keeps of the real program text, for every row and for both
mechanisms (fentry and kprobe), although this machine can attach neither.
Which programs exist does not depend on the kernel's headers, so the
#includes are dropped and cpp, not bcc, expands the rest: no privileges.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from uffdtrace import bpfprog, kernel_tier
from uffdtrace.kernel_tier import FENTRY, HOOKS, KPROBE, KernelPlan


def preprocessed(plan: KernelPlan, config: bpfprog.ProgramConfig = bpfprog.ProgramConfig()) -> str:
    cpp = shutil.which("cpp")
    if cpp is None:
        pytest.skip("no C preprocessor (cpp) to expand the BPF program with")
    text = re.sub(r"^\s*#\s*include\b.*$", "", bpfprog.program_text(config, plan.defines()),
                  flags=re.M)
    return subprocess.run([cpp, "-P"], input=text, capture_output=True, text=True,
                          check=True).stdout


def kernel_programs(text: str, mechanism: str) -> set[tuple[str, bool]]:
    """(program, is_return) of every kernel-tier program left in `text`: the
    hooked function's name with fentry, the BPF function's with kprobes."""
    if mechanism == FENTRY:
        return ({(fn, False) for fn in re.findall(r"\bKFUNC_PROBE\((\w+)\)", text)}
                | {(fn, True) for fn in re.findall(r"\bKRETFUNC_PROBE\((\w+)\)", text)})
    return {(fn, kind == "krp") for fn, kind in
            re.findall(r"\bint (ut_(kp|krp)__\w+)\(struct pt_regs \*ctx\)", text)}


def expected_programs(hook: kernel_tier.Hook, mechanism: str) -> set[tuple[str, bool]]:
    if mechanism == FENTRY:
        return {(hook.name, is_return) for is_return, has in [(False, hook.entry),
                                                              (True, hook.exit)] if has}
    return set(hook.kprobe_programs())


@pytest.mark.parametrize("mechanism", [FENTRY, KPROBE])
@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.name)
def test_each_row_has_exactly_its_programs(hook, mechanism):
    text = preprocessed(KernelPlan(mechanism, {hook.name: hook.name}))
    assert kernel_programs(text, mechanism) == expected_programs(hook, mechanism)
    if mechanism == KPROBE:
        # every saved-argument key the source uses is one the table defines
        assert not re.findall(r"\bUT_FN_\w+", text)
        # saved at entry and read at exit exactly where the row says so
        slot = kernel_tier.SAVED_ARGS_SLOTS.get(hook.name)
        saves = set(re.findall(r"\but_save_args\(ctx, (\d+)\)", text))
        reads = set(re.findall(r"\but_saved_arg\((\d+),", text))
        assert saves == reads == ({str(slot)} if hook.saved_args else set())


@pytest.mark.parametrize("mechanism", [FENTRY, KPROBE])
def test_no_hook_no_program(mechanism):
    assert kernel_programs(preprocessed(KernelPlan(mechanism, {})), mechanism) == set()


def test_the_table_names_every_hook_of_the_source():
    source = (bpfprog.BPF_DIR / bpfprog.KERNEL_PROGRAM).read_text()
    assert set(re.findall(r"\bUT_HOOK_(\w+)", source)) == set(kernel_tier.HOOKED_FUNCTIONS)


def test_kprobe_attachments_follow_the_table():
    plan = KernelPlan(KPROBE, {h.name: f"{h.name}.isra.0" for h in HOOKS})
    text = preprocessed(plan)
    attached = {(fn, is_return) for fn, _, is_return in plan.kprobe_attachments()}
    assert attached == kernel_programs(text, KPROBE)
    # the kallsyms spelling is what a probe attaches to
    assert {sym for _, sym, _ in plan.kprobe_attachments()} == set(plan.hooks.values())


HANDLER = {"userfaultfd_ioctl": "userfaultfd_ioctl"}
GUP = {"pin_user_pages_fast": "pin_user_pages_fast", "unpin_user_page": "unpin_user_page"}


def tracepoints_in(text: str) -> list[str]:
    return ([f"{c}:{e}" for c, e in re.findall(r"\bTRACEPOINT_PROBE\((\w+), (\w+)\)", text)]
            + [f"raw:{e}" for e in re.findall(r"\bRAW_TRACEPOINT_PROBE\((\w+)\)", text)])


@pytest.mark.parametrize("cost_stats", [True, False])
@pytest.mark.parametrize("plan", [KernelPlan(None), KernelPlan(FENTRY, {}),
                                  KernelPlan(FENTRY, HANDLER), KernelPlan(KPROBE, GUP),
                                  KernelPlan(FENTRY, {**HANDLER, **GUP})],
                         ids=["tracepoint", "kernel", "handler", "gup", "handler+gup"])
def test_the_tracepoint_table_matches_the_program(cost_stats, plan):
    config = bpfprog.ProgramConfig(cost_stats=cost_stats)
    assert bpfprog.tracepoints(config, plan.defines()) == tracepoints_in(
        preprocessed(plan, config))
