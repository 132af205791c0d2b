"""Assemble the BPF program text bcc compiles, configured by #defines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
TRACEPOINT_PROGRAM = "uffdtrace.bpf.c"
KERNEL_PROGRAM = "uffdtrace_kernel.bpf.c"   # appended in the kernel tier
DEFAULT_RINGBUF_PAGES = 1024   # 4 MiB: ~18k move events of headroom


@dataclass(frozen=True)
class ProgramConfig:
    pid: int = 0              # 0 = every process
    tid: int = 0              # 0 = every thread
    follow: bool = False      # only processes in the `traced` map (+ their children)
    failed_only: bool = False # send events for failed moves only (aggregates see all)
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES


def program_text(config: ProgramConfig, kernel_defines: dict[str, int] | None = None) -> str:
    """The tracepoint program, plus the kernel-tier hooks when kernel_defines
    (KernelPlan.defines()) turn the kernel tier on."""
    defines = {
        "UT_PID": config.pid, "UT_TID": config.tid, "UT_FOLLOW": int(config.follow),
        "UT_FAILED_ONLY": int(config.failed_only), "UT_RINGBUF_PAGES": config.ringbuf_pages,
        **(kernel_defines or {}),
    }
    prelude = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    text = prelude + (BPF_DIR / TRACEPOINT_PROGRAM).read_text()
    if defines.get("UT_KERNEL_TIER"):
        text += (BPF_DIR / KERNEL_PROGRAM).read_text()
    return text


def cflags() -> list[str]:
    # -w: bcc 0.26's clang floods stderr with warnings on 6.x headers.
    # -fms-extensions: the kernel builds with it since 6.19, and its headers
    # now embed tagged anonymous structs (`struct __filename_head;` inside
    # struct filename in linux/fs.h); without it clang reads them as mere
    # declarations, gets layouts wrong and trips their static_asserts.
    return ["-w", "-fms-extensions", f"-I{BPF_DIR}"]
