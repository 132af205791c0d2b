"""The kernel tier, live, inside a guest kernel that allows fentry/kprobes.

Runs only in the QEMU guest (tests/vm/conftest.py).  Every workload scenario
is traced with the move-path hooks attached and must be diagnosed with the
right cause at evidence level `observed`; the pinner must come from the GUP
hooks, a KSM move must show the KSM folio, a partial move its real errno,
and TLB flushes per move must match what this kernel does (one per page
where moves go page by page, batched where move_pages_ptes exists).
"""
from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import (SCENARIO_CAUSES, VMA_SCENARIOS, assert_move_path,
                           evidence_of, expected_cause, paired, scenario_path, seen_calls,
                           traced_workload, uffdtrace)
from uffdtrace import records
from uffdtrace.kernel import headers

# What a hook on them would cost every page fault, fork or munmap on the
# machine: the kernel tier must attach none (the state at exit replaces them).
MACHINE_WIDE_PATHS = ("vm_normal_folio", "__pte_offset_map", "___pte_offset_map",
                      "lock_vma_under_rcu", "__anon_vma_prepare", "flush_tlb_mm_range",
                      "handle_mm_fault", "do_anonymous_page", "copy_process", "dup_mmap",
                      "find_vma", "do_exit")

def _kallsyms_has(name: str) -> bool:
    from uffdtrace.kernel import kallsyms
    return kallsyms.find_functions([name])[name] is not None


def _start(kernel_hooks: str):
    if os.geteuid() != 0:
        pytest.skip("live tracing needs root")
    from uffdtrace.session import Session
    s = Session(tier="kernel", kernel_hooks=kernel_hooks)
    s.start()   # raises (fails the test) if the kernel tier cannot be had
    return s


@contextmanager
def _compiled_against_other_headers(scratch: Path):
    """On a guest not running 6.12: while inside, /lib/modules/<release>
    holds this kernel's modules with the Debian 6.12 headers as build and
    source, so bcc compiles against those (kernel structures are read at
    this kernel's BTF offsets, so another kernel's headers must do).
    Yields the headers bcc will find, or None (6.12: they are its own; or
    none unpacked) leaving the modules as they are."""
    release = os.uname().release
    found = None if release.startswith("6.12") else _fallback_headers()
    if found is None:
        yield None
        return
    build, source = found
    moddir = Path(f"/lib/modules/{release}")
    original = os.readlink(moddir)
    for entry in moddir.resolve().iterdir():
        if entry.name not in ("build", "source"):
            (scratch / entry.name).symlink_to(entry)
    (scratch / "build").symlink_to(build)
    (scratch / "source").symlink_to(source)
    moddir.unlink()
    moddir.symlink_to(scratch)
    try:
        yield headers.find(release)
    finally:
        moddir.unlink()
        moddir.symlink_to(original)


@pytest.fixture(scope="module")
def compiled_with() -> dict:
    """{"headers": the headers the module's session was compiled against,
    when they were another kernel's} -- filled by `session`."""
    return {}


@pytest.fixture(scope="module")
def session(compiled_with, tmp_path_factory):
    # Compiled against the 6.12 headers on the 7.3 guest: every test of this
    # file then checks the tier with another kernel's headers, at no extra
    # compile (about 3 min under TCG); the user-path record
    # (tests/vm/guest/recording.py) compiles against this kernel's own.
    with _compiled_against_other_headers(tmp_path_factory.mktemp("modules")) as other:
        compiled_with["headers"] = other
        s = _start("fentry")
    yield s
    s.close()


# Every BPF compile costs about 3 minutes under TCG, and the 7.3 guest's suite
# is CI's longest path (1,463 s of its 1,800 s bound with this compile in
# it): kprobe mode is compiled and traced in the 6.12 guest; the host loads
# every kprobe program through the verifier (tests/live/test_kernel_tier_program.py).
KPROBE_MODE_GUEST = "6.12"


@pytest.fixture(scope="module")
def kprobe_session():
    if not os.uname().release.startswith(KPROBE_MODE_GUEST):
        pytest.skip(f"kprobe mode is traced in the {KPROBE_MODE_GUEST} guest only "
                    "(one BPF compile less on this guest's CI path)")
    s = _start("kprobe")
    yield s
    s.close()


def test_the_kernel_tier_attaches_what_this_kernel_has(session):
    plan = session.kernel_plan
    assert session.tier == "kernel"
    for name in ("pin_user_pages_fast", "move_pages_huge_pmd", "userfaultfd_ioctl"):
        assert name in plan.hooks, plan.missing.get(name)
    # the step hook follows the kernel: the batched one where it exists
    for step in ("move_pages_ptes", "move_pages_pte", "move_pages"):
        assert (step in plan.hooks) == _kallsyms_has(step), plan.missing.get(step)
    kind = plan.mechanism
    assert f"{kind}:userfaultfd_ioctl" in session.probes


def test_nothing_attached_on_the_page_fault_or_fork_path(session):
    """What is attached, listed: move-path functions, GUP pins, and the
    cost-statistics tracepoints; no syscall tracepoint (the ioctl handler is
    hooked) and nothing every page fault, fork or exit reaches (the fork
    tracepoint only while a command's children are followed: not here)."""
    attached = session.probes
    print("attached:", ", ".join(attached))
    functions = {p.split(":", 1)[1] for p in attached if p.startswith(("fentry:", "kprobe:"))}
    assert not functions & set(MACHINE_WIDE_PATHS), functions
    assert not [p for p in attached if p.startswith(("syscalls:", "sched:"))], attached
    assert session.state_reader.usable, session.state_reader.reason


def _seen(session, out, moves) -> list[dict]:
    """The workload's calls the session saw; any other must be among the
    losses it counted so far (the module's session: every run so far)."""
    return seen_calls(out["calls"], moves, records.events_lost(session.counters()))


def _assert_observed(session, out, moves):
    """Each traced move is the call the workload made, diagnosed with the
    cause its scenario produces, at the evidence level the kernel tier has
    for it (observed: the VMAs of EINVAL too, read at exit)."""
    calls = _seen(session, out, moves)
    assert len(moves) == len(calls) > 0
    for call, m in paired(calls, moves):
        e, d = m.event, m.diagnosis
        assert e.kernel_tier
        assert (e.dst, e.src, e.len, e.errno, e.move) == \
            (call["dst"], call["src"], call["len"], call["errno"], call["move"])
        assert (d.cause, d.underlying) == expected_cause(call["scenario"], e.errno), (call, d, e)
        assert d.evidence == evidence_of(call["scenario"], "kernel", e.errno), (call, d, e)


def test_every_scenario_is_observed(session):
    # `mixed` cycles through every scenario but OUTSIDE_MIXED (tested below), one
    # process for all: python start-up is slow under TCG.  --hold 0: the
    # memory is unmapped right after each round, and every page-state cause
    # must still be observed (the state is read when the move returns).
    from uffdtrace.workload.scenarios import MIXED_CYCLE, OUTSIDE_MIXED
    out, moves = traced_workload(session, "-s", "mixed", "--iterations", "1",
                                 "--rate", "100000", "--hold", "0")
    assert {c["scenario"] for c in out["calls"]} == set(MIXED_CYCLE)
    assert set(MIXED_CYCLE) | set(OUTSIDE_MIXED) == set(SCENARIO_CAUSES)
    page_state = [(c, m) for c, m in paired(_seen(session, out, moves), moves)
                  if c["scenario"] not in VMA_SCENARIOS]
    _assert_observed(session, {"calls": [c for c, _ in page_state]}, [m for _, m in page_state])
    # questions 6 and 7: each success counted on its scenario's path
    facts = {f["scenario"]: f for f in out["setup"]}
    splits = "split_folio_to_list" in session.kernel_plan.hooks
    paths = [(c, m) for c, m in page_state if not m.event.failed]
    for call, m in paths:
        assert_move_path(call["scenario"], facts.get(call["scenario"], {}),
                         m.to_json(), splits)
    taken = {scenario_path(c["scenario"], facts.get(c["scenario"], {})) for c, _ in paths}
    print("paths checked:", sorted(p for p in taken if p))
    assert {"pte", "pmd", "src_hole"} <= taken


def test_vma_causes_are_observed_at_exit(session):
    # --hold 0: the VMAs are read in the kernel's VMA tree when the move returns
    for scenario in sorted(VMA_SCENARIOS):
        out, moves = traced_workload(session, "-s", scenario, "--hold", "0")
        _assert_observed(session, out, moves)
        assert all(m.event.vmas_at_exit and m.enrichment is None for m in moves)


def test_kprobe_hooks_observe_the_same(kprobe_session):
    for scenario in ("pinned", "partial", "dst_populated"):
        out, moves = traced_workload(kprobe_session, "-s", scenario, "--hold", "0")
        _assert_observed(kprobe_session, out, moves)
        assert all(m.event.kflags for m in moves)


def test_pinned_names_the_pinner_from_the_gup_hooks(session):
    out, (m,) = traced_workload(session, "-s", "pinned", "--hold", "0")
    pin = out["setup"][0]["pinned"]
    e, d = m.event, m.diagnosis
    assert d.fail_addr == e.src + e.move == pin["addr"]
    assert d.culprit.source == "GUP hook"
    assert d.culprit.pid == out["pid"] == pin["pid"]
    assert "pin_user_pages" in d.culprit.method and d.culprit.longterm
    from uffdtrace.native import lib
    assert e.folio_flags & lib().UT_FOLIO_PINNED_SEEN
    assert e.src_state.addr == pin["addr"] and e.src_state.has("MAYBE_DMA_PINNED")
    if e.steps:   # a step hook exists on this kernel: the real errno
        assert e.step_err == -errno.EBUSY and e.fail_addr == pin["addr"]


def test_ksm_move_shows_the_ksm_folio(session):
    # Measured: Debian's 6.12 moves a KSM page the workload saw merged (no
    # EBUSY), 7.3 refuses it.  Whatever this kernel does, the trace must say
    # the same, and a refused move must show the KSM folio.
    out, moves = traced_workload(session, "-s", "ksm", "--hold", "0", expect_outcomes=False)
    calls = out["calls"]
    assert len(moves) == len(calls) > 0
    for call, m in zip(calls, sorted(moves, key=lambda m: m.event.ts_ns)):
        assert m.event.errno == call["errno"]
    refused = [m for m in moves if m.event.failed]
    for m in moves:
        assert m.diagnosis.evidence == "observed"
        assert m.diagnosis.cause == ("page_ksm" if m.event.failed else "ok"), m
    for m in refused:
        assert m.event.errno == "EBUSY"
        assert m.event.src_state.has("KSM") and not m.event.src_state.has("ANON_EXCLUSIVE")
        assert m.diagnosis.culprit.kind == "ksm"
    print(f"ksm: {len(refused)} of {len(moves)} moves of merged pages refused")


def test_partial_move_reports_the_real_errno_and_retries(session):
    out, (m,) = traced_workload(session, "-s", "partial", "--hold", "0")
    e = m.event
    assert e.errno == "EAGAIN" and e.move > 0
    assert "retries" in m.to_json() and e.retries >= 0
    if e.steps:   # move_pages_ptes / move_pages_pte hooked
        assert e.step_err == -errno.EEXIST
        assert e.fail_addr == e.src + e.move
    else:         # 6.12: no step function; the dst page where it stopped, at exit
        assert e.dst_state.addr == e.dst + e.move and e.dst_state.where_name == "PTE_PRESENT"
        assert e.kernel_ret == e.move   # move_pages() itself returned the byte count


def _one_move_of(session, pages: int):
    """One UFFDIO_MOVE of `pages` pages made here, and its traced event."""
    from uffdtrace.native import PAGE_SIZE, Mapping, Uffd, hpage_size, lib
    session.drain()
    length = pages * PAGE_SIZE
    # 2 MiB aligned, so no PTE batch is cut short by a PMD edge
    with Uffd() as uffd, Mapping(length, align=hpage_size()) as src, \
            Mapping(length, align=hpage_size()) as dst:
        for m in (src, dst):
            m.madvise(lib().MADV_NOHUGEPAGE)
        src.fill()
        uffd.register(dst)
        call = uffd.move(dst.addr, src.addr, length)
    assert call.ret == 0, call
    items = session.poll(200) + session.drain()
    (m,) = [i for i in items if hasattr(i, "event") and i.event.pid == os.getpid()]
    return m.event


def test_tlb_flushes_per_move_match_the_kernel(session):
    """From the tlb:tlb_flush tracepoint (cost statistics), on this 1-CPU
    guest: one local flush per page where moves go page by page, one for the
    whole batch where move_pages_ptes batches them (6.18+)."""
    pages = 64
    e = _one_move_of(session, pages)
    assert e.len == pages * 4096 and e.cost_stats
    if _kallsyms_has("move_pages_ptes"):
        assert e.tlb_flushes == 1, e
    else:
        assert e.tlb_flushes == pages, e


def test_doctor_reports_the_kernel_tier():
    proc = uffdtrace("doctor", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    caps = json.loads(proc.stdout)
    assert caps["tier"] == "kernel", caps["tier_reason"]
    assert "pin_user_pages_fast" in caps["kernel_tier"]["hooks"]
    assert caps["state_at_exit"].startswith("on:"), caps["state_at_exit"]


def test_pages_rewritten_after_each_failure_are_still_observed(session):
    """A program that changes its pages right after each failed move (as a
    compacting GC does): the state read when the move returned still
    explains every page-state failure, and no diagnosis names a cause its
    errno rules out."""
    from uffdtrace.taxonomy import contradiction
    out, moves = traced_workload(session, "-s", "mixed", "--iterations", "1", "--rate",
                                 "100000", "--rewrite", "--hold", "0")
    failed = [m for m in moves if m.event.failed]
    assert failed and len(moves) == len(_seen(session, out, moves))
    for m in failed:
        e, d = m.event, m.diagnosis
        assert contradiction(d.cause, d.underlying, e.errno, e.partial) is None, (e.errno, d)
        if e.errno != "EINVAL":
            assert d.evidence == "observed", (e.errno, d)


def _fallback_headers() -> tuple[Path, Path] | None:
    """The Debian 6.12 headers scripts/setup.sh unpacks for kernels Debian
    has none for (build, source), as the host shares them."""
    for build in sorted(Path("/var/cache/uffdtrace/headers").glob(
            "6.12*/usr/src/linux-headers-*-amd64")):
        source = build.with_name(build.name.removesuffix("-amd64") + "-common")
        if source.is_dir():
            return build, source
    return None


def test_the_kernel_tier_runs_with_another_kernels_headers(session, compiled_with):
    """Kernel structures are read at this kernel's BTF offsets: bcc compiling
    against the 6.12 headers is enough on another kernel, with observed
    diagnoses (before, the tier refused to run without matching headers).
    The module's session was compiled so on this guest: every test here
    checks it; this one says so and traces a pinned move."""
    release = os.uname().release
    if release.startswith("6.12"):
        pytest.skip("this kernel is 6.12: the fallback headers are its own")
    other = compiled_with["headers"]
    if other is None:
        pytest.skip("no 6.12 fallback headers under /var/cache/uffdtrace/headers")
    print("compiled against:", other)
    assert other.release.startswith("6.12") and not other.matches_running, other
    assert headers.find(release).matches_running     # the modules are back as they were
    out, (m,) = traced_workload(session, "-s", "pinned", "--hold", "0")
    d = m.diagnosis
    assert (d.cause, d.underlying, d.evidence) == ("partial", "page_pinned", "observed")
    assert d.culprit.source == "GUP hook"


# -- contended (issue 16): threads moving pages of one huge page at once ---------------

CONTENDED_ROUNDS, CONTENDED_BATCHES = 20, 3


def test_contended_movers_retry_inside_the_kernel(session):
    """4 threads moving 4 KiB pages of one THP at once: the movers that
    find its folio locked (another one is splitting it) retry inside the
    kernel, which the step hook counts (move_pages_ptes; 6.12 inlines
    move_pages_pte: there only the split inside a move is seen).  Every
    page moves exactly once; a move answered EEXIST after it moved its page
    (Linux 6.18) is moved_then_eexist, observed.  A move not traced must be
    among the losses the tracer counted: successes dropped under TCG (their
    ring buffer fills), program runs the kernel skipped (recursion misses)."""
    hooks = session.kernel_plan.hooks
    step_hooked = "move_pages_ptes" in hooks or "move_pages_pte" in hooks
    seen = []
    for _ in range(CONTENDED_BATCHES):
        out, moves = traced_workload(session, "-s", "contended", "--pages", "64",
                                     "--iterations", str(CONTENDED_ROUNDS), "--hold", "0")
        assert out["problems"] == []        # every page at dst, none left at src
        # a move not traced is one the tracer counted as lost: 1 vCPU lets the
        # movers preempt each other inside the programs (recursion misses)
        pairs = [(c, m) for c, m in paired(_seen(session, out, moves), moves)]
        assert len(pairs) == len(moves)     # every traced move is a call of the workload
        for call, m in pairs:
            e, d = m.event, m.diagnosis
            assert (e.errno, e.move) == (call["errno"], call["move"])
            assert (d.cause, d.underlying) == expected_cause("contended", e.errno), (call, d)
            assert d.evidence == "observed", (call, d)
            if e.failed:                    # 6.18: moved, then its rerun step's EEXIST
                assert e.retries > 0 and e.step_err == -errno.EEXIST, e
        seen += [m.event for _, m in pairs]
        if sum(e.retries for e in seen) if step_hooked else sum(e.thp_splits for e in seen):
            break
    retried = [e for e in seen if e.retries]
    print(f"contended: {len(seen)} moves traced, {len(retried)} retried inside the kernel "
          f"({sum(e.retries for e in seen)} retries), {sum(e.thp_splits for e in seen)} "
          f"folio splits, {sum(e.failed for e in seen)} failed")
    if step_hooked:
        assert retried, "no contended move retried inside the kernel"
        # a retry is a step that returned -EAGAIN, then the step again --
        # unless the kernel skipped the exit run of that last step (the
        # movers preempt each other inside the programs on 1 vCPU): each move
        # short of a step is one of the runs it counted as skipped
        short = [e for e in retried if e.steps <= e.retries]
        assert len(short) <= session.counters()["recursion_misses"], short
    elif "split_folio_to_list" in hooks:
        assert sum(e.thp_splits for e in seen) > 0

# -- swap and unsplittable THP (issue 16): outside `mixed`, one run each ------------

def _swap_or_skip():
    """Skip, saying why, where this guest cannot have a zram swap device."""
    from uffdtrace.errors import UserError
    from uffdtrace.workload.zramswap import ZramSwap
    try:
        with ZramSwap():
            pass
    except (UserError, OSError) as exc:
        print(f"no zram swap in this guest: {exc}")
        pytest.skip(f"no zram swap in this guest: {exc}")


@pytest.mark.parametrize("scenario", ["swapped", "swap_shared"])
def test_swap_scenarios_are_observed(session, scenario):
    # move_pages_pte(s)'s !pte_present() path is the same in 6.12 and 7.3:
    # an exclusive swap entry moves (move_swap_pte), a !pte_swp_exclusive
    # one is refused with -EBUSY before anything else is looked at
    _swap_or_skip()
    out, moves = traced_workload(session, "-s", scenario, "--hold", "0")
    _assert_observed(session, out, moves)
    for m in moves:
        if m.event.failed:
            assert m.event.src_state.where_name == "PTE_SWAP"
            assert not m.event.src_state.has("SWP_EXCLUSIVE")
        else:   # question 6: moved as a swap entry
            assert_move_path(scenario, out["setup"][0], m.to_json(), False)


def test_thp_pinned_is_what_this_kernel_does(session):
    # Part of a pinned THP: the folio split fails.  6.18 answers EBUSY at
    # once; a kernel whose split_folio() answers -EAGAIN for extra pins would
    # retry until the mover is killed (EINTR).  The scenario probes which;
    # the trace must say the same.
    out, moves = traced_workload(session, "-s", "thp_pinned", "--hold", "0")
    (call,) = out["calls"]
    (m,) = moves
    killed = out["setup"][0]["killed_after_s"] is not None
    print(f"thp_pinned: {call['errno']}" + (" (mover killed: the kernel kept retrying)"
                                            if killed else ""))
    assert m.event.errno == call["errno"]
    if killed:
        assert call["errno"] == "EINTR" and m.diagnosis.cause == "interrupted"
        assert m.event.retries > 0 or m.event.split_err
    else:
        assert call["errno"] == "EBUSY"
        _assert_observed(session, out, moves)
