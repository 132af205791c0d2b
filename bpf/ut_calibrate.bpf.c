/*
 * Calibration of the page-state reader (uffdtrace/kernel/calibrate.py):
 * where the direct map and the vmemmap are on the running kernel, which
 * randomizes both (CONFIG_RANDOMIZE_MEMORY) and, here, hides their symbols.
 *
 * The calibrating process asks by calling madvise(addr, 0, UT_CAL_ADVICE),
 * an invalid advice the kernel refuses with EINVAL and no side effect; the
 * syscall tracepoint runs in its context, with its mm.  What to do is in
 * `cal_cfg`, results go to `cal_out`:
 *
 *   UT_CAL_PGD      mm->pgd (a direct-map address: it bounds the base)
 *   UT_CAL_BASES    the pfn that addr[0] maps to under each candidate base,
 *                   walking 4 and 5 levels
 *   UT_CAL_VERIFY   the full page state of each addr[] under cfg.walk, and
 *                   the folio's index, for userspace to check against
 *                   /proc/self/pagemap
 *
 * The vmemmap base comes from pagemap:mm_lru_insertion, which records a folio
 * pointer and its pfn: base = folio - pfn * sizeof(struct page).  Kernel
 * pointers stay in these maps, read only by the calibrating (root) process.
 *
 * Compiled with the UT_L_* layout constants (uffdtrace/kernel/layout.py);
 * the bases themselves are runtime values here.
 */
/* uffdtrace_event.h has no include guard (cffi reads it: no #if there);
 * when this file is appended to the tracer's program it is in already */
#ifndef UT_PSW_UNREAD
#include "uffdtrace_event.h"
#endif
#include "ut_pagestate.h"

/* the modes (UT_CAL_PGD, UT_CAL_BASES, UT_CAL_VERIFY) are defined by
 * calibrate.py; the array sizes below it reads from the compiled maps */
#define UT_CAL_ADDRS 4
#define UT_CAL_CANDIDATES 32
#define UT_CAL_SAMPLES 8

struct ut_cal_cfg {
	u64 pid;
	u64 mode;                          /* UT_CAL_* */
	u64 addr[UT_CAL_ADDRS];
	u64 base[UT_CAL_CANDIDATES];       /* UT_CAL_BASES: 0 ends the list */
	struct ut_walk_cfg walk;           /* UT_CAL_VERIFY */
};

struct ut_cal_out {
	u64 calls;                         /* requests served */
	u64 pgd;
	u64 pfn4[UT_CAL_CANDIDATES];       /* UT_CAL_BASES: addr[0] with 4 levels */
	u64 pfn5[UT_CAL_CANDIDATES];       /* ... with 5 levels */
	struct ut_page_state state[UT_CAL_ADDRS];   /* UT_CAL_VERIFY */
	u64 index[UT_CAL_ADDRS];           /* ... folio->index */
};

BPF_ARRAY(cal_cfg, struct ut_cal_cfg, 1);
BPF_ARRAY(cal_out, struct ut_cal_out, 1);
/* vmemmap bases from LRU insertions, and how many were seen */
BPF_ARRAY(cal_vmemmap, u64, UT_CAL_SAMPLES);
BPF_ARRAY(cal_vmemmap_seen, u64, 1);

static __always_inline u64 ut_cal_pfn(u64 mm, u64 addr, u64 base, u32 levels)
{
	struct ut_walk_cfg walk = {.page_offset_base = base, .levels = levels};
	struct ut_page_state ps = {};

	if (!ut_ps_walk_tables(&ps, mm, addr, &walk))
		return 0;
	return ps.pfn;
}

static __always_inline void ut_cal_bases(struct ut_cal_cfg *cfg, struct ut_cal_out *out, u64 mm)
{
	for (u32 i = 0; i < UT_CAL_CANDIDATES; i++) {
		u64 base = cfg->base[i];

		if (!base)
			break;
		out->pfn4[i] = ut_cal_pfn(mm, cfg->addr[0], base, 4);
		out->pfn5[i] = ut_cal_pfn(mm, cfg->addr[0], base, 5);
	}
}

static __always_inline void ut_cal_verify(struct ut_cal_cfg *cfg, struct ut_cal_out *out, u64 mm)
{
	for (u32 i = 0; i < UT_CAL_ADDRS; i++) {
		struct ut_page_state *ps = &out->state[i];

		ut_page_state_walk(ps, mm, cfg->addr[i], &cfg->walk);
		out->index[i] = 0;
		if (ps->flags & UT_PS_FOLIO)
			ut_ps_read_u64(cfg->walk.vmemmap_base + ps->pfn * UT_L_SIZEOF_PAGE +
				       UT_L_FOLIO_INDEX, &out->index[i]);
	}
}

TRACEPOINT_PROBE(syscalls, sys_enter_madvise)
{
	u32 zero = 0;
	struct ut_cal_cfg *cfg;
	struct ut_cal_out *out;
	u64 mm;

	if (args->behavior != UT_CAL_ADVICE || args->len_in != 0)
		return 0;
	cfg = cal_cfg.lookup(&zero);
	out = cal_out.lookup(&zero);
	if (!cfg || !out || cfg->pid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	mm = ut_ps_current_mm();
	if (cfg->mode == UT_CAL_PGD)
		ut_ps_read_u64(mm + UT_L_MM_PGD, &out->pgd);
	else if (cfg->mode == UT_CAL_BASES)
		ut_cal_bases(cfg, out, mm);
	else if (cfg->mode == UT_CAL_VERIFY)
		ut_cal_verify(cfg, out, mm);
	out->calls++;
	return 0;
}

/* pagemap:mm_lru_insertion, attached by calibrate.py while it samples.  Its
 * record has an `enum lru_list` bcc could only declare with heavy headers,
 * so the two fields are read at the offsets of the tracepoint's format file
 * (UT_CAL_LRU_FOLIO, UT_CAL_LRU_PFN). */
int ut_cal_lru_insertion(void *ctx)
{
	u32 zero = 0, slot;
	u64 *seen = cal_vmemmap_seen.lookup(&zero);
	u64 folio = 0, pfn = 0, base;

	if (!seen || *seen >= UT_CAL_SAMPLES)
		return 0;
	bpf_probe_read_kernel(&folio, sizeof(folio), (char *)ctx + UT_CAL_LRU_FOLIO);
	bpf_probe_read_kernel(&pfn, sizeof(pfn), (char *)ctx + UT_CAL_LRU_PFN);
	base = folio - pfn * UT_L_SIZEOF_PAGE;
	slot = __sync_fetch_and_add(seen, 1);
	if (slot < UT_CAL_SAMPLES)
		cal_vmemmap.update(&slot, &base);
	return 0;
}
