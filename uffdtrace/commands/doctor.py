"""`uffdtrace doctor`: what this kernel lets uffdtrace see, and why."""
from __future__ import annotations

import json

from . import command_parser
from ..capabilities import Capabilities, probe
from ..tiers import TIERS

EXAMPLES = """\
examples:
  uffdtrace doctor            # human-readable report
  uffdtrace doctor --json     # one JSON object (keys: tier, uffdio_move_supported, ...)

exit status: 0 when moves can be traced here (kernel or tracepoint tier),
1 when nothing can trace them (tier NONE, and the reason: not root, no
kernel headers, ...).
"""


def add_parser(sub):
    p = command_parser(sub, "doctor", help="report what this kernel lets uffdtrace trace",
                       description="Probe the running kernel: UFFDIO_MOVE support, BPF "
                       "program kinds that really load and attach, move-path functions, "
                       "kernel headers for bcc, KSM/THP settings, and the capability tier.",
                       examples=EXAMPLES)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-mount", action="store_true",
                   help="do not mount tracefs even if it is missing and we are root")
    p.set_defaults(run=run)


def _yes(value) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def render(c: Capabilities) -> str:
    out = []
    add = out.append
    add(f"uffdtrace doctor: kernel {c.kernel_release}")
    add(f"  tier              {c.tier.upper()}  ({c.tier_reason})")
    add(f"  UFFDIO_MOVE       {_yes(c.uffdio_move_supported)} ({c.uffdio_move_detail})")
    add(f"  privileges        {'root' if c.euid == 0 else f'uid {c.euid} (not root)'}")
    add(f"  tracefs           {c.tracefs_status}")
    add(f"  BTF               {_yes(c.btf_present)}")
    h = c.headers
    if h.path:
        match = "this kernel" if h.matches_running else f"FALLBACK {h.release}, not this kernel"
        add(f"  kernel headers    {h.path} ({match})")
    else:
        add(f"  kernel headers    none: {h.to_json()['hint']}")
    b = c.bcc
    if b.compiles:
        add(f"  bcc               {b.version}, compiles in {b.compile_seconds:.2f} s")
    else:
        add(f"  bcc               {'importable' if b.importable else 'NOT importable'}: {b.error}")
    add("  BPF program kinds (loaded and attached for real):")
    for kind, p in c.program_kinds.items():
        add(f"    {kind:<16} load {_yes(p.loads):<7} attach {_yes(p.attaches):<7} {p.detail}")
    add("  move-path functions (kallsyms / BTF / attach):")
    for name, f in c.functions.items():
        sym = f["kallsyms"]
        where = f"{sym['type']} {sym['symbol']}" if sym else "absent or inlined"
        how = [k for k in ("fentry", "kprobe") if f[k]["attaches"]]
        add(f"    {name:<28} {where:<32} BTF {'yes' if f['btf_func_id'] else 'no ':<4} "
            f"attach {'/'.join(how) or 'no'}")
    add(f"  state at exit     {c.state_reader}")
    add(f"  VMAs at exit      {c.vma_reader}")
    add(f"  uffd at exit      {c.uffd_reader}")
    add(f"  fault waiters     {c.waiter_reader}")
    add(f"  stacks (--stacks) {c.stacks}")
    add("  kernel layout (offsets, enum values and maple-tree facts the BPF code reads, "
        "from this kernel's BTF):")
    for line in c.layout_lines:
        add(f"    {line}")
    plan = c.kernel_plan
    if plan is not None and plan.usable:
        add(f"  kernel tier hooks ({plan.mechanism}): {', '.join(sorted(plan.hooks))}")
    add("  tracepoints:")
    for name, ok in c.tracepoints.items():
        add(f"    {name:<40} {'present' if ok else 'missing'}")
    ksm = ", ".join(f"{k}={v}" for k, v in c.ksm.items())
    add(f"  KSM               {ksm}")
    add(f"  THP               enabled={c.thp['enabled']} defrag={c.thp['defrag']}")
    return "\n".join(out)


def run(args) -> int:
    caps = probe(mount_tracefs=not args.no_mount)
    if args.json:
        print(json.dumps(caps.to_json(), indent=2))
    else:
        print(render(caps))
    return 0 if caps.tier in TIERS else 1
