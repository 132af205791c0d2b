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
#define UT_EV_REPEAT 4
#define UT_EV_WAKE 5

/* ut_move_event.flags */
#define UT_F_ARG_UNREADABLE 0x1   /* struct uffdio_move could not be read at entry */
#define UT_F_MOVE_UNREADABLE 0x2  /* the `move` field could not be read at exit */
#define UT_F_KERNEL_TIER 0x4      /* move-path hooks (fentry/kprobe) were attached */
#define UT_F_SAMPLED 0x8          /* a success sent 1 in N (UT_SUCCESS_SAMPLE): totals are in the aggregates */
#define UT_F_COST_STATS 0x10      /* TLB-flush and lock-wait fields were measured (else left 0) */
#define UT_F_STATE_AT_EXIT 0x20   /* a failed move: src_state/dst_state read before it returned */
#define UT_F_VMAS_AT_EXIT 0x40    /* an EINVAL/ENOENT move: src_vma_state/dst_vma_state read before it returned */
#define UT_F_UFFD_AT_EXIT 0x80    /* an EAGAIN move that moved nothing: uffd_state read before it returned */
#define UT_F_WAKE_SENT 0x100      /* threads were asleep in its range: a ut_wake_event was sent at its entry */

/* ut_move_event.folio_flags: the folio where a failed move stopped (kernel
 * tier; its state is in src_state) */
#define UT_FOLIO_SEEN 0x1
#define UT_FOLIO_PINNED_SEEN 0x40      /* a GUP pin of this folio was seen (pinner_*) */

/* ut_move_event.kflags: what the kernel-tier hooks saw during the move */
#define UT_K_MOVE_PAGES 0x1            /* move_pages() was entered */
#define UT_K_MOVE_PAGES_RETURNED 0x2   /* ... and returned (kernel_ret is valid) */
#define UT_K_IOCTL_SEEN 0x4            /* userfaultfd_ioctl() entered for this move */
#define UT_K_CROSS_MM 0x8              /* the uffd belongs to another mm */
#define UT_K_STEP_FAILED 0x10          /* a move step failed: step_err, fail_addr */
#define UT_K_PTE_STEPS 0x20            /* the PTE step function was hooked: path_* count its
					* steps (else move_pages_pte is inlined: PTE pages
					* are only bytes moved minus PMDs) */
#define UT_K_PATHS_READ 0x40           /* each step's destination entry was read: zero
					* pages, swap entries and holes told apart */
#define UT_K_PATHS_AT_EXIT 0x80        /* tracepoint tier: path_* count the destination
					* entries read at exit, at most 16 (PMD or PTE):
					* the rest of a larger move is not counted */

/* ut_pin_event.method: how the pages were pinned */
#define UT_PIN_IO_URING_REGISTER 1     /* io_uring_register(2) fixed buffers */
#define UT_PIN_USER_PAGES_FAST 2       /* pin_user_pages_fast() */
#define UT_PIN_USER_PAGES 3
#define UT_PIN_USER_PAGES_REMOTE 4
#define UT_PIN_USER_PAGES_UNLOCKED 5
#define UT_PIN_METHOD_MASK 0xff
#define UT_PIN_LONGTERM 0x100          /* or'ed in: FOLL_LONGTERM was asked for */

/*
 * Who issued it (--stacks, UT_STACKS): the stacks of a sent failure's
 * caller and of a long-term pinner, as ids in the `stack_traces` map
 * (BPF_STACK_TRACE), which the collector resolves and symbolizes.  All
 * zero when stacks were not asked for.
 */
/* ut_stack_ids.flags: what was taken */
#define UT_STACK_USER 0x1     /* user_id: bpf_get_stackid(BPF_F_USER_STACK)'s result */
#define UT_STACK_KERNEL 0x2   /* kernel_id: bpf_get_stackid()'s result, the kernel stack */
#define UT_STACK_SP_WORDS 0x4 /* sp_words were read at the user stack pointer */

struct ut_stack_ids {
	/* The words at the user stack pointer in the syscall.  A syscall
	 * wrapper (glibc's ioctl(), syscall()) keeps no frame pointer, so a
	 * frame-pointer walk goes from it straight to its caller's caller:
	 * the function that made the call is skipped.  Its return address is
	 * among these words, where the wrapper's unwind table (.eh_frame) says
	 * (uffdtrace/cfi.py): glibc 2.36's ioctl() keeps 0x58 bytes below it. */
	__u64 sp_words[16];
	__s32 user_id;        /* a `stack_traces` id (>= 0), or -errno */
	__s32 kernel_id;
	__u32 flags;          /* UT_STACK_* */
};

/* indexes of the `stats` array map */
#define UT_STAT_MOVES_ENTERED 0
#define UT_STAT_EVENTS_SENT 1      /* move events sent (both ring buffers) */
#define UT_STAT_RINGBUF_DROPS 2    /* failures and pins lost: `events` ring buffer full */
#define UT_STAT_ARG_READ_FAILS 3
#define UT_STAT_INFLIGHT_FULL 4
#define UT_STAT_PINS_SEEN 5
#define UT_STAT_SUCCESSES_UNSENT 6 /* successes not sent: sampled out, or --failed-only */
#define UT_STAT_SUCCESS_DROPS 7    /* successes lost: success ring buffer full */
#define UT_STAT_GUP_PINS 8          /* pin_user_pages* calls seen (kernel tier) */
#define UT_STAT_GUP_UNPINS 9
/* map updates that failed because a map was full: what they would have
 * recorded is missing, and is counted here instead of silently lost */
#define UT_STAT_OUTCOMES_FULL 10    /* moves missing from the per-process outcome counts */
#define UT_STAT_FOLLOW_FULL 11      /* forked children of a followed command not followed */
#define UT_STAT_SAVED_ARGS_FULL 12  /* kprobe arguments not saved: that exit saw zeros */
/* failure runs (struct ut_repeat_event) */
#define UT_STAT_FAILURES_COALESCED 13 /* failures counted in a run instead of sent one by one */
#define UT_STAT_RUNS_FULL 14        /* runs map full: failures sent one by one instead */
#define UT_STAT_REPEAT_DROPS 15     /* failures lost with a repeat record: `events` full */
#define UT_STAT_FAILURES_OVERFLOWED 16 /* failures counted in `overflow`: `events` was full */
/* sums over every move that ended, exact whatever was sent: the log2
 * histograms cannot give them back (`uffdtrace serve` exports them) */
#define UT_STAT_BYTES_MOVED 17      /* bytes really moved: a success's len, a partial's move */
#define UT_STAT_BYTES_REQUESTED 18  /* the len of every move: the size histogram's sum */
#define UT_STAT_LATENCY_NS 19       /* the latency of every move: the latency histogram's sum */
#define UT_STAT_TLB_FLUSHES 20      /* TLB flushes inside moves (0 with --no-cost-stats) */
#define UT_STAT_WAKE_DROPS 21       /* wake records lost: `events` ring buffer full */
#define UT_STAT_MAX 22

/* tlb:tlb_flush reasons, enum tlb_flush_reason (include/linux/mm_types.h:
 * not uapi, and the tracepoint tier may compile with another version's
 * headers, so spelled here; uffdtrace_kernel.bpf.c checks them against the
 * running kernel's own headers whenever the kernel tier is compiled) */
#define UT_TLB_FLUSH_ON_TASK_SWITCH 0  /* a context switch */
#define UT_TLB_REMOTE_SHOOTDOWN 1      /* on the *target* CPU of an IPI */
#define UT_TLB_REMOTE_SEND_IPI 4       /* IPIs sent to flush other CPUs */

/*
 * What the page tables said about one user address, read in the kernel by
 * bpf/ut_pagestate.h (ut_page_state_read) at the instant it is called, e.g.
 * at the end of a failed move before the thread returns to user space.
 * Physical frame numbers only: no kernel pointer is ever stored here.
 */

/* ut_page_state.where: where the page-table walk stopped, and why */
#define UT_PSW_UNREAD 0          /* never read */
#define UT_PSW_NO_MM 1           /* the task has no mm (a kernel thread) */
#define UT_PSW_READ_FAILED 2     /* a table or struct page could not be read (level says where) */
#define UT_PSW_PGD_NONE 3        /* nothing mapped: empty entry at that level */
#define UT_PSW_P4D_NONE 4        /* (5-level paging only) */
#define UT_PSW_PUD_NONE 5
#define UT_PSW_PMD_NONE 6
#define UT_PSW_PUD_HUGE 7        /* a 1 GiB leaf (hugetlb; never anonymous memory) */
#define UT_PSW_PMD_HUGE 8        /* a 2 MiB leaf: a PMD-mapped THP or the huge zero page */
#define UT_PSW_PMD_MIGRATION 9   /* a PMD-mapped THP under migration */
#define UT_PSW_PMD_OTHER 10      /* another non-present PMD */
#define UT_PSW_PTE_NONE 11       /* a hole: no page, no swap entry */
#define UT_PSW_PTE_PRESENT 12    /* a page is mapped (PROT_NONE/NUMA-hinting entries too) */
#define UT_PSW_PTE_SWAP 13       /* swapped out: swp_type, and the swap offset in pfn */
#define UT_PSW_PTE_MIGRATION 14  /* under migration: pfn is the page being migrated */
#define UT_PSW_PTE_OTHER 15      /* another non-present PTE: marker (uffd-wp, guard), hwpoison, device */
#define UT_PSW_PUD_OTHER 16      /* a non-present PUD (hugetlb migration or poison) */

/* ut_page_state.level: the level the walk stopped at */
#define UT_PSL_MM 0              /* current->mm, mm->pgd */
#define UT_PSL_PGD 1
#define UT_PSL_P4D 2
#define UT_PSL_PUD 3
#define UT_PSL_PMD 4
#define UT_PSL_PTE 5
#define UT_PSL_PAGE 6            /* the struct page / folio of the mapped pfn */

/* ut_page_state.flags */
#define UT_PS_FOLIO 0x1             /* the folio was read: refcount..order are valid */
#define UT_PS_LARGE 0x2             /* a large folio (PG_head): order, pincount */
#define UT_PS_ANON 0x4              /* an anonymous folio (a KSM one has UT_PS_KSM instead) */
#define UT_PS_KSM 0x8               /* (mapping & 3) == 3: never anon-exclusive */
#define UT_PS_ANON_EXCLUSIVE 0x10   /* PageAnonExclusive (PTE: the mapped page; PMD: the head) */
#define UT_PS_MAYBE_DMA_PINNED 0x20 /* folio_maybe_dma_pinned(): pincount > 0, or refcount >= 1024 */
#define UT_PS_ZERO_PAGE 0x40        /* the shared zero page */
#define UT_PS_HUGE_ZERO_PAGE 0x80   /* the huge zero folio */
#define UT_PS_SWP_EXCLUSIVE 0x100   /* swap PTE: the exclusive bit; migration: an exclusive type */
#define UT_PS_WRITE 0x200           /* the entry is writable */
#define UT_PS_PROTNONE 0x400        /* PROT_NONE or NUMA-hinting entry: present to the kernel */
#define UT_PS_SPECIAL 0x800         /* pte_special: vm_normal_folio() ignores the page */
#define UT_PS_LOCKED 0x1000         /* folio locked (migration, split, swap-in under way) */
#define UT_PS_SWAPCACHE 0x2000      /* folio in the swap cache */
#define UT_PS_UFFD_WP 0x4000        /* userfaultfd write-protect bit */

struct ut_page_state {
	__u64 addr;             /* the user address read */
	__u64 entry;            /* raw PTE/PMD/PUD where the walk stopped */
	__u64 pfn;              /* the page mapped at addr (a THP's subpage); swap: the swap offset */
	__u32 flags;            /* UT_PS_* */
	__s32 refcount;         /* folio refcount */
	__s32 mapcount;         /* folio_mapcount(): page tables mapping the folio */
	__s32 page_mapcount;    /* the mapped page's own PTE mappings (_mapcount + 1) */
	__s32 pincount;         /* large folios: _pincount (small: only UT_PS_MAYBE_DMA_PINNED) */
	__u8 where;             /* UT_PSW_* */
	__u8 level;             /* UT_PSL_* */
	__u8 order;             /* folio order, 0 for small folios */
	__u8 swp_type;          /* non-present entries: the swap type */
};

/*
 * The VMA containing one user address, looked up in the kernel by
 * bpf/ut_vmastate.h (a walk of mm->mm_mt, the maple tree of VMAs) at the
 * instant it is called: the end of a failed move, before the thread
 * returns to user space.  No kernel pointer is stored, only whether the
 * VMA's pointers are set.
 */

/* ut_vma_state.where: what the walk found */
#define UT_VSW_UNREAD 0          /* never read */
#define UT_VSW_FOUND 1           /* a VMA contains addr: vm_start..vm_flags, flags are valid */
#define UT_VSW_NONE 2            /* no VMA contains addr (a gap of the tree) */
#define UT_VSW_NO_MM 3           /* the task has no mm */
#define UT_VSW_READ_FAILED 4     /* a node or the VMA could not be read (depth says where) */
#define UT_VSW_RACED 5           /* the tree changed while read: a dead node, or a VMA not containing addr */
#define UT_VSW_TOO_DEEP 6        /* deeper than the walk's bound (UT_MT_MAX_DEPTH) */
#define UT_VSW_BAD_NODE 7        /* a node type the walk does not know (node_type) */

/* ut_vma_state.flags */
#define UT_VS_UFFD_CTX 0x1       /* vm_userfaultfd_ctx.ctx is set: registered with a userfaultfd */
#define UT_VS_UFFD_CTX_KNOWN 0x2 /* the moving fd's userfaultfd context was read ... */
#define UT_VS_THIS_UFFD 0x4      /* ... and it is the one this VMA is registered with */
#define UT_VS_ANON_VMA 0x8       /* anon_vma is set */
#define UT_VS_FILE 0x10          /* vm_file is set */
#define UT_VS_VM_OPS 0x20        /* vm_ops is set: not vma_is_anonymous() */

struct ut_vma_state {
	__u64 addr;             /* the user address looked up */
	__u64 vm_start;
	__u64 vm_end;
	__u64 vm_flags;         /* raw; decoded in userspace (uffdtrace/vmaflags.py) */
	__u32 flags;            /* UT_VS_* */
	__u8 where;             /* UT_VSW_* */
	__u8 depth;             /* maple-tree levels walked */
	__u8 node_type;         /* the last node's enum maple_type */
	__u8 pad;
};

/*
 * The moving fd's userfaultfd context, read by bpf/ut_uffdstate.h when a
 * move failed with EAGAIN having moved nothing (the errno of
 * ctx->mmap_changing): the counter itself, and the non-cooperative events
 * queued on ctx->event_wqh that the monitor has not read yet -- each one
 * holds a thread of the process inside fork/mremap/madvise/munmap until it
 * is read.  No kernel pointer is stored.
 */

/* ut_uffd_state.where */
#define UT_USW_UNREAD 0          /* never read */
#define UT_USW_READ 1            /* mmap_changing and the queue were read */
#define UT_USW_NO_CTX 2          /* the fd's userfaultfd context could not be found */
#define UT_USW_READ_FAILED 3     /* the context could not be read */
#define UT_USW_RACED 4           /* the queue changed while walked (an entry not an event) */

#define UT_UFFD_PENDING_MAX 4    /* events described; more are only counted */

struct ut_uffd_pending {
	__u32 pid;              /* the thread that raised it, waiting for it to be read: tgid */
	__u32 tid;
	__u8 event;             /* uffd_msg.event: UFFD_EVENT_FORK/REMAP/REMOVE/UNMAP */
	__u8 pad[7];
	char comm[16];
};

struct ut_uffd_state {
	__s32 mmap_changing;    /* ctx->mmap_changing: events raised and not yet read */
	__u8 where;             /* UT_USW_* */
	__u8 queued;            /* events on ctx->event_wqh, counted up to the walk's bound */
	__u8 more;              /* 1: the queue goes on past that bound */
	__u8 pad;
	struct ut_uffd_pending events[4];  /* the first UT_UFFD_PENDING_MAX, oldest first */
};

/*
 * One UFFDIO_MOVE ioctl, from its entry (sys_enter_ioctl, or
 * userfaultfd_ioctl() in the kernel tier) to its exit: the record sent to
 * userspace, at most once per ioctl.  While the thread is inside the ioctl
 * it is built in the thread's in-flight state (struct ut_move_inflight in
 * uffdtrace.bpf.c), next to the bookkeeping only the kernel side needs
 * (the argument's user address, wait start stamps, kernel pointers): that
 * stays there, so nothing but these fields can reach a ring buffer.
 */
struct ut_move_event {
	__u32 type;
	__u32 pid;
	__u32 tid;
	__u32 fd;
	__u64 ts_ns;            /* bpf_ktime_get_ns() at entry */
	__u64 latency_ns;
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
	/* kernel tier: filled by the move-path hooks */
	__s32 step_err;         /* first failing step's return (-errno), 0 if none */
	__u32 steps;            /* move_pages_pte(s) / move_pages_huge_pmd calls */
	__u64 fail_addr;        /* src address of the first failing step */
	__u32 retries;          /* steps that returned -EAGAIN and were retried */
	__u32 folio_flags;      /* UT_FOLIO_*: the folio in src_state */
	__u32 thp_splits;
	__u32 kflags;           /* UT_K_* */
	__s64 kernel_ret;       /* move_pages(): bytes moved, or -errno */
	__s32 split_err;        /* first failed folio split while inside the move */
	__u32 pinner_pid;       /* who pinned the folio in src_state (GUP hooks) */
	__u64 pinner_ts_ns;
	__u32 pinner_method;    /* UT_PIN_* */
	__u32 pinner_gup_flags;
	/* kernel tier: the path each moved page took (user question 6), from
	 * each successful step and the destination entry it left -- disjoint
	 * counts (uffdtrace/movepaths.py) */
	__u32 path_pte_pages;       /* present pages moved by PTE steps (batched from 6.18) */
	__u32 path_zero_pages;      /* the zero page (move_zeropage_pte) */
	__u32 path_swap_pages;      /* swap entries (move_swap_pte) */
	__u32 path_hole_pages;      /* src holes skipped (UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES) */
	__u32 path_pmds;            /* whole PMD-mapped THPs (move_pages_huge_pmd) */
	__u32 path_huge_zero_pmds;  /* the huge zero page, by PMD */
	/* ... and the large folios it split (question 7): thp_splits folios of
	 * split_pages base pages in all (0 if their order could not be read) */
	__u32 split_pages;
	char pinner_comm[16];
	char comm[16];
	/* UT_F_STATE_AT_EXIT: the page tables and folio at the address where a
	 * failed move stopped (src + bytes moved) and at its destination, read
	 * by bpf/ut_pagestate.h before the thread returned to user space */
	struct ut_page_state src_state;
	struct ut_page_state dst_state;
	/* UT_F_VMAS_AT_EXIT: the VMAs containing those two addresses, looked
	 * up by bpf/ut_vmastate.h at the same instant (EINVAL and ENOENT
	 * failures: the errnos VMAs explain) */
	struct ut_vma_state src_vma_state;
	struct ut_vma_state dst_vma_state;
	/* UT_F_UFFD_AT_EXIT: the uffd's pending events (EAGAIN, nothing moved) */
	struct ut_uffd_state uffd_state;
	/* UT_STACKS: the caller's user stack, for a failure that is sent (a
	 * run's first: its repeats take none, so a storm pays for one; the run
	 * shape does not compare stacks) */
	struct ut_stack_ids stack_ids;
};

/*
 * Threads a UFFDIO_MOVE or a UFFDIO_WAKE wakes: who was asleep in
 * handle_userfault() on the uffd at an address of the range it wakes, read
 * by bpf/ut_uffdstate.h at the ioctl's ENTRY (by its exit the woken are off
 * the queues).  Sent only when there is such a waiter, to the `events` ring,
 * next to the move event it belongs to (same tid and ts_ns).  A move wakes
 * the waiters of [dst, dst + bytes moved) unless it asked DONTWAKE, so
 * whether each one was really woken is decided with the move's result; a
 * UFFDIO_WAKE wakes its whole range (len 0: every waiter).
 */
/* ut_wake_event.cause */
#define UT_WAKE_BY_MOVE 1        /* a UFFDIO_MOVE entered; range: its dst, len */
#define UT_WAKE_BY_WAKE 2        /* a UFFDIO_WAKE entered; range: its start, len */

/* ut_wake_event.flags */
#define UT_WK_DONTWAKE 0x1       /* the move asked UFFDIO_MOVE_MODE_DONTWAKE: it wakes nobody */
#define UT_WK_RACED 0x2          /* a queue changed while walked: waiters may be missing */
#define UT_WK_MORE 0x4           /* more waiters in range than described, or a queue past its bound */

/* ut_fault_waiter.since: what since_ns is */
#define UT_WAIT_FAULT_ENTRY 1    /* entry of its handle_userfault() call (kernel tier): the wait is exact */
#define UT_WAIT_FIRST_SEEN 2     /* first seen asleep there, with no switch since: the wait is at least this */

/* ut_fault_waiter.queue: where the fault was queued */
#define UT_WQ_PENDING 1          /* ctx->fault_pending_wqh: the monitor has not read the fault yet */
#define UT_WQ_READ 2             /* ctx->fault_wqh: read by the monitor, waiting to be resolved */

#define UT_WAKE_WAITERS_MAX 4    /* waiters described; more are only counted */

struct ut_fault_waiter {
	__u64 addr;             /* uffd_msg.arg.pagefault.address: the page it faulted on */
	__u64 since_ns;         /* bpf_ktime_get_ns(); what it marks: `since` */
	__u32 pid;              /* the faulting thread: tgid */
	__u32 tid;
	__u8 since;             /* UT_WAIT_* */
	__u8 queue;             /* UT_WQ_* */
	__u8 pad[6];
	char comm[16];
};

struct ut_wake_event {
	__u32 type;             /* UT_EV_WAKE */
	__u32 pid;              /* the waker (mover, or caller of UFFDIO_WAKE) */
	__u32 tid;
	__u32 fd;
	__u64 ts_ns;            /* a move's: its move event's ts_ns; a wake's: its entry */
	__u64 start;            /* the range it wakes (a move's dst) */
	__u64 len;
	__u32 cause;            /* UT_WAKE_BY_* */
	__u32 flags;            /* UT_WK_* */
	__u32 waiting;          /* threads asleep on the uffd's fault queues (walked) */
	__u32 in_range;         /* ... of which in the range: the first UT_WAKE_WAITERS_MAX below */
	struct ut_fault_waiter waiters[4];
	char comm[16];
};

/*
 * A run of identical failures: consecutive failed moves of one thread with
 * the same request and the same result (errno, progress, the page states
 * at exit, the kernel tier's failing step and pinner) are coalesced in the
 * kernel.  The run's first failure is sent as a ut_move_event; the others
 * are only counted, and sent as one ut_repeat_event when the run closes: at
 * the thread's next move that differs or succeeds, when the run has lasted
 * UT_RUN_MAX_NS, or, still open when tracing stops, read from the `runs`
 * map by the collector.  The aggregates still count every move.
 */
/* ut_repeat_event.closed_by */
#define UT_RUN_CLOSED_DIFFERENT 1  /* the thread's next move failed differently */
#define UT_RUN_CLOSED_SUCCESS 2    /* ... or succeeded */
#define UT_RUN_CLOSED_TIME 3       /* the run reached UT_RUN_MAX_NS: the next one opens anew */
#define UT_RUN_CLOSED_END 4        /* still open when tracing stopped or its thread exited */
#define UT_RUN_CLOSED_OVERFLOW 5   /* counted while `events` was full (struct ut_overflow) */

struct ut_repeat_event {
	__u32 type;             /* UT_EV_REPEAT */
	__u32 pid;
	__u32 tid;
	__u32 closed_by;        /* UT_RUN_CLOSED_* */
	__u64 first_ts_ns;      /* ts_ns of the run's first failure: the move event it repeats */
	__u64 last_ts_ns;       /* entry of the last repeat */
	__u64 count;            /* failures after the first, each identical to it */
	__u64 latency_total_ns; /* of those `count` failures */
	__u64 latency_max_ns;
};

/*
 * Failures the `events` ring buffer had no room for are not lost: each is
 * counted under its thread, its shape (the words a run compares: request,
 * result, page and VMA states at exit, failing step, folio, pinner) and the period
 * of UT_RUN_MAX_NS it ended in, the first of them kept whole.  The collector
 * takes the periods that are over (no BPF program can still be adding to
 * them) and reads each as that first failure plus a repeat count.
 */
#define UT_RUN_SHAPE_WORDS 18

struct ut_overflow_key {
	__u32 tid;
	__u32 pad;
	__u64 period;           /* bpf_ktime_get_ns() / UT_RUN_MAX_NS when the failure ended */
	__u64 shape_hash;
};

struct ut_overflow {
	struct ut_repeat_event rep;   /* closed_by UT_RUN_CLOSED_OVERFLOW; count: after the first */
	__u64 shape[UT_RUN_SHAPE_WORDS];
	struct ut_move_event first;   /* the first, as it would have been sent */
};

/* A range pinned long-term: io_uring fixed buffers (tracepoint tier) or a
 * FOLL_LONGTERM pin_user_pages*() call (kernel tier); or released. */
struct ut_pin_event {
	__u32 type;
	__u32 pid;
	__u32 tid;
	__u32 fd;               /* the io_uring fd (0 for GUP pins) */
	__u64 ts_ns;
	__u64 addr;
	__u64 len;
	__u32 opcode;           /* io_uring_register opcode (0 for GUP pins) */
	__u32 index;            /* iovec index within the registration (0 for GUP pins) */
	__u32 method;           /* UT_PIN_* */
	__u32 gup_flags;        /* FOLL_* the caller passed (GUP hooks) */
	char comm[16];
	/* UT_STACKS, pins only: the pinner's user stack, and its kernel stack
	 * where a GUP hook saw the pin (the tracepoint tier's is only the
	 * syscall entry: not taken) */
	struct ut_stack_ids stack_ids;
};

/*
 * `uffdtrace check`'s view of another process's pages (bpf/ut_peek.bpf.c):
 * the checking thread arms a request, then reads /proc/PID/mem at address
 * 0, which takes that process's mmap_lock in its context and fails without
 * touching a page; the program walks the request's addresses in the mm
 * whose lock it saw taken, and disarms.
 */
#define UT_PEEK_BATCH 8

struct ut_peek_req {
	__u32 tid;              /* the checking thread */
	__u32 armed;            /* set by the checker, cleared by the walk */
	__u32 self;             /* 1: the checked process is the checker's own */
	__u32 n;                /* addresses to walk (<= UT_PEEK_BATCH) */
	__u64 walks;            /* requests served */
	__u64 addrs[8];
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
