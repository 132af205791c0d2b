/*
 * UFFDIO_MOVE user ABI (Linux 6.8+), the one definition uffdtrace uses.
 *
 * Read by three consumers, so it must stay within what all of them parse:
 *   - native/ C code (gcc, after <linux/types.h>),
 *   - the BPF programs in bpf/ (bcc/clang),
 *   - Python through cffi's cdef (integer #defines and plain structs only:
 *     no #if, no expressions, no includes).
 * The names carry a UFFDT_ prefix so they never collide with newer system
 * headers that define UFFDIO_MOVE themselves (Debian 12's do not).
 */

/* _IOWR(0xAA, _UFFDIO_MOVE = 0x05, struct uffdio_move), 40-byte argument */
#define UFFDT_IOC_MOVE 0xC028AA05
#define UFFDT_IOC_MOVE_NR 0x05
#define UFFDT_MOVE_MODE_DONTWAKE 0x1
#define UFFDT_MOVE_MODE_ALLOW_SRC_HOLES 0x2
/* _IOR(0xAA, _UFFDIO_WAKE = 0x02, struct uffdio_range { __u64 start, len; }):
 * wakes the threads faulting in [start, start+len) (len 0: all of them),
 * e.g. after a move with UFFDIO_MOVE_MODE_DONTWAKE */
#define UFFDT_IOC_WAKE 0x8010AA02
/* UFFD_FEATURE_MOVE, advertised by UFFDIO_API */
#define UFFDT_FEATURE_MOVE 0x10000
/* offset of the kernel-written `move` field inside the argument */
#define UFFDT_MOVE_FIELD_OFFSET 32

struct uffdt_move_arg {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move; /* written by the kernel: bytes moved or -errno */
};
