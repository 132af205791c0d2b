/*
 * uffdtrace kernel tier: hooks inside the move path, appended to the
 * tracepoint program (uffdtrace.bpf.c) when the running kernel lets us
 * attach fentry/fexit or kprobes.
 *
 * Every hook adds to the in-flight record of the moving thread (opened by
 * userfaultfd_ioctl()'s entry hook, or by sys_enter_ioctl if the handler
 * cannot be hooked), so the one event per ioctl now says what
 * the kernel really did: move_pages()'s own result, each step's result and
 * the first failing address, the internal -EAGAIN retries, the folio at the
 * failing address (large, maybe-DMA-pinned, KSM, anon-exclusive) and who
 * pinned it, folio splits, ranged TLB flushes, and the VMAs as the kernel saw
 * them.
 *
 * Every hook acts only for a thread that has an in-flight record, i.e. is
 * inside a UFFDIO_MOVE ioctl: that, not move_pages(), is the gate, because
 * newer kernels (7.x) inline move_pages() into the ioctl handler.
 *
 * Which hooks exist differs by kernel (6.12 inlines move_pages_pte, 6.18
 * has move_pages_ptes): uffdtrace/kernel_tier.py defines UT_HOOK_<function>
 * for each function present on the running kernel, and UT_K_FENTRY to pick
 * fentry/fexit (arguments read with bpf_get_func_arg) or kprobes (arguments
 * from registers, saved at entry for the return probe).  Its HOOKS table
 * says which programs each UT_HOOK_ block below has (entry, exit, saved
 * arguments); tests/unit/test_hook_table.py holds the two together.
 */
#include <linux/mm_types.h>
#include <linux/page-flags.h>
#include <linux/mm.h>
#include <linux/userfaultfd_k.h>

/* The tlb:tlb_flush reasons uffdtrace_event.h spells for the tracepoint
 * tier, checked against this kernel's own enum tlb_flush_reason. */
_Static_assert(UT_TLB_FLUSH_ON_TASK_SWITCH == TLB_FLUSH_ON_TASK_SWITCH, "UT_TLB_* stale");
_Static_assert(UT_TLB_REMOTE_SHOOTDOWN == TLB_REMOTE_SHOOTDOWN, "UT_TLB_* stale");
_Static_assert(UT_TLB_REMOTE_SEND_IPI == TLB_REMOTE_SEND_IPI, "UT_TLB_* stale");

#define UT_MAX_PIN_PAGES 64
/* (folio->mapping & 3) == 3 marks a KSM folio (PAGE_MAPPING_KSM /
 * FOLIO_MAPPING_KSM, renamed around 6.17; the value has not changed) */
#define UT_MAPPING_FLAGS 3
#define UT_MAPPING_ANON 1
#define UT_MAPPING_KSM 3
/* x86-64 PTE bits 12..51 hold the pfn.  The kernel's PTE_PFN_MASK reads the
 * physical_mask variable (for memory encryption), which BPF cannot; an
 * encryption bit would make a KSM merge time lookup miss, nothing worse. */
#define UT_PTE_PFN_MASK 0x000ffffffffff000ULL

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

/* The folio a page belongs to.  The word after flags (where `lru` sits)
 * has bit 0 set on tail pages.  Up to 6.x it holds head | 1 (compound_head);
 * 7.x renamed it compound_info and, when struct page is a power of two in
 * size with an optimized vmemmap, stores instead a mask (-2^k) | 1 that
 * turns a tail page's address into its head's.  A head pointer is never of
 * the form -2^k, so the value itself says which encoding it is. */
static __always_inline u64 ut_page_folio(u64 page)
{
	u64 info = ut_read_u64((void *)page, offsetof(struct page, lru));
	u64 mask = info & ~1ULL, low = -mask;

	if (!(info & 1))
		return page;
	if (mask && !(low & (low - 1)))
		return page & mask;
	return info - 1;
}

/* UT_FOLIO_* of a folio, the way move_pages_pte(s) judges it. */
static __always_inline u32 ut_folio_state(u64 folio)
{
	/* flags is the first word of struct folio in every version (a plain
	 * unsigned long up to 6.17, memdesc_flags_t from 6.18) */
	u64 flags = ut_read_u64((void *)folio, 0);
	u64 mapping = ut_read_u64((void *)folio, offsetof(struct folio, mapping));
	u32 state = UT_FOLIO_SEEN;

	if (flags & (1UL << PG_head)) {
		state |= UT_FOLIO_LARGE;
		if ((int)ut_read_u32((void *)folio, offsetof(struct folio, _pincount)) > 0)
			state |= UT_FOLIO_MAYBE_DMA_PINNED;
	} else {
		/* small folio: each pin adds GUP_PIN_COUNTING_BIAS references (a
		 * false positive is possible with very many plain references, as
		 * for the kernel's own folio_maybe_dma_pinned()) */
		if (ut_read_u32((void *)folio, offsetof(struct folio, _refcount)) >=
		    GUP_PIN_COUNTING_BIAS)
			state |= UT_FOLIO_MAYBE_DMA_PINNED;
		/* PageAnonExclusive of the only page: valid for small folios */
		if (flags & (1UL << PG_anon_exclusive))
			state |= UT_FOLIO_ANON_EXCLUSIVE;
	}
	if ((mapping & UT_MAPPING_FLAGS) == UT_MAPPING_KSM)
		state |= UT_FOLIO_KSM;
	else if (mapping & UT_MAPPING_ANON)
		state |= UT_FOLIO_ANON;
	return state;
}

/* The folio looked at last is the one at the failing address: its state,
 * the KSM merge that made it, and, if a GUP pin of it was seen, the pinner.
 * Decoded here, once per failed move, not for every page a move looks at. */
static __always_inline void ut_folio_at_fail(struct ut_move_inflight *rec)
{
	struct ut_pinner *p = pinned_folios.lookup(&rec->scratch_folio);

	rec->ev.kflags |= UT_K_FOLIO_AT_FAIL;
	rec->ev.folio_flags = ut_folio_state(rec->scratch_folio);
	rec->ev.fail_addr = rec->scratch_folio_addr;
	if (rec->ev.folio_flags & UT_FOLIO_KSM) {
		/* the ksm:* tracepoints keyed the merge by pfn */
		u64 pfn = (rec->scratch_folio_pte & UT_PTE_PFN_MASK) >> PAGE_SHIFT;
		struct ut_ksm_merge *m = ksm_merges.lookup(&pfn);

		rec->ev.ksm_merged_ts_ns = m ? m->ts_ns : 0;
	}
	if (p) {
		rec->ev.folio_flags |= UT_FOLIO_PINNED_SEEN;
		rec->ev.pinner_pid = p->pid;
		rec->ev.pinner_ts_ns = p->ts_ns;
		rec->ev.pinner_method = p->method;
		rec->ev.pinner_gup_flags = p->gup_flags;
		__builtin_memcpy(rec->ev.pinner_comm, p->comm, sizeof(rec->ev.pinner_comm));
	}
}

/* The first failing step of a move: its result, address, and the folio the
 * kernel looked at last (move_pages_pte(s) stops at the page it refused). */
static __always_inline void ut_step_failed(struct ut_move_inflight *rec, u64 src_addr, s64 err)
{
	if (rec->ev.kflags & UT_K_STEP_FAILED)
		return;
	rec->ev.kflags |= UT_K_STEP_FAILED;
	rec->ev.step_err = err;
	rec->ev.fail_addr = src_addr;
	if (rec->scratch_folio && rec->scratch_folio_addr == src_addr)
		ut_folio_at_fail(rec);
}

/* One move step (a PTE batch or a PMD) returned `ret`: bytes or 0 on
 * success, -errno on failure; -EAGAIN is retried by move_pages(). */
static __always_inline void ut_step_done(struct ut_move_inflight *rec, u64 src_addr, s64 ret)
{
	rec->ev.steps++;
	if (ret == -EAGAIN)
		rec->ev.retries++;
	else if (ret < 0)
		ut_step_failed(rec, src_addr, ret);
}

/* Bytes the move got through before it stopped: the failing step's offset,
 * else what the kernel wrote to `move` (bytes, or -errno: none moved). */
static __always_inline u64 ut_progress(struct ut_move_inflight *rec)
{
	if (rec->ev.kflags & UT_K_STEP_FAILED)
		return rec->ev.fail_addr - rec->ev.src;
	return rec->ev.move > 0 ? rec->ev.move : 0;
}

/* The PTEs at the address where the move stopped, if the kernel mapped them
 * last: a populated dst or an empty src there is why it stopped (6.12 has no
 * step function to hook, so this is how its partial moves are explained). */
static __always_inline void ut_ptes_at_fail(struct ut_move_inflight *rec, u64 done)
{
	if (rec->scratch_src_pte_addr && rec->scratch_src_pte_addr == rec->ev.src + done) {
		u64 pte = rec->scratch_src_pte;

		rec->ev.pte_at_fail |= UT_PTE_SRC_SEEN;
		if (!pte)
			rec->ev.pte_at_fail |= UT_PTE_SRC_NONE;
		else if (!(pte & (_PAGE_PRESENT | _PAGE_PROTNONE)))
			rec->ev.pte_at_fail |= UT_PTE_SRC_SWAP;
	}
	if (rec->scratch_dst_pte_addr && rec->scratch_dst_pte_addr == rec->ev.dst + done) {
		rec->ev.pte_at_fail |= UT_PTE_DST_SEEN;
		if (rec->scratch_dst_pte)
			rec->ev.pte_at_fail |= UT_PTE_DST_POPULATED;
	}
}

/* Called by move_end() before the record is sent: fill in what only the end
 * of the move tells.  The scratch needs no scrubbing: it is not part of the
 * record sent, and move_begin() clears it for the next move. */
static __always_inline void ut_kernel_finish(struct ut_move_inflight *rec)
{
	rec->ev.flags |= UT_F_KERNEL_TIER;
	if (rec->ev.ret < 0) {
		u64 done = ut_progress(rec);

		/* without a step hook (6.12 inlines move_pages_pte) the last folio
		 * looked at, if it is where the move stopped, is the evidence */
		if (!(rec->ev.kflags & UT_K_STEP_FAILED) && rec->scratch_folio &&
		    rec->scratch_folio_addr == rec->ev.src + done)
			ut_folio_at_fail(rec);
		ut_ptes_at_fail(rec, done);
	}
}

/* ---- move_pages(): entered at all?  and its own result ---- */
#ifdef UT_HOOK_move_pages
UT_ON_ENTRY(move_pages)
{
	struct ut_move_inflight *rec = current_move();

	if (rec) {
		rec->ev.kflags |= UT_K_MOVE_PAGES;
		rec->scratch_ctx = UT_ARG(0);   /* struct userfaultfd_ctx * */
	}
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
	if ((u32)UT_ARG(1) != UFFDT_IOC_MOVE)
		return 0;
	move_begin(ut_syscall_fd(), UT_ARG(2));
	struct ut_move_inflight *rec = current_move();

	if (!rec)
		return 0;
	struct file *file = (struct file *)UT_ARG(0);
	u64 uctx = ut_read_u64(file, offsetof(struct file, private_data));
	u64 owner = ut_read_u64((void *)uctx, offsetof(struct userfaultfd_ctx, mm));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u64 mine = ut_read_u64(task, offsetof(struct task_struct, mm));

	rec->ev.kflags |= UT_K_IOCTL_SEEN;
	if (owner != mine)
		rec->ev.kflags |= UT_K_CROSS_MM;
	return 0;
}

UT_ON_EXIT(userfaultfd_ioctl)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		move_end(rec, (s64)(long)UT_RET());
	return 0;
}
#endif

/* ---- the VMAs as move_pages() locks them ---- */
static __always_inline u32 ut_vma_bits(u64 vma, u64 uffd_ctx)
{
	u64 vm_flags = ut_read_u64((void *)vma, offsetof(struct vm_area_struct, vm_flags));
	u64 vm_ops = ut_read_u64((void *)vma, offsetof(struct vm_area_struct, vm_ops));
	u64 owner = ut_read_u64((void *)vma, offsetof(struct vm_area_struct, vm_userfaultfd_ctx));
	u32 bits = 0;

	if (vm_flags & VM_SHARED)
		bits |= UT_VMA_SHARED;
	if (vm_ops)
		bits |= UT_VMA_NOT_ANON;
	if (vm_flags & VM_READ)
		bits |= UT_VMA_READ;
	if (vm_flags & VM_WRITE)
		bits |= UT_VMA_WRITE;
	if (vm_flags & VM_EXEC)
		bits |= UT_VMA_EXEC;
	if (vm_flags & VM_LOCKED)
		bits |= UT_VMA_LOCKED;
	if (vm_flags & (VM_PFNMAP | VM_IO | VM_HUGETLB | VM_MIXEDMAP))
		bits |= UT_VMA_SPECIAL;
	if (vm_flags & VM_UFFD_MISSING)
		bits |= UT_VMA_UFFD_MISSING;
	if (owner != uffd_ctx)
		bits |= UT_VMA_OTHER_CTX;
	return bits;
}

/* Record the VMA's bits as src or dst by the range it covers: one helper for
 * both ways move_pages() finds its VMAs. */
static __always_inline void ut_saw_vma(struct ut_move_inflight *rec, u64 vma)
{
	u64 start = ut_read_u64((void *)vma, offsetof(struct vm_area_struct, vm_start));
	u64 end = ut_read_u64((void *)vma, offsetof(struct vm_area_struct, vm_end));

	if (rec->ev.dst >= start && rec->ev.dst < end && !(rec->ev.kflags & UT_K_DST_VMA)) {
		rec->ev.kflags |= UT_K_DST_VMA;
		rec->ev.dst_vma = ut_vma_bits(vma, rec->scratch_ctx);
	}
	if (rec->ev.src >= start && rec->ev.src < end && !(rec->ev.kflags & UT_K_SRC_VMA)) {
		rec->ev.kflags |= UT_K_SRC_VMA;
		rec->ev.src_vma = ut_vma_bits(vma, rec->scratch_ctx);
	}
}

#ifdef UT_HOOK_lock_vma_under_rcu
/* the per-VMA-lock path: lock_vma_under_rcu(mm, addr) -> vma or NULL.
 * Only the result is read, so kprobe mode has no entry probe here (this
 * runs on every page fault of the machine). */
UT_ON_EXIT(lock_vma_under_rcu)
{
	struct ut_move_inflight *rec = current_move();
	u64 vma = UT_RET();

	if (rec && vma)
		ut_saw_vma(rec, vma);
	return 0;
}
#endif

#ifdef UT_HOOK___anon_vma_prepare
/* the mmap_lock fallback prepares a VMA that has no anon_vma yet (a
 * destination never touched): __anon_vma_prepare(vma) */
UT_ON_ENTRY(__anon_vma_prepare)
{
	struct ut_move_inflight *rec = current_move();

	if (rec)
		ut_saw_vma(rec, UT_ARG(0));
	return 0;
}
#endif

/* ---- move steps ---- */
/* A step function: its result is a byte count or 0 on success, -errno on
 * failure (an int on older kernels, hence ret_type); src_addr is argument
 * src_arg.  Saved arguments exist only for threads inside a move. */
#define UT_STEP_HOOK(fn, src_arg, ret_type)                                    \
	UT_SAVE_ARGS_IN_MOVE(fn)                                               \
	UT_ON_EXIT(fn)                                                         \
	{                                                                      \
		struct ut_move_inflight *rec = current_move();                    \
		if (rec) {                                                     \
			ut_step_done(rec, UT_EXIT_ARG(fn, src_arg),            \
				     (s64)(ret_type)UT_RET());                 \
			UT_EXIT_DONE(fn);                                      \
		}                                                              \
		return 0;                                                      \
	}

#ifdef UT_HOOK_move_pages_ptes
/* 6.18+: (mm, dst_pmd, src_pmd, dst_vma, src_vma, dst_addr, src_addr, len,
 * mode) -> bytes moved or -errno */
UT_STEP_HOOK(move_pages_ptes, 6, long)
#endif
#ifdef UT_HOOK_move_pages_pte
/* up to 6.17 where not inlined: (mm, dst_pmd, src_pmd, dst_vma, src_vma,
 * dst_addr, src_addr, mode) -> 0 or -errno */
UT_STEP_HOOK(move_pages_pte, 6, int)
#endif
#ifdef UT_HOOK_move_pages_huge_pmd
/* (mm, dst_pmd, src_pmd, dst_pmdval, dst_vma, src_vma, dst_addr, src_addr)
 * -> 0 or -errno */
UT_STEP_HOOK(move_pages_huge_pmd, 7, int)
#endif

/* ---- the folio behind each source PTE the move looks at ---- */
#ifdef UT_HOOK_vm_normal_folio
/* (vma, addr, pte) -> struct folio * or NULL */
UT_SAVE_ARGS_IN_MOVE(vm_normal_folio)
UT_ON_EXIT(vm_normal_folio)
{
	struct ut_move_inflight *rec = current_move();
	u64 folio = UT_RET();

	if (rec) {
		u64 addr = UT_EXIT_ARG(vm_normal_folio, 1);

		rec->ev.folio_lookups++;
		/* a second look at the same address is move_pages() retrying.
		 * Only remembered: ut_folio_at_fail() decodes it if the move
		 * stops here (this runs for every page a move looks at). */
		rec->scratch_folio = folio;
		rec->scratch_folio_addr = addr;
		rec->scratch_folio_pte = UT_EXIT_ARG(vm_normal_folio, 2);
	}
	if (rec)   /* arguments were saved only inside a move */
		UT_EXIT_DONE(vm_normal_folio);
	return 0;
}
#endif

/* ---- the page-table entries each step maps ---- */
#ifdef UT_HOOK___pte_offset_map
/* (pmd, addr, pmdvalp) -> pte_t * (mapped), or NULL */
UT_SAVE_ARGS_IN_MOVE(__pte_offset_map)
UT_ON_EXIT(__pte_offset_map)
{
	struct ut_move_inflight *rec = current_move();
	u64 ptep = UT_RET();

	if (rec && ptep) {
		u64 addr = UT_EXIT_ARG(__pte_offset_map, 1);
		u64 pte = ut_read_u64((void *)ptep, 0);

		if (addr >= rec->ev.dst && addr < rec->ev.dst + rec->ev.len) {
			rec->scratch_dst_pte_addr = addr;
			rec->scratch_dst_pte = pte;
		} else if (addr >= rec->ev.src && addr < rec->ev.src + rec->ev.len) {
			rec->scratch_src_pte_addr = addr;
			rec->scratch_src_pte = pte;
		}
	}
	if (rec)   /* arguments were saved only inside a move */
		UT_EXIT_DONE(__pte_offset_map);
	return 0;
}
#endif

/* ---- folio splits while inside a move ---- */
#ifdef UT_HOOK_split_folio_to_list
UT_ON_EXIT(split_folio_to_list)
{
	struct ut_move_inflight *rec = current_move();
	int ret = (int)UT_RET();

	if (rec) {
		if (ret == 0)
			rec->ev.thp_splits++;
		else if (!rec->ev.split_err)
			rec->ev.split_err = ret;
	}
	return 0;
}
#endif

/* ---- ranged TLB flushes ---- */
#ifdef UT_HOOK_flush_tlb_mm_range
/* (mm, start, end, stride_shift, freed_tables) */
UT_ON_ENTRY(flush_tlb_mm_range)
{
	struct ut_move_inflight *rec = current_move();

	if (rec) {
		u64 start = UT_ARG(1), end = UT_ARG(2);

		rec->ev.tlb_range_flushes++;
		/* end == TLB_FLUSH_ALL (-1) is a whole-mm flush, counted by the
		 * tlb:tlb_flush tracepoint already */
		if (end != (u64)-1 && end > start)
			rec->ev.tlb_range_bytes += end - start;
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
					    u64 addr, u64 len)
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
	events.ringbuf_submit(e, 0);
	stat_add(UT_STAT_PINS_SEEN, 1);
}

static __always_inline void ut_pinned(u32 method, u64 start, s64 pinned, u32 gup_flags,
				      u64 pages)
{
	u64 id = bpf_get_current_pid_tgid();
	struct ut_pinner who = {};

	if (pinned <= 0)
		return;
	stat_add(UT_STAT_GUP_PINS, 1);
	who.ts_ns = bpf_ktime_get_ns();
	who.pid = id >> 32;
	who.method = method | ((gup_flags & FOLL_LONGTERM) ? UT_PIN_LONGTERM : 0);
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

			who.uaddr = start + (u64)i * PAGE_SIZE;
			pinned_folios.update(&folio, &who);
		}
	}
	if (gup_flags & FOLL_LONGTERM)
		ut_send_gup_pin(UT_EV_PIN, &who, who.ts_ns, start, (u64)pinned * PAGE_SIZE);
}

/* Each pin_user_pages* variant: its method code and where its arguments sit. */
#define UT_PIN_HOOK(fn, method, start_arg, flags_arg, pages_arg)                \
	UT_SAVE_ARGS(fn)                                                       \
	UT_ON_EXIT(fn)                                                         \
	{                                                                      \
		ut_pinned(method, UT_EXIT_ARG(fn, start_arg), (s64)(long)UT_RET(), \
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
		ut_send_gup_pin(UT_EV_UNPIN, p, bpf_ktime_get_ns(), p->uaddr, PAGE_SIZE);
	pinned_folios.delete(&folio);
	return report;
}

static __always_inline void ut_unpinned_pages(u64 pages, u64 npages)
{
	int reported = 0;

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
		ut_unpinned_page(UT_ARG(0), 1);                                \
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
