"""The Trace Event Format rules an exported file must follow (Google's
"Trace Event Format" document, and what Perfetto's JSON importer needs),
checked independently of the exporter."""
from __future__ import annotations

import json
from collections import defaultdict

PHASES = {"X", "i", "C", "M"}       # what uffdtrace emits
UINT32 = 2 ** 32


def check_trace_events(path) -> dict:
    """Parse and check `path`; the parsed object.  AssertionError names the
    first broken rule."""
    text = open(path, encoding="utf-8").read()
    # Older tokenizers honour displayTimeUnit only near the start.
    assert text.lstrip().startswith('{"displayTimeUnit"'), text[:80]
    trace = json.loads(text)
    assert trace["displayTimeUnit"] in ("ms", "ns")
    events = trace["traceEvents"]
    assert isinstance(events, list)
    slices = defaultdict(list)
    for ev in events:
        assert isinstance(ev["name"], str) and ev["name"], ev
        assert ev["ph"] in PHASES, ev
        for key in ("pid", "tid"):
            if key in ev:
                assert type(ev[key]) is int and 0 <= ev[key] < UINT32, ev
        assert type(ev["pid"]) is int
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name"), ev
            assert isinstance(ev["args"]["name"], str), ev
            continue
        assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0, ev
        # small relative timestamps keep Perfetto's us->ns double conversion exact
        assert ev["ts"] < 2 ** 53 / 1000, ev
        if ev["ph"] == "X":
            assert type(ev["tid"]) is int and isinstance(ev["dur"], (int, float)) and \
                ev["dur"] >= 0, ev
            slices[(ev["pid"], ev["tid"])].append((ev["ts"], ev["ts"] + ev["dur"]))
        elif ev["ph"] == "i":
            assert ev["s"] in ("g", "p", "t") and type(ev["tid"]) is int, ev
        elif ev["ph"] == "C":
            assert ev["args"] and all(isinstance(v, (int, float)) for v in ev["args"].values()), ev
    # complete events on one thread must nest or be disjoint
    for track, spans in slices.items():
        spans.sort(key=lambda s: (s[0], -s[1]))
        stack = []
        for start, end in spans:
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], (track, start, end)
            stack.append(end)
    return trace
