"""`uffdtrace doctor` against facts this test reads for itself."""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from tests.helpers import uffdtrace, uffdtrace_json
from uffdtrace.tiers import NO_TIER


def kernel_config() -> dict[str, str] | None:
    try:
        text = gzip.open("/proc/config.gz", "rt").read()
    except OSError:
        return None
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


def kallsyms_text_symbols() -> set[str]:
    with open("/proc/kallsyms") as f:
        return {parts[2].split(".")[0] for parts in map(str.split, f)
                if len(parts) >= 3 and parts[1] in "Tt"}


@pytest.fixture(scope="module")
def report(request):
    if os.geteuid() != 0:
        pytest.skip("doctor's attach probes need root")
    return uffdtrace_json("doctor")


def test_identity_and_uffdio_move(report):
    assert report["kernel_release"] == os.uname().release
    # move_pages() exists in a kernel exactly when it implements UFFDIO_MOVE
    assert report["uffdio_move_supported"] == ("move_pages" in kallsyms_text_symbols())


def test_function_inventory_matches_kallsyms(report):
    symbols = kallsyms_text_symbols()
    assert report["functions"], "no functions reported"
    for name, info in report["functions"].items():
        assert (info["kallsyms"] is not None) == (name in symbols), name
        if info["kallsyms"] is None:   # inlined or absent: nothing to hook
            assert not info["kprobe"]["attaches"] and not info["fentry"]["attaches"]


def test_kprobe_attach_agrees_with_kernel_config(report):
    config = kernel_config()
    if config is None:
        pytest.skip("no /proc/config.gz to compare with")
    kprobes_built = config.get("CONFIG_KPROBES") == "y"
    assert report["bpf_program_kinds"]["kprobe"]["attaches"] == kprobes_built
    assert report["functions"]["move_pages"]["kprobe"]["attaches"] == kprobes_built


def test_btf_and_settings(report):
    assert report["btf"]["present"] == Path("/sys/kernel/btf/vmlinux").exists()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    assert report["thp"]["enabled"] == re.search(r"\[(\w+)\]", thp).group(1)
    assert report["ksm"]["run"] == Path("/sys/kernel/mm/ksm/run").read_text().strip()


def test_tracefs_is_mounted_after_doctor(report):
    assert report["tracefs"]["path"]
    assert Path(report["tracefs"]["path"], "events/syscalls/sys_enter_ioctl/id").exists()


def test_tier_follows_from_what_attached(report):
    move_pages = report["functions"]["move_pages"]
    kernel_hook = move_pages["fentry"]["attaches"] or move_pages["kprobe"]["attaches"]
    headers_match = report["kernel_headers"]["matches_running_kernel"]
    if kernel_hook and headers_match:
        assert report["tier"] == "kernel"
    elif report["bpf_program_kinds"]["tracepoint"]["attaches"] and report["bcc"]["compiles"]:
        assert report["tier"] == "tracepoint"
    else:
        assert report["tier"] == NO_TIER
    assert report["tier_reason"]


def test_exit_status_follows_tier(report):
    proc = uffdtrace("doctor")
    assert proc.returncode == (1 if report["tier"] == NO_TIER else 0)
    assert f"tier              {report['tier'].upper()}" in proc.stdout


def test_unprivileged_doctor_says_why_and_fails():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")

    def drop_to_nobody():
        os.setgid(65534)
        os.setuid(65534)

    proc = uffdtrace("doctor", "--json", preexec=drop_to_nobody)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["tier"] == NO_TIER and "root" in out["tier_reason"]
    # UFFDIO_MOVE support is still probed for an ordinary user
    assert out["uffdio_move_supported"] == ("move_pages" in kallsyms_text_symbols())
    # the tracer stops for the very reason doctor gives: one decision
    traced = uffdtrace("trace", "-d", "1", preexec=drop_to_nobody)
    assert traced.returncode == 2
    assert traced.stderr.strip() == f"uffdtrace: {out['tier_reason']}"


def test_vma_reader_and_its_maple_tree_facts_are_listed(report):
    """doctor lists the maple-tree facts the VMA reader walks by, with where
    each came from (BTF), and says whether the reader runs."""
    from uffdtrace.kernel import btf
    lines = report["kernel_layout"]
    b = btf.Btf.load()
    root = b.member("mm_struct", "mm_mt.ma_root")
    assert f"  UT_L_MM_MT_ROOT = {root.byte_offset}  (offsetof(mm_struct.mm_mt.ma_root), " \
        "8 bytes)" in lines
    assert any(line.startswith("  UT_L_MT_R64_PIVOTS = ") and "sizeof(maple_node.mr64.pivot)"
               in line for line in lines)
    assert any(line.startswith("  UT_L_MAPLE_ARANGE_64 = ") and "enum maple_type" in line
               for line in lines)
    assert report["vmas_at_exit"].startswith("on: ")


def test_stacks_are_available_where_they_work(report):
    """--stacks needs a stack-trace map: doctor creates one for real (the
    live --stacks tests, tests/live/test_stacks.py, take stacks here)."""
    assert report["stacks"].startswith("available: a stack-trace map is created")
