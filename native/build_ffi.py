"""cffi out-of-line API build of native/ into ``uffdtrace._native``.

The C declarations are read from the same headers the C sources include
(``bpf/uffd_move_abi.h``, ``native/uffdw.h``, ``native/bpfprobe.h``): there is
no second, hand-typed copy of any struct or constant.
"""
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
HEADERS = ["bpf/uffd_move_abi.h", "bpf/uffdtrace_event.h", "native/uffdw.h",
           "native/bpfprobe.h", "native/ringdrain.h"]
SOURCES = ["native/uffdw.c", "native/bpfprobe.c", "native/ringdrain.c"]

# libc and kernel constants the Python side needs; "..." makes the C
# compiler supply each value, so none is copied here by hand.
SYSTEM_CONSTANTS = """
#define PROT_NONE ...
#define PROT_READ ...
#define PROT_WRITE ...
#define MAP_PRIVATE ...
#define MAP_SHARED ...
#define MAP_ANONYMOUS ...
#define MADV_HUGEPAGE ...
#define MADV_NOHUGEPAGE ...
#define MADV_MERGEABLE ...
#define MADV_UNMERGEABLE ...
#define MADV_DONTNEED ...
#define MADV_COLD ...
#define MADV_PAGEOUT ...
#define MADV_DONTFORK ...
#define UFFDIO_REGISTER_MODE_MISSING ...
static const int BPF_PROG_TYPE_KPROBE;
static const int BPF_PROG_TYPE_TRACEPOINT;
static const int BPF_PROG_TYPE_RAW_TRACEPOINT;
static const int BPF_PROG_TYPE_TRACING;
static const int BPF_TRACE_FENTRY;
static const int BPF_TRACE_FEXIT;
static const int BPF_RINGBUF_HDR_SZ;
static const int IORING_REGISTER_BUFFERS;
static const int IORING_UNREGISTER_BUFFERS;
static const int IORING_REGISTER_BUFFERS2;
struct io_uring_rsrc_register { uint32_t nr; uint64_t data; ...; };
"""


def uapi_names(header: str, pattern: str) -> str:
    """`#define NAME ...` for each macro of a system uapi header whose name
    matches `pattern`: the compiler supplies the values, the header the names."""
    text = Path("/usr/include", header).read_text()
    names = re.findall(rf"^#define\s+({pattern})\s", text, re.M)
    return "".join(f"#define {name} ...\n" for name in names)

ffibuilder = FFI()
# The kernel fixed-width names the shared headers use.
ffibuilder.cdef("typedef uint64_t __u64; typedef int64_t __s64; "
               "typedef uint32_t __u32; typedef int32_t __s32; typedef uint8_t __u8;")
for header in HEADERS:
    ffibuilder.cdef((ROOT / header).read_text())
ffibuilder.cdef(SYSTEM_CONSTANTS)
# /proc/kpageflags bits (pagestate.py picks the ones a move depends on)
ffibuilder.cdef(uapi_names("linux/kernel-page-flags.h", r"KPF_\w+"))
# non-cooperative uffd events and the features that ask for them (mmap_changing)
ffibuilder.cdef(uapi_names("linux/userfaultfd.h", r"UFFD_(?:FEATURE_)?EVENT_\w+"))
ffibuilder.set_source(
    "uffdtrace._native",
    """
    #include <linux/types.h>
    #include <linux/bpf.h>
    #include <linux/io_uring.h>
    #include <linux/kernel-page-flags.h>
    #include <linux/userfaultfd.h>
    #include <sys/mman.h>
    #include "bpf/uffd_move_abi.h"
    #include "bpf/uffdtrace_event.h"
    #include "native/uffdw.h"
    #include "native/bpfprobe.h"
    #include "native/ringdrain.h"
    """,
    sources=SOURCES,
    include_dirs=["."],
    # -fno-omit-frame-pointer: `--stacks` walks user stacks by frame
    # pointers (bpf_get_stackid); without them the walk stops in, or skips,
    # the workload's own functions that issue each move.
    extra_compile_args=["-O2", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
                        "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
