"""The one tier decision (uffdtrace/tiers.py), gate by gate, and the places
that repeat its outcome: the trace schema's header and the README's table."""
from __future__ import annotations

import dataclasses
import re

import pytest

from tests.helpers import ROOT
from uffdtrace import capabilities, kernel_tier, session, tiers
from uffdtrace.kernel.bpfcaps import Probe
from uffdtrace.kernel.headers import FALLBACK_HINT, Headers
from uffdtrace.traceschema import strict_schema

THIS_KERNEL = Headers("/lib/modules/x/build", "/lib/modules/x/build", "x", True)
NO = Probe(True, False, "cannot attach")
YES = Probe(True, True, "attached")


def probed(fentry: Probe = NO, kprobe: Probe = NO) -> kernel_tier.ProbedFunctions:
    functions = {name: kernel_tier.FunctionProbe(name, None, None, fentry, kprobe)
                 for name in kernel_tier.HOOKED_FUNCTIONS}
    return kernel_tier.ProbedFunctions(
        functions, {kernel_tier.FENTRY: Probe(False, False, "fentry load: EPERM"),
                    kernel_tier.KPROBE: Probe(True, False, "no kprobe PMU")})


USABLE = kernel_tier.KernelPlan(kernel_tier.FENTRY, {"move_pages": "move_pages"},
                                reason="move_pages attaches via fentry; 1 functions hooked")
UNUSABLE = kernel_tier.KernelPlan(None, reason="fentry cannot attach to any of move_pages")


def facts(**changes) -> tiers.TierFacts:
    """Everything fine for the tracepoint tier; no kernel tier."""
    base = tiers.TierFacts(root=True, tracefs_path="/sys/kernel/tracing",
                           tracefs_status="mounted at /sys/kernel/tracing",
                           headers=THIS_KERNEL, kernel_plan=UNUSABLE, probed=probed())
    return dataclasses.replace(base, **changes)


GATES = [   # in the order they are checked, each with what it says
    (dict(root=False), "tracing needs root (CAP_BPF and CAP_PERFMON)"),
    (dict(tracefs_path=None, tracefs_status="not mounted"), "tracefs is not mounted"),
    (dict(headers=Headers(None, "none", None, False)),
     f"bcc finds no kernel headers: {FALLBACK_HINT}"),
    (dict(bcc_import_error=tiers.bcc_missing("No module named 'bcc'")),
     tiers.bcc_missing("No module named 'bcc'")),
    (dict(bcc_compile_error="fatal error: 'linux/types.h' file not found"),
     "bcc cannot compile here: fatal error: 'linux/types.h' file not found"),
]


@pytest.mark.parametrize("requested", tiers.REQUESTS)
@pytest.mark.parametrize("change, reason", GATES)
def test_each_gate_stops_every_tier_with_its_reason(change, reason, requested):
    decision = tiers.decide(facts(**change, kernel_plan=USABLE), requested)
    assert (decision.tier, decision.reason) == (tiers.NO_TIER, reason)
    assert not decision.can_trace


def test_the_first_failing_gate_is_the_reason():
    everything_wrong = {}
    for change, _ in GATES:
        everything_wrong.update(change)
    for i, (_, reason) in enumerate(GATES):
        assert tiers.decide(facts(**everything_wrong)).reason == reason
        everything_wrong.update({k: getattr(facts(), k) for k in GATES[i][0]})


def test_auto_takes_the_kernel_tier_when_its_plan_is_usable():
    d = tiers.decide(facts(kernel_plan=USABLE))
    assert (d.tier, d.reason) == ("kernel", USABLE.reason) and d.can_trace


def test_no_kernel_hook_at_all_names_both_mechanisms():
    d = tiers.decide(facts())
    assert d.tier == "tracepoint"
    assert d.reason == ("kernel tier impossible: fentry (fentry load: EPERM); "
                        "kprobe (no kprobe PMU)")


def test_hooks_that_attach_but_no_usable_plan_give_the_plans_reason():
    headers_of_another_kernel = kernel_tier.KernelPlan(None, reason="needs this kernel's headers")
    d = tiers.decide(facts(probed=probed(kprobe=YES), kernel_plan=headers_of_another_kernel))
    assert (d.tier, d.reason) == ("tracepoint", "kernel tier: needs this kernel's headers")


def test_requested_kernel_tier_fails_rather_than_degrades():
    d = tiers.decide(facts(), "kernel")
    assert d.tier == tiers.NO_TIER
    assert d.reason.startswith("the kernel tier is not available: kernel tier impossible: ")
    assert tiers.decide(facts(kernel_plan=USABLE), "kernel").tier == "kernel"


def test_requested_tracepoint_tier_ignores_a_usable_kernel_plan():
    d = tiers.decide(facts(kernel_plan=None, probed=None), "tracepoint")
    assert (d.tier, d.reason) == ("tracepoint", tiers.TRACEPOINT_REQUESTED)
    assert tiers.decide(facts(kernel_plan=USABLE), "tracepoint").tier == "tracepoint"


def test_the_tracepoint_tier_needs_its_tracepoints():
    d = tiers.decide(facts(missing_tracepoints=("syscalls:sys_exit_ioctl",)))
    assert d.tier == tiers.NO_TIER
    assert d.reason.endswith("; tracepoints missing: syscalls:sys_exit_ioctl")
    d = tiers.decide(facts(tracepoint_attach_error="attach failed: EPERM"))
    assert d.tier == tiers.NO_TIER and d.reason.endswith("tracepoint attach failed: attach failed: EPERM")
    # ... but the kernel tier, decided first, does not depend on them
    assert tiers.decide(facts(kernel_plan=USABLE, missing_tracepoints=("x:y",))).tier == "kernel"


def test_facts_not_probed_pass_their_gate():
    # A Session leaves bcc compiling and the probes attaching to the real
    # load: those facts are None and must not block the decision.
    assert tiers.decide(facts(bcc_compile_error=None, tracepoint_attach_error=None,
                              probed=None, kernel_plan=None)).tier == "tracepoint"


def test_an_unknown_request_is_a_bug_not_a_decision():
    with pytest.raises(ValueError):
        tiers.decide(facts(), "errno")


def test_doctor_and_session_have_no_decision_of_their_own():
    # The pair this module replaced: capabilities.choose_tier and
    # Session.choose_tier deciding with different gates and words.
    assert not hasattr(capabilities, "choose_tier")
    assert session.TIERS == tiers.REQUESTS
    assert capabilities.Capabilities.__dataclass_fields__["tier"].default == tiers.NO_TIER


def test_errno_is_an_evidence_level_not_a_tier():
    assert "errno" not in tiers.TIERS and "errno" not in tiers.REQUESTS
    header = strict_schema()["definitions"]["header"]["properties"]
    assert tuple(header["tier"]["enum"]) == tiers.TIERS


def test_readme_tier_table_lists_exactly_the_tiers():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Capability tiers", 1)[1].split("\n\n")[2]
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == tiers.TIERS
