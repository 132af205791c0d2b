/*
 * uffdw: the native UFFDIO_MOVE workload primitives.
 *
 * This header is the whole C <-> Python contract for native/uffdw.c: cffi's
 * cdef reads it verbatim, so it holds only plain declarations (no #if, no
 * includes).  Every function returns a negative errno on failure instead of
 * touching the thread's errno, so Python never races on errno.
 */

/* One UFFDIO_MOVE call, exactly as the kernel reported it. */
struct uffdw_call {
	uint64_t dst;
	uint64_t src;
	uint64_t len;
	uint64_t mode;
	int64_t ret;   /* ioctl() return value */
	int32_t err;   /* errno when ret == -1, else 0 */
	int32_t pid;   /* process that issued the ioctl */
	int32_t tid;   /* thread that issued the ioctl */
	int64_t move;  /* uffdio_move.move after the call (0 if left untouched) */
	uint64_t ns;   /* wall time of the ioctl */
};

/* Aggregate of a tight loop of moves (no per-call record, no Python). */
/* errno values a loop counts one by one (Linux's are all below 134) */
#define UFFDW_LOOP_ERRNOS 134
struct uffdw_loop_stats {
	uint64_t calls;
	uint64_t ok;
	uint64_t failed;
	uint64_t bytes_moved;
	uint64_t ns;
	int32_t first_err;   /* errno of the first failing call, 0 if none */
	uint64_t first_err_call;
	uint64_t cpu_ns;     /* CPU time of the looping thread (excludes time preempted) */
	uint64_t next_step;  /* ping-pong position after the loop (uffdw_loop_opts.first_step) */
	uint64_t err_count[UFFDW_LOOP_ERRNOS];   /* failed calls by errno (below UFFDW_LOOP_ERRNOS) */
};

/* userfaultfd with UFFDIO_API done; features_out gets what the kernel offers. */
int uffdw_open(uint64_t features, uint64_t *features_out, uint64_t *ioctls_out);
int uffdw_close(int fd);
/* Register [start, start+len) with the given UFFDIO_REGISTER_MODE_* bits. */
int uffdw_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ioctls_out);

int uffdw_move(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
               struct uffdw_call *out);
/*
 * `count` moves of `chunk` bytes each, ping-ponging between two registered
 * areas a and b of `slots` chunks: the first pass moves every chunk a -> b,
 * the next b -> a, and so on, so every call is a real move of populated pages.
 */
int uffdw_move_loop(int fd, uint64_t a, uint64_t b, uint64_t chunk, uint64_t slots,
                    uint64_t count, struct uffdw_loop_stats *out);
/* What a move loop does beyond uffdw_move_loop's as-fast-as-possible moves. */
struct uffdw_loop_opts {
	uint64_t rate;        /* calls per second, paced from the start; 0 = flat out */
	uint64_t fail_every;  /* every Nth call is a planned failure (dst populated); 0 = none */
	uint64_t first_step;  /* ping-pong position to resume from (a previous next_step) */
};
/* uffdw_move_loop with pacing and planned failures (opts may be NULL).
 * Planned failures are extra calls: they do not advance the ping-pong. */
int uffdw_move_loop_opts(int fd, uint64_t a, uint64_t b, uint64_t chunk, uint64_t slots,
                         uint64_t count, const struct uffdw_loop_opts *opts,
                         struct uffdw_loop_stats *out);
/* `count` moves, call i being moves[i % n], paced at opts->rate calls/s
 * (opts->fail_every and first_step are not used): a storm of failures that
 * leave everything as they were (dst populated, a pinned src, a src hole),
 * one repeated (n == 1) or several in turn, to measure how many failures a
 * tracer records. */
int uffdw_move_cycle(int fd, const struct uffdt_move_arg *moves, uint64_t n, uint64_t count,
                     const struct uffdw_loop_opts *opts, struct uffdw_loop_stats *out);
/* Fork a child that issues one move on `fd` (inherited) and reports it. */
int uffdw_move_in_child(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
                        struct uffdw_call *out);

/*
 * A move issued by a child that shares this process's mm (clone CLONE_VM,
 * not a thread: it can be killed alone) on `fd`, waited for `timeout_ms`.
 * The kernel may retry a move forever (a pinned large folio that cannot be
 * split): then the child is SIGKILLed, the kernel stops at its next
 * fatal-signal check and writes its result to `move` in memory both
 * share, which `out` reports (*killed_out = 1; ret -1, errno from `move`,
 * or EINTR when the kernel wrote nothing).  Same mm, so not cross-mm.
 */
int uffdw_move_in_vm_child(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode,
                           uint64_t timeout_ms, struct uffdw_call *out, int32_t *killed_out);

/*
 * A non-cooperative event left pending: a thread of this process does the
 * mm change `event` names to [addr, addr+len) of a range registered with a
 * uffd opened with its feature (UFFD_EVENT_REMOVE: madvise(MADV_DONTNEED);
 * UFFD_EVENT_UNMAP: munmap; UFFD_EVENT_REMAP: mremap to [addr2, addr2+len),
 * a reserved mapping it replaces; UFFD_EVENT_FORK: fork, the child exits at
 * once).  The kernel queues the event, raises the uffd's mmap_changing and
 * blocks the thread until the event is read; every move on that uffd
 * meanwhile fails with EAGAIN.
 */
struct uffdw_pending_event {
	int32_t fd;
	int32_t tid;          /* the thread blocked in the syscall */
	uint64_t addr;
	uint64_t len;
	uint64_t addr2;       /* UFFD_EVENT_REMAP: where the range moves */
	uint64_t thread;      /* pthread_t (opaque) */
	int32_t joined;
	int32_t syscall_rc;   /* the syscall's result (-errno; fork: the child's pid), once joined */
	int32_t kind;         /* the event asked for: UFFD_EVENT_* */
	int32_t event;        /* the first event read by uffdw_settle_event, 0 before */
	int32_t events;       /* how many it read (the change may raise more than one) */
	int32_t done;         /* the thread's syscall returned */
	uint64_t raised_ns;   /* CLOCK_MONOTONIC when the event was seen queued */
};
/* Start the thread and wait (up to timeout_ms) until the event is queued;
 * -ETIMEDOUT (thread joined) if the kernel queued none, -EINVAL for an
 * event it cannot raise. */
int uffdw_raise_event(int fd, int event, uint64_t addr, uint64_t len, uint64_t addr2,
                      int timeout_ms, struct uffdw_pending_event *ev);
/* Read the pending events (the monitor's job: a fork's new uffd is closed)
 * until the thread's syscall returns, then join it.  If no event can be read the thread is detached:
 * closing the uffd releases it. */
int uffdw_settle_event(struct uffdw_pending_event *ev);

/*
 * Threads faulting on missing pages, served by moves: `threads` threads
 * each read page i of dst (registered MISSING on fd) and sleep in the
 * kernel (handle_userfault()) until it is filled.  The calling thread, the
 * monitor, reads every fault first (so all of them sleep at once), then
 * fills page i with a UFFDIO_MOVE from src page i, hold_ms after the
 * previous one; odd pages with UFFDIO_MOVE_MODE_DONTWAKE, their threads
 * then woken hold_ms later by a UFFDIO_WAKE of that page.  -ETIMEDOUT if
 * not every fault arrived within timeout_ms (the threads are then detached:
 * closing the uffd releases them).
 */
struct uffdw_waiter {
	int32_t tid;
	int32_t pad;
	uint64_t addr;        /* the page it faulted on */
	uint64_t fault_ns;    /* CLOCK_MONOTONIC right before the read that faulted */
	uint64_t resumed_ns;  /* ... and right after it returned */
};
struct uffdw_served {
	struct uffdw_call move;  /* the move that filled the page */
	uint64_t move_ns;     /* CLOCK_MONOTONIC when it was issued */
	uint64_t wake_ns;     /* DONTWAKE: when the UFFDIO_WAKE was issued, else 0 */
	int32_t wake_rc;      /* DONTWAKE: the UFFDIO_WAKE's result (0 or -errno) */
	int32_t pad;
};
int uffdw_fault_wake(int fd, uint64_t dst, uint64_t src, int threads, int hold_ms,
                     int timeout_ms, struct uffdw_waiter *waiters, struct uffdw_served *served);

/*
 * `threads` threads (at most UFFDW_MAX_MOVERS) move the pages of
 * [src, src+len) to [dst, dst+len) at once, one page per call: thread t
 * moves pages t, t+threads, t+2*threads, ... in order, all released together
 * by one start line, so they meet on the same large folio (the first move splits
 * it while the others find it locked).  calls[i] is page i's call (len /
 * page size entries).  Threads, not processes: each is a real pthread, so
 * Python's GIL serializes nothing.  0, or -errno if a thread could not start.
 */
#define UFFDW_MAX_MOVERS 16
int uffdw_move_contended(int fd, uint64_t dst, uint64_t src, uint64_t len, uint32_t threads,
                         struct uffdw_call *calls);

/* Anonymous mapping aligned to `align` (a power of two >= page size). */
int64_t uffdw_map(uint64_t len, int prot, int flags, uint64_t align);
int uffdw_unmap(uint64_t addr, uint64_t len);
int uffdw_madvise(uint64_t addr, uint64_t len, int advice);
int uffdw_mprotect(uint64_t addr, uint64_t len, int prot);
/* Write to every page so it is populated; distinct=1 gives each page its own
 * content, distinct=0 gives all pages the same non-zero content (KSM bait). */
void uffdw_fill(uint64_t addr, uint64_t len, int distinct);

/* io_uring ring with [addr, addr+len) registered as one fixed buffer: a real
 * FOLL_LONGTERM pin.  Returns the ring fd; closing it releases the pin. */
int uffdw_iouring_pin(uint64_t addr, uint64_t len);

/* Fork a child that just waits, keeping every private page COW-shared.
 * Returns its pid; *ctl_fd_out is the pipe whose closing releases it. */
int uffdw_fork_holder(int *ctl_fd_out);
/* Release and reap a holder; returns 0 or -errno. */
int uffdw_release_holder(int pid, int ctl_fd);

/*
 * Bystander loops: work that moves no page but reaches hooks a tracer may
 * attach, so what a hook costs every other process of the machine can be
 * measured.  Each kind says which kernel path one round takes.
 */
enum uffdw_bystander_kind {
	/* FIONREAD on a pipe: the ioctl syscall tracepoints fire for every
	 * ioctl of the machine, not only UFFDIO_MOVE */
	UFFDW_BYSTANDER_IOCTL,
	/* getppid(): the cheapest syscall that is not an ioctl; any enabled
	 * syscall tracepoint sends every syscall through the slow path */
	UFFDW_BYSTANDER_GETPPID,
	/* mmap `pages` anonymous pages, write each (one page fault each:
	 * lock_vma_under_rcu, the PTE walk, a new folio), munmap (zap, TLB
	 * flush, free) */
	UFFDW_BYSTANDER_FAULT,
	/* fork(), the child _exit(0)s at once, waitpid(): page tables copied
	 * (copy_page_range) and torn down again, a TLB flush of the parent */
	UFFDW_BYSTANDER_FORK,
	/* pread(`fd`, `pages` pages, offset 0) into a populated anonymous
	 * buffer; `fd` opened with O_DIRECT, so the block layer pins the
	 * buffer (iov_iter_extract_pages -> pin_user_pages_fast, FOLL_PIN)
	 * and unpins it when the bio completes */
	UFFDW_BYSTANDER_DIRECT_READ,
	/* mprotect() of `pages` populated pages, read-only and back in turn
	 * (one call per round): change_protection's PTE walk, a TLB flush */
	UFFDW_BYSTANDER_MPROTECT,
};

struct uffdw_bystander {
	int32_t kind;     /* enum uffdw_bystander_kind */
	int32_t fd;       /* DIRECT_READ: a file or block device opened with O_DIRECT */
	uint64_t pages;   /* FAULT, DIRECT_READ, MPROTECT: pages per round */
};

/* `count` rounds of `b`: wall and CPU time of the calling thread (setup,
 * such as the buffer a DIRECT_READ fills, is not timed). */
int uffdw_bystander_loop(const struct uffdw_bystander *b, uint64_t count, uint64_t *ns_out,
                         uint64_t *cpu_ns_out);
/* The same in a forked child: another process, one that never used a
 * userfaultfd (a tracer may treat processes that did differently: the
 * kernel tier tracks their short-term GUP pins too). */
int uffdw_bystander_loop_in_child(const struct uffdw_bystander *b, uint64_t count,
                                  uint64_t *ns_out, uint64_t *cpu_ns_out);
