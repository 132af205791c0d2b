"""No kernel pointer leaves the machine: kernel values become stable
per-trace ids, user addresses stay."""
from __future__ import annotations

import json

from uffdtrace.culprits import KsmCulprit
from tests.tracegen import enrichment, failed, mixed_items, src_page, write_trace
from uffdtrace.scrub import KernelValueScrubber
from uffdtrace.tracefile import TraceWriter
from uffdtrace.tracereader import iter_records

FOLIO = 0xffff888104a3c000          # a direct-map (KASLR-randomized) kernel address
TEXT = 0xffffffff8a201234           # a kernel text address
USER = 0x7f3a12345000


def lines_of(path) -> str:
    return open(path).read()


def test_named_kernel_fields_become_ids_and_user_addresses_stay():
    s = KernelValueScrubber()
    out = s.scrub({"folio": FOLIO, "src_folio": FOLIO, "mm_kptr": TEXT, "pfn": 0x1234,
                   "src_pfn": 0x1234, "folio_flags": 0x5, "src": USER, "dst": USER,
                   "nested": {"step_kptr": TEXT, "list": [{"pfn": 7}]}})
    assert out["folio"] == out["src_folio"] and out["folio"].startswith("kptr-")
    assert out["mm_kptr"].startswith("kptr-") and out["mm_kptr"] != out["folio"]
    assert out["pfn"] == out["src_pfn"] and out["pfn"].startswith("pfn-")
    assert out["nested"]["step_kptr"] == out["mm_kptr"]
    assert out["nested"]["list"][0]["pfn"].startswith("pfn-")
    assert (out["folio_flags"], out["src"], out["dst"]) == (0x5, USER, USER)


def test_any_unnamed_kernel_half_value_is_caught_by_the_safety_net():
    out = KernelValueScrubber().scrub({"new_field": FOLIO, "deep": [[TEXT]], "small": 12,
                                       "src": 2 ** 64 - 1, "len": 2 ** 63})
    assert out["new_field"].startswith("kptr-") and out["deep"][0][0].startswith("kptr-")
    # user-supplied values stay whatever they are: they are not kernel pointers
    assert (out["small"], out["src"], out["len"]) == (12, 2 ** 64 - 1, 2 ** 63)


def test_ids_are_stable_within_a_trace_and_unlinkable_across_traces():
    a, b = KernelValueScrubber(), KernelValueScrubber()
    assert a.identifier("kptr", FOLIO) == a.identifier("kptr", FOLIO)
    assert a.identifier("kptr", FOLIO) != a.identifier("kptr", FOLIO + 4096)
    assert a.identifier("kptr", FOLIO) != b.identifier("kptr", FOLIO)
    assert a.identifier("kptr", 5) != a.identifier("pfn", 5)


def test_serialize_is_the_same_json_when_nothing_needs_scrubbing():
    record = {"type": "move", "src": USER, "ts_ns": 123456789, "comm": "x"}
    assert json.loads(KernelValueScrubber().serialize(record)) == record


def test_the_writer_scrubs_every_record_it_writes(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(str(path))
    writer.write({"type": "move", "folio": FOLIO, "detail": {"text": TEXT}, "src": USER})
    writer.close()
    text = lines_of(path)
    for value in (FOLIO, TEXT):
        assert str(value) not in text and f"{value:x}" not in text
    assert str(USER) in text


def test_ksm_records_carry_the_page_frame_as_an_id_only(tmp_path):
    path = tmp_path / "t.jsonl"
    pfn = 0x2a2a2a
    item = failed(16, "page_ksm", culprit=KsmCulprit(),
                  enrichment=enrichment(src_page(pfn=pfn, flags=frozenset({"ksm"}))))
    write_trace(path, [item, item, *mixed_items()])
    assert str(pfn) not in lines_of(path)
    ksm = [r for r in iter_records(str(path)) if r["type"] == "ksm"]
    # one record per merged page (the repeated failure does not repeat it)
    assert len(ksm) == 2 and ksm[0]["pfn"].startswith("pfn-")
    assert ksm[0]["evidence"] == "inferred" and ksm[1]["evidence"] == "observed"


def test_the_line_pass_scrubs_exactly_as_the_walk_does():
    """serialize() replaces kernel values member by member in the JSON line
    and walks the record only when that cannot judge: both give one result."""
    from tests.tracegen import storm_items
    from uffdtrace.session import TracedMove
    s = KernelValueScrubber(key=b"k" * 16)
    records = [i.to_json() for i in mixed_items() + storm_items() if hasattr(i, "to_json")]
    records += [
        {"type": "move", "src_state": {"pfn": 77, "folio": FOLIO}, "dst_state": None},
        {"type": "x", "pfn": -3, "list": [FOLIO, 1], "src": 2 ** 64 - 1},
        {"type": "x", "kptr": [FOLIO, TEXT], "nested": {"a_pfn": 5, "n": [{"pfn": 6}]}},
        {"type": "x", "comm": 'a","pfn":5,"b":"', "other": 1, "folio": 0},
        {"type": "x", "val": FOLIO, "small": 1.5, "neg": -(2 ** 62)},
    ]
    assert any(isinstance(i, TracedMove) for i in mixed_items())
    for record in records:
        assert json.loads(s.serialize(record)) == json.loads(json.dumps(s.scrub(record)))
