"""Plain-text tables of the results, and the issue's targets checked
against them (met / not met / not run, with the numbers)."""
from __future__ import annotations

from .stats import pct, si

TARGETS = {
    "move_4k_tracepoint": ("traced 4 KiB move throughput >= 95% of untraced (tracepoint tier)", 0.95),
    "move_4k_kernel": ("traced 4 KiB move throughput >= 90% of untraced (kernel tier)", 0.90),
    "bystander": ("bystander ioctl overhead <= 3%", 0.97),
    "bystander_kernel": ("bystander ioctl overhead <= 3% (kernel tier)", 0.97),
    "vs_bpftrace": ("at least as cheap as the bpftrace one-liner (4 KiB moves, bystander ioctls)", None),
    "zero_drops": ("zero drops up to 200,000 moves/s with all failures kept", 200_000),
    "collector_cpu": ("collector under half a core at 100,000 moves/s", 0.5),
    "startup": ("first event within 3 s of start", 3.0),
}


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def _range(r) -> str:
    return f"[{r[0] * 100:.0f}-{r[1] * 100:.0f}]" if r else ""


def condition_label(comp: dict, key: str) -> str:
    label = comp["labels"][key]
    tiers = comp["tiers"].get(key)
    return f"{label} ({'/'.join(tiers)} tier)" if tiers else label


def comparison(title: str, comp: dict, unit: str, ratios_only: bool = False) -> list[str]:
    """One table per workload: its rate untraced, and each condition's rate,
    paired ratio, ratio by CPU time and tracer CPU.  ratios_only (TCG) shows
    the untraced rate alone, for scale."""
    lines = [title]
    header = ["", "ops/s", "traced/untraced [range]", "by CPU time", "tracer CPU"]
    notes = comp.get("workload_notes", {})
    skipped_workloads = comp.get("skipped_workloads", {})
    for wl, wl_label in comp["workload_labels"].items():
        if wl in skipped_workloads:
            lines.append(f"  {wl_label}: not run here: {skipped_workloads[wl]}")
            continue
        rows = [[wl_label, *header[1:]]]
        for key in comp["conditions"]:
            label = "  " + condition_label(comp, key)
            if key in comp["skipped"]:
                rows.append([label, "not run here: " + comp["skipped"][key], "", "", ""])
                continue
            cell = comp["cells"][f"{key}/{wl}"]
            base = key == comp["conditions"][0]
            rows.append([
                label,
                "" if ratios_only and not base else si(cell["rate_median"], unit),
                f"(reps {_range(cell['rate_spread'])} of median)" if base else
                f"{pct(cell['ratio_median'])} {_range(cell['ratio_range'])}",
                "" if base else pct(cell["cpu_ratio_median"]),
                "" if base else f"{cell['tracer_cores_median']:.2f} cores",
            ])
        table = _table(rows)
        if wl in notes:
            table.insert(1, f"    ({notes[wl]})")
        lines += table
    for p in comp["problems"]:
        lines.append(f"  ! {p}")
    return lines


def collector(res: dict) -> list[str]:
    lines = [f"Collector throughput (4 KiB storm, 1 move in {res['fail_every']} fails; "
             f"{res['seconds']:g} s per point; `-p` = the bench process)"]
    rows = [["", "target", "achieved", "recorded ok", "failures kept", "drops",
             "counted only", "collector CPU"]]
    for r in res["rows"]:
        rows.append([
            "  " + r["label"], si(r["target_rate"], "/s") if r["target_rate"] else "max",
            si(r["achieved_rate"], "/s"), str(r["successes_recorded"]),
            f"{r['failures_recorded']}/{r['failures_made']}", str(r["drops"]),
            str(r["unsent"]), f"{r['collector_cores']:.2f} cores"])
    for key, why in res["skipped"].items():
        rows.append(["  " + key, "not run here: " + why, "", "", "", "", "", ""])
    return lines + _table(rows)


def startup(res: dict) -> list[str]:
    if "skipped" in res:
        return ["Startup", f"  not run here: {res['skipped']}"]
    first = res["first_event_s"]
    return ["Startup (`uffdtrace record` launched while moves run at "
            f"{res['background_rate']}/s; median of {res['reps']})",
            f"  attached (\"Recording\" printed): {res['ready_s']:.2f} s "
            f"[{res['ready_range'][0]:.2f}-{res['ready_range'][1]:.2f}]",
            "  first move in the trace file:   " +
            (f"{first:.2f} s [{res['first_event_range'][0]:.2f}-{res['first_event_range'][1]:.2f}]"
             if first is not None else "not seen within the timeout")]


def hook_costs(res: dict) -> list[str]:
    lines = [f"Where the time goes: kernel-side cost per operation, CPU ns added "
             f"(median of {res['rounds']} paired rounds [interquartile range]; no collector)"]
    rows = [["", *res["workloads"]],
            ["  untraced", *[f"{ns:.0f} ns" for ns in res["untraced_ns"]]]]
    for r in res["rows"]:
        rows.append(["  " + r["label"], *[f"+{c['median_ns']:.0f} [{c['q1']:+.0f},{c['q3']:+.0f}]"
                                          for c in r["cost"]]])
    return lines + _table(rows)


def _overhead(ratio: float | None) -> str:
    """Throughput ratio -> extra time per operation."""
    return "-" if ratio is None else f"+{(1 / ratio - 1) * 100:.0f}%"


def _ratio(comp: dict | None, cond: str, wl: str) -> float | None:
    if not comp or cond in comp["skipped"]:
        return None
    cell = comp["cells"].get(f"{cond}/{wl}")
    return cell and cell["ratio_median"]


def targets(results: dict) -> list[str]:
    """One line per target: MET / NOT MET / NOT RUN and the numbers."""
    moves, bys = results.get("move-overhead"), results.get("bystander")
    kernel, coll, start = results.get("kernel-tier"), results.get("collector"), results.get("startup")
    out = ["Targets (issue 7)"]

    def line(key, met, detail):
        verdict = "NOT RUN" if met is None else ("MET" if met else "NOT MET")
        out.append(f"  [{verdict:7}] {TARGETS[key][0]}: {detail}")

    r_c = _ratio(moves, "uffdtrace-cheap", "move-4k")
    r_s, r_a = _ratio(moves, "uffdtrace-sampled", "move-4k"), _ratio(moves, "uffdtrace", "move-4k")
    floor_m = _ratio(moves, "hook-floor", "move-4k")
    line("move_4k_tracepoint", None if r_c is None else r_c >= 0.95,
         f"sampled without cost stats {pct(r_c)}, sampled {pct(r_s)}, every event {pct(r_a)}; "
         f"empty BPF programs on the 2 ioctl tracepoints alone: {pct(floor_m)}")
    if kernel and "skipped_all" not in kernel:
        rk = _ratio(kernel, "uffdtrace-cheap", "move-4k")
        rk_all = _ratio(kernel, "uffdtrace", "move-4k")
        rk_tp = _ratio(kernel, "uffdtrace-cheap-tracepoint", "move-4k")
        line("move_4k_kernel", None if rk is None else rk >= 0.90,
             f"sampled without cost stats {pct(rk)}, every event {pct(rk_all)}; the tracepoint "
             f"tier on the same kernel: {pct(rk_tp)}")
        bk = _ratio(kernel, "uffdtrace-cheap", "ioctl")
        bk_tp = _ratio(kernel, "uffdtrace-cheap-tracepoint", "ioctl")
        line("bystander_kernel", None if bk is None else bk >= 0.97,
             f"overhead {_overhead(bk)} per ioctl; the tracepoint tier on the same kernel: "
             f"{_overhead(bk_tp)}")
    else:
        why = (kernel or {}).get("skipped_all", "section not selected")
        line("move_4k_kernel", None, why)
        line("bystander_kernel", None, why)
    b = _ratio(bys, "uffdtrace-nocost", "ioctl")
    b_all = _ratio(bys, "uffdtrace", "ioctl")
    floor = _ratio(bys, "hook-floor", "ioctl")
    line("bystander", None if b is None else b >= 0.97,
         f"overhead {_overhead(b)} per ioctl without cost stats, {_overhead(b_all)} with; "
         f"empty BPF programs on the same 2 tracepoints alone: {_overhead(floor)}")
    bt_m, bt_b = _ratio(moves, "bpftrace", "move-4k"), _ratio(bys, "bpftrace", "ioctl")
    if None in (r_c, bt_m, b, bt_b):
        line("vs_bpftrace", None, "needs the move-overhead and bystander sections and bpftrace")
    else:
        line("vs_bpftrace", r_c >= bt_m and b >= bt_b,
             f"4 KiB moves {pct(r_c)} vs bpftrace {pct(bt_m)}; "
             f"bystander ioctls {pct(b)} vs bpftrace {pct(bt_b)}")
    if coll and coll.get("rows"):
        for key, label in (("uffdtrace-sampled", "sampled"), ("uffdtrace", "every event")):
            rows = sorted((r for r in coll["rows"] if r["config"] == key),
                          key=lambda r: r["target_rate"] or float("inf"))
            if not rows:
                continue
            clean = 0.0
            for r in rows:
                if r["drops_max"] or not r["all_failures_kept"]:
                    break
                clean = max(clean, r["achieved_rate"])
            hundred = next((r for r in rows if r["target_rate"] == 100_000), None)
            line("zero_drops", clean >= 200_000 * 0.98,
                 f"{label}: no drop and every failure kept up to {si(clean, '/s')}")
            if hundred:
                line("collector_cpu", hundred["collector_cores"] < 0.5,
                     f"{label}: {hundred['collector_cores']:.2f} cores at "
                     f"{si(hundred['achieved_rate'], '/s')}")
    else:
        line("zero_drops", None, "collector section not run")
        line("collector_cpu", None, "collector section not run")
    if start and "first_event_s" in start and start["first_event_s"] is not None:
        line("startup", start["first_event_s"] <= 3.0, f"{start['first_event_s']:.2f} s")
    else:
        line("startup", None if not start else False,
             (start or {}).get("skipped", "startup section not run"
                               if not start else "no event within the timeout"))
    return out


def machine(info: dict) -> list[str]:
    la0, la1 = info["loadavg_start"], info.get("loadavg_end", ("?",) * 3)
    busy = info.get("busy_cpus")
    return [f"Machine: {info['cpu']} x {info['cpus']} CPUs, {info['memory_gib']} GiB, "
            f"kernel {info['kernel']}, bpftrace: {info['bpftrace'] or 'absent'}",
            f"Load: loadavg {la0[0]:.2f} at start, {la1[0]:.2f} at end; busy CPUs during "
            f"measurements (ours included): median {busy:.2f} of {info['cpus']}"
            if busy is not None else f"Load: loadavg {la0[0]:.2f} at start",
            f"Run: {info['date']}, {info['reps']} repetitions, {info['seconds']:g} s per point"]
