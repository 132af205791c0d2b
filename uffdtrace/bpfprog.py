"""Assemble the BPF program text bcc compiles, configured by #defines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .native import ffi, lib

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
TRACEPOINT_PROGRAM = "uffdtrace.bpf.c"
KERNEL_PROGRAM = "uffdtrace_kernel.bpf.c"   # appended in the kernel tier
# 4 MiB per ring buffer: some ten thousand move events of headroom
# (Session._buffer_capacity_records() computes it from the record sizes,
# which change with the event's layout).
DEFAULT_RINGBUF_PAGES = 1024
# A success wakes the collector only when it is the WAKEUP_BATCH-th event
# sent on its CPU (failures count too); the rest wait for the collector's
# next poll (Session.poll: at most its timeout).  The collector drains the
# success ring whole and cheaply (events.SuccessBatch), so what costs is a
# wakeup (one pass of the run loop): 1,024 a wakeup is ~100 a second at
# 100,000 moves/s, and a quarter of the ring's ~16,000 successes a CPU.
WAKEUP_BATCH = 1024
DEFAULT_COALESCE_MS = 100
# distinct stacks the `stack_traces` map holds (--stacks): a stack is up to
# 127 frames of 8 bytes, so 4096 of them take 4 MiB of locked memory
STACK_ENTRIES = 4096


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
    # identical failures of a thread within this many ms are sent as one
    # move and one repeat count (struct ut_repeat_event); 0: each by itself
    coalesce_ms: int = DEFAULT_COALESCE_MS
    # the caller's user stack of each sent failure, the pinner's of each
    # long-term pin (--stacks; compiled out when off)
    stacks: bool = False


def defines(config: ProgramConfig, kernel_defines: dict[str, int] | None = None) -> dict:
    """The #defines the program is compiled with: the config's, and the
    kernel tier's (KernelPlan.defines())."""
    return {
        "UT_PID": config.pid, "UT_TID": config.tid, "UT_FOLLOW": int(config.follow),
        "UT_FAILED_ONLY": int(config.failed_only), "UT_SUCCESS_SAMPLE": config.success_sample,
        "UT_COST_STATS": int(config.cost_stats),
        "UT_RINGBUF_PAGES": config.ringbuf_pages,
        "UT_SUCCESS_RINGBUF_PAGES": config.success_ringbuf_pages,
        "UT_WAKEUP_BATCH": WAKEUP_BATCH,
        "UT_RUN_MAX_NS": config.coalesce_ms * 1_000_000,
        "UT_STACKS": int(config.stacks), "UT_STACK_ENTRIES": STACK_ENTRIES,
        **io_uring_defines(),
        **(kernel_defines or {}),
    }


def io_uring_defines() -> dict[str, int]:
    """io_uring's uapi, read from the system's <linux/io_uring.h> through cffi
    (see uffdtrace.bpf.c for why not from the kernel headers bcc has)."""
    L, F = lib(), ffi()
    return {"UT_IORING_REGISTER_BUFFERS": L.IORING_REGISTER_BUFFERS,
            "UT_IORING_UNREGISTER_BUFFERS": L.IORING_UNREGISTER_BUFFERS,
            "UT_IORING_REGISTER_BUFFERS2": L.IORING_REGISTER_BUFFERS2,
            "UT_IORING_RSRC_NR": F.offsetof("struct io_uring_rsrc_register", "nr"),
            "UT_IORING_RSRC_DATA": F.offsetof("struct io_uring_rsrc_register", "data")}


def program_text(config: ProgramConfig, kernel_defines: dict[str, int] | None = None) -> str:
    """The tracepoint program, plus the kernel-tier hooks when kernel_defines
    (KernelPlan.defines()) turn the kernel tier on."""
    values = defines(config, kernel_defines)
    prelude = "".join(f"#define {k} {v}\n" for k, v in values.items())
    text = prelude + (BPF_DIR / TRACEPOINT_PROGRAM).read_text()
    if values.get("UT_KERNEL_TIER"):
        text += (BPF_DIR / KERNEL_PROGRAM).read_text()
    return text


@dataclass(frozen=True)
class Tracepoint:
    """A tracepoint program of uffdtrace.bpf.c, and the #define it is compiled
    under: what Session.probes names before bcc has compiled anything."""

    probe: str          # "category:event", or "raw:event" for a raw tracepoint
    switch: str = ""    # the #define it depends on ("" = always there) ...
    when: int = 1       # ... and the value that compiles it (an absent #define is 0)


# In the order they are named: tracepoints, then raw tracepoints, each in
# the order of the program (tests/unit/test_hook_table.py runs the
# preprocessor over the program for every combination of the switches).
TRACEPOINTS = (
    Tracepoint("syscalls:sys_enter_ioctl", "UT_MOVES_FROM_HANDLER", 0),
    Tracepoint("syscalls:sys_exit_ioctl", "UT_MOVES_FROM_HANDLER", 0),
    Tracepoint("ksm:ksm_merge_one_page"),
    Tracepoint("ksm:ksm_merge_with_ksm_page"),
    Tracepoint("sched:sched_process_fork", "UT_FOLLOW"),
    Tracepoint("syscalls:sys_enter_io_uring_register", "UT_PINS_FROM_GUP", 0),
    Tracepoint("raw:tlb_flush", "UT_COST_STATS"),
    Tracepoint("raw:mmap_lock_start_locking", "UT_COST_STATS"),
    Tracepoint("raw:mmap_lock_acquire_returned", "UT_COST_STATS"),
    Tracepoint("raw:contention_begin", "UT_COST_STATS"),
    Tracepoint("raw:contention_end", "UT_COST_STATS"),
)


def tracepoints(config: ProgramConfig, kernel_defines: dict[str, int] | None = None) -> list[str]:
    """The tracepoints the program attaches, known before it is compiled."""
    values = defines(config, kernel_defines)
    return [t.probe for t in TRACEPOINTS if not t.switch or values.get(t.switch, 0) == t.when]


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
