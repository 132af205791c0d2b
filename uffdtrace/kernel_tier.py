"""Which move-path hooks the kernel tier attaches on the running kernel.

HOOKS is the one table of them: for each kernel function, which programs
bpf/uffdtrace_kernel.bpf.c has for it (each behind `#ifdef UT_HOOK_<name>`)
and what it tells.  The plan, the kprobe attach list and the #defines the
program is compiled with are derived from it, and
tests/unit/test_hook_table.py checks it against the BPF source for both
mechanisms.  The plan defines UT_HOOK_<name> for the functions this kernel
really has (kallsyms for kprobes, a BTF FUNC for fentry) and that a probe
program really attaches to, and picks the mechanism: fentry/fexit when the
kernel allows it, kprobes otherwise.  Names and inlining differ across
versions (6.12 inlines move_pages_pte, 6.18 has move_pages_ptes): a missing
function is reported, never assumed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import Callable

from .kernel import bpfcaps, btf, kallsyms, layout

FENTRY, KPROBE = "fentry", "kprobe"


@dataclass(frozen=True)
class Hook:
    """A hooked kernel function and the programs the BPF source has for it."""

    name: str
    tells: str                # what it tells (`doctor` prints it)
    entry: bool = False       # an entry program that acts (fentry; kprobe)
    exit: bool = False        # a return program (fexit; kretprobe)
    # The return program reads the function's arguments.  fexit sees them;
    # in kprobe mode an entry program saves them, keyed by UT_FN_<name>.
    saved_args: bool = False
    anchor: bool = False      # follows moves on its own: the tier needs one of these
    unpin: bool = False       # releases GUP pins

    def kprobe_programs(self) -> list[tuple[str, bool]]:
        """(BPF function, is_return) of its programs in kprobe mode.  With
        fentry, KFUNC_PROBE (entry) and KRETFUNC_PROBE (exit) attach by
        themselves."""
        return [(f"ut_kp__{self.name}", False)] * (self.entry or self.saved_args) + \
            [(f"ut_krp__{self.name}", True)] * self.exit


# In the order `doctor` lists them.  Removing a hook is removing its row and
# its #ifdef block in the BPF source (the unit test insists on both).
HOOKS = (
    Hook("move_pages", "move_pages() entered, and its own result",
         entry=True, exit=True, anchor=True),
    Hook("userfaultfd_ioctl", "each move's request and result (instead of the ioctl "
         "tracepoints), the uffd's owner mm (cross-mm moves)",
         entry=True, exit=True, anchor=True),
    Hook("move_pages_ptes", "each PTE batch's result and path: present, zero page, swap "
         "entry, hole (6.18+)",
         exit=True, saved_args=True, anchor=True),
    Hook("move_pages_pte", "each PTE step's result and path (where not inlined)",
         exit=True, saved_args=True, anchor=True),
    Hook("move_pages_huge_pmd", "each PMD step's result: a whole THP or the huge zero page",
         exit=True, saved_args=True),
    Hook("handle_userfault", "when each thread faulting on a uffd began to wait "
         "(exact waits of the threads a move wakes)", entry=True),
    Hook("split_folio_to_list", "folio splits, and the huge-page coverage each lost",
         entry=True, exit=True),
    Hook("pin_user_pages_fast", "GUP pins (io_uring, O_DIRECT, drivers)",
         exit=True, saved_args=True),
    Hook("pin_user_pages", "GUP pins", exit=True, saved_args=True),
    Hook("pin_user_pages_remote", "GUP pins of another process", exit=True, saved_args=True),
    Hook("pin_user_pages_unlocked", "GUP pins", exit=True, saved_args=True),
    Hook("unpin_user_page", "unpins", entry=True, unpin=True),
    Hook("unpin_user_pages", "unpins", entry=True, unpin=True),
    Hook("unpin_user_pages_dirty_lock", "unpins", entry=True, unpin=True),
    Hook("unpin_user_folio", "unpins", entry=True, unpin=True),
    Hook("unpin_folio", "unpins", entry=True, unpin=True),
)
HOOKS_BY_NAME = {h.name: h for h in HOOKS}
# Hooked function -> what it tells (capabilities, `doctor`).
HOOKED_FUNCTIONS = {h.name: h.tells for h in HOOKS}
# The kernel tier needs at least one of these (move_pages itself is inlined
# into the ioctl handler on 7.x).
ANCHORS = tuple(h.name for h in HOOKS if h.anchor)
# kprobe mode: UT_FN_<name>, the key of each function's saved arguments
SAVED_ARGS_SLOTS = {h.name: i for i, h in enumerate((h for h in HOOKS if h.saved_args), 1)}


@dataclass(frozen=True)
class FunctionProbe:
    """Can `name` be hooked here, and how?"""

    name: str
    symbol: kallsyms.Symbol | None   # the name may carry a .isra/.constprop suffix
    btf_id: int | None
    fentry: bpfcaps.Probe
    kprobe: bpfcaps.Probe


@dataclass(frozen=True)
class ProbedFunctions:
    functions: dict[str, FunctionProbe]
    kinds: dict[str, bpfcaps.Probe]      # FENTRY/KPROBE -> summary over all functions


def probe_functions(names: list[str]) -> ProbedFunctions:
    """Look each function up in kallsyms and BTF, and try attaching a probe
    program of each kind to it (the doctor's per-function table uses this too)."""
    syms = kallsyms.find_functions(names)
    try:
        ids = btf.find_funcs(names)
    except (OSError, btf.BtfError):
        ids = dict.fromkeys(names)
    existing = [n for n in names if syms[n]]
    kprobe_kind, kprobe_per = bpfcaps.probe_kprobes([syms[n].name for n in existing])
    fentry_kind, fentry_per = bpfcaps.probe_fentry({n: ids[n] for n in existing})
    absent = bpfcaps.Probe(None, False, "no symbol")
    functions = {n: FunctionProbe(n, syms[n], ids[n],
                                  fentry_per.get(n, absent),
                                  kprobe_per[syms[n].name] if syms[n] else absent)
                 for n in names}
    return ProbedFunctions(functions, {FENTRY: fentry_kind, KPROBE: kprobe_kind})


@dataclass(frozen=True)
class KernelPlan:
    mechanism: str | None                 # FENTRY, KPROBE, or None: no kernel tier
    hooks: dict[str, str] = field(default_factory=dict)   # function -> kallsyms symbol
    missing: dict[str, str] = field(default_factory=dict)  # function -> why not hooked
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.mechanism is not None

    def defines(self) -> dict[str, int]:
        if not self.usable:
            return {"UT_KERNEL_TIER": 0}
        slots = SAVED_ARGS_SLOTS if self.mechanism == KPROBE else {}
        return {"UT_KERNEL_TIER": 1, "UT_K_FENTRY": int(self.mechanism == FENTRY),
                "UT_MOVES_FROM_HANDLER": int(self.moves_from_handler),
                "UT_PINS_FROM_GUP": int(self.pins_from_gup),
                **{f"UT_HOOK_{name}": 1 for name in self.hooks},
                **{f"UT_FN_{name}": slot for name, slot in slots.items()}}

    # Without syscall tracepoints, processes that are not moving pages pay
    # nothing for their ioctls, and no syscall of the machine is sent through
    # the tracepoint slow path (bench/: hook-costs).

    @property
    def moves_from_handler(self) -> bool:
        """Moves followed through userfaultfd_ioctl(), not the ioctl tracepoints."""
        return "userfaultfd_ioctl" in self.hooks

    @property
    def pins_from_gup(self) -> bool:
        """Long-term pins and their release seen by the GUP hooks (io_uring pins
        through pin_user_pages_fast), not the io_uring_register tracepoint."""
        return "pin_user_pages_fast" in self.hooks and any(
            HOOKS_BY_NAME[name].unpin for name in self.hooks)

    def kprobe_attachments(self) -> list[tuple[str, str, bool]]:
        """(bpf function, kernel symbol, is_return) for kprobe mode."""
        if self.mechanism != KPROBE:
            return []
        return [(fn, symbol, is_return) for name, symbol in self.hooks.items()
                for fn, is_return in HOOKS_BY_NAME[name].kprobe_programs()]

    def probe_names(self) -> list[str]:
        """What gets attached, as `mechanism:function` strings."""
        kind = {FENTRY: "fentry", KPROBE: "kprobe"}.get(self.mechanism, "")
        return [f"{kind}:{name}" for name in self.hooks]

    def to_json(self) -> dict:
        return {"mechanism": self.mechanism, "hooks": sorted(self.hooks),
                "missing": self.missing, "reason": self.reason}


def plan(mechanism: str = "auto", probed: ProbedFunctions | None = None,
         kernel_layout: Callable[[], layout.Layout] = layout.running) -> KernelPlan:
    """The kernel-tier hooks to attach here (mechanism: auto, fentry, kprobe).
    The hooks read kernel structures at the running kernel's BTF offsets, so
    any headers that let bcc compile will do; without BTF there is no tier."""
    try:
        kernel_layout()
    except layout.LayoutError as exc:
        return KernelPlan(None, reason=f"the kernel tier reads kernel structures at this "
                          f"kernel's BTF offsets: {exc}")
    functions = (probed or probe_functions(list(HOOKED_FUNCTIONS))).functions
    anchors = [functions[a] for a in ANCHORS]
    if mechanism == "auto":
        mechanism = FENTRY if any(a.fentry.attaches for a in anchors) else KPROBE
    can = {FENTRY: lambda f: bool(f.fentry.attaches),
           KPROBE: lambda f: bool(f.kprobe.attaches)}[mechanism]
    anchor = next((a for a in anchors if can(a)), None)
    if anchor is None:
        first = anchors[0]
        detail = (first.fentry if mechanism == FENTRY else first.kprobe).detail
        return KernelPlan(None, reason=f"{mechanism} cannot attach to any of "
                          f"{', '.join(ANCHORS)} ({ANCHORS[0]}: {detail})")
    hooks, missing = {}, {}
    for name, fp in functions.items():
        if can(fp):
            hooks[name] = fp.symbol.name
        else:
            missing[name] = (fp.fentry if mechanism == FENTRY else fp.kprobe).detail
    return KernelPlan(mechanism, hooks, missing,
                      f"{anchor.name} attaches via {mechanism}; {len(hooks)} functions hooked")
