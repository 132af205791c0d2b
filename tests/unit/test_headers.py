"""headers.find() says what bcc 0.26 will compile against, never more."""
from pathlib import Path

from uffdtrace.kernel import headers


def _kheaders_or_none(found: headers.Headers) -> bool:
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return found.source == "kheaders"
    return found.path is None


def test_a_source_tree_with_include_is_taken_with_its_release(tmp_path, monkeypatch):
    (tmp_path / "include/config").mkdir(parents=True)
    (tmp_path / "include/config/kernel.release").write_text("6.1.0-test\n")
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    found = headers.find("6.1.0-test")
    assert found.path == str(tmp_path) and found.source == "BCC_KERNEL_SOURCE"
    assert found.release == "6.1.0-test" and found.matches_running


def test_bcc_kernel_source_without_include_is_not_headers(tmp_path, monkeypatch):
    # bcc itself falls through to kheaders here; reporting the empty tree as
    # found let bcc compile with no headers at all, and it crashed.
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    found = headers.find()
    assert _kheaders_or_none(found)
    if found.path is None:
        assert "scripts/setup.sh" in found.to_json()["hint"]


def test_an_unknown_release_has_no_build_tree(monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    assert _kheaders_or_none(headers.find("0.0.0-no-such-kernel"))
