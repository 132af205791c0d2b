"""`uffdtrace check` against the kernel: for every workload scenario the
range is checked right before the workload's move, and the prediction
(errno, `move`, cause) must be what the kernel then returns.  Cases the
workload has no scenario for (huge pages split or moved whole, the zero
page, swap entries, a hole with no page table) are built here and moved for
real the same way.  The census is checked against counts known from how
the memory was made (and smaps, read independently)."""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest

from tests.helpers import ROOT, SCENARIO_CAUSES
from uffdtrace.errors import UserError
from uffdtrace.census import census
from uffdtrace.movecheck import check
from uffdtrace.native import PAGE_SIZE, ForkHolder, IoUringPin, Mapping, Uffd, hpage_size, lib
from uffdtrace.workload.runner import run_workload
from uffdtrace.workload.scenarios import SCENARIOS, ksm_merged

HUGE = hpage_size()
# contended's calls are made by threads at once: no hook runs right before
# each, and what each answers depends on the others' timing, which nothing
# looked at before the moves can predict
SCENARIO_NAMES = [name for name in SCENARIOS if name != "contended"]


def _ksm_ok(name):
    if name == "ksm" and os.geteuid() != 0:
        pytest.skip("the ksm scenario needs root to drive ksmd")


def assert_predicted(prediction, call, expected_cause=None):
    """The prediction is the kernel's answer: errno, `move`, cause."""
    assert prediction.errno == call.errno, (prediction, call)
    want_move = 0 if prediction.move is None else prediction.move  # untouched: stays 0
    assert want_move == call.move, (prediction, call)
    if expected_cause is not None:
        code, underlying = expected_cause
        assert (prediction.cause, prediction.underlying) == (code, underlying), prediction


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_check_predicts_each_scenario_in_process(name):
    """The Python API, called by the workload's before_move hook: the exact
    range, right before the ioctl, in the same process."""
    _ksm_ok(name)
    planned = []

    def hook(pm):
        planned.append((pm, check(pm.pid, pm.src, pm.len, dst=pm.dst, mode=pm.mode,
                                  caller=-1 if pm.cross_mm else None)))

    result = run_workload(name, before_move=hook)
    assert list(result.problems) == []
    calls = [c for _, c in result.calls]
    assert len(calls) == len(planned) > 0
    for (pm, checked), call in zip(planned, calls):
        assert (pm.src, pm.dst, pm.len) == (call.src, call.dst, call.len)
        assert_predicted(checked.prediction, call, SCENARIO_CAUSES[name])


def paused_workload(name: str):
    """`workload -s NAME --pause-before-move`: yields each planned move
    (the workload waits), then the workload's JSON."""
    proc = subprocess.Popen([sys.executable, "-m", "uffdtrace", "workload", "-s", name,
                             "--pause-before-move", "--json"], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    planned = []
    try:
        while True:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("before-move "):
                planned.append(json.loads(line.split(" ", 1)[1]))
                yield planned[-1]
                proc.stdin.write("\n")
                proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        yield json.loads(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_cli_check_predicts_each_scenario_of_a_held_workload(name):
    """The CLI on another process: the workload is held before each move
    while `uffdtrace check -p PID ... --json` reads its /proc."""
    _ksm_ok(name)
    predictions = []
    for item in paused_workload(name):
        if "calls" in item:
            out = item
            break
        args = ["-p", str(item["pid"]), hex(item["src"]), str(item["len"]), "--dst",
                hex(item["dst"]), "--mode", str(item["mode"])]
        if item["cross_mm"]:
            args += ["--caller", "1"]
        proc = subprocess.run([sys.executable, "-m", "uffdtrace", "check", *args, "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        checked = json.loads(proc.stdout)
        assert proc.returncode == (0 if checked["prediction"]["errno"] is None else 1)
        predictions.append(checked)
    assert len(predictions) == len(out["calls"]) > 0
    waiters = iter(s["pending_events"] for s in out["setup"] if "pending_events" in s)
    waiters = next(waiters, [])
    for n, (checked, call) in enumerate(zip(predictions, out["calls"])):
        p = checked["prediction"]
        assert p["errno"] == call["errno"], (p, call)
        assert (0 if p["move"] is None else p["move"]) == call["move"], (p, call)
        assert (p["cause"], p["underlying"]) == SCENARIO_CAUSES[name], p
        # runs cover the range, page by page
        assert sum(r["pages"] for r in checked["runs"]) == max(1, -(-call["len"] // PAGE_SIZE))
        if name == "mmap_changing":
            # the thread asleep until its event is read, and the event (its stack)
            waiter = waiters[n]
            (run,) = checked["runs"]
            assert f"tid {waiter['tid']} " in run["culprit"], run
            assert f"UFFD_EVENT_{waiter['event'].upper()}" in run["why"], run
            assert run["evidence"] == "inferred", run


# --- cases no scenario makes ------------------------------------------------------

def _move_and_compare(uffd, dst, src, length, mode=0, kinds=None):
    checked = check(os.getpid(), src, length, dst=dst, mode=mode)
    if kinds is not None:
        assert [(r.verdict.kind, r.pages) for r in checked.runs] == kinds, checked.runs
    call = uffd.move(dst, src, length, mode)
    assert_predicted(checked.prediction, call)
    return checked, call


def _huge_pair(stack, uffd):
    src = stack.enter_context(Mapping(2 * HUGE, align=HUGE))
    dst = stack.enter_context(Mapping(2 * HUGE, align=HUGE))
    for m in (src, dst):
        m.madvise(lib().MADV_HUGEPAGE)
    src.fill()
    uffd.register(dst)
    return src, dst


def _need_thp(src):
    checked = check(os.getpid(), src.addr, HUGE)
    if checked.runs[0].verdict.kind not in ("movable_thp", "thp_split"):
        pytest.skip("no transparent huge page could be allocated")


def test_a_huge_page_moved_part_way_is_split_and_moves():
    with ExitStack() as stack, Uffd() as uffd:
        src, dst = _huge_pair(stack, uffd)
        _need_thp(src)
        checked, call = _move_and_compare(uffd, dst.addr, src.addr, HUGE // 2,
                                          kinds=[("thp_split", HUGE // 2 // PAGE_SIZE)])
        assert call.errno is None


def test_a_pinned_huge_page_fails_its_pmd_move():
    """io_uring pins the whole folio, whichever pages the buffer covers."""
    with ExitStack() as stack, Uffd() as uffd:
        src, dst = _huge_pair(stack, uffd)
        _need_thp(src)
        stack.enter_context(IoUringPin(src.addr + HUGE // 2, PAGE_SIZE))
        checked, call = _move_and_compare(uffd, dst.addr, src.addr, HUGE)
        assert call.errno == "EBUSY" and checked.runs[0].verdict.kind == "pinned"


def test_zero_pages_move():
    with ExitStack() as stack, Uffd() as uffd:
        src = stack.enter_context(Mapping(4 * PAGE_SIZE))
        dst = stack.enter_context(Mapping(4 * PAGE_SIZE))
        src.madvise(lib().MADV_NOHUGEPAGE)
        for i in range(4):   # read faults map the shared zero page
            ctypes.string_at(src.page(i), 1)
        uffd.register(dst)
        if os.geteuid() != 0:
            pytest.skip("zero pages are told apart by their PFN (root)")
        _move_and_compare(uffd, dst.addr, src.addr, 4 * PAGE_SIZE,
                          kinds=[("zero_page", 4)])


def test_a_hole_with_no_page_table_is_enoent_before_a_populated_dst():
    with ExitStack() as stack, Uffd() as uffd:
        src = stack.enter_context(Mapping(HUGE, align=HUGE))
        dst = stack.enter_context(Mapping(4 * PAGE_SIZE))
        dst.fill()
        uffd.register(dst)
        checked, call = _move_and_compare(uffd, dst.addr, src.addr, 4 * PAGE_SIZE)
        assert call.errno == "ENOENT"
        # with holes allowed the dst check comes first: EEXIST
        _move_and_compare(uffd, dst.addr, src.addr, 4 * PAGE_SIZE,
                          mode=lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES,
                          kinds=[("dst_populated", 4)])


def test_source_side_only_and_user_errors():
    with Mapping(4 * PAGE_SIZE) as src:
        src.fill()
        checked = check(os.getpid(), src.addr, 4 * PAGE_SIZE)
        assert checked.prediction.errno is None and not checked.dst_given
        src.mprotect(lib().PROT_READ)
        assert check(os.getpid(), src.addr, PAGE_SIZE).prediction.cause == \
            "invalid_src_not_writable"
        with pytest.raises(UserError, match="not mapped"):
            check(os.getpid(), 4096, 4096)
    with pytest.raises(UserError, match="no process"):
        check(2 ** 22 + 12345, 4096, 4096)


# --- swap (zram) ------------------------------------------------------------------

@pytest.fixture
def swap():
    if os.geteuid() != 0:
        pytest.skip("a zram swap device needs root")
    from uffdtrace.workload.zramswap import ZramSwap
    try:
        with ZramSwap() as device:
            yield device
    except UserError as exc:
        pytest.skip(f"no zram swap device: {exc}")


def _paged_out(m, pages):
    m.madvise(lib().MADV_PAGEOUT, length=pages * PAGE_SIZE)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        kinds = [r.verdict.kind for r in check(os.getpid(), m.addr, pages * PAGE_SIZE).runs]
        if kinds == ["swapped"]:
            return
        time.sleep(0.02)
    pytest.skip("MADV_PAGEOUT did not swap the pages out")


def test_swap_entries_move_when_exclusive_and_not_after_fork(swap):
    with ExitStack() as stack, Uffd() as uffd:
        src = stack.enter_context(Mapping(4 * PAGE_SIZE))
        dst = stack.enter_context(Mapping(4 * PAGE_SIZE))
        src.madvise(lib().MADV_NOHUGEPAGE)
        src.fill()
        uffd.register(dst)
        _paged_out(src, 4)
        with ForkHolder():
            _move_and_compare(uffd, dst.addr, src.addr, 2 * PAGE_SIZE,
                              kinds=[("swap_shared", 2)])
        # the holder is gone but fork cleared the entries' exclusive bit:
        # page 2..3 were never touched since -- a blind spot for pagemap, so
        # only pages swapped out after the fork are checked
        src.fill(offset=2 * PAGE_SIZE, length=2 * PAGE_SIZE)
        src.madvise(lib().MADV_PAGEOUT, offset=2 * PAGE_SIZE, length=2 * PAGE_SIZE)
        time.sleep(0.1)
        _move_and_compare(uffd, dst.page(2), src.page(2), 2 * PAGE_SIZE)


def _shared_with_an_exited_child(kernel_view):
    with ExitStack() as stack, Uffd() as uffd:
        src = stack.enter_context(Mapping(PAGE_SIZE))
        dst = stack.enter_context(Mapping(PAGE_SIZE))
        src.fill()
        uffd.register(dst)
        with ForkHolder():
            pass
        checked = check(os.getpid(), src.addr, PAGE_SIZE, dst=dst.addr, kernel_view=kernel_view)
        assert_predicted(checked.prediction, uffd.move(dst.addr, src.addr, PAGE_SIZE))
        return checked


def test_kernel_view_sees_a_page_shared_with_an_exited_child():
    """pagemap reads it mapped once; the kernel still refuses it (not
    PageAnonExclusive until written): the BPF view sees that bit."""
    if os.geteuid() != 0:
        pytest.skip("the kernel view needs root (BPF)")
    checked = _shared_with_an_exited_child(kernel_view=True)
    (run,) = checked.runs
    assert (run.verdict.kind, run.verdict.evidence) == ("shared", "observed"), run
    assert "not PageAnonExclusive" in run.verdict.why


def test_kernel_view_sees_a_pin_no_proc_file_lists():
    """1,280 vmsplice references to one page: folio_maybe_dma_pinned() (the
    kernel cannot tell them from a pin) refuses the move; nothing in /proc
    lists them, the BPF view reads the refcount."""
    if os.geteuid() != 0:
        pytest.skip("the kernel view needs root (BPF)")
    libc = ctypes.CDLL(None, use_errno=True)
    iov = (ctypes.c_void_p * 2)()
    with ExitStack() as stack, Uffd() as uffd:
        src = stack.enter_context(Mapping(PAGE_SIZE))
        dst = stack.enter_context(Mapping(PAGE_SIZE))
        src.fill()
        uffd.register(dst)
        iov[0], iov[1] = src.addr, 1
        refs = 0
        while refs < 1100:
            r, w = os.pipe()
            stack.callback(os.close, r)
            stack.callback(os.close, w)
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
            while libc.vmsplice(w, iov, 1, os.SPLICE_F_NONBLOCK) > 0:
                refs += 1
        checked = check(os.getpid(), src.addr, PAGE_SIZE, dst=dst.addr, kernel_view=True)
        (run,) = checked.runs
        assert (run.verdict.kind, run.verdict.evidence) == ("pinned", "observed"), run
        assert "folio_maybe_dma_pinned" in run.verdict.why
        assert_predicted(checked.prediction, uffd.move(dst.addr, src.addr, PAGE_SIZE))
        # from /proc alone it looks movable
        assert check(os.getpid(), src.addr, PAGE_SIZE, dst=dst.addr,
                     kernel_view=False).prediction.errno is None


@pytest.mark.xfail(strict=True, reason="PG_anon_exclusive is not exported in /proc: a page "
                   "once shared with a child that has exited reads as mapped once (pagemap) "
                   "but the kernel still refuses it until it is written")
def test_blind_spot_of_proc_alone_shared_with_an_exited_child():
    _shared_with_an_exited_child(kernel_view=False)


# --- census -----------------------------------------------------------------------

def _smaps_of(addr):
    fields, found = {}, False
    with open(f"/proc/{os.getpid()}/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and not line.startswith(("VmFlags", " ")) and ":" not in head:
                found = int(head.split("-")[0], 16) == addr
            elif found and ":" in line:
                key, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    fields[key] = int(rest.split()[0]) * 1024
    return fields


def test_census_of_ksm_pinned_forked_and_thp_memory():
    if os.geteuid() != 0:
        pytest.skip("KSM and kpageflags need root")
    from uffdtrace.workload.ksm import KsmTuning
    from uffdtrace.workload.scenarios import KSM_MERGE_TIMEOUT_S
    L = lib()
    with ExitStack() as stack:
        stack.enter_context(KsmTuning())
        ksm = stack.enter_context(Mapping(16 * PAGE_SIZE))
        pinned = stack.enter_context(Mapping(32 * PAGE_SIZE))
        forked = stack.enter_context(Mapping(8 * PAGE_SIZE))
        thp = stack.enter_context(Mapping(HUGE, align=HUGE))
        plain = stack.enter_context(Mapping(24 * PAGE_SIZE))
        # distinct VmFlags keep the five areas five VMAs (plain: DONTFORK only)
        for m in (ksm, pinned, forked):
            m.madvise(L.MADV_NOHUGEPAGE)
        thp.madvise(L.MADV_HUGEPAGE)
        ksm.madvise(L.MADV_MERGEABLE)
        ksm.fill(distinct=False)
        for m in (pinned, forked, thp, plain):
            m.fill()
        stack.enter_context(IoUringPin(pinned.page(8), 16 * PAGE_SIZE))
        # only `forked` (and the rest of this process) is shared with the child
        for m in (ksm, pinned, thp, plain):
            m.madvise(L.MADV_DONTFORK)
        deadline = time.monotonic() + KSM_MERGE_TIMEOUT_S
        while not ksm_merged(ksm, 16):
            assert time.monotonic() < deadline, "ksmd did not merge the pages"
            time.sleep(0.02)
        stack.enter_context(ForkHolder())
        if _smaps_of(thp.addr).get("AnonHugePages") != HUGE:
            pytest.skip("no transparent huge page could be allocated")
        result = census(os.getpid())
        ksm_smaps = _smaps_of(ksm.addr)
        addrs = {name: m.addr for name, m in
                 (("ksm", ksm), ("pinned", pinned), ("forked", forked), ("thp", thp),
                  ("plain", plain))}
    by_start = {v.vma.start: v for v in result.vmas}
    P = PAGE_SIZE
    expected = {
        addrs["ksm"]: {"ksm": 16 * P},
        addrs["pinned"]: {"movable": 16 * P, "pinned": 16 * P},
        addrs["forked"]: {"shared": 8 * P},
        addrs["thp"]: {"thp": HUGE},
        addrs["plain"]: {"movable": 24 * P},
    }
    for start, want in expected.items():
        assert start in by_start, f"VMA {start:#x} missing from the census"
        assert dict(by_start[start].bytes) == want, (hex(start), by_start[start].bytes)
    # smaps agrees, read on its own
    assert ksm_smaps["KSM"] == 16 * P
    totals = result.totals()
    for kind in ("ksm", "pinned", "thp"):
        assert totals[kind] >= sum(w.get(kind, 0) for w in expected.values())
    blockers = {(s, k): b for b, s, k, _ in result.blockers}
    assert blockers.get((addrs["pinned"] + 8 * P, "pinned")) == 16 * P
    fixes = result.fixes()
    assert "IORING_UNREGISTER_BUFFERS" in fixes["pinned"]["fix"]
    assert "MADV_UNMERGEABLE" in fixes["ksm"]["fix"]
    assert "MADV_POPULATE_WRITE" in fixes["shared"]["fix"]


def _check_as_nobody(args: str) -> dict:
    """`uffdtrace check -p <its own pid> ARGS --json` run by nobody on 64
    pages of its own (ARGS may name them: {addr})."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    code = ("import os, sys, subprocess;"
            "from uffdtrace.native import Mapping;"
            "m = Mapping(64 * 4096); m.fill();"
            "r = subprocess.run([sys.executable, '-m', 'uffdtrace', 'check', '-p',"
            f" str(os.getpid()), *{args!r}.format(addr=hex(m.addr)).split(), '--json'],"
            " capture_output=True, text=True);"
            "print(r.stdout); sys.stderr.write(r.stderr)")

    def drop():
        os.setgid(65534)
        os.setuid(65534)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, preexec_fn=drop)
    if "Permission denied" in proc.stderr and "uffdtrace" not in proc.stdout:
        pytest.skip(f"nobody cannot run this checkout: {proc.stderr[-200:]}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_census_cli_runs_without_root_and_says_what_it_cannot_see():
    """As nobody, on a process of its own: PFNs are hidden, kpageflags
    closed; the census still runs and says so."""
    out = _check_as_nobody("--census")
    unseen = " ".join(out["unseen"])
    assert "kpageflags" in unseen and "zeroed" in unseen
    assert out["totals"].get("movable", 0) >= 64 * 4096


def test_check_without_root_says_the_kernel_view_is_off():
    out = _check_as_nobody("{addr} 16K")
    unseen = " ".join(out["unseen"])
    assert "the kernel's own view (the kernel view needs root" in unseen, unseen
    assert {r["kind"] for r in out["runs"]} == {"movable"}
    assert {r["evidence"] for r in out["runs"]} == {"inferred"}
