/*
 * uffdtrace tracepoint tier: follow every UFFDIO_MOVE ioctl.
 *
 * Compiled by bcc at run time.  uffdtrace/bpfprog.py prepends the #defines
 * that configure it (filters, buffer sizes, success sampling); the record
 * layout is in uffdtrace_event.h, shared with the Python collector.
 *
 * Shape: sys_enter_ioctl opens a per-thread in-flight record (only for
 * cmd == UFFDIO_MOVE, tested first: this tracepoint fires for every ioctl on
 * the machine); hooks that fire on that thread while it is inside the move
 * add to the record; sys_exit_ioctl completes it, updates the in-kernel
 * aggregates and sends at most one event.  Ring-buffer reserve failures are
 * counted, never silent.
 *
 * Cost, because a tracer people leave running must cost almost nothing
 * (bench/ measures each of these choices):
 *  - the in-flight record lives in task-local storage: hooks that fire on
 *    every thread of the machine (ioctl exit, TLB flush, mmap_lock, lock
 *    contention) learn "not moving" from a pointer in the task itself, with
 *    no hashing and no cache line shared with other CPUs;
 *  - counters and histograms are per-CPU: no atomic instructions per move;
 *  - successes can be sampled (UT_SUCCESS_SAMPLE = N: 1 in N on average, at
 *    random intervals, is sent); failures are always sent; the aggregates
 *    count every move;
 *  - failures (and pins) and successes go to separate ring buffers, so a
 *    flood of successes can never crowd a failure out; successes do not wake
 *    the collector (it drains them on its poll timeout) except every
 *    UT_WAKEUP_BATCH-th per CPU;
 *  - TLB and lock hooks are raw tracepoints: no perf record is built for
 *    each of the machine-wide events they fire on.  They can be left out
 *    (UT_COST_STATS 0): a 4 KiB move pays for one TLB-flush hook, and every
 *    mmap_lock wait on the machine pays for the lock hooks;
 *  - the thread's comm is read only for a record that is sent.
 */
#include <uapi/linux/ptrace.h>
#include <uapi/linux/uio.h>
#include "uffd_move_abi.h"
#include "uffdtrace_event.h"
#ifndef UT_STATE_AT_EXIT
#define UT_STATE_AT_EXIT 0
#endif
#ifndef UT_VMAS_AT_EXIT
#define UT_VMAS_AT_EXIT 0
#endif
#ifndef UT_UFFD_AT_EXIT
#define UT_UFFD_AT_EXIT 0
#endif
/* who a move or UFFDIO_WAKE wakes, read at its entry (ut_uffdstate.h) */
#ifndef UT_WAITERS
#define UT_WAITERS 0
#endif
/* include/uapi/asm-generic/errno-base.h (uffdtrace_kernel.bpf.c, appended
 * to this file, uses them too) */
#define UT_ENOENT 2
#define UT_EAGAIN 11
#define UT_EINVAL 22
#if UT_STATE_AT_EXIT || UT_VMAS_AT_EXIT || UT_WAITERS
#include "ut_pagestate.h"       /* needs the UT_L_* layout of this kernel */
#endif
#if UT_VMAS_AT_EXIT || UT_WAITERS
#include "ut_vmastate.h"        /* ... and its VMA_READER_FACTS */
#endif
#if UT_WAITERS
/*
 * How long a waiter has waited.  The kernel tier stamps each thread's entry
 * into handle_userfault() here (uffdtrace_kernel.bpf.c): the wait is then
 * exact.  Without it (the tracepoint tier adds no hook on page faults, which
 * every process on the machine takes), a waiter is stamped the first time a
 * walk sees it asleep at that address: the wait is at least that long.  Its
 * context switches are kept with the stamp: a thread asleep all along has
 * not run, so a different count means it was woken and faulted anew, and
 * the old stamp is not its.
 */
struct ut_fault_since {
	u64 addr;               /* the page it faulted on */
	u64 since_ns;
	u64 switches;           /* nvcsw + nivcsw when first seen (UT_WAIT_FIRST_SEEN) */
	u32 since;              /* UT_WAIT_* */
	u32 pad;
};
BPF_TABLE("lru_hash", u32, struct ut_fault_since, fault_since, 10240);

static __always_inline u64 ut_task_switches(u64 task)
{
	u64 nv = 0, niv = 0;

	ut_ps_read_u64(task + UT_L_TASK_NVCSW, &nv);
	ut_ps_read_u64(task + UT_L_TASK_NIVCSW, &niv);
	return nv + niv;
}

static __always_inline void ut_fault_waited(struct ut_fault_waiter *fw, u64 task, u64 now)
{
	u64 switches = ut_task_switches(task);
	u32 tid = fw->tid;
	struct ut_fault_since *seen = fault_since.lookup(&tid);

	if (seen && (seen->addr & ~0xfffULL) == (fw->addr & ~0xfffULL) &&
	    (seen->since == UT_WAIT_FAULT_ENTRY || seen->switches == switches)) {
		fw->since_ns = seen->since_ns;
		fw->since = seen->since;
		return;
	}
	struct ut_fault_since first = {};
	first.addr = fw->addr;
	first.since_ns = now;
	first.switches = switches;
	first.since = UT_WAIT_FIRST_SEEN;
	fault_since.update(&tid, &first);
	fw->since_ns = now;
	fw->since = UT_WAIT_FIRST_SEEN;
}

#endif
#if UT_UFFD_AT_EXIT || UT_WAITERS
#include "ut_uffdstate.h"       /* ... and its UFFD_READER_FACTS (needs ut_vmastate.h) */
#endif

#ifndef UT_PID
#define UT_PID 0
#endif
#ifndef UT_TID
#define UT_TID 0
#endif
#ifndef UT_FOLLOW
#define UT_FOLLOW 0
#endif
#ifndef UT_FAILED_ONLY
#define UT_FAILED_ONLY 0
#endif
#ifndef UT_SUCCESS_SAMPLE
#define UT_SUCCESS_SAMPLE 1
#endif
#ifndef UT_RINGBUF_PAGES
#define UT_RINGBUF_PAGES 256
#endif
#ifndef UT_KERNEL_TIER
#define UT_KERNEL_TIER 0
#endif
/* kernel tier: moves followed through userfaultfd_ioctl(), pins through the
 * GUP hooks; no syscall tracepoint then (set by uffdtrace/kernel_tier.py) */
#ifndef UT_MOVES_FROM_HANDLER
#define UT_MOVES_FROM_HANDLER 0
#endif
#ifndef UT_PINS_FROM_GUP
#define UT_PINS_FROM_GUP 0
#endif
#ifndef UT_SUCCESS_RINGBUF_PAGES
#define UT_SUCCESS_RINGBUF_PAGES 256
#endif
#ifndef UT_WAKEUP_BATCH
#define UT_WAKEUP_BATCH 1024
#endif
#ifndef UT_COST_STATS
#define UT_COST_STATS 1
#endif
/* identical failures of a thread within this time are one run, sent as one
 * move event and one repeat event (struct ut_repeat_event); 0: every
 * failure is sent by itself */
#ifndef UT_RUN_MAX_NS
#define UT_RUN_MAX_NS 100000000
#endif
#ifndef UT_RUNS_MAX
#define UT_RUNS_MAX 10240
#endif
/* (thread, failure shape, period) counts kept while `events` is full */
#ifndef UT_OVERFLOW_MAX
#define UT_OVERFLOW_MAX 4096
#endif
#define UT_MAX_IOVECS 16
/* --stacks: the user stack of each sent failure's caller and of each
 * long-term pinner (+ the pinner's kernel stack in the kernel tier).  Off:
 * no map, no helper call, nothing taken (struct ut_stack_ids stays zero). */
#ifndef UT_STACKS
#define UT_STACKS 0
#endif
/* distinct stacks the map holds; the collector deletes the ids it has
 * resolved once half of them are used (uffdtrace/stacks.py) */
#ifndef UT_STACK_ENTRIES
#define UT_STACK_ENTRIES 4096
#endif
/* io_uring's uapi (opcodes, struct io_uring_rsrc_register offsets) comes as
 * UT_IORING_* from uffdtrace/bpfprog.py, which reads the system's
 * <linux/io_uring.h> through cffi: the kernel's own uapi/linux/io_uring.h
 * pulls in linux/fs.h, which would add seconds to every compile. */

/*
 * A move in flight on one thread: the record it will send (`ev`, the wire
 * format of uffdtrace_event.h) and the bookkeeping only the kernel side
 * needs until the move ends.  Only `ev` is ever copied to a ring buffer
 * (send_move() takes nothing else), so the argument's user address, wait
 * stamps and kernel pointers cannot reach user space by mistake.
 */
struct ut_move_inflight {
	struct ut_move_event ev;     /* ev.type == UT_EV_MOVE while in flight */
	u64 argp;                    /* user address of struct uffdio_move */
	u64 mmap_lock_start_ns;      /* start of the pending mmap_lock wait */
	u64 lock_start_ns;           /* start of the pending lock contention */
	u64 split_pages;             /* kernel tier: size of the folio being split */
	u32 woke;                    /* threads were asleep in its range: a wake event was sent */
	u32 pad;
	/* kept from move to move (move_begin() clears only what is above) */
	u32 run_open;                /* this thread has a run in `runs` */
};

/* failed moves and pins: what diagnosis needs, never crowded out */
BPF_RINGBUF_OUTPUT(events, UT_RINGBUF_PAGES);
/* successful moves (sampled when UT_SUCCESS_SAMPLE > 1) */
BPF_RINGBUF_OUTPUT(success_events, UT_SUCCESS_RINGBUF_PAGES);
/* the thread's move in flight; ev.type == UT_EV_MOVE while inside a move */
BPF_TASK_STORAGE(moving, struct ut_move_inflight);
BPF_PERCPU_ARRAY(stats, u64, UT_STAT_MAX);
BPF_PERCPU_HASH(outcomes, struct ut_outcome_key, u64, 10240);
BPF_PERCPU_ARRAY(latency_log2, u64, 64);
BPF_PERCPU_ARRAY(size_log2, u64, 64);
BPF_TABLE("lru_hash", u64, struct ut_ksm_merge, ksm_merges, 65536);
/* moves left until the next success is sent (success_sampled) */
BPF_PERCPU_ARRAY(sample_countdown, u64, 1);
/* processes being traced when following a command and its children */
BPF_HASH(traced, u32, u8, 65536);
#if UT_STACKS
BPF_STACK_TRACE(stack_traces, UT_STACK_ENTRIES);

/* The calling thread's stacks into `s` (struct ut_stack_ids): its user
 * stack, its kernel stack if `kernel`, and the words at its user stack
 * pointer.  `ctx` is the program's context (what bpf_get_stackid needs).
 * Only for records that are sent: a failure storm coalesced into a run
 * pays for one stack, not one per failure. */
static __always_inline void take_stacks(void *ctx, struct ut_stack_ids *s, int kernel)
{
	/* the user registers the thread entered the kernel with */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 sp = 0;

	s->flags = UT_STACK_USER;
	s->user_id = stack_traces.get_stackid(ctx, BPF_F_USER_STACK);
	s->kernel_id = 0;
	if (kernel) {
		s->kernel_id = stack_traces.get_stackid(ctx, 0);
		s->flags |= UT_STACK_KERNEL;
	}
	if (!bpf_probe_read_kernel(&sp, sizeof(sp), &regs->sp) && sp &&
	    !bpf_probe_read_user(s->sp_words, sizeof(s->sp_words), (void *)sp))
		s->flags |= UT_STACK_SP_WORDS;
	else
		__builtin_memset(s->sp_words, 0, sizeof(s->sp_words));
}
#endif

/* Per-CPU counters: tracepoint programs do not nest on a CPU, so a plain
 * add is exact.  Returns the new value. */
static __always_inline u64 stat_add(int index, u64 n)
{
	u64 *v = stats.lookup(&index);

	if (!v)
		return 0;
	*v += n;
	return *v;
}

static __always_inline void log2_add(int bucket, int is_size)
{
	u64 *v = is_size ? size_log2.lookup(&bucket) : latency_log2.lookup(&bucket);

	if (v)
		(*v)++;
}

static __always_inline int wanted(u32 pid, u32 tid)
{
	if (UT_PID && pid != UT_PID)
		return 0;
	if (UT_TID && tid != UT_TID)
		return 0;
	if (UT_FOLLOW && !traced.lookup(&pid))
		return 0;
	return 1;
}

/* The calling thread's move in flight, or NULL (the common, cheap case). */
static __always_inline struct ut_move_inflight *current_move(void)
{
	struct ut_move_inflight *rec =
		moving.task_storage_get(bpf_get_current_task_btf(), 0, 0);

	if (!rec || rec->ev.type != UT_EV_MOVE)
		rec = 0;
	/* Callers test the pointer itself: without this barrier clang may fold
	 * their NULL test into the type test above, which the verifier cannot
	 * follow ("invalid mem access 'scalar'" in kernel-tier hooks). */
	asm volatile("" : "+r"(rec));
	return rec;
}

#if UT_KERNEL_TIER
/* uffdtrace_kernel.bpf.c, appended after this file */
static __always_inline void ut_kernel_finish(struct ut_move_inflight *rec);
#endif

/* Successes are sent 1 in UT_SUCCESS_SAMPLE on average, at random
 * intervals (uniform in 1 .. 2N-1) so that no periodic pattern in a workload
 * can hide from the sample.  A per-CPU countdown: one random number per
 * sampled move, not per move. */
static __always_inline int success_sampled(void)
{
	int zero = 0;
	u64 *left;

	if (UT_FAILED_ONLY)
		return 0;
	if (UT_SUCCESS_SAMPLE <= 1)
		return 1;
	left = sample_countdown.lookup(&zero);
	if (!left)
		return 0;
	if (*left > 1) {
		(*left)--;
		return 0;
	}
	*left = 1 + bpf_get_prandom_u32() % (2 * UT_SUCCESS_SAMPLE - 1);
	return 1;
}

/* What a successful move sends: the record up to the page states, which are
 * read only when a move fails (the collector pads the rest with zeros). */
#define UT_MOVE_SUCCESS_BYTES offsetof(struct ut_move_event, src_state)

#if UT_RUN_MAX_NS
static __always_inline int overflow_account(const struct ut_move_event *ev);
#endif
#if UT_STATE_AT_EXIT && !UT_KERNEL_TIER
static __always_inline void paths_at_exit(struct ut_move_event *ev);
#endif

/* The wire record only: the in-flight state around it stays in the kernel. */
static __always_inline void send_move(const struct ut_move_event *ev, int always)
{
	struct ut_move_event *e;

	if (ev->ret < 0) {
		/* default wakeup: the collector enriches failures from /proc
		 * right away, while the process still looks the same */
		e = events.ringbuf_reserve(sizeof(struct ut_move_event));
		if (!e) {
#if UT_RUN_MAX_NS
			if (overflow_account(ev))
				return;
#endif
			stat_add(UT_STAT_RINGBUF_DROPS, 1);
			return;
		}
		__builtin_memcpy(e, ev, sizeof(*e));
		bpf_get_current_comm(&e->comm, sizeof(e->comm));
		events.ringbuf_submit(e, 0);
		stat_add(UT_STAT_EVENTS_SENT, 1);
		return;
	}
	/* a success that had threads asleep in its range is always sent: its
	 * wake event (which tells who) links to it, and says nothing alone */
	if (!always && !success_sampled()) {
		stat_add(UT_STAT_SUCCESSES_UNSENT, 1);
		return;
	}
	/* a success has no page states: only the part before them is sent */
	e = success_events.ringbuf_reserve(UT_MOVE_SUCCESS_BYTES);
	if (!e) {
		stat_add(UT_STAT_SUCCESS_DROPS, 1);
		return;
	}
	__builtin_memcpy(e, ev, UT_MOVE_SUCCESS_BYTES);
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
#if UT_STATE_AT_EXIT && !UT_KERNEL_TIER
	paths_at_exit(e);
#endif
	if (UT_SUCCESS_SAMPLE > 1)
		e->flags |= UT_F_SAMPLED;
	u64 sent = stat_add(UT_STAT_EVENTS_SENT, 1);
	success_events.ringbuf_submit(e, sent % UT_WAKEUP_BATCH ? BPF_RB_NO_WAKEUP
							       : BPF_RB_FORCE_WAKEUP);
}

/* Count `pages` base pages (or one PMD, `pmd`) of a move on the path the
 * destination entry they left says they took (user question 6), given that
 * entry's UT_PSW_* `where` and UT_PS_* `flags` (0 and 0: not read).  The
 * kernel tier calls it per successful step (ut_step_path), the tracepoint
 * tier per destination entry read at exit (paths_at_exit). */
static __always_inline void count_path(struct ut_move_event *ev, int where, int flags,
				       u64 pages, int pmd)
{
	if (pmd) {
		if (flags & UT_PS_HUGE_ZERO_PAGE)
			ev->path_huge_zero_pmds++;
		else
			ev->path_pmds++;
	} else if (where == UT_PSW_PTE_PRESENT && (flags & UT_PS_ZERO_PAGE)) {
		ev->path_zero_pages += pages;
	} else if (where == UT_PSW_PTE_SWAP) {
		ev->path_swap_pages += pages;
	} else if (where == UT_PSW_PTE_NONE) {
		ev->path_hole_pages += pages;
	} else {
		/* present, or not read (then zero pages and swap entries count
		 * here too: UT_K_PATHS_READ is clear) */
		ev->path_pte_pages += pages;
	}
}

#if UT_STATE_AT_EXIT
/* The kernel's own state at the end of a failed move, before the thread
 * returns to user space (nothing of the process can have changed it yet):
 * the page tables and folio at the address where the move stopped and at
 * its destination (bpf/ut_pagestate.h; docs/kernel-state.md).  The walk's
 * bases are KASLR secrets calibrated at start: they live in this map, not
 * in the program text. */
BPF_ARRAY(walk_cfg, struct ut_walk_cfg, 1);

static __always_inline void state_at_exit(struct ut_move_event *ev)
{
	u32 zero = 0;
	struct ut_walk_cfg *cfg = walk_cfg.lookup(&zero);

	if (!cfg || !cfg->page_offset_base)
		return;
	/* a partial move stopped at src + move (the bytes it moved); one that
	 * moved nothing failed at its first page (move then holds -errno) */
	u64 done = ev->move > 0 ? ev->move : 0;
	u64 mm = ut_ps_current_mm();

	ut_page_state_walk(&ev->src_state, mm, ev->src + done, cfg);
	ut_page_state_walk(&ev->dst_state, mm, ev->dst + done, cfg);
	ev->flags |= UT_F_STATE_AT_EXIT;
}

#if !UT_KERNEL_TIER
/* The tracepoint tier's answer to user question 6, for a move that is sent
 * (a sampled success, or a partial failure): the destination entries the
 * move left, read at exit as the kernel tier reads each step's.  A PMD leaf
 * is one whole THP (or the huge zero page) moved by PMD; a PTE is one page,
 * by its kind.  At most UT_PATH_READS entries: the collector counts the
 * pages of a larger move past them as not read.  Splits (question 7) are
 * not seen: no tracepoint marks them. */
#define UT_PATH_READS 16
static __always_inline void paths_at_exit(struct ut_move_event *ev)
{
	u32 zero = 0;
	struct ut_walk_cfg *cfg = walk_cfg.lookup(&zero);

	if (!cfg || !cfg->page_offset_base)
		return;
	u64 moved = ev->ret == 0 ? ev->len : (ev->move > 0 ? ev->move : 0);
	u64 addr = ev->dst, end = ev->dst + moved;
	u64 mm = ut_ps_current_mm();

	for (int i = 0; i < UT_PATH_READS && addr < end; i++) {
		struct ut_page_state ps = {};

		ut_ps_walk_tables(&ps, mm, addr, cfg);
		if (ps.where == UT_PSW_PMD_HUGE) {
			count_path(ev, ps.where, ps.flags, UT_HPAGE_PMD_NR, 1);
			addr = (addr | ((UT_HPAGE_PMD_NR << UT_X86_PAGE_SHIFT) - 1)) + 1;
		} else {
			count_path(ev, ps.where, ps.flags, 1, 0);
			addr += 1ULL << UT_X86_PAGE_SHIFT;
		}
	}
	ev->kflags |= UT_K_PATHS_READ | UT_K_PATHS_AT_EXIT;
}
#endif
#endif

#if UT_VMAS_AT_EXIT
/* The VMAs at the same two addresses, for the failures VMAs explain: EINVAL
 * (the VMA checks of move_pages()) and ENOENT (no VMA there).  No
 * calibration needed: maple nodes and VMAs are reached by their own
 * pointers.  Other errnos skip it: a failure storm of EBUSY pays nothing. */
static __always_inline void vmas_at_exit(struct ut_move_event *ev)
{
	if (ev->ret != -UT_EINVAL && ev->ret != -UT_ENOENT)
		return;
	u64 done = ev->move > 0 ? ev->move : 0;
	u64 mm = ut_ps_current_mm();
	u64 uffd_ctx = ut_vs_uffd_ctx(ev->fd);

	ut_vma_state_read(&ev->src_vma_state, mm, ev->src + done, uffd_ctx);
	ut_vma_state_read(&ev->dst_vma_state, mm, ev->dst + done, uffd_ctx);
	ev->flags |= UT_F_VMAS_AT_EXIT;
}
#endif

#if UT_UFFD_AT_EXIT
/* The moving uffd's mmap_changing and unread events, for the one failure
 * they explain: EAGAIN with nothing moved.  Every other failure skips it. */
static __always_inline void uffd_at_exit(struct ut_move_event *ev)
{
	if (ev->ret != -UT_EAGAIN || ev->move > 0)
		return;
	ut_uffd_state_read(&ev->uffd_state, ut_vs_uffd_ctx(ev->fd));
	ev->flags |= UT_F_UFFD_AT_EXIT;
}
#endif

#if UT_RUN_MAX_NS
/*
 * Runs of identical failures (see struct ut_repeat_event): a thread that
 * retries the same failing move in a loop sends one move event and one
 * repeat count per UT_RUN_MAX_NS instead of one event per failure, so a
 * failure storm cannot fill the ring buffer, and no failure goes uncounted.
 *
 * "Identical" is decided on the words run_shape() picks from the finished
 * record: the request, the result, and the facts a diagnosis rests on (the
 * page states at exit, the kernel tier's failing step, folio and pinner).
 * Timing fields, counts of TLB flushes or lock waits and refcounts, which
 * vary from call to call without changing the cause, are left out.
 */
struct ut_failure_run {
	struct ut_repeat_event rep;     /* sent when the run closes with count > 0 */
	u64 shape[UT_RUN_SHAPE_WORDS];  /* of the run's first failure */
};

/* the open run of each thread that failed last (by tid); read by the
 * collector when tracing stops (runs still open then) */
BPF_HASH(runs, u32, struct ut_failure_run, UT_RUNS_MAX);
/* per-CPU scratch: the shape of the failure at hand, off the BPF stack */
BPF_PERCPU_ARRAY(run_scratch, struct ut_failure_run, 1);

static __always_inline u64 page_state_word(const struct ut_page_state *ps)
{
	return (u64)ps->where | (u64)ps->level << 8 | (u64)ps->order << 16 |
	       (u64)ps->flags << 32;
}

/* a VMA's extent and what is set in it (vm_end - vm_start: pages, in the
 * low bits; where and flags above) */
static __always_inline u64 vma_state_word(const struct ut_vma_state *vs)
{
	return ((vs->vm_end - vs->vm_start) >> 12) | (u64)vs->where << 40 | (u64)vs->flags << 48;
}

static __always_inline void run_shape(const struct ut_move_event *ev, u64 *k)
{
	k[0] = ev->dst;
	k[1] = ev->src;
	k[2] = ev->len;
	k[3] = ev->mode;
	k[4] = (u64)ev->ret;
	k[5] = (u64)ev->move;
	k[6] = ev->fd | (u64)ev->flags << 32;
	k[7] = page_state_word(&ev->src_state);
	k[8] = ev->src_state.pfn;
	k[9] = page_state_word(&ev->dst_state);
	k[10] = ev->dst_state.pfn;
	k[11] = (u64)(u32)ev->step_err | (u64)ev->kflags << 32;
	k[12] = ev->fail_addr;
	k[13] = ev->pinner_pid | (u64)ev->folio_flags << 32;
	k[14] = vma_state_word(&ev->src_vma_state);
	k[15] = ev->src_vma_state.vm_flags;
	k[16] = vma_state_word(&ev->dst_vma_state);
	k[17] = ev->dst_vma_state.vm_flags;
}

static __always_inline int same_shape(const u64 *a, const u64 *b)
{
	u64 diff = 0;
#pragma unroll
	for (int i = 0; i < UT_RUN_SHAPE_WORDS; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* A repeat count whose first failure is `ev` (closed_by: why it will be
 * sent, when already known). */
static __always_inline void repeat_open(struct ut_repeat_event *rep,
					const struct ut_move_event *ev, u32 closed_by)
{
	rep->type = UT_EV_REPEAT;
	rep->pid = ev->pid;
	rep->tid = ev->tid;
	rep->closed_by = closed_by;
	rep->first_ts_ns = ev->ts_ns;
	rep->last_ts_ns = ev->ts_ns;
	rep->count = 0;
	rep->latency_total_ns = 0;
	rep->latency_max_ns = 0;
}

/* `ev` repeats the failure `rep` counts after. */
static __always_inline void repeat_count(struct ut_repeat_event *rep,
					 const struct ut_move_event *ev)
{
	rep->count++;
	rep->last_ts_ns = ev->ts_ns;
	rep->latency_total_ns += ev->latency_ns;
	if (ev->latency_ns > rep->latency_max_ns)
		rep->latency_max_ns = ev->latency_ns;
}

/* Failures the `events` ring buffer had no room for (struct ut_overflow):
 * the collector drains the periods that are over. */
BPF_HASH(overflow, struct ut_overflow_key, struct ut_overflow, UT_OVERFLOW_MAX);
BPF_PERCPU_ARRAY(overflow_scratch, struct ut_overflow, 1);

static __always_inline u64 shape_hash(const u64 *k)
{
	u64 h = 0xcbf29ce484222325ULL;     /* FNV-1a over the words */
#pragma unroll
	for (int i = 0; i < UT_RUN_SHAPE_WORDS; i++)
		h = (h ^ k[i]) * 0x100000001b3ULL;
	return h;
}

/* Count a failure `events` had no room for.  1: counted; 0: lost (another
 * shape has its hash this period, or the map is full): a drop. */
static __always_inline int overflow_account(const struct ut_move_event *ev)
{
	u32 zero = 0;
	struct ut_overflow *now = overflow_scratch.lookup(&zero);

	if (!now)
		return 0;
	run_shape(ev, now->shape);
	struct ut_overflow_key key = {};
	key.tid = ev->tid;
	key.period = bpf_ktime_get_ns() / UT_RUN_MAX_NS;
	key.shape_hash = shape_hash(now->shape);
	struct ut_overflow *o = overflow.lookup(&key);
	if (o) {
		if (!same_shape(o->shape, now->shape))
			return 0;
		/* only this thread adds to its keys: no other writer */
		repeat_count(&o->rep, ev);
		stat_add(UT_STAT_FAILURES_OVERFLOWED, 1);
		return 1;
	}
	__builtin_memcpy(&now->first, ev, sizeof(now->first));
	bpf_get_current_comm(&now->first.comm, sizeof(now->first.comm));
	repeat_open(&now->rep, ev, UT_RUN_CLOSED_OVERFLOW);
	if (overflow.insert(&key, now))
		return 0;
	stat_add(UT_STAT_FAILURES_OVERFLOWED, 1);
	return 1;
}

/* Send the run's repeat count, if it has one, and empty it. */
static __always_inline void run_close(struct ut_failure_run *run, u32 closed_by)
{
	if (!run->rep.count)
		return;
	struct ut_repeat_event *e = events.ringbuf_reserve(sizeof(struct ut_repeat_event));

	if (e) {
		run->rep.closed_by = closed_by;
		__builtin_memcpy(e, &run->rep, sizeof(*e));
		events.ringbuf_submit(e, 0);
	} else {
		stat_add(UT_STAT_REPEAT_DROPS, run->rep.count);
	}
	run->rep.count = 0;
}

/* Account the finished move `rec` in its thread's run.  Returns 1 when it
 * repeated the open run and was only counted (nothing to send), 0 when it
 * is to be sent: a success (which closes the run), or a failure that opens
 * a new run as its first. */
static __always_inline int run_account(struct ut_move_inflight *rec)
{
	struct ut_move_event *ev = &rec->ev;
	u32 tid = ev->tid, zero = 0;
	struct ut_failure_run *run;

	if (ev->ret >= 0) {
		if (rec->run_open) {
			run = runs.lookup(&tid);
			if (run)
				run_close(run, UT_RUN_CLOSED_SUCCESS);
			runs.delete(&tid);
			rec->run_open = 0;
		}
		return 0;
	}
	struct ut_failure_run *now = run_scratch.lookup(&zero);
	if (!now)
		return 0;
	run_shape(ev, now->shape);
	run = runs.lookup(&tid);
	if (run && rec->run_open) {
		int same = same_shape(run->shape, now->shape);

		if (same && ev->ts_ns - run->rep.first_ts_ns < UT_RUN_MAX_NS) {
			repeat_count(&run->rep, ev);
			stat_add(UT_STAT_FAILURES_COALESCED, 1);
			return 1;
		}
		run_close(run, same ? UT_RUN_CLOSED_TIME : UT_RUN_CLOSED_DIFFERENT);
	} else if (run) {
		/* left by an earlier thread with this tid, open when it exited */
		run_close(run, UT_RUN_CLOSED_END);
	}
	if (!run) {
		if (runs.update(&tid, now)) {
			stat_add(UT_STAT_RUNS_FULL, 1);
			rec->run_open = 0;
			return 0;
		}
		run = runs.lookup(&tid);
		if (!run) {
			rec->run_open = 0;
			return 0;
		}
	}
	/* this failure opens the run: it is sent, the run counts what follows */
	__builtin_memcpy(run->shape, now->shape, sizeof(run->shape));
	repeat_open(&run->rep, ev, 0);
	rec->run_open = 1;
	return 0;
}
#endif

/* A UFFDIO_MOVE ioctl begins on this thread: open its in-flight record. */
static __always_inline void move_begin(u32 fd, u64 argp)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32, tid = (u32)id;

	if (!wanted(pid, tid))
		return;
	struct ut_move_inflight *rec = moving.task_storage_get(bpf_get_current_task_btf(), 0,
							    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!rec) {
		stat_add(UT_STAT_INFLIGHT_FULL, 1);
		return;
	}
	/* everything but the page states, which stay zero between failures
	 * (state_at_exit() clears them after use): successes pay nothing */
	__builtin_memset(rec, 0, UT_MOVE_SUCCESS_BYTES);
	__builtin_memset(&rec->argp, 0, offsetof(struct ut_move_inflight, run_open) -
					offsetof(struct ut_move_inflight, argp));
	rec->ev.pid = pid;
	rec->ev.tid = tid;
	rec->ev.fd = fd;
	rec->argp = argp;
	struct uffdt_move_arg arg = {};
	if (bpf_probe_read_user(&arg, sizeof(arg), (void *)argp)) {
		rec->ev.flags |= UT_F_ARG_UNREADABLE;
		stat_add(UT_STAT_ARG_READ_FAILS, 1);
	}
	rec->ev.dst = arg.dst;
	rec->ev.src = arg.src;
	rec->ev.len = arg.len;
	rec->ev.mode = arg.mode;
	rec->ev.move_before = arg.move;
	if (UT_COST_STATS)
		rec->ev.flags |= UT_F_COST_STATS;
	stat_add(UT_STAT_MOVES_ENTERED, 1);
	rec->ev.ts_ns = bpf_ktime_get_ns();
	rec->ev.type = UT_EV_MOVE;   /* last: the record is now in flight */
}

/* Send the finished move; a failure with its caller's stacks. */
static __always_inline void move_send(void *ctx, struct ut_move_inflight *rec)
{
#if UT_STACKS
	if (rec->ev.ret < 0)
		take_stacks(ctx, &rec->ev.stack_ids, 0);
#endif
	send_move(&rec->ev, rec->woke);
}

/* The thread's move ends with `ret`: complete the record, count it, send it.
 * `ctx`: the calling program's context. */
static __always_inline void move_end(void *ctx, struct ut_move_inflight *rec, s64 ret)
{
	rec->ev.latency_ns = bpf_ktime_get_ns() - rec->ev.ts_ns;
	rec->ev.ret = ret;
	/* The kernel returns 0 only after writing move == len (a short move is
	 * -EAGAIN): a success needs no second read of user memory. */
	if (rec->ev.ret == 0 && !(rec->ev.flags & UT_F_ARG_UNREADABLE))
		rec->ev.move = rec->ev.len;
	else if (bpf_probe_read_user(&rec->ev.move, sizeof(rec->ev.move),
				     (void *)(rec->argp + UFFDT_MOVE_FIELD_OFFSET)))
		rec->ev.flags |= UT_F_MOVE_UNREADABLE;

	struct ut_outcome_key key = {};
	u64 zero = 0, *count;
	key.pid = rec->ev.pid;
	key.err = rec->ev.ret < 0 ? -rec->ev.ret : 0;
	key.partial = rec->ev.ret < 0 && rec->ev.move > 0;
	count = outcomes.lookup_or_try_init(&key, &zero);
	if (count)
		(*count)++;
	else
		stat_add(UT_STAT_OUTCOMES_FULL, 1);
	log2_add(bpf_log2l(rec->ev.latency_ns), 0);
	/* bpf_log2l(0) is 1, the bucket of len 1: a move of len 0 (EINVAL) has its own, 0 */
	log2_add(rec->ev.len ? bpf_log2l(rec->ev.len) : 0, 1);
	stat_add(UT_STAT_LATENCY_NS, rec->ev.latency_ns);
	stat_add(UT_STAT_BYTES_REQUESTED, rec->ev.len);
	stat_add(UT_STAT_TLB_FLUSHES, rec->ev.tlb_flushes);
	/* as records.bytes_moved() reads a move record */
	if (rec->ev.ret == 0)
		stat_add(UT_STAT_BYTES_MOVED, rec->ev.move > 0 ? rec->ev.move : rec->ev.len);
	else if (rec->ev.ret == -UT_EAGAIN && rec->ev.move > 0)
		stat_add(UT_STAT_BYTES_MOVED, rec->ev.move);
#if UT_STATE_AT_EXIT
	if (rec->ev.ret < 0)
		state_at_exit(&rec->ev);
#if !UT_KERNEL_TIER
	if (rec->ev.ret < 0 && rec->ev.move > 0)
		paths_at_exit(&rec->ev);   /* the pages a partial move did move */
#endif
#endif
#if UT_VMAS_AT_EXIT
	if (rec->ev.ret < 0)
		vmas_at_exit(&rec->ev);
#endif
#if UT_UFFD_AT_EXIT
	if (rec->ev.ret < 0)
		uffd_at_exit(&rec->ev);
#endif
#if UT_KERNEL_TIER
	ut_kernel_finish(rec);
#endif

#if UT_RUN_MAX_NS
	if (!run_account(rec))
		move_send(ctx, rec);
#else
	move_send(ctx, rec);
#endif
#if UT_STATE_AT_EXIT || UT_VMAS_AT_EXIT
	/* what a failure read at exit: zero again for the next move */
	if (rec->ev.flags & (UT_F_STATE_AT_EXIT | UT_F_VMAS_AT_EXIT | UT_F_UFFD_AT_EXIT))
		__builtin_memset(&rec->ev.src_state, 0, sizeof(struct ut_move_event) -
				 offsetof(struct ut_move_event, src_state));
#endif
	rec->ev.type = 0;   /* no longer in flight */
}

#if UT_WAITERS
/*
 * Who an ioctl about to wake faulting threads wakes: a UFFDIO_MOVE without
 * DONTWAKE wakes the waiters of the range it moves, a UFFDIO_WAKE its
 * range.  Read at ENTRY: by the exit the woken are off the queues.  The
 * common case, no thread asleep on this uffd, costs the two reads of
 * ut_uffd_has_fault_waiters(); a record is sent only when a waiter is in
 * the range.  Returns 1 when one was sent.
 */
static __always_inline int wake_check(u32 cause, u32 fd, u64 uctx, u64 start, u64 len,
				      u64 mode, u64 ts_ns)
{
	if (!uctx || !ut_uffd_has_fault_waiters(uctx))
		return 0;
	struct ut_wake_event *e = events.ringbuf_reserve(sizeof(struct ut_wake_event));
	if (!e) {
		stat_add(UT_STAT_WAKE_DROPS, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	u64 id = bpf_get_current_pid_tgid();
	e->type = UT_EV_WAKE;
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->fd = fd;
	e->ts_ns = ts_ns;
	e->start = start;
	e->len = len;
	e->cause = cause;
	if (cause == UT_WAKE_BY_MOVE && (mode & UFFDT_MOVE_MODE_DONTWAKE))
		e->flags |= UT_WK_DONTWAKE;
	ut_uffd_waiters_read(e, uctx);
	if (!e->in_range) {
		events.ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	events.ringbuf_submit(e, 0);
	return 1;
}

/* The move just opened on this thread (move_begin()): who it would wake.
 * uctx: the fd's struct userfaultfd_ctx if the caller has it, else 0. */
static __always_inline void move_waiters(u32 fd, u64 uctx)
{
	struct ut_move_inflight *rec = current_move();

	/* a move of len 0 (EINVAL) wakes nobody; len 0 would mean "all" here */
	if (!rec || !rec->ev.len || (rec->ev.flags & UT_F_ARG_UNREADABLE))
		return;
	rec->woke = wake_check(UT_WAKE_BY_MOVE, fd, uctx ? uctx : ut_vs_uffd_ctx(fd),
			       rec->ev.dst, rec->ev.len, rec->ev.mode, rec->ev.ts_ns);
	/* readers link the two whichever comes first (the rings drain apart) */
	if (rec->woke)
		rec->ev.flags |= UT_F_WAKE_SENT;
}

/* A UFFDIO_WAKE ioctl enters: who it wakes (a DONTWAKE move's waiters). */
static __always_inline void wake_waiters(u32 fd, u64 uctx, u64 argp)
{
	u64 id = bpf_get_current_pid_tgid();
	struct { u64 start, len; } range = {};

	if (!wanted(id >> 32, (u32)id) ||
	    bpf_probe_read_user(&range, sizeof(range), (void *)argp))
		return;
	wake_check(UT_WAKE_BY_WAKE, fd, uctx ? uctx : ut_vs_uffd_ctx(fd), range.start, range.len,
		   0, bpf_ktime_get_ns());
}
#endif

#if !UT_MOVES_FROM_HANDLER
/* The tracepoint tier follows moves through the ioctl syscall.  Both
 * tracepoints fire for every ioctl of the machine, and enabling any syscall
 * tracepoint sends every syscall through the slow path: the kernel tier
 * follows userfaultfd_ioctl() instead when it can (uffdtrace_kernel.bpf.c). */
TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	u32 cmd = args->cmd;

	if (cmd == UFFDT_IOC_MOVE) {
		move_begin(args->fd, args->arg);
#if UT_WAITERS
		move_waiters(args->fd, 0);
#endif
	}
#if UT_WAITERS
	else if (cmd == UFFDT_IOC_WAKE) {
		wake_waiters(args->fd, 0, args->arg);
	}
#endif
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		move_end(args, rec, args->ret);
	return 0;
}
#endif

/* A wait the moving thread goes through: begin stamps, end accumulates. */
static __always_inline void wait_begin(u64 *start)
{
	*start = bpf_ktime_get_ns();
}

static __always_inline void wait_end(u64 *start, u32 *count, u64 *total_ns)
{
	if (!*start)
		return;
	(*count)++;
	*total_ns += bpf_ktime_get_ns() - *start;
	*start = 0;
}

#if UT_COST_STATS
/* TLB flushes done by the moving thread.  A context switch's flush and one
 * run on the target CPU of another CPU's IPI are not the move's own.  Raw
 * tracepoint: args are TP_PROTO(int reason, unsigned long pages). */
RAW_TRACEPOINT_PROBE(tlb_flush)
{
	int reason = (int)ctx->args[0];
	long pages = (long)ctx->args[1];

	if (reason == UT_TLB_FLUSH_ON_TASK_SWITCH || reason == UT_TLB_REMOTE_SHOOTDOWN)
		return 0;
	struct ut_move_inflight *rec = current_move();

	if (!rec)
		return 0;
	rec->ev.tlb_flushes++;
	if (pages == -1)
		rec->ev.tlb_full_flushes++;
	else
		rec->ev.tlb_pages += pages;
	if (reason == UT_TLB_REMOTE_SEND_IPI)
		rec->ev.tlb_remote_ipis++;
	return 0;
}

RAW_TRACEPOINT_PROBE(mmap_lock_start_locking)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		wait_begin(&rec->mmap_lock_start_ns);
	return 0;
}

RAW_TRACEPOINT_PROBE(mmap_lock_acquire_returned)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		wait_end(&rec->mmap_lock_start_ns, &rec->ev.mmap_lock_acquires,
			 &rec->ev.mmap_lock_wait_ns);
	return 0;
}

RAW_TRACEPOINT_PROBE(contention_begin)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		wait_begin(&rec->lock_start_ns);
	return 0;
}

RAW_TRACEPOINT_PROBE(contention_end)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		wait_end(&rec->lock_start_ns, &rec->ev.lock_contentions, &rec->ev.lock_wait_ns);
	return 0;
}
#endif /* UT_COST_STATS */

static __always_inline void remember_ksm_merge(u64 pfn, int err)
{
	struct ut_ksm_merge m = {};

	m.ts_ns = bpf_ktime_get_ns();
	m.pid = bpf_get_current_pid_tgid() >> 32;
	m.err = err;
	ksm_merges.update(&pfn, &m);
}

TRACEPOINT_PROBE(ksm, ksm_merge_one_page)
{
	if (args->err == 0)
		remember_ksm_merge(args->pfn, args->err);
	return 0;
}

TRACEPOINT_PROBE(ksm, ksm_merge_with_ksm_page)
{
	if (args->err == 0)
		remember_ksm_merge(args->pfn, args->err);
	return 0;
}

#if UT_FOLLOW
/* Children of a followed command are followed too (cross_mm moves come
 * from a forked child).  Compiled only when following: every fork of the
 * machine reaches it. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = args->parent_pid, child = args->child_pid;
	u8 one = 1;

	if (traced.lookup(&parent) && traced.update(&child, &one))
		stat_add(UT_STAT_FOLLOW_FULL, 1);
	return 0;
}
#endif

static __always_inline void send_pin(u32 type, u32 fd, u32 opcode, u32 index, u64 addr, u64 len,
				    const struct ut_stack_ids *stack)
{
	struct ut_pin_event *e = events.ringbuf_reserve(sizeof(struct ut_pin_event));
	u64 id = bpf_get_current_pid_tgid();

	if (!e) {
		stat_add(UT_STAT_RINGBUF_DROPS, 1);
		return;
	}
	e->type = type;
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->fd = fd;
	e->ts_ns = bpf_ktime_get_ns();
	e->addr = addr;
	e->len = len;
	e->opcode = opcode;
	e->index = index;
	e->method = UT_PIN_IO_URING_REGISTER;
	e->gup_flags = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	__builtin_memcpy(&e->stack_ids, stack, sizeof(e->stack_ids));
	events.ringbuf_submit(e, 0);
	stat_add(UT_STAT_PINS_SEEN, 1);
}

#if !UT_PINS_FROM_GUP
/* io_uring fixed buffers are FOLL_LONGTERM pins: their iovecs are the
 * pinned ranges. */
TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_register)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 opcode = args->opcode, fd = args->fd, nr = args->nr_args;
	u64 iovecs = (u64)args->arg;

	struct ut_stack_ids stack = {};

	if (!wanted(id >> 32, (u32)id))
		return 0;
	if (opcode == UT_IORING_UNREGISTER_BUFFERS) {
		send_pin(UT_EV_UNPIN, fd, opcode, 0, 0, 0, &stack);
		return 0;
	}
	if (opcode == UT_IORING_REGISTER_BUFFERS2) {
		/* arg is a struct io_uring_rsrc_register: the count at nr, the
		 * iovec array's address at data */
		u32 count = 0;
		bpf_probe_read_user(&count, sizeof(count), (void *)(iovecs + UT_IORING_RSRC_NR));
		bpf_probe_read_user(&iovecs, sizeof(iovecs), (void *)(iovecs + UT_IORING_RSRC_DATA));
		nr = count;
	} else if (opcode != UT_IORING_REGISTER_BUFFERS) {
		return 0;
	}
#if UT_STACKS
	/* the registering thread's: its kernel stack is only the syscall entry */
	take_stacks(args, &stack, 0);
#endif
#pragma unroll
	for (u32 i = 0; i < UT_MAX_IOVECS; i++) {
		struct iovec iov = {};

		if (i >= nr)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iovecs + i * sizeof(iov))))
			break;
		send_pin(UT_EV_PIN, fd, opcode, i, (u64)iov.iov_base, iov.iov_len, &stack);
	}
	return 0;
}
#endif /* !UT_PINS_FROM_GUP */
