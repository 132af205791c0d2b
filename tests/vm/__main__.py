"""Command line for the VM harness (run from the repository root, as root):

  .venv/bin/python -m tests.vm list                 # the kernel matrix and cache state
  .venv/bin/python -m tests.vm prefetch             # download + unpack + initramfs, all kernels
  .venv/bin/python -m tests.vm run -k bookworm-6.12 -- uname -a
  .venv/bin/python -m tests.vm pytest -k trixie-newest   # the guest tests, as the host test does
  .venv/bin/python -m tests.vm facts -k trixie-newest    # JSON: functions/BTF/attach, tracepoints

Exit status: the guest command's status for run/pytest/facts; 1 when the
VM failed (the message names the kernel and the stage); 2 on bad usage.
"""
from __future__ import annotations

import argparse
import sys

from . import harness, kernels


def _log(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


def cmd_list(_args) -> int:
    for k in kernels.MATRIX:
        prepared = kernels.cached(k)
        state = f"cached: {prepared.release} ({prepared.version})" if prepared else "not cached"
        print(f"{k.name:<16} {k.suite:<20} {state}\n{'':<16} {k.why}")
    return 0


def cmd_prefetch(args) -> int:
    failed = 0
    for name in args.kernel or list(kernels.BY_NAME):
        try:
            prepared, initrd = harness.prepare_kernel(name, offline=False, log=_log)
            _log(f"{name}: {prepared.release} ready ({initrd})")
        except harness.VmError as exc:
            _log(str(exc))
            failed += 1
    return 1 if failed else 0


def _run(args, argv: list[str]) -> int:
    status = 0
    for name in args.kernel or list(kernels.BY_NAME):
        try:
            result = harness.run_in_guest(name, argv, timeout=args.timeout,
                                          offline=False if args.online else None,
                                          smp=args.smp, keep=args.keep, log=_log)
        except harness.VmError as exc:
            _log(str(exc))
            status = status or 1
            continue
        sys.stdout.write(result.output)
        _log(f"{name}: {result.release}: status {result.status}; boot {result.boot_seconds:.1f} s, "
             f"mount {result.mount_seconds:.1f} s, command {result.command_seconds:.1f} s, "
             f"total {result.total_seconds:.1f} s"
             + (f"; retried after: {result.retried_because}" if result.retried_because else ""))
        status = status or result.status
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the kernel matrix")
    for name in ("prefetch", "run", "pytest", "facts"):
        p = sub.add_parser(name)
        p.add_argument("-k", "--kernel", action="append", choices=list(kernels.BY_NAME),
                       help="matrix kernel (repeatable; default: all)")
        if name != "prefetch":
            p.add_argument("--timeout", type=float, default=900, help="command time limit (s)")
            p.add_argument("--smp", type=int, default=1, help="guest CPUs")
            p.add_argument("--online", action="store_true",
                           help="resolve the newest version in the suite now (default: "
                           "the cached one, downloading only when none is cached)")
            p.add_argument("--keep", action="store_true",
                           help="keep the job directory (console, output) after success")
        if name in ("run", "pytest"):
            p.add_argument("argv", nargs="*", help="command (run) or extra pytest arguments")
    args = parser.parse_args(argv)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "prefetch":
        return cmd_prefetch(args)
    if args.command == "run":
        if not args.argv:
            parser.error("run needs a command after --")
        return _run(args, args.argv)
    if args.command == "pytest":
        return _run(args, [".venv/bin/python", "-m", "pytest", "tests/vm/guest", "-q",
                           "-p", "no:cacheprovider", *args.argv])
    return _run(args, [".venv/bin/python", "-m", "tests.vm.guest.facts"])


if __name__ == "__main__":
    sys.exit(main())
