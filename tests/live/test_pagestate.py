"""The in-kernel page-state reader (bpf/ut_pagestate.h) against real pages.

Each test makes memory of one kind in this process (an exclusive page, a
hole, a page shared with a forked child, an io_uring-pinned page, a KSM
page, PMD- and PTE-mapped THPs, the zero pages, a PROT_NONE page, swapped-out
pages, a guard-region marker), asks the reader about it
through a syscall tracepoint (uffdtrace/kernel/pageprobe.py), and checks the
answer against what the kernel says elsewhere: /proc/self/pagemap (pfn, swap
type and offset), /proc/kpageflags, /proc/kpagecount (mapcount), and the
kernel's own behaviour (a pin adds GUP_PIN_COUNTING_BIAS references, a fork
clears the exclusive bits).  The layout and the calibration are the running
kernel's (layout.load(), Calibrator), nothing is assumed.

The same module runs inside the VM tier's guests (6.12, 7.3):
tests/vm/guest/test_pagestate.py.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from dataclasses import replace

import pytest

from tests.conftest import require_bcc_root
from uffdtrace.errors import UserError
from uffdtrace.native import PAGE_SIZE, ForkHolder, IoUringPin, Mapping, hpage_size, lib
from uffdtrace.pagestate import read_page_states

GIB = 1 << 30
GUP_PIN_COUNTING_BIAS = 1024   # include/linux/mm.h: what one FOLL_PIN adds to a small folio
# Far from anything a process maps: its top-level entry is empty.
UNMAPPED = 0x2000_0000_0000


# ---- the reader, compiled once for the module ----
KPROBE_READER = """
#include <uapi/linux/ptrace.h>

int ut_test_kprobe_reader(struct pt_regs *ctx)
{
	u32 zero = 0;
	struct ut_page_state ps;

	ut_page_state_current(&ps, PT_REGS_PARM1(ctx));
	probe_out.update(&zero, &ps);
	return 0;
}
"""


@pytest.fixture(scope="module")
def kernel():
    """(layout, calibration, calibrator) of the running kernel."""
    require_bcc_root()
    from uffdtrace.kernel import calibrate, layout
    lay = layout.load()
    calibrator = calibrate.Calibrator(lay)
    try:
        cal = calibrator.calibrate()
        yield lay, cal, calibrator
    finally:
        calibrator.close()


@pytest.fixture(scope="module")
def one_cpu():
    """Keep this process on one CPU: a new page's folio waits in that CPU's
    LRU batch with an extra reference, which only a drain on that CPU
    removes (drain_lru_batches), so refcounts are exact."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def probe(kernel, one_cpu):
    from uffdtrace.kernel.pageprobe import PageStateProbe
    lay, cal, _ = kernel
    with PageStateProbe(lay, cal, extra_text=KPROBE_READER) as p:
        yield p


# ---- what the kernel says elsewhere ----
def pagemap_word(addr: int) -> int:
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(addr // PAGE_SIZE * 8)
        return struct.unpack("<Q", f.read(8))[0]


def kpagecount(pfn: int) -> int:
    """Documentation/admin-guide/mm/pagemap.rst: how many times the page is mapped."""
    with open("/proc/kpagecount", "rb") as f:
        f.seek(pfn * 8)
        return struct.unpack("<Q", f.read(8))[0]


def pagemap(addr: int):
    return read_page_states(os.getpid(), [addr])[0]


def drain_lru_batches() -> None:
    """lru_add_drain() on this CPU (see one_cpu), so no folio of ours waits
    in a per-CPU batch holding a reference: MADV_COLD drains the batches
    before it looks at its range, and an untouched range gives it nothing
    to deactivate (which would queue a folio, with a reference, again)."""
    with Mapping(PAGE_SIZE) as scratch:
        scratch.madvise(lib().MADV_COLD)


def small_pages(count: int, *, fill: bool = True) -> Mapping:
    m = Mapping(count * PAGE_SIZE)
    m.madvise(lib().MADV_NOHUGEPAGE)
    if fill:
        m.fill()
        drain_lru_batches()
    return m


def wait_for(read, ok, timeout: float = 5.0):
    """Poll read() until ok(value), for state the kernel changes later
    (io_uring releases its pins from a workqueue after close)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


# ---- calibration ----
def test_calibration_verifies_and_a_wrong_base_is_refused(kernel):
    from uffdtrace.kernel.calibrate import CalibrationError
    _, cal, calibrator = kernel
    assert cal.levels in (4, 5)
    assert cal.page_offset_base % GIB == 0 and cal.vmemmap_base % GIB == 0
    calibrator.verify(cal)   # again, on fresh pages
    wrong = {
        "direct-map base": replace(cal, page_offset_base=cal.page_offset_base + GIB),
        "vmemmap base": replace(cal, vmemmap_base=cal.vmemmap_base + GIB),
        "paging levels": replace(cal, levels=9 - cal.levels),
    }
    for cause, bad in wrong.items():
        with pytest.raises(CalibrationError, match=cause) as info:
            calibrator.verify(bad)
        assert "\n" not in str(info.value)


def test_the_reader_passes_the_verifier_as_a_kprobe_program(probe):
    """The integration calls it from kprobes/fentry too: kprobe programs
    load here even where they cannot attach."""
    from bcc import BPF
    probe.bpf.load_func(b"ut_test_kprobe_reader", BPF.KPROBE)


# ---- present pages ----
def test_an_exclusive_anonymous_page(probe):
    with small_pages(2) as m:
        got = probe.read(m.page(1) + 123)
        assert got.where_name == "PTE_PRESENT" and got.level_name == "PAGE", got
        assert got.addr == m.page(1) + 123
        assert got.pfn == pagemap(m.page(1)).pfn
        assert got.flag_names == {"FOLIO", "ANON", "ANON_EXCLUSIVE", "WRITE"}, got
        assert (got.refcount, got.mapcount, got.page_mapcount) == (1, 1, 1), got
        assert kpagecount(got.pfn) == 1
        assert (got.order, got.pincount) == (0, 0)


def test_a_hole_and_an_unmapped_address(probe, kernel):
    _, cal, _ = kernel
    with small_pages(2, fill=False) as m:
        m.fill(length=PAGE_SIZE)
        hole = probe.read(m.page(1))
        assert hole.where_name == "PTE_NONE" and hole.level_name == "PTE", hole
        assert hole.entry == 0 and hole.flags == 0 and not pagemap(m.page(1)).present
    far = probe.read(UNMAPPED)
    # with 4 levels the top table is the pgd; with 5 the p4d below pgd[0]
    assert far.where_name == ("PGD_NONE" if cal.levels == 4 else "P4D_NONE"), far
    assert far.flags == 0


def test_a_page_shared_with_a_forked_child(probe):
    with small_pages(1) as m:
        with ForkHolder():
            shared = probe.read(m.addr)
            assert shared.where_name == "PTE_PRESENT"
            assert shared.has("ANON") and not shared.has("ANON_EXCLUSIVE"), shared
            assert not shared.has("WRITE"), shared   # write-protected for COW
            assert shared.mapcount == 2 == kpagecount(shared.pfn), shared
        # the child is gone: mapped once again, and pagemap calls it
        # exclusive, but the kernel still does not (UFFDIO_MOVE gets EBUSY)
        # until a write fault reuses the page
        alone = probe.read(m.addr)
        assert alone.mapcount == 1 and pagemap(m.addr).exclusive
        assert not alone.has("ANON_EXCLUSIVE"), alone
        m.fill()
        assert probe.read(m.addr).has("ANON_EXCLUSIVE")


def io_uring_pin(addr: int, length: int) -> IoUringPin:
    try:
        return IoUringPin(addr, length)
    except UserError as exc:
        pytest.skip(str(exc))


def test_an_io_uring_fixed_buffer_page_is_pinned(probe):
    with small_pages(2) as m:
        before = probe.read(m.addr)
        assert not before.has("MAYBE_DMA_PINNED")
        with io_uring_pin(m.addr, PAGE_SIZE):
            pinned = probe.read(m.addr)
            assert pinned.refcount - before.refcount == GUP_PIN_COUNTING_BIAS, (before, pinned)
            assert pinned.has("MAYBE_DMA_PINNED") and pinned.has("ANON_EXCLUSIVE"), pinned
            assert not probe.read(m.page(1)).has("MAYBE_DMA_PINNED")
        # io_uring drops the pin from a workqueue once the ring is gone
        after = wait_for(lambda: probe.read(m.addr), lambda s: not s.has("MAYBE_DMA_PINNED"))
        assert after.refcount == before.refcount, after


# ---- large folios ----
def thp(probe, *, write: bool = True) -> Mapping:
    """A 2 MiB aligned MADV_HUGEPAGE range, faulted (written or read) at its start."""
    size = hpage_size()
    m = Mapping(2 * size, align=size)
    try:
        m.madvise(lib().MADV_HUGEPAGE)
    except OSError as exc:
        m.close()
        pytest.skip(f"MADV_HUGEPAGE refused ({exc.strerror}): THP is off here")
    if write:
        m.fill(length=size)
    else:
        ctypes.string_at(m.addr, 1)
    if not pagemap(m.addr).has("thp"):
        m.close()
        pytest.skip("the fault did not get a huge page (kpageflags: no THP)")
    return m


def test_a_pmd_mapped_thp(probe):
    with thp(probe) as m:
        addr = m.addr + 5 * PAGE_SIZE
        got = probe.read(addr)
        assert got.where_name == "PMD_HUGE", got
        assert got.pfn == pagemap(addr).pfn
        assert got.has("LARGE") and got.order == 9, got
        assert got.has("ANON") and got.has("ANON_EXCLUSIVE") and got.has("WRITE"), got
        assert got.mapcount == 1 and got.pincount == 0, got
        with ForkHolder():
            shared = probe.read(addr)
            assert shared.where_name == "PMD_HUGE" and shared.mapcount == 2, shared
            assert not shared.has("ANON_EXCLUSIVE"), shared


def test_a_pte_mapped_thp(probe):
    """mprotect() of one page splits the PMD mapping, not the folio: 512 PTEs
    map one order-9 folio."""
    with thp(probe) as m:
        m_addr = m.addr
        lib().uffdw_mprotect(m_addr, PAGE_SIZE, lib().PROT_READ)
        got = probe.read(m_addr + 7 * PAGE_SIZE)
        assert got.where_name == "PTE_PRESENT", got
        assert got.pfn == pagemap(m_addr + 7 * PAGE_SIZE).pfn
        assert got.has("LARGE") and got.order == 9, got
        assert got.mapcount == 512 and got.page_mapcount == 1, got
        assert got.has("ANON_EXCLUSIVE") and got.has("WRITE")
        assert not probe.read(m_addr).has("WRITE")


def test_a_pinned_thp_counts_its_pins(probe):
    with thp(probe) as m:
        with io_uring_pin(m.addr, PAGE_SIZE):
            got = probe.read(m.addr)
            assert got.has("LARGE") and got.has("MAYBE_DMA_PINNED"), got
            assert got.pincount == 1, got


# ---- zero pages ----
def test_the_zero_page(probe, kernel):
    _, cal, _ = kernel
    with small_pages(1, fill=False) as m:
        ctypes.string_at(m.addr, 1)
        got = probe.read(m.addr)
        state = pagemap(m.addr)
        assert state.has("zero_page") and got.pfn == state.pfn == cal.zero_pfn
        assert got.where_name == "PTE_PRESENT"
        assert got.has("ZERO_PAGE") and got.has("SPECIAL"), got
        assert not got.has("ANON") and not got.has("WRITE"), got


def test_the_huge_zero_page(probe, kernel):
    _, cal, _ = kernel
    if not cal.huge_zero_pfn:
        pytest.skip("no huge zero folio on this kernel: " + "; ".join(cal.notes))
    with thp(probe, write=False) as m:
        got = probe.read(m.addr + 3 * PAGE_SIZE)
        assert pagemap(m.addr).has("zero_page")
        assert got.where_name == "PMD_HUGE" and got.pfn == pagemap(m.addr + 3 * PAGE_SIZE).pfn
        assert got.has("HUGE_ZERO_PAGE") and got.has("LARGE"), got
        assert not got.has("ANON") and not got.has("WRITE"), got


# ---- KSM ----
def test_a_ksm_page(probe):
    from uffdtrace.workload.ksm import KsmTuning
    from uffdtrace.workload.scenarios import KSM_MERGE_TIMEOUT_S, ksm_merged
    pages = 3
    try:
        tuning = KsmTuning().__enter__()
    except UserError as exc:
        pytest.skip(str(exc))
    try:
        with small_pages(pages, fill=False) as m:
            m.madvise(lib().MADV_MERGEABLE)
            m.fill(distinct=False)
            if not wait_for(lambda: ksm_merged(m, pages), bool, KSM_MERGE_TIMEOUT_S):
                pytest.fail(f"ksmd did not merge {pages} identical pages in "
                            f"{KSM_MERGE_TIMEOUT_S} s")
            got = probe.read(m.page(1))
            assert got.where_name == "PTE_PRESENT" and got.pfn == pagemap(m.page(1)).pfn
            assert got.has("KSM") and not got.has("ANON"), got
            assert not got.has("ANON_EXCLUSIVE") and not got.has("WRITE"), got
            # KSM merged every identical page into one, mapped `pages` times
            assert got.mapcount == kpagecount(got.pfn) >= pages, got
            m.madvise(lib().MADV_UNMERGEABLE)
    finally:
        tuning.__exit__(None, None, None)


# ---- swap ----
@pytest.fixture
def swap():
    from uffdtrace.workload.zramswap import ZramSwap
    try:
        with ZramSwap() as device:
            yield device
    except UserError as exc:
        pytest.skip(f"no zram swap device: {exc}")


def swapped_out(m: Mapping, index: int) -> int:
    """Page out one page; its pagemap word (which must say swapped)."""
    lib().uffdw_madvise(m.page(index), PAGE_SIZE, lib().MADV_PAGEOUT)
    word = wait_for(lambda: pagemap_word(m.page(index)), lambda w: w >> 62 & 1, timeout=2)
    if not word >> 62 & 1:
        pytest.skip("MADV_PAGEOUT did not swap the page out")
    return word


def pagemap_swap(word: int) -> tuple[int, int]:
    """pagemap.rst: bits 0-4 swap type, 5-54 swap offset."""
    return word & 0x1F, (word >> 5) & ((1 << 50) - 1)


def test_swapped_out_pages_and_their_exclusive_bit(probe, swap):
    with small_pages(2) as m:
        word = swapped_out(m, 0)
        got = probe.read(m.addr)
        assert got.where_name == "PTE_SWAP" and got.level_name == "PTE", got
        assert (got.swp_type, got.pfn) == pagemap_swap(word), got
        # try_to_unmap() keeps PageAnonExclusive in the swap entry
        assert got.has("SWP_EXCLUSIVE"), got
        with ForkHolder():
            # fork cleared it (copy_nonpresent_pte): a move would get EBUSY
            shared = probe.read(m.addr)
            assert shared.where_name == "PTE_SWAP" and shared.pfn == got.pfn
            assert not shared.has("SWP_EXCLUSIVE"), shared
        ctypes.string_at(m.page(1), 1)
        assert probe.read(m.page(1)).where_name == "PTE_PRESENT"


def test_the_calibration_is_reused_within_a_boot(kernel, tmp_path):
    from uffdtrace.kernel import calibrate
    lay, cal, _ = kernel
    cache = tmp_path / "calibration.json"
    first = calibrate.calibration_for_this_boot(lay, cache)
    assert cache.stat().st_mode & 0o777 == 0o600
    again = calibrate.calibration_for_this_boot(lay, cache)
    assert first == cal == again   # bases, levels, zero pfns (not timings or notes)
    assert "reused" in again.notes[0] and again.seconds < first.seconds
    # another boot's record is not used
    record = cache.read_text().replace(calibrate.BOOT_ID.read_text().strip(), "another-boot")
    cache.write_text(record)
    assert "reused" not in " ".join(calibrate.calibration_for_this_boot(lay, cache).notes)


def test_a_prot_none_page(probe):
    """A PROT_NONE leaf is present to the kernel but not to the MMU, and
    stores its pfn inverted (L1TF mitigation)."""
    with small_pages(1) as m:
        pfn = pagemap(m.addr).pfn
        m.mprotect(lib().PROT_NONE)
        got = probe.read(m.addr)
        assert got.where_name == "PTE_PRESENT" and got.has("PROTNONE"), got
        assert got.pfn == pfn and not got.entry & 1, got
        assert got.has("ANON_EXCLUSIVE")


# include/uapi/asm-generic/mman-common.h (6.13+; Debian 12's libc headers predate it)
MADV_GUARD_INSTALL = 102
PM_GUARD_REGION = 1 << 58   # pagemap.rst, since 6.15


def test_a_guard_region_marker_is_another_non_present_entry(probe):
    with small_pages(2) as m:
        rc = lib().uffdw_madvise(m.addr, PAGE_SIZE, MADV_GUARD_INSTALL)
        if rc == -errno.EINVAL:
            pytest.skip("no guard regions on this kernel (MADV_GUARD_INSTALL is 6.13+)")
        assert rc == 0
        got = probe.read(m.addr)
        assert got.where_name == "PTE_OTHER" and got.level_name == "PTE", got
        # a PTE marker: the last of the 32 swap types (include/linux/swap.h)
        assert got.swp_type == 31, got
        assert pagemap_word(m.addr) & PM_GUARD_REGION
        assert probe.read(m.page(1)).where_name == "PTE_PRESENT"


# ---- what the reader says decides what UFFDIO_MOVE does ----
def movable(state) -> bool:
    """A one-page move succeeds (mm/userfaultfd.c, 6.9+) for an exclusive,
    unpinned anonymous page, the zero page, or an exclusive swap entry."""
    if state.where_name == "PTE_PRESENT":
        return state.has("ZERO_PAGE") or (
            state.has("ANON_EXCLUSIVE") and not state.has("MAYBE_DMA_PINNED")
            and not state.has("KSM") and not state.has("LARGE"))
    if state.where_name == "PTE_SWAP":
        return state.has("SWP_EXCLUSIVE")
    return False


def _exclusive(m, stack):
    pass


def _zero(m, stack):
    ctypes.string_at(m.addr, 1)   # a read fault of an unwritten page


def _fork_shared(m, stack):
    stack.enter_context(ForkHolder())


def _pinned(m, stack):
    stack.enter_context(io_uring_pin(m.addr, PAGE_SIZE))


def _swapped(m, stack):
    swapped_out(m, 0)


def _swapped_then_forked(m, stack):
    swapped_out(m, 0)
    stack.enter_context(ForkHolder())


SOURCES = {"exclusive": (_exclusive, True), "zero_page": (_zero, True),
           "fork_shared": (_fork_shared, False),
           "pinned": (_pinned, False), "swap_exclusive": (_swapped, True),
           "swap_shared": (_swapped_then_forked, False)}


@pytest.mark.parametrize("source", SOURCES)
def test_the_reader_tells_whether_a_move_of_the_page_succeeds(probe, source, request):
    from contextlib import ExitStack

    from uffdtrace.native import Uffd
    prepare, expected = SOURCES[source]
    if source.startswith("swap"):
        request.getfixturevalue("swap")
    with ExitStack() as stack:
        uffd = stack.enter_context(Uffd())
        src = stack.enter_context(small_pages(1, fill=source != "zero_page"))
        dst = stack.enter_context(small_pages(1, fill=False))
        uffd.register(dst)
        prepare(src, stack)
        state = probe.read(src.addr)
        assert movable(state) == expected, state
        call = uffd.move(dst.addr, src.addr, PAGE_SIZE)
        assert (call.ret == 0) == expected, (call, state)


def test_calibration_runs_inside_another_program(kernel):
    """The tracer can append bpf/ut_calibrate.bpf.c to its own program and
    calibrate with it: no compile of its own."""
    from bcc import BPF

    from uffdtrace.bpfprog import BPF_DIR, cflags
    from uffdtrace.kernel import calibrate
    lay, cal, _ = kernel
    defines = calibrate.program_defines(lay)
    text = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    text += '#include "uffdtrace_event.h"\nBPF_ARRAY(the_tracers_own_map, u64, 1);\n'
    text += (BPF_DIR / calibrate.PROGRAM).read_text()
    host = BPF(text=text.encode(), cflags=cflags())
    try:
        calibrator = calibrate.Calibrator(lay, bpf=host)
        assert calibrator.calibrate() == cal
        calibrator.close()
        # the tracer's program is still loaded and usable
        assert host[b"the_tracers_own_map"][ctypes.c_int(0)].value == 0
    finally:
        host.cleanup()
