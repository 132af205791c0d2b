"""--stacks without a kernel: the one reading of a recorded stack (who
issued it, the kernel path of a pin), its place in the trace schema, the
unwind rules cfi.py reads from real binaries (the native module, built with
frame pointers, and this machine's libc), and the program compiling the
stack code out when stacks are off."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import subprocess

import jsonschema
import pytest

from tests.unit.test_hook_table import preprocessed
from uffdtrace import bpfprog, cfi, stacks
from uffdtrace.kernel_tier import FENTRY, KernelPlan
from uffdtrace.native import ffi, lib
from uffdtrace.traceschema import strict_schema

pytestmark = pytest.mark.unit

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def _stack(*frames, notes=()):
    return {"frames": list(frames), "notes": list(notes)}


WORKLOAD_STACK = _stack(
    stacks.frame("user", "ioctl+0x3b", LIBC, 0x7f00000fdd6b),
    stacks.frame("user", "uffdw_move+0x6e", "/x/uffdtrace/_native.abi3.so", 0x7f1000006f8e,
                 source=stacks.STACK_POINTER),
    stacks.frame("user", "_cffi_f_uffdw_move+0x231", "/x/uffdtrace/_native.abi3.so",
                 0x7f10000072b1),
    stacks.frame("user", None, "/usr/bin/python3.11", 0x547bb8, 0x547bb8),
    stacks.frame("user", "main+0x10", "/usr/bin/python3.11", 0x5000),
    stacks.frame("user", "__libc_start_main+0x80", LIBC, 0x7f0000023456))


def test_the_issuer_is_the_first_user_frame_outside_libc():
    assert stacks.issuer(WORKLOAD_STACK) == "uffdw_move"
    assert stacks.issued_by(WORKLOAD_STACK) == \
        "uffdw_move ← _cffi_f_uffdw_move ← python3.11+0x547bb8 ← main ← …"
    # a stack whose program frames were not symbolized names nobody
    bare = _stack(WORKLOAD_STACK["frames"][0],
                  stacks.frame("user", None, "/x/a.out", 0x401234, 0x1234))
    assert stacks.issuer(bare) is None and stacks.issued_by(bare) is None
    assert stacks.issuer(None) is None and stacks.args(None) == {}


def test_libc_is_recognised_by_its_file_name_only():
    for module in (LIBC, "/lib64/libc-2.31.so", "/usr/lib/libpthread.so.0"):
        assert stacks.in_wrapper({"module": module})
    for module in ("/x/libcrypto.so.3", "/x/mylibc.so", "/x/_native.abi3.so", None):
        assert not stacks.in_wrapper({"module": module})


def test_a_pinners_kernel_path_and_lines():
    pin = _stack(stacks.frame("kernel", "pin_user_pages_fast+0x1a", "kernel"),
                 stacks.frame("kernel", "io_sqe_buffers_register+0x9b", "kernel"),
                 stacks.frame("user", "syscall+0x19", LIBC, 0x7f0000101829),
                 stacks.frame("user", "uffdw_iouring_pin+0x6f", "/x/_native.abi3.so",
                              0x7f100000a0ff, source=stacks.STACK_POINTER),
                 notes=["process 1 exited before its stack was symbolized"])
    assert stacks.kernel_path(pin) == "pin_user_pages_fast ← io_sqe_buffers_register"
    assert stacks.issuer(pin) == "uffdw_iouring_pin"
    assert stacks.lines(pin) == [
        "k pin_user_pages_fast+0x1a [kernel]", "k io_sqe_buffers_register+0x9b [kernel]",
        "u syscall+0x19 [libc.so.6]",
        "u uffdw_iouring_pin+0x6f [_native.abi3.so] (return address at the stack pointer)",
        "note: process 1 exited before its stack was symbolized"]
    # unsymbolized frames: module+offset, else the raw address
    assert stacks.frame_label(stacks.frame("user", None, "/a/b.so", 0x7f0000001234, 0x1234)) \
        == "b.so+0x1234"
    assert stacks.frame_label(stacks.frame("user", None, None, 0x7f0000001234)) \
        == "0x7f0000001234"


def test_stacks_in_records_follow_the_schema():
    schema = strict_schema()["definitions"]
    check = jsonschema.Draft7Validator({"definitions": schema, "$ref": "#/definitions/stack"})
    assert not list(check.iter_errors(WORKLOAD_STACK))
    assert not list(check.iter_errors(None))
    # no kernel address is ever written: a kernel frame with one is invalid
    leaked = _stack({**stacks.frame("kernel", "f+0x1", "kernel"), "addr": 0xffffffff81000000})
    assert list(check.iter_errors(leaked))


def _file_offset(address: int) -> tuple[str, int]:
    """The mapped file and file offset of an address of this process."""
    for line in open("/proc/self/maps"):
        parts = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if start <= address < end:
            return parts[5].strip(), address - start + int(parts[2], 16)
    raise LookupError(hex(address))


def test_the_native_module_keeps_frame_pointers():
    """uffdw_move issues the move's ioctl: built with -fno-omit-frame-pointer
    (native/build_ffi.py), its frame is rbp-based after its prologue, which
    is what lets the user stack walk go through it."""
    fn = int(ffi().cast("uintptr_t", ffi().addressof(lib(), "uffdw_move")))
    head = ctypes.string_at(fn, 5)
    if head[0] == 0xe9:     # cffi's address is a jmp to the function
        fn += 5 + int.from_bytes(head[1:], "little", signed=True)
    path, off = _file_offset(fn)
    code = open(path, "rb").read()[off:off + 8]
    assert code[:4] == b"\x55\x48\x89\xe5", f"no frame-pointer prologue: {code.hex()}"
    assert cfi.cfa_rule(path, off) == (cfi.RSP, 8)          # at entry: the return address
    assert cfi.cfa_rule(path, off + 1) == (cfi.RSP, 16)     # after push %rbp
    assert cfi.cfa_rule(path, off + 4) == (cfi.RBP, 16)     # after mov %rsp,%rbp


def test_where_libcs_ioctl_keeps_its_return_address():
    """The slot cfi.py reads from libc's unwind table at the instruction
    after ioctl()'s syscall, against what the function's own first
    instruction reserves (`sub $N,%rsp`, or nothing for a leaf)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    path, off = _file_offset(ctypes.cast(libc.ioctl, ctypes.c_void_p).value)
    code = open(path, "rb").read()[off:off + 128]
    start = 4 if code.startswith(b"\xf3\x0f\x1e\xfa") else 0    # endbr64
    at = code.find(b"\x0f\x05", start)
    if at < 0:
        pytest.skip("this libc's ioctl() makes no syscall by itself")
    reserved = re.match(rb"\x48\x83\xec(.)", code[start:], re.S)
    expected = reserved.group(1)[0] if reserved else 0
    assert cfi.return_address_slot(path, off + at + 2) == expected


@pytest.mark.parametrize("plan", [KernelPlan(None), KernelPlan(FENTRY, {
    "userfaultfd_ioctl": "userfaultfd_ioctl", "pin_user_pages_fast": "pin_user_pages_fast"})],
    ids=["tracepoint", "kernel"])
def test_stacks_compile_out_when_off(plan):
    off = preprocessed(plan, bpfprog.ProgramConfig(stacks=False))
    on = preprocessed(plan, bpfprog.ProgramConfig(stacks=True))
    for text in ("stack_traces", "get_stackid", "take_stacks"):
        assert text not in off and text in on, text


class _StackMap:
    """A stand-in for bcc's `stack_traces` table: ids -> addresses, as
    StackTrace.walk() yields them (the kernel fills the real one)."""

    def __init__(self, stacks_by_id: dict[int, list[int]]):
        self.stacks, self.deleted = stacks_by_id, []

    def walk(self, stack_id):
        return iter(self.stacks[stack_id])

    def Key(self, stack_id):   # noqa: N802  (bcc's name)
        return stack_id

    def __delitem__(self, key):
        self.deleted.append(key)


def _resolver(stacks_by_id, entries=64):
    pytest.importorskip("bcc")
    table = _StackMap(stacks_by_id)
    return stacks.StackResolver({b"stack_traces": table}, entries), table


def _ioctl_return_point() -> tuple[int, int]:
    """The address after libc's ioctl() syscall in this process, and where
    its return address sits above the stack pointer there."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    start = ctypes.cast(libc.ioctl, ctypes.c_void_p).value
    code = ctypes.string_at(start, 128)
    at = code.find(b"\x0f\x05")
    path, off = _file_offset(start + at + 2)
    return start + at + 2, cfi.return_address_slot(path, off)


def _uffdw_move() -> int:
    fn = int(ffi().cast("uintptr_t", ffi().addressof(lib(), "uffdw_move")))
    head = ctypes.string_at(fn, 5)
    return fn + 5 + int.from_bytes(head[1:], "little", signed=True) if head[0] == 0xe9 else fn


def _ids(user_id, sp_words=(), flags=None):
    words = list(sp_words) + [0] * (16 - len(sp_words))
    L = lib()
    return stacks.StackIds(b"".join(w.to_bytes(8, "little") for w in words), user_id, 0,
                           L.UT_STACK_USER | L.UT_STACK_SP_WORDS if flags is None else flags)


def test_the_resolver_puts_back_the_caller_the_walk_skipped():
    """Real symbols of this process: a stack walked from libc's ioctl()
    (whose frame-pointer walk skipped uffdw_move) gets uffdw_move back from
    the words at the stack pointer, where libc's unwind table says."""
    import os
    ip, slot = _ioctl_return_point()
    if slot is None:
        pytest.skip("this libc's ioctl() has no plain unwind rule at its syscall")
    caller = _uffdw_move() + 0x40       # a return address inside uffdw_move
    outer = _uffdw_move() + 0x10
    resolver, _ = _resolver({7: [ip, outer]})
    words = [0x1111] * 16
    words[slot // 8] = caller
    stack = resolver.resolve(_ids(7, words), os.getpid())
    names = [stacks.function(fr) for fr in stack["frames"]]
    assert names == ["ioctl", "uffdw_move", "uffdw_move"], stack
    assert stack["frames"][1]["source"] == stacks.STACK_POINTER and stack["notes"] == []
    assert stacks.issuer(stack) == "uffdw_move"
    # the stack pointer's words were not read: the walk's frames only, said
    stack = resolver.resolve(_ids(7, flags=lib().UT_STACK_USER), os.getpid())
    assert [stacks.function(fr) for fr in stack["frames"]] == ["ioctl", "uffdw_move"]


def test_a_process_gone_keeps_raw_addresses_and_says_so():
    gone = subprocess.Popen(["true"])
    gone.wait()
    resolver, _ = _resolver({3: [0x7f0000001000, 0x7f0000002000]})
    stack = resolver.resolve(_ids(3, flags=lib().UT_STACK_USER), gone.pid)
    assert [fr["addr"] for fr in stack["frames"]] == [0x7f0000001000, 0x7f0000002000]
    assert all(fr["sym"] is None for fr in stack["frames"])
    assert any("exited before its stack was symbolized" in n for n in stack["notes"])


def test_lost_and_uncaptured_stacks_are_said_not_guessed():
    resolver, _ = _resolver({}, entries=4)
    stack = resolver.resolve(_ids(-errno.EEXIST, flags=lib().UT_STACK_USER), os.getpid())
    assert stack["frames"] == [] and "EEXIST" in stack["notes"][0]
    stack = resolver.resolve(_ids(5, flags=lib().UT_STACK_USER), os.getpid())
    assert stack["frames"] == [] and "lost" in stack["notes"][0]
    assert resolver.resolve(None, os.getpid()) is None


def test_read_ids_are_deleted_once_half_the_map_is_used():
    fn = _uffdw_move()
    resolver, table = _resolver({i: [fn] for i in range(4)}, entries=4)
    resolver.resolve(_ids(0, flags=lib().UT_STACK_USER), os.getpid())
    assert table.deleted == []
    resolver.resolve(_ids(1, flags=lib().UT_STACK_USER), os.getpid())
    assert sorted(table.deleted) == [0, 1]
