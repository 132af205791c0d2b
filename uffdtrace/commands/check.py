"""`uffdtrace check`: will this range move?  A verdict per page and the
predicted outcome of a UFFDIO_MOVE before it is issued, or (--census) how
much of a process's private anonymous memory could move now."""
from __future__ import annotations

import json

from . import command_parser
from ..census import CENSUS_KINDS, CENSUS_LABELS, CensusResult, census
from ..movecheck import CHECK_EVIDENCE, CheckResult, check
from ..errors import UserError
from ..native import PAGE_SIZE, lib
from ..textsafe import one_line, printable
from .report import size

EXAMPLES = """\
examples:
  uffdtrace check -p 1234 0x7f0000000000 2M                 # the source side of a move
  uffdtrace check -p 1234 0x7f0000000000 64K --dst 0x7f0000400000   # the whole move
  uffdtrace check -p 1234 0x7f0000000000 64K --dst 0x7f0000400000 --allow-src-holes
  uffdtrace check -p 1234 0x7f0000000000 4096 --dst 0x7f0000400000 --caller 999
  uffdtrace check -p 1234 --census                          # every private anonymous VMA
  uffdtrace check -p 1234 --census --json | jq .totals

ADDR and LEN take hex or decimal, LEN also K, M, G suffixes (KiB...).
Each verdict carries its evidence: observed (what the kernel exports:
pagemap, kpageflags, VmFlags, io_uring fdinfo; and, as root, what a BPF
program reads in the kernel for the range's pages: PageAnonExclusive,
folio_maybe_dma_pinned(), refcount) or inferred (what neither shows: a swap
entry's exclusive bit, PMD mapping, which uffd an unread event is on).
Without root, PFNs read 0, kpageflags cannot be opened and the kernel view
is off: the output says what could not be seen.

exit status: 0 when the move would move every byte (or, for --census,
always), 1 when it would fail or stop part way, 2 on bad usage.
"""


def _number(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if text.endswith(suffix):
            text, mult = text[:-1], m
            break
    try:
        return int(text, 0) * mult
    except ValueError:
        raise UserError(f"not a number: {text!r}") from None


def add_parser(sub):
    p = command_parser(sub, "check", help="predict what a UFFDIO_MOVE of a range would meet "
                       "now, page by page (or a census of a process)",
                       description="Pre-flight check of a UFFDIO_MOVE: for each page of "
                       "the range, whether it would move and, if not, why (hole, KSM, "
                       "pinned, shared after fork, swapped, zero page, huge page split, VMA "
                       "refusals, destination populated or not registered), as runs of "
                       "pages with the same verdict, the predicted result (errno and "
                       "`move`) and a remedy per class.  --census does the same for every "
                       "private anonymous VMA of the process.",
                       examples=EXAMPLES)
    p.add_argument("-p", "--pid", type=int, required=True, metavar="PID",
                   help="the process whose memory would move (the userfaultfd's owner)")
    p.add_argument("addr", nargs="?", metavar="ADDR", help="source start address")
    p.add_argument("len", nargs="?", metavar="LEN", help="length in bytes")
    p.add_argument("--dst", metavar="ADDR", help="destination address (else only the "
                   "source side is judged)")
    p.add_argument("--allow-src-holes", action="store_true",
                   help="the move would pass UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES")
    p.add_argument("--mode", metavar="BITS", help="the raw mode bits instead")
    p.add_argument("--caller", type=int, metavar="PID",
                   help="the process that would issue the ioctl, if not PID")
    p.add_argument("--census", action="store_true",
                   help="bytes per verdict of every private anonymous VMA, the largest "
                   "blockers and how to fix each class")
    p.add_argument("--no-kernel-view", dest="kernel_view", action="store_false", default=None,
                   help="judge from /proc alone: do not read anon-exclusive and pins in "
                   "the kernel (BPF; root; ~2 s to compile)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.census:
        if args.addr or args.dst:
            raise UserError("--census takes no ADDR, LEN or --dst")
        result = census(args.pid)
        print(json.dumps(result.to_json(), indent=2) if args.json else render_census(result))
        return 0
    if args.addr is None or args.len is None:
        raise UserError("check needs ADDR and LEN (or --census)")
    mode = _number(args.mode) if args.mode else 0
    if args.allow_src_holes:
        mode |= lib().UFFDT_MOVE_MODE_ALLOW_SRC_HOLES
    result = check(args.pid, _number(args.addr), _number(args.len),
                   dst=_number(args.dst) if args.dst else None, mode=mode,
                   caller=args.caller, kernel_view=args.kernel_view)
    print(json.dumps(result.to_json(), indent=2) if args.json else render(result))
    p = result.prediction
    return 0 if p.errno is None and not p.hangs else 1


def _vma_line(name: str, vma) -> str:
    if vma is None:
        return f"  {name} VMA  -"
    flags = " ".join(sorted(vma.flags)) if vma.flags is not None else "?"
    path = printable(vma.path) or "[anon]"
    return f"  {name} VMA  {vma.start:#x}-{vma.end:#x} {vma.perms} {path}  VmFlags: {flags}"


def render(r: CheckResult) -> str:
    req = r.request
    pages = max(1, -(-req.len // PAGE_SIZE))
    dst = f" -> dst {req.dst:#x}" if r.dst_given else " (source side only: no --dst)"
    out = [f"uffdtrace check: pid {r.pid} ({printable(r.comm)}) src {req.src:#x} "
           f"+{size(req.len)} ({pages} pages){dst}, mode {req.mode:#x}",
           f"PREDICTION: {r.prediction.text()}",
           _vma_line("src", r.src_vma)]
    if r.dst_given:
        out.append(_vma_line("dst", r.dst_vma))
    out.append("")
    out.append(f"  {'SRC PAGES':<33} {'PAGES':>6}  {'VERDICT':<26} {'OUTCOME':<8} "
               f"{'EVIDENCE':<9} WHY")
    for run in r.runs:
        v = run.verdict
        outcome = "moves" if v.moves else v.errno or "?"
        span = f"{run.start:#x}-{run.end:#x}"
        line = (f"  {span:<33} {run.pages:>6}  {v.kind:<26} {outcome:<8} "
                f"{v.evidence:<9} {v.why}")
        if v.culprit:
            line += f"; {one_line(v.culprit)}"
        out.append(line)
    counts = r.summary()
    out.append("")
    out.append("SUMMARY: " + ", ".join(f"{n} {k}" for k, n in counts.most_common())
               + f" -> {r.prediction.text()}")
    remedies = r.remedies()
    if remedies:
        out.append("REMEDIES:")
        for kind, rem in remedies.items():
            out.append(f"  {kind} ({rem['cause']}): {rem['remedy']}")
            if rem["fix"]:
                out.append(f"      how: {rem['fix']}")
    for note in r.notes:
        out.append(f"note: {note}")
    out += _unseen_lines(r.unseen)
    out.append("evidence: " + "; ".join(f"{k}: {v}" for k, v in CHECK_EVIDENCE.items()))
    return "\n".join(out)


def render_census(c: CensusResult) -> str:
    total = c.totals()
    considered = sum(total.values())
    out = [f"uffdtrace check --census: pid {c.pid} ({printable(c.comm)}): "
           f"{len(c.vmas)} private anonymous VMAs, {size(considered)} populated; "
           f"{c.excluded['vmas']} other VMAs ({size(c.excluded['rss'])} resident) not counted",
           "", "TOTALS"]
    for kind in CENSUS_KINDS:
        if total.get(kind):
            share = 100 * total[kind] / considered if considered else 0
            out.append(f"  {kind:<14} {size(total[kind]):>11} {share:5.1f}%  "
                       f"{CENSUS_LABELS[kind]}")
    out += ["", "PER VMA (populated ones)",
            f"  {'START':<16} {'END':<16} {'PERMS':<5} " + " ".join(
                f"{k[:9]:>10}" for k in CENSUS_KINDS)]
    for v in c.vmas:
        if not v.bytes:
            continue
        out.append(f"  {v.vma.start:<#16x} {v.vma.end:<#16x} {v.vma.perms:<5} " + " ".join(
            f"{size(v.bytes[k]) if v.bytes.get(k) else '-':>10}" for k in CENSUS_KINDS))
    skipped = sum(1 for v in c.vmas if v.skipped)
    if skipped:
        out.append(f"  ({skipped} VMAs with nothing populated not read)")
    if c.blockers:
        out += ["", "LARGEST BLOCKERS"]
        for nbytes, start, kind, culprit in c.blockers:
            line = f"  {start:#x}-{start + nbytes:#x} {size(nbytes):>10}  {kind}"
            if culprit:
                line += f"  {one_line(culprit)}"
            out.append(line)
    fixes = c.fixes()
    if fixes:
        out += ["", "WHAT FIXES EACH CLASS"]
        for kind, f in fixes.items():
            out.append(f"  {kind} ({size(f['bytes'])}): {f.get('remedy', '')}")
            if f.get("fix"):
                out.append(f"      how: {f['fix']}")
    out += ["", f"read {c.pages_read} pagemap entries", *_unseen_lines(c.unseen)]
    return "\n".join(out)


def _unseen_lines(unseen: list[str]) -> list[str]:
    if not unseen:
        return ["NOT VISIBLE here: nothing this check needs"]
    return ["NOT VISIBLE here:", *(f"  - {u}" for u in unseen)]
