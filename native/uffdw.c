/*
 * uffdw: native primitives that make the kernel perform real UFFDIO_MOVEs.
 *
 * Python (uffdtrace.workload) composes these into failure scenarios; the C
 * side exists so that (a) tight loops run without Python per-call overhead
 * and (b) fork()ed children run only async-signal-safe C, never Python.
 * Declarations and the contract live in uffdw.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bpf/uffd_move_abi.h"
#include "uffdw.h"

/* uffd_move_abi.h must spell its numbers as literals (cffi and bcc read it
 * verbatim): each is checked here against what it stands for. */
_Static_assert(UFFDT_IOC_MOVE == _IOWR(UFFDIO, UFFDT_IOC_MOVE_NR, struct uffdt_move_arg),
	       "UFFDT_IOC_MOVE is not _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)");
_Static_assert(UFFDT_MOVE_FIELD_OFFSET == offsetof(struct uffdt_move_arg, move),
	       "UFFDT_MOVE_FIELD_OFFSET is not the offset of `move`");
/* UFFDIO_WAKE is as old as userfaultfd: every header has it */
_Static_assert(UFFDT_IOC_WAKE == UFFDIO_WAKE, "UFFDT_IOC_WAKE");
#ifdef UFFDIO_MOVE   /* system headers newer than Debian 12's have the real ones */
_Static_assert(UFFDT_IOC_MOVE == UFFDIO_MOVE, "UFFDT_IOC_MOVE");
_Static_assert(UFFDT_MOVE_MODE_DONTWAKE == UFFDIO_MOVE_MODE_DONTWAKE, "DONTWAKE");
_Static_assert(UFFDT_MOVE_MODE_ALLOW_SRC_HOLES == UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
	       "ALLOW_SRC_HOLES");
_Static_assert(UFFDT_FEATURE_MOVE == UFFD_FEATURE_MOVE, "UFFDT_FEATURE_MOVE");
_Static_assert(sizeof(struct uffdt_move_arg) == sizeof(struct uffdio_move), "uffdio_move");
#endif

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling thread: unlike wall time, it does not count the
 * time other processes (on a shared machine) took the CPU away. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

int uffdw_open(uint64_t features, uint64_t *features_out, uint64_t *ioctls_out)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd;

	/*
	 * USER_MODE_ONLY lets unprivileged users open a uffd when
	 * vm.unprivileged_userfaultfd=0; it only limits which faults are
	 * reported, never moves.  Kernels older than 5.11 reject the flag.
	 */
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	if (features_out)
		*features_out = api.features;
	if (ioctls_out)
		*ioctls_out = api.ioctls;
	return fd;
}

int uffdw_close(int fd)
{
	return close(fd) < 0 ? -errno : 0;
}

int uffdw_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ioctls_out)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = len },
		.mode = mode,
	};

	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (ioctls_out)
		*ioctls_out = reg.ioctls;
	return 0;
}

/* A call's record: the request as issued and what the kernel answered. */
static void call_record(struct uffdw_call *out, const struct uffdt_move_arg *arg,
			uint64_t ns, long ret, int err, int32_t pid, int32_t tid)
{
	out->ns = ns;
	out->dst = arg->dst;
	out->src = arg->src;
	out->len = arg->len;
	out->mode = arg->mode;
	out->ret = ret;
	out->err = err;
	out->pid = pid;
	out->tid = tid;
	out->move = arg->move;
}

int uffdw_move(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
	       struct uffdw_call *out)
{
	struct uffdt_move_arg arg = { .dst = dst, .src = src, .len = len, .mode = mode, .move = 0 };
	uint64_t t0 = now_ns();
	long ret = ioctl(fd, UFFDT_IOC_MOVE, &arg);
	int err = ret < 0 ? errno : 0;

	call_record(out, &arg, now_ns() - t0, ret, err, getpid(), gettid());
	return 0;
}

/* Pacing: sleep when more than 100 us ahead of the schedule, otherwise go
 * on at once.  Never spin: a paced workload must leave the CPU to others
 * (the tracer's collector among them) the way a real one would. */
static void pace(uint64_t deadline)
{
	uint64_t now = now_ns();

	if (deadline > now + 100000) {
		struct timespec ts = { (time_t)((deadline - now) / 1000000000ull),
				       (long)((deadline - now) % 1000000000ull) };

		nanosleep(&ts, NULL);
	}
}

/* One call of a move loop: issue it and count its outcome in `out`. */
static void loop_move(int fd, struct uffdt_move_arg *arg, uint64_t i,
		      struct uffdw_loop_stats *out)
{
	uint64_t len = arg->len;

	arg->move = 0;
	if (ioctl(fd, UFFDT_IOC_MOVE, arg) == 0) {
		out->ok++;
		out->bytes_moved += len;
		return;
	}
	if (!out->failed) {
		out->first_err = errno;
		out->first_err_call = i;
	}
	if (errno < UFFDW_LOOP_ERRNOS)
		out->err_count[errno]++;
	out->failed++;
	if (arg->move > 0)
		out->bytes_moved += (uint64_t)arg->move;
}

int uffdw_move_loop_opts(int fd, uint64_t a, uint64_t b, uint64_t chunk, uint64_t slots,
			 uint64_t count, const struct uffdw_loop_opts *opts,
			 struct uffdw_loop_stats *out)
{
	struct uffdt_move_arg arg = { .len = chunk, .mode = 0 };
	uint64_t i, t0, c0;
	uint64_t rate = opts ? opts->rate : 0, fail_every = opts ? opts->fail_every : 0;
	uint64_t step = opts ? opts->first_step : 0;   /* real moves: drives the ping-pong */

	if (!slots || !chunk)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	c0 = thread_cpu_ns();
	t0 = now_ns();
	for (i = 0; i < count; i++) {
		uint64_t slot = step % slots, pass = step / slots;
		uint64_t from = (pass & 1) ? b : a, to = (pass & 1) ? a : b;
		/* A planned failure moves the empty slot of `to` onto the
		 * still-populated slot of `from` (dst populated: it fails without
		 * changing anything), so the ping-pong is not disturbed. */
		int failing = fail_every && i % fail_every == fail_every - 1;

		if (rate)
			pace(t0 + i * 1000000000ull / rate);
		arg.dst = (failing ? from : to) + slot * chunk;
		arg.src = (failing ? to : from) + slot * chunk;
		if (!failing)
			step++;
		loop_move(fd, &arg, i, out);
	}
	out->ns = now_ns() - t0;
	out->cpu_ns = thread_cpu_ns() - c0;
	out->calls = count;
	out->next_step = step;
	return 0;
}

int uffdw_move_cycle(int fd, const struct uffdt_move_arg *moves, uint64_t n, uint64_t count,
		     const struct uffdw_loop_opts *opts, struct uffdw_loop_stats *out)
{
	struct uffdt_move_arg arg;
	uint64_t i, t0, c0, rate = opts ? opts->rate : 0;

	memset(out, 0, sizeof(*out));
	if (!n)
		return -EINVAL;
	c0 = thread_cpu_ns();
	t0 = now_ns();
	for (i = 0; i < count; i++) {
		if (rate)
			pace(t0 + i * 1000000000ull / rate);
		arg = moves[i % n];     /* a copy: the kernel writes its `move` */
		loop_move(fd, &arg, i, out);
	}
	out->ns = now_ns() - t0;
	out->cpu_ns = thread_cpu_ns() - c0;
	out->calls = count;
	return 0;
}

int uffdw_move_loop(int fd, uint64_t a, uint64_t b, uint64_t chunk, uint64_t slots,
		    uint64_t count, struct uffdw_loop_stats *out)
{
	return uffdw_move_loop_opts(fd, a, b, chunk, slots, count, NULL, out);
}

/* Read exactly len bytes, retrying on EINTR and short reads. */
static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int reap(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* Run job(arg, out) in a forked child and copy its return value and its
 * result (`size` bytes at out) back.  The child runs only C that is safe
 * after fork() in a process that may have threads (syscalls, no malloc). */
static int in_child(int (*job)(const void *arg, void *out), const void *arg, void *out,
		    size_t size)
{
	int pipefd[2], rc, job_rc = 0;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return rc;
	}
	if (pid == 0) {
		close(pipefd[0]);
		job_rc = job(arg, out);
		_exit(write(pipefd[1], &job_rc, sizeof(job_rc)) == sizeof(job_rc) &&
		      write(pipefd[1], out, size) == (ssize_t)size ? 0 : 1);
	}
	close(pipefd[1]);
	rc = read_full(pipefd[0], &job_rc, sizeof(job_rc));
	if (!rc)
		rc = read_full(pipefd[0], out, size);
	close(pipefd[0]);
	reap(pid);
	return rc < 0 ? rc : job_rc;
}

struct move_job_args {
	int fd;
	uint64_t dst, src, len, mode;
};

static int move_job(const void *arg, void *out)
{
	const struct move_job_args *a = arg;

	return uffdw_move(a->fd, a->dst, a->src, a->len, a->mode, out);
}

int uffdw_move_in_child(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
			struct uffdw_call *out)
{
	struct move_job_args args = { fd, dst, src, len, mode };

	return in_child(move_job, &args, out, sizeof(*out));
}

int64_t uffdw_map(uint64_t len, int prot, int flags, uint64_t align)
{
	uint64_t span, addr, aligned;
	void *p;

	if (align < page_size())
		align = page_size();
	span = len + align;
	p = mmap(NULL, span, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	addr = (uint64_t)p;
	aligned = (addr + align - 1) & ~(align - 1);
	/* Trim the slack so the mapping is exactly [aligned, aligned + len). */
	if (aligned > addr)
		munmap(p, aligned - addr);
	if (addr + span > aligned + len)
		munmap((void *)(aligned + len), addr + span - (aligned + len));
	return (int64_t)aligned;
}

int uffdw_unmap(uint64_t addr, uint64_t len)
{
	return munmap((void *)addr, len) < 0 ? -errno : 0;
}

int uffdw_madvise(uint64_t addr, uint64_t len, int advice)
{
	return madvise((void *)addr, len, advice) < 0 ? -errno : 0;
}

int uffdw_mprotect(uint64_t addr, uint64_t len, int prot)
{
	return mprotect((void *)addr, len, prot) < 0 ? -errno : 0;
}

void uffdw_fill(uint64_t addr, uint64_t len, int distinct)
{
	uint64_t ps = page_size(), off;

	for (off = 0; off < len; off += ps) {
		unsigned char *page = (unsigned char *)(addr + off);

		memset(page, 0x5a, ps);
		if (distinct)
			memcpy(page, &off, sizeof(off));
	}
}

int uffdw_iouring_pin(uint64_t addr, uint64_t len)
{
	struct io_uring_params params;
	struct iovec iov = { .iov_base = (void *)addr, .iov_len = len };
	int ring, err;

	memset(&params, 0, sizeof(params));
	ring = (int)syscall(__NR_io_uring_setup, 1, &params);
	if (ring < 0)
		return -errno;
	/* Fixed buffers are pinned with FOLL_WRITE | FOLL_LONGTERM. */
	if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1) < 0) {
		err = errno;
		close(ring);
		return -err;
	}
	return ring;
}

int uffdw_fork_holder(int *ctl_fd_out)
{
	int pipefd[2], rc;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return rc;
	}
	if (pid == 0) {
		char c;

		/* Die with the parent even if it is SIGKILLed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(pipefd[1]);
		while (read(pipefd[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(pipefd[0]);
	*ctl_fd_out = pipefd[1];
	return pid;
}

int uffdw_release_holder(int pid, int ctl_fd)
{
	close(ctl_fd);
	return reap(pid);
}

/* What a bystander loop holds between rounds (set up before the clock
 * starts, released after it stops). */
struct bystander_state {
	int pipefd[2];      /* IOCTL */
	char *buf;          /* DIRECT_READ, MPROTECT: populated anonymous pages */
	uint64_t len;
};

static int bystander_setup(const struct uffdw_bystander *b, struct bystander_state *st)
{
	st->pipefd[0] = st->pipefd[1] = -1;
	st->buf = NULL;
	st->len = b->pages * page_size();
	switch (b->kind) {
	case UFFDW_BYSTANDER_IOCTL:
		return pipe2(st->pipefd, O_CLOEXEC) < 0 ? -errno : 0;
	case UFFDW_BYSTANDER_GETPPID:
	case UFFDW_BYSTANDER_FORK:
		return 0;
	case UFFDW_BYSTANDER_FAULT:
		return b->pages ? 0 : -EINVAL;
	case UFFDW_BYSTANDER_DIRECT_READ:
	case UFFDW_BYSTANDER_MPROTECT:
		if (!b->pages)
			return -EINVAL;
		st->buf = mmap(NULL, st->len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (st->buf == MAP_FAILED) {
			st->buf = NULL;
			return -errno;
		}
		/* populated: rounds measure the pin or the protection
		 * change, never a first-touch fault */
		uffdw_fill((uint64_t)st->buf, st->len, 1);
		return 0;
	}
	return -EINVAL;
}

static void bystander_teardown(struct bystander_state *st)
{
	if (st->pipefd[0] >= 0) {
		close(st->pipefd[0]);
		close(st->pipefd[1]);
	}
	if (st->buf)
		munmap(st->buf, st->len);
}

static int fault_round(uint64_t len)
{
	uint64_t off, ps = page_size();
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	for (off = 0; off < len; off += ps)
		p[off] = 1;
	munmap(p, len);
	return 0;
}

static int fork_round(void)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(0);
	return reap(pid);
}

/* One round of a bystander loop; 0 or -errno. */
static int bystander_round(const struct uffdw_bystander *b, struct bystander_state *st,
			   uint64_t i)
{
	int avail;
	ssize_t n;

	switch (b->kind) {
	case UFFDW_BYSTANDER_IOCTL:
		ioctl(st->pipefd[0], FIONREAD, &avail);
		return 0;
	case UFFDW_BYSTANDER_GETPPID:
		syscall(SYS_getppid);
		return 0;
	case UFFDW_BYSTANDER_FAULT:
		return fault_round(b->pages * page_size());
	case UFFDW_BYSTANDER_FORK:
		return fork_round();
	case UFFDW_BYSTANDER_DIRECT_READ:
		n = pread(b->fd, st->buf, st->len, 0);
		if (n < 0)
			return -errno;
		return (uint64_t)n == st->len ? 0 : -EIO;
	case UFFDW_BYSTANDER_MPROTECT:
		return mprotect(st->buf, st->len,
				(i & 1) ? PROT_READ | PROT_WRITE : PROT_READ) < 0 ? -errno : 0;
	}
	return -EINVAL;
}

int uffdw_bystander_loop(const struct uffdw_bystander *b, uint64_t count, uint64_t *ns_out,
			 uint64_t *cpu_ns_out)
{
	struct bystander_state st;
	uint64_t i, t0, c0;
	int rc = bystander_setup(b, &st);

	if (rc < 0) {
		bystander_teardown(&st);
		return rc;
	}
	c0 = thread_cpu_ns();
	t0 = now_ns();
	for (i = 0; i < count && rc == 0; i++)
		rc = bystander_round(b, &st, i);
	*ns_out = now_ns() - t0;
	*cpu_ns_out = thread_cpu_ns() - c0;
	bystander_teardown(&st);
	return rc;
}

struct bystander_job_args {
	const struct uffdw_bystander *b;
	uint64_t count;
};

struct bystander_times {
	uint64_t ns, cpu_ns;
};

static int bystander_job(const void *arg, void *out)
{
	const struct bystander_job_args *a = arg;
	struct bystander_times *t = out;

	return uffdw_bystander_loop(a->b, a->count, &t->ns, &t->cpu_ns);
}

int uffdw_bystander_loop_in_child(const struct uffdw_bystander *b, uint64_t count,
				  uint64_t *ns_out, uint64_t *cpu_ns_out)
{
	struct bystander_job_args args = { b, count };
	struct bystander_times t = { 0, 0 };
	int rc = in_child(bystander_job, &args, &t, sizeof(t));

	*ns_out = t.ns;
	*cpu_ns_out = t.cpu_ns;
	return rc;
}

/* --- a move that may never return: in a child sharing the mm ------------------ */

struct vm_child_block {
	struct uffdt_move_arg arg;   /* the kernel writes `move` here */
	int fd;
	volatile int done;
	int64_t ret;
	int32_t err;
	int32_t tid;
};

#define VM_CHILD_STACK (64 << 10)

/* A system call that returns -errno and never touches errno: the child
 * below shares the parent thread's TLS, so glibc's errno is not its own. */
static long raw_syscall3(long nr, long a, long b, long c)
{
#if defined(__x86_64__)
	long ret;

	__asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
			  : "rcx", "r11", "memory");
	return ret;
#else
	long ret = syscall(nr, a, b, c);   /* errno: a race on the parent's, at worst */

	return ret < 0 ? -errno : ret;
#endif
}

/* Runs on its own stack in the shared mm: raw system calls only. */
static int vm_child_main(void *p)
{
	struct vm_child_block *b = p;
	long ret;

	b->tid = (int32_t)raw_syscall3(SYS_gettid, 0, 0, 0);
	ret = raw_syscall3(SYS_ioctl, b->fd, (long)UFFDT_IOC_MOVE, (long)&b->arg);
	b->ret = ret;
	b->done = 1;
	return 0;
}

int uffdw_move_in_vm_child(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
			   uint64_t timeout_ms, struct uffdw_call *out, int32_t *killed_out)
{
	struct vm_child_block *b;
	uint64_t start, deadline;
	char *stack;
	int rc = 0, killed = 0, status;
	pid_t pid;

	memset(out, 0, sizeof(*out));
	stack = mmap(NULL, VM_CHILD_STACK + sizeof(*b), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (stack == MAP_FAILED)
		return -errno;
	b = (struct vm_child_block *)(stack + VM_CHILD_STACK);
	memset(b, 0, sizeof(*b));
	b->arg.dst = dst;
	b->arg.src = src;
	b->arg.len = len;
	b->arg.mode = mode;
	b->fd = fd;
	start = now_ns();
	deadline = start + timeout_ms * 1000000ull;
	pid = clone(vm_child_main, stack + VM_CHILD_STACK - 64, CLONE_VM | SIGCHLD, b);
	if (pid < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		if (!killed && now_ns() >= deadline) {
			kill(pid, SIGKILL);
			killed = 1;
		}
		usleep(1000);
	}
	if (b->done && !killed)
		call_record(out, &b->arg, now_ns() - start, b->ret >= 0 ? b->ret : -1,
			    b->ret < 0 ? (int32_t)-b->ret : 0, pid, b->tid ? b->tid : pid);
	else	/* killed inside the ioctl: the kernel's answer is in `move` */
		call_record(out, &b->arg, now_ns() - start, -1,
			    b->arg.move < 0 ? (int32_t)-b->arg.move : EINTR, pid,
			    b->tid ? b->tid : pid);
out:
	munmap(stack, VM_CHILD_STACK + sizeof(*b));
	if (killed_out)
		*killed_out = killed;
	return rc;
}

/* --- several threads moving pages of one large folio at once -------------------- */

/* The start line of uffdw_move_contended's movers: `go` turns 1 once every
 * mover exists, -1 if one could not be created (the others then leave). */
struct contended_mover {
	int *go;
	int fd;
	uint64_t dst, src, pages, first, stride;
	struct uffdw_call *calls;
};

static void *contended_main(void *p)
{
	struct contended_mover *m = p;
	uint64_t ps = page_size(), i;
	int go;

	/* Spin, not sleep: the movers already on a CPU leave at the same
	 * instant and meet on the huge page (a futex wake-up lets one finish
	 * the split before the next is even running).  sched_yield() leaves
	 * the CPU to the thread that sets `go` (one CPU: the only one). */
	while (!(go = __atomic_load_n(m->go, __ATOMIC_ACQUIRE)))
		sched_yield();
	for (i = m->first; go > 0 && i < m->pages; i += m->stride)
		uffdw_move(m->fd, m->dst + i * ps, m->src + i * ps, ps, 0, &m->calls[i]);
	return NULL;
}

int uffdw_move_contended(int fd, uint64_t dst, uint64_t src, uint64_t len, uint32_t threads,
			 struct uffdw_call *calls)
{
	struct contended_mover movers[UFFDW_MAX_MOVERS];
	pthread_t th[UFFDW_MAX_MOVERS];
	uint32_t t, started;
	int rc = 0, go = 0;

	if (threads < 1 || threads > UFFDW_MAX_MOVERS || len % page_size())
		return -EINVAL;
	memset(calls, 0, len / page_size() * sizeof(*calls));
	for (started = 0; started < threads; started++) {
		movers[started] = (struct contended_mover){ &go, fd, dst, src, len / page_size(),
							    started, threads, calls };
		rc = pthread_create(&th[started], NULL, contended_main, &movers[started]);
		if (rc)
			break;
	}
	/* all at once, and only once every mover exists: none runs ahead */
	__atomic_store_n(&go, started == threads ? 1 : -1, __ATOMIC_RELEASE);
	for (t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	return started == threads ? 0 : -rc;
}

/* --- a pending non-cooperative event (mmap_changing) -------------------------- */


static void *event_thread(void *p)
{
	struct uffdw_pending_event *ev = p;
	long rc;

	__atomic_store_n(&ev->tid, (int32_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	/* each blocks in the kernel (userfaultfd_event_wait_completion()) until
	 * the event is read */
	switch (ev->kind) {
	case UFFD_EVENT_REMOVE:
		rc = madvise((void *)ev->addr, ev->len, MADV_DONTNEED);
		break;
	case UFFD_EVENT_UNMAP:
		rc = munmap((void *)ev->addr, ev->len);
		break;
	case UFFD_EVENT_REMAP:
		rc = mremap((void *)ev->addr, ev->len, ev->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			    (void *)ev->addr2) == MAP_FAILED ? -1 : 0;
		break;
	default: /* UFFD_EVENT_FORK */
		/* the raw syscall: glibc's fork() holds the malloc locks across
		 * the syscall, which blocks here until the event is read -- by the
		 * main thread, which may need malloc first */
		rc = syscall(SYS_fork);
		if (rc == 0)
			syscall(SYS_exit_group, 0);
		if (rc > 0)
			waitpid((pid_t)rc, NULL, 0);
		break;
	}
	ev->syscall_rc = rc < 0 ? -errno : (int32_t)rc;
	__atomic_store_n(&ev->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int uffdw_raise_event(int fd, int event, uint64_t addr, uint64_t len, uint64_t addr2,
		      int timeout_ms, struct uffdw_pending_event *ev)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	pthread_t th;
	int rc;

	if (event != UFFD_EVENT_REMOVE && event != UFFD_EVENT_UNMAP &&
	    event != UFFD_EVENT_REMAP && event != UFFD_EVENT_FORK)
		return -EINVAL;
	memset(ev, 0, sizeof(*ev));
	ev->fd = fd;
	ev->kind = event;
	ev->addr = addr;
	ev->len = len;
	ev->addr2 = addr2;
	rc = pthread_create(&th, NULL, event_thread, ev);
	if (rc)
		return -rc;
	ev->thread = (uint64_t)th;
	do
		rc = poll(&pfd, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc <= 0) {
		rc = rc < 0 ? -errno : -ETIMEDOUT;
		pthread_join(th, NULL);
		ev->joined = 1;
		return rc;
	}
	ev->raised_ns = now_ns();
	return 0;
}

int uffdw_settle_event(struct uffdw_pending_event *ev)
{
	struct pollfd pfd = { .fd = ev->fd, .events = POLLIN };
	struct uffd_msg msg;
	ssize_t n;
	int rc;

	if (ev->joined || !ev->thread)
		return 0;
	/* every event the change raised, until its syscall returns (a stuck
	 * thread is detached after 5 s: closing the uffd releases it) */
	for (int waited_ms = 0; !__atomic_load_n(&ev->done, __ATOMIC_ACQUIRE);) {
		do
			rc = poll(&pfd, 1, 10);
		while (rc < 0 && errno == EINTR);
		if (rc == 0) {
			if ((waited_ms += 10) >= 5000)
				break;
			continue;
		}
		do
			n = read(ev->fd, &msg, sizeof(msg));
		while (n < 0 && errno == EINTR);
		if (n != (ssize_t)sizeof(msg))
			break;
		if (!ev->events++)
			ev->event = msg.event;
		if (msg.event == UFFD_EVENT_FORK)   /* the child's uffd, ours now */
			close((int)msg.arg.fork.ufd);
	}
	if (!__atomic_load_n(&ev->done, __ATOMIC_ACQUIRE)) {
		pthread_detach((pthread_t)ev->thread);
		ev->joined = 1;
		return ev->events ? -ETIMEDOUT : -EIO;
	}
	pthread_join((pthread_t)ev->thread, NULL);
	ev->joined = 1;
	return 0;
}

/* --- threads faulting on missing pages, served by moves ----------------------- */

struct fault_thread {
	struct uffdw_waiter *w;
	pthread_t th;
};

static void *fault_thread_main(void *p)
{
	struct uffdw_waiter *w = p;

	w->tid = (int32_t)syscall(SYS_gettid);
	w->fault_ns = now_ns();
	/* sleeps in handle_userfault() until the page is moved in and woken */
	(void)*(volatile char *)w->addr;
	w->resumed_ns = now_ns();
	return NULL;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int uffdw_fault_wake(int fd, uint64_t dst, uint64_t src, int threads, int hold_ms,
		     int timeout_ms, struct uffdw_waiter *waiters, struct uffdw_served *served)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	uint64_t ps = page_size();
	pthread_t th[64];
	int started = 0, faults = 0, rc = 0;

	if (threads < 1 || threads > 64)
		return -EINVAL;
	memset(waiters, 0, sizeof(*waiters) * threads);
	memset(served, 0, sizeof(*served) * threads);
	for (; started < threads; started++) {
		waiters[started].addr = dst + started * ps;
		rc = pthread_create(&th[started], NULL, fault_thread_main, &waiters[started]);
		if (rc) {
			rc = -rc;
			break;
		}
	}
	/* the monitor's read: every thread is then asleep on the uffd */
	while (!rc && faults < started) {
		struct uffd_msg msg;
		int n = poll(&pfd, 1, timeout_ms);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -ETIMEDOUT;
			break;
		}
		if (read(fd, &msg, sizeof(msg)) != (ssize_t)sizeof(msg))
			continue;   /* EAGAIN: another reader was first (none here) */
		if (msg.event == UFFD_EVENT_PAGEFAULT)
			faults++;
	}
	for (int i = 0; !rc && i < started; i++) {
		struct uffdw_served *s = &served[i];
		struct uffdt_move_arg arg = { .dst = dst + i * ps, .src = src + i * ps, .len = ps,
					      .mode = i % 2 ? UFFDT_MOVE_MODE_DONTWAKE : 0 };
		struct uffdio_range range = { .start = dst + i * ps, .len = ps };
		long ret;

		sleep_ms(hold_ms);
		s->move_ns = now_ns();
		ret = ioctl(fd, UFFDT_IOC_MOVE, &arg);
		call_record(&s->move, &arg, now_ns() - s->move_ns, ret, ret < 0 ? errno : 0,
			    getpid(), gettid());
		if (!(arg.mode & UFFDT_MOVE_MODE_DONTWAKE))
			continue;
		sleep_ms(hold_ms);
		s->wake_ns = now_ns();
		s->wake_rc = ioctl(fd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
	}
	for (int i = 0; i < started; i++) {
		if (rc)
			pthread_detach(th[i]);
		else
			pthread_join(th[i], NULL);
	}
	return rc;
}
