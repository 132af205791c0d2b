"""Hand-built traces for tests and benchmarks, written by the real
TraceWriter from real MoveEvent/Diagnosis/PinEvent objects -- so they have
exactly the shape `uffdtrace record` produces -- with known contents.
"""
from __future__ import annotations

import dataclasses
import errno as E
import time
from collections import Counter

from uffdtrace.culprits import GUP_HOOK, PIN_REGISTRATION, Culprit, KsmCulprit, PinCulprit
from uffdtrace.diagnose import PinTable, diagnose
from uffdtrace.diagnosis import Diagnosis
from uffdtrace.enrich import Enrichment
from uffdtrace.events import MoveEvent, PinEvent, SuccessBatch, success_rows
from uffdtrace.native import errno_name, ffi, lib
from uffdtrace.pagestate import PageState
from uffdtrace.scrub import KernelValueScrubber
from uffdtrace.events import RepeatEvent
from uffdtrace.livelock import Livelock
from uffdtrace.session import TracedMove, TracedRepeat
from uffdtrace.taxonomy import ERRNO, INFERRED, OBSERVED
from uffdtrace.tracefile import TraceWriter
from uffdtrace.walkstate import WalkedPage
from uffdtrace.wakes import Waiter, WakeEvent

T0 = 5_000_000_000_000          # start_ktime_ns of every generated trace
PAGE = 4096
PROBES = ["syscalls:sys_enter_ioctl", "syscalls:sys_exit_ioctl", "tlb:tlb_flush"]
KERNEL_PROBES = ["tlb:tlb_flush", "fentry:userfaultfd_ioctl", "fentry:move_pages_ptes",
                 "fentry:pin_user_pages_fast", "fentry:unpin_user_pages"]


def move_event(**kw) -> MoveEvent:
    # every field 0 (as the tracepoint tier sends the kernel-tier ones), then a
    # plausible healthy 4 KiB move
    fields = {f: 0 for f in MoveEvent.__dataclass_fields__}
    fields["pinner_comm"] = ""
    # read only at the end of a failed move
    fields["src_state"] = fields["dst_state"] = None
    fields["src_vma_state"] = fields["dst_vma_state"] = fields["uffd_state"] = None
    fields["stack_ids"] = None      # taken only with --stacks, for a sent failure
    fields.update(pid=100, tid=100, comm="mover", fd=3, ts_ns=T0 + 1_000_000,
                  latency_ns=5_000, dst=0x7f0000000000, src=0x7f1000000000, len=PAGE, mode=0,
                  ret=0, move=PAGE, move_before=0, flags=0, tlb_flushes=1, tlb_full_flushes=0,
                  tlb_remote_ipis=0, tlb_pages=1, mmap_lock_acquires=1, mmap_lock_wait_ns=100,
                  lock_contentions=0, lock_wait_ns=0, step_err=0, steps=0, fail_addr=0,
                  retries=0, folio_flags=0, thp_splits=0)
    fields.update(kw)
    return MoveEvent(**fields)


def ok(**kw) -> TracedMove:
    return TracedMove(move_event(**kw), Diagnosis("ok", OBSERVED), None)


def success_batch(moves: list[TracedMove]) -> SuccessBatch:
    """Successes as the collector drains them: each one's ut_move_event
    (filled by cffi from the header) up to its page states, framed as
    native/ringdrain.c frames a ring buffer's records."""
    F, spec = ffi(), success_rows()
    frames = bytearray()
    for m in moves:
        assert not m.event.failed
        values = {n: getattr(m.event, n) for n in spec.fields}
        values.update(type=lib().UT_EV_MOVE, comm=m.event.comm.encode(),
                      pinner_comm=m.event.pinner_comm.encode())
        rec = F.buffer(F.new("struct ut_move_event *", values))[:spec.record_size]
        header = spec.record_size.to_bytes(4, "little") + bytes(lib().BPF_RINGBUF_HDR_SZ - 4)
        frames += (header + rec).ljust(spec.stride, b"\0")
    return SuccessBatch(bytes(frames), len(moves))


def unbatched(items: list) -> list:
    """`items` with each SuccessBatch as its moves (TracedMove each)."""
    out = []
    for item in items:
        if isinstance(item, SuccessBatch):
            out += [ok_move(m) for m in item.moves()]
        else:
            out.append(item)
    return out


def ok_move(event: MoveEvent) -> TracedMove:
    return TracedMove(event, diagnose(event, None, PinTable()), None)


def failed(err: int, cause: str, evidence: str = INFERRED, *, moved: int = 0,
           underlying: str | None = None, culprit: Culprit | None = None,
           enrichment: Enrichment | None = None, notes=(), **kw) -> TracedMove:
    ev = move_event(ret=-err, move=moved if moved else -err, **kw)
    fail_addr = ev.src + moved
    return TracedMove(ev, Diagnosis(cause, evidence, fail_addr, underlying, culprit,
                                    list(notes)), enrichment)


def pin(pid: int, addr: int, length: int, *, comm="pinner", ts_ns=T0 + 500_000,
        released=False, method: int | None = None) -> PinEvent:
    """An io_uring registration (the tracepoint tier), or with `method` a
    long-term pin a GUP hook saw (the kernel tier: no fd, no iovec index)."""
    io_uring = method is None
    return PinEvent(released=released, pid=pid, tid=pid, comm=comm, fd=7 if io_uring else 0,
                    ts_ns=ts_ns, addr=addr, len=length,
                    opcode=lib().IORING_REGISTER_BUFFERS if io_uring else 0, index=0,
                    method=lib().UT_PIN_IO_URING_REGISTER if io_uring else method,
                    gup_flags=0 if io_uring else 0x1000000)


def repeat(of: TracedMove | None, count: int, *, closed_by: int | None = None,
           span_ns: int = 50_000_000, tid: int | None = None,
           first_ts_ns: int | None = None) -> TracedRepeat:
    """`count` more failures like `of` (None: a run whose first failure was
    lost; give tid and first_ts_ns), spread over span_ns after it."""
    first = of.event.ts_ns if of is not None else first_ts_ns
    lat = of.event.latency_ns if of is not None else 5_000
    ev = RepeatEvent(pid=of.event.pid if of is not None else tid,
                     tid=of.event.tid if of is not None else tid,
                     closed_by=lib().UT_RUN_CLOSED_TIME if closed_by is None else closed_by,
                     first_ts_ns=first, last_ts_ns=first + span_ns, count=count,
                     latency_total_ns=lat * count, latency_max_ns=2 * lat)
    return TracedRepeat(ev, of)


# The kernel counted the failures of a run whose first record was lost with
# their errno; the generated ones failed with this one.
LOST_RUN_ERRNO = "EBUSY"


def storm_items() -> list:
    """A GC thread livelocked on a page another process pins: runs of one
    EBUSY closed by time over 1.2 s (a livelock record), then a success; a
    run of EEXIST ended by a different failure; a repeat whose first
    failure was lost."""
    t = T0 + 2_000_000
    pin_culprit = PinCulprit(pid=300, tid=300, comm="fio", ts_ns=T0 + 500_000,
                             method="io_uring fixed buffer (io_uring_register)", longterm=True,
                             source=PIN_REGISTRATION, range=(0x7f1000000000, PAGE))
    items, failures = [], 0
    first = None
    for i in range(12):         # 12 runs of 100 ms: 1 move + 999 repeats each
        m = failed(E.EBUSY, "page_pinned", OBSERVED, culprit=pin_culprit, pid=400, tid=401,
                   comm="gc-thread", ts_ns=t + i * 100_000_000)
        first = first or m
        items += [m, repeat(m, 999, span_ns=99_000_000)]
        failures += 1000
    items.append(Livelock("ongoing", first, t + 11 * 100_000_000 + 99_000_000, failures,
                          ((400, 402, "gc-helper"),)))
    items.append(ok(pid=400, tid=401, comm="gc-thread", ts_ns=t + 1_300_000_000))
    items.append(Livelock("ended", first, t + 11 * 100_000_000 + 99_000_000, failures,
                          ((400, 402, "gc-helper"),)))
    e = failed(E.EEXIST, "dst_populated", pid=500, tid=500, comm="compactor",
               ts_ns=t + 1_400_000_000)
    items += [e, repeat(e, 41, closed_by=lib().UT_RUN_CLOSED_DIFFERENT, span_ns=1_000_000),
              failed(E.ENOENT, "src_hole", pid=500, tid=500, comm="compactor",
                     ts_ns=t + 1_402_000_000),
              repeat(None, 7, tid=600, first_ts_ns=t + 1_500_000_000)]
    return items


def outcomes_of(items) -> list[dict]:
    """What the kernel's outcome map would hold for these moves (a repeat:
    its count of failures like the move it repeats)."""
    counts = Counter()
    for item in items:
        if isinstance(item, TracedMove):
            e = item.event
            counts[(e.pid, errno_name(-e.ret) if e.ret else None, e.partial)] += 1
        elif isinstance(item, TracedRepeat):
            e = item.of.event if item.of is not None else None
            key = (e.pid, errno_name(-e.ret), e.partial) if e is not None else \
                (item.repeat.pid, LOST_RUN_ERRNO, False)
            counts[key] += item.repeat.count
    return [{"pid": pid, "errno": err, "partial": partial, "count": n}
            for (pid, err, partial), n in sorted(counts.items(), key=str)]


def write_trace(path, items, *, filters=None, success_sample=None, extra_moves=(),
                aggregates=True, footer=True, drops=0, scrubber=None,
                tier="tracepoint", in_flight=0) -> TraceWriter:
    """A trace of `items`.  `extra_moves`: moves the kernel counted but the
    file does not hold (sampled, --failed-only, dropped); `in_flight`: moves
    it saw enter but not yet end."""
    writer = TraceWriter(str(path), scrubber)
    writer.header(tier=tier, probes=PROBES if tier == "tracepoint" else KERNEL_PROBES,
                  filters=filters or {"pid": 0, "tid": 0, "failed_only": False,
                                      "duration": 0, "command": ["workload"]},
                  start_wall=time.time() - 2.0, start_ktime_ns=T0, success_sample=success_sample)
    writer.items(list(items))
    if aggregates:
        counted = [*unbatched(items), *extra_moves]
        repeated = sum(i.repeat.count for i in counted if isinstance(i, TracedRepeat))
        lat = Counter((i.event.latency_ns.bit_length()) for i in counted
                      if isinstance(i, TracedMove))
        size = Counter((i.event.len.bit_length()) for i in counted if isinstance(i, TracedMove))
        writer.aggregates(elapsed_s=2.0,
                          counters={"moves_entered": len(counted) + in_flight + repeated,
                                    "events_sent": len(items),
                                    "ringbuf_drops": drops, "arg_read_fails": 0,
                                    "inflight_full": 0, "pins_seen": 0},
                          outcomes=outcomes_of(counted),
                          histograms={"latency_log2": dict(lat), "size_log2": dict(size)})
    if footer:
        writer.footer(reason="command exited", command_status=0, drops=drops)
    writer.close()
    return writer


def src_page(**kw) -> PageState:
    fields = dict(addr=0x7f1000000000, present=True, swapped=False, exclusive=True,
                  pfn=0x123456, flags=frozenset({"anon"}))
    fields.update(kw)
    return PageState(**fields)


def enrichment(page: PageState | None = None) -> Enrichment:
    return Enrichment(0x7f1000000000, 0x7f0000000000, None, None, page, None)


MONITOR, FAULTER = 600, 610      # pid of the monitor (mover), first faulting tid
DST = 0x7f2000000000


def waiter(tid: int, addr: int, since_ns: int, *, since: str = "first_seen",
           queue: str = "read") -> Waiter:
    return Waiter(pid=MONITOR, tid=tid, comm="faulter", addr=addr, since_ns=since_ns,
                  since=since, queue=queue)


def wake(ts_ns: int, start: int, waiters: tuple, *, cause: str = "move", dontwake=False,
         length: int = PAGE, waiting: int | None = None) -> WakeEvent:
    return WakeEvent(pid=MONITOR, tid=MONITOR, comm="monitor", fd=3, ts_ns=ts_ns, cause=cause,
                     start=start, len=length, dontwake=dontwake, raced=False, more=False,
                     waiting=len(waiters) if waiting is None else waiting,
                     in_range=len(waiters), waiters=waiters)


def wake_items(since: str = "first_seen") -> list:
    """A monitor serving three faulting threads: a move that wakes its page's
    thread; a DONTWAKE move, then the UFFDIO_WAKE that wakes its thread;
    and a move that fails (EEXIST) before its page: its thread sleeps on."""
    t = T0 + 3_000_000_000
    fault = t - 50_000_000
    waiters = [waiter(FAULTER + i, DST + i * PAGE, fault, since=since) for i in range(3)]
    sent = lib().UT_F_WAKE_SENT       # as the kernel marks a move that sent one
    m0 = ok(pid=MONITOR, tid=MONITOR, comm="monitor", ts_ns=t, dst=DST, flags=sent)
    m1 = ok(pid=MONITOR, tid=MONITOR, comm="monitor", ts_ns=t + 20_000_000, dst=DST + PAGE,
            mode=lib().UFFDT_MOVE_MODE_DONTWAKE, flags=sent)
    m2 = failed(E.EEXIST, "dst_populated", pid=MONITOR, tid=MONITOR, comm="monitor",
                ts_ns=t + 60_000_000, dst=DST + 2 * PAGE, flags=sent)
    return [
        wake(t, DST, (waiters[0],), waiting=3), m0,
        wake(t + 20_000_000, DST + PAGE, (waiters[1],), dontwake=True, waiting=2), m1,
        wake(t + 40_000_000, DST + PAGE, (waiters[1],), cause="wake", waiting=2),
        wake(t + 60_000_000, DST + 2 * PAGE, (waiters[2],)), m2,
    ]


def mixed_items() -> list:
    """Two movers, one pinner that blocks the other's move, a KSM failure,
    EEXIST and EINVAL: every section of a report has something to say."""
    pin_addr = 0x7f1000004000
    pin_culprit = PinCulprit(pid=300, tid=300, comm="fio", ts_ns=T0 + 500_000,
                             method="io_uring fixed buffer (io_uring_register)", longterm=True,
                             source=PIN_REGISTRATION, range=(pin_addr, 4 * PAGE))
    ksm_culprit = KsmCulprit(merged_ts_ns=T0 + 200_000, ksmd_pid=42)
    t = T0 + 1_000_000
    return [
        pin(300, pin_addr, 4 * PAGE, comm="fio"),
        *[ok(ts_ns=t + i * 10_000, latency_ns=4_000 + i) for i in range(6)],
        *[ok(pid=200, tid=201, comm="worker", ts_ns=t + i * 20_000, len=2 * PAGE,
             move=2 * PAGE, tlb_flushes=2) for i in range(3)],
        failed(E.EAGAIN, "partial", moved=4 * PAGE, underlying="page_pinned",
               culprit=pin_culprit, len=8 * PAGE, ts_ns=t + 300_000, latency_ns=90_000,
               notes=["src page lies in an io_uring fixed buffer registered by pid 300"]),
        failed(E.EBUSY, "page_ksm", culprit=ksm_culprit, ts_ns=t + 400_000,
               enrichment=enrichment(src_page(flags=frozenset({"anon", "ksm"})))),
        failed(E.EEXIST, "dst_populated", pid=200, tid=201, comm="worker", ts_ns=t + 500_000),
        failed(E.EEXIST, "dst_populated", pid=200, tid=201, comm="worker", ts_ns=t + 510_000),
        failed(E.EINVAL, "invalid_misaligned", OBSERVED, ts_ns=t + 600_000, dst=0x7f0000000200),
        failed(E.EBUSY, "busy_unknown", ERRNO, ts_ns=t + 700_000),
    ]


def walked_page(addr: int, where: str, *flags: str, pfn: int = 0x4321) -> WalkedPage:
    """A page as bpf/ut_pagestate.h reads it when a failed move returns."""
    L = lib()
    folio = L.UT_PS_FOLIO if where in ("PTE_PRESENT", "PMD_HUGE") else 0
    return WalkedPage(addr=addr, entry=0, pfn=pfn, flags=folio | sum(
        getattr(L, f"UT_PS_{f}") for f in flags), refcount=1, mapcount=1, page_mapcount=1,
        pincount=0, where=getattr(L, f"UT_PSW_{where}"), level=L.UT_PSL_PAGE, order=0,
        swp_type=0)


def kernel_items() -> list:
    """What the kernel tier records, diagnosed by the real rule engine: GUP
    pins (a culprit with no range or thread), a KSM folio whose merge was
    not seen (no ksmd pid), step errors with internal retries, a populated
    dst on a kernel without a step hook, the pin released -- the pages
    where the moves stopped as the state at exit read them."""
    L = lib()
    gup = L.UT_PIN_USER_PAGES_FAST | L.UT_PIN_LONGTERM
    kernel = dict(flags=L.UT_F_KERNEL_TIER | L.UT_F_STATE_AT_EXIT,
                  kflags=L.UT_K_IOCTL_SEEN | L.UT_K_MOVE_PAGES)
    src, dst, pinned_at = 0x7f1000000000, 0x7f0000000000, 0x7f1000004000
    anon = ("ANON", "ANON_EXCLUSIVE")
    t = T0 + 1_000_000

    def k(err=0, moved=0, kflags=0, src_page=None, dst_page=None, **kw) -> MoveEvent:
        fields = {**kernel, "kflags": kernel["kflags"] | kflags, "len": 8 * PAGE,
                  "src": src, "dst": dst, "ret": -err,
                  "move": moved or (-err if err else 8 * PAGE), **kw}
        if err:
            fields["src_state"] = src_page or walked_page(src + moved, "PTE_PRESENT", *anon)
            fields["dst_state"] = dst_page or walked_page(dst + moved, "PTE_NONE")
        else:
            fields["flags"] = L.UT_F_KERNEL_TIER
        return move_event(**fields)

    # each step counted by the path its destination entry shows (question 6)
    paths = L.UT_K_PTE_STEPS | L.UT_K_PATHS_READ
    moves = [
        k(ts_ns=t, steps=3, kflags=paths, path_pte_pages=6, path_zero_pages=1,
          path_swap_pages=1),
        k(E.EAGAIN, 4 * PAGE, L.UT_K_STEP_FAILED | paths, ts_ns=t + 100_000, steps=2,
          path_pte_pages=4, thp_splits=1, split_pages=512,
          step_err=-E.EBUSY, fail_addr=pinned_at, pinner_pid=300, pinner_comm="fio",
          pinner_ts_ns=T0 + 600_000, pinner_method=gup,
          folio_flags=L.UT_FOLIO_SEEN | L.UT_FOLIO_PINNED_SEEN,
          src_page=walked_page(pinned_at, "PTE_PRESENT", *anon, "MAYBE_DMA_PINNED")),
        k(E.EBUSY, 0, L.UT_K_STEP_FAILED, ts_ns=t + 200_000, steps=1, step_err=-E.EBUSY,
          fail_addr=src, src_page=walked_page(src, "PTE_PRESENT", "KSM")),
        k(E.EEXIST, 0, L.UT_K_STEP_FAILED, ts_ns=t + 300_000, steps=3, retries=2,
          step_err=-E.EEXIST, fail_addr=src, dst_page=walked_page(dst, "PTE_PRESENT", *anon)),
        k(E.EAGAIN, 2 * PAGE, L.UT_K_MOVE_PAGES_RETURNED, ts_ns=t + 400_000,
          kernel_ret=2 * PAGE, dst_page=walked_page(dst + 2 * PAGE, "PTE_PRESENT", *anon)),
    ]
    pins = PinTable()
    traced = [TracedMove(m, diagnose(m, None, pins), None) for m in moves]
    return [pin(300, pinned_at, 4 * PAGE, comm="fio", ts_ns=T0 + 600_000, method=gup),
            *traced,
            pin(300, pinned_at, PAGE, comm="fio", ts_ns=t + 500_000, method=gup,
                released=True)]


def with_event(item: TracedMove, **kw) -> TracedMove:
    return dataclasses.replace(item, event=dataclasses.replace(item.event, **kw))


# --- large traces ---------------------------------------------------------------

def write_large_trace(path, moves: int, *, failure_every: int = 100, processes: int = 4):
    """`moves` move records (1 in `failure_every` a diagnosed EEXIST, the
    rest successes) in the writer's own format, fast enough for millions:
    each line is a template the real writer serialized, with its timestamps
    and sizes filled in."""
    ok_line = _template(ok(pid=1000, tid=1000, comm="bench"))
    fail_line = _template(failed(E.EEXIST, "dst_populated", pid=1000, tid=1000,
                                       comm="bench", notes=["dst page is present"]))
    writer = write_trace(path, [], aggregates=False, footer=False)
    per_pid = Counter()
    with open(path, "a", encoding="ascii") as f:
        t = T0 + 1000
        for i in range(moves):
            pid = 1000 + i % processes
            is_failure = i % failure_every == failure_every - 1
            line = fail_line if is_failure else ok_line
            t += 1000 + i % 997
            f.write(line.format(pid=pid, ts=t, lat=2000 + (i * 7919) % 50_000))
            per_pid[(pid, "EEXIST" if is_failure else None)] += 1
        f.write(_aggregates_and_footer(writer, per_pid, moves))
    return per_pid


def _template(item: TracedMove) -> str:
    """The writer's line for `item`, with {pid} {ts} {lat} placeholders."""
    line = KernelValueScrubber().serialize(item.to_json()).decode()
    line = line.replace("{", "{{").replace("}", "}}")
    e = item.event
    for name, placeholder in (("pid", "{pid}"), ("tid", "{pid}"), ("ts_ns", "{ts}"),
                              ("latency_ns", "{lat}")):
        old = f'"{name}":{getattr(e, name)},'
        assert line.count(old) == 1, old
        line = line.replace(old, f'"{name}":{placeholder},')
    return line


def _aggregates_and_footer(writer: TraceWriter, per_pid: Counter, moves: int) -> str:
    outcomes = [{"pid": pid, "errno": err, "partial": False, "count": n}
                for (pid, err), n in sorted(per_pid.items(), key=str)]
    s = writer.scrubber
    agg = s.serialize({"type": "aggregates", "elapsed_s": 60.0, "ts_ns": T0 + 60 * 10 ** 9,
                       "counters": {"moves_entered": moves, "ringbuf_drops": 0},
                       "outcomes": outcomes, "histograms": {"latency_log2": {"13": moves},
                                                            "size_log2": {"13": moves}}})
    footer = s.serialize({"type": "footer", "reason": "duration elapsed", "command_status": None,
                          "moves": moves, "pins": 0, "ksm": 0, "drops": 0,
                          "end_wall": time.time()})
    return (agg + footer).decode()
