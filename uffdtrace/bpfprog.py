"""Assemble the BPF program text bcc compiles, configured by #defines."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
TRACEPOINT_PROGRAM = "uffdtrace.bpf.c"
KERNEL_PROGRAM = "uffdtrace_kernel.bpf.c"   # appended in the kernel tier
DEFAULT_RINGBUF_PAGES = 1024   # 4 MiB: ~18k move events of headroom
# Successes do not wake the collector except every WAKEUP_BATCH-th per CPU;
# the rest wait for its next poll (Session.poll: at most its timeout).
WAKEUP_BATCH = 64


@dataclass(frozen=True)
class ProgramConfig:
    pid: int = 0              # 0 = every process
    tid: int = 0              # 0 = every thread
    follow: bool = False      # only processes in the `traced` map (+ their children)
    failed_only: bool = False # send events for failed moves only (aggregates see all)
    success_sample: int = 1   # send 1 in N successful moves (failures: always; aggregates: all)
    cost_stats: bool = True   # per-move TLB-flush and lock-wait counts (machine-wide hooks)
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES   # failures and pins
    success_ringbuf_pages: int = DEFAULT_RINGBUF_PAGES  # successes


def program_text(config: ProgramConfig, kernel_defines: dict[str, int] | None = None) -> str:
    """The tracepoint program, plus the kernel-tier hooks when kernel_defines
    (KernelPlan.defines()) turn the kernel tier on."""
    defines = {
        "UT_PID": config.pid, "UT_TID": config.tid, "UT_FOLLOW": int(config.follow),
        "UT_FAILED_ONLY": int(config.failed_only), "UT_SUCCESS_SAMPLE": config.success_sample,
        "UT_COST_STATS": int(config.cost_stats),
        "UT_RINGBUF_PAGES": config.ringbuf_pages,
        "UT_SUCCESS_RINGBUF_PAGES": config.success_ringbuf_pages,
        "UT_WAKEUP_BATCH": WAKEUP_BATCH,
        **(kernel_defines or {}),
    }
    prelude = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    text = prelude + (BPF_DIR / TRACEPOINT_PROGRAM).read_text()
    if defines.get("UT_KERNEL_TIER"):
        text += (BPF_DIR / KERNEL_PROGRAM).read_text()
    return text


_DIRECTIVE = re.compile(r"^#\s*(ifdef|ifndef|if|else|endif|define)\b\s*(!?)\s*(\w*)\s*(\S*)")


def compiled_lines(text: str) -> list[str]:
    """The lines of `text` the preprocessor keeps, for the conditional forms
    the programs use (#ifdef N, #ifndef N, #if N, #if !N, #else, #endif, with
    values from #define N V): which probes a program attaches is known before
    bcc compiles it (Session.probes)."""
    defines: dict[str, str] = {}
    active = [True]
    kept = []
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            if all(active):
                kept.append(line)
            continue
        kind, negate, name, value = m.groups()
        if kind == "define":
            if all(active):
                defines[name] = value
        elif kind == "ifdef":
            active.append(name in defines)
        elif kind == "ifndef":
            active.append(name not in defines)
        elif kind == "if":
            on = defines.get(name, "0") not in ("", "0")
            active.append(on != bool(negate))
        elif kind == "else":
            active[-1] = not active[-1]
        elif kind == "endif":
            active.pop()
    return kept


def cflags() -> list[str]:
    # -w: bcc 0.26's clang floods stderr with warnings on 6.x headers.
    # -fms-extensions: newer kernel headers embed a struct by its tag
    # (`struct __filename_head;` in linux/fs.h, seen in 7.3; not in 6.12), as
    # the kernel's own build allows; without it bcc's clang fails on any
    # header that pulls in fs.h (static_assert on sizeof(struct filename)).
    return ["-w", "-fms-extensions", f"-I{BPF_DIR}"]


class CompiledProgram:
    """A bpf/ file compiled by bcc with `#define`s in front (and optional
    extra text after), cleaned up on close(); for the small helper programs
    (calibration, page-state probe) beside the tracer's own."""

    def __init__(self, program: str, defines: dict[str, int], extra_text: str = ""):
        from bcc import BPF   # noqa: PLC0415  (bcc is only needed at run time)

        self.text = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + \
            (BPF_DIR / program).read_text() + extra_text
        self.bpf = BPF(text=self.text.encode(), cflags=cflags())

    def close(self):
        self.bpf.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
