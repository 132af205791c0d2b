"""What a guest kernel offers the kernel tier, probed for real: for each
move-path function (and name patterns such as gup_*), whether kallsyms has
it, whether BTF has a FUNC for it, whether ftrace may patch it, and whether
a kprobe and an fentry program really attach; plus the tracepoints the
tracer wants.  Runs inside the VM as root:

  python -m tests.vm.guest.facts        # one JSON object on stdout
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from uffdtrace.kernel import bpfcaps, btf, tracefs

# Exact names and name patterns (regex, matched against the whole symbol
# without a compiler suffix such as .isra.0).
FUNCTION_PATTERNS = [
    r"move_pages", r"move_pages_pte", r"move_pages_ptes", r"move_pages_huge_pmd",
    r"vm_normal_folio", r"flush_tlb_mm_range", r"split_folio_to_list",
    r"__split_folio\w*", r"__split_huge_page\w*", r"split_huge_page\w*", r"\w*folio_split\w*",
    r"try_grab_folio\w*", r"gup_\w+",
    r"__gup_longterm_locked", r"pin_user_pages\w*", r"unpin_user_page\w*",
    r"folio_maybe_dma_pinned", r"io_pin_pages", r"userfaultfd_ioctl", r"uffd_move_lock",
    r"double_pt_lock",
]
TRACEPOINT_GROUPS = {"tlb": ["tlb_flush"], "ksm": None}      # None = every event


def kallsyms_text() -> dict[str, tuple[str, str]]:
    """base name -> (symbol as spelled, type) for text symbols."""
    out: dict[str, tuple[str, str]] = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            # vmlinux text only (module symbols have a 4th column); __pfx_*
            # are the padding labels in front of each function, not functions
            if len(parts) == 3 and parts[1] in "Tt" and not parts[2].startswith("__pfx_"):
                base = parts[2].split(".", 1)[0]
                if base not in out or parts[2] == base:
                    out[base] = (parts[2], parts[1])
    return out


def ftrace_functions(tfs: Path) -> set[str]:
    try:
        text = (tfs / "available_filter_functions").read_text()
    except OSError:
        return set()
    return {line.split()[0] for line in text.splitlines() if line and "[" not in line}


def matching(pattern: str, names) -> list[str]:
    rx = re.compile(pattern)
    return sorted(n for n in names if rx.fullmatch(n))


def functions_report(tfs: Path) -> dict:
    syms = kallsyms_text()
    names: list[str] = []
    missing: list[str] = []
    for pattern in FUNCTION_PATTERNS:
        found = matching(pattern, syms)
        names += [n for n in found if n not in names]
        if not found:
            missing.append(pattern)
    btf_ids = btf.find_funcs(names)
    _, kprobes = bpfcaps.probe_kprobes([syms[n][0] for n in names])
    _, fentries = bpfcaps.probe_fentry({n: btf_ids[n] for n in names})
    ftrace = ftrace_functions(tfs)
    report = {}
    for n in names:
        report[n] = {
            "kallsyms": f"{syms[n][1]} {syms[n][0]}",
            "btf": btf_ids[n] is not None,
            "ftrace": syms[n][0] in ftrace,
            "kprobe": bool(kprobes[syms[n][0]].attaches),
            "fentry": bool(fentries[n].attaches),
        }
    return {"functions": report, "absent": missing}


def tracepoints_report(tfs: Path) -> dict:
    out = {}
    for group, events in TRACEPOINT_GROUPS.items():
        present = sorted(p.name for p in (tfs / "events" / group).glob("*") if p.is_dir()) \
            if (tfs / "events" / group).is_dir() else []
        for event in events or present or [None]:
            name = f"{group}:{event}" if event else f"{group}:*"
            out[name] = event in present
    return out


def collect() -> dict:
    tfs, status = tracefs.ensure_mounted()
    if tfs is None:
        raise SystemExit(f"tracefs: {status}")
    return {"release": os.uname().release, **functions_report(tfs),
            "tracepoints": tracepoints_report(tfs)}


if __name__ == "__main__":
    json.dump(collect(), sys.stdout, indent=1)
    print()
