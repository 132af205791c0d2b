"""The collector's side of the BPF ring buffers: wait for records and take
them out many at a time (native/ringdrain.c), with no Python call per
record.  bcc's open_ring_buffer() calls back into Python once per record;
at 100,000+ moves/s that callback alone costs most of a core.

    rings = RingSet({"events": fd1, "success_events": fd2})
    rings.wait(100)                       # until one has records, or 100 ms
    for size, raw in frames(rings["events"].drain()):
        ...
"""
from __future__ import annotations

import os
import select
import struct
from typing import Iterator

from .native import ffi, lib



def _frame_header() -> struct.Struct:
    """BPF_RINGBUF_HDR_SZ bytes: the record's length, then padding."""
    return struct.Struct(f"<I{lib().BPF_RINGBUF_HDR_SZ - 4}x")


class RingReader:
    """One ring buffer map, mapped into this process.  drain() returns the
    committed records framed as the kernel frames them (ringdrain.h)."""

    def __init__(self, name: str, map_fd: int, chunk_bytes: int | None = None):
        F, L = ffi(), lib()
        self.name, self.map_fd = name, map_fd
        self._ring = F.new("struct ut_ring *")
        err = L.ut_ring_open(self._ring, map_fd)
        if err < 0:
            raise OSError(-err, f"cannot map ring buffer {name}: {os.strerror(-err)}")
        # Enough for everything the ring can hold at once (a drain then
        # empties it in one call), unless told less.
        self.chunk_bytes = chunk_bytes or self._ring.size
        self._buf = bytearray(self.chunk_bytes)
        self._cbuf = F.from_buffer(self._buf)
        self._count = F.new("uint32_t *")

    @property
    def size(self) -> int:
        return self._ring.size

    def pending(self) -> int:
        """Bytes reserved by the producer and not consumed yet."""
        return lib().ut_ring_pending(self._ring)

    def drain(self, max_bytes: int | None = None) -> tuple[memoryview, int]:
        """The committed records (at most max_bytes of frames), consumed: a view
        of this reader's buffer, valid until the next drain(), and their count."""
        cap = min(max_bytes or self.chunk_bytes, self.chunk_bytes)
        used = lib().ut_ring_drain(self._ring, self._cbuf, cap, self._count)
        return memoryview(self._buf)[:used], self._count[0]

    def close(self):
        if self._ring is not None:
            lib().ut_ring_close(self._ring)
            self._ring = None


def frames(view: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(record size, record bytes) of each frame drain() returned."""
    header = _frame_header()
    pos, end, hdr = 0, len(view), header.size
    while pos < end:
        (size,) = header.unpack_from(view, pos)
        yield size, view[pos + hdr:pos + hdr + size]
        pos += (hdr + size + 7) & ~7


class RingSet:
    """The session's ring buffers, waited on together (epoll on the map
    fds: the kernel wakes it when a record is submitted with a wakeup)."""

    def __init__(self, rings: list[RingReader]):
        self.rings = {r.name: r for r in rings}
        self._epoll = select.epoll()
        for r in rings:
            self._epoll.register(r.map_fd, select.EPOLLIN)
        self._drained: set[int] = set()     # watched fds read empty when they wake us

    def __getitem__(self, name: str) -> RingReader:
        return self.rings[name]

    def watch(self, fd: int, drain: bool = False):
        """Let `fd` end a wait too: something that must not wait for the
        timeout (a stop signal's wakeup pipe, a COMMAND's pidfd).  drain: it
        is read empty when it wakes us (a pipe), or it would keep waking."""
        self._epoll.register(fd, select.EPOLLIN)
        if drain:
            self._drained.add(fd)

    def unwatch(self, fd: int):
        self._epoll.unregister(fd)
        self._drained.discard(fd)

    def wait(self, timeout_ms: int) -> bool:
        """Until a ring has records or a watched fd is readable (True), or
        timeout_ms passed (False).  Records sent without a wakeup are seen by
        pending(), not by epoll."""
        if any(r.pending() for r in self.rings.values()):
            return True
        if timeout_ms <= 0:
            return False
        ready = self._epoll.poll(timeout_ms / 1000)
        for fd, _ in ready:
            if fd in self._drained:
                try:
                    while os.read(fd, 512):
                        pass
                except BlockingIOError:
                    pass
        return bool(ready)

    def close(self):
        for r in self.rings.values():
            r.close()
        self._epoll.close()
