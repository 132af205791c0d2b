"""The VMA reader at exit (bpf/ut_vmastate.h) on the running kernel,
tracepoint tier: EINVAL moves whose memory the workload unmaps right after
the call (--hold 0) are still explained, at evidence observed, by the VMAs
the kernel's VMA tree held when the call returned -- and /proc is not read.

Each scenario's VMA facts are checked against what the workload really
mapped: the walk found the VMA of each address, and its extent holds the
mapping."""
from __future__ import annotations

import pytest

from tests.conftest import require_bcc_root
from tests.helpers import SCENARIO_CAUSES, VMA_SCENARIOS, traced_workload


@pytest.fixture(scope="module")
def session():
    require_bcc_root()
    from uffdtrace.session import Session
    s = Session()
    s.start()
    if not s.state_reader.vmas_usable:
        s.close()
        pytest.skip(f"the VMA reader is off here: {s.state_reader.vma_reason}")
    yield s
    s.close()


# what each scenario's VMAs must show at exit, beyond the cause
FACTS = {
    # dst mapped but never registered: no userfaultfd context in its VMA
    "dst_not_registered": lambda src, dst: not dst.registered and src.anonymous,
    # src MAP_SHARED|MAP_ANONYMOUS: shmem, VM_SHARED and vm_ops set
    "vma_shared": lambda src, dst: src.shared and not src.anonymous and dst.registered,
    # src PROT_READ: no wr; dst registered with the moving uffd itself
    "src_readonly": lambda src, dst: "wr" not in src.vm_flag_names and "rd" in src.vm_flag_names
    and dst.registered and dst.registered_elsewhere is False,
    # src range runs into the next VMA: this one is otherwise fine to move
    "crosses_vma": lambda src, dst: src.anonymous and "wr" in src.vm_flag_names
    and dst.registered and dst.registered_elsewhere is False,
}
# the scenario whose src range does not fit in its VMA (the rest fit)
CROSSES = {"crosses_vma": "src"}


@pytest.mark.live
@pytest.mark.parametrize("scenario", sorted(VMA_SCENARIOS))
def test_einval_observed_from_the_vmas_at_exit_with_memory_gone(session, scenario):
    out, moves = traced_workload(session, "-s", scenario, "--hold", "0")
    calls = out["calls"]
    assert len(moves) == len(calls) > 0
    for call, m in zip(calls, sorted(moves, key=lambda m: m.event.ts_ns)):
        e, d = m.event, m.diagnosis
        assert e.errno == call["errno"] == "EINVAL"
        assert e.vmas_at_exit, e
        src, dst = e.src_vma_state, e.dst_vma_state
        for name, vma, addr in (("src", src, call["src"]), ("dst", dst, call["dst"])):
            assert vma.found, vma
            assert vma.addr == addr and vma.start <= addr < vma.end
            if CROSSES.get(scenario) == name:             # the range runs past its end
                assert vma.end - addr < call["len"], vma
            else:
                assert vma.end - addr >= call["len"]      # the mapping fits in it
        assert FACTS[scenario](src, dst), (src, dst)
        assert (d.cause, d.underlying, d.evidence) == (*SCENARIO_CAUSES[scenario], "observed"), d
        # observed at exit: nothing was read from /proc after the call
        assert m.enrichment is None


@pytest.mark.live
def test_enoent_on_an_unmapped_src_is_no_vma_observed(session):
    """A move from an address with no VMA (the src_hole scenario's pair,
    src unmapped first, is what the workload does not have: use a range
    never mapped) -- ENOENT, and the walk says so."""
    import errno
    from uffdtrace.native import PAGE_SIZE, Mapping, Uffd
    with Uffd() as uffd, Mapping(4 * PAGE_SIZE) as dst, Mapping(4 * PAGE_SIZE) as gone:
        uffd.register(dst)
        src = gone.addr
        gone.close()                      # unmapped: no VMA at src
        session.drain()
        call = uffd.move(dst.addr, src, PAGE_SIZE)
    assert call.errno == "ENOENT"
    items = []
    for _ in range(20):
        items += [i for i in session.poll(50) if hasattr(i, "diagnosis")
                  and i.event.src == src]
        if items:
            break
    (m,) = items
    assert m.event.src_vma_state.absent and m.event.dst_vma_state.found
    assert (m.diagnosis.cause, m.diagnosis.evidence) == ("no_vma", "observed"), m.diagnosis
    assert errno.ENOENT == -m.event.ret
