"""The cost of merely running BPF on the two ioctl tracepoints: empty
programs, attached by bcc exactly as uffdtrace attaches its own.  Run as a
tracer process by the benchmarks; prints "attached", stops on SIGINT."""
from __future__ import annotations

import signal
import sys

PROGRAM = b"""
TRACEPOINT_PROBE(syscalls, sys_enter_ioctl) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_ioctl) { return 0; }
"""


def main() -> int:
    import bcc
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    b = bcc.BPF(text=PROGRAM, cflags=["-w"])
    print("attached", flush=True)
    while not stop:
        signal.pause()
    b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
