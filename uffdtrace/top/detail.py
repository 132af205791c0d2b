"""The full diagnosis of one failed move, as titled sections of labelled
lines (plain strings: the UI renders them literally).  Explanations and
remedies come from the taxonomy, so they read the same everywhere."""
from __future__ import annotations

from .. import movepaths, records, stacks
from ..culprits import KsmCulprit, PinCulprit, UffdEventCulprit
from ..native import lib
from ..taxonomy import CAUSES, EVIDENCE_MEANING
from ..textsafe import printable

Section = tuple[str, list[tuple[str, str]]]


def _addr(v) -> str:
    return f"{v:#x}" if isinstance(v, int) else "unknown"


def _mode(mode: int) -> str:
    names = [("DONTWAKE", lib().UFFDT_MOVE_MODE_DONTWAKE),
             ("ALLOW_SRC_HOLES", lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES)]
    known = [n for n, bit in names if mode & bit]
    rest = mode & ~sum(bit for _, bit in names)
    return " | ".join(known + ([f"{rest:#x} (invalid bits)"] if rest else [])) or "0"


def _bytes(n: int, page_size: int) -> str:
    pages = n / page_size
    return f"{n:,} bytes ({pages:g} page{'' if pages == 1 else 's'})" if n >= 0 else str(n)


def _explain(code: str, record_text: str | None, field: str) -> str:
    c = CAUSES.get(code)
    return getattr(c, field) if c else (record_text or "(not explained)")


def _request(r: dict, t: float | None, page_size: int) -> Section:
    lines = [("process", f"pid {r.get('pid')} tid {r.get('tid')} "
                         f"({printable(r.get('comm') or '?')})"),
             ("time", f"{t:.6f} s into the trace" if t is not None else "unknown"),
             ("request", f"UFFDIO_MOVE fd {r.get('fd')}: dst {_addr(r.get('dst'))}  "
                         f"src {_addr(r.get('src'))}  len "
                         f"{_bytes(int(r.get('len') or 0), page_size)}"),
             ("mode", _mode(int(r.get("mode") or 0)))]
    move = int(r.get("move") or 0)
    result = f"ret {r.get('ret')} ({r.get('errno') or 'ok'}), move = {move:,}"
    if move > 0:
        result += f": {_bytes(move, page_size)} moved before it stopped"
    lines.append(("result", result))
    cost = (f"{int(r.get('latency_ns') or 0) / 1000:,.1f} µs, "
            f"{r.get('tlb_flushes', 0)} TLB flushes ({r.get('tlb_pages', 0)} pages, "
            f"{r.get('tlb_remote_ipis', 0)} remote IPIs), "
            f"mmap_lock wait {int(r.get('mmap_lock_wait_ns') or 0) / 1000:,.1f} µs, "
            f"lock contention {int(r.get('lock_wait_ns') or 0) / 1000:,.1f} µs")
    lines.append(("cost", cost))
    if r.get("retries"):
        lines.append(("retries", f"{r['retries']} internal retries"))
    paths = movepaths.paths(r, page_size)
    if paths is not None:   # the kernel tier's: the tracepoint tier does not see steps
        lines.append(("paths", movepaths.describe(paths)))
    return "Request", lines


def _diagnosis(r: dict, d: dict) -> Section:
    code, underlying = d.get("cause") or "unknown", d.get("underlying")
    effective = underlying or code
    c = CAUSES.get(effective)
    cause = code + (f": stopped by {underlying}" if underlying else "")
    if c and c.errno:
        cause += f"  ({c.errno})"
    evidence = d.get("evidence") or "?"
    lines = [("cause", cause),
             ("evidence", f"{evidence}: {EVIDENCE_MEANING.get(evidence, 'unknown level')}")]
    fail = d.get("fail_addr")
    where = _addr(fail)
    if isinstance(fail, int) and isinstance(r.get("src"), int) and fail >= r["src"]:
        where += f" (src + {fail - r['src']:#x})"
    lines += [("failing address", where),
              ("explanation", _explain(effective, d.get("explanation"), "explanation")),
              ("remedy", _explain(effective, d.get("remedy"), "remedy"))]
    if underlying:
        lines.append(("resume", CAUSES["partial"].remedy))
    return "Diagnosis", lines


def _culprit(d: dict, t0_ns: int | None) -> Section:
    c = records.culprit(d)

    def when(ts) -> str:
        if ts is None:
            return "before tracing started"
        return f"{(ts - t0_ns) / 1e9:.6f} s into the trace" if t0_ns is not None else f"ts {ts}"

    if isinstance(c, PinCulprit):
        who = f"pid {c.pid}" + (f" tid {c.tid}" if c.tid is not None else "")
        lines = [("pinned by", f"{who} ({printable(c.comm)})"),
                 ("method", printable(c.method_label))]
        if c.range is not None:
            lines.append(("pinned range", f"{_addr(c.range[0])} + {c.range[1]:,} bytes"))
        lines += [("pinned", when(c.ts_ns)), ("seen by", printable(c.source))]
        lines += _stack_lines(c.stack, "pinner stack")
        return "Culprit", lines
    if isinstance(c, UffdEventCulprit):
        return "Culprit", [("event", f"UFFD_EVENT_{c.event.upper()}, unread by the monitor"),
                           ("raised by", f"pid {c.pid} tid {c.tid} ({printable(c.comm)})")]
    if isinstance(c, KsmCulprit):
        who = "KSM (ksmd)" + (f", pid {c.ksmd_pid}" if c.ksmd_pid is not None else "")
        return "Culprit", [("merged by", who), ("merged", when(c.merged_ts_ns))]
    return "Culprit", [("culprit", "none identified")]


def _stack_lines(stack: dict | None, label: str) -> list[tuple[str, str]]:
    """A stack's frames, one labelled line each (symbols are untrusted:
    printable here, and the UI renders them literally)."""
    return [(label if i == 0 else "", printable(line))
            for i, line in enumerate(stacks.lines(stack))]


def _issued_by(r: dict) -> Section | None:
    """--stacks: who issued the move, the program's own function first."""
    stack = r.get("stack")
    if stack is None:
        return None
    who = stacks.issued_by(stack)
    return "Issued by", [("issued by", printable(who) if who else
                          "not known: no frame of the program's own was symbolized")] + \
        _stack_lines(stack, "stack")


def _page(p: dict | None) -> str:
    if p is None:
        return "not read"
    state = "present" if p.get("present") else "swapped" if p.get("swapped") else "not present"
    if p.get("present") or p.get("swapped"):
        state += ", exclusive" if p.get("exclusive") else ", not exclusive"
    flags = p.get("flags")
    return state + (f"; flags {' '.join(flags)}" if flags else "")


def _vma(v: dict | None) -> str:
    if v is None:
        return "none (not mapped when inspected)"
    path = printable(v.get("path") or "") or "anonymous"
    return (f"{_addr(v.get('start'))}-{_addr(v.get('end'))} {v.get('perms')} {path}; "
            f"VmFlags {' '.join(v.get('flags') or [])}")


def _page_state(en: dict | None) -> Section:
    if not en:
        return "Page state", [("state", "not inspected (the move did not fail, or no /proc "
                                        "read was possible)")]
    lines = [("src page", f"{_addr(en.get('src_addr'))}: {_page(en.get('src_page'))}"),
             ("dst page", f"{_addr(en.get('dst_addr'))}: {_page(en.get('dst_page'))}"),
             ("src VMA", _vma(en.get("src_vma"))),
             ("dst VMA", _vma(en.get("dst_vma")))]
    if en.get("error"):
        lines.append(("read error", printable(str(en["error"]))))
    return "Page state (read from /proc after the call)", lines


OUTCOME = {"woken": "woken", "dontwake": "left asleep (DONTWAKE; no UFFDIO_WAKE seen yet)",
           "not_moved": "left asleep (the move failed before its page)"}


def _faulting_threads(record: dict, t0_ns: int | None) -> Section | None:
    """Q9: the threads asleep in a uffd page fault in this move's range: who
    woke them (this move, or the UFFDIO_WAKE after it asked DONTWAKE), and
    how long they had waited."""
    rows = record.get("woken_threads")
    if not rows:
        return None
    lines = []
    for r in rows:
        waited = r["waited_ns"] / 1e6
        wait = f"waited {waited:g} ms" if r["wait_evidence"] == "exact" else \
            f"waited at least {waited:g} ms (first seen asleep: no hook on page faults)"
        how = OUTCOME.get(r["outcome"], r["outcome"])
        if r["by"] == "wake":
            when = f" {(r['ts_ns'] - t0_ns) / 1e9:.6f} s" if t0_ns is not None else ""
            how += f" by UFFDIO_WAKE of tid {r['by_tid']} ({printable(r['by_comm'])}){when}"
        elif r["outcome"] == "woken":
            how += " by this move"
        lines.append((f"tid {r['tid']}", f"pid {r['pid']} ({printable(r['comm'])}) faulted at "
                                         f"{_addr(r['addr'])}: {wait}; {how}"))
    return "Faulting threads (asleep in its range when it began)", lines


def describe_failure(record: dict, t: float | None = None, t0_ns: int | None = None,
                     page_size: int = records.DEFAULT_PAGE_SIZE,
                     repeats: int = 0) -> list[Section]:
    """Everything known about one failed move, most useful first; repeats:
    a repeat row's count of more failures identical to it."""
    d = record.get("diagnosis") or {}
    sections = [_diagnosis(record, d), _culprit(d, t0_ns), _request(record, t, page_size),
                _page_state(record.get("enrichment"))]
    issued = _issued_by(record)
    if issued is not None:
        sections.insert(2, issued)
    woken = _faulting_threads(record, t0_ns)
    if woken is not None:
        sections.insert(1, woken)
    if repeats:
        text = (f"{repeats:,} more failures of this thread identical to this one (request, "
                "errno, progress, page state), counted in the kernel; the time is the last one's"
                if record.get("diagnosis") is not None else
                f"{repeats:,} failures whose first record was lost (ring buffer full): "
                "counted, not explained")
        sections.insert(0, ("Repeated", [("failures", text)]))
    notes = [("note", printable(str(n))) for n in d.get("notes") or []]
    if notes:
        sections.append(("Notes", notes))
    return sections
