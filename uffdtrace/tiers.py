"""The capability tier: the one decision `doctor` reports and `Session`
traces with, from the same gates in the same order, with the same words.

Two tiers exist, because two kinds of program can watch other processes'
moves: `kernel` (move-path hooks) and `tracepoint` (the syscall
tracepoints).  Where neither can load -- not root, no tracefs, no headers,
no bcc -- nothing can observe a move, so there is no tier: the decision is
NO_TIER with the reason, `doctor` exits 1 and the tracing commands stop
with that reason.  (`errno` is not a tier: it is the evidence level of a
diagnosis made from the errno alone, inside either tier.)

`doctor` probes every fact up front.  A Session probes the cheap ones and
leaves two to the real load (bcc compiling, the tracepoint program
attaching): a fact it did not probe is None here and passes its gate, and
the load then fails with its own error.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import kernel_tier
from .kernel import headers

TIERS = ("kernel", "tracepoint")           # richest first
REQUESTS = ("auto", *TIERS)                # what --tier accepts
NO_TIER = "none"                           # nothing can trace here (doctor's tier)
KERNEL_HOOKS = ("auto", kernel_tier.FENTRY, kernel_tier.KPROBE)   # --kernel-hooks
# Without these nothing opens a move record in the tracepoint tier.
REQUIRED_TRACEPOINTS = ("syscalls:sys_enter_ioctl", "syscalls:sys_exit_ioctl")
TRACEPOINT_REQUESTED = "tracepoint tier requested"


def bcc_missing(detail: str) -> str:
    """Why bcc is not importable, and what to do: one text for both callers."""
    return (f"bcc is not importable ({detail}): install Debian's python3-bpfcc and run "
            "uffdtrace from the project's .venv (scripts/setup.sh)")


@dataclass(frozen=True)
class TierFacts:
    """What the tier depends on.  None: not probed (left to the real load)."""

    root: bool
    tracefs_path: str | None
    tracefs_status: str
    headers: headers.Headers
    bcc_import_error: str | None = None      # bcc_missing(...) text
    bcc_compile_error: str | None = None
    missing_tracepoints: tuple[str, ...] = ()
    tracepoint_attach_error: str | None = None
    # The kernel tier as planned here, and the per-function probes it was
    # planned from; both None when the tracepoint tier was requested.
    kernel_plan: kernel_tier.KernelPlan | None = None
    probed: kernel_tier.ProbedFunctions | None = None


@dataclass(frozen=True)
class TierDecision:
    tier: str         # one of TIERS, or NO_TIER
    reason: str       # why this tier and not a richer one (or why none)

    @property
    def can_trace(self) -> bool:
        return self.tier in TIERS


def _why_not_kernel(f: TierFacts) -> str:
    plan, probed = f.kernel_plan, f.probed
    if probed is None:
        return f"kernel tier: {plan.reason if plan else 'not probed'}"
    anchors = [probed.functions[a] for a in kernel_tier.ANCHORS if a in probed.functions]
    if not any(a.fentry.attaches or a.kprobe.attaches for a in anchors):
        return (f"kernel tier impossible: fentry ({probed.kinds[kernel_tier.FENTRY].detail}); "
                f"kprobe ({probed.kinds[kernel_tier.KPROBE].detail})")
    return f"kernel tier: {plan.reason if plan else 'not planned'}"


def _gate(f: TierFacts) -> str | None:
    """The first reason nothing at all can be traced, or None."""
    if not f.root:
        return "tracing needs root (CAP_BPF and CAP_PERFMON)"
    if f.tracefs_path is None:
        return f"tracefs is {f.tracefs_status}"
    if f.headers.path is None:
        return f"bcc finds no kernel headers: {headers.FALLBACK_HINT}"
    if f.bcc_import_error:
        return f.bcc_import_error
    if f.bcc_compile_error:
        return f"bcc cannot compile here: {f.bcc_compile_error}"
    return None


def _tracepoint_gate(f: TierFacts) -> str | None:
    if f.missing_tracepoints:
        return f"tracepoints missing: {', '.join(f.missing_tracepoints)}"
    if f.tracepoint_attach_error:
        return f"tracepoint attach failed: {f.tracepoint_attach_error}"
    return None


def decide(f: TierFacts, requested: str = "auto") -> TierDecision:
    """The richest tier `requested` allows here (auto: any), and why."""
    if requested not in REQUESTS:      # callers check what users type
        raise ValueError(f"unknown tier request {requested!r}")
    blocked = _gate(f)
    if blocked:
        return TierDecision(NO_TIER, blocked)
    if requested != "tracepoint":
        if f.kernel_plan is not None and f.kernel_plan.usable:
            return TierDecision("kernel", f.kernel_plan.reason)
        if requested == "kernel":
            return TierDecision(NO_TIER, f"the kernel tier is not available: "
                                f"{_why_not_kernel(f)}")
    why_not_kernel = TRACEPOINT_REQUESTED if requested == "tracepoint" else _why_not_kernel(f)
    blocked = _tracepoint_gate(f)
    if blocked:
        return TierDecision(NO_TIER, f"{why_not_kernel}; {blocked}")
    return TierDecision("tracepoint", why_not_kernel)
