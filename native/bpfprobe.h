/*
 * bpfprobe: load and attach the smallest possible BPF program of a given
 * kind, so `uffdtrace doctor` reports what this kernel really allows instead
 * of inferring it from a version number.  Read verbatim by cffi's cdef.
 * Every function returns a file descriptor (>= 0) or a negative errno.
 */

/* Load "r0 = 0; exit".  The verifier log (if any) is written to log. */
int bpfp_load(int prog_type, int expected_attach_type, uint32_t attach_btf_id,
              char *log, uint32_t log_size);
/* perf_event_open a tracepoint by its tracefs id and attach prog_fd to it. */
int bpfp_attach_tracepoint(int prog_fd, uint64_t tracepoint_id);
/* perf_event_open a kprobe through the kprobe PMU (pmu_type from sysfs). */
int bpfp_attach_kprobe(int prog_fd, int pmu_type, const char *func);
/* BPF_RAW_TRACEPOINT_OPEN: a raw tracepoint by name, or (name == NULL) the
 * fentry/fexit target that was fixed at load time by attach_btf_id. */
int bpfp_attach_raw(int prog_fd, const char *name);
/* BPF_MAP_CREATE a one-entry stack-trace map (what --stacks needs), frames
 * of max_depth words: a stack map needs the kernel's perf callchains. */
int bpfp_stack_map(uint32_t max_depth);
int bpfp_close(int fd);
/* BPF_OBJ_GET_INFO_BY_FD of a loaded program: the kernel's counters of it
 * (run time and count only while kernel.bpf_stats_enabled is 1; runs skipped
 * by recursion protection always).  One syscall, where /proc/self/fdinfo
 * costs an open and a text parse.  0 or a negative errno. */
int bpfp_prog_counters(int prog_fd, uint64_t *run_time_ns, uint64_t *run_cnt,
                       uint64_t *recursion_misses);
