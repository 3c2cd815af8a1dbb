/* SPDX-License-Identifier: MIT */
/*
 * Write tracking between snapshots, for deltas. The context's one
 * userfaultfd keeps every page that was not written since the last tracked
 * snapshot's begin write-protected; the first write to such a page traps,
 * the fault service sets the page's bit in the region's dirty set and
 * un-protects it, and later writes run free. A delta's begin takes the
 * sets (they are its pages) and installs fresh ones.
 *
 * Why not UFFD_FEATURE_WP_ASYNC (the kernel resolves the fault and
 * PAGEMAP_SCAN reports PAGE_IS_WRITTEN): it is a property of a whole
 * descriptor, and a snapshot needs write faults that wait for it. The
 * memory would have to move from an async descriptor to this one at begin
 * and back at the end; registration is per mapping, so the way back
 * (unregister, register elsewhere, protect) leaves a window in which
 * writes are not recorded, unless the caller stops its writers a second
 * time. docs/engine.md has the numbers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

void ls_track_mark(struct ls_ctx *ctx, uint32_t region, uint64_t page)
{
	_Atomic uint64_t *set = atomic_load(&ctx->track.dirty[region]);

	if (set)
		atomic_fetch_or_explicit(&set[page / 64], 1ull << (page % 64),
					 memory_order_relaxed);
}

void ls_track_fault(struct ls_ctx *ctx, int region, uint64_t addr)
{
	const struct ls_region_info *info = &ctx->regions[region].info;
	uint64_t base = (uint64_t)(uintptr_t)info->addr;
	uint64_t g = atomic_load(&ctx->track.granule);
	uint64_t start, end;

	if (g < info->page_size)
		g = info->page_size;
	start = addr & ~(g - 1);
	end = start + g;
	if (start < base)
		start = base;
	if (end > base + info->len)
		end = base + info->len;
	for (uint64_t p = (start - base) / info->page_size;
	     p < (end - base) / info->page_size; p++)
		ls_track_mark(ctx, (uint32_t)region, p);
	if (ls_uffd_wp(ctx->uffd, start, end - start, false)) {
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

void ls_track_off(struct ls_ctx *ctx)
{
	if (!atomic_load(&ctx->track.on))
		return;
	atomic_store(&ctx->track.on, false);
	swap_sets(ctx, NULL);
	ctx->track.has_parent = false;
	ls_svc_put(ctx);
}

/* Empty dirty sets for every region; false if out of memory. */
static bool alloc_sets(struct ls_ctx *ctx, _Atomic uint64_t **sets)
{
	for (int r = 0; r < ctx->nregions; r++) {
		sets[r] = calloc(1, ls_bitmap_bytes(ctx->regions[r].npages));
		if (!sets[r]) {
			while (r--)
				free((void *)sets[r]);
			return false;
		}
	}
	return true;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* Protects every region (see populate_if_needed() in snapshot.c). */
static int protect_all(struct ls_ctx *ctx, bool protect)
{
	for (int r = 0; r < ctx->nregions; r++) {
		struct ls_region_info *info = &ctx->regions[r].info;
		int ret;

		if (protect && info->type == LS_MEM_ANON &&
		    !(ctx->features & LS_FEAT_WP_UNPOPULATED) &&
		    madvise(info->addr, info->len, MADV_POPULATE_READ))
			return ls_err(ctx, errno,
				      "tracking: madvise(MADV_POPULATE_READ) on region '%s': %s",
				      info->name, strerror(errno));
		ret = ls_uffd_wp(ctx->uffd, (uint64_t)(uintptr_t)info->addr,
				 info->len, protect);
		if (ret)
			return ls_err(ctx, ret,
				      "tracking: ioctl(UFFDIO_WRITEPROTECT) %s region '%s': %s",
				      protect ? "arming" : "lifting",
				      info->name, strerror(-ret));
	}
	return 0;
}

int ls_track_start(struct ls_ctx *ctx, const uint8_t parent[LS_ID_BYTES])
{
	_Atomic uint64_t *sets[LS_MAX_REGIONS];
	int ret, busy;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	busy = ls_ctx_restoring(ctx);
	if (ctx->snap) {
		ret = ls_err(ctx, EBUSY, "tracking: the context has a snapshot");
		goto out;
	}
	if (busy >= 0) {
		ret = ls_err(ctx, EBUSY,
			     "tracking: region '%s' is still being restored lazily (ls_restore_wait first)",
			     ctx->regions[busy].info.name);
		goto out;
	}
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
	ret = protect_all(ctx, true);
	if (ret) {
		protect_all(ctx, false);
		ls_track_off(ctx);
		goto out;
	}
	ctx->track.has_parent = parent != NULL;
	if (parent)
		memcpy(ctx->track.parent, parent, LS_ID_BYTES);
out:
	pthread_mutex_unlock(&ctx->lock);
	return ret;
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
		ret = protect_all(ctx, false);
	if (!ret)
		ls_track_off(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return ret;
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
