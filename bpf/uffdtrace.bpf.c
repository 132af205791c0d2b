/*
 * uffdtrace tracepoint tier: follow every UFFDIO_MOVE ioctl.
 *
 * Compiled by bcc at run time.  uffdtrace/bpfprog.py prepends the #defines
 * that configure it (filters, buffer size); the record layout is in
 * uffdtrace_event.h, shared with the Python collector.
 *
 * Shape: sys_enter_ioctl opens a per-thread in-flight record (only for
 * cmd == UFFDIO_MOVE, tested first: this tracepoint fires for every ioctl on
 * the machine); hooks that fire on that thread while it is inside the move
 * add to the record; sys_exit_ioctl completes it, updates the in-kernel
 * aggregates and sends exactly one event.  Ring-buffer reserve failures are
 * counted, never silent.
 */
#include <uapi/linux/ptrace.h>
#include "uffd_move_abi.h"
#include "uffdtrace_event.h"

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
#ifndef UT_RINGBUF_PAGES
#define UT_RINGBUF_PAGES 256
#endif
#ifndef UT_KERNEL_TIER
#define UT_KERNEL_TIER 0
#endif
#define UT_MAX_IOVECS 16
#define IORING_REGISTER_BUFFERS 0
#define IORING_UNREGISTER_BUFFERS 1
#define IORING_REGISTER_BUFFERS2 15

BPF_RINGBUF_OUTPUT(events, UT_RINGBUF_PAGES);
BPF_HASH(inflight, u32, struct ut_move_event, 10240);
BPF_ARRAY(stats, u64, UT_STAT_MAX);
BPF_HASH(outcomes, struct ut_outcome_key, u64, 10240);
BPF_HISTOGRAM(latency_log2, int, 64);
BPF_HISTOGRAM(size_log2, int, 64);
BPF_TABLE("lru_hash", u64, struct ut_ksm_merge, ksm_merges, 65536);
/* processes being traced when following a command and its children */
BPF_HASH(traced, u32, u8, 65536);
/* per-CPU scratch: the in-flight record is too big for the 512-byte stack twice */
BPF_PERCPU_ARRAY(scratch, struct ut_move_event, 1);

static __always_inline void stat_add(int index, u64 n)
{
	u64 *v = stats.lookup(&index);

	if (v)
		__sync_fetch_and_add(v, n);
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

static __always_inline struct ut_move_event *current_move(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	return inflight.lookup(&tid);
}

#if UT_KERNEL_TIER
/* uffdtrace_kernel.bpf.c, appended after this file */
static __always_inline void ut_kernel_finish(struct ut_move_event *rec);
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	if ((u32)args->cmd != UFFDT_IOC_MOVE)
		return 0;

	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32, tid = (u32)id, zero = 0;

	if (!wanted(pid, tid))
		return 0;
	struct ut_move_event *rec = scratch.lookup(&zero);
	if (!rec)
		return 0;
	__builtin_memset(rec, 0, sizeof(*rec));
	rec->type = UT_EV_MOVE;
	rec->pid = pid;
	rec->tid = tid;
	rec->fd = args->fd;
	rec->argp = args->arg;
	struct uffdt_move_arg arg = {};
	if (bpf_probe_read_user(&arg, sizeof(arg), (void *)args->arg)) {
		rec->flags |= UT_F_ARG_UNREADABLE;
		stat_add(UT_STAT_ARG_READ_FAILS, 1);
	}
	rec->dst = arg.dst;
	rec->src = arg.src;
	rec->len = arg.len;
	rec->mode = arg.mode;
	rec->move_before = arg.move;
	bpf_get_current_comm(&rec->comm, sizeof(rec->comm));
	stat_add(UT_STAT_MOVES_ENTERED, 1);
	rec->ts_ns = bpf_ktime_get_ns();
	if (inflight.update(&tid, rec))
		stat_add(UT_STAT_INFLIGHT_FULL, 1);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct ut_move_event *rec = inflight.lookup(&tid);

	if (!rec)
		return 0;
	rec->latency_ns = bpf_ktime_get_ns() - rec->ts_ns;
	rec->ret = args->ret;
	if (bpf_probe_read_user(&rec->move, sizeof(rec->move),
				(void *)(rec->argp + UFFDT_MOVE_FIELD_OFFSET)))
		rec->flags |= UT_F_MOVE_UNREADABLE;

	struct ut_outcome_key key = {};
	u64 zero = 0, *count;
	key.pid = rec->pid;
	key.err = rec->ret < 0 ? -rec->ret : 0;
	key.partial = rec->ret < 0 && rec->move > 0;
	count = outcomes.lookup_or_try_init(&key, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	latency_log2.increment(bpf_log2l(rec->latency_ns));
	size_log2.increment(bpf_log2l(rec->len));
#if UT_KERNEL_TIER
	ut_kernel_finish(rec);
#endif

	if (!(UT_FAILED_ONLY && rec->ret == 0)) {
		struct ut_move_event *e = events.ringbuf_reserve(sizeof(struct ut_move_event));

		if (e) {
			__builtin_memcpy(e, rec, sizeof(*e));
			events.ringbuf_submit(e, 0);
			stat_add(UT_STAT_EVENTS_SENT, 1);
		} else {
			stat_add(UT_STAT_RINGBUF_DROPS, 1);
		}
	}
	inflight.delete(&tid);
	return 0;
}

/* TLB flushes done by the moving thread.  TASK_SWITCH (0) is a context
 * switch, REMOTE_SHOOTDOWN (1) runs on the *target* CPU: neither is the
 * move's own flush. */
TRACEPOINT_PROBE(tlb, tlb_flush)
{
	if (args->reason < 2)
		return 0;
	struct ut_move_event *rec = current_move();

	if (!rec)
		return 0;
	rec->tlb_flushes++;
	if ((long)args->pages == -1)
		rec->tlb_full_flushes++;
	else
		rec->tlb_pages += args->pages;
	if (args->reason == UT_TLB_REMOTE_SEND_IPI)
		rec->tlb_remote_ipis++;
	return 0;
}

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

TRACEPOINT_PROBE(mmap_lock, mmap_lock_start_locking)
{
	struct ut_move_event *rec = current_move();

	if (rec)
		wait_begin(&rec->mmap_lock_start_ns);
	return 0;
}

TRACEPOINT_PROBE(mmap_lock, mmap_lock_acquire_returned)
{
	struct ut_move_event *rec = current_move();

	if (rec)
		wait_end(&rec->mmap_lock_start_ns, &rec->mmap_lock_acquires,
			 &rec->mmap_lock_wait_ns);
	return 0;
}

TRACEPOINT_PROBE(lock, contention_begin)
{
	struct ut_move_event *rec = current_move();

	if (rec)
		wait_begin(&rec->lock_start_ns);
	return 0;
}

TRACEPOINT_PROBE(lock, contention_end)
{
	struct ut_move_event *rec = current_move();

	if (rec)
		wait_end(&rec->lock_start_ns, &rec->lock_contentions, &rec->lock_wait_ns);
	return 0;
}

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

/* Children of a followed command are followed too (cross_mm moves come
 * from a forked child). */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	if (!UT_FOLLOW)
		return 0;
	u32 parent = args->parent_pid, child = args->child_pid;
	u8 one = 1;

	if (traced.lookup(&parent))
		traced.update(&child, &one);
	return 0;
}

static __always_inline void send_pin(u32 type, u32 fd, u32 opcode, u32 index, u64 addr, u64 len)
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
	events.ringbuf_submit(e, 0);
	stat_add(UT_STAT_PINS_SEEN, 1);
}

/* io_uring fixed buffers are FOLL_LONGTERM pins: their iovecs are the
 * pinned ranges. */
TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_register)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 opcode = args->opcode, fd = args->fd, nr = args->nr_args;
	u64 iovecs = (u64)args->arg;

	if (!wanted(id >> 32, (u32)id))
		return 0;
	if (opcode == IORING_UNREGISTER_BUFFERS) {
		send_pin(UT_EV_UNPIN, fd, opcode, 0, 0, 0);
		return 0;
	}
	if (opcode == IORING_REGISTER_BUFFERS2) {
		/* struct io_uring_rsrc_register { u32 nr; u32 flags; u64 resv2; u64 data; u64 tags; } */
		u32 count = 0;
		bpf_probe_read_user(&count, sizeof(count), (void *)iovecs);
		bpf_probe_read_user(&iovecs, sizeof(iovecs), (void *)(iovecs + 16));
		nr = count;
	} else if (opcode != IORING_REGISTER_BUFFERS) {
		return 0;
	}
#pragma unroll
	for (u32 i = 0; i < UT_MAX_IOVECS; i++) {
		u64 iov[2] = {};

		if (i >= nr)
			break;
		if (bpf_probe_read_user(iov, sizeof(iov), (void *)(iovecs + i * 16)))
			break;
		send_pin(UT_EV_PIN, fd, opcode, i, iov[0], iov[1]);
	}
	return 0;
}
