"""What this machine lets uffdtrace see, and the capability tier it implies.

Everything is probed on the running kernel: UFFDIO_MOVE through UFFDIO_API,
functions through kallsyms and BTF, program kinds by loading and attaching
them.  `doctor` prints this, and the tier these facts imply
(tiers.decide: the decision a tracing Session makes too).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import bpfprog, kernel_tier, stateatexit, tiers
from .kernel import bpfcaps, btf, headers, layout, tracefs
from .native import move_support


TRACEPOINTS = [
    "syscalls:sys_enter_ioctl", "syscalls:sys_exit_ioctl",
    "syscalls:sys_enter_io_uring_register", "tlb:tlb_flush",
    "ksm:ksm_merge_one_page", "ksm:ksm_merge_with_ksm_page", "ksm:ksm_remove_ksm_page",
    "mmap_lock:mmap_lock_start_locking", "mmap_lock:mmap_lock_acquire_returned",
    "lock:contention_begin", "lock:contention_end", "migrate:mm_migrate_pages",
]
KSM_SETTINGS = ["run", "pages_to_scan", "sleep_millisecs", "pages_shared", "pages_sharing"]
THP_SETTINGS = ["enabled", "defrag"]

# Compiled (not loaded) by bcc to prove bcc + headers work together.
BCC_SMOKE_PROGRAM = r"""
#include <uapi/linux/ptrace.h>
int uffdt_smoke(struct pt_regs *ctx) { return 0; }
"""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _thp_mode(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'."""
    if text and "[" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text


@dataclass
class BccStatus:
    importable: bool
    version: str | None
    module: str | None
    compiles: bool | None
    compile_seconds: float | None
    error: str | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def probe_bcc(timeout: float = 120.0) -> BccStatus:
    """Import bcc and compile a tiny program, in a child so clang's noise and
    a possible crash stay out of this process."""
    code = (
        "import sys, time, bcc\n"
        "print(getattr(bcc, '__version__', '?')); print(bcc.__file__); sys.stdout.flush()\n"
        "t = time.monotonic()\n"
        f"bcc.BPF(text={BCC_SMOKE_PROGRAM!r}, cflags={bpfprog.cflags()!r})\n"
        "print(round(time.monotonic() - t, 3))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return BccStatus(True, None, None, False, None, f"bcc compile took over {timeout:.0f} s")
    out = proc.stdout.split()
    if len(out) < 2:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return BccStatus(False, None, None, None, None, tiers.bcc_missing(last))
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
        last = (errors or proc.stderr.strip().splitlines() or ["failed"])[0]
        return BccStatus(True, out[0], out[1], False, None, last.strip())
    return BccStatus(True, out[0], out[1], True, float(out[2]), None)


@dataclass
class Capabilities:
    kernel_release: str
    uffdio_move_supported: bool
    uffdio_move_detail: str
    euid: int
    tracefs_path: str | None
    tracefs_status: str
    btf_present: bool
    program_kinds: dict[str, bpfcaps.Probe]
    headers: headers.Headers
    bcc: BccStatus
    functions: dict[str, dict]
    tracepoints: dict[str, bool]
    ksm: dict[str, str | None]
    thp: dict[str, str | None]
    tier: str = tiers.NO_TIER
    tier_reason: str = ""
    probe_seconds: float = 0.0
    attachable_functions: list[str] = field(default_factory=list)
    kernel_plan: kernel_tier.KernelPlan | None = None
    layout_lines: list[str] = field(default_factory=list)   # where each layout fact comes from
    state_reader: str = "not probed"
    vma_reader: str = "not probed"      # the VMAs at exit (bpf/ut_vmastate.h)
    uffd_reader: str = "not probed"     # the uffd's pending events at exit (bpf/ut_uffdstate.h)
    waiter_reader: str = "not probed"   # who a move or UFFDIO_WAKE wakes (bpf/ut_uffdstate.h)
    stacks: str = "not probed"          # --stacks (bpfcaps.probe_stacks)

    def to_json(self) -> dict:
        return {
            "tier": self.tier,
            "tier_reason": self.tier_reason,
            "kernel_release": self.kernel_release,
            "uffdio_move_supported": self.uffdio_move_supported,
            "uffdio_move_detail": self.uffdio_move_detail,
            "privileges": {"euid": self.euid, "root": self.euid == 0},
            "tracefs": {"path": self.tracefs_path, "status": self.tracefs_status},
            "btf": {"present": self.btf_present, "path": btf.VMLINUX_BTF},
            "bpf_program_kinds": {k: p.to_json() for k, p in self.program_kinds.items()},
            "kernel_headers": self.headers.to_json(),
            "bcc": self.bcc.to_json(),
            "functions": self.functions,
            "attachable_functions": self.attachable_functions,
            "kernel_tier": self.kernel_plan.to_json() if self.kernel_plan else None,
            "kernel_layout": self.layout_lines,
            "stacks": self.stacks,
            "state_at_exit": self.state_reader,
            "vmas_at_exit": self.vma_reader,
            "uffd_at_exit": self.uffd_reader,
            "fault_waiters": self.waiter_reader,
            "tracepoints": self.tracepoints,
            "ksm": self.ksm,
            "thp": self.thp,
            "probe_seconds": round(self.probe_seconds, 3),
        }

    def tier_facts(self, probed: kernel_tier.ProbedFunctions | None = None) -> tiers.TierFacts:
        """What the tier decision needs, all of it probed."""
        tp = self.program_kinds["tracepoint"]
        return tiers.TierFacts(
            root=self.euid == 0, tracefs_path=self.tracefs_path,
            tracefs_status=self.tracefs_status, headers=self.headers,
            bcc_import_error=None if self.bcc.importable else self.bcc.error,
            bcc_compile_error=None if self.bcc.compiles else (self.bcc.error or "failed"),
            missing_tracepoints=tuple(t for t in tiers.REQUIRED_TRACEPOINTS
                                      if not self.tracepoints.get(t)),
            tracepoint_attach_error=None if tp.attaches else tp.detail,
            kernel_plan=self.kernel_plan, probed=probed)


def _layout_and_readers(root: bool) -> tuple[list[str], str, str, tuple[str, str]]:
    """Where the kernel structures' layout comes from (BTF, fact by fact:
    the maple-tree facts of the VMA reader among them), whether the
    state-at-exit reader can run (its calibration loads BPF: root only),
    and whether the VMA, uffd and fault-waiter readers can (the layout
    alone decides)."""
    try:
        lines = layout.running().describe()
    except layout.LayoutError as exc:
        off = f"off: kernel layout unknown: {exc}"
        return [f"unknown: {exc}"], off, off, (off, off)
    by_layout = stateatexit.StateReader(layout=layout.running())
    vmas, uffd = by_layout.describe_vmas(), by_layout.describe_uffd()
    uffd = (uffd, by_layout.describe_waiters())
    if not root:
        return lines, "not probed: calibrating the page-table walk needs root", vmas, uffd
    return lines, stateatexit.prepare().describe(), vmas, uffd


def probe(*, mount_tracefs: bool = True, check_bcc: bool = True) -> Capabilities:
    started = time.monotonic()
    release = os.uname().release
    supported, detail = move_support()
    if mount_tracefs:
        tfs, tfs_status = tracefs.ensure_mounted()
    else:
        tfs = tracefs.find()
        tfs_status = f"mounted at {tfs}" if tfs else "not mounted"
    btf_present = Path(btf.VMLINUX_BTF).exists()
    tp_ids = {}
    for name in TRACEPOINTS:
        cat, ev = name.split(":")
        tp_ids[name] = tracefs.tracepoint_id(tfs, cat, ev) if tfs else None

    probed = kernel_tier.probe_functions(list(kernel_tier.HOOKED_FUNCTIONS))
    functions = {
        f: {"kallsyms": {"symbol": p.symbol.name, "type": p.symbol.kind} if p.symbol else None,
            "btf_func_id": p.btf_id, "fentry": p.fentry.to_json(),
            "kprobe": p.kprobe.to_json(), "tells": kernel_tier.HOOKED_FUNCTIONS[f]}
        for f, p in probed.functions.items()}
    kinds = {
        "tracepoint": bpfcaps.probe_tracepoint(tp_ids["syscalls:sys_enter_ioctl"],
                                               "syscalls:sys_enter_ioctl"),
        "raw_tracepoint": bpfcaps.probe_raw_tracepoint("sys_enter"),
        "kprobe": probed.kinds[kernel_tier.KPROBE],
        "fentry": probed.kinds[kernel_tier.FENTRY],
    }
    caps = Capabilities(
        kernel_release=release, uffdio_move_supported=supported, uffdio_move_detail=detail,
        euid=os.geteuid(), tracefs_path=str(tfs) if tfs else None, tracefs_status=tfs_status,
        btf_present=btf_present, program_kinds=kinds, headers=headers.find(release),
        bcc=probe_bcc() if check_bcc else BccStatus(False, None, None, None, None, "not probed"),
        functions=functions, tracepoints={t: i is not None for t, i in tp_ids.items()},
        ksm={k: _read(Path("/sys/kernel/mm/ksm") / k) for k in KSM_SETTINGS},
        thp={k: _thp_mode(_read(Path("/sys/kernel/mm/transparent_hugepage") / k))
             for k in THP_SETTINGS},
    )
    caps.attachable_functions = [f for f, info in functions.items()
                                 if info["fentry"]["attaches"] or info["kprobe"]["attaches"]]
    caps.kernel_plan = kernel_tier.plan(probed=probed)
    caps.layout_lines, caps.state_reader, caps.vma_reader, \
        (caps.uffd_reader, caps.waiter_reader) = _layout_and_readers(caps.euid == 0)
    caps.stacks = bpfcaps.probe_stacks()
    decision = tiers.decide(caps.tier_facts(probed))
    caps.tier, caps.tier_reason = decision.tier, decision.reason
    caps.probe_seconds = time.monotonic() - started
    return caps
