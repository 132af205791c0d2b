"""Enrichment reads /proc of a process that may exit at any moment."""
from __future__ import annotations

import os
import subprocess

from uffdtrace.enrich import enrich, read_vmas


def test_exited_process_gives_an_error_not_an_exception():
    proc = subprocess.Popen(["true"])
    proc.wait()
    en = enrich(proc.pid, 0x10000, 0x20000)
    assert en.error and "exited" in en.error
    assert en.src_vma is None and en.src_page is None


def test_own_vmas_are_found_with_their_flags():
    buf = bytearray(1 << 20)   # heap memory: anonymous, private, writable
    import ctypes
    addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    vma = read_vmas(os.getpid(), [addr])[addr]
    assert vma is not None and vma.start <= addr < vma.end
    assert "wr" in vma.flags and not vma.shared and vma.anonymous


def test_vmas_without_flags_come_from_maps_and_agree_with_smaps():
    buf = bytearray(1 << 20)
    import ctypes
    addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    with_flags = read_vmas(os.getpid(), [addr])[addr]
    cheap = read_vmas(os.getpid(), [addr], vm_flags=False)[addr]
    assert cheap.flags is None and cheap.to_json()["flags"] is None
    assert (cheap.start, cheap.end, cheap.perms, cheap.path) == \
        (with_flags.start, with_flags.end, with_flags.perms, with_flags.path)
    assert not cheap.shared and cheap.anonymous


def test_address_outside_every_vma_is_none_either_way():
    for vm_flags in (True, False):
        assert read_vmas(os.getpid(), [8], vm_flags=vm_flags) == {8: None}
