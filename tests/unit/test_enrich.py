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
