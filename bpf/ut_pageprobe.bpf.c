/*
 * Read one address's page state on demand (uffdtrace/kernel/pageprobe.py):
 * the probing process calls madvise(addr, 0, UT_PROBE_ADVICE), which the
 * kernel refuses (EINVAL) after this tracepoint has run in its context.
 * ut_page_state_current() is exactly what a tracing program calls, with the
 * layout and calibration as compile-time UT_L_* constants.
 */
#include "uffdtrace_event.h"
#include "ut_pagestate.h"

BPF_ARRAY(probe_out, struct ut_page_state, 1);
BPF_ARRAY(probe_calls, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_madvise)
{
	u32 zero = 0;
	struct ut_page_state ps;
	u64 *calls;

	if (args->behavior != UT_PROBE_ADVICE || args->len_in != 0 ||
	    bpf_get_current_pid_tgid() >> 32 != UT_PROBE_PID)
		return 0;
	ut_page_state_current(&ps, args->start);
	probe_out.update(&zero, &ps);
	calls = probe_calls.lookup(&zero);
	if (calls)
		__sync_fetch_and_add(calls, 1);
	return 0;
}
