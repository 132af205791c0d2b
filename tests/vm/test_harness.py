"""The VM harness itself: Debian index handling, initramfs building, and
(with QEMU) that status, output and failures come back as promised."""
from __future__ import annotations

import os
import re
import subprocess
import shutil

import pytest

from tests.vm import debian, harness, initramfs, kernels

PACKAGES = """\
Package: linux-image-7.1.1+deb13-amd64
Version: 7.1.1-1~bpo13+1
Depends: dracut | initramfs-tools, linux-binary-7.1.1+deb13-amd64 (= 7.1.1-1~bpo13+1), linux-modules-7.1.1+deb13-amd64 (= 7.1.1-1~bpo13+1)
Filename: pool/main/l/linux/image.deb
Size: 1900
SHA256: aa

Package: linux-binary-7.1.1+deb13-amd64
Version: 7.1.1-1~bpo13+1
Depends: linux-base (>= 4.12~)
Filename: pool/main/l/linux/binary.deb
Size: 14000000
SHA256: bb

Package: linux-modules-7.1.1+deb13-amd64
Version: 7.1.1-1~bpo13+1
Depends: kmod
Filename: pool/main/l/linux/modules.deb
Size: 100000000
SHA256: cc

Package: linux-headers-7.1.1+deb13-amd64
Version: 7.1.1-1~bpo13+1
Depends: gcc-14-for-host, linux-headers-7.1.1+deb13-common (= 7.1.1-1~bpo13+1), linux-kbuild-7.1.1+deb13
Filename: pool/main/l/linux/headers.deb
Size: 1800000
SHA256: dd

Package: linux-headers-7.1.1+deb13-common
Version: 7.1.1-1~bpo13+1
Filename: pool/main/l/linux/common.deb
Size: 11000000
SHA256: ee

Package: linux-kbuild-7.1.1+deb13
Version: 7.1.1-1~bpo13+1
Filename: pool/main/l/linux/kbuild.deb
Size: 1400000
SHA256: ff

Package: linux-image-6.17.2+deb13-amd64
Version: 6.17.2-1~bpo13+1
Filename: pool/main/l/linux/old.deb
Size: 1
SHA256: 00
"""


@pytest.mark.parametrize("a, b, expected", [
    ("6.12.90-2~bpo12+1", "6.12.90-1~bpo12+1", 1),
    ("7.3.4-1~bpo13+1", "7.2.12-1~bpo13+1", 1),
    ("6.12.95-1~bpo12+1", "6.12.9-1", 1),
    ("1.0~rc1-1", "1.0-1", -1),
    ("1:1.0-1", "2.0-1", 1),
    ("6.12.95-1", "6.12.95-1", 0),
    # the epoch ends at the first colon: the upstream version may hold more
    ("1:2.0:3-1", "1:2.0:10-1", -1),
    ("1:2.0:3-1", "2:1.0-1", -1),
])
def test_debian_version_order_is_dpkgs(a, b, expected):
    assert debian.compare_versions(a, b) == expected
    if shutil.which("dpkg"):
        op = {1: "gt", -1: "lt", 0: "eq"}[expected]
        assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


def test_resolve_takes_newest_kernel_in_range_and_its_build_closure():
    index = debian.parse_packages(PACKAGES)
    debs = kernels.resolve(kernels.Kernel("t", "suite", (6, 18), None, ""), index)
    assert [d.package for d in debs] == [
        "linux-binary-7.1.1+deb13-amd64", "linux-headers-7.1.1+deb13-amd64",
        "linux-headers-7.1.1+deb13-common", "linux-image-7.1.1+deb13-amd64",
        "linux-kbuild-7.1.1+deb13", "linux-modules-7.1.1+deb13-amd64"]
    # generic dependencies (linux-base, kmod, gcc, dracut) are never followed


def test_resolve_says_what_is_missing():
    index = debian.parse_packages(PACKAGES.split("Package: linux-kbuild")[0])
    with pytest.raises(debian.DebianError, match="needs linux-kbuild-7.1.1"):
        kernels.resolve(kernels.Kernel("t", "suite", (7, 1), (7, 1), ""), index)
    # 6.17 is in range but has no headers in the index: not silently taken
    with pytest.raises(debian.DebianError, match="linux-headers-6.17.2.* not in the index"):
        kernels.resolve(kernels.Kernel("t", "suite", (6, 17), (7, 0), ""),
                        debian.parse_packages(PACKAGES))


def test_module_load_order_puts_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/netfs/netfs.ko.xz:\n"
        "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/fs/overlayfs/overlay.ko.xz:\n")
    order = initramfs.module_load_order(tmp_path, ["9pnet_virtio", "9p", "overlay"])
    assert order == ["kernel/fs/netfs/netfs.ko.xz", "kernel/net/9p/9pnet.ko.xz",
                     "kernel/net/9p/9pnet_virtio.ko.xz", "kernel/fs/9p/9p.ko.xz",
                     "kernel/fs/overlayfs/overlay.ko.xz"]
    with pytest.raises(initramfs.InitramfsError, match="virtiofs"):
        initramfs.module_load_order(tmp_path, ["virtiofs"])


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio to read the archive back")
def test_cpio_archive_reads_back_with_cpio(tmp_path):
    archive = initramfs.Cpio()
    archive.dir("bin")
    archive.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    archive.file("etc.conf", b"x" * 5)
    (tmp_path / "a.cpio").write_bytes(archive.finish())
    proc = subprocess.run(["cpio", "-idv"], input=(tmp_path / "a.cpio").read_bytes(),
                          cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.access(tmp_path / "bin/tool", os.X_OK)
    assert (tmp_path / "etc.conf").read_text() == "xxxxx"


def test_job_script_quotes_arguments():
    script = harness.job_script(["printf", "%s|", "a b", "it's", "$HOME"], harness.REPO,
                                {"X": "y z"})
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert proc.stdout == "a b|it's|$HOME|"


# ---- with QEMU: the promises run_in_guest makes -------------------------------

@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """The first matrix kernel, ready to boot; job directories (kept on
    failure) go to tmp_path, not the shared cache."""
    monkeypatch.setattr(harness, "RUNS", tmp_path)
    if os.geteuid() != 0:
        pytest.skip("vm tier needs root")
    reason = harness.qemu_available()
    if reason:
        pytest.skip(f"vm tier cannot run: {reason}")
    name = kernels.MATRIX[0].name
    try:
        harness.prepare_kernel(name)
    except harness.VmUnavailable as exc:
        pytest.skip(f"vm tier cannot run: {exc}")
    return name


def test_exit_status_output_and_files_come_back(kernel):
    result = harness.run_in_guest(kernel, [
        "sh", "-c", 'echo "on $(uname -r) as $(id -u)"; echo to-stderr >&2; '
                    'echo kept > "$UFFDTRACE_JOB_DIR/extra.txt"; exit 3'], timeout=120)
    assert result.status == 3
    assert f"on {result.release} as 0\n" in result.output
    assert "to-stderr" in result.output
    assert result.files == {"extra.txt": "kept\n"}
    assert 0 < result.boot_seconds < harness.BOOT_TIMEOUT


def test_early_kernel_failure_is_retried_once_then_names_kernel_and_stage(kernel):
    with pytest.raises(harness.VmError) as err:
        # No /init to run: the kernel panics right after booting.
        harness.run_in_guest(kernel, ["true"], timeout=60, append="rdinit=/nonexistent",
                             log=lambda m: None)
    exc = err.value
    assert (exc.kernel, exc.stage) == (kernel, "boot")
    assert "Kernel panic" in exc.message
    assert len(exc.retried_because) == 1
    assert re.search(rf"VM kernel {re.escape(kernel)}: boot failed", str(exc))


def test_command_timeout_is_not_retried(kernel):
    with pytest.raises(harness.VmError) as err:
        harness.run_in_guest(kernel, ["sh", "-c", "echo started; sleep 600"], timeout=5,
                             log=lambda m: None)
    assert err.value.stage == "command"
    assert "--- last command output ---\nstarted" in str(err.value)
    assert "timed out" in err.value.message
    assert err.value.retried_because == []
