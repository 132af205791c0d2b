/*
 * ut_uffdstate.h: what the moving userfaultfd itself held at the end of a
 * move that failed with EAGAIN and moved nothing -- the errno of
 * ctx->mmap_changing -- read before the thread returns to user space.
 *
 * mmap_changing counts non-cooperative events (UFFD_EVENT_FORK, _REMAP,
 * _REMOVE, _UNMAP) raised and not yet read by the monitor.  Each such event
 * is a struct userfaultfd_wait_queue on the stack of the thread that raised
 * it (fs/userfaultfd.c, userfaultfd_event_wait_completion()), queued on
 * ctx->event_wqh, and that thread sleeps until the event is read: so the
 * queue names the event, and who raised it (the waiting task).
 *
 * Struct offsets come from the running kernel's BTF (UT_L_*,
 * uffdtrace/kernel/layout.py UFFD_READER_FACTS).  Include after
 * ut_pagestate.h (ut_ps_read_u64, ut_ps_read_s32) and ut_vmastate.h
 * (ut_vs_uffd_ctx: the fd's context) -- usable from tracepoint and
 * kprobe/fentry programs: only bpf_probe_read_kernel.
 *
 * The same queues hold the threads asleep in a page fault on the uffd
 * (handle_userfault()): ctx->fault_pending_wqh until the monitor reads the
 * fault, ctx->fault_wqh after.  ut_uffd_waiters_read() reads who sleeps at
 * an address of the range a UFFDIO_MOVE or UFFDIO_WAKE is about to wake; one
 * walk (ut_uffd_wq_walk) serves both kinds of queue.
 *
 * Nothing is locked.  An entry can be read and its thread woken while we
 * walk: its stack may then hold anything, so the walk ends at the first
 * entry whose event is not of the queue's kind (raced), and the number of
 * entries walked is bounded.
 */
#ifndef UT_UFFDSTATE_H
#define UT_UFFDSTATE_H
#ifndef UT_WAITERS
#define UT_WAITERS 0
#endif

/* include/uapi/linux/userfaultfd.h: the events (ABI) */
#define UT_UFFD_EVENT_PAGEFAULT 0x12
#define UT_UFFD_EVENT_FIRST 0x13     /* UFFD_EVENT_FORK */
#define UT_UFFD_EVENT_LAST 0x16      /* UFFD_EVENT_UNMAP */
/* entries walked; past it the state says `more` */
#define UT_UFFD_WALK_MAX 16

static __always_inline void ut_uffd_pending_read(struct ut_uffd_pending *p, u64 task)
{
	bpf_probe_read_kernel(&p->pid, sizeof(p->pid), (const void *)(task + UT_L_TASK_TGID));
	bpf_probe_read_kernel(&p->tid, sizeof(p->tid), (const void *)(task + UT_L_TASK_PID));
	bpf_probe_read_kernel(p->comm, sizeof(p->comm), (const void *)(task + UT_L_TASK_COMM));
}

/* ---- one walk for every queue of the context ----
 * What an entry of the queue at `head` is read into: `kind` is a constant at
 * every call, so each caller's inlined copy keeps only its own branch. */
#define UT_WALK_EVENTS 1   /* event_wqh -> struct ut_uffd_state */
#define UT_WALK_FAULTS 2   /* fault(_pending)_wqh -> struct ut_wake_event */

struct ut_wq_walk {
	u32 walked;             /* entries read */
	u8 unreadable;          /* the queue's head could not be read */
	u8 raced;               /* ended at an entry not of the queue's kind */
	u8 more;                /* the queue went on past UT_UFFD_WALK_MAX */
};

#if UT_WAITERS
/* ut_fault_waited(): defined by the including program (bcc rewrites map
 * calls in its main file only), uffdtrace.bpf.c. */
/* The fault waiter at `task`, its entry at `entry`: its wait stamped
 * (every waiter a walk sees, in range or not: a later walk then knows it
 * was already asleep); if its address is in ev's range, counted and (the
 * first UT_WAKE_WAITERS_MAX) described. */
static __always_inline void ut_uffd_fault_entry(struct ut_wake_event *ev, u64 entry, u64 task,
						u8 queue)
{
	struct ut_fault_waiter fw = {};

	ut_ps_read_u64(entry - UT_L_UWQ_WQ + UT_L_UWQ_MSG_ADDRESS, &fw.addr);
	bpf_probe_read_kernel(&fw.tid, sizeof(fw.tid), (const void *)(task + UT_L_TASK_PID));
	ut_fault_waited(&fw, task, ev->ts_ns);
	if (ev->len && (fw.addr < ev->start || fw.addr - ev->start >= ev->len))
		return;
	u32 n = ev->in_range++;
	if (n >= UT_WAKE_WAITERS_MAX)
		return;
	fw.queue = queue;
	bpf_probe_read_kernel(&fw.pid, sizeof(fw.pid), (const void *)(task + UT_L_TASK_TGID));
	bpf_probe_read_kernel(fw.comm, sizeof(fw.comm), (const void *)(task + UT_L_TASK_COMM));
	__builtin_memcpy(&ev->waiters[n & (UT_WAKE_WAITERS_MAX - 1)], &fw, sizeof(fw));
}
#endif

static __always_inline void ut_uffd_wq_walk(struct ut_wq_walk *w, u64 head, int kind,
					    void *out, u8 queue)
{
	u64 node, entry, task;
	u8 event;

	__builtin_memset(w, 0, sizeof(*w));
	if (ut_ps_read_u64(head, &node)) {
		w->unreadable = 1;
		return;
	}
#pragma unroll
	for (int i = 0; i < UT_UFFD_WALK_MAX; i++) {
		if (node == head || !node)
			return;
		/* list node -> wait_queue_entry -> userfaultfd_wait_queue */
		entry = node - UT_L_WQ_ENTRY_ENTRY;
		event = 0;
		bpf_probe_read_kernel(&event, sizeof(event),
				      (const void *)(entry - UT_L_UWQ_WQ + UT_L_UWQ_MSG_EVENT));
		int ours = kind == UT_WALK_EVENTS ?
			event >= UT_UFFD_EVENT_FIRST && event <= UT_UFFD_EVENT_LAST :
			event == UT_UFFD_EVENT_PAGEFAULT;
		if (!ours || ut_ps_read_u64(entry + UT_L_WQ_ENTRY_PRIVATE, &task) || !task) {
			w->raced = 1;
			return;
		}
		if (kind == UT_WALK_EVENTS) {
			struct ut_uffd_state *us = out;

			if (i < UT_UFFD_PENDING_MAX) {
				us->events[i].event = event;
				ut_uffd_pending_read(&us->events[i], task);
			}
		} else {
#if UT_WAITERS
			ut_uffd_fault_entry(out, entry, task, queue);
#endif
		}
		w->walked = i + 1;
		if (ut_ps_read_u64(node, &node)) {   /* list_head.next is its first member */
			w->raced = 1;
			return;
		}
	}
	if (node != head)
		w->more = 1;
}

/* ---- the API ---- */
/* The state of userfaultfd context `ctx` (a struct userfaultfd_ctx *, 0 if
 * it could not be found). */
static __always_inline void ut_uffd_state_read(struct ut_uffd_state *us, u64 ctx)
{
	struct ut_wq_walk w;

	__builtin_memset(us, 0, sizeof(*us));
	if (!ctx) {
		us->where = UT_USW_NO_CTX;
		return;
	}
	if (bpf_probe_read_kernel(&us->mmap_changing, sizeof(us->mmap_changing),
				  (const void *)(ctx + UT_L_UFFD_CTX_MMAP_CHANGING))) {
		us->where = UT_USW_READ_FAILED;
		return;
	}
	ut_uffd_wq_walk(&w, ctx + UT_L_UFFD_CTX_EVENT_WQH_HEAD, UT_WALK_EVENTS, us, 0);
	us->where = w.unreadable ? UT_USW_READ_FAILED : w.raced ? UT_USW_RACED : UT_USW_READ;
	us->queued = w.walked;
	us->more = w.more;
}

#if UT_WAITERS
/* Is anyone asleep in a page fault on `ctx`?  The common case -- nobody --
 * costs two reads: each queue's head.next pointing at itself. */
static __always_inline int ut_uffd_has_fault_waiters(u64 ctx)
{
	u64 pending = ctx + UT_L_UFFD_CTX_FAULT_PENDING_WQH_HEAD;
	u64 read = ctx + UT_L_UFFD_CTX_FAULT_WQH_HEAD, next;

	return (!ut_ps_read_u64(pending, &next) && next != pending && next) ||
	       (!ut_ps_read_u64(read, &next) && next != read && next);
}

/* The fault waiters of `ctx` in ev's range [start, start + len) (len 0:
 * all), oldest first per queue, unread faults first: ev's waiting,
 * in_range, waiters and flags. */
static __always_inline void ut_uffd_waiters_read(struct ut_wake_event *ev, u64 ctx)
{
	struct ut_wq_walk w;

	ut_uffd_wq_walk(&w, ctx + UT_L_UFFD_CTX_FAULT_PENDING_WQH_HEAD, UT_WALK_FAULTS, ev,
			UT_WQ_PENDING);
	ev->waiting += w.walked;
	ev->flags |= (w.raced || w.unreadable ? UT_WK_RACED : 0) | (w.more ? UT_WK_MORE : 0);
	ut_uffd_wq_walk(&w, ctx + UT_L_UFFD_CTX_FAULT_WQH_HEAD, UT_WALK_FAULTS, ev, UT_WQ_READ);
	ev->waiting += w.walked;
	ev->flags |= (w.raced || w.unreadable ? UT_WK_RACED : 0) | (w.more ? UT_WK_MORE : 0);
	if (ev->in_range > UT_WAKE_WAITERS_MAX)
		ev->flags |= UT_WK_MORE;
}
#endif

#endif /* UT_UFFDSTATE_H */
