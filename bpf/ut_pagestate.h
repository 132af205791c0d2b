/*
 * ut_pagestate.h: what the page tables and the folio say about one user
 * address, read in the kernel at the instant it matters (the end of a failed
 * UFFDIO_MOVE, before the thread returns to user space), so the evidence is
 * the kernel's own state and not a /proc read done later by userspace.
 *
 * The walk is the kernel's: mm->pgd -> (p4d) -> pud -> pmd -> pte with
 * bpf_probe_read_kernel, each table reached through the direct map, then the
 * struct page of the pfn through the vmemmap, then its folio.  No kernel
 * header is trusted for a layout (bcc may compile with another version's):
 *
 *   UT_L_<NAME>   struct offsets, enum values, swap types of the running
 *                 kernel, from its BTF (uffdtrace/kernel/layout.py);
 *   walk bases    the direct-map and vmemmap bases, paging levels and the
 *                 zero pages, calibrated on the running kernel
 *                 (uffdtrace/kernel/calibrate.py): a struct ut_walk_cfg, or
 *                 the constants UT_L_PAGE_OFFSET_BASE, UT_L_VMEMMAP_BASE,
 *                 UT_L_PGTABLE_LEVELS, UT_L_ZERO_PFN, UT_L_HUGE_ZERO_PFN.
 *
 * Include after uffdtrace_event.h (struct ut_page_state, UT_PSW_*, UT_PS_*).
 * Usable from tracepoint and kprobe/fentry programs (only
 * bpf_probe_read_kernel and bpf_get_current_task).  x86-64 only.
 *
 * Nothing is locked: this is a snapshot.  Another thread of the process may
 * change or free a table while it is read; a read that faults stops the walk
 * (UT_PSW_READ_FAILED), a racing change shows as whatever was read.
 */
#ifndef UT_PAGESTATE_H
#define UT_PAGESTATE_H

/* ---- x86-64 page-table entries (arch/x86/include/asm/pgtable_types.h,
 * pgtable_64.h): architecture, not layout, so not in BTF ---- */
#define UT_X86_PRESENT 0x1ULL
#define UT_X86_RW 0x2ULL
#define UT_X86_SWP_UFFD_WP 0x4ULL        /* _PAGE_USER, reused in swap entries */
#define UT_X86_SWP_EXCLUSIVE 0x8ULL      /* _PAGE_PWT, reused in swap entries */
#define UT_X86_KNL_ERRATUM 0x60ULL       /* ACCESSED|DIRTY: pte/pmd_none() ignore them */
#define UT_X86_PSE 0x80ULL               /* a leaf at PUD/PMD level */
#define UT_X86_PROTNONE 0x100ULL         /* _PAGE_GLOBAL, reused when not present */
#define UT_X86_SPECIAL 0x200ULL          /* _PAGE_SOFTW1 */
#define UT_X86_UFFD_WP 0x400ULL          /* _PAGE_SOFTW2 in present entries */
/* physical address bits 12..51 (__PHYSICAL_MASK_SHIFT 52); a memory
 * encryption bit inside them would make calibration fail, not mislead */
#define UT_X86_PTE_PHYS 0x000ffffffffff000ULL
#define UT_X86_PMD_PHYS 0x000fffffffe00000ULL   /* bit 12 is PAT in a huge leaf */
#define UT_X86_PUD_PHYS 0x000fffffc0000000ULL
#define UT_X86_PAGE_SHIFT 12
#define UT_X86_PTRS 511                  /* index mask: 512 entries a table */
/* swap entries: type in bits 59..63, offset stored inverted from bit 9 */
#define UT_X86_SWP_TYPE_SHIFT 59
#define UT_X86_SWP_TYPE_BITS 5
#define UT_X86_SWP_OFFSET_SHIFT 14
/* a migration entry's offset is a pfn below MAX_PHYSMEM_BITS - PAGE_SHIFT
 * bits (52 or 46 physical bits with 5 or 4 levels); young/dirty bits follow */
#define UT_X86_SWP_PFN_BITS(levels) ((levels) == 5 ? 40 : 34)

/* ---- kernel constants that are #defines, not in BTF ---- */
/* include/linux/mm.h (since 5.7): each FOLL_PIN of a small folio adds this
 * many references */
#define UT_GUP_PIN_COUNTING_BIAS 1024
/* folio->mapping's low bits (PAGE_/FOLIO_MAPPING_ANON and _KSM; renamed
 * around 6.17, same values); the same values as uffdtrace_kernel.bpf.c */
#define UT_MAPPING_FLAGS 3
#define UT_MAPPING_ANON 1
#define UT_MAPPING_KSM 3
#define UT_HPAGE_PMD_NR 512

/* Where the walk's tables and pages are in the kernel's address space. */
struct ut_walk_cfg {
	u64 page_offset_base;   /* the direct map: virtual address of physical 0 */
	u64 vmemmap_base;       /* struct page of pfn 0 */
	u64 zero_pfn;           /* the shared zero page (0: unknown) */
	u64 huge_zero_pfn;      /* the huge zero folio (0: unknown) */
	u32 levels;             /* paging levels: 4 or 5 */
	u32 pad;
};

static __always_inline int ut_ps_read_u64(u64 addr, u64 *out)
{
	*out = 0;
	return bpf_probe_read_kernel(out, sizeof(*out), (const void *)addr);
}

static __always_inline s32 ut_ps_read_s32(u64 addr)
{
	s32 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const void *)addr);
	return v;
}

/* current->mm: zero for a kernel thread */
static __always_inline u64 ut_ps_current_mm(void)
{
	u64 mm;

	ut_ps_read_u64((u64)bpf_get_current_task() + UT_L_TASK_MM, &mm);
	return mm;
}

/* pgd/p4d/pud/pmd/pte_none(): empty but for the bits a Knights Landing
 * erratum may set */
static __always_inline int ut_ps_none(u64 entry)
{
	return !(entry & ~UT_X86_KNL_ERRATUM);
}

/* The pfn bits of a leaf; a non-present (PROT_NONE) leaf keeps them inverted
 * (L1TF: arch/x86/include/asm/pgtable-invert.h). */
static __always_inline u64 ut_ps_leaf_pfn(u64 entry, u64 phys_mask)
{
	if (!(entry & UT_X86_PRESENT))
		entry = ~entry;
	return (entry & phys_mask) >> UT_X86_PAGE_SHIFT;
}

/* Read the entry of `addr` at one level (index bits from `shift`) in the
 * table at virtual address `table`; on failure the walk stops there. */
static __always_inline int ut_ps_entry(struct ut_page_state *ps, u64 table, u64 addr,
				       u32 shift, u8 level, u64 *entry)
{
	ps->level = level;
	if (ut_ps_read_u64(table + ((addr >> shift) & UT_X86_PTRS) * 8, entry)) {
		ps->where = UT_PSW_READ_FAILED;
		return -1;
	}
	ps->entry = *entry;
	return 0;
}

/* A swap-format entry (not present, not PROT_NONE): swap, migration or
 * another kind, by its type (include/linux/swap.h order, types from BTF). */
static __always_inline void ut_ps_swap_entry(struct ut_page_state *ps, u64 entry, int pmd,
					     u32 levels)
{
	u32 type = entry >> UT_X86_SWP_TYPE_SHIFT;
	u64 offset = (~entry << UT_X86_SWP_TYPE_BITS) >> UT_X86_SWP_OFFSET_SHIFT;

	ps->swp_type = type;
	if (entry & UT_X86_SWP_UFFD_WP)
		ps->flags |= UT_PS_UFFD_WP;
#if UT_L_HAS_MAX_SWAPFILES
	if (type >= UT_L_SWP_MIGRATION_FIRST && type < UT_L_SWP_MIGRATION_FIRST + 3) {
		ps->where = pmd ? UT_PSW_PMD_MIGRATION : UT_PSW_PTE_MIGRATION;
		ps->pfn = offset & ((1ULL << UT_X86_SWP_PFN_BITS(levels)) - 1);
		/* SWP_MIGRATION_READ_EXCLUSIVE and _WRITE: the page was exclusive */
		if (type != UT_L_SWP_MIGRATION_FIRST)
			ps->flags |= UT_PS_SWP_EXCLUSIVE;
		return;
	}
	if (!pmd && type < UT_L_MAX_SWAPFILES) {
		ps->where = UT_PSW_PTE_SWAP;
		ps->pfn = offset;
		if (entry & UT_X86_SWP_EXCLUSIVE)
			ps->flags |= UT_PS_SWP_EXCLUSIVE;
		return;
	}
#endif
	ps->where = pmd ? UT_PSW_PMD_OTHER : UT_PSW_PTE_OTHER;
	ps->pfn = offset;
}

/* ---- the page tables ---- */
/* Walk to the entry that maps `addr`; fills where, level, entry, pfn and the
 * entry's own bits.  Returns 1 if a page is mapped there (pfn valid, the
 * folio can be read), 0 otherwise. */
static __always_inline int ut_ps_walk_tables(struct ut_page_state *ps, u64 mm, u64 addr,
					     const struct ut_walk_cfg *cfg)
{
	u64 table, entry;

	ps->addr = addr;
	ps->level = UT_PSL_MM;
	if (!mm) {
		ps->where = UT_PSW_NO_MM;
		return 0;
	}
	if (ut_ps_read_u64(mm + UT_L_MM_PGD, &table) || !table) {
		ps->where = UT_PSW_READ_FAILED;
		return 0;
	}
	/* mm->pgd is a direct-map address already; every lower table is found
	 * by the physical address in its parent entry */
	if (cfg->levels == 5) {
		if (ut_ps_entry(ps, table, addr, 48, UT_PSL_PGD, &entry))
			return 0;
		if (ut_ps_none(entry)) {
			ps->where = UT_PSW_PGD_NONE;
			return 0;
		}
		table = cfg->page_offset_base + (entry & UT_X86_PTE_PHYS);
	}
	/* with 4 levels the p4d is folded into the pgd: this is the pgd */
	if (ut_ps_entry(ps, table, addr, 39, cfg->levels == 5 ? UT_PSL_P4D : UT_PSL_PGD, &entry))
		return 0;
	if (ut_ps_none(entry)) {
		ps->where = cfg->levels == 5 ? UT_PSW_P4D_NONE : UT_PSW_PGD_NONE;
		return 0;
	}
	table = cfg->page_offset_base + (entry & UT_X86_PTE_PHYS);

	if (ut_ps_entry(ps, table, addr, 30, UT_PSL_PUD, &entry))
		return 0;
	if (ut_ps_none(entry)) {
		ps->where = UT_PSW_PUD_NONE;
		return 0;
	}
	if (!(entry & UT_X86_PRESENT)) {
		ps->where = UT_PSW_PUD_OTHER;
		return 0;
	}
	if (entry & UT_X86_PSE) {
		ps->where = UT_PSW_PUD_HUGE;
		ps->pfn = ut_ps_leaf_pfn(entry, UT_X86_PUD_PHYS) + ((addr >> UT_X86_PAGE_SHIFT) & 0x3ffff);
		return 0;
	}
	table = cfg->page_offset_base + (entry & UT_X86_PTE_PHYS);

	if (ut_ps_entry(ps, table, addr, 21, UT_PSL_PMD, &entry))
		return 0;
	if (ut_ps_none(entry)) {
		ps->where = UT_PSW_PMD_NONE;
		return 0;
	}
	/* pmd_present(): PSE counts, as a THP PMD being split is invalidated
	 * (PRESENT cleared) but still maps the folio */
	if (!(entry & (UT_X86_PRESENT | UT_X86_PROTNONE | UT_X86_PSE))) {
		ut_ps_swap_entry(ps, entry, 1, cfg->levels);
		return 0;
	}
	if (entry & UT_X86_PSE) {
		ps->where = UT_PSW_PMD_HUGE;
		ps->pfn = ut_ps_leaf_pfn(entry, UT_X86_PMD_PHYS) +
			  ((addr >> UT_X86_PAGE_SHIFT) & (UT_HPAGE_PMD_NR - 1));
		goto leaf;
	}
	table = cfg->page_offset_base + (entry & UT_X86_PTE_PHYS);

	if (ut_ps_entry(ps, table, addr, 12, UT_PSL_PTE, &entry))
		return 0;
	if (ut_ps_none(entry)) {
		ps->where = UT_PSW_PTE_NONE;
		return 0;
	}
	if (!(entry & (UT_X86_PRESENT | UT_X86_PROTNONE))) {
		ut_ps_swap_entry(ps, entry, 0, cfg->levels);
		return 0;
	}
	ps->where = UT_PSW_PTE_PRESENT;
	ps->pfn = ut_ps_leaf_pfn(entry, UT_X86_PTE_PHYS);
	if (entry & UT_X86_SPECIAL)
		ps->flags |= UT_PS_SPECIAL;
leaf:
	if (!(entry & UT_X86_PRESENT))
		ps->flags |= UT_PS_PROTNONE;
	if (entry & UT_X86_RW)
		ps->flags |= UT_PS_WRITE;
	if (entry & UT_X86_UFFD_WP)
		ps->flags |= UT_PS_UFFD_WP;
	if (cfg->zero_pfn && ps->pfn == cfg->zero_pfn)
		ps->flags |= UT_PS_ZERO_PAGE;
	if (cfg->huge_zero_pfn && ps->pfn - cfg->huge_zero_pfn < UT_HPAGE_PMD_NR)
		ps->flags |= UT_PS_HUGE_ZERO_PAGE;
	return 1;
}

/* ---- the folio ---- */
/* The head page (folio) of `page`, whose compound_head word is `info`.  Bit
 * 0 marks a tail page.  Up to 6.x the word is head | 1; 7.x (compound_info)
 * may instead store a mask (-2^k) | 1 that turns a tail's address into its
 * head's.  A head pointer is never of the form -2^k, so the value itself
 * says which encoding it is. */
static __always_inline u64 ut_ps_folio_of(u64 page, u64 info)
{
	u64 mask = info & ~1ULL, low = -mask;

	if (!(info & 1))
		return page;
	if (mask && !(low & (low - 1)))
		return page & mask;
	return info - 1;
}

/* Folio facts as move_pages_pte(s)/move_pages_huge_pmd judge them. */
static __always_inline void ut_ps_read_folio(struct ut_page_state *ps, const struct ut_walk_cfg *cfg)
{
	u64 page = cfg->vmemmap_base + ps->pfn * UT_L_SIZEOF_PAGE;
	u64 page_flags, info, folio, flags, mapping;

	ps->level = UT_PSL_PAGE;
	if (ut_ps_read_u64(page + UT_L_PAGE_FLAGS, &page_flags) ||
	    ut_ps_read_u64(page + UT_L_PAGE_COMPOUND_HEAD, &info)) {
		ps->where = UT_PSW_READ_FAILED;
		return;
	}
	folio = ut_ps_folio_of(page, info);
	flags = page_flags;
	if (folio != page && ut_ps_read_u64(folio + UT_L_FOLIO_FLAGS, &flags)) {
		ps->where = UT_PSW_READ_FAILED;
		return;
	}
	ut_ps_read_u64(folio + UT_L_FOLIO_MAPPING, &mapping);
	ps->flags |= UT_PS_FOLIO;
	ps->refcount = ut_ps_read_s32(folio + UT_L_FOLIO_REFCOUNT);
	ps->page_mapcount = ut_ps_read_s32(page + UT_L_PAGE_MAPCOUNT) + 1;
	if ((mapping & UT_MAPPING_FLAGS) == UT_MAPPING_KSM)
		ps->flags |= UT_PS_KSM;
	else if (mapping & UT_MAPPING_ANON)
		ps->flags |= UT_PS_ANON;
#if UT_L_HAS_PG_LOCKED
	if (flags & (1ULL << UT_L_PG_LOCKED))
		ps->flags |= UT_PS_LOCKED;
#endif
#if UT_L_HAS_PG_SWAPCACHE && UT_L_HAS_PG_SWAPBACKED
	/* PG_swapcache aliases an owner bit: it means swap cache only on a
	 * swap-backed folio (folio_test_swapcache) */
	if ((flags & (1ULL << UT_L_PG_SWAPBACKED)) && (flags & (1ULL << UT_L_PG_SWAPCACHE)))
		ps->flags |= UT_PS_SWAPCACHE;
#endif
	/* PageAnonExclusive: per page for a PTE-mapped folio; a PMD mapping
	 * keeps it on the head page only (folio_add_new_anon_rmap) */
	if (((ps->where == UT_PSW_PMD_HUGE ? flags : page_flags) >> UT_L_PG_ANON_EXCLUSIVE) & 1)
		ps->flags |= UT_PS_ANON_EXCLUSIVE;
	if (flags & (1ULL << UT_L_PG_HEAD)) {
		ps->flags |= UT_PS_LARGE;
#if UT_L_HAS_FOLIO_FLAGS_1
		{
			u64 flags_1;

			ut_ps_read_u64(folio + UT_L_FOLIO_FLAGS_1, &flags_1);
			ps->order = flags_1 & 0xff;
		}
#endif
#if UT_L_HAS_FOLIO_LARGE_MAPCOUNT
		ps->mapcount = ut_ps_read_s32(folio + UT_L_FOLIO_LARGE_MAPCOUNT) + 1;
#endif
#if UT_L_HAS_FOLIO_PINCOUNT
		/* 64-bit kernels keep a pincount in every large folio */
		ps->pincount = ut_ps_read_s32(folio + UT_L_FOLIO_PINCOUNT);
		if (ps->pincount > 0)
			ps->flags |= UT_PS_MAYBE_DMA_PINNED;
#endif
	} else {
		ps->mapcount = ut_ps_read_s32(folio + UT_L_FOLIO_MAPCOUNT) + 1;
		/* as folio_maybe_dma_pinned(): unsigned, and a false positive is
		 * possible with very many plain references */
		if ((u32)ps->refcount >= UT_GUP_PIN_COUNTING_BIAS)
			ps->flags |= UT_PS_MAYBE_DMA_PINNED;
	}
}

/* ---- the API ---- */
/* The state of user address `addr` in `mm` (a struct mm_struct *), with the
 * bases in *cfg (calibration passes candidates here). */
static __always_inline void ut_page_state_walk(struct ut_page_state *ps, u64 mm, u64 addr,
					       const struct ut_walk_cfg *cfg)
{
	__builtin_memset(ps, 0, sizeof(*ps));
	if (ut_ps_walk_tables(ps, mm, addr, cfg))
		ut_ps_read_folio(ps, cfg);
}

#ifdef UT_L_PAGE_OFFSET_BASE
/* ... with the calibrated constants: what a tracing program calls. */
static __always_inline void ut_page_state_read(struct ut_page_state *ps, u64 mm, u64 addr)
{
	struct ut_walk_cfg cfg = {
		.page_offset_base = UT_L_PAGE_OFFSET_BASE,
		.vmemmap_base = UT_L_VMEMMAP_BASE,
		.zero_pfn = UT_L_ZERO_PFN,
		.huge_zero_pfn = UT_L_HUGE_ZERO_PFN,
		.levels = UT_L_PGTABLE_LEVELS,
	};

	ut_page_state_walk(ps, mm, addr, &cfg);
}

/* ... of the current task's address `addr`. */
static __always_inline void ut_page_state_current(struct ut_page_state *ps, u64 addr)
{
	ut_page_state_read(ps, ut_ps_current_mm(), addr);
}
#endif

#endif /* UT_PAGESTATE_H */
