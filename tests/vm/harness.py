"""Run a command as root inside QEMU on a real Debian kernel.

    from tests.vm.harness import run_in_guest
    result = run_in_guest("bookworm-6.12", [".venv/bin/python", "-m", "pytest", ...])
    result.status, result.output, result.boot_seconds

The guest is the host's own root (shared read-only over 9p, with a tmpfs
overlay so the guest can write but the host never changes), booted under
TCG with the kernel from kernels.py and the initramfs from initramfs.py.
A private job directory, shared read-write, carries the command in
(run.sh) and its output and exit status out.  The guest's init (init.sh)
reports its progress on the serial console; from it the harness knows the
stage (boot, mount, command) a failure happened in, and enforces a time
limit per stage.

A boot that fails before the command starts because the kernel oopsed,
panicked or never came up is retried once (an early int3 oops under
multi-threaded TCG has been seen once in several boots).  Any failure raises
VmError naming the kernel and the stage; VmUnavailable (a subclass) means
the VM cannot run on this machine at all, which a test turns into a skip.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import initramfs, kernels

REPO = Path(__file__).resolve().parents[2]
QEMU = "qemu-system-x86_64"
MARK = "uffdtrace-vm: "
# Kernel messages that mean the guest kernel itself broke.
KERNEL_FAILURE = re.compile(r"Oops|Kernel panic|BUG: |general protection fault|"
                            r"kernel BUG at|Unable to handle kernel")
GUEST_JOB_DIR = "/run/uffdtrace-job"     # where init.sh mounts the job directory
HARNESS_FILES = {"run.sh", "output", "status", "console.log", "qemu.cmd"}
MAX_RETURNED_FILE = 4 << 20
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 120        # QEMU start -> init running (measured: 3-4 s)
MOUNT_TIMEOUT = 120       # init running -> command started (measured: about 1 s)
POWEROFF_TIMEOUT = 30
RUNS = kernels.CACHE / "runs"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class VmError(Exception):
    """The VM run failed; says which kernel and which stage."""

    def __init__(self, kernel: str, stage: str, message: str, console: str = "",
                 run_dir: Path | None = None, retried_because: list[str] | None = None):
        text = f"VM kernel {kernel}: {stage} failed: {message}"
        if retried_because:
            text += f" (second attempt; the first failed in {'; '.join(retried_because)})"
        if run_dir:
            text += f" (console log and job files kept in {run_dir})"
        if console:
            text += f"\n--- last console lines ---\n{_tail(console)}"
        output = run_dir / "output" if run_dir else None
        if output and output.exists() and output.stat().st_size:
            text += f"\n--- last command output ---\n{_tail(output.read_text(errors='replace'))}"
        super().__init__(text)
        self.kernel, self.stage, self.message, self.console = kernel, stage, message, console
        self.retried_because = retried_because or []


class VmUnavailable(VmError):
    """This machine cannot run the VM at all (no QEMU, no kernel, no network)."""


@dataclass
class GuestResult:
    kernel: str               # matrix name
    release: str              # guest uname -r
    status: int               # exit status of the command
    output: str               # its stdout and stderr, interleaved
    console: str              # the guest's serial console
    boot_seconds: float       # QEMU start -> init running
    mount_seconds: float      # init running -> command started
    command_seconds: float
    total_seconds: float
    attempts: int = 1
    retried_because: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)   # left in UFFDTRACE_JOB_DIR

    @property
    def ok(self) -> bool:
        return self.status == 0


def qemu_available() -> str | None:
    """None if QEMU can run here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found (install qemu-system-x86)"
    return None


def qemu_command(kernel: kernels.Prepared, initrd: Path, job: Path, *,
                 smp: int, memory_mb: int, cpu: str = "max", append: str = "") -> list[str]:
    # TCG, not KVM: -enable-kvm crashes early on the development machines.
    # panic=-1 + oops=panic + -no-reboot: any kernel failure ends QEMU at once.
    append = f"console=ttyS0 panic=-1 oops=panic loglevel=4 {append}".strip()
    return [
        QEMU, "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-monitor", "none", "-serial", "stdio",
        "-accel", "tcg,thread=multi", "-cpu", cpu, "-smp", str(smp), "-m", str(memory_mb),
        "-kernel", kernel.vmlinuz, "-initrd", str(initrd), "-append", append,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=job,path={job},security_model=none",
        "-device", "virtio-9p-pci,fsdev=job,mount_tag=job",
    ]


def job_script(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return (f"# written by tests/vm/harness.py\n{exports}"
            f"cd {shlex.quote(str(cwd))} || exit 125\n"
            f"exec {shlex.join(argv)}\n")


@dataclass
class _Attempt:
    console: str
    stage: str                # last stage reached
    failure: str | None       # None when the command ran to the end
    retryable: bool
    times: dict


def _marks(console: str) -> list[str]:
    return [line.split(MARK, 1)[1].strip() for line in console.splitlines() if MARK in line]


def _boot_once(kernel: kernels.Prepared, initrd: Path, job: Path, timeout: float,
               boot_timeout: float, qemu_options: dict) -> _Attempt:
    console_path = job / "console.log"
    cmd = qemu_command(kernel, initrd, job, **qemu_options)
    (job / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    started = time.monotonic()
    times = {}
    stage, deadline = "boot", started + boot_timeout
    with open(console_path, "wb") as console_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console_file,
                                stderr=subprocess.STDOUT)
        try:
            while True:
                exited = proc.poll() is not None
                console = console_path.read_text(errors="replace")
                marks = _marks(console)
                now = time.monotonic()
                if stage == "boot" and any(m.startswith("init started") for m in marks):
                    times["boot"] = now - started
                    stage, deadline = "mount", now + MOUNT_TIMEOUT
                if stage == "mount" and any(m.startswith("command started") for m in marks):
                    times["mount"] = now - started - times["boot"]
                    stage, deadline = "command", now + timeout
                if stage == "command" and any(m.startswith("command exited") for m in marks):
                    times["command"] = now - started - times["boot"] - times["mount"]
                    stage, deadline = "poweroff", now + POWEROFF_TIMEOUT
                failed = [m for m in marks if m.startswith("FAILED ")]
                if failed:
                    try:
                        proc.wait(timeout=POWEROFF_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        pass                     # killed below
                    return _Attempt(console, stage, failed[0].removeprefix("FAILED "),
                                    False, times)
                if exited:
                    break
                if now > deadline:
                    limit = {"boot": boot_timeout, "mount": MOUNT_TIMEOUT, "command": timeout,
                             "poweroff": POWEROFF_TIMEOUT}[stage]
                    if stage == "poweroff":      # the work is done; just stop QEMU
                        break
                    return _Attempt(console, stage, f"timed out after {limit:.0f} s in "
                                    f"stage {stage}", stage in ("boot", "mount"), times)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    console = console_path.read_text(errors="replace")
    times["total"] = time.monotonic() - started
    if stage == "poweroff" or any(m.startswith("command exited") for m in _marks(console)):
        return _Attempt(console, "command", None, False, times)
    oops = KERNEL_FAILURE.search(console)
    why = (f"kernel failure: {console[oops.start():].splitlines()[0].strip()}" if oops
           else f"QEMU exited with status {proc.returncode} before the command finished")
    return _Attempt(console, stage, why, stage in ("boot", "mount"), times)


def _returned_files(job: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted(job.iterdir())
            if p.is_file() and p.name not in HARNESS_FILES
            and p.stat().st_size <= MAX_RETURNED_FILE}


def _prune_old_runs(max_age_s: float = 86400) -> None:
    if not RUNS.is_dir():
        return
    for run in RUNS.iterdir():
        try:
            if time.time() - run.stat().st_mtime > max_age_s:
                shutil.rmtree(run, ignore_errors=True)
        except OSError:
            pass


def prepare_kernel(name: str, *, offline: bool | None = None,
                   log=print) -> tuple[kernels.Prepared, Path]:
    """The kernel and its initramfs.  offline=True: only what prefetch put in
    the cache; False: resolve the newest version now; None: the cache, or
    the network when the cache has nothing."""
    kernel = kernels.BY_NAME.get(name)
    if kernel is None:
        raise VmError(name, "download", f"not in the matrix ({', '.join(kernels.BY_NAME)})")
    try:
        prepared = kernels.cached(kernel) if offline is None else None
        if prepared is None:
            prepared = kernels.prepare(kernel, offline=bool(offline), log=log)
    except kernels.StageError as exc:
        cls = VmUnavailable if exc.stage == "download" else VmError
        raise cls(exc.kernel, exc.stage, exc.message) from None
    try:
        return prepared, initramfs.build(prepared, log=log)
    except (initramfs.InitramfsError, OSError, subprocess.CalledProcessError) as exc:
        raise VmError(name, "initramfs", str(exc)) from None


def run_in_guest(kernel: str, argv: list[str], timeout: float = 600, *,
                 cwd: Path = REPO, env: dict[str, str] | None = None,
                 offline: bool | None = None, smp: int = 1, memory_mb: int = 2048,
                 boot_timeout: float = BOOT_TIMEOUT, append: str = "", keep: bool = False,
                 log=print) -> GuestResult:
    """Boot `kernel` (a matrix name), run argv as root in cwd, power off.

    env is added to a clean environment (PATH, HOME, LANG, and
    UFFDTRACE_IN_GUEST=1, which tests/vm/conftest.py checks; the expected
    UFFDTRACE_GUEST_RELEASE; UFFDTRACE_JOB_DIR, where the command may leave
    small files that come back in GuestResult.files).  offline: see
    prepare_kernel.  append: extra kernel command line (debugging, e.g.
    "loglevel=8").  keep: keep the job directory even on success.
    Returns the result even when the command fails; raises VmError when the
    VM did not get the command to run to its end."""
    reason = qemu_available()
    if reason:
        raise VmUnavailable(kernel, "boot", reason)
    prepared, initrd = prepare_kernel(kernel, offline=offline, log=log)
    full_env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                "UFFDTRACE_IN_GUEST": "1", "UFFDTRACE_GUEST_KERNEL": kernel,
                "UFFDTRACE_GUEST_RELEASE": prepared.release, "UFFDTRACE_JOB_DIR": GUEST_JOB_DIR,
                "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    RUNS.mkdir(parents=True, exist_ok=True)
    _prune_old_runs()
    retried: list[str] = []
    for attempt in (1, 2):
        job = Path(tempfile.mkdtemp(prefix=f"{kernel}-", dir=RUNS))
        (job / "run.sh").write_text(job_script(argv, cwd, full_env))
        started = time.monotonic()
        result = _boot_once(prepared, initrd, job, timeout, boot_timeout,
                            {"smp": smp, "memory_mb": memory_mb, "append": append})
        if result.failure is None:
            status_file = job / "status"
            output = (job / "output").read_text(errors="replace") \
                if (job / "output").exists() else ""
            if not status_file.exists():
                raise VmError(kernel, "command", "the guest wrote no exit status",
                              result.console, job)
            guest = GuestResult(
                kernel=kernel, release=prepared.release,
                status=int(status_file.read_text().strip()), output=output,
                console=result.console, boot_seconds=result.times.get("boot", 0.0),
                mount_seconds=result.times.get("mount", 0.0),
                command_seconds=result.times.get("command", 0.0),
                total_seconds=time.monotonic() - started, attempts=attempt,
                retried_because=retried, files=_returned_files(job))
            if not keep:
                shutil.rmtree(job, ignore_errors=True)
            return guest
        if result.retryable and attempt == 1:
            retried.append(f"{result.stage}: {result.failure}")
            log(f"{kernel}: {result.stage} failed ({result.failure}); retrying once "
                f"(first attempt kept in {job})")
            continue
        raise VmError(kernel, result.stage, result.failure, result.console, job, retried)
    raise AssertionError("unreachable")
