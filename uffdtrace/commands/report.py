"""`uffdtrace report FILE`: what a trace says, for a terminal or a bug
report (plain text) or for machines (--json).  Needs no privileges."""
from __future__ import annotations

import json
import time

from . import command_parser
from .. import records
from ..errors import UserError
from ..metrics import MetricsState, registry_of, render_openmetrics
from ..tracereader import iter_records
from ..textsafe import printable
from ..tracesummary import MAP_FULL_COUNTERS, summarize

EXAMPLES = """\
examples:
  uffdtrace report t.jsonl                # totals, causes, worst latencies, pinners, drops
  uffdtrace report t.jsonl -p 1234        # one process
  uffdtrace report t.jsonl --json | jq .causes
  uffdtrace report t.jsonl.gz             # gzip-compressed traces are read as they are
  uffdtrace report --openmetrics t.jsonl > t.prom   # the final numbers as `serve` exposes them
"""
RULE = "-" * 78


def add_parser(sub):
    p = command_parser(sub, "report", help="summarize a trace file (no root needed)",
                       description="Summarize a trace written by `uffdtrace record`: totals, "
                       "per-process moves, failure causes with explanation, remedy and "
                       "evidence, the worst latencies, TLB cost, pinning processes and drops.",
                       examples=EXAMPLES)
    p.add_argument("file", metavar="FILE", help="trace file (JSON Lines, optionally gzipped)")
    p.add_argument("-p", "--pid", type=int, metavar="PID", help="report on this process only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--openmetrics", action="store_true",
                   help="print the trace's final numbers as OpenMetrics text, rendered as "
                   "`uffdtrace serve` renders them live")
    p.set_defaults(run=run)


def openmetrics(path: str) -> str:
    """The trace's records through the one rendering `serve` uses."""
    state = MetricsState()
    state.add_all(iter_records(path))
    state.finish("end of trace")
    return render_openmetrics(registry_of(state))


def run(args) -> int:
    if args.openmetrics:
        if args.pid is not None or args.json:
            raise UserError("--openmetrics takes neither -p nor --json")
        print(openmetrics(args.file), end="")
        return 0
    summary = summarize(args.file, args.pid)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(render(summary))
    return 0


# --- plain text -----------------------------------------------------------------

def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def usec(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


def proc(pid: int, comm: str | None) -> str:
    return f"pid {pid} ({printable(comm)})" if comm is not None else f"pid {pid}"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def breakdown(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def result_text(move: dict) -> str:
    if move["errno"] is None:
        return "ok"
    return f"{move['errno']} after {size(move['move'])}" if move["move"] > 0 else move["errno"]


def _header(s: dict) -> list[str]:
    t = s["trace"]
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["start_wall"]))
    duration = f"{t['duration_s']:.1f} s" if t["duration_s"] is not None else "unknown duration"
    lines = [f"uffdtrace report: {printable(t['path'])}",
             f"  recorded {started} for {duration} on Linux {printable(t['kernel_release'])}, "
             f"{t['tier']} tier ({t['probes']} probes), uffdtrace "
             f"{printable(t['uffdtrace_version'])}, trace format {t['format_version']}"]
    f = t["filters"]
    what = [f"pid {f['pid']}" if f["pid"] else "", f"tid {f['tid']}" if f["tid"] else "",
            "failed moves only" if f["failed_only"] else "",
            "command: " + printable(" ".join(f["command"])) if f["command"] else "",
            f"successes sampled 1 in {t['success_sample']}" if t["success_sample"] > 1 else "",
            "caller stacks" if t.get("stacks") else ""]
    lines.append("  traced: " + ("; ".join(w for w in what if w) or "every process"))
    if t["complete"]:
        status = f"complete ({printable(t['end_reason'])}"
        status += f", command exit status {t['command_status']})" \
            if t["command_status"] is not None else ")"
    else:
        status = "INCOMPLETE: no footer, the recorder did not finish (killed?)"
    lines.append(f"  trace: {status}, {t['records']} records")
    if t["truncated"]:
        lines.append(f"  note: {printable(t['truncated'])}")
    lines += [f"  warning: {printable(w)}" for w in t["warnings"]]
    if s["selected_pid"] is not None:
        lines.append(f"  showing pid {s['selected_pid']} only")
    lines.append("  evidence levels: observed = seen in the kernel; inferred = read from "
                 "/proc right after the call; errno = the errno alone")
    return lines


def _totals(s: dict) -> list[str]:
    t = s["totals"]
    lines = ["", f"TOTALS (from {t['source']})",
             f"  {plural(t['moves'], 'move')}: {t['ok']} ok, {t['failed']} failed ({pct(t['failure_rate'])})"
             f", of which {t['partial']} partial; {size(t['bytes_moved'])} moved "
             f"(from {t['bytes_source']})"]
    if t["repeated_failures"]:
        lines.append(f"  failures in the trace: {t['failures_recorded']}, of which "
                     f"{t['repeated_failures']} as repeat counts (a thread's identical "
                     "failures, coalesced in the kernel)")
    lines += [f"  note: {printable(n)}" for n in t["notes"]]
    return lines


def _processes(s: dict, limit: int = 20) -> list[str]:
    rows = s["processes"]
    if not rows:
        return ["", "PROCESSES", "  no moves"]
    lines = ["", "PROCESSES",
             f"  {'PID':>8} {'COMM':<16} {'MOVES':>9} {'FAILED':>8} {'PARTIAL':>8} "
             f"{'MOVED':>11} {'TLB/PAGE':>9}"]
    for r in rows[:limit]:
        per_page = "-" if r["tlb_flushes_per_moved_page"] is None \
            else f"{r['tlb_flushes_per_moved_page']:.3f}"
        comm = printable(r["comm"]) if r["comm"] is not None else "?"
        lines.append(f"  {r['pid']:>8} {comm:<16.16} {r['moves']:>9} {r['failed']:>8} "
                     f"{r['partial']:>8} {size(r['bytes_moved']):>11} {per_page:>9}")
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more processes (--json lists them all)")
    return lines


def _causes(s: dict) -> list[str]:
    rows = s["causes"]
    if not rows:
        return ["", "FAILURE CAUSES", "  no failed moves"]
    lines = ["", "FAILURE CAUSES (most frequent first)"]
    for i, c in enumerate(rows, 1):
        errno = breakdown(c["errno"])
        lines.append(f"  {i}. {c['cause']}: {plural(c['count'], 'failed move')} ({pct(c['share'])}; "
                     f"{errno}); evidence: {breakdown(c['evidence'])}")
        known = "" if c["known"] else " [text from the trace: this uffdtrace does not know " \
                                        "this cause]"
        lines.append(f"     why: {printable(c['explanation'])}{known}")
        lines.append(f"     fix: {printable(c['remedy'])}")
        who = ", ".join(f"{proc(p['pid'], p['comm'])} {p['moves']}" for p in c["processes"])
        if c["more_processes"]:
            who += f", and {c['more_processes']} more"
        lines.append(f"     processes: {who}")
        for i in c.get("issuers", []):
            lines.append(f"     issued by: {printable(i['stack'])} "
                         f"({plural(i['moves'], 'move')})")
        if c.get("more_issuers"):
            lines.append(f"       and {plural(c['more_issuers'], 'other stack')}")
        e = c["example"]
        at = f" at {e['fail_addr']:#x}" if e["fail_addr"] is not None else ""
        lines.append(f"     first: {e['t_s']:.6f} s {proc(e['pid'], e['comm'])} moved "
                     f"src {e['src']:#x} -> dst {e['dst']:#x} len {size(e['len'])}: "
                     f"{result_text(e)}{at}")
        culprit = records.culprit(e)
        if culprit is not None:
            lines.append(f"       {printable(culprit.describe())}")
        lines += [f"       {printable(n)}" for n in e["notes"][:3]]
    return lines


def _latencies(s: dict) -> list[str]:
    rows = s["worst_latencies"]
    if not rows:
        return []
    lines = ["", f"WORST LATENCIES ({len(rows)})",
             f"  {'TIME(s)':>11} {'PID':>8} {'TID':>8} {'COMM':<16} {'LEN':>10} {'LATENCY':>10} "
             f"{'TLB':>4}  RESULT"]
    for r in rows:
        lines.append(f"  {r['t_s']:>11.6f} {r['pid']:>8} {r['tid']:>8} "
                     f"{printable(r['comm']):<16.16} {size(r['len']):>10} "
                     f"{usec(r['latency_us']):>10} {r['tlb_flushes']:>4}  {result_text(r)}"
                     + ("" if r["errno"] is None else f" ({r['cause']})"))
    if s["worst_latencies_note"]:
        lines.append(f"  note: {s['worst_latencies_note']}")
    hist = s["latency_histogram"]
    if hist:
        lines.append("  all moves (in-kernel log2 histogram): " + ", ".join(
            f"<{usec(h['below'] / 1000)} {h['count']}" for h in hist))
    return lines


def _tlb(s: dict) -> list[str]:
    t = s["tlb"]
    if t["flushes_per_moved_page"] is None:
        per = "no pages moved"
    else:
        per = f"{t['flushes_per_moved_page']:.3f} TLB flushes per moved page"
    assumed = "" if s["trace"]["page_size_known"] else \
        f" (page size assumed {s['trace']['page_size']}: not in this trace's header)"
    lines = ["", "TLB FLUSHES",
             f"  {per}: {plural(t['flushes'], 'flush', 'flushes')} "
             f"({t['full_flushes']} whole-mm, "
             f"{t['remote_ipis']} IPIs to other CPUs) for {t['pages_moved']:g} pages moved"
             f"{assumed}"]
    if t["estimate"]:
        lines.append(f"  note: {t['estimate']}")
    return lines


def _pinners(s: dict) -> list[str]:
    lines = ["", "PINNED PAGES (processes holding pins on pages a move needed)"]
    blocking = [p for p in s["pinners"] if p["blocked_moves"]]
    if not blocking:
        registered = len(s["pinners"])
        return lines + ["  no move failed on a pin seen being registered"
                        + (f" ({registered} processes registered pins)" if registered else "")]
    for p in blocking:
        ranges = ", ".join(f"{a:#x}+{size(n)}" for a, n in p["ranges"][:3])
        lines.append(f"  {proc(p['pid'], p['comm'])} via {printable(p['method'])} "
                     f"[{ranges}] blocked {plural(p['blocked_moves'], 'move')}:")
        if p.get("pinned_by"):
            lines.append(f"    pinned by: {printable(p['pinned_by'])}")
        if p.get("kernel_path"):
            lines.append(f"    in the kernel: {printable(p['kernel_path'])}")
        for v in p["blocked"]:
            own = " (its own pages)" if v["same_process"] else ""
            lines.append(f"    {proc(v['pid'], v['comm'])}: {plural(v['moves'], 'move')}{own}")
    return lines


def _ksm(s: dict) -> list[str]:
    if not s["ksm"]:
        return []
    lines = ["", "KSM-MERGED PAGES"]
    for k in s["ksm"]:
        who = f"ksmd (pid {k['ksmd_pid']})" if k["ksmd_pid"] is not None else \
            "KSM (merged before tracing started)"
        when = f", first merge at {k['first_merge_s']:.6f} s" \
            if k["first_merge_s"] is not None else ""
        victims = ", ".join(f"{proc(v['pid'], v['comm'])} {v['moves']}" for v in k["blocked"])
        lines.append(f"  {who}{when}: blocked {plural(k['blocked_moves'], 'move')} ({victims})")
    return lines


def _unread_events(s: dict) -> list[str]:
    rows = s.get("unread_events") or []
    if not rows:
        return []
    lines = ["", "UNREAD UFFD EVENTS (mmap_changing: moves refused until the monitor reads them)"]
    for r in rows:
        by = r["raised_by"]
        lines.append(f"  UFFD_EVENT_{r['event'].upper()} raised by "
                     f"{proc(by['pid'], by['comm'])} tid {by['tid']}: "
                     f"blocked {plural(r['blocked_moves'], 'move')} of {proc(r['pid'], r['comm'])}"
                     f" from {r['first_s']:.6f} s" + (
                         f", unread for at least {r['unread_at_least_ms']:g} ms"
                         if r["unread_at_least_ms"] is not None else ""))
    return lines


def _move_paths(s: dict, limit: int = 20) -> list[str]:
    mp = s.get("move_paths")
    if mp is None:
        return []
    lines = ["", "MOVE PATHS (the path each moved page took, and the large folios split)"]
    if not mp["seen"]:
        return lines + [f"  {mp['note']}"]
    if mp["estimate"]:
        lines.append(f"  note: {printable(mp['estimate'])}")
    for r in mp["processes"][:limit]:
        lines.append(f"  {proc(r['pid'], r['comm'])}: {r['summary']}")
    if len(mp["processes"]) > limit:
        lines.append(f"  ... and {len(mp['processes']) - limit} more processes "
                     "(--json lists them all)")
    if not mp["processes"]:
        lines.append("  no move recorded")
    return lines


# what a move or UFFDIO_WAKE did to a thread asleep in its range
OUTCOMES = {"woken": "woken", "dontwake": "left asleep (DONTWAKE; no UFFDIO_WAKE seen after it)",
            "not_moved": "left asleep (the move failed before its page)",
            "unknown": "woken unless the move failed before its page (its move record is missing)"}


def _waited(r: dict) -> str:
    if r["wait_evidence"] == "exact":
        return f"waited {r['waited_ms']:g} ms"
    return f"waited at least {r['waited_ms']:g} ms"


def _woken_threads(s: dict) -> list[str]:
    w = s.get("woken_threads") or {}
    rows, counts = w.get("rows") or [], w.get("counts") or {}
    if not rows and not any(counts.values()):
        return []
    lines = ["", "WOKEN FAULTING THREADS (asleep in a uffd page fault when a move or UFFDIO_WAKE "
             "began)",
             f"  {plural(counts['woken_by_move'], 'thread')} woken by a move, "
             f"{counts['woken_by_wake']} by UFFDIO_WAKE, {counts['left_by_dontwake']} left "
             f"asleep by DONTWAKE, {counts['not_moved']} by a move that failed before their "
             f"page, {counts['unknown']} unknown (move record missing)"]
    for r in rows:
        how = OUTCOMES[r["outcome"]]
        by = "UFFDIO_WAKE" if r["by"] == "wake" else "move"
        line = (f"  tid {r['tid']} of {proc(r['pid'], r['comm'])} at {r['addr']:#x}: "
                f"{_waited(r)}; {how} by the {by} of {proc(r['by_pid'], r['by_comm'])} tid "
                f"{r['by_tid']} at {r['at_s']:.6f} s")
        dw = r["after_dontwake_move"]
        if dw is not None:
            line += (f", after a DONTWAKE move by tid {dw['tid']} ({printable(dw['comm'])}) "
                     f"at {dw['at_s']:.6f} s")
        lines.append(line)
    notes = []
    if w["rows_dropped"]:
        notes.append(f"{w['rows_dropped']} more not listed")
    if w["undescribed"]:
        notes.append(f"{w['undescribed']} more waiters were counted beyond the 4 a record "
                     "describes")
    if w["raced"]:
        notes.append(f"{plural(w['raced'], 'walk')} of a fault queue raced with the kernel: "
                     "some waiters may be missing")
    if rows and any(r["wait_evidence"] != "exact" for r in rows):
        notes.append("`at least`: first seen asleep by the tracer (tracepoint tier: no hook "
                     "on page faults); the kernel tier times each fault exactly")
    lines += [f"  note: {n}" for n in notes]
    return lines


def _drops(s: dict) -> list[str]:
    d = s["drops"]
    if "ringbuf_drops" not in d:
        return ["", "DROPS", "  unknown: the trace has no aggregates record"]
    lost, successes_lost = d["ringbuf_drops"], d.get("success_drops", 0)
    verdicts = []
    if lost:
        verdicts.append(f"{lost} failed moves or pins were not recorded (ring buffer full)")
    if d.get("repeat_drops"):
        verdicts.append(f"{d['repeat_drops']} repeated failures were not recorded (their "
                        "repeat count was lost: ring buffer full)")
    if successes_lost:
        verdicts.append(f"{successes_lost} successful moves were not recorded (success ring "
                        "buffer full)")
    verdict = "; ".join(verdicts) + "; the totals still count them" if verdicts \
        else "no event lost"
    lines = ["", "DROPS",
             f"  {verdict}; unreadable move arguments {d.get('arg_read_fails', 0)}, "
             f"in-flight table full {d.get('inflight_full', 0)}"]
    if d.get("recursion_misses"):
        lines.append(f"  {d['recursion_misses']} hook runs skipped by the kernel (BPF recursion "
                     "protection: a thread entered a program already running on its CPU): the "
                     "moves, pins or move steps they would have seen are not recorded, and a "
                     "move whose entry or exit was skipped is missing from the totals too")
    full = {k: d.get(k, 0) for k in MAP_FULL_COUNTERS}
    if any(full.values()):
        lines.append(f"  full in-kernel maps: {full['outcomes_full']} moves missing from the "
                     f"per-process counts, {full['follow_full']} children of the command not "
                     f"followed, {full['saved_args_full']} kprobe exits without their "
                     "arguments")
    return lines


def render(s: dict) -> str:
    lines = _header(s) + _totals(s) + _processes(s) + _causes(s) + _latencies(s) + _tlb(s) \
        + _move_paths(s) + _pinners(s) + _ksm(s) + _unread_events(s) + _woken_threads(s) \
        + _drops(s)
    return "\n".join(lines)
