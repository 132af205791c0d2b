/*
 * The records uffdtrace's BPF programs send to userspace: the one contract
 * between bpf/uffdtrace.bpf.c and the Python collector, which reads these
 * very declarations through cffi (so: plain structs, integer #defines,
 * literal array sizes; no #if, no includes).
 *
 * Every record starts with `__u32 type` so the collector can dispatch.
 */

#define UT_EV_MOVE 1
#define UT_EV_PIN 2
#define UT_EV_UNPIN 3

/* ut_move_event.flags */
#define UT_F_ARG_UNREADABLE 0x1   /* struct uffdio_move could not be read at entry */
#define UT_F_MOVE_UNREADABLE 0x2  /* the `move` field could not be read at exit */
#define UT_F_KERNEL_TIER 0x4      /* move-path hooks (fentry/kprobe) were attached */
#define UT_F_SAMPLED 0x8          /* a success sent 1 in N (UT_SUCCESS_SAMPLE): totals are in the aggregates */
#define UT_F_COST_STATS 0x10      /* TLB-flush and lock-wait fields were measured (else left 0) */

/* ut_move_event.folio_flags: folio state at fail_addr (kernel tier) */
#define UT_FOLIO_SEEN 0x1
#define UT_FOLIO_LARGE 0x2
#define UT_FOLIO_MAYBE_DMA_PINNED 0x4
#define UT_FOLIO_KSM 0x8
#define UT_FOLIO_ANON 0x10
#define UT_FOLIO_ANON_EXCLUSIVE 0x20

/* indexes of the `stats` array map */
#define UT_STAT_MOVES_ENTERED 0
#define UT_STAT_EVENTS_SENT 1      /* move events sent (both ring buffers) */
#define UT_STAT_RINGBUF_DROPS 2    /* failures and pins lost: `events` ring buffer full */
#define UT_STAT_ARG_READ_FAILS 3
#define UT_STAT_INFLIGHT_FULL 4
#define UT_STAT_PINS_SEEN 5
#define UT_STAT_SUCCESSES_UNSENT 6 /* successes not sent: sampled out, or --failed-only */
#define UT_STAT_SUCCESS_DROPS 7    /* successes lost: success ring buffer full */
#define UT_STAT_MAX 8

/* x86 tlb:tlb_flush reasons (arch/x86/include/asm/tlbflush.h) */
#define UT_TLB_REMOTE_SEND_IPI 4

/*
 * One UFFDIO_MOVE ioctl, from sys_enter_ioctl to sys_exit_ioctl.  While the
 * thread is inside the ioctl this lives in the thread's task-local storage
 * (the `moving` map, type == UT_EV_MOVE) and every hook that fires on that
 * thread adds to it; at exit it is sent at most once.
 */
struct ut_move_event {
	__u32 type;
	__u32 pid;
	__u32 tid;
	__u32 fd;
	__u64 ts_ns;            /* bpf_ktime_get_ns() at entry */
	__u64 latency_ns;
	__u64 argp;             /* user address of struct uffdio_move */
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 ret;              /* syscall return: 0 or -errno */
	__s64 move;             /* uffdio_move.move after the call */
	__s64 move_before;      /* ... and before it: equal means maybe never written */
	__u32 flags;            /* UT_F_* */
	__u32 tlb_flushes;      /* tlb:tlb_flush on this thread during the move */
	__u32 tlb_full_flushes; /* of which whole-mm flushes (pages == TLB_FLUSH_ALL) */
	__u32 tlb_remote_ipis;  /* of which IPIs sent to other CPUs */
	__u64 tlb_pages;        /* pages flushed by ranged flushes */
	__u32 mmap_lock_acquires; /* mmap_lock acquisitions during the move */
	__u32 lock_contentions;   /* lock:contention_begin on this thread */
	__u64 mmap_lock_wait_ns;
	__u64 lock_wait_ns;
	__u64 mmap_lock_start_ns;  /* scratch: start of the pending mmap_lock wait */
	__u64 lock_start_ns;       /* scratch: start of the pending contention */
	/* kernel tier: filled by the move-path hooks */
	__s32 step_err;         /* first failing step's return (-errno), 0 if none */
	__u32 steps;            /* move_pages_pte(s) / move_pages_huge_pmd calls */
	__u64 fail_addr;        /* src address of the first failing step */
	__u32 retries;          /* steps that returned -EAGAIN and were retried */
	__u32 folio_flags;      /* UT_FOLIO_* at fail_addr */
	__u32 thp_splits;
	__u32 reserved;
	char comm[16];
};

/* A range pinned long-term through io_uring fixed buffers (or released). */
struct ut_pin_event {
	__u32 type;
	__u32 pid;
	__u32 tid;
	__u32 fd;               /* the io_uring fd */
	__u64 ts_ns;
	__u64 addr;
	__u64 len;
	__u32 opcode;           /* io_uring_register opcode */
	__u32 index;            /* iovec index within the registration */
	char comm[16];
};

/* In-kernel counter key: errno-level outcome per process. */
struct ut_outcome_key {
	__u32 pid;
	__s32 err;              /* 0 for success */
	__u32 partial;          /* failed after moving some bytes */
	__u32 reserved;
};

/* KSM merge seen by ksm:* tracepoints, keyed by pfn in an LRU map. */
struct ut_ksm_merge {
	__u64 ts_ns;
	__u32 pid;              /* current task when the merge happened (ksmd) */
	__s32 err;
};
