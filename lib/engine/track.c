/* SPDX-License-Identifier: MIT */
/*
 * Write tracking between snapshots, for deltas. The context's one
 * userfaultfd keeps every page that was not written since the last tracked
 * snapshot's begin write-protected; the first write to such a page traps,
 * the fault service sets the page's bit in the region's dirty set and
 * un-protects it, and later writes run free. A delta's begin takes the
 * sets (they are its pages) and installs fresh ones.
 *
 * UFFD_FEATURE_WP_ASYNC (the kernel resolves the fault and PAGEMAP_SCAN
 * reports PAGE_IS_WRITTEN) is a property of a whole descriptor, and a
 * snapshot needs write faults that wait for it. So tracking starts on the
 * context's descriptor, and ls_track_settle() moves the memory to a second,
 * asynchronous one when the caller can stop its writers once more (the
 * move, unregister then register elsewhere and protect, has a window in
 * which writes would not be recorded). The next begin, in its pause,
 * collects what was written and moves the memory back
 * (ls_track_unsettle()). docs/engine.md has the numbers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

_Atomic uint64_t *ls_set_new(uint64_t npages)
{
	uint64_t words = ls_set_words(npages);

	return ls_bitmap_new((words + (words + 63) / 64) * 64);
}

uint64_t ls_set_next(const _Atomic uint64_t *set, uint64_t npages,
		     uint64_t w)
{
	uint64_t nw = ls_set_words(npages);
	const _Atomic uint64_t *sum = set + nw;

	for (uint64_t i = w / 64; w < nw && i < (nw + 63) / 64; i++) {
		uint64_t m =
		    atomic_load_explicit(&sum[i], memory_order_relaxed);

		if (i == w / 64)
			m &= ~0ull << (w % 64);
		if (m)
			return i * 64 + (uint64_t)__builtin_ctzll(m);
	}
	return nw;
}

void ls_set_mark_range(_Atomic uint64_t *set, uint64_t npages, uint64_t first,
		       uint64_t end)
{
	while (first < end) {
		uint64_t w = first / 64, lo = first % 64;
		uint64_t hi = end - w * 64 < 64 ? end - w * 64 : 64;
		uint64_t bits = (hi == 64 ? ~0ull : (1ull << hi) - 1) &
				~((1ull << lo) - 1);

		ls_set_or(set, npages, w, bits);
		first = w * 64 + hi;
	}
}

void ls_set_merge(_Atomic uint64_t *a, const _Atomic uint64_t *b,
		  uint64_t npages)
{
	uint64_t nw = ls_set_words(npages);

	for (uint64_t w = ls_set_next(b, npages, 0); w < nw;
	     w = ls_set_next(b, npages, w + 1))
		ls_set_or(a, npages, w,
			  atomic_load_explicit(&b[w], memory_order_relaxed));
}

void ls_track_mark_range(struct ls_ctx *ctx, uint32_t region, uint64_t first,
			 uint64_t end)
{
	_Atomic uint64_t *set = atomic_load(&ctx->track.dirty[region]);

	if (set)
		ls_set_mark_range(set, ctx->regions[region].npages, first, end);
}

void ls_track_mark(struct ls_ctx *ctx, uint32_t region, uint64_t page)
{
	ls_track_mark_range(ctx, region, page, page + 1);
}

/*
 * The tracking sets as they are now: their count (0 when nothing is
 * tracked, without a look at the regions, which may be changing then).
 */
int ls_track_sets_now(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	int n;

	if (!ctx->events || !atomic_load(&ctx->track.on))
		return 0;
	/* Regions are neither added nor removed while tracking is on. */
	n = ctx->nregions;
	for (int r = 0; r < n; r++)
		sets[r] = atomic_load(&ctx->track.dirty[r]);
	return n;
}

/* A discard read while tracking: recorded for the begin (see ls_track). */
static void disc_record(struct ls_ctx *ctx, uint64_t start, uint64_t end)
{
	unsigned n;

	n = atomic_load_explicit(&ctx->track.ndisc, memory_order_relaxed);
	if (n == LS_DISC_LOG) {
		atomic_store(&ctx->track.disc_over, true);
		return;
	}
	ctx->track.disc[n].start = start;
	ctx->track.disc[n].end = end;
	atomic_store_explicit(&ctx->track.ndisc, n + 1, memory_order_release);
}

/* Protects [s, e) clipped to the region. */
static int protect_within(struct ls_ctx *ctx,
			  const struct ls_region_info *info, uint64_t s,
			  uint64_t e)
{
	uint64_t base = (uint64_t)(uintptr_t)info->addr;

	s = s > base ? s : base;
	e = e < base + info->len ? e : base + info->len;
	return s < e ? ls_uffd_wp(ctx->uffd, s, e - s, true) : 0;
}

int ls_track_discards_reprotect(struct ls_ctx *ctx, bool prepared)
{
	unsigned n;
	bool over;
	int ret = 0;

	/* A writer's madvise returns once its event is read, maybe before
	 * the fault thread has recorded it: that is within inflight. */
	ls_svc_quiesce(ctx);
	n = atomic_load_explicit(&ctx->track.ndisc, memory_order_acquire);
	over = atomic_load(&ctx->track.disc_over);
	atomic_store(&ctx->track.ndisc, 0);
	atomic_store(&ctx->track.disc_over, false);
	if (!prepared || (!n && !over))
		return 0;
	for (int r = 0; !ret && r < ctx->nregions; r++) {
		const struct ls_region_info *info = &ctx->regions[r].info;
		uint64_t base = (uint64_t)(uintptr_t)info->addr;

		if (info->type != LS_MEM_ANON)
			continue;
		if (over)
			ret = protect_within(ctx, info, base, base + info->len);
		for (unsigned i = 0; !over && !ret && i < n; i++)
			ret = protect_within(ctx, info, ctx->track.disc[i].start,
					     ctx->track.disc[i].end);
		if (ret)
			ret = ls_err(ctx, ret,
				     "ioctl(UFFDIO_WRITEPROTECT) protecting pages of region '%s' discarded since the last begin: %s",
				     info->name, strerror(-ret));
	}
	return ret;
}

/*
 * A discard event: the anonymous pages of [start, end) change (they read
 * zero from now on) without a write fault. Marked in sets, which were
 * loaded before the event was read (svc_read()). Shared memory keeps its
 * pages in its file (a hole punched is found by each begin's look), so
 * only anonymous regions are marked: a delta holds exactly what changed.
 */
void ls_track_discarded(struct ls_ctx *ctx, _Atomic uint64_t *const *sets,
			int nsets, uint64_t start, uint64_t end)
{
	if (nsets)
		disc_record(ctx, start, end);
	/* Sets only while tracking is on: the regions are stable then. */
	for (int r = 0; r < nsets; r++) {
		const struct ls_region_info *info = &ctx->regions[r].info;
		uint64_t base = (uint64_t)(uintptr_t)info->addr, ps;
		uint64_t s = start > base ? start : base;
		uint64_t e = end < base + info->len ? end : base + info->len;

		if (!sets[r] || info->type != LS_MEM_ANON || s >= e)
			continue;
		ps = info->page_size;
		ls_set_mark_range(sets[r], ctx->regions[r].npages,
				  (s - base) / ps, (e - base + ps - 1) / ps);
	}
}

void ls_track_fault(struct ls_ctx *ctx, int region, uint64_t addr)
{
	const struct ls_region_info *info = &ctx->regions[region].info;
	uint64_t base = (uint64_t)(uintptr_t)info->addr;
	uint64_t g = atomic_load(&ctx->track.granule);
	uint64_t start, end;

	if (g < info->page_size)
		g = info->page_size;
	/*
	 * Un-protecting 4 KiB inside a huge page splits it: 50-150 us of the
	 * writer's stall (a guest vCPU that a pause then waits for), against
	 * 12-37 us for the whole block, which begin protects again at one
	 * PMD. Only in a prepare, where no page is added to a delta by this.
	 */
	if (ctx->regions[region].thp_zero &&
	    atomic_load(&ctx->track.prep_blocks) && g < LS_HUGE_2M)
		g = LS_HUGE_2M;
	start = addr & ~(g - 1);
	end = start + g;
	if (start < base)
		start = base;
	if (end > base + info->len)
		end = base + info->len;
	ls_track_mark_range(ctx, (uint32_t)region,
			    (start - base) / info->page_size,
			    (end - base) / info->page_size);
	if (ls_uffd_release(ctx->uffd, start, end - start,
			    ls_uffd_keeps_readonly(info->type) &&
				    !atomic_load(&ctx->regions[region].restore),
			    NULL)) {
		/* The writer must not hang; the sets are lost. */
		atomic_store(&ctx->track.broken, true);
		ls_uffd_wake(ctx->uffd, start, end - start);
	}
}

/* Installs sets (NULL: none) and frees the ones they replace. */
static void swap_sets(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	_Atomic uint64_t *old[LS_MAX_REGIONS];

	for (int r = 0; r < ctx->nregions; r++)
		old[r] = atomic_exchange(&ctx->track.dirty[r],
					 sets ? sets[r] : NULL);
	/* A fault handler may still hold an old set: wait for it. */
	ls_svc_quiesce(ctx);
	for (int r = 0; r < ctx->nregions; r++)
		free((void *)old[r]);
}

int ls_track_on(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	int ret;

	if (!atomic_load(&ctx->track.on)) {
		ret = ls_svc_get(ctx);
		if (ret)
			return ret;
	}
	swap_sets(ctx, sets);
	atomic_store(&ctx->track.broken, false);
	atomic_store(&ctx->track.on, true);
	return 0;
}

void ls_track_free_held(struct ls_ctx *ctx)
{
	for (int r = 0; r < LS_MAX_REGIONS; r++) {
		free(ctx->track.held[r]);
		ctx->track.held[r] = NULL;
	}
}

void ls_track_off(struct ls_ctx *ctx)
{
	if (!atomic_load(&ctx->track.on))
		return;
	atomic_store(&ctx->track.on, false);
	swap_sets(ctx, NULL);
	ls_track_free_held(ctx);
	ctx->track.has_parent = false;
	ctx->track.caller = false;
	ls_svc_put(ctx);
}

static bool set_test(const _Atomic uint64_t *set, uint64_t page)
{
	return atomic_load_explicit(&set[page / 64], memory_order_relaxed) &
	       (1ull << (page % 64));
}

static bool chunk_dirty(const _Atomic uint64_t *set, uint64_t first,
			uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		if (p % 64 == 0 && first + n - p >= 64) {
			if (atomic_load_explicit(&set[p / 64],
						 memory_order_relaxed))
				return true;
			p += 63;
		} else if (set_test(set, p)) {
			return true;
		}
	}
	return false;
}

static int protect_failed(struct ls_ctx *ctx, const struct ls_region *reg,
			  uint64_t off, int ret)
{
	return ls_err(ctx, ret,
		      "ioctl(UFFDIO_WRITEPROTECT) arming region '%s' at +0x%llx: %s",
		      reg->info.name, (unsigned long long)off, strerror(-ret));
}

/* Past this many runs of pages, ls_track_protect_set() goes by blocks. */
#define PROTECT_MAX_RUNS 256

/*
 * Runs (of pages or of blocks) closer than this are protected by one ioctl
 * over both and the gap (re-protecting a protected or clean page is
 * harmless: its next write is a fault like any other). Each ioctl may
 * flush the other CPUs' TLBs, ~20 us on a nested host (44 page runs took
 * 0.98 ms of a begin), but each 4 KiB entry of the gap costs its walk:
 * 44 ns measured here (one ioctl over 64 MiB of protected memfd pages,
 * 0.7 ms, against 1.5 us per single-page ioctl), so with 8 MiB gaps a few
 * pages scattered over a 64 MiB working set cost a walk of all of it in
 * the pause (a 4 GiB TCG guest's arm: 0.3-3.7 ms). Where the gap is huge
 * page entries (hugetlb, anonymous THP) a gap entry covers 2 MiB.
 */
#define PROTECT_MERGE_GAP (8ull << 20)
#define PROTECT_MERGE_GAP_4K (512ull << 10)

static uint64_t merge_gap(const struct ls_region *reg)
{
	return reg->info.page_size >= LS_HUGE_2M || reg->thp_zero
		       ? PROTECT_MERGE_GAP
		       : PROTECT_MERGE_GAP_4K;
}

/*
 * The runs of pages of a set, if there are at most PROTECT_MAX_RUNS:
 * their count, else -1. A run that starts less than `gap` pages after the
 * last one ends extends it. Words without a page are skipped whole.
 */
static int page_runs(const _Atomic uint64_t *set, uint64_t npages,
		     uint64_t gap, uint64_t (*runs)[2])
{
	uint64_t nw = ls_set_words(npages), end = 0; /* past the last read */
	int n = 0;
	bool in = false;

	for (uint64_t w = ls_set_next(set, npages, 0); w < nw;
	     end = w * 64 + 64 < npages ? w * 64 + 64 : npages,
		      w = ls_set_next(set, npages, w + 1)) {
		uint64_t bits =
		    atomic_load_explicit(&set[w], memory_order_relaxed);

		if (in && w * 64 != end) { /* words skipped: zero */
			runs[n++][1] = end;
			in = false;
		}
		if (!bits && !in)
			continue;
		for (uint64_t p = w * 64; p < w * 64 + 64 && p < npages; p++) {
			bool on = bits & (1ull << (p % 64));

			if (on && !in) {
				if (n && p - runs[n - 1][1] < gap)
					n--; /* the last run goes on */
				else if (n == PROTECT_MAX_RUNS)
					return -1;
				else
					runs[n][0] = p;
			} else if (!on && in) {
				runs[n++][1] = p;
			}
			in = on;
		}
	}
	if (in)
		runs[n++][1] = end;
	return n;
}

/* Whether a chunk of [c, end) holds a page of the set. */
static bool dirty_within(const _Atomic uint64_t *set, uint64_t c,
			 uint64_t end, uint64_t per, uint64_t npages)
{
	for (; c < end; c++) {
		uint64_t first = c * per;

		if (chunk_dirty(set, first,
				per < npages - first ? per : npages - first))
			return true;
	}
	return false;
}

static int protect_by_blocks(struct ls_ctx *ctx, const struct ls_region *reg,
			     const _Atomic uint64_t *set)
{
	uint64_t ps = reg->info.page_size, npages = reg->npages;
	uint64_t base = (uint64_t)(uintptr_t)reg->info.addr;
	uint64_t per = ps >= LS_HUGE_2M ? 1 : LS_HUGE_2M / ps;
	uint64_t nchunks = (npages + per - 1) / per, first, end;
	uint64_t gap = merge_gap(reg) / (per * ps);
	int64_t start = -1;
	int ret;

	for (uint64_t c = 0; c <= nchunks; c++) {
		first = c * per;
		if (c < nchunks &&
		    chunk_dirty(set, first,
				per < npages - first ? per : npages - first)) {
			if (start < 0)
				start = (int64_t)first;
			continue;
		}
		if (start < 0)
			continue;
		end = first < npages ? first : npages;
		/* a dirty chunk close ahead: one ioctl for both (the look is
		 * bounded: gap chunks from each clean one) */
		if (c < nchunks &&
		    dirty_within(set, c + 1,
				 c + 1 + gap < nchunks ? c + 1 + gap : nchunks,
				 per, npages))
			continue;
		ret = ls_uffd_wp(ctx->uffd, base + (uint64_t)start * ps,
				 (end - (uint64_t)start) * ps, true);
		if (ret)
			return protect_failed(ctx, reg, (uint64_t)start * ps,
					      ret);
		start = -1;
	}
	return 0;
}

/*
 * With tracking on, every page not in a dirty set is still protected, so
 * protecting the set's pages again protects everything. Each ioctl
 * changes every entry of its range (0.15 us per 4 KiB entry measured
 * under load) and may flush other CPUs' TLBs: a few runs are protected
 * page by page, many by runs of the 2 MiB blocks (or huge pages) that
 * hold a page of the set, which bounds the ioctl count however scattered
 * the writes were (re-protecting a clean page is harmless).
 */
int ls_track_protect_set(struct ls_ctx *ctx, int r,
			    const _Atomic uint64_t *set)
{
	const struct ls_region *reg = &ctx->regions[r];
	uint64_t ps = reg->info.page_size, npages = reg->npages;
	uint64_t base = (uint64_t)(uintptr_t)reg->info.addr;
	uint64_t runs[PROTECT_MAX_RUNS][2];
	int nruns = page_runs(set, npages, merge_gap(reg) / ps, runs);

	for (int i = 0; i < nruns; i++) {
		int ret = ls_uffd_wp(ctx->uffd, base + runs[i][0] * ps,
				     (runs[i][1] - runs[i][0]) * ps, true);

		if (ret)
			return protect_failed(ctx, reg, runs[i][0] * ps, ret);
	}
	return nruns >= 0 ? 0 : protect_by_blocks(ctx, reg, set);
}

static void free_sets(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	for (int r = 0; r < ctx->nregions; r++) {
		free((void *)sets[r]);
		sets[r] = NULL;
	}
}

/* Empty dirty sets for every region; false if out of memory. */
static bool alloc_sets(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	for (int r = 0; r < ctx->nregions; r++) {
		sets[r] = ls_set_new(ctx->regions[r].npages);
		if (!sets[r]) {
			while (r--)
				free((void *)sets[r]);
			return false;
		}
	}
	return true;
}

/*
 * Whether prepare protects region r: shmem and hugetlbfs keep a
 * write-protect marker where a page is discarded, so nothing there loses
 * its protection unseen between prepare and begin. Anonymous memory loses
 * it with the page: only with discard events, which mark the page, is it
 * prepared too (else begin arms it whole).
 */
bool ls_track_preparable(const struct ls_ctx *ctx, int r)
{
	return ctx->regions[r].info.type != LS_MEM_ANON || ctx->events;
}

/*
 * Protects every region (see populate_if_needed() in snapshot.c), or with
 * files_only the ones prepare protects; `who` starts the messages.
 */
static int protect_regions(struct ls_ctx *ctx, bool files_only,
			   const char *who)
{
	for (int r = 0; r < ctx->nregions; r++) {
		struct ls_region_info *info = &ctx->regions[r].info;
		bool anon = info->type == LS_MEM_ANON;
		int ret;

		if (files_only && !ls_track_preparable(ctx, r))
			continue;
		if (anon && !(ctx->features & LS_FEAT_WP_UNPOPULATED) &&
		    madvise(info->addr, info->len, MADV_POPULATE_READ))
			return ls_err(ctx, errno,
				      "%s: madvise(MADV_POPULATE_READ) on region '%s': %s",
				      who, info->name, strerror(errno));
		ret = ls_uffd_wp(ctx->uffd, (uint64_t)(uintptr_t)info->addr,
				 info->len, true);
		if (ret)
			return ls_err(ctx, ret,
				      "%s: ioctl(UFFDIO_WRITEPROTECT) arming region '%s': %s",
				      who, info->name, strerror(-ret));
	}
	return 0;
}

static bool has_preparable(const struct ls_ctx *ctx)
{
	for (int r = 0; r < ctx->nregions; r++)
		if (ls_track_preparable(ctx, r))
			return true;
	return false;
}

static void prep_sets_join(struct ls_ctx *ctx, _Atomic uint64_t **news,
			   bool merge);

/*
 * The dirty sets go to `old`, fresh ones take what is written from now on.
 * 0 or -ENOMEM.
 */
static int sets_take(struct ls_ctx *ctx, _Atomic uint64_t **old)
{
	_Atomic uint64_t *sets[LS_MAX_REGIONS];

	if (!alloc_sets(ctx, sets))
		return ls_err(ctx, ENOMEM, "snapshot: prepare: out of memory");
	for (int r = 0; r < ctx->nregions; r++)
		old[r] = atomic_exchange(&ctx->track.dirty[r], sets[r]);
	ls_svc_quiesce(ctx); /* nobody marks the old sets any more */
	return 0;
}

/* The dirty sets go aside to prep_sets (prep_sets_join() undoes it). */
static int prep_sets_take(struct ls_ctx *ctx)
{
	return sets_take(ctx, ctx->track.prep_sets);
}

/*
 * A prepare's second pass. Protecting 4 GiB of memfd in 4 KiB pages takes
 * 15-20 ms, and a busy writer touches most of its working set's 2 MiB
 * blocks meanwhile, each released whole at its first write: begin would
 * re-protect all of them (2.5-2.9 ms of a TCG guest's pause for a 64 MiB
 * working set). So the blocks written so far go aside and are protected
 * again at once, with first writes from now on releasing single pages:
 * begin then protects only the blocks of pages written after this short
 * pass. As for a delta's prepare, the sets change before the protection.
 * Huge-page-backed anonymous regions keep releasing whole blocks
 * (prep_blocks): begin protects such a block at one PMD.
 */
static int prepare_refine(struct ls_ctx *ctx)
{
	uint64_t granule = atomic_exchange(&ctx->track.granule, 0);
	int ret = prep_sets_take(ctx);

	if (ret) {
		atomic_store(&ctx->track.granule, granule);
		return ret;
	}
	ctx->track.refine_granule = granule;
	ctx->track.refined = true;
	for (int r = 0; !ret && r < ctx->nregions; r++)
		if (ls_track_preparable(ctx, r))
			ret = ls_track_protect_set(ctx, r,
						      ctx->track.prep_sets[r]);
	return ret;
}

void ls_track_refine_end(struct ls_ctx *ctx, _Atomic uint64_t **news)
{
	if (!ctx->track.refined)
		return;
	prep_sets_join(ctx, news, true);
	atomic_store(&ctx->track.granule, ctx->track.refine_granule);
	ctx->track.refined = false;
}

/*
 * ls_snapshot_prepare(): a full snapshot's arm walks every page table entry
 * of its memory, in the caller's pause: 8-21 ms for 1-4 GiB of memfd in
 * 4 KiB pages. Prepare protects the regions ls_track_preparable() names
 * before the pause, the writers running, and tracks what they write until
 * begin (by faults: one per 2 MiB block, then, after prepare_refine(), one
 * per page; discards by their events); begin then re-protects only those
 * pages, and arms the other regions whole, as without prepare.
 */
int ls_track_prepare(struct ls_ctx *ctx)
{
	_Atomic uint64_t *sets[LS_MAX_REGIONS];
	bool on = atomic_load(&ctx->track.on);
	int ret;

	/* Settled: the begin protects everything again anyway. */
	if (ctx->track.prep != LS_PREP_NONE || ctx->track.async ||
	    !has_preparable(ctx))
		return 0;
	if (on && !ctx->track.caller) {
		if (!atomic_load(&ctx->track.broken))
			ls_track_prep_set(ctx, LS_PREP_TRACKED);
		return 0;
	}
	if (!on) {
		if (!alloc_sets(ctx, sets))
			return ls_err(ctx, ENOMEM, "snapshot: prepare: out of memory");
		ret = ls_track_on(ctx, sets);
		if (ret) {
			for (int r = 0; r < ctx->nregions; r++)
				free((void *)sets[r]);
			return ret;
		}
		ctx->track.has_parent = false;
		ctx->track.prep_granule = atomic_load(&ctx->track.granule);
		atomic_store(&ctx->track.granule, LS_HUGE_2M);
	}
	ctx->track.caller = false;
	ls_track_prep_set(ctx, on ? LS_PREP_CALLER : LS_PREP_OWN);
	ret = protect_regions(ctx, true, "snapshot: prepare") ?:
	      prepare_refine(ctx);
	if (ret)
		ls_track_unprepare(ctx);
	return ret;
}

/*
 * A delta's prepare. Its pages so far are known: protecting them again
 * before the pause leaves the pause only what is written after (and the
 * look for discarded anonymous pages, which cannot leave it). The sets
 * must change before the protection does: a page released after it must
 * land in the new sets, or the begin would not protect it again.
 */
static int prepare_caller_delta(struct ls_ctx *ctx);

int ls_track_prepare_delta(struct ls_ctx *ctx)
{
	int ret;

	if (ctx->track.prep != LS_PREP_NONE || ctx->track.async ||
	    !atomic_load(&ctx->track.on) || atomic_load(&ctx->track.broken))
		return 0;
	if (ctx->track.caller)
		return prepare_caller_delta(ctx);
	ret = prep_sets_take(ctx);
	if (!ret)
		ls_track_prep_set(ctx, LS_PREP_DELTA);
	return ret;
}

/*
 * A delta's prepare under the caller's tracking. Nothing is protected
 * between such snapshots, so without it begin protects every page the
 * caller reports: the whole working set, in the pause (0.13-0.24 ms of a
 * TCG guest's 0.34 ms pause with a 256 MiB working set). Instead the
 * regions are protected whole now, as for a full snapshot (a first pass
 * that releases 2 MiB blocks, then those blocks again, page by page from
 * then on), and the faults from now on only say what begin must protect
 * again. The caller's reports still make the delta: what it reported so
 * far goes to prep_sets (its pages become pending now), its reports until
 * begin to late_sets (each such page was written before its protection,
 * or faulted since). A discarded anonymous page's event marks the dirty
 * sets, which begin protects.
 */
static int prepare_caller_delta(struct ls_ctx *ctx)
{
	_Atomic uint64_t *blocks[LS_MAX_REGIONS];
	int ret;

	if (!has_preparable(ctx))
		return 0;
	if (!alloc_sets(ctx, ctx->track.late_sets))
		return ls_err(ctx, ENOMEM, "snapshot: prepare: out of memory");
	ret = prep_sets_take(ctx);
	if (ret) {
		free_sets(ctx, ctx->track.late_sets);
		return ret;
	}
	ls_track_prep_set(ctx, LS_PREP_CALLER_DELTA);
	ctx->track.refine_granule =
	    atomic_exchange(&ctx->track.granule, LS_HUGE_2M);
	ret = protect_regions(ctx, true, "snapshot: prepare");
	/* Page by page from here: the blocks released meanwhile are taken
	 * (their marks say nothing the caller's reports do not) and
	 * protected again. */
	atomic_store(&ctx->track.granule, 0);
	if (!ret && !(ret = sets_take(ctx, blocks))) {
		for (int r = 0; !ret && r < ctx->nregions; r++)
			if (ls_track_preparable(ctx, r))
				ret = ls_track_protect_set(ctx, r, blocks[r]);
		free_sets(ctx, blocks);
	}
	if (ret)
		ls_track_unprepare(ctx);
	return ret;
}

/*
 * Both sets back in one, the prepare's (without `merge` the later one is
 * only dropped: under the caller's tracking its reports alone make the
 * delta); `news`, if given, keeps the later one. That is replaced before
 * it is read, so no fault still marks it.
 */
static void prep_sets_join(struct ls_ctx *ctx, _Atomic uint64_t **news,
			   bool merge)
{
	_Atomic uint64_t *later[LS_MAX_REGIONS];

	for (int r = 0; r < ctx->nregions; r++)
		later[r] = atomic_exchange(&ctx->track.dirty[r],
					   ctx->track.prep_sets[r]);
	ls_svc_quiesce(ctx);
	for (int r = 0; r < ctx->nregions; r++) {
		if (merge)
			ls_set_merge(ctx->track.prep_sets[r], later[r],
				     ctx->regions[r].npages);
		ctx->track.prep_sets[r] = NULL;
		if (news)
			news[r] = later[r];
		else
			free((void *)later[r]);
	}
}

void ls_track_prepared_merge(struct ls_ctx *ctx, _Atomic uint64_t **news,
			     bool merge)
{
	prep_sets_join(ctx, news, merge);
	if (ctx->track.prep == LS_PREP_CALLER_DELTA)
		atomic_store(&ctx->track.granule, ctx->track.refine_granule);
	ls_track_prep_set(ctx, LS_PREP_NONE);
}

void ls_track_late_swap(struct ls_ctx *ctx, _Atomic uint64_t **news)
{
	for (int r = 0; r < ctx->nregions; r++) {
		news[r] = atomic_exchange(&ctx->track.dirty[r],
					  ctx->track.late_sets[r]);
		ctx->track.late_sets[r] = NULL;
	}
	ls_svc_quiesce(ctx);
}

/*
 * Not LS_PREP_CALLER: a full snapshot under the caller's tracking that
 * fails gives its faults' marks back to the chain, so they stay exact;
 * nor the fault-tracked kinds, whose faults are the delta.
 */
void ls_track_prep_set(struct ls_ctx *ctx, enum ls_prep prep)
{
	ctx->track.prep = prep;
	atomic_store(&ctx->track.prep_blocks, prep == LS_PREP_OWN ||
						    prep == LS_PREP_CALLER_DELTA);
}

void ls_track_unprepare(struct ls_ctx *ctx)
{
	enum ls_prep prep = ctx->track.prep;

	ls_track_prep_set(ctx, LS_PREP_NONE);
	ls_track_refine_end(ctx, NULL);
	if (prep == LS_PREP_DELTA) {
		/* What prepare protected again stays so: its pages are in
		 * the sets, and a write there is recorded once more. */
		prep_sets_join(ctx, NULL, true);
		return;
	}
	if (prep == LS_PREP_CALLER_DELTA) {
		/* Nothing stays protected under the caller's tracking; the
		 * reports so far stay the next delta's. */
		(void)ls_track_lift(ctx);
		prep_sets_join(ctx, NULL, false);
		for (int r = 0; r < ctx->nregions; r++)
			ls_set_merge(atomic_load(&ctx->track.dirty[r]),
				     ctx->track.late_sets[r],
				     ctx->regions[r].npages);
		free_sets(ctx, ctx->track.late_sets);
		atomic_store(&ctx->track.granule, ctx->track.refine_granule);
		return;
	}
	if (prep == LS_PREP_NONE || prep == LS_PREP_TRACKED)
		return;
	(void)ls_track_lift(ctx);
	if (prep == LS_PREP_CALLER) {
		ctx->track.caller = true;
		return;
	}
	atomic_store(&ctx->track.granule, ctx->track.prep_granule);
	ls_track_off(ctx);
}

/*
 * ls_track_start and ls_track_start_by_caller. By the caller nothing gets
 * protected, so a lazy restore may run meanwhile: the pages it installs
 * hold what the parent holds, and the caller's log has the writes.
 */
static int track_start(struct ls_ctx *ctx, const uint8_t *parent,
		       bool by_caller)
{
	_Atomic uint64_t *sets[LS_MAX_REGIONS];
	bool lift;
	int ret, busy;

	pthread_mutex_lock(&ctx->lock);
	/* tracked on faults until now: protected pages to lift */
	lift = atomic_load(&ctx->track.on) && !ctx->track.caller;
	busy = ls_ctx_restoring(ctx);
	if (ctx->snap) {
		ret = ls_err(ctx, EBUSY, "tracking: the context has a snapshot");
		goto out;
	}
	if (busy >= 0 && !by_caller) {
		ret = ls_err(ctx, EBUSY,
			     "tracking: region '%s' is still being restored lazily (ls_restore_wait first)",
			     ctx->regions[busy].info.name);
		goto out;
	}
	ret = ls_track_unsettle(ctx, false);
	if (ret)
		goto out;
	ctx->track.caller = false;
	if (!alloc_sets(ctx, sets)) {
		ret = ls_err(ctx, ENOMEM, "tracking: out of memory");
		goto out;
	}
	ret = ls_track_on(ctx, sets);
	if (ret) {
		for (int r = 0; r < ctx->nregions; r++)
			free((void *)sets[r]);
		goto out;
	}
	ret = by_caller ? (lift ? ls_track_lift(ctx) : 0)
			: protect_regions(ctx, false, "tracking");
	if (!ret)
		ret = ls_track_note(ctx);
	if (ret) {
		(void)ls_track_lift(ctx);
		ls_track_off(ctx);
		goto out;
	}
	ctx->track.caller = by_caller;
	ctx->track.has_parent = parent != NULL;
	if (parent)
		memcpy(ctx->track.parent, parent, LS_ID_BYTES);
out:
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

int ls_track_start(struct ls_ctx *ctx, const uint8_t parent[LS_ID_BYTES])
{
	return ctx ? track_start(ctx, parent, false) : -EINVAL;
}

int ls_track_start_by_caller(struct ls_ctx *ctx,
			     const uint8_t parent[LS_ID_BYTES])
{
	return ctx ? track_start(ctx, parent, true) : -EINVAL;
}

int ls_track_stop(struct ls_ctx *ctx)
{
	int ret = 0;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->snap)
		ret = ls_err(ctx, EBUSY, "tracking: the context has a snapshot");
	else if (atomic_load(&ctx->track.on))
		ret = ls_track_unsettle(ctx, false) ?: ls_track_lift(ctx);
	if (!ret)
		ls_track_off(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/*
 * The region holding [start, start + len) when tracking is on and the
 * range is whole `unit`-byte pages of it (0: the region's own pages);
 * else -errno with the message set. ctx->lock held.
 */
static int dirty_region(struct ls_ctx *ctx, const char *fn, uint64_t start,
			uint64_t len, uint64_t unit)
{
	const struct ls_region_info *info;
	uint64_t base;
	int r = ls_region_find(ctx, start);

	if (r < 0 || !len)
		return ls_err(ctx, EINVAL, "%s: %p (+%llu) is not in a region",
			      fn, (void *)(uintptr_t)start,
			      (unsigned long long)len);
	info = &ctx->regions[r].info;
	base = (uint64_t)(uintptr_t)info->addr;
	unit = unit ? unit : info->page_size;
	if (len > info->len - (start - base) || (start | len) & (unit - 1))
		return ls_err(ctx, EINVAL,
			      "%s: %p (+%llu) is not whole %llu-byte pages of region '%s'",
			      fn, (void *)(uintptr_t)start,
			      (unsigned long long)len, (unsigned long long)unit,
			      info->name);
	if (!atomic_load(&ctx->track.on) || !ctx->track.dirty[r])
		return ls_err(ctx, ENOENT, "%s: writes are not tracked", fn);
	return r;
}

/*
 * Where the caller's reports for region r go: the dirty set, or while a
 * delta is prepared under its tracking, the late set. ctx->lock held.
 */
static _Atomic uint64_t *reported_set(struct ls_ctx *ctx, int r)
{
	if (ctx->track.prep == LS_PREP_CALLER_DELTA)
		return ctx->track.late_sets[r];
	return atomic_load(&ctx->track.dirty[r]);
}

int ls_track_dirty(struct ls_ctx *ctx, const void *addr, size_t len)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, off, ps;
	int r;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	r = dirty_region(ctx, "ls_track_dirty", start, len, 0);
	if (r >= 0) {
		ps = ctx->regions[r].info.page_size;
		off = start - (uint64_t)(uintptr_t)ctx->regions[r].info.addr;
		ls_set_mark_range(reported_set(ctx, r), ctx->regions[r].npages,
				  off / ps, (off + len) / ps);
	}
	pthread_mutex_unlock(&ctx->lock);
	return r < 0 ? r : 0;
}

int ls_track_dirty_bitmap(struct ls_ctx *ctx, const void *addr, uint64_t n4k,
			  const uint64_t *bitmap)
{
	uint64_t start = (uint64_t)(uintptr_t)addr, first, ps;
	_Atomic uint64_t *set;
	int r;

	if (!ctx || !bitmap)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	r = n4k > UINT64_MAX / LS_SMALL_PAGE
		? ls_err(ctx, EINVAL, "ls_track_dirty_bitmap: %llu pages",
			 (unsigned long long)n4k)
		: dirty_region(ctx, "ls_track_dirty_bitmap", start,
			       n4k * LS_SMALL_PAGE, LS_SMALL_PAGE);
	if (r < 0)
		goto out;
	ps = ctx->regions[r].info.page_size;
	first = (start - (uint64_t)(uintptr_t)ctx->regions[r].info.addr) /
		LS_SMALL_PAGE;
	set = reported_set(ctx, r);
	for (uint64_t w = 0; w < (n4k + 63) / 64; w++) {
		uint64_t bits = bitmap[w];

		if (w == n4k / 64)
			bits &= (1ull << (n4k % 64)) - 1;
		if (!bits)
			continue;
		/* 4 KiB pages, word-aligned: the word as it is */
		if (ps == LS_SMALL_PAGE && first % 64 == 0) {
			ls_set_or(set, ctx->regions[r].npages, first / 64 + w,
				  bits);
			continue;
		}
		for (; bits; bits &= bits - 1) {
			uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(bits);
			uint64_t page = (first + i) * LS_SMALL_PAGE / ps;

			ls_set_mark_range(set, ctx->regions[r].npages, page,
					  page + 1);
		}
	}
	r = 0;
out:
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

bool ls_track_active(const struct ls_ctx *ctx, uint8_t parent[LS_ID_BYTES])
{
	struct ls_ctx *c = (struct ls_ctx *)ctx;
	bool yes;

	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	yes = atomic_load(&c->track.on) && c->track.has_parent &&
	      !atomic_load(&c->track.broken);
	if (yes && parent)
		memcpy(parent, c->track.parent, LS_ID_BYTES);
	pthread_mutex_unlock(&c->lock);
	return yes;
}

/* ------------------------------------------------------------------ */
/* Changes without a write fault                                       */
/* ------------------------------------------------------------------ */

/*
 * A discard changes memory without a write fault (its pages read zero
 * afterwards), and tracking only sees faults. So each delta's begin looks
 * for what a discard leaves behind since the last tracked begin:
 *  - private anonymous memory loses its uffd-wp bit with its content: a
 *    page that is not write-protected any more (not mapped at all, or
 *    mapped again by a later read or write, without the bit) changed;
 *  - shmem keeps a write-protect marker where a hole was punched
 *    (fallocate, MADV_REMOVE): a page that held data at the last tracked
 *    begin and is a hole now changed (SEEK_DATA/SEEK_HOLE on its file);
 *  - hugetlbfs keeps the marker too: a page mapped at the last tracked
 *    begin and not mapped now changed (pagemap).
 * What this cannot see: a shmem or hugetlb page discarded and read back
 * (the read maps a fresh zero page under the marker) before the next
 * snapshot. docs/api.md puts that under "must avoid", and
 * ls_track_dirty() lets the caller say so.
 */

/* PAGEMAP_SCAN's categories of one /proc/self/pagemap entry. */
static uint64_t entry_categories(uint64_t e)
{
	uint64_t cat = 0;

	if (e & (1ull << 63))
		cat |= PAGE_IS_PRESENT;
	else if (e & (1ull << 62))
		cat |= PAGE_IS_SWAPPED;
	if (cat && !(e & (1ull << 57)))
		cat |= PAGE_IS_WRITTEN;
	return cat;
}

/* Kernels without PAGEMAP_SCAN: one pagemap entry per page. */
static int read_matching(const struct ls_region *reg, uint64_t first,
			 uint64_t n, bool (*want)(uint64_t), uint64_t *out)
{
	uint64_t base = (uint64_t)(uintptr_t)reg->info.addr;
	uint64_t per = reg->info.page_size / LS_SMALL_PAGE, ent[512];
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	for (uint64_t p = 0; p < n && !ret;) {
		/* small pages: 512 entries at a time; huge: the first of each */
		uint64_t k = per == 1 ? n - p : 1;
		off_t off = (off_t)((base / LS_SMALL_PAGE + (first + p) * per) * 8);

		k = k > 512 ? 512 : k;
		if (pread(fd, ent, k * 8, off) != (ssize_t)(k * 8)) {
			ret = -EIO;
			break;
		}
		for (uint64_t i = 0; i < k; i++, p++)
			if (want(entry_categories(ent[i])))
				ls_bits_set(out, p, p + 1);
	}
	close(fd);
	return ret;
}

/* A page that lost its write protection: not mapped, or mapped without it. */
static bool unprotected(uint64_t cat)
{
	return !(cat & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED)) ||
	       (cat & PAGE_IS_WRITTEN);
}

/*
 * Sets in out (bit i: page first + i) the pages [first, first + n) of a
 * region whose categories pass `want`: one PAGEMAP_SCAN walk that reports
 * every page, in runs of equal categories (a filter in the kernel cannot
 * say "not mapped, or written", and two filtered walks would cost twice;
 * the runs are few: protected memory is long runs of present or marker
 * pages).
 */
static int pages_matching(struct ls_ctx *ctx, const struct ls_region *reg,
			  uint64_t first, uint64_t n, bool (*want)(uint64_t),
			  uint64_t *out)
{
	uint64_t ps = reg->info.page_size;
	uint64_t base = (uint64_t)(uintptr_t)reg->info.addr + first * ps;
	uint64_t end = base + n * ps;
	struct page_region vec[512];
	struct pm_scan_arg arg = {0};
	long got;

	if (ctx->pagemap_fd < 0)
		return read_matching(reg, first, n, want, out);
	arg.size = sizeof(arg);
	arg.vec = (uint64_t)(uintptr_t)vec;
	arg.vec_len = 512;
	arg.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN;
	for (arg.start = base; arg.start < end; arg.start = arg.walk_end) {
		uint64_t seen = arg.start;

		arg.end = end;
		got = ioctl(ctx->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (got < 0)
			return -errno;
		for (long i = 0; i < got; seen = vec[i].end, i++) {
			/* what the walk skipped has no page table: not mapped */
			if (vec[i].start > seen && want(0))
				ls_bits_set(out, (seen - base) / ps,
					 (vec[i].start - base) / ps);
			if (want(vec[i].categories))
				ls_bits_set(out, (vec[i].start - base) / ps,
					 (vec[i].end - base + ps - 1) / ps);
		}
		if (arg.walk_end > seen && want(0))
			ls_bits_set(out, (seen - base) / ps,
				 (arg.walk_end - base) / ps);
		if (arg.walk_end <= arg.start)
			break;
	}
	return 0;
}

static bool present(uint64_t cat)
{
	return cat & PAGE_IS_PRESENT;
}

bool ls_page_protected(struct ls_ctx *ctx, int region, uint64_t page)
{
	uint64_t out = 0;

	return !pages_matching(ctx, &ctx->regions[region], page, 1,
			       unprotected, &out) &&
	       !(out & 1);
}

int ls_pages_present(struct ls_ctx *ctx, int region, uint64_t first,
		     uint64_t n, uint64_t *out)
{
	return pages_matching(ctx, &ctx->regions[region], first, n, present,
			      out);
}

/* Shmem and hugetlbfs: the pages holding data now. */
static int region_held(struct ls_ctx *ctx, const struct ls_region *reg,
		       uint64_t *out)
{
	if (reg->seek_fd >= 0)
		return ls_seek_data(reg->seek_fd, reg->file_off, reg->npages,
				    reg->info.page_size, 0, out);
	return pages_matching(ctx, reg, 0, reg->npages, present, out);
}

static int scan_failed(struct ls_ctx *ctx, const struct ls_region *reg,
		       int ret)
{
	return ls_err(ctx, -ret,
		      "tracking: looking for discarded pages in region '%s' (%s): %s",
		      reg->info.name,
		      reg->seek_fd >= 0 ? "lseek SEEK_DATA/SEEK_HOLE"
					: "/proc/self/pagemap",
		      strerror(-ret));
}

int ls_track_note(struct ls_ctx *ctx)
{
	for (int r = 0; r < ctx->nregions; r++) {
		const struct ls_region *reg = &ctx->regions[r];
		uint64_t *now;
		int ret;

		free(ctx->track.held[r]);
		ctx->track.held[r] = NULL;
		if (reg->info.type == LS_MEM_ANON)
			continue;
		now = calloc(1, ls_bitmap_bytes(reg->npages));
		if (!now)
			return ls_err(ctx, ENOMEM, "tracking: out of memory");
		ret = region_held(ctx, reg, now);
		if (ret) {
			free(now);
			return scan_failed(ctx, reg, ret);
		}
		ctx->track.held[r] = now;
	}
	return 0;
}

/* Every page of word w of a dirty set is set (the last word: its pages). */
static bool word_full(_Atomic uint64_t *set, uint64_t w, uint64_t npages)
{
	uint64_t want = ~0ull;

	if (w == npages / 64 && npages % 64)
		want = (1ull << (npages % 64)) - 1;
	return (atomic_load_explicit(&set[w], memory_order_relaxed) & want) ==
	       want;
}

/* Past this many runs of words to look at, one walk of the whole region. */
#define RESCAN_MAX_RUNS 256

/*
 * Anonymous: only the words of 64 pages that hold a page not yet in the
 * set need a look (a page in the set is in the delta whatever happened to
 * it). After a busy interval the working set is whole words of 4 KiB
 * PTEs, the slow part of a walk; what is left is mostly PMD-mapped.
 */
static int anon_unprotected(struct ls_ctx *ctx, const struct ls_region *reg,
			    _Atomic uint64_t *set, uint64_t *now)
{
	uint64_t words = ls_bitmap_bytes(reg->npages) / 8, runs = 0, e;

	for (uint64_t w = 0; w < words; w++)
		runs += !word_full(set, w, reg->npages) &&
			(!w || word_full(set, w - 1, reg->npages));
	if (runs > RESCAN_MAX_RUNS)
		return pages_matching(ctx, reg, 0, reg->npages, unprotected,
				      now);
	for (uint64_t w = 0; w < words; w = e) {
		uint64_t first = w * 64, end;
		int ret;

		for (e = w; e < words && !word_full(set, e, reg->npages); e++)
			;
		if (e == w) {
			e++;
			continue;
		}
		end = e * 64 < reg->npages ? e * 64 : reg->npages;
		ret = pages_matching(ctx, reg, first, end - first, unprotected,
				     now + w);
		if (ret)
			return ret;
	}
	return 0;
}

int ls_track_rescan(struct ls_ctx *ctx, bool with_anon,
		    uint64_t *const *scan)
{
	for (int r = 0; r < ctx->nregions; r++) {
		const struct ls_region *reg = &ctx->regions[r];
		_Atomic uint64_t *set = atomic_load(&ctx->track.dirty[r]);
		uint64_t *held = ctx->track.held[r], *now, words;
		bool anon = reg->info.type == LS_MEM_ANON, mine;
		int ret;

		if (!set || (anon && !with_anon))
			continue;
		if (!anon && !held)
			return ls_err(ctx, EINVAL,
				      "tracking: region '%s' has no record of its pages at the last snapshot; take a full snapshot",
				      reg->info.name);
		words = ls_bitmap_bytes(reg->npages) / 8;
		mine = anon && scan && scan[r];
		now = mine ? memset(scan[r], 0, words * 8) : calloc(words, 8);
		if (!now)
			return ls_err(ctx, ENOMEM, "tracking: out of memory");
		ret = anon ? anon_unprotected(ctx, reg, set, now)
			   : region_held(ctx, reg, now);
		if (ret) {
			if (!mine)
				free(now);
			return scan_failed(ctx, reg, ret);
		}
		for (uint64_t w = 0; w < words; w++) {
			uint64_t changed = anon ? now[w] : held[w] & ~now[w];

			ls_set_or(set, reg->npages, w, changed);
		}
		if (anon) {
			if (!mine)
				free(now);
		} else {
			free(held);
			ctx->track.held[r] = now;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Asynchronous tracking between snapshots                             */
/* ------------------------------------------------------------------ */

/* The asynchronous descriptor, opened at the first settle. */
static int auffd_open(struct ls_ctx *ctx)
{
	struct uffdio_api api = {
	    .api = UFFD_API,
	    .features = UFFD_FEATURE_WP_ASYNC |
			(ctx->uffd_features & (UFFD_FEATURE_WP_UNPOPULATED |
					       UFFD_FEATURE_WP_HUGETLBFS_SHMEM)),
	};
	char msg[LS_ERRMSG_MAX];
	int fd;

	if (ctx->track.auffd >= 0)
		return 0;
	fd = ls_uffd_new(msg, sizeof(msg));
	if (fd < 0)
		return ls_err(ctx, -fd, "tracking: %s", msg);
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;

		close(fd);
		return ls_err(ctx, err,
			      "tracking: ioctl(UFFDIO_API, WP_ASYNC features 0x%llx): %s",
			      (unsigned long long)api.features, strerror(err));
	}
	ctx->track.auffd = fd;
	return 0;
}

/*
 * Region r leaves descriptor `from` for `to` (unregistering lifts its
 * protection) and, if asked, is protected there. On failure it is put
 * back on `from`, unprotected. Writers quiesced.
 */
static int move_region(struct ls_ctx *ctx, int r, int from, int to,
		       bool protect)
{
	const struct ls_region_info *info = &ctx->regions[r].info;
	uint64_t start = (uint64_t)(uintptr_t)info->addr;
	const char *what = "UFFDIO_UNREGISTER";
	int ret;

	ret = ls_uffd_unregister(from, start, info->len);
	if (!ret) {
		what = "UFFDIO_REGISTER";
		ret = ls_uffd_register(to, start, info->len,
				       UFFDIO_REGISTER_MODE_WP, NULL);
		if (ret)
			ls_uffd_register(from, start, info->len,
					 UFFDIO_REGISTER_MODE_WP, NULL);
	}
	if (!ret && protect) {
		what = "UFFDIO_WRITEPROTECT";
		ret = ls_uffd_wp(to, start, info->len, true);
	}
	if (ret)
		return ls_err(ctx, ret,
			      "tracking: moving region '%s' to the %s descriptor: ioctl(%s): %s",
			      info->name, to == ctx->uffd ? "fault" : "asynchronous",
			      what, strerror(-ret));
	return 0;
}

int ls_track_settle(struct ls_ctx *ctx)
{
	int ret = 0, r;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!atomic_load(&ctx->track.on)) {
		ret = ls_err(ctx, ENOENT, "ls_track_settle: writes are not tracked");
		goto out;
	}
	if (atomic_load(&ctx->armed) || ctx->track.prep != LS_PREP_NONE) {
		ret = ls_err(ctx, EBUSY, "ls_track_settle: a snapshot is %s",
			     atomic_load(&ctx->armed) ? "active" : "prepared");
		goto out;
	}
	if (ctx->track.async)
		goto out;
	if (ctx->track.caller) {
		ret = ls_err(ctx, EINVAL,
			     "ls_track_settle: tracking is the caller's (ls_track_by_caller)");
		goto out;
	}
	if (!(ctx->features & LS_FEAT_WP_ASYNC) || ctx->pagemap_fd < 0) {
		ret = ls_err(ctx, EOPNOTSUPP,
			     "ls_track_settle: this kernel lacks %s (Linux >= 6.7); writes stay tracked by write faults",
			     ctx->pagemap_fd < 0 ? "PAGEMAP_SCAN"
						 : "UFFD_FEATURE_WP_ASYNC");
		goto out;
	}
	ret = auffd_open(ctx);
	for (r = 0; !ret && r < ctx->nregions; r++)
		ret = move_region(ctx, r, ctx->uffd, ctx->track.auffd, true);
	if (ret) {
		/* Back to write faults: the regions moved, then the one that
		 * failed (on the fault descriptor already, unprotected). */
		for (int m = 0; m < r - 1; m++)
			move_region(ctx, m, ctx->track.auffd, ctx->uffd, true);
		if (r > 0)
			ls_uffd_wp(ctx->uffd,
				   (uint64_t)(uintptr_t)ctx->regions[r - 1].info.addr,
				   ctx->regions[r - 1].info.len, true);
		goto out;
	}
	ctx->track.async = true;
out:
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/*
 * Caller's tracking: no protection between snapshots. A write fault that
 * races the lift is recorded and resolved by the fault service as usual;
 * the wake is for one that the lift overtook. ctx->lock held.
 */
int ls_track_lift(struct ls_ctx *ctx)
{
	int ret = 0;

	for (int r = 0; r < ctx->nregions; r++) {
		const struct ls_region_info *info = &ctx->regions[r].info;
		int err = ls_uffd_lift(ctx->uffd, (uint64_t)(uintptr_t)info->addr,
				       info->len, info->page_size);

		if (err && !ret)
			ret = ls_err(ctx, err,
				     "tracking: ioctl(UFFDIO_WRITEPROTECT) lifting region '%s': %s",
				     info->name, strerror(-err));
	}
	return ret;
}

int ls_track_by_caller(struct ls_ctx *ctx)
{
	int ret = 0;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	if (!atomic_load(&ctx->track.on))
		ret = ls_err(ctx, ENOENT,
			     "ls_track_by_caller: writes are not tracked");
	else if (atomic_load(&ctx->armed) || ctx->track.prep != LS_PREP_NONE)
		ret = ls_err(ctx, EBUSY, "ls_track_by_caller: a snapshot is %s",
			     atomic_load(&ctx->armed) ? "active" : "prepared");
	else if (!ctx->track.caller && !(ret = ls_track_unsettle(ctx, false))) {
		/* Even if the lift fails part way: the pages still protected
		 * record their writes as before. */
		ctx->track.caller = true;
		ret = ls_track_lift(ctx);
	}
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/*
 * The pages written since the settle lost their protection (as did the
 * anonymous ones discarded: ls_track_rescan() counts those as changed
 * too): they join the dirty sets. Then the memory goes back to the fault
 * descriptor, protected again if `protect` (tracking goes on there, or a
 * snapshot arms). Writers quiesced. A failure leaves the sets untrusted.
 */
int ls_track_unsettle(struct ls_ctx *ctx, bool protect)
{
	int ret = 0;

	if (!ctx->track.async)
		return 0;
	for (int r = 0; r < ctx->nregions; r++) {
		const struct ls_region *reg = &ctx->regions[r];
		_Atomic uint64_t *set = atomic_load(&ctx->track.dirty[r]);
		uint64_t words = ls_bitmap_bytes(reg->npages) / 8;
		uint64_t *now = calloc(words, 8);
		int err;

		err = now ? pages_matching(ctx, reg, 0, reg->npages,
					   unprotected, now)
			  : -ENOMEM;
		if (err) {
			ret = ret ?: scan_failed(ctx, reg, err);
		} else {
			for (uint64_t w = 0; set && w < words; w++)
				ls_set_or(set, reg->npages, w, now[w]);
		}
		free(now);
		err = move_region(ctx, r, ctx->track.auffd, ctx->uffd, protect);
		ret = ret ?: err;
	}
	ctx->track.async = false;
	if (ret)
		atomic_store(&ctx->track.broken, true);
	return ret;
}
