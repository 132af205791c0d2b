"""One diagnosis per move: cause (taxonomy.py), evidence level, failing
address, culprit, explanation and remedy.

Rules follow the kernel's order of checks (mm/userfaultfd.c); every
conclusion says how it is known (observed / inferred / errno).
"""
from __future__ import annotations

import errno as E
from dataclasses import dataclass, field
from typing import Callable

from .enrich import Enrichment, Vma
from .events import MoveEvent, PinEvent, pin_method_name
from .kernel_evidence import diagnose_observed
from .native import PAGE_SIZE, lib
from .taxonomy import ERRNO, INFERRED, OBSERVED, cause

SPECIAL_VMFLAGS = {"ht": "hugetlb", "pf": "PFNMAP", "io": "IO", "mm": "MIXEDMAP",
                   "ss": "shadow stack"}
ACCESS_VMFLAGS = {"rd", "wr", "ex"}


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    evidence: str
    fail_addr: int | None = None
    underlying: str | None = None          # for `partial`: what stopped it
    culprit: dict | None = None             # pinner, KSM merge, ...
    notes: list[str] = field(default_factory=list)

    @property
    def effective_cause(self) -> str:
        """The cause to act on: the underlying one for a partial move."""
        return self.underlying or self.cause

    def to_json(self) -> dict:
        c = cause(self.effective_cause)
        return {"cause": self.cause, "underlying": self.underlying,
                "evidence": self.evidence, "fail_addr": self.fail_addr,
                "culprit": self.culprit, "explanation": c.explanation,
                "remedy": c.remedy, "notes": self.notes}


class PinTable:
    """Long-term pinned ranges seen being registered, per process."""

    def __init__(self):
        self._pins: dict[int, list[PinEvent]] = {}

    def add(self, pin: PinEvent):
        if pin.released and pin.method == lib().UT_PIN_IO_URING_REGISTER:
            # IORING_UNREGISTER_BUFFERS: every buffer of that ring
            self._pins[pin.pid] = [p for p in self._pins.get(pin.pid, []) if p.fd != pin.fd]
        elif pin.released:
            # a GUP hook saw a page of a long-term pin released: its range
            self._pins[pin.pid] = [p for p in self._pins.get(pin.pid, [])
                                   if not p.addr <= pin.addr < p.addr + p.len]
        else:
            self._pins.setdefault(pin.pid, []).append(pin)

    def covering(self, pid: int, addr: int) -> PinEvent | None:
        for pin in reversed(self._pins.get(pid, [])):
            if pin.addr <= addr < pin.addr + pin.len:
                return pin
        return None


KsmLookup = Callable[[int], dict | None]   # pfn -> {"merged_ts_ns", "ksmd_pid"} or None


def _pin_note(pin: PinEvent) -> str:
    return f"src page lies in a range pinned by pid {pin.pid}: {pin_method_name(pin.method)}"


def _pin_culprit(pin: PinEvent) -> dict:
    return {"kind": "pin", "pid": pin.pid, "tid": pin.tid, "comm": pin.comm,
            "method": pin_method_name(pin.method), "ts_ns": pin.ts_ns,
            "range": [pin.addr, pin.len], "source": "pin registration"}


def _blocking_page(move: MoveEvent, en: Enrichment, pins: PinTable,
                   ksm_lookup: KsmLookup | None) -> tuple[str, dict | None, list[str]]:
    """Why the page at en.src_addr could not be moved (tracepoint tier)."""
    notes = []
    dst, src = en.dst_page, en.src_page
    if dst is not None and dst.present:
        return "dst_populated", None, [f"dst page {en.dst_addr:#x} is present"]
    if src is not None and not src.present and not src.swapped:
        if move.mode & lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES:
            notes.append("src page absent although ALLOW_SRC_HOLES was set")
        return "src_hole", None, notes + [f"src page {en.src_addr:#x} is not present"]
    if src is not None and src.has("ksm"):
        merge = ksm_lookup(src.pfn) if (ksm_lookup and src.pfn is not None) else None
        culprit = {"kind": "ksm", "merged_ts_ns": merge["merged_ts_ns"] if merge else None,
                   "ksmd_pid": merge["ksmd_pid"] if merge else None}
        if not merge:
            notes.append("merged before tracing started (no ksm tracepoint seen)")
        return "page_ksm", culprit, notes + ["kpageflags: KSM"]
    pin = pins.covering(move.pid, en.src_addr)
    if pin is not None:
        return "page_pinned", _pin_culprit(pin), [_pin_note(pin)]
    if src is not None and src.has("zero_page"):
        return "zero_page", None, ["kpageflags: zero page"]
    if src is not None and src.swapped and not src.exclusive:
        return "swap_not_exclusive", None, ["pagemap: swapped, not exclusive"]
    if src is not None and src.present and not src.exclusive:
        return "page_shared", None, ["pagemap: not exclusively mapped (shared after fork?)"]
    if src is not None and src.has("thp") and move.len % (2 << 20):
        return "thp_split_failed", None, ["kpageflags: THP, and the move is not whole PMDs"]
    if src is None:
        notes.append("page state unknown")
    return "busy_unknown", None, notes + [
        "src page is present and exclusive, not KSM, no pin registration seen "
        "(a pin taken before tracing started, or DMA, looks exactly like this)"]


def _invalid_from_request(move: MoveEvent) -> str | None:
    """EINVAL checks decided by the request alone (validate_range, mode)."""
    if move.len == 0:
        return "invalid_zero_len"
    if (move.dst | move.src | move.len) % PAGE_SIZE:
        return "invalid_misaligned"
    if move.mode & ~(lib().UFFDT_MOVE_MODE_DONTWAKE | lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES):
        return "invalid_bad_mode"
    return None


def _invalid_from_vmas(move: MoveEvent, src: Vma, dst: Vma) -> tuple[str, list]:
    """EINVAL from move_pages()/validate_move_areas(), in the kernel's order."""
    if move.src + move.len > src.end or move.dst + move.len > dst.end:
        return "invalid_crosses_vma", ["range extends past its VMA"]
    if src.shared or dst.shared:
        return "invalid_vma_shared", [f"{'src' if src.shared else 'dst'} VMA is shared"]
    for vma, name in ((src, "src"), (dst, "dst")):
        special = [SPECIAL_VMFLAGS[f] for f in vma.flags if f in SPECIAL_VMFLAGS]
        if special:
            return "invalid_special_vma", [f"{name} VMA is {', '.join(special)}"]
    if not src.anonymous or not dst.anonymous:
        return "invalid_vma_not_anon", ["file-backed VMA"]
    if "wr" not in src.flags:
        notes = ["src VmFlags lack wr"]
        if (src.flags & ACCESS_VMFLAGS) != (dst.flags & ACCESS_VMFLAGS):
            notes.append("src and dst protections differ too")
        return "invalid_src_not_writable", notes
    if (src.flags & ACCESS_VMFLAGS) != (dst.flags & ACCESS_VMFLAGS) or \
            ("lo" in src.flags) != ("lo" in dst.flags):
        return "invalid_vma_flags_mismatch", ["protection or mlock flags differ"]
    if "um" not in dst.flags:
        return "invalid_dst_not_registered", ["dst VmFlags lack um (uffd missing mode)"]
    return "invalid_unknown", ["VMAs look valid now: changed since the call?"]


def _why_no_evidence(en: Enrichment | None) -> list[str]:
    if en is None:
        return ["not inspected"]
    if en.error:
        return [en.error]
    missing = [n for n, v in (("src", en.src_vma), ("dst", en.dst_vma)) if v is None]
    if missing:
        return [f"{' and '.join(missing)} VMA gone when inspected (unmapped after the call?)"]
    return []


def diagnose(move: MoveEvent, en: Enrichment | None, pins: PinTable,
             ksm_lookup: KsmLookup | None = None) -> Diagnosis:
    if not move.failed:
        return Diagnosis("ok", OBSERVED)
    if move.kernel_tier:
        observed = diagnose_observed(move)
        if observed is not None:
            return observed
    err = -move.ret
    fail_addr = move.src + max(move.move, 0) if move.move_written else move.src
    gone = _why_no_evidence(en)
    # Page state read after the call only counts while both VMAs still exist:
    # an unmapped page reads as "not present" and would look like a hole.
    have_pages = not gone

    # An observed io_uring registration covering the failing page needs no
    # page state: it stands even when the memory is already gone.
    pin = pins.covering(move.pid, fail_addr) if err in (E.EAGAIN, E.EBUSY) else None
    if pin is not None and not have_pages:
        note = gone + [_pin_note(pin)]
        return Diagnosis("partial" if move.partial else "page_pinned", INFERRED, fail_addr,
                         "page_pinned" if move.partial else None, _pin_culprit(pin), note)
    if move.partial:
        if not have_pages:
            return Diagnosis("partial", ERRNO, fail_addr, None, None, gone)
        code, culprit, notes = _blocking_page(move, en, pins, ksm_lookup)
        return Diagnosis("partial", INFERRED, fail_addr, code, culprit, notes)
    if err == E.EAGAIN:
        return Diagnosis("mmap_changing", ERRNO, None, notes=["move = -EAGAIN, nothing moved"])
    if err == E.EINVAL:
        code = _invalid_from_request(move)
        if code:
            return Diagnosis(code, OBSERVED, move.src, notes=["from the request arguments"])
        if move.move_written is None:
            # Rejected before move_pages(): with valid arguments only the
            # caller-is-not-the-owner check is left (or an address beyond the
            # task size, which the kernel checks in the same place).
            return Diagnosis("invalid_cross_mm", INFERRED, None,
                             notes=["the kernel never wrote `move`: rejected before "
                                    "move_pages() although the arguments are valid"])
        if not have_pages:
            return Diagnosis("invalid_unknown", ERRNO, None, notes=gone)
        code, notes = _invalid_from_vmas(move, en.src_vma, en.dst_vma)
        return Diagnosis(code, INFERRED, None, notes=notes)
    if err in (E.EBUSY, E.EEXIST, E.ENOENT):
        if err == E.ENOENT and en is not None and en.error is None and \
                (en.src_vma is None or en.dst_vma is None):
            return Diagnosis("no_vma", INFERRED, fail_addr, notes=[
                "no VMA at " + ("src" if en.src_vma is None else "dst")
                + " when inspected (or unmapped right after the call)"])
        if not have_pages:
            guess = {E.EBUSY: "busy_unknown", E.EEXIST: "dst_populated",
                     E.ENOENT: "src_hole"}[err]
            return Diagnosis(guess, ERRNO, fail_addr, notes=gone)
        code, culprit, notes = _blocking_page(move, en, pins, ksm_lookup)
        return Diagnosis(code, INFERRED, fail_addr, None, culprit, notes)
    simple = {E.ESRCH: "no_mm", E.ENOMEM: "nomem", E.EFAULT: "fault", E.EINTR: "interrupted"}
    return Diagnosis(simple.get(err, "unknown"), ERRNO, None)
