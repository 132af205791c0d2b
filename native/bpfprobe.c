/* bpfprobe: see bpfprobe.h.  Raw syscalls only: no libbpf, no bcc, no headers. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bpfprobe.h"

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	long fd = syscall(__NR_bpf, cmd, attr, sizeof(*attr));

	return fd < 0 ? -errno : (int)fd;
}

int bpfp_load(int prog_type, int expected_attach_type, uint32_t attach_btf_id,
	      char *log, uint32_t log_size)
{
	/* BPF_MOV64_IMM(BPF_REG_0, 0); BPF_EXIT_INSN() */
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = (uint32_t)prog_type;
	attr.expected_attach_type = (uint32_t)expected_attach_type;
	attr.attach_btf_id = attach_btf_id;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.insn_cnt = 2;
	attr.license = (uint64_t)(uintptr_t)"GPL";
	if (log && log_size) {
		log[0] = 0;
		attr.log_buf = (uint64_t)(uintptr_t)log;
		attr.log_size = log_size;
		attr.log_level = 1;
	}
	strncpy(attr.prog_name, "uffdt_probe", sizeof(attr.prog_name) - 1);
	return sys_bpf(BPF_PROG_LOAD, &attr);
}

static int perf_open_and_attach(struct perf_event_attr *pattr, int prog_fd)
{
	int pfd, err;

	pattr->size = sizeof(*pattr);
	pattr->sample_period = 1;
	pattr->wakeup_events = 1;
	pfd = (int)syscall(__NR_perf_event_open, pattr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0)
		return -errno;
	if (ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog_fd) < 0 ||
	    ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0) < 0) {
		err = errno;
		close(pfd);
		return -err;
	}
	return pfd;
}

int bpfp_attach_tracepoint(int prog_fd, uint64_t tracepoint_id)
{
	struct perf_event_attr pattr;

	memset(&pattr, 0, sizeof(pattr));
	pattr.type = PERF_TYPE_TRACEPOINT;
	pattr.config = tracepoint_id;
	return perf_open_and_attach(&pattr, prog_fd);
}

int bpfp_attach_kprobe(int prog_fd, int pmu_type, const char *func)
{
	struct perf_event_attr pattr;

	memset(&pattr, 0, sizeof(pattr));
	pattr.type = (uint32_t)pmu_type;
	pattr.config1 = (uint64_t)(uintptr_t)func; /* kprobe_func */
	pattr.config2 = 0;                           /* offset */
	return perf_open_and_attach(&pattr, prog_fd);
}

int bpfp_attach_raw(int prog_fd, const char *name)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.raw_tracepoint.name = (uint64_t)(uintptr_t)name;
	attr.raw_tracepoint.prog_fd = (uint32_t)prog_fd;
	return sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &attr);
}

int bpfp_stack_map(uint32_t max_depth)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_type = BPF_MAP_TYPE_STACK_TRACE;
	attr.key_size = sizeof(uint32_t);
	attr.value_size = max_depth * sizeof(uint64_t);
	attr.max_entries = 1;
	return sys_bpf(BPF_MAP_CREATE, &attr);
}

int bpfp_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}

int bpfp_prog_counters(int prog_fd, uint64_t *run_time_ns, uint64_t *run_cnt,
		       uint64_t *recursion_misses)
{
	/* the kernel fills what it knows of the struct and checks that the rest
	 * is zero: a kernel without recursion_misses (before 5.12) leaves it 0 */
	struct bpf_prog_info info;
	union bpf_attr attr;
	int err;

	memset(&info, 0, sizeof(info));
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (uint32_t)prog_fd;
	attr.info.info_len = sizeof(info);
	attr.info.info = (uint64_t)(uintptr_t)&info;
	err = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr);
	if (err < 0)
		return err;
	*run_time_ns = info.run_time_ns;
	*run_cnt = info.run_cnt;
	*recursion_misses = info.recursion_misses;
	return 0;
}
