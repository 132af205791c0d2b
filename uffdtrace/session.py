"""The tracing engine as a library: load the BPF program through bcc, drain
its ring buffers, and turn each move into a diagnosed TracedMove.

    with Session(pid=1234) as s:
        s.start()
        while tracing:
            for item in s.poll(100):
                ...   # TracedMove, PinEvent or TracedRepeat
        leftovers = s.finish()   # what is queued, and the runs still open

With batch_successes=True, successful moves come as SuccessBatch items
(decoded in bulk, never one object each: what `record` needs to keep up
with 100,000+ moves/s) instead of one TracedMove each.

Used by `trace`, `record`, the TUI and the tests alike.
"""
from __future__ import annotations

import ctypes
import errno
import os
import tempfile
import time
from dataclasses import dataclass, replace
from functools import lru_cache

from . import bpfprog, bpfstats, kernel_tier, records, stateatexit, tiers, vma_evidence
from .stacks import StackResolver
from .diagnose import PinTable, diagnose
from .diagnosis import Diagnosis
from .enrich import Enrichment, enrich
from .errors import UserError
from .events import MoveEvent, PinEvent, RepeatEvent, SuccessBatch, decode, decode_repeat
from .wakes import WakeEvent
from .kernel import headers, tracefs
from .native import errno_name, ffi, lib
from .ringbuf import RingReader, RingSet, frames

TIERS = tiers.REQUESTS
FAILURE_RING, SUCCESS_RING = "events", "success_events"   # failures and pins; successes
# Failures, pins and repeats one poll() decodes at most (each is diagnosed:
# a flood must not keep poll() from returning: no tick, no -d, no Ctrl-C).
# Successes are taken by the ring-full, decoded in bulk.
POLL_BATCH = 4096
# How often poll() looks for failures counted while the failure ring was
# full (one map walk: a syscall per key, one when there is none).
OVERFLOW_CHECK_S = 0.1
STAT_PREFIX = "UT_STAT_"
# How often poll() looks for runs of threads that have exited (close_exited_runs).
EXITED_RUNS_CHECK_S = 1.0


@lru_cache(maxsize=None)
def stat_names() -> list[str]:
    """The name of each `stats` index, in index order: UT_STAT_<NAME> in
    bpf/uffdtrace_event.h, lower-cased (UT_STAT_MAX is their count)."""
    L = lib()
    by_index = {getattr(L, name): name[len(STAT_PREFIX):].lower()
                for name in dir(L) if name.startswith(STAT_PREFIX) and name != "UT_STAT_MAX"}
    names = [by_index.get(i) for i in range(L.UT_STAT_MAX)]
    if None in names or len(by_index) != L.UT_STAT_MAX:
        raise RuntimeError(f"UT_STAT_* are not the indexes 0..UT_STAT_MAX-1: {by_index}")
    return names


@dataclass(frozen=True)
class TracedMove:
    event: MoveEvent
    diagnosis: Diagnosis
    enrichment: Enrichment | None
    stack: dict | None = None    # --stacks: who issued a failure (stacks.py)

    def to_json(self) -> dict:
        return {"type": "move", **self.event.to_json(),
                "diagnosis": self.diagnosis.to_json(),
                "enrichment": self.enrichment.to_json() if self.enrichment else None,
                "stack": self.stack}


@dataclass(frozen=True)
class TracedRepeat:
    """A run's repeat count, with the move it repeats (`of`: the run's first
    failure, None if that record was lost to a full ring buffer)."""
    repeat: RepeatEvent
    of: TracedMove | None

    def to_json(self) -> dict:
        return {"type": "repeat", **self.repeat.to_json()}


# The latest failure of this many threads is kept to link repeats to it.
MAX_RUN_THREADS = 65536


def item_time(item) -> int:
    """When a record happened, to put a trace in time order: a move or pin
    its ts_ns, a repeat count its run's first failure, so that it follows
    the move record it repeats (sorted stably: that record comes first)
    before any other failure of its thread: readers link a repeat to its
    thread's latest failure (records.RepeatLinker)."""
    if isinstance(item, TracedMove):
        return item.event.ts_ns
    if isinstance(item, TracedRepeat):
        return item.repeat.first_ts_ns
    return item.ts_ns


def _bcc_import_error() -> str | None:
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return tiers.bcc_missing(str(exc))
    return None


def _compile_error(stderr_text: str) -> str:
    errors = [ln.strip() for ln in stderr_text.splitlines() if "error" in ln.lower()]
    return errors[0] if errors else "see `uffdtrace doctor`"


def _struct_bytes(value) -> bytes:
    """A ctypes struct (a bcc map value) as the bytes the kernel wrote."""
    return ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value))


def _total(value) -> int:
    """A map value summed over CPUs (per-CPU maps give one value per CPU)."""
    return sum(value) if isinstance(value, ctypes.Array) else value.value


def _array_totals(table) -> dict[int, int]:
    """An array map's values by index, summed over CPUs: one
    BPF_MAP_LOOKUP_BATCH syscall.  bcc's items() costs two a key (130 for the
    histograms), and a recorder reads these every second while moves come:
    under QEMU TCG that was most of its CPU.  Key by key where the kernel
    has no batch lookup for arrays (before 5.7)."""
    try:
        items = list(table.items_lookup_batch())
    except Exception:   # noqa: BLE001 - bcc raises a bare Exception for a failed syscall
        items = list(table.items())
    # the batch gives plain ints for keys, items() ctypes ones
    return {getattr(k, "value", k): _total(v) for k, v in items}


class Session:
    def __init__(self, *, pid: int = 0, tid: int = 0, follow: bool = False,
                 failed_only: bool = False, success_sample: int = 1,
                 cost_stats: bool = True, enrich_failures: bool = True,
                 ringbuf_pages: int = bpfprog.DEFAULT_RINGBUF_PAGES,
                 success_ringbuf_pages: int = bpfprog.DEFAULT_RINGBUF_PAGES,
                 tier: str = "auto", kernel_hooks: str = "auto",
                 state_at_exit: bool = True, coalesce_ms: int = bpfprog.DEFAULT_COALESCE_MS,
                 batch_successes: bool = False, stacks: bool = False):
        """success_sample=N sends 1 in N successful moves (at random intervals) as
        events; every failure is sent; counters(), outcomes() and histograms()
        count every move whatever N is.  cost_stats=False leaves out the
        TLB-flush and lock-wait hooks (they fire machine-wide): moves then
        carry no TLB or lock-wait counts (MoveEvent.cost_stats is False).
        tier: auto (the richest this kernel allows), kernel (fail if it
        cannot be had) or tracepoint.  kernel_hooks: auto, fentry, kprobe.
        state_at_exit: read the kernel's page state where a failed move
        stopped, before it returns (stateatexit.py), where this kernel allows.
        coalesce_ms: a thread's identical failures within this time are sent
        as its first failure and one repeat count (TracedRepeat); 0: each.
        batch_successes: poll() hands successes back as SuccessBatch items
        (see the module's docstring), else as one TracedMove each.
        stacks: take the caller's user stack of each failure sent and the
        pinner's of each long-term pin, symbolized (TracedMove.stack,
        PinEvent.stack; stacks.py)."""
        if not isinstance(success_sample, int) or success_sample < 1:
            raise UserError(f"success sampling must be a whole number >= 1, not {success_sample!r}")
        self.config = bpfprog.ProgramConfig(pid=pid, tid=tid, follow=follow,
                                            failed_only=failed_only,
                                            success_sample=success_sample,
                                            cost_stats=cost_stats,
                                            ringbuf_pages=ringbuf_pages,
                                            success_ringbuf_pages=success_ringbuf_pages,
                                            coalesce_ms=coalesce_ms, stacks=stacks)
        self.enrich_failures = enrich_failures
        if tier not in TIERS:
            raise UserError(f"unknown tier {tier!r} (choose from {', '.join(TIERS)})")
        if kernel_hooks not in tiers.KERNEL_HOOKS:
            raise UserError(f"unknown kernel hooks {kernel_hooks!r} "
                            f"(choose from {', '.join(tiers.KERNEL_HOOKS)})")
        self.requested_tier = tier
        self.kernel_hooks = kernel_hooks
        self.kernel_plan = kernel_tier.KernelPlan(None, reason=tiers.TRACEPOINT_REQUESTED)
        self.tier = "tracepoint"
        self.tier_reason: str | None = None      # set by choose_tier()
        self.want_state_at_exit = state_at_exit
        self.state_reader = stateatexit.StateReader(reason="not prepared yet")   # choose_tier()
        self.pins = PinTable()
        self.bpf = None
        self.stacks: StackResolver | None = None   # start(), with config.stacks
        self.rings: RingSet | None = None
        self._next_overflow_check = 0.0
        self.batch_successes = batch_successes
        # A run is sent when its thread moves again, or when tracing ends:
        # a tracer left running (`serve`) also sends the runs of threads
        # that have exited, or their repeats would never be counted.
        self.close_exited_runs = False
        self._next_exited_check = 0.0
        self._exited_pending: list[tuple[float, RepeatEvent]] = []   # (taken at, run)
        self._failures_empty_at = 0.0    # when a drain last began that emptied `events`
        # (latency sum the maps were read at, outcomes, histograms): aggregates()
        self._aggregates_read: tuple[int, list[dict], dict] | None = None
        # each thread's latest failure: the first of the run a repeat closes
        self._run_first = records.LatestFailure(MAX_RUN_THREADS)   # for the repeats that follow
        self.started_wall = self.started_ktime_ns = None

    @property
    def program(self) -> str:
        return bpfprog.program_text(self.config, {**self.kernel_plan.defines(),
                                                  **self.state_reader.defines()})

    @property
    def probes(self) -> list[str]:
        """What the program attaches: "category:event" tracepoints, "raw:event"
        raw tracepoints, then the kernel tier's hooks.  Before start(): what
        the program will have."""
        if self.bpf is not None:
            attached = ([tp.decode() for tp in self.bpf.tracepoint_fds]
                        + [f"raw:{tp.decode()}" for tp in self.bpf.raw_tracepoint_fds])
        else:
            attached = bpfprog.tracepoints(self.config, self.kernel_plan.defines())
        return attached + self.kernel_plan.probe_names()

    def tier_facts(self) -> tiers.TierFacts:
        """The facts the tier decision needs, probed as cheaply as they can
        be: bcc compiling and the probes attaching are left to start()."""
        tfs, status = tracefs.ensure_mounted()
        tree = headers.find()
        missing = tuple(t for t in tiers.REQUIRED_TRACEPOINTS
                        if tfs is None or tracefs.tracepoint_id(tfs, *t.split(":")) is None)
        probed = plan = None
        if self.requested_tier != "tracepoint" and os.geteuid() == 0:
            probed = kernel_tier.probe_functions(list(kernel_tier.HOOKED_FUNCTIONS))
            plan = kernel_tier.plan(self.kernel_hooks, probed=probed)
        return tiers.TierFacts(root=os.geteuid() == 0, tracefs_path=str(tfs) if tfs else None,
                               tracefs_status=status, headers=tree,
                               bcc_import_error=_bcc_import_error(),
                               missing_tracepoints=missing, kernel_plan=plan, probed=probed)

    def choose_tier(self):
        """Decide the tier as `doctor` does (tiers.decide), or raise UserError
        with the reason nothing can be traced.  start() does this; call it
        first to see `program` as it will be."""
        if self.tier_reason is not None:
            return
        facts = self.tier_facts()
        decision = tiers.decide(facts, self.requested_tier)
        if not decision.can_trace:
            raise UserError(decision.reason)
        self.tier, self.tier_reason = decision.tier, decision.reason
        if facts.kernel_plan is not None:
            self.kernel_plan = facts.kernel_plan
        self.state_reader = stateatexit.prepare() if self.want_state_at_exit else \
            stateatexit.off("turned off")

    def start(self):
        self.choose_tier()
        import bcc
        # Before the probes attach: every event's ts_ns is then >= it.
        self.started_wall = time.time()
        self.started_ktime_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        # bcc reports compile errors on fd 2 and raises a bare Exception.  A
        # file, not a pipe: a long error log must not fill a pipe and block.
        text = self.program.encode()
        with tempfile.TemporaryFile() as log:
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                self.bpf = bcc.BPF(text=text, cflags=bpfprog.cflags())
            except Exception as exc:
                os.dup2(saved, 2)
                log.seek(0)
                detail = log.read().decode(errors="replace")
                raise UserError(f"cannot load the BPF program ({exc}): "
                                f"{_compile_error(detail)}") from None
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        self.state_reader.install(self.bpf)
        if self.config.stacks:
            self.stacks = StackResolver(self.bpf, bpfprog.STACK_ENTRIES)
        self._attach_kprobes()
        self.rings = RingSet([RingReader(name, self.bpf[name.encode()].map_fd)
                              for name in (FAILURE_RING, SUCCESS_RING)])

    def _attach_kprobes(self):
        """kprobe mode: attach to the kallsyms names (fentry ones autoload)."""
        for fn_name, symbol, is_return in self.kernel_plan.kprobe_attachments():
            attach = self.bpf.attach_kretprobe if is_return else self.bpf.attach_kprobe
            try:
                attach(event=symbol.encode(), fn_name=fn_name.encode())
            except Exception as exc:
                self.close()
                raise UserError(f"cannot attach kprobe to {symbol}: {exc}") from None

    def follow_pid(self, pid: int):
        """Trace `pid` (and, through sched_process_fork, its future children)."""
        self.bpf[b"traced"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def _failures(self) -> list[TracedMove | PinEvent | TracedRepeat]:
        """Up to POLL_BATCH records of the failure ring, decoded and
        diagnosed one by one, in the order the kernel sent them."""
        out = []
        began = time.monotonic()
        cap = POLL_BATCH * self._failure_frame_bytes()
        view, _ = self.rings[FAILURE_RING].drain(cap)
        if len(view) + self._failure_frame_bytes() <= cap:
            self._failures_empty_at = began     # all it held was read
        for _, raw in frames(view):
            item = decode(raw)
            if isinstance(item, PinEvent):
                if self.stacks is not None and item.stack_ids is not None:
                    item = replace(item, stack=self.stacks.resolve(item.stack_ids, item.pid))
                self.pins.add(item)
                out.append(item)
            elif isinstance(item, MoveEvent):
                traced = self._diagnose(item)
                if item.failed:
                    self._remember_failure(traced)
                out.append(traced)
            elif isinstance(item, RepeatEvent):
                out.append(self._link(item))
            elif isinstance(item, WakeEvent):
                out.append(item)
        return out

    @staticmethod
    @lru_cache(maxsize=None)
    def _failure_frame_bytes() -> int:
        """The largest record of the failure ring, framed."""
        biggest = max(ffi().sizeof(t) for t in ("struct ut_move_event", "struct ut_pin_event",
                                                "struct ut_repeat_event"))
        return (lib().BPF_RINGBUF_HDR_SZ + biggest + 7) & ~7

    def _successes(self) -> SuccessBatch | None:
        """Everything in the success ring."""
        view, count = self.rings[SUCCESS_RING].drain()
        return SuccessBatch(bytes(view), count) if count else None

    def _in_time_order(self, records: list, successes: SuccessBatch | None) -> list:
        """One poll's records sorted by time, the successes cut into batches
        between them (or, batch_successes off, one TracedMove each).  The
        two rings are drained one after the other: in the order read, a
        success would follow failures that came after it."""
        records.sort(key=item_time)
        if successes is None:
            return records
        parts = successes.split_at([item_time(r) for r in records])
        out = []
        for part, record in zip(parts, records + [None]):
            if part.count:
                out += [part] if self.batch_successes else \
                    [TracedMove(m, diagnose(m, None, self.pins), None) for m in part.moves()]
            if record is not None:
                out.append(record)
        return out

    def limit_run_links(self, threads: int):
        """Remember the latest failure (a diagnosed move: KBs) of at most
        `threads` threads, to link repeats to it: a thread that failed, then
        only succeeded, stays until the limit (a tracer left running)."""
        self._run_first.limit = threads

    def _remember_failure(self, traced: TracedMove):
        self._run_first.remember(traced.event.tid, traced.event.ts_ns, traced)

    def _link(self, repeat: RepeatEvent) -> TracedRepeat:
        """The repeat with the failure it repeats (a run's repeat is sent
        before the failure that follows it, on the same ring buffer)."""
        return TracedRepeat(repeat, self._run_first.of(repeat.tid, repeat.first_ts_ns))

    def open_runs(self) -> list[TracedRepeat]:
        """The runs still open in the kernel (failures counted, not yet sent):
        read at the end of tracing so that no repeat goes unrecorded.  A run
        keeps counting if its thread fails on; the kernel's aggregates read
        after this one then count more than the records (see report)."""
        if self.bpf is None or not self.config.coalesce_ms:
            return []
        out = []
        for _, run in self.bpf[b"runs"].items():
            if run.rep.count:
                repeat = decode_repeat(_struct_bytes(run.rep))
                out.append(self._link(RepeatEvent(**{**vars(repeat),
                                                     "closed_by": lib().UT_RUN_CLOSED_END})))
        return sorted(out, key=lambda r: r.repeat.first_ts_ns)

    def _exited_runs(self) -> list[TracedRepeat]:
        """The open runs of threads that have exited (no /proc/PID/task/TID),
        taken out of the kernel's `runs` map every EXITED_RUNS_CHECK_S and
        sent as closed (`end`).  An exited thread updates its run no more; a
        new thread given its tid closes a leftover run itself (run_account),
        so at worst, in the instant between our read and delete, one run
        could be counted twice.

        A run's first failure was sent before its thread exited, but may
        not have been read yet (a backlog in `events`, or the overflow map
        when it was full): each run waits until a drain that began after it
        was taken emptied `events`, and until the overflow periods of its
        time were read, so that its repeat follows the failure it repeats."""
        if not self.close_exited_runs or self.bpf is None or not self.config.coalesce_ms:
            return []
        now = time.monotonic()
        if now >= self._next_exited_check:
            self._next_exited_check = now + EXITED_RUNS_CHECK_S
            self._exited_pending += [(now, run) for run in self._take_exited_runs()]
        settled = now - 4 * self.config.coalesce_ms / 1000    # see _overflowed's last_closed
        ready = [run for taken, run in self._exited_pending
                 if taken < self._failures_empty_at and taken <= settled]
        if ready:
            self._exited_pending = self._exited_pending[len(ready):]   # oldest first
        linked = [self._link(run) for run in ready]
        for run in ready:
            self._run_first.forget(run.tid)         # the thread is gone
        return linked

    def _take_exited_runs(self) -> list[RepeatEvent]:
        table, out = self.bpf[b"runs"], []
        for key in list(table.keys()):
            try:
                run = table[key]
            except KeyError:
                continue
            if os.path.exists(f"/proc/{run.rep.pid}/task/{key.value}"):
                continue
            try:
                del table[key]
            except KeyError:
                continue
            if not run.rep.count:
                self._run_first.forget(key.value)      # nothing will need the link
            else:
                repeat = decode_repeat(_struct_bytes(run.rep))
                out.append(RepeatEvent(**{**vars(repeat), "closed_by": lib().UT_RUN_CLOSED_END}))
        return out

    def finish(self) -> list[TracedMove | PinEvent | TracedRepeat]:
        """What is left when tracing ends: everything queued, then the runs
        still open and the failures counted while the ring buffer was full."""
        items = self.drain()
        exited, self._exited_pending = self._exited_pending, []
        return items + [self._link(run) for _, run in exited] + self.open_runs() + \
            self._overflowed(everything=True)

    def _overflowed(self, everything: bool = False) -> list[TracedMove | TracedRepeat]:
        """The failures `events` had no room for (struct ut_overflow), each
        (thread, shape, period) as its first failure, diagnosed, and a
        repeat count.  Only periods that are over (the BPF program adds to
        the current one), looked at every OVERFLOW_CHECK_S; `everything`
        at the end."""
        if self.bpf is None or not self.config.coalesce_ms:
            return []
        now = time.monotonic()
        if not everything and now < self._next_overflow_check:
            return []
        self._next_overflow_check = now + OVERFLOW_CHECK_S
        period_ns = self.config.coalesce_ms * 1_000_000
        last_closed = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // period_ns - 2
        table, out = self.bpf[b"overflow"], []
        for key in list(table.keys()):
            if not everything and key.period > last_closed:
                continue
            try:
                value = table[key]
                del table[key]
            except KeyError:
                continue
            first = self._diagnose(decode(_struct_bytes(value.first)))
            out.append(first)
            if value.rep.count:
                out.append(TracedRepeat(decode_repeat(_struct_bytes(value.rep)), first))
        return out

    def _diagnose(self, move: MoveEvent) -> TracedMove:
        en = None
        # The kernel's state at exit explains a page-state failure by itself,
        # and its VMAs at exit an EINVAL; /proc is read only for what they
        # did not cover (reader off, or a VMA walk that did not find both).
        if move.failed and self.enrich_failures and \
                (not move.state_at_exit or move.ret == -errno.EINVAL) and \
                not (move.ret == -errno.EINVAL and vma_evidence.both_found(move)):
            offset = max(move.move, 0) if move.partial else 0
            # Only EINVAL is explained by VMA flags (vma_rules.invalid_from_vmas);
            # other failures need the VMAs' extent and the pages, not smaps.
            en = enrich(move.pid, move.src + offset, move.dst + offset,
                        vm_flags=move.ret == -errno.EINVAL)
        stack = self.stacks.resolve(move.stack_ids, move.pid) \
            if self.stacks is not None and move.stack_ids is not None else None
        return TracedMove(move, diagnose(move, en, self.pins, self.ksm_lookup), en, stack)

    def poll(self, timeout_ms: int = 100) -> list[TracedMove | PinEvent | TracedRepeat |
                                                  SuccessBatch]:
        """Wait up to timeout_ms for records; return what was decoded, in
        time order: failures, pins and repeats (at most POLL_BATCH: call
        again while they keep coming) and the successes waiting.

        Successes are mostly sent without waking us (bpf/uffdtrace.bpf.c):
        the wait also ends on records already in the buffers."""
        self.rings.wait(timeout_ms)
        return self._in_time_order(self._failures() + self._overflowed() + self._exited_runs(),
                                   self._successes())

    def drain(self) -> list[TracedMove | PinEvent]:
        """Everything queued when called, without waiting.  Bounded by what
        the buffers can hold, so it ends even while moves keep coming."""
        limit = self._buffer_capacity_records()
        items = []
        while len(items) < limit:
            more = self.poll(0)
            if not more:
                break
            items.extend(more)
        return items

    def _buffer_capacity_records(self) -> int:
        """The most records both ring buffers can hold at once."""
        page = os.sysconf("SC_PAGE_SIZE")
        smallest = min(ffi().sizeof("struct ut_pin_event"), ffi().sizeof("struct ut_move_event"))
        pages = self.config.ringbuf_pages + self.config.success_ringbuf_pages
        return pages * page // (smallest + lib().BPF_RINGBUF_HDR_SZ)

    def ksm_lookup(self, pfn: int) -> dict | None:
        table = self.bpf[b"ksm_merges"]
        try:
            merge = table[table.Key(pfn)]
        except KeyError:
            return None
        return {"merged_ts_ns": merge.ts_ns, "ksmd_pid": merge.pid}

    def counters(self) -> dict[str, int]:
        """In-kernel counters, exact whatever the sampling (stat_names()),
        and the program runs the kernel skipped (recursion_misses: no map
        counts those, the kernel does per program)."""
        values = _array_totals(self.bpf[b"stats"])
        counters = {name: values.get(i, 0) for i, name in enumerate(stat_names())}
        counters["recursion_misses"] = bpfstats.recursion_misses(bpfstats.program_fds(self.bpf))
        return counters

    def aggregates(self) -> tuple[dict[str, int], list[dict], dict[str, dict[int, int]]]:
        """counters(), outcomes() and histograms() for a snapshot.  The last
        two are read again only when a move ended since they were: every
        move's end adds its latency to `latency_ns`, and nothing else
        changes them (but forget_processes).  Each read walks its maps a
        syscall per key (130 histogram buckets): most of an idle recorder's
        CPU, which a one-vCPU guest takes from whatever else runs."""
        counters = self.counters()
        ended = counters["latency_ns"]
        if self._aggregates_read is None or self._aggregates_read[0] != ended:
            self._aggregates_read = (ended, self.outcomes(), self.histograms())
        _, outcomes, histograms = self._aggregates_read
        return counters, outcomes, histograms

    @staticmethod
    def drops(counters: dict[str, int]) -> int:
        """Moves and pins lost to a full ring buffer (records.drops)."""
        return records.drops(counters)

    def outcomes(self) -> list[dict]:
        """In-kernel per-process errno-level outcome counts."""
        rows = []
        for k, v in self.bpf[b"outcomes"].items():
            rows.append({"pid": k.pid, "errno": errno_name(k.err) if k.err else None,
                         "partial": bool(k.partial), "count": _total(v)})
        return sorted(rows, key=lambda r: (r["pid"], r["errno"] or ""))

    def exited_processes(self) -> set[int]:
        """The processes in the kernel's outcome counts, or with pins
        remembered, that have exited."""
        pids = {k.pid for k in self.bpf[b"outcomes"].keys()} | self.pins.pids()
        return {pid for pid in pids if not os.path.exists(f"/proc/{pid}")}

    def forget_processes(self, pids: set[int]):
        """Take processes that exited out of the kernel's outcome counts and
        the pins remembered: the map holds 10,240 keys, and a tracer left
        running for days sees more processes than that.  Only for processes
        that had exited before their counts were last read (outcomes()), so
        that none is lost."""
        self.pins.forget(pids)
        self._aggregates_read = None
        table = self.bpf[b"outcomes"]
        for key in list(table.keys()):
            if key.pid in pids:
                try:
                    del table[key]
                except KeyError:
                    pass

    def histograms(self) -> dict[str, dict[int, int]]:
        """log2 buckets: bucket b counts values in [2**(b-1), 2**b); bucket 0
        counts the value 0 (size_log2: moves of len 0)."""
        out = {}
        for name in ("latency_log2", "size_log2"):
            counts = _array_totals(self.bpf[name.encode()])
            out[name] = {b: n for b, n in counts.items() if n}
        return out

    def close(self):
        if self.stacks is not None:
            self.stacks.close()
            self.stacks = None
        if self.rings is not None:
            self.rings.close()
            self.rings = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

