"""Plain-text tables of the results, and the issue's targets checked
against them (met / not met / not run, with the numbers)."""
from __future__ import annotations

from .stats import median, paired_ratios, pct, si, spread

TARGETS = {
    "move_4k_tracepoint": ("traced 4 KiB move throughput >= 95% of untraced (tracepoint tier)", 0.95),
    "move_4k_kernel": ("traced 4 KiB move throughput >= 90% of untraced (kernel tier)", 0.90),
    "bystander": ("bystander ioctl overhead <= 3%", 0.97),
    "bystander_kernel": ("bystander ioctl overhead <= 3% (kernel tier)", 0.97),
    "vs_bpftrace": ("at least as cheap as the bpftrace one-liner (4 KiB moves, bystander ioctls)", None),
    "zero_drops": ("zero drops up to 200,000 moves/s with all failures kept", 200_000),
    "collector_cpu": ("collector under half a core at 100,000 moves/s", 0.5),
    "startup": ("first event within 3 s of start", 3.0),
    # issue 14
    "failures_tracepoint": ("tracepoint tier: >= 50,000 failures/s recorded with zero loss",
                            50_000),
    "failures_kernel": ("kernel tier: failures/s recorded with zero loss (no target)", None),
    "reader_free": ("successful moves pay nothing for the page-state reader", None),
    "bystanders_kernel": ("kernel tier: each bystander >= 97% of its untraced rate", 0.97),
    "moves_kernel_vs": ("kernel tier: 4 KiB moves at least as fast as the tracepoint tier on "
                        "the same kernel and the bpftrace one-liner", None),
    # issue 15
    "storm_accounted": ("a storm of one failure at >= 500,000/s: every failure accounted for, "
                        "collector under half a core", (500_000, 0.5)),
}
# "Pays nothing": the reader's added cost per successful move is within the
# noise and under this fraction of an untraced move.
READER_FREE = 0.03
# The configuration people leave running: the kernel-tier targets are its.
CHEAPEST = "uffdtrace-cheap"
# The same with its collector stopped while measured: the hooks' own cost,
# shown beside the targets to say what limits them (tracers.StoppedRecorder).
HOOKS_ONLY = "uffdtrace-cheap-stopped"


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


def _diagnosed(diagnoses: dict[str, int]) -> str:
    """The most frequent "cause/evidence" and its share of the failures."""
    if not diagnoses:
        return "-"
    key, n = max(diagnoses.items(), key=lambda kv: kv[1])
    text = f"{key.replace('/', ' ')} {n / sum(diagnoses.values()):.0%}"
    return text + (f" (+{len(diagnoses) - 1} other)" if len(diagnoses) > 1 else "")


def _with_tier(label: str, tier: str | None) -> str:
    return f"{label} ({tier} tier)" if tier else label


def lossless_rate(rows: list[dict]) -> float:
    """The highest rate achieved before the first point, in rising target
    rate (0 = flat out, last), that lost anything in any repetition."""
    clean = 0.0
    for r in sorted(rows, key=lambda r: r["target_rate"] or float("inf")):
        if not r["lossless_all"]:
            break
        clean = max(clean, r["achieved_rate"])
    return clean


def failure_figures(res: dict) -> list[dict]:
    """Per recorder and storm: the highest rate with zero loss."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in res["rows"]:
        groups.setdefault((r["config"], r["storm"]), []).append(r)
    return [{"config": config, "storm": storm, "label": rows[0]["label"],
             "storm_label": rows[0]["storm_label"], "tier": rows[0]["tier"],
             "rate": lossless_rate(rows)} for (config, storm), rows in groups.items()]


def failure_rate(res: dict, title: str = "Failure recording") -> list[str]:
    lines = [f"{title} (paced storms of one failing 4 KiB move; {res['seconds']:g} s per "
             f"point, {res['reps']} repetition(s); `-p` = the bench process; rates above the "
             "first that lost a failure are not run)"]
    rows = [["", "", "target", "achieved", "recorded/made", "drops", "diagnosed as",
             "collector CPU", "per failure", "caught up after"]]
    for r in res["rows"]:
        rows.append([
            "  " + _with_tier(r["label"], r["tier"]), r["storm_label"],
            si(r["target_rate"], "/s") if r["target_rate"] else "max",
            si(r["achieved_rate"], "/s"), f"{r['recorded']}/{r['made']}", str(r["drops_max"]),
            _diagnosed(r["diagnoses"]), f"{r['collector_cores']:.2f} cores",
            f"{r['collector_us']:.0f} us", f"{r['lag_s']:.2f} s"])
    for key, why in res["skipped"].items():
        rows.append(["  " + key, "not run here: " + why, *[""] * 8])
    lines += _table(rows)
    lines.append("  highest rate with every failure recorded and none dropped, in every "
                 "repetition:")
    for f in failure_figures(res):
        lines.append(f"    {_with_tier(f['label'], f['tier'])}, {f['storm_label']}: "
                     f"{si(f['rate'], '/s') if f['rate'] else 'none (the lowest rate lost)'}")
    lines += [f"  ! {p}" for p in res["problems"]]
    return lines


def stacks(res: dict) -> list[str]:
    """--stacks side by side (bench/failures.py stacks_configs)."""
    from .failures import stacks_cost   # noqa: PLC0415  (report.py imports no section)

    lines = failure_rate(res, "--stacks: failure recording with and without stacks")
    lines.append("  what --stacks adds per failure sent (flat out):")
    for c in stacks_cost(res):
        lost = "" if all(c["lossless"]) else " (a flat-out point lost failures: a bound only)"
        lines.append(f"    {c['storm_label']}: {c['thread_us']:+.2f} us in the failing thread "
                     f"(of {c['thread_us_without']:.2f} us without), "
                     f"{c['collector_us']:+.1f} us of collector CPU "
                     f"(of {c['collector_us_without']:.1f} us without){lost}")
    return lines


def kernel_paths(res: dict) -> list[str]:
    title = "Kernel paths: calls per bystander operation (kprobes; * = hooked by the kernel tier)"
    if "skipped" in res:
        return [title, f"  not run here: {res['skipped']}"]
    wls = list(res["per_op"])
    rows = [["", *wls]]
    for fn in res["functions"]:
        counts = [res["per_op"][wl].get(fn, 0.0) for wl in wls]
        if any(counts):
            mark = "*" if fn in res["hooked"] else " "
            rows.append([f"  {mark} {fn}", *[f"{c:.2f}" if c else "-" for c in counts]])
    lines = [title, *_table(rows)]
    hooked = [sum(res["per_op"][wl].get(fn, 0.0) for fn in res["hooked"]) for wl in wls]
    lines.append("  hooked calls per operation: " + ", ".join(
        f"{wl} {n:.1f}" for wl, n in zip(wls, hooked)))
    if res["missing"]:
        lines.append("  not counted: " + "; ".join(f"{n} ({why})"
                                                    for n, why in res["missing"].items()))
    return lines


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
    for r in [*res["rows"], *([res["reader_cost"]] if "reader_cost" in res else [])]:
        rows.append(["  " + r["label"], *[_ns_added(c) for c in r["cost"]]])
    return lines + _table(rows)


def _ns_added(c: dict) -> str:
    return f"{c['median_ns']:+.0f} [{c['q1']:+.0f},{c['q3']:+.0f}]"


def _overhead(ratio: float | None) -> str:
    """Throughput ratio -> extra time per operation."""
    return "-" if ratio is None else f"+{(1 / ratio - 1) * 100:.0f}%"


def _ratio(comp: dict | None, cond: str, wl: str) -> float | None:
    if not comp or cond in comp["skipped"]:
        return None
    cell = comp["cells"].get(f"{cond}/{wl}")
    return cell and cell["ratio_median"]


def _verdict(key: str, met, detail: str) -> str:
    """met: True, False, None (not run) or "figure" (measured, no target)."""
    verdict = {None: "NOT RUN", True: "MET", False: "NOT MET", "figure": "FIGURE"}[met]
    return f"  [{verdict:7}] {TARGETS[key][0]}: {detail}"


def targets(results: dict) -> list[str]:
    """One line per target: MET / NOT MET / NOT RUN and the numbers."""
    return targets_issue7(results) + [""] + targets_issue14(results) + [""] + \
        targets_issue15(results)


def targets_issue7(results: dict) -> list[str]:
    moves, bys = results.get("move-overhead"), results.get("bystander")
    kernel, coll, start = results.get("kernel-tier"), results.get("collector"), results.get("startup")
    out = ["Targets (issue 7)"]

    def line(key, met, detail):
        out.append(_verdict(key, met, detail))

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
            clean = lossless_rate(rows)
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


def _failure_detail(figures: list[dict]) -> str:
    return "; ".join(f"{f['label'].removeprefix('uffdtrace record').strip() or 'as is'}, "
                     f"{f['storm_label']}: {si(f['rate'], '/s') if f['rate'] else 'none'}"
                     for f in figures)


def _reader_cost(results: dict) -> tuple[bool | None, str]:
    """The page-state reader's cost to a successful 4 KiB move: precisely
    from hook-costs (per-round difference, reader on minus off), and end to
    end from move-overhead (paired ratio, reader on / off)."""
    parts, met = [], None
    hook = results.get("hook-costs", {})
    if "reader_cost" in hook:
        c, untraced = hook["reader_cost"]["cost"][0], hook["untraced_ns"][0]
        # nothing: no more than the noise (the interquartile range of the
        # per-round differences holds zero) and its median a small fraction
        met = c["q1"] <= 0 <= c["q3"] and abs(c["median_ns"]) <= READER_FREE * untraced
        parts.append(f"{_ns_added(c)} ns per move, kernel side, {c['median_ns'] / untraced:+.1%} "
                     f"of an untraced move (hook-costs, {hook['rounds']} paired rounds)")
    moves = results.get("move-overhead")
    if moves and all(k not in moves["skipped"] for k in (CHEAPEST, CHEAPEST + "-no-state")):
        ratios = paired_ratios(moves["cells"][f"{CHEAPEST}/move-4k"]["rates"],
                               moves["cells"][f"{CHEAPEST}-no-state/move-4k"]["rates"])
        if ratios:
            lo, hi = spread(ratios)
            if met is None:
                met = lo <= 1.0 <= hi
            parts.append(f"reader on / off {pct(median(ratios))} [{lo * 100:.0f}-{hi * 100:.0f}] "
                         "of the 4 KiB move rate (move-overhead, paired)")
    return met, "; ".join(parts) or "needs the hook-costs or move-overhead section"


def _bystanders_kernel(kernel: dict) -> tuple[bool | None, str]:
    ratios = {wl: (_ratio(kernel, CHEAPEST, wl), kernel["cells"][f"{CHEAPEST}/{wl}"]
                   ["cpu_ratio_median"])
              for wl in kernel["workload_labels"]
              if not wl.startswith("move-") and wl not in kernel.get("skipped_workloads", {})
              and f"{CHEAPEST}/{wl}" in kernel["cells"]}
    if not ratios:
        return None, "no bystander ran"
    detail = ", ".join(f"{wl} {pct(r)} (CPU {pct(c)})" for wl, (r, c) in ratios.items())
    hooks_only = [(wl, _ratio(kernel, HOOKS_ONLY, wl)) for wl in ratios]
    if any(r is not None for _, r in hooks_only):
        detail += ("; collector stopped while measured (hooks only): "
                   + ", ".join(f"{wl} {pct(r)}" for wl, r in hooks_only))
    left_out = ", ".join(kernel.get("skipped_workloads", {}))
    return (all(r is not None and r >= 0.97 for r, _ in ratios.values()),
            detail + (f"; not run here: {left_out}" if left_out else ""))


def targets_issue14(results: dict) -> list[str]:
    out = ["Targets (issue 14)"]
    fr = results.get("failure-rate")
    figures = failure_figures(fr) if fr else []
    for tier, key in (("tracepoint", "failures_tracepoint"), ("kernel", "failures_kernel")):
        mine = [f for f in figures if f["tier"] == tier]
        as_is = [f["rate"] for f in mine if f["config"] == "uffdtrace"]
        if not as_is:
            out.append(_verdict(key, None, "failure-rate section not run in this tier"))
        elif key == "failures_kernel":
            out.append(_verdict(key, "figure", _failure_detail(mine)))
        else:
            out.append(_verdict(key, min(as_is) >= TARGETS[key][1], _failure_detail(mine)))
    out.append(_verdict("reader_free", *_reader_cost(results)))
    kernel = results.get("kernel-tier")
    if kernel and "skipped_all" not in kernel:
        out.append(_verdict("bystanders_kernel", *_bystanders_kernel(kernel)))
        rk = _ratio(kernel, CHEAPEST, "move-4k")
        rk_tp = _ratio(kernel, "uffdtrace-cheap-tracepoint", "move-4k")
        rk_bt = _ratio(kernel, "bpftrace", "move-4k")
        out.append(_verdict("moves_kernel_vs", None if None in (rk, rk_tp, rk_bt)
                            else rk >= rk_tp and rk >= rk_bt,
                            f"kernel tier {pct(rk)} of untraced; tracepoint tier {pct(rk_tp)}; "
                            f"bpftrace {pct(rk_bt)}; kernel tier, collector stopped while "
                            f"measured (hooks only): {pct(_ratio(kernel, HOOKS_ONLY, 'move-4k'))}"))
    else:
        why = (kernel or {}).get("skipped_all", "section not selected")
        out += [_verdict("bystanders_kernel", None, why), _verdict("moves_kernel_vs", None, why)]
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


def targets_issue15(results: dict) -> list[str]:
    """A flat-out storm of one failure, recorded as uffdtrace records by
    default (identical failures coalesced in the kernel): every failure in
    the trace, in every repetition, at what rate, at what collector cost."""
    out = ["Targets (issue 15)"]
    fr = results.get("failure-rate")
    rows = [r for r in (fr or {}).get("rows", ())
            if r["config"] == "uffdtrace" and r["target_rate"] == 0]
    if not rows:
        out.append(_verdict("storm_accounted", None, "no flat-out storm ran (failure-rate)"))
        return out
    min_rate, max_cores = TARGETS["storm_accounted"][1]
    met = all(r["lossless_all"] and r["collector_cores"] < max_cores and
              r["achieved_rate"] >= min_rate for r in rows)
    detail = "; ".join(
        f"{r['storm_label']}: {si(r['achieved_rate'], '/s')} made (the machine's flat-out "
        f"rate traced), {r['recorded']}/{r['made']} accounted for, drops {r['drops_max']}, "
        f"collector {r['collector_cores']:.2f} cores" for r in rows)
    out.append(_verdict("storm_accounted", met, detail))
    return out
