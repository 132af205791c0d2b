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
 * Nothing is locked.  An entry can be read and its thread woken while we
 * walk: its stack may then hold anything, so the walk ends at the first
 * entry whose event is not a non-cooperative event (UT_USW_RACED), and the
 * number of entries walked is bounded.
 */
#ifndef UT_UFFDSTATE_H
#define UT_UFFDSTATE_H

/* include/uapi/linux/userfaultfd.h: the non-cooperative events (ABI) */
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

/* ---- the API ---- */
/* The state of userfaultfd context `ctx` (a struct userfaultfd_ctx *, 0 if
 * it could not be found). */
static __always_inline void ut_uffd_state_read(struct ut_uffd_state *us, u64 ctx)
{
	u64 head, node, entry, task;
	u8 event;

	__builtin_memset(us, 0, sizeof(*us));
	if (!ctx) {
		us->where = UT_USW_NO_CTX;
		return;
	}
	head = ctx + UT_L_UFFD_CTX_EVENT_WQH_HEAD;
	if (bpf_probe_read_kernel(&us->mmap_changing, sizeof(us->mmap_changing),
				  (const void *)(ctx + UT_L_UFFD_CTX_MMAP_CHANGING)) ||
	    ut_ps_read_u64(head, &node)) {
		us->where = UT_USW_READ_FAILED;
		return;
	}
	us->where = UT_USW_READ;
#pragma unroll
	for (int i = 0; i < UT_UFFD_WALK_MAX; i++) {
		if (node == head || !node)
			return;
		/* list node -> wait_queue_entry -> userfaultfd_wait_queue */
		entry = node - UT_L_WQ_ENTRY_ENTRY;
		event = 0;
		bpf_probe_read_kernel(&event, sizeof(event),
				      (const void *)(entry - UT_L_UWQ_WQ + UT_L_UWQ_MSG_EVENT));
		if (event < UT_UFFD_EVENT_FIRST || event > UT_UFFD_EVENT_LAST ||
		    ut_ps_read_u64(entry + UT_L_WQ_ENTRY_PRIVATE, &task) || !task) {
			us->where = UT_USW_RACED;
			return;
		}
		if (i < UT_UFFD_PENDING_MAX) {
			us->events[i].event = event;
			ut_uffd_pending_read(&us->events[i], task);
		}
		us->queued = i + 1;
		if (ut_ps_read_u64(node, &node)) {   /* list_head.next is its first member */
			us->where = UT_USW_RACED;
			return;
		}
	}
	if (node != head)
		us->more = 1;
}

#endif /* UT_UFFDSTATE_H */
