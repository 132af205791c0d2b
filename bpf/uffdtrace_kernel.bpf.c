/*
 * uffdtrace kernel tier: hooks inside the move path, appended to the
 * tracepoint program (uffdtrace.bpf.c) when the running kernel lets us
 * attach fentry/fexit or kprobes.
 *
 * Every hook adds to the in-flight record of the moving thread (opened by
 * userfaultfd_ioctl()'s entry hook, or by sys_enter_ioctl if the handler
 * cannot be hooked), so the one event per ioctl says what the kernel really
 * did: move_pages()'s own result, each step's result and the first failing
 * address, the internal -EAGAIN retries, folio splits, the uffd's owner mm,
 * and who pinned the folio where the move stopped.  The page tables and the
 * folio where it stopped are read once, when the move returns
 * (state_at_exit() in uffdtrace.bpf.c), not by hooks on functions every page
 * fault calls: nothing here runs for a process that is not moving pages,
 * but for the GUP pin hooks, which do real work only for long-term pins and
 * for processes that use userfaultfd.
 *
 * Every hook acts only for a thread that has an in-flight record, i.e. is
 * inside a UFFDIO_MOVE ioctl: that, not move_pages(), is the gate, because
 * newer kernels (7.x) inline move_pages() into the ioctl handler.
 *
 * Kernel structures are read at the offsets of the running kernel's BTF
 * (UT_L_*: uffdtrace/kernel/layout.py), never through the headers bcc
 * compiles with, which may be another version's.
 *
 * Which hooks exist differs by kernel (6.12 inlines move_pages_pte, 6.18
 * has move_pages_ptes): uffdtrace/kernel_tier.py defines UT_HOOK_<function>
 * for each function present on the running kernel, and UT_K_FENTRY to pick
 * fentry/fexit (arguments read with bpf_get_func_arg) or kprobes (arguments
 * from registers, saved at entry for the return probe).  Its HOOKS table
 * says which programs each UT_HOOK_ block below has (entry, exit, saved
 * arguments); tests/unit/test_hook_table.py holds the two together.
 */
#include "ut_pagestate.h"       /* ut_ps_folio_of(), UT_X86_*; UT_L_* from the layout */

/* The tlb:tlb_flush reasons uffdtrace_event.h spells for the tracepoint
 * tier, checked against the running kernel's enum tlb_flush_reason (BTF). */
#if UT_L_HAS_TLB_FLUSH_ON_TASK_SWITCH
_Static_assert(UT_TLB_FLUSH_ON_TASK_SWITCH == UT_L_TLB_FLUSH_ON_TASK_SWITCH, "UT_TLB_* stale");
#endif
#if UT_L_HAS_TLB_REMOTE_SHOOTDOWN
_Static_assert(UT_TLB_REMOTE_SHOOTDOWN == UT_L_TLB_REMOTE_SHOOTDOWN, "UT_TLB_* stale");
#endif
#if UT_L_HAS_TLB_REMOTE_SEND_IPI
_Static_assert(UT_TLB_REMOTE_SEND_IPI == UT_L_TLB_REMOTE_SEND_IPI, "UT_TLB_* stale");
#endif

#define UT_MAX_PIN_PAGES 64
#define UT_PAGE_SIZE (1ULL << UT_X86_PAGE_SHIFT)

/* Who pinned a folio: filled by the GUP hooks, read when a move meets it. */
struct ut_pinner {
	u64 ts_ns;
	u32 pid;
	u32 method;
	u32 gup_flags;
	u32 pad;
	char comm[16];
	u64 uaddr;   /* the user address the page was pinned at */
};

/* key: struct folio * (kernel pointer: stays in this map, never sent) */
BPF_TABLE("lru_hash", u64, struct ut_pinner, pinned_folios, 65536);
/* How many pinned_folios entries may exist (never fewer than there are: an
 * entry replaced or evicted leaves it higher).  Zero lets the unpin hooks,
 * which every O_DIRECT completion reaches, return at once. */
BPF_ARRAY(pins_tracked, s64, 1);
/* Processes that used a userfaultfd (any uffd ioctl): their short-term pins
 * are tracked too; other processes' only when long-term. */
BPF_TABLE("lru_hash", u32, u8, uffd_users, 4096);

static __always_inline s64 ut_pins_tracked(s64 delta)
{
	u32 zero = 0;
	s64 *n = pins_tracked.lookup(&zero);

	if (!n)
		return 1;   /* unknown: do the work */
	if (delta)
		__sync_fetch_and_add(n, delta);
	return *n;
}

static __always_inline void ut_uffd_user(void)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	u8 one = 1;

	if (!uffd_users.lookup(&pid))
		uffd_users.update(&pid, &one);
}

/* ---- argument access, the same text for fentry and kprobes ---- */
#if UT_K_FENTRY
#define UT_ON_ENTRY(fn) KFUNC_PROBE(fn)
#define UT_ON_EXIT(fn) KRETFUNC_PROBE(fn)
#define UT_ARG(n) ut_func_arg(ctx, n)
#define UT_EXIT_ARG(fn, n) ut_func_arg(ctx, n)
#define UT_RET() ut_func_ret(ctx)
/* fexit sees the arguments itself: nothing to save at entry */
#define UT_SAVE_ARGS(fn)
#define UT_SAVE_ARGS_IN_MOVE(fn)
#define UT_EXIT_DONE(fn)

static __always_inline u64 ut_func_arg(unsigned long long *ctx, u32 n)
{
	u64 v = 0;

	bpf_get_func_arg(ctx, n, &v);
	return v;
}

static __always_inline u64 ut_func_ret(unsigned long long *ctx)
{
	u64 v = 0;

	bpf_get_func_ret(ctx, &v);
	return v;
}
#else
/* kprobes: Python attaches ut_kp__<fn> / ut_krp__<fn> to the kallsyms name
 * (which may carry a .isra/.constprop suffix) */
#define UT_ON_ENTRY(fn) int ut_kp__##fn(struct pt_regs *ctx)
#define UT_ON_EXIT(fn) int ut_krp__##fn(struct pt_regs *ctx)
#define UT_ARG(n) ut_regs_arg(ctx, n)
#define UT_EXIT_ARG(fn, n) ut_saved_arg(UT_FN_##fn, n)
#define UT_RET() PT_REGS_RC(ctx)
#define UT_SAVE_ARGS(fn) \
	UT_ON_ENTRY(fn) { ut_save_args(ctx, UT_FN_##fn); return 0; }
/* for hot functions that only matter inside a move (vm_normal_folio runs on
 * every page fault): save nothing for other threads */
#define UT_SAVE_ARGS_IN_MOVE(fn) \
	UT_ON_ENTRY(fn) { if (current_move()) ut_save_args(ctx, UT_FN_##fn); return 0; }
#define UT_EXIT_DONE(fn) ut_drop_args(UT_FN_##fn)

#define UT_SAVED_ARGS 8
struct ut_args_key {
	u32 tid;
	u32 fn;
};
struct ut_saved_args {
	u64 arg[UT_SAVED_ARGS];
};
BPF_HASH(saved_args, struct ut_args_key, struct ut_saved_args, 10240);

/* UT_FN_<fn>, the key of fn's saved arguments, is #defined by
 * uffdtrace/kernel_tier.py for each hook its table marks saved_args */

/* x86-64 SysV: six arguments in registers, the rest on the stack above the
 * return address */
static __always_inline u64 ut_regs_arg(struct pt_regs *ctx, u32 n)
{
	u64 v = 0;

	switch (n) {
	case 0: return PT_REGS_PARM1(ctx);
	case 1: return PT_REGS_PARM2(ctx);
	case 2: return PT_REGS_PARM3(ctx);
	case 3: return PT_REGS_PARM4(ctx);
	case 4: return PT_REGS_PARM5(ctx);
	case 5: return PT_REGS_PARM6(ctx);
	}
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (n - 5)));
	return v;
}

static __always_inline struct ut_args_key ut_args_key(u32 fn)
{
	struct ut_args_key key = {};

	key.tid = (u32)bpf_get_current_pid_tgid();
	key.fn = fn;
	return key;
}

static __always_inline void ut_save_args(struct pt_regs *ctx, u32 fn)
{
	struct ut_args_key key = ut_args_key(fn);
	struct ut_saved_args a = {};

#pragma unroll
	for (u32 i = 0; i < UT_SAVED_ARGS; i++)
		a.arg[i] = ut_regs_arg(ctx, i);
	if (saved_args.update(&key, &a))
		stat_add(UT_STAT_SAVED_ARGS_FULL, 1);
}

static __always_inline u64 ut_saved_arg(u32 fn, u32 n)
{
	struct ut_args_key key = ut_args_key(fn);
	struct ut_saved_args *a = saved_args.lookup(&key);

	if (!a || n >= UT_SAVED_ARGS)
		return 0;
	return a->arg[n & (UT_SAVED_ARGS - 1)];
}

static __always_inline void ut_drop_args(u32 fn)
{
	struct ut_args_key key = ut_args_key(fn);

	saved_args.delete(&key);
}
#endif

/* ---- reading kernel objects (by offset: the rewriter is not relied on) ---- */
static __always_inline u64 ut_read_u64(const void *base, u64 offset)
{
	u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + offset);
	return v;
}

static __always_inline u32 ut_read_u32(const void *base, u64 offset)
{
	u32 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + offset);
	return v;
}

/* The folio of a struct page (ut_pagestate.h decodes its compound word). */
static __always_inline u64 ut_page_folio(u64 page)
{
	return ut_ps_folio_of(page, ut_read_u64((void *)page, UT_L_PAGE_COMPOUND_HEAD));
}

/* Who pinned the folio where a failed move stopped: its struct page from the
 * pfn the state at exit read, then the pinner the GUP hooks recorded. */
static __always_inline void ut_pinner_at_exit(struct ut_move_inflight *rec)
{
#if UT_STATE_AT_EXIT
	u32 zero = 0;
	struct ut_walk_cfg *cfg = walk_cfg.lookup(&zero);

	if (!cfg || !(rec->ev.src_state.flags & UT_PS_FOLIO))
		return;
	u64 folio = ut_page_folio(cfg->vmemmap_base + rec->ev.src_state.pfn * UT_L_SIZEOF_PAGE);
	struct ut_pinner *p = pinned_folios.lookup(&folio);

	if (!p)
		return;
	rec->ev.folio_flags |= UT_FOLIO_SEEN | UT_FOLIO_PINNED_SEEN;
	rec->ev.pinner_pid = p->pid;
	rec->ev.pinner_ts_ns = p->ts_ns;
	rec->ev.pinner_method = p->method;
	rec->ev.pinner_gup_flags = p->gup_flags;
	__builtin_memcpy(rec->ev.pinner_comm, p->comm, sizeof(rec->ev.pinner_comm));
#endif
}

/* The first failing step of a move: its result and address. */
static __always_inline void ut_step_failed(struct ut_move_inflight *rec, u64 src_addr, s64 err)
{
	if (rec->ev.kflags & UT_K_STEP_FAILED)
		return;
	rec->ev.kflags |= UT_K_STEP_FAILED;
	rec->ev.step_err = err;
	rec->ev.fail_addr = src_addr;
}

/* The step functions, by what their success returns */
#define UT_STEP_PTES 1   /* move_pages_ptes(): the bytes it moved (a batch from 6.18) */
#define UT_STEP_PTE 2    /* move_pages_pte(): 0, one page moved */
#define UT_STEP_PMD 3    /* move_pages_huge_pmd(): 0, one PMD moved */

/* The path a successful step took (user question 6).  The step functions
 * that tell a zero page, a swap entry or a hole from a present page
 * (move_zeropage_pte, move_swap_pte) are inlined, so the destination entry
 * the step left says it: a step moves one kind (a batch stops at the first
 * page unlike the first).  Only the moving thread pays: one page-table walk
 * per step. */
static __always_inline void ut_step_path(struct ut_move_inflight *rec, u64 mm, u64 dst_addr,
					 u64 pages, int kind)
{
	int where = 0, flags = 0;
#if UT_STATE_AT_EXIT
	u32 zero = 0;
	struct ut_walk_cfg *cfg = walk_cfg.lookup(&zero);

	if (cfg && cfg->page_offset_base) {
		struct ut_page_state ps = {};

		ut_ps_walk_tables(&ps, mm, dst_addr, cfg);
		where = ps.where;
		flags = ps.flags;
		rec->ev.kflags |= UT_K_PATHS_READ;
	}
#endif
	count_path(&rec->ev, where, flags, pages, kind == UT_STEP_PMD);
}

/* One move step (a PTE batch or a PMD) returned `ret`: bytes or 0 on
 * success, -errno on failure; -EAGAIN is retried by move_pages().  mm and
 * the addresses are the step's arguments. */
static __always_inline void ut_step_done(struct ut_move_inflight *rec, u64 mm, u64 dst_addr,
					 u64 src_addr, s64 ret, int kind)
{
	rec->ev.steps++;
	if (ret == -UT_EAGAIN)
		rec->ev.retries++;
	else if (ret < 0)
		ut_step_failed(rec, src_addr, ret);
	else
		ut_step_path(rec, mm, dst_addr,
			     kind == UT_STEP_PTES ? (u64)ret >> UT_X86_PAGE_SHIFT : 1, kind);
}

/* Called by move_end() after the state at exit was read, before the record
 * is sent. */
static __always_inline void ut_kernel_finish(struct ut_move_inflight *rec)
{
	rec->ev.flags |= UT_F_KERNEL_TIER;
#if defined(UT_HOOK_move_pages_ptes) || defined(UT_HOOK_move_pages_pte)
	rec->ev.kflags |= UT_K_PTE_STEPS;
#endif
	if (rec->ev.ret < 0)
		ut_pinner_at_exit(rec);
}

/* ---- move_pages(): entered at all?  and its own result ---- */
#ifdef UT_HOOK_move_pages
UT_ON_ENTRY(move_pages)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		rec->ev.kflags |= UT_K_MOVE_PAGES;
	return 0;
}

UT_ON_EXIT(move_pages)
{
	struct ut_move_inflight *rec = current_move();

	if (rec) {
		rec->ev.kflags |= UT_K_MOVE_PAGES_RETURNED;
		rec->ev.kernel_ret = (s64)UT_RET();
	}
	return 0;
}
#endif

/* ---- the ioctl handler: the move itself, and is this uffd another
 * process's? ---- */
/* Hooking the handler replaces the syscall tracepoints (kernel_tier.py sets
 * UT_MOVES_FROM_HANDLER with it): only uffd ioctls pay for tracing, not
 * every ioctl and syscall of the machine. */
#ifdef UT_HOOK_userfaultfd_ioctl
/* The fd the thread passed to ioctl(2): the handler only has the file.
 * The syscall's user registers hold it (x86-64: first argument in di). */
static __always_inline u32 ut_syscall_fd(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 fd = 0;

	bpf_probe_read_kernel(&fd, sizeof(fd), &regs->di);
	return (u32)fd;
}

/* userfaultfd_ioctl(file, cmd, arg) */
UT_ON_ENTRY(userfaultfd_ioctl)
{
	u32 cmd = (u32)UT_ARG(1);

	ut_uffd_user();
#if UT_WAITERS
	if (cmd == UFFDT_IOC_WAKE) {
		wake_waiters(ut_syscall_fd(), ut_read_u64((void *)UT_ARG(0), UT_L_FILE_PRIVATE_DATA),
			     UT_ARG(2));
		return 0;
	}
#endif
	if (cmd != UFFDT_IOC_MOVE)
		return 0;
	u32 fd = ut_syscall_fd();
	move_begin(fd, UT_ARG(2));
	struct ut_move_inflight *rec = current_move();

	if (!rec)
		return 0;
	u64 uctx = ut_read_u64((void *)UT_ARG(0), UT_L_FILE_PRIVATE_DATA);
	u64 owner = ut_read_u64((void *)uctx, UT_L_UFFD_CTX_MM);
	u64 mine = ut_read_u64((void *)bpf_get_current_task(), UT_L_TASK_MM);

	rec->ev.kflags |= UT_K_IOCTL_SEEN;
	if (owner != mine)
		rec->ev.kflags |= UT_K_CROSS_MM;
#if UT_WAITERS
	move_waiters(fd, uctx);
#endif
	return 0;
}

UT_ON_EXIT(userfaultfd_ioctl)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		move_end(ctx, rec, (s64)(long)UT_RET());
	return 0;
}
#endif

/* ---- faulting threads: when each began to wait ---- */
/* handle_userfault(vmf, reason): a thread faulted on a page registered with
 * a userfaultfd and is about to sleep until it is resolved.  Stamped here,
 * a woken waiter's wait is exact (ut_uffdstate.h, fault_since).  Only
 * processes using userfaultfd get here: no other process pays for it. */
#ifdef UT_HOOK_handle_userfault
UT_ON_ENTRY(handle_userfault)
{
#if UT_WAITERS
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;

	if (!wanted(id >> 32, tid))
		return 0;
	struct ut_fault_since s = {};
	s.addr = ut_read_u64((void *)UT_ARG(0), UT_L_VM_FAULT_ADDRESS);
	s.since_ns = bpf_ktime_get_ns();
	s.since = UT_WAIT_FAULT_ENTRY;
	fault_since.update(&tid, &s);
#endif
	return 0;
}
#endif

/* ---- move steps ---- */
/* A step function: its result is a byte count or 0 on success, -errno on
 * failure (an int on older kernels, hence ret_type); mm is argument 0,
 * dst_addr and src_addr arguments dst_arg and src_arg; kind: UT_STEP_*.
 * Saved arguments exist only for threads inside a move. */
#define UT_STEP_HOOK(fn, dst_arg, src_arg, ret_type, kind)                     \
	UT_SAVE_ARGS_IN_MOVE(fn)                                               \
	UT_ON_EXIT(fn)                                                         \
	{                                                                      \
		struct ut_move_inflight *rec = current_move();                    \
		if (rec) {                                                     \
			ut_step_done(rec, UT_EXIT_ARG(fn, 0),                  \
				     UT_EXIT_ARG(fn, dst_arg),                 \
				     UT_EXIT_ARG(fn, src_arg),                 \
				     (s64)(ret_type)UT_RET(), kind);           \
			UT_EXIT_DONE(fn);                                      \
		}                                                              \
		return 0;                                                      \
	}

#ifdef UT_HOOK_move_pages_ptes
/* 6.18+: (mm, dst_pmd, src_pmd, dst_vma, src_vma, dst_addr, src_addr, len,
 * mode) -> bytes moved or -errno */
UT_STEP_HOOK(move_pages_ptes, 5, 6, long, UT_STEP_PTES)
#endif
#ifdef UT_HOOK_move_pages_pte
/* up to 6.17 where not inlined: (mm, dst_pmd, src_pmd, dst_vma, src_vma,
 * dst_addr, src_addr, mode) -> 0 or -errno */
UT_STEP_HOOK(move_pages_pte, 5, 6, int, UT_STEP_PTE)
#endif
#ifdef UT_HOOK_move_pages_huge_pmd
/* (mm, dst_pmd, src_pmd, dst_pmdval, dst_vma, src_vma, dst_addr, src_addr)
 * -> 0 or -errno */
UT_STEP_HOOK(move_pages_huge_pmd, 6, 7, int, UT_STEP_PMD)
#endif

/* ---- folio splits while inside a move ---- */
#ifdef UT_HOOK_split_folio_to_list
/* The base pages of a large folio (0: its order cannot be read here). */
static __always_inline u64 ut_folio_pages(u64 folio)
{
	if (!(ut_read_u64((void *)folio, UT_L_FOLIO_FLAGS) & (1ULL << UT_L_PG_HEAD)))
		return 1;
#if UT_L_HAS_FOLIO_FLAGS_1
	return 1ULL << (ut_read_u64((void *)folio, UT_L_FOLIO_FLAGS_1) & 0xff);
#else
	return 0;
#endif
}

/* split_folio_to_list(folio, list): the folio's size before the split
 * leaves it order 0 -- the huge-page coverage a split loses (question 7) */
UT_ON_ENTRY(split_folio_to_list)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		rec->split_pages = ut_folio_pages(UT_ARG(0));
	return 0;
}

UT_ON_EXIT(split_folio_to_list)
{
	struct ut_move_inflight *rec = current_move();
	int ret = (int)UT_RET();

	if (rec) {
		if (ret == 0) {
			rec->ev.thp_splits++;
			rec->ev.split_pages += rec->split_pages;
		} else if (!rec->ev.split_err) {
			rec->ev.split_err = ret;
		}
		rec->split_pages = 0;
	}
	return 0;
}
#endif

/* ---- GUP pins: who pins which folio ---- */
/* A long-term pin taken (UT_EV_PIN) or released (UT_EV_UNPIN), as a pin
 * event: pid and comm of the pinner, tid of the thread that pinned or
 * released it.  Long-term pins are rare and decisive: reported as they
 * happen. */
static __always_inline void ut_send_gup_pin(u32 type, struct ut_pinner *who, u64 ts_ns,
					    u64 addr, u64 len, const struct ut_stack_ids *stack)
{
	struct ut_pin_event *e = events.ringbuf_reserve(sizeof(struct ut_pin_event));

	if (!e) {
		stat_add(UT_STAT_RINGBUF_DROPS, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->pid = who->pid;
	e->tid = (u32)bpf_get_current_pid_tgid();
	e->ts_ns = ts_ns;
	e->addr = addr;
	e->len = len;
	e->method = who->method;
	e->gup_flags = who->gup_flags;
	__builtin_memcpy(e->comm, who->comm, sizeof(e->comm));
	if (stack)
		__builtin_memcpy(&e->stack_ids, stack, sizeof(e->stack_ids));
	events.ringbuf_submit(e, 0);
	stat_add(UT_STAT_PINS_SEEN, 1);
}

static __always_inline void ut_pinned(void *ctx, u32 method, u64 start, s64 pinned,
				      u32 gup_flags, u64 pages)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32;
	int longterm = gup_flags & UT_L_FOLL_LONGTERM;
	struct ut_pinner who = {};

	if (pinned <= 0)
		return;
	stat_add(UT_STAT_GUP_PINS, 1);
	/* Every O_DIRECT read pins its buffer: a short-term pin of a process
	 * that moves no page is not worth a map update per page. */
	if (!longterm && !uffd_users.lookup(&pid))
		return;
	who.ts_ns = bpf_ktime_get_ns();
	who.pid = pid;
	who.method = method | (longterm ? UT_PIN_LONGTERM : 0);
	who.gup_flags = gup_flags;
	bpf_get_current_comm(&who.comm, sizeof(who.comm));
	if (pages) {
#pragma unroll
		for (u32 i = 0; i < UT_MAX_PIN_PAGES; i++) {
			u64 page = 0;

			if (i >= pinned)
				break;
			bpf_probe_read_kernel(&page, sizeof(page), (void *)(pages + 8 * i));
			if (!page)
				break;
			u64 folio = ut_page_folio(page);

			who.uaddr = start + (u64)i * UT_PAGE_SIZE;
			if (!pinned_folios.update(&folio, &who))
				ut_pins_tracked(1);
		}
	}
	if (longterm) {
		struct ut_stack_ids stack = {};
#if UT_STACKS
		/* here, in the pinning call: who pinned, down to the kernel path */
		take_stacks(ctx, &stack, 1);
#endif
		ut_send_gup_pin(UT_EV_PIN, &who, who.ts_ns, start, (u64)pinned * UT_PAGE_SIZE, &stack);
	}
}

/* Each pin_user_pages* variant: its method code and where its arguments sit. */
#define UT_PIN_HOOK(fn, method, start_arg, flags_arg, pages_arg)                \
	UT_SAVE_ARGS(fn)                                                       \
	UT_ON_EXIT(fn)                                                         \
	{                                                                      \
		ut_pinned(ctx, method, UT_EXIT_ARG(fn, start_arg), (s64)(long)UT_RET(), \
			  (u32)UT_EXIT_ARG(fn, flags_arg), UT_EXIT_ARG(fn, pages_arg)); \
		UT_EXIT_DONE(fn);                                              \
		return 0;                                                      \
	}

#ifdef UT_HOOK_pin_user_pages_fast
/* (start, nr_pages, gup_flags, pages) -> pinned; io_uring uses this one */
UT_PIN_HOOK(pin_user_pages_fast, UT_PIN_USER_PAGES_FAST, 0, 2, 3)
#endif
#ifdef UT_HOOK_pin_user_pages
/* (start, nr_pages, gup_flags, pages) */
UT_PIN_HOOK(pin_user_pages, UT_PIN_USER_PAGES, 0, 2, 3)
#endif
#ifdef UT_HOOK_pin_user_pages_remote
/* (mm, start, nr_pages, gup_flags, pages, locked) */
UT_PIN_HOOK(pin_user_pages_remote, UT_PIN_USER_PAGES_REMOTE, 1, 3, 4)
#endif
#ifdef UT_HOOK_pin_user_pages_unlocked
/* (start, nr_pages, pages, gup_flags) */
UT_PIN_HOOK(pin_user_pages_unlocked, UT_PIN_USER_PAGES_UNLOCKED, 0, 3, 2)
#endif

/* ---- unpins: forget the pinner ---- */
/* Forget who pinned the folio of `page`.  The release of a long-term pin is
 * reported if `report` (once per unpin call: the collector forgets the whole
 * pinned range it lies in).  Returns whether it was reported. */
static __always_inline int ut_unpinned_page(u64 page, int report)
{
	struct ut_pinner *p;
	u64 folio;

	if (!page)
		return 0;
	stat_add(UT_STAT_GUP_UNPINS, 1);
	folio = ut_page_folio(page);
	p = pinned_folios.lookup(&folio);
	if (!p)
		return 0;
	report = report && (p->method & UT_PIN_LONGTERM);
	if (report)
		ut_send_gup_pin(UT_EV_UNPIN, p, bpf_ktime_get_ns(), p->uaddr, UT_PAGE_SIZE, 0);
	if (!pinned_folios.delete(&folio))
		ut_pins_tracked(-1);
	return report;
}

static __always_inline void ut_unpinned_pages(u64 pages, u64 npages)
{
	int reported = 0;

	if (!ut_pins_tracked(0))   /* every O_DIRECT completion unpins: most find nothing */
		return;

#pragma unroll
	for (u32 i = 0; i < UT_MAX_PIN_PAGES; i++) {
		u64 page = 0;

		if (i >= npages)
			break;
		bpf_probe_read_kernel(&page, sizeof(page), (void *)(pages + 8 * i));
		reported |= ut_unpinned_page(page, !reported);
	}
}

/* unpin_user_page(page), unpin_user_folio(folio, n), unpin_folio(folio):
 * a folio pointer is its own head page */
#define UT_UNPIN_ONE_HOOK(fn)                                                  \
	UT_ON_ENTRY(fn)                                                        \
	{                                                                      \
		if (ut_pins_tracked(0))                                        \
			ut_unpinned_page(UT_ARG(0), 1);                        \
		return 0;                                                      \
	}
/* unpin_user_pages{,_dirty_lock}(pages, npages, ...) */
#define UT_UNPIN_ARRAY_HOOK(fn)                                                \
	UT_ON_ENTRY(fn)                                                        \
	{                                                                      \
		ut_unpinned_pages(UT_ARG(0), UT_ARG(1));                       \
		return 0;                                                      \
	}

#ifdef UT_HOOK_unpin_user_page
UT_UNPIN_ONE_HOOK(unpin_user_page)
#endif
#ifdef UT_HOOK_unpin_user_folio
UT_UNPIN_ONE_HOOK(unpin_user_folio)
#endif
#ifdef UT_HOOK_unpin_folio
UT_UNPIN_ONE_HOOK(unpin_folio)
#endif
#ifdef UT_HOOK_unpin_user_pages
UT_UNPIN_ARRAY_HOOK(unpin_user_pages)
#endif
#ifdef UT_HOOK_unpin_user_pages_dirty_lock
UT_UNPIN_ARRAY_HOOK(unpin_user_pages_dirty_lock)
#endif
