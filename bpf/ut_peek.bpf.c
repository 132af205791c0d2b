/*
 * The kernel's own page state at addresses of another process, for
 * `uffdtrace check` (uffdtrace/kernel/pageview.py; struct ut_peek_req in
 * uffdtrace_event.h): what /proc does not export -- PageAnonExclusive,
 * folio_maybe_dma_pinned(), refcount and pincount -- read by the same walk
 * the tracer runs when a move fails (bpf/ut_pagestate.h).
 *
 * The other process's mm reaches the checking thread through the mmap_lock
 * tracepoint: reading /proc/PID/mem locks that mm (__access_remote_vm()),
 * and at address 0 (never mapped) fails without faulting a page in.  The
 * walk runs with that lock held, so no VMA or page table can go away under
 * it.  Only an armed request of the checking thread is served, and only
 * for an mm that is (self) or is not (another process) its own.
 */
#include "uffdtrace_event.h"
#include "ut_pagestate.h"

BPF_ARRAY(peek_req, struct ut_peek_req, 1);
BPF_ARRAY(peek_out, struct ut_page_state, UT_PEEK_BATCH);

TRACEPOINT_PROBE(mmap_lock, mmap_lock_acquire_returned)
{
	u32 zero = 0;
	u64 mm = (u64)args->mm;
	struct ut_peek_req *req = peek_req.lookup(&zero);

	if (!req || !req->armed || !args->success ||
	    (u32)bpf_get_current_pid_tgid() != req->tid ||
	    req->self != (mm == ut_ps_current_mm()))
		return 0;
	for (u32 i = 0; i < UT_PEEK_BATCH; i++) {
		struct ut_page_state *out;

		if (i >= req->n)
			break;
		out = peek_out.lookup(&i);
		if (!out)
			break;
		ut_page_state_read(out, mm, req->addrs[i]);
	}
	req->armed = 0;
	req->walks++;
	return 0;
}
