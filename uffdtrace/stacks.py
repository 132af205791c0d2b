"""Who issued it (`--stacks`): the stacks the BPF program took, resolved to
frames and symbolized, and the one reading of them every consumer uses.

The program (bpf/uffdtrace.bpf.c, UT_STACKS) puts stack *ids* in a sent
failure (its caller's user stack) and in a long-term pin (the pinner's user
stack, and its kernel stack where a GUP hook saw it): struct ut_stack_ids.
StackResolver turns them into a Stack as the record is decoded, while the
process is most likely still alive (symbols need its memory map): bcc's
symbol resolver, cached per (pid, address).

Two honest gaps are filled or said:
* glibc's ioctl() and syscall() wrappers are leaves that push no frame, so
  a frame-pointer walk from the syscall goes from the wrapper straight to
  its caller's caller: the function that issued the move is skipped.  The
  program also reads the word at the user stack pointer -- the wrapper's
  return address into that function -- and it is put back as the second
  frame, marked source "stack pointer" (it is no unwinder's finding).
* a process that exited before its stack was read keeps its raw addresses,
  and the stack says it could not be symbolized.

No kernel address is ever kept: a kernel frame is its symbol+offset only
(uffdtrace/scrub.py: no kernel pointer leaves the machine).

Frames and stacks are the trace format's dicts (docs/trace-format.md,
`stack` of move and pin records): readers get them from files as they are.
"""
from __future__ import annotations

import errno as errno_mod
import os
import re
import struct
from dataclasses import dataclass

from . import cfi
from .native import lib

UNWIND, STACK_POINTER = "unwind", "stack pointer"   # a frame's "source"
# The syscall wrappers' modules: the frames a reader skips to find the
# program's own function that issued the call.
_WRAPPER_MODULE = re.compile(r"(^|/)(libc|libpthread)([.-][^/]*)?\.so[^/]*$")
# (pid, address) symbolizations kept before the cache starts anew (pids
# are reused: a bound, not only memory)
MAX_CACHED_FRAMES = 200_000
MAX_CACHED_STACKS = 10_000
ISSUER_FRAMES = 4   # frames an "issued by" line shows
# what report counts a stack under when no frame of the program's own is named
UNKNOWN_ISSUER = "(not symbolized)"
OTHER_ISSUERS = "(other stacks)"


@dataclass(frozen=True)
class StackIds:
    """struct ut_stack_ids (bpf/uffdtrace_event.h), as decoded."""

    sp_words: bytes      # UT_STACK_SP_WORDS: the words at the user stack pointer
    user_id: int
    kernel_id: int
    flags: int

    def words(self) -> tuple[int, ...]:
        return struct.unpack(f"<{len(self.sp_words) // 8}Q", self.sp_words)


def frame(space: str, sym: str | None, module: str | None, addr: int | None = None,
          offset: int | None = None, source: str = UNWIND) -> dict:
    """One frame of a trace record's stack.  sym: "function+0xoff", None when
    not symbolized; module: the file (user) or "kernel"/the kernel module;
    addr: the user address (None for a kernel frame: never written);
    offset: the address's offset in `module` when sym is None."""
    return {"space": space, "sym": sym, "module": module, "addr": addr, "offset": offset,
            "source": source}


def function(fr: dict) -> str | None:
    """A frame's function name, without its +0xoffset."""
    sym = fr.get("sym")
    return sym.rpartition("+0x")[0] or sym if sym else None


def in_wrapper(fr: dict) -> bool:
    """Is the frame in libc (a syscall wrapper, or what called it)?"""
    return bool(fr.get("module")) and bool(_WRAPPER_MODULE.search(fr["module"]))


def issuer_frame(stack: dict | None) -> dict | None:
    """The program's own function that issued the call: the first user
    frame that is not in libc.  None: no stack, or none symbolized."""
    for fr in (stack or {}).get("frames", ()):
        if fr["space"] == "user" and not in_wrapper(fr):
            return fr if fr.get("sym") else None
    return None


def issuer(stack: dict | None) -> str | None:
    fr = issuer_frame(stack)
    return function(fr) if fr else None


def frame_label(fr: dict) -> str:
    """A frame as one short line: its symbol, else module+offset, else the
    raw address (the text is untrusted: escape it for markup)."""
    if fr.get("sym"):
        return fr["sym"]
    if fr.get("module") and fr.get("offset") is not None:
        return f"{os.path.basename(fr['module'])}+{fr['offset']:#x}"
    return f"{fr['addr']:#x}" if fr.get("addr") is not None else "?"


def issued_by(stack: dict | None, frames: int = ISSUER_FRAMES) -> str | None:
    """"uffdw_move ← _cffi_f_uffdw_move ← ..." from the issuing function
    on (user frames), or None when no frame of the program's own was named."""
    user = [fr for fr in (stack or {}).get("frames", ()) if fr["space"] == "user"]
    first = issuer_frame(stack)
    if first is None:
        return None
    return _chain(user[user.index(first):], frames)


def kernel_path(stack: dict | None, frames: int = ISSUER_FRAMES) -> str | None:
    """The innermost kernel frames, "pin_user_pages_fast ← ...": the path a
    GUP hook saw a pin taken on (None: no kernel frame)."""
    kernel = [fr for fr in (stack or {}).get("frames", ()) if fr["space"] == "kernel"]
    return _chain(kernel, frames) if kernel else None


def _chain(frames: list[dict], n: int) -> str:
    """The first n frames' functions, innermost first, "a ← b ← …"."""
    names = [function(fr) or frame_label(fr) for fr in frames[:n]]
    return " ← ".join(names) + (" ← …" if len(frames) > n else "")


def args(stack: dict | None) -> dict:
    """A record's stack as the export's slice args: the issuing chain and
    every frame as a line (nothing when no stack was taken)."""
    if not stack:
        return {}
    return {"issued_by": issued_by(stack), "stack": lines(stack)}


def lines(stack: dict | None) -> list[str]:
    """Every frame, one line each (detail view, report), with the notes."""
    if not stack:
        return []
    out = []
    for fr in stack.get("frames", ()):
        where = f" [{os.path.basename(fr['module'])}]" if fr.get("module") and fr.get("sym") \
            else ""
        mark = " (return address at the stack pointer)" if fr.get("source") == STACK_POINTER \
            else ""
        out.append(f"{fr['space'][0]} {frame_label(fr)}{where}{mark}")
    return out + [f"note: {n}" for n in stack.get("notes", ())]


def _stackid_error(err: int, which: str) -> str:
    name = errno_mod.errorcode.get(-err, str(err))
    why = {"EEXIST": "another stack held its slot in the stack map",
           "EFAULT": "the stack could not be read",
           "ENOMEM": "the stack map was full"}.get(name, "bpf_get_stackid failed")
    return f"{which} stack not captured: {name} ({why})"


RBP_BASED = -1   # _return_address_slot: the function keeps a frame pointer


def _return_address_slot(pid: int, ip: int) -> int | None:
    """How far above the stack pointer the return address of the function
    at `ip` of process `pid` is (cfi.py), RBP_BASED when its frame is
    rbp-based (the frame-pointer walk finds its caller), None: unknown."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                start, _, end = parts[0].partition("-")
                if int(start, 16) <= ip < int(end, 16):
                    break
            else:
                return None
    except OSError:
        return None
    if len(parts) < 6 or not parts[5].startswith("/"):
        return None
    file_offset = ip - int(start, 16) + int(parts[2], 16)
    # the mapped file itself, whatever mount namespace the process is in
    path, key = f"/proc/{pid}/map_files/{parts[0]}", (parts[3], parts[4])
    rule = cfi.cfa_rule(path, file_offset, key=key)
    if rule is None:
        return None
    register, offset = rule
    if register == cfi.RBP:
        return RBP_BASED
    return offset - 8 if register == cfi.RSP and offset >= 8 else None


class StackResolver:
    """Stack ids of a bcc program's `stack_traces` map -> trace-format stacks.

    Ids stay valid while they are in the map: each is read once and its
    addresses kept; once half the map's entries are known, the known ids are
    deleted from it (bcc 0.26's StackTrace.clear() does nothing) so the map
    cannot fill.  A record still in the ring buffer then may name a deleted
    id: its stack is said lost, not guessed."""

    def __init__(self, bpf, entries: int, table: bytes = b"stack_traces"):
        self.bpf, self.table, self.entries = bpf, bpf[table], entries
        self._addrs: dict[int, tuple[int, ...]] = {}
        self._frames: dict[tuple[int, int], dict] = {}
        self._caches: dict[int, object] = {}   # pid -> bcc SymbolCache (-1: the kernel)
        self._slots: dict[tuple[int, int], int | None] = {}   # (pid, ip) -> cfi slot
        # (pid, StackIds) -> the stack resolved: a failure storm's records
        # share a handful of stacks (read-only: every record holds the same)
        self._stacks: dict[tuple[int, StackIds], dict] = {}

    def _walk(self, stack_id: int) -> tuple[int, ...] | None:
        addrs = self._addrs.get(stack_id)
        if addrs is None:
            try:
                addrs = tuple(a for a in self.table.walk(stack_id) if a)
            except KeyError:
                return None
            self._addrs[stack_id] = addrs
        return addrs

    def _cache(self, pid: int):
        from bcc import SymbolCache   # noqa: PLC0415  (bcc only at run time)

        cache = self._caches.get(pid)
        if cache is None:
            cache = self._caches[pid] = SymbolCache(pid)
        return cache

    def _symbolize(self, pid: int, addr: int, source: str = UNWIND) -> dict:
        """A user frame of `pid` (cached per (pid, address))."""
        key = (pid, addr)
        fr = self._frames.get(key)
        if fr is None:
            name, offset, module = self._cache(pid).resolve(addr, True)
            if module is None and pid in self._caches and os.path.exists(f"/proc/{pid}"):
                # mapped after the cache read the process's maps (dlopen):
                # read them again, once for this address
                self._forget(pid)
                name, offset, module = self._cache(pid).resolve(addr, True)
            module = module.decode(errors="replace") if module else None
            if name:
                fr = frame("user", f"{name.decode(errors='replace')}+{offset:#x}", module, addr)
            else:
                fr = frame("user", None, module, addr, offset if module else None)
            if len(self._frames) >= MAX_CACHED_FRAMES:
                self._frames.clear()
                self._slots.clear()
            self._frames[key] = fr
        return fr if fr["source"] == source else {**fr, "source": source}

    def _kernel_frame(self, addr: int) -> dict:
        name, offset, module = self._cache(-1).resolve(addr, False)
        sym = f"{name.decode(errors='replace')}+{offset:#x}" if name else None
        return frame("kernel", sym, module.decode(errors="replace") if module else None)

    def _forget(self, pid: int):
        cache = self._caches.pop(pid, None)
        if cache is not None:
            from bcc.libbcc import lib as bcc_lib   # noqa: PLC0415

            bcc_lib.bcc_free_symcache(cache.cache, pid)

    def resolve(self, ids: StackIds | None, pid: int) -> dict | None:
        """The stack of a record of process `pid` (None: none was taken).
        Never raises: a stack that cannot be resolved says why instead (the
        record it belongs to matters more than its stack)."""
        if ids is None or not ids.flags:
            return None
        key = (pid, ids)
        stack = self._stacks.get(key)
        if stack is not None:
            return stack
        try:
            stack = self._resolve(ids, pid)
        except Exception as exc:   # noqa: BLE001  (see above)
            return {"frames": [], "notes": [f"stack not resolved: {type(exc).__name__}: {exc}"]}
        if stack["frames"] and not stack["notes"]:
            # complete: the same ids of the same process resolve the same
            # (until the ids are deleted from the map: _bound)
            if len(self._stacks) >= MAX_CACHED_STACKS:
                self._stacks.clear()
            self._stacks[key] = stack
        return stack

    def _resolve(self, ids: StackIds, pid: int) -> dict:
        L = lib()
        frames, notes = [], []
        if ids.flags & L.UT_STACK_KERNEL:
            if ids.kernel_id < 0:
                notes.append(_stackid_error(ids.kernel_id, "kernel"))
            else:
                addrs = self._walk(ids.kernel_id)
                if addrs is None:
                    notes.append("kernel stack lost: its id was reused before it was read")
                else:
                    frames += [self._kernel_frame(a) for a in addrs]
        if ids.flags & L.UT_STACK_USER:
            user = self._user_frames(ids, pid, notes)
            frames += user
            if user and all(fr["module"] is None for fr in user):
                notes.append(f"process {pid} exited before its stack was symbolized: "
                             "raw addresses only")
                self._forget(pid)
        self._bound()
        return {"frames": frames, "notes": notes}

    def _user_frames(self, ids: StackIds, pid: int, notes: list[str]) -> list[dict]:
        if ids.user_id < 0:
            addrs = ()
            notes.append(_stackid_error(ids.user_id, "user"))
        else:
            addrs = self._walk(ids.user_id)
            if addrs is None:
                addrs = ()
                notes.append("user stack lost: its id was reused before it was read")
        frames = [self._symbolize(pid, a) for a in addrs]
        if addrs and ids.flags & lib().UT_STACK_SP_WORDS:
            caller = self._wrapper_caller(pid, addrs[0], ids.words())
            if caller is None:
                notes.append(f"the caller of {frame_label(frames[0])} is not known (no plain "
                             "unwind rule there): the walk may skip it")
            elif caller and (len(addrs) < 2 or addrs[1] != caller):
                # not already walked: the syscall's function kept no frame pointer
                frames.insert(1, self._symbolize(pid, caller, STACK_POINTER))
        return frames

    def _wrapper_caller(self, pid: int, ip: int, sp_words: tuple[int, ...]) -> int | None:
        """The return address of the function the syscall was made in (at
        `ip`), read from the words at the stack pointer where its unwind
        table says; 0 when that function keeps a frame pointer (the walk has
        its caller), None when it cannot be told."""
        key = (pid, ip)
        if key not in self._slots:
            self._slots[key] = _return_address_slot(pid, ip)
        slot = self._slots[key]
        if slot == RBP_BASED:
            return 0
        if slot is None or slot % 8 or slot // 8 >= len(sp_words):
            return None
        return sp_words[slot // 8] or None

    def _bound(self):
        """Delete the ids read so far once half the map is used."""
        if len(self._addrs) < self.entries // 2:
            return
        for stack_id in self._addrs:
            try:
                del self.table[self.table.Key(stack_id)]
            except KeyError:
                pass
        self._addrs.clear()
        self._stacks.clear()

    def close(self):
        for pid in list(self._caches):
            self._forget(pid)
