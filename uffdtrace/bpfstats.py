"""What the loaded BPF programs cost the machine, as the kernel measures it:
each program's run time and run count (BPF_OBJ_GET_INFO_BY_FD; the kernel
only counts while the sysctl kernel.bpf_stats_enabled is 1: it costs every
program run a clock read, so uffdtrace never turns it on itself), and the
runs the kernel skipped (recursion_misses, counted whatever that sysctl)."""
from __future__ import annotations

from dataclasses import dataclass

from .native import ffi, lib

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@dataclass(frozen=True)
class ProgramStats:
    name: str
    run_time_ns: int
    run_count: int
    # Runs the kernel skipped because the program was already running on that
    # CPU (BPF recursion protection: a thread preempted inside an fentry
    # program, a kprobe reached from within another BPF program): whatever
    # that run would have seen or counted is lost.
    recursion_misses: int = 0


def stats_enabled() -> bool | None:
    """kernel.bpf_stats_enabled, None where the kernel has no such sysctl."""
    try:
        with open(STATS_SYSCTL) as f:
            return f.read().strip() != "0"
    except OSError:
        return None


def program_fds(bpf) -> dict[str, int]:
    """The programs a bcc BPF object loaded: name -> fd."""
    return {name.decode() if isinstance(name, bytes) else name: fn.fd
            for name, fn in bpf.funcs.items()}


def read_stats(programs: dict[str, int]) -> list[ProgramStats]:
    """Each program's counters (programs: name -> fd of this process), one
    bpf() syscall each (native/bpfprobe.c): a recorder reads them every
    second, and parsing /proc/self/fdinfo was most of an idle kernel-tier
    recorder's CPU under QEMU TCG.  A program whose fd is gone (closed at
    shutdown) is left out."""
    F, L = ffi(), lib()
    run_time, runs, misses = F.new("uint64_t *"), F.new("uint64_t *"), F.new("uint64_t *")
    out = []
    for name, fd in sorted(programs.items()):
        if L.bpfp_prog_counters(fd, run_time, runs, misses) == 0:
            out.append(ProgramStats(name, run_time[0], runs[0], misses[0]))
    return out


def recursion_misses(programs: dict[str, int]) -> int:
    """The runs the kernel skipped over every program (programs: name -> fd)."""
    return sum(s.recursion_misses for s in read_stats(programs))
