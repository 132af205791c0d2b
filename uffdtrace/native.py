"""Python face of the native primitives in native/ (built by cffi).

Everything that touches a userfaultfd or a raw mapping goes through here, so
the scenarios read as plain Python while each move is a real ioctl in C.
"""
from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from .errors import UserError

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@lru_cache(maxsize=None)
def native():
    """The compiled cffi module; a clear error if it was never built."""
    try:
        from . import _native
    except ImportError as exc:
        raise UserError(
            "the native module uffdtrace._native is not built "
            f"({exc}); run scripts/setup.sh (or: pip install -e .)"
        ) from None
    return _native


def ffi():
    return native().ffi


def lib():
    return native().lib


def errno_name(err: int) -> str:
    return errno_mod.errorcode.get(err, f"E{err}")


def check(rc: int, what: str) -> int:
    """Raise OSError for a native call's negative-errno return."""
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


@lru_cache(maxsize=None)
def hpage_size() -> int:
    """PMD-sized (transparent huge) page size of this machine."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except OSError:
        return 2 << 20


@dataclass(frozen=True)
class MoveCall:
    """One UFFDIO_MOVE call as the kernel answered it."""

    dst: int
    src: int
    len: int
    mode: int
    ret: int
    errno: str | None
    move: int
    pid: int
    tid: int
    ns: int

    @classmethod
    def from_native(cls, c) -> "MoveCall":
        return cls(
            dst=c.dst, src=c.src, len=c.len, mode=c.mode, ret=c.ret,
            errno=errno_name(c.err) if c.ret < 0 else None,
            move=c.move, pid=c.pid, tid=c.tid, ns=c.ns,
        )

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FaultWaiter:
    """A thread that faulted on a missing page and slept until it was filled
    (CLOCK_MONOTONIC: the clock of bpf_ktime_get_ns)."""

    tid: int
    addr: int
    fault_ns: int       # right before the read that faulted
    resumed_ns: int     # right after it returned

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ServedFault:
    """The move that filled a faulting thread's page, and for a DONTWAKE
    move the UFFDIO_WAKE after it."""

    move: MoveCall
    move_ns: int        # CLOCK_MONOTONIC when issued
    wake_ns: int        # the UFFDIO_WAKE's, 0 without one
    wake_errno: int     # its errno, 0 if it succeeded

    def to_json(self) -> dict:
        return {"move": self.move.to_json(), "move_ns": self.move_ns, "wake_ns": self.wake_ns,
                "wake_errno": self.wake_errno}


@dataclass(frozen=True)
class LoopStats:
    """Aggregate of a native move loop."""

    calls: int
    ok: int
    failed: int
    bytes_moved: int
    ns: int
    first_errno: str | None
    first_error_call: int | None
    cpu_ns: int = 0            # CPU time of the looping thread
    next_step: int = 0         # ping-pong position to resume from (move_loop first_step)
    errors: dict[str, int] = field(default_factory=dict)   # failed calls by errno name

    @classmethod
    def from_native(cls, out) -> "LoopStats":
        return cls(calls=out.calls, ok=out.ok, failed=out.failed, bytes_moved=out.bytes_moved,
                   ns=out.ns, first_errno=errno_name(out.first_err) if out.failed else None,
                   first_error_call=out.first_err_call if out.failed else None,
                   cpu_ns=out.cpu_ns, next_step=out.next_step,
                   errors={errno_name(e): n for e, n in enumerate(out.err_count) if n})


def move_support() -> tuple[bool, str]:
    """Ask the kernel (UFFDIO_API) whether UFFDIO_MOVE exists.

    Returns (supported, how we know): the feature bit and the range-ioctl
    bit are both read from the kernel, never guessed from a version.
    """
    features = ffi().new("uint64_t *")
    ioctls = ffi().new("uint64_t *")
    fd = lib().uffdw_open(0, features, ioctls)
    if fd < 0:
        return False, f"userfaultfd unavailable: {os.strerror(-fd)}"
    lib().uffdw_close(fd)
    has_feature = bool(features[0] & lib().UFFDT_FEATURE_MOVE)
    if has_feature:
        return True, "UFFDIO_API advertises UFFD_FEATURE_MOVE"
    return False, f"UFFDIO_API features 0x{features[0]:x} lack UFFD_FEATURE_MOVE"


class Mapping:
    """An anonymous mapping owned by Python, unmapped on close()."""

    def __init__(self, length: int, *, shared: bool = False, align: int = PAGE_SIZE,
                 prot: int | None = None):
        L = lib()
        flags = L.MAP_ANONYMOUS | (L.MAP_SHARED if shared else L.MAP_PRIVATE)
        if prot is None:
            prot = L.PROT_READ | L.PROT_WRITE
        self.length = length
        self.addr = check(L.uffdw_map(length, prot, flags, align), "mmap")

    def page(self, index: int) -> int:
        return self.addr + index * PAGE_SIZE

    def fill(self, *, distinct: bool = True, offset: int = 0, length: int | None = None):
        """Populate pages by writing them (distinct content unless told)."""
        length = self.length - offset if length is None else length
        lib().uffdw_fill(self.addr + offset, length, 1 if distinct else 0)

    def madvise(self, advice: int, *, offset: int = 0, length: int | None = None):
        length = self.length - offset if length is None else length
        check(lib().uffdw_madvise(self.addr + offset, length, advice), "madvise")

    def holds(self, addr: int, length: int) -> bool:
        return self.addr <= addr and addr + length <= self.addr + self.length

    def mprotect(self, prot: int):
        check(lib().uffdw_mprotect(self.addr, self.length, prot), "mprotect")

    def disown(self):
        """Someone else unmapped or moved it (munmap/mremap by a thread):
        close() must not unmap what may be mapped there next."""
        self.addr = 0

    def close(self):
        if self.addr:
            lib().uffdw_unmap(self.addr, self.length)
            self.addr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Uffd:
    """A userfaultfd with UFFDIO_API done (requesting UFFD_FEATURE_MOVE, and
    the UFFD_FEATURE_* bits in `features` besides: e.g. EVENT_REMOVE)."""

    def __init__(self, features: int = 0):
        L = lib()
        supported = ffi().new("uint64_t *")
        self.fd = L.uffdw_open(L.UFFDT_FEATURE_MOVE | features, supported, ffi().NULL)
        if self.fd < 0:
            err = -self.fd
            if err == errno_mod.EINVAL:
                raise UserError("this kernel does not support UFFDIO_MOVE "
                                "(UFFDIO_API rejected UFFD_FEATURE_MOVE; Linux 6.8+ needed)")
            raise UserError(f"cannot open a userfaultfd: {os.strerror(err)} "
                            "(root, CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1 needed)")

    def register(self, mapping: Mapping):
        check(lib().uffdw_register(self.fd, mapping.addr, mapping.length,
                                   lib().UFFDIO_REGISTER_MODE_MISSING, ffi().NULL),
              "UFFDIO_REGISTER")

    def move(self, dst: int, src: int, length: int, mode: int = 0) -> MoveCall:
        out = ffi().new("struct uffdw_call *")
        lib().uffdw_move(self.fd, dst, src, length, mode, out)
        return MoveCall.from_native(out)

    def move_in_child(self, dst: int, src: int, length: int, mode: int = 0) -> MoveCall:
        """Issue the move from a forked child (another mm) on this uffd."""
        out = ffi().new("struct uffdw_call *")
        check(lib().uffdw_move_in_child(self.fd, dst, src, length, mode, out), "fork")
        return MoveCall.from_native(out)

    def serve_faults(self, dst: int, src: int, threads: int, *, hold_ms: int,
                     timeout_ms: int = 5000) -> tuple[list[FaultWaiter], list[ServedFault]]:
        """`threads` threads fault on dst's first pages (registered with this
        uffd) and sleep until this thread fills page i with a move from src
        page i, hold_ms apart; odd pages with DONTWAKE, then UFFDIO_WAKE
        (native/uffdw.h, uffdw_fault_wake)."""
        F = ffi()
        waiters = F.new("struct uffdw_waiter[]", threads)
        served = F.new("struct uffdw_served[]", threads)
        check(lib().uffdw_fault_wake(self.fd, dst, src, threads, hold_ms, timeout_ms,
                                     waiters, served), "threads faulting on the uffd")
        return ([FaultWaiter(w.tid, w.addr, w.fault_ns, w.resumed_ns) for w in waiters],
                [ServedFault(MoveCall.from_native(s.move), s.move_ns, s.wake_ns,
                             -s.wake_rc if s.wake_rc < 0 else 0) for s in served])

    def move_in_vm_child(self, dst: int, src: int, length: int, mode: int = 0, *,
                         timeout_s: float) -> tuple[MoveCall, bool]:
        """Issue the move from a child that shares this mm (not cross-mm),
        SIGKILLed if the kernel has not answered after timeout_s (a move can
        retry forever).  Returns the call and whether the child was killed
        (then the errno is what the kernel wrote to `move`, EINTR if none)."""
        out = ffi().new("struct uffdw_call *")
        killed = ffi().new("int32_t *")
        check(lib().uffdw_move_in_vm_child(self.fd, dst, src, length, mode,
                                           max(0, int(timeout_s * 1000)), out, killed),
              "clone")
        return MoveCall.from_native(out), bool(killed[0])

    def move_contended(self, dst: int, src: int, length: int, threads: int) -> list[MoveCall]:
        """`threads` native threads move the pages of [src, src+length) to
        dst at once, one 4 KiB page per call, interleaved (thread t moves
        pages t, t+threads, ...); the calls in page order."""
        pages = length // PAGE_SIZE
        calls = ffi().new("struct uffdw_call[]", pages)
        check(lib().uffdw_move_contended(self.fd, dst, src, length, threads, calls),
              "pthread_create")
        return [MoveCall.from_native(calls[i]) for i in range(pages)]

    def move_loop(self, a: Mapping, b: Mapping, chunk: int, count: int, *,
                  rate: int = 0, fail_every: int = 0, first_step: int = 0) -> LoopStats:
        """`count` ping-pong moves of `chunk` bytes between a and b, in C.

        rate: calls/s (0 = flat out); fail_every: every Nth call is a planned
        failure (dst populated) that leaves the ping-pong undisturbed;
        first_step: resume where a previous loop on a and b stopped (its
        next_step), so the pages are where the loop expects them."""
        out = ffi().new("struct uffdw_loop_stats *")
        opts = ffi().new("struct uffdw_loop_opts *", {"rate": rate, "fail_every": fail_every,
                                                      "first_step": first_step})
        slots = min(a.length, b.length) // chunk
        check(lib().uffdw_move_loop_opts(self.fd, a.addr, b.addr, chunk, slots, count, opts,
                                         out), "move loop")
        return LoopStats.from_native(out)

    def move_repeat(self, dst: int, src: int, length: int, count: int, *,
                    rate: int = 0) -> LoopStats:
        """The same move `count` times (move_cycle of one move)."""
        return self.move_cycle([(dst, src, length)], count, rate=rate)

    def move_cycle(self, moves: list[tuple[int, int, int]], count: int, *,
                   rate: int = 0) -> LoopStats:
        """`count` moves in C, call i being moves[i % len(moves)] (dst, src,
        len), at `rate` calls/s (0 = flat out): a storm of failures that
        change nothing (a populated dst, a pinned src, a src hole), for
        measuring how many failures a tracer records."""
        args = ffi().new("struct uffdt_move_arg[]",
                         [{"dst": d, "src": s, "len": n} for d, s, n in moves])
        out = ffi().new("struct uffdw_loop_stats *")
        opts = ffi().new("struct uffdw_loop_opts *", {"rate": rate})
        check(lib().uffdw_move_cycle(self.fd, args, len(moves), count, opts, out), "move cycle")
        return LoopStats.from_native(out)

    def close(self):
        if self.fd >= 0:
            lib().uffdw_close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BYSTANDER_PREFIX = "UFFDW_BYSTANDER_"


@lru_cache(maxsize=None)
def bystander_kinds() -> tuple[str, ...]:
    """The bystander loops native/uffdw.h has (enum uffdw_bystander_kind),
    lower-cased: "ioctl", "getppid", "fault", "fork", "direct_read", "mprotect"."""
    return tuple(sorted((name[len(BYSTANDER_PREFIX):].lower() for name in dir(lib())
                         if name.startswith(BYSTANDER_PREFIX)),
                        key=lambda k: getattr(lib(), BYSTANDER_PREFIX + k.upper())))


def bystander_loop(kind: str, count: int, *, pages: int = 1, fd: int = -1,
                   in_child: bool = False) -> tuple[int, int]:
    """`count` rounds of work that moves no page, in C (what each kind does
    and which kernel path it takes: enum uffdw_bystander_kind in
    native/uffdw.h); `pages` per round for fault, direct_read and mprotect,
    `fd` (opened with O_DIRECT) for direct_read; in_child: in a forked child
    that never used a userfaultfd.  Returns (wall ns, thread CPU ns)."""
    if kind not in bystander_kinds():
        raise ValueError(f"unknown bystander loop {kind!r} (one of {', '.join(bystander_kinds())})")
    spec = ffi().new("struct uffdw_bystander *", {
        "kind": getattr(lib(), BYSTANDER_PREFIX + kind.upper()), "fd": fd, "pages": pages})
    ns, cpu_ns = ffi().new("uint64_t *"), ffi().new("uint64_t *")
    loop = lib().uffdw_bystander_loop_in_child if in_child else lib().uffdw_bystander_loop
    check(loop(spec, count, ns, cpu_ns), f"bystander {kind}")
    return ns[0], cpu_ns[0]


class IoUringPin:
    """Pages of [addr, addr+length) held by an io_uring fixed buffer."""

    def __init__(self, addr: int, length: int):
        rc = lib().uffdw_iouring_pin(addr, length)
        if rc < 0:
            raise UserError(f"io_uring buffer registration failed: {os.strerror(-rc)} "
                            "(is kernel.io_uring_disabled set?)")
        self.ring_fd = rc
        self.addr, self.length = addr, length

    def close(self):
        if self.ring_fd >= 0:
            os.close(self.ring_fd)
            self.ring_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ForkHolder:
    """A forked child that keeps every private page COW-shared until closed."""

    def __init__(self):
        ctl = ffi().new("int *")
        self.pid = check(lib().uffdw_fork_holder(ctl), "fork")
        self._ctl = ctl[0]

    def close(self):
        if self.pid > 0:
            lib().uffdw_release_holder(self.pid, self._ctl)
            self.pid = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The uffd feature each non-cooperative event needs, by UFFD_EVENT_* name.
EVENT_FEATURES = {"REMOVE": "UFFD_FEATURE_EVENT_REMOVE", "UNMAP": "UFFD_FEATURE_EVENT_UNMAP",
                  "REMAP": "UFFD_FEATURE_EVENT_REMAP", "FORK": "UFFD_FEATURE_EVENT_FORK"}


def event_feature(event: str) -> int:
    """The UFFD_FEATURE_* bit a uffd needs to be sent `event` (REMOVE ...)."""
    return getattr(lib(), EVENT_FEATURES[event])


class PendingEvent:
    """A non-cooperative uffd event left unread: a thread of this process
    is blocked in the mm change `event` names (REMOVE: madvise(MADV_DONTNEED)
    of [addr, addr+length); UNMAP: munmap of it; REMAP: mremap of it onto
    [addr2, addr2+length); FORK: fork()) -- the range registered with
    `uffd`, opened with event_feature(event) -- until the event is read, and
    the uffd's mmap_changing is raised meanwhile.  close() reads it."""

    def __init__(self, uffd: Uffd, event: str, addr: int, length: int, addr2: int = 0,
                 timeout_s: float = 5.0):
        self._ev = ffi().new("struct uffdw_pending_event *")
        rc = lib().uffdw_raise_event(uffd.fd, getattr(lib(), f"UFFD_EVENT_{event}"), addr,
                                     length, addr2, int(timeout_s * 1000), self._ev)
        if rc < 0:
            raise UserError(f"no UFFD_EVENT_{event} was queued for {addr:#x}+{length:#x}: "
                            f"{os.strerror(-rc)}")
        self.kind = event
        self.tid = self._ev.tid
        self.raised_ns = self._ev.raised_ns
        self.event: int = 0

    def close(self):
        if self._ev is not None:
            rc = lib().uffdw_settle_event(self._ev)
            self.event = self._ev.event
            self._ev = None
            check(rc, "reading the pending uffd event")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
