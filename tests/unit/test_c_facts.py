"""Facts the C side states, as the Python side uses them: derived from the
shared headers (bpf/*.h) and the system's uapi headers through cffi, never
re-typed.  Each test would fail if a copy crept back or drifted."""
from __future__ import annotations

import errno as E
import re
from pathlib import Path

import pytest

from bench import tracers
from tests.tracegen import move_event
from uffdtrace import bpfprog, pagestate
from uffdtrace.diagnose import PinTable, diagnose
from uffdtrace.native import PAGE_SIZE, lib
from uffdtrace.session import stat_names

ROOT = Path(__file__).resolve().parents[2]


def test_stat_names_are_the_headers_indexes_in_order():
    L = lib()
    names = stat_names()
    assert len(names) == len(set(names)) == L.UT_STAT_MAX
    for i, name in enumerate(names):
        assert getattr(L, f"UT_STAT_{name.upper()}") == i
    # the ones the collector, `top`, reports and the trace format look up
    assert {"moves_entered", "events_sent", "ringbuf_drops", "success_drops",
            "successes_unsent", "arg_read_fails", "inflight_full", "pins_seen"} <= set(names)


def test_io_uring_uapi_reaches_the_program_from_the_system_header():
    source = (bpfprog.BPF_DIR / bpfprog.TRACEPOINT_PROGRAM).read_text()
    used = set(re.findall(r"\bUT_IORING_\w+", source))
    defines = bpfprog.io_uring_defines()
    assert used and used <= set(defines)
    text = bpfprog.program_text(bpfprog.ProgramConfig())
    for name, value in defines.items():
        assert f"#define {name} {value}\n" in text
    # and no io_uring opcode is spelled in the BPF source itself
    assert not re.search(r"#define\s+\w*IORING\w*\s+\d", source)
    assert defines["UT_IORING_REGISTER_BUFFERS2"] == lib().IORING_REGISTER_BUFFERS2


def test_the_uffdio_move_number_lives_only_in_the_abi_header():
    hits = [str(p.relative_to(ROOT)) for d in ("uffdtrace", "bench", "tests", "native", "bpf")
            for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".c", ".h")
            and re.search(r"0x[cC]028[aA]{2}05", p.read_text(errors="replace"))]
    assert hits == ["bpf/uffd_move_abi.h"]
    assert tracers.MOVE_CMD == hex(lib().UFFDT_IOC_MOVE)
    assert f"args->cmd == {tracers.MOVE_CMD}" in tracers.BPFTRACE_ONE_LINER


@pytest.mark.parametrize("mode, bad", [(0, False), (1, False), (2, False), (3, False),
                                       (4, True), (1 << 63, True)])
def test_unknown_mode_bits_are_invalid_bad_mode(mode, bad):
    move = move_event(ret=-E.EINVAL, move=-E.EINVAL, move_before=-E.EINVAL, mode=mode)
    cause = diagnose(move, None, PinTable()).cause
    assert (cause == "invalid_bad_mode") is bad, cause


def test_kpageflags_bits_come_from_the_uapi_header():
    flags = pagestate.kpageflags()
    assert set(flags) == set(pagestate.KPAGEFLAG_NAMES)
    assert flags["ksm"] == lib().KPF_KSM and flags["zero_page"] == lib().KPF_ZERO_PAGE
    word = (1 << lib().KPF_KSM) | (1 << lib().KPF_ANON)
    assert pagestate._decode_flags(word) == {"ksm", "anon"}


def test_ring_buffer_capacity_counts_the_kernels_record_header():
    from uffdtrace.native import ffi
    from uffdtrace.session import Session
    s = Session(ringbuf_pages=1, success_ringbuf_pages=1)
    record = ffi().sizeof("struct ut_pin_event") + lib().BPF_RINGBUF_HDR_SZ
    assert s._buffer_capacity_records() == 2 * PAGE_SIZE // record
