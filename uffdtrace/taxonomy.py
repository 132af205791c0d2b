"""The one set of UFFDIO_MOVE outcome causes, used by diagnosis, trace
files, report and TUI alike.  Codes are stable: they are written to trace
files.  Explanations follow mm/userfaultfd.c (see reference notes)."""
from __future__ import annotations

from dataclasses import dataclass

# How a diagnosis knows what it says.
OBSERVED = "observed"   # seen in the kernel (a move-path hook, or the syscall itself)
INFERRED = "inferred"   # read from userspace (/proc) right after the failure
ERRNO = "errno"         # nothing but the errno and `move`: the most likely cause
EVIDENCE_LEVELS = (OBSERVED, INFERRED, ERRNO)
EVIDENCE_MEANING = {
    OBSERVED: "seen in the kernel or in the request itself",
    INFERRED: "read from /proc right after the call: the state may have changed since",
    ERRNO: "only the errno and `move` were available: the most likely cause",
}


@dataclass(frozen=True)
class Cause:
    code: str
    errno: str | None
    explanation: str
    remedy: str


_CAUSES = [
    Cause("ok", None, "all requested bytes were moved", "nothing to do"),
    Cause("partial", "EAGAIN", "the move stopped part way; `move` bytes were moved",
          "resume at src+move, dst+move, len-move after fixing the cause at src+move"),
    Cause("dst_populated", "EEXIST", "a destination page (or PMD) is already populated",
          "move only into unpopulated, registered destination pages (MADV_DONTNEED "
          "the destination first)"),
    Cause("src_hole", "ENOENT", "a source page is not populated",
          "use UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, or only move populated pages"),
    Cause("no_vma", "ENOENT", "no VMA covers the source or destination address",
          "check the addresses: the range is not mapped"),
    Cause("page_pinned", "EBUSY", "a source page is pinned (GUP FOLL_PIN: io_uring fixed "
          "buffer, O_DIRECT or device DMA) and cannot be remapped",
          "unregister the pinned buffer (IORING_UNREGISTER_BUFFERS) or move around it"),
    Cause("page_ksm", "EBUSY", "a source page was merged by KSM: it is shared, never "
          "exclusive to this process", "do not MADV_MERGEABLE memory you move, or write "
          "the page (breaking KSM sharing) before moving it"),
    Cause("page_shared", "EBUSY", "a source page is shared copy-on-write with another "
          "process (after fork): not exclusive", "MADV_DONTFORK the area before fork(), "
          "or write the page so it becomes exclusive again"),
    Cause("swap_not_exclusive", "EBUSY", "a source page is swapped out and its swap entry "
          "is shared", "fault the page in (touch it) before moving"),
    Cause("thp_split_failed", "EBUSY", "a source huge page had to be split and could not be",
          "move whole PMD-aligned 2 MiB ranges, or MADV_NOHUGEPAGE the source"),
    Cause("zero_page", "EBUSY", "a source page is the shared zero page (Linux 6.8 cannot "
          "move it)", "write the page first, or use a kernel >= 6.9"),
    Cause("busy_unknown", "EBUSY", "a source page is not movable (pinned, KSM, shared or an "
          "unsplittable huge page) and the evidence at hand cannot tell which",
          "run `uffdtrace doctor`: the kernel tier names the exact reason"),
    Cause("mmap_changing", "EAGAIN", "a fork/mremap/munmap event on this mm was pending "
          "(mmap_changing), so the kernel refused to move", "read the pending uffd events, "
          "then retry"),
    Cause("invalid_misaligned", "EINVAL", "dst, src or len is not page aligned",
          "align dst, src and len to the page size"),
    Cause("invalid_zero_len", "EINVAL", "len is 0", "pass a non-zero length"),
    Cause("invalid_bad_mode", "EINVAL", "mode has bits other than DONTWAKE and "
          "ALLOW_SRC_HOLES", "pass only UFFDIO_MOVE_MODE_* bits"),
    Cause("invalid_cross_mm", "EINVAL", "the calling process is not the one that created "
          "the userfaultfd (moves never cross address spaces)",
          "issue UFFDIO_MOVE from the process that owns the userfaultfd"),
    Cause("invalid_vma_shared", "EINVAL", "the source or destination VMA is shared "
          "(MAP_SHARED): only private anonymous memory moves",
          "move only MAP_PRIVATE|MAP_ANONYMOUS memory"),
    Cause("invalid_vma_not_anon", "EINVAL", "the source or destination VMA is not "
          "anonymous (file-backed)", "move only anonymous memory"),
    Cause("invalid_vma_flags_mismatch", "EINVAL", "source and destination VMAs differ in "
          "protection or mlock state", "give both areas the same protections and "
          "mlock state"),
    Cause("invalid_src_not_writable", "EINVAL", "the source VMA is not writable",
          "mprotect the source PROT_READ|PROT_WRITE"),
    Cause("invalid_dst_not_registered", "EINVAL", "the destination is not registered with "
          "this userfaultfd", "UFFDIO_REGISTER the destination range first"),
    Cause("invalid_special_vma", "EINVAL", "a VMA is special (hugetlb, PFNMAP, IO, "
          "MIXEDMAP or shadow stack)", "move only ordinary anonymous memory"),
    Cause("invalid_crosses_vma", "EINVAL", "the range extends past the end of its VMA",
          "split the move at VMA boundaries"),
    Cause("invalid_unknown", "EINVAL", "the kernel rejected the arguments; the evidence "
          "at hand cannot tell which check failed", "check alignment, VMA flags and "
          "registration, or use the kernel tier"),
    Cause("no_mm", "ESRCH", "the userfaultfd's address space has exited",
          "the owning process is gone: stop moving"),
    Cause("nomem", "ENOMEM", "the kernel could not allocate a page table or anon_vma",
          "free memory and retry"),
    Cause("fault", "EFAULT", "the struct uffdio_move could not be accessed, or a source "
          "entry is a device/hwpoison/marker entry", "pass a valid argument pointer"),
    Cause("interrupted", "EINTR", "a fatal signal interrupted the move",
          "nothing: the process is being killed"),
    Cause("unknown", None, "an errno this version of uffdtrace does not explain",
          "report it with the trace file"),
]

CAUSES: dict[str, Cause] = {c.code: c for c in _CAUSES}


def cause(code: str) -> Cause:
    return CAUSES[code]
