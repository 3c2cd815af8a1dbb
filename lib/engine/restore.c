/* SPDX-License-Identifier: MIT */
/*
 * Restore mechanics. EAGER copies every non-zero page of the source into the
 * region before returning. LAZY registers the region for missing faults and
 * returns at once: a touch of a page not yet there is served first (the
 * fault thread reads it from the source and installs it with UFFDIO_COPY),
 * while a prefetch thread installs the rest in order. UFFDIO_COPY never
 * overwrites a page (EEXIST), so whichever of the two comes second simply
 * skips it. When every page is in, the region is write-protect registered
 * only, as before, and can be snapshotted again. LAZY_HOLD is LAZY with
 * the prefetch thread waiting for ls_restore_prefetch(): faults are served
 * from the start, but the CPU stays with a caller that has more to set up
 * before the memory's user runs (a VMM loading vCPU state on a small
 * machine, where a prefetch at full speed doubles its time to a guest
 * running).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PREFETCH_BYTES (256ul << 10)

struct ls_restore {
	struct ls_ctx *ctx;
	int region;
	char name[LS_NAME_MAX];
	uint64_t base, len, npages;
	size_t ps;
	enum ls_mem_type type;
	struct ls_source *src;
	uint32_t src_region;
	bool lazy;
	atomic_bool finishing; /* registration is being changed back */
	bool held;	       /* under lock: LAZY_HOLD, prefetch not yet let go */
	pthread_cond_t go;     /* with lock: held became false */

	struct ls_done end;   /* the prefetch thread's (or eager fill's) end */
	pthread_mutex_t lock; /* result, err */
	int result;
	atomic_bool failed;
	char err[LS_ERRMSG_MAX];

	_Atomic uint64_t pages_done, faults;
	_Atomic uint64_t hist[LS_HIST_BUCKETS], fault_max;
	uint64_t start_ns;
	_Atomic uint64_t end_ns;
	unsigned char *fbuf; /* the fault thread's page */
	unsigned char *pbuf; /* a prefetch chunk */
	uint64_t chunk_pages;
};

static void restore_fail(struct ls_restore *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void restore_fail(struct ls_restore *r, int code, const char *fmt, ...)
{
	bool expect = false;
	va_list ap;

	if (!atomic_compare_exchange_strong(&r->failed, &expect, true))
		return;
	pthread_mutex_lock(&r->lock);
	r->result = code > 0 ? -code : code;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&r->lock);
}

static bool src_known_zero(struct ls_restore *r, uint64_t page)
{
	return r->src->ops->is_zero &&
	       r->src->ops->is_zero(r->src, r->src_region, page);
}

static int src_read(struct ls_restore *r, uint64_t page, void *buf,
		    uint64_t n)
{
	int ret = r->src->ops->read_pages(r->src, r->src_region, page, buf, n);

	if (ret)
		restore_fail(r, ret,
			     "restore of region '%s': reading pages %llu-%llu from the source: %s",
			     r->name, (unsigned long long)page,
			     (unsigned long long)(page + n - 1),
			     strerror(ret < 0 ? -ret : ret));
	return ret;
}

/*
 * UFFDIO_COPY installs 4 KiB pages even where huge pages could be: note the
 * 2 MiB ranges it fills, so that the next snapshot collapses them before
 * its pause (as for ranges a snapshot's faults split) and arms them at the
 * huge-page rate.
 */
static void note_small_pages(struct ls_restore *r, uint64_t dst, uint64_t len)
{
	uint64_t off = dst - r->base, end = off + len;

	for (uint64_t c = off / LS_HUGE_2M; c * LS_HUGE_2M < end; c++)
		ls_note_split(r->ctx, (uint32_t)r->region, c * LS_HUGE_2M);
}

/* Installs len bytes at dst, skipping pages that are there already. */
static int copy_run(struct ls_restore *r, uint64_t dst, const void *src,
		    uint64_t len)
{
	const unsigned char *s = src;
	uint64_t done;
	int ret;

	while (len) {
		ret = ls_uffd_copy(r->ctx->uffd, dst, s, len, &done);
		if (ret == -EEXIST) {
			done = r->ps; /* served by a fault meanwhile */
		} else if (ret && ret != -EAGAIN) {
			if (atomic_load(&r->finishing))
				return 0;
			restore_fail(r, ret,
				     "restore of region '%s': ioctl(UFFDIO_COPY) at +0x%llx: %s",
				     r->name, (unsigned long long)(dst - r->base),
				     strerror(-ret));
			return ret;
		}
		note_small_pages(r, dst, done);
		dst += done;
		s += done;
		len -= done;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Missing faults (on the context's fault thread)                      */
/* ------------------------------------------------------------------ */

static int serve_zero(struct ls_restore *r, uint64_t dst)
{
	int ret;

	if (r->type == LS_MEM_HUGETLB) {
		memset(r->fbuf, 0, r->ps);
		return copy_run(r, dst, r->fbuf, r->ps);
	}
	ret = ls_uffd_zeropage(r->ctx->uffd, dst, r->ps);
	return ret == -EEXIST ? 0 : ret;
}

void ls_restore_fault(struct ls_restore *r, uint64_t addr)
{
	uint64_t page = (addr - r->base) / r->ps;
	uint64_t dst = r->base + page * r->ps;
	uint64_t t0 = ls_now_ns();
	int ret = 0;

	atomic_fetch_add(&r->faults, 1);
	if (atomic_load(&r->failed)) {
		/* The prefetch thread is ending the restore: it wakes all. */
	} else if (src_known_zero(r, page)) {
		ret = serve_zero(r, dst);
	} else if (!src_read(r, page, r->fbuf, 1)) {
		ret = copy_run(r, dst, r->fbuf, r->ps);
	}
	if (ret && !atomic_load(&r->finishing))
		restore_fail(r, ret,
			     "restore of region '%s': serving a fault at +0x%llx: %s",
			     r->name, (unsigned long long)(dst - r->base),
			     strerror(-ret));
	ls_uffd_wake(r->ctx->uffd, dst, r->ps);
	ls_hist_add(r->hist, &r->fault_max, ls_now_ns() - t0);
}

/* ------------------------------------------------------------------ */
/* Filling                                                             */
/* ------------------------------------------------------------------ */

/*
 * Fills pages [first, first+n): reads them (unless the source knows them
 * all zero) and installs the runs of non-zero pages. Zero pages are left
 * alone: untouched memory reads as zero.
 */
static int fill_chunk(struct ls_restore *r, uint64_t first, uint64_t n)
{
	uint64_t i = 0, run;
	bool any = false;
	int ret;

	for (uint64_t k = 0; k < n && !any; k++)
		any = !src_known_zero(r, first + k);
	if (!any)
		return 0;
	ret = src_read(r, first, r->pbuf, n);
	if (ret)
		return ret;
	while (i < n) {
		if (ls_page_is_zero(r->pbuf + i * r->ps, r->ps)) {
			i++;
			continue;
		}
		for (run = 1; i + run < n &&
			      !ls_page_is_zero(r->pbuf + (i + run) * r->ps, r->ps);
		     run++)
			;
		if (r->lazy)
			ret = copy_run(r, r->base + (first + i) * r->ps,
				       r->pbuf + i * r->ps, run * r->ps);
		else
			memcpy((void *)(uintptr_t)(r->base + (first + i) * r->ps),
			       r->pbuf + i * r->ps, run * r->ps);
		if (ret)
			return ret;
		i += run;
	}
	return 0;
}

static void fill_all(struct ls_restore *r)
{
	for (uint64_t page = 0; page < r->npages; page += r->chunk_pages) {
		uint64_t n = r->npages - page;

		if (n > r->chunk_pages)
			n = r->chunk_pages;
		if (atomic_load(&r->failed) || fill_chunk(r, page, n))
			return;
		atomic_fetch_add(&r->pages_done, n);
	}
}

/* Back to write-protect registration only; missing pages now read zero. */
static void lazy_finish(struct ls_restore *r)
{
	struct ls_ctx *ctx = r->ctx;
	uint64_t ioctls;
	int ret;

	atomic_store(&r->finishing, true);
	ret = ls_uffd_unregister(ctx->uffd, r->base, r->len);
	if (!ret)
		ret = ls_uffd_register(ctx->uffd, r->base, r->len,
				       UFFDIO_REGISTER_MODE_WP, &ioctls);
	if (ret)
		restore_fail(r, ret,
			     "restore of region '%s': registering it for write-protect again: %s",
			     r->name, strerror(-ret));
	atomic_store(&ctx->regions[r->region].restore, NULL);
	ls_svc_quiesce(ctx);
	pthread_mutex_lock(&ctx->lock);
	ls_svc_put(ctx);
	pthread_mutex_unlock(&ctx->lock);
}

static void restore_done(struct ls_restore *r)
{
	int result;

	atomic_store(&r->end_ns, ls_now_ns());
	pthread_mutex_lock(&r->lock);
	result = r->result;
	pthread_mutex_unlock(&r->lock);
	ls_done_set(&r->end, result);
}

static void *prefetch_main(void *arg)
{
	struct ls_restore *r = arg;

	pthread_mutex_lock(&r->lock);
	while (r->held)
		pthread_cond_wait(&r->go, &r->lock);
	pthread_mutex_unlock(&r->lock);
	fill_all(r);
	lazy_finish(r);
	restore_done(r);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

static int lazy_register(struct ls_restore *r, struct ls_ctx *ctx)
{
	uint64_t need = 1ull << _UFFDIO_COPY, ioctls = 0;
	int ret;

	if ((r->type == LS_MEM_SHMEM &&
	     !(ctx->features & LS_FEAT_MISSING_SHMEM)) ||
	    (r->type == LS_MEM_HUGETLB &&
	     !(ctx->features & LS_FEAT_MISSING_HUGETLB)))
		return ls_err(ctx, ENOTSUP,
			      "restore of region '%s': this kernel cannot serve missing faults on its memory type",
			      r->name);
	ret = ls_uffd_unregister(ctx->uffd, r->base, r->len);
	if (!ret)
		ret = ls_uffd_register(ctx->uffd, r->base, r->len,
				       UFFDIO_REGISTER_MODE_MISSING |
					       UFFDIO_REGISTER_MODE_WP,
				       &ioctls);
	if (ret || (ioctls & need) != need) {
		if (!ret)
			ret = -ENOTSUP;
		ls_uffd_register(ctx->uffd, r->base, r->len,
				 UFFDIO_REGISTER_MODE_WP, NULL);
		return ls_err(ctx, ret,
			      "restore of region '%s': ioctl(UFFDIO_REGISTER, MISSING|WP): %s",
			      r->name, strerror(-ret));
	}
	return 0;
}

static int lazy_start(struct ls_restore *r, struct ls_ctx *ctx)
{
	pthread_t thread;
	int ret;

	ret = lazy_register(r, ctx);
	if (ret)
		return ret;
	ret = ls_svc_get(ctx);
	if (ret)
		goto out_reg;
	atomic_store(&ctx->regions[r->region].restore, r);
	ret = pthread_create(&thread, NULL, prefetch_main, r);
	if (!ret) {
		pthread_setname_np(thread, "ls-prefetch");
		ls_done_started(&r->end, thread);
		return 0;
	}
	ret = ls_err(ctx, ret, "restore of region '%s': starting a thread: %s",
		     r->name, strerror(ret));
	atomic_store(&ctx->regions[r->region].restore, NULL);
	ls_svc_quiesce(ctx);
	ls_svc_put(ctx);
out_reg:
	ls_uffd_unregister(ctx->uffd, r->base, r->len);
	ls_uffd_register(ctx->uffd, r->base, r->len, UFFDIO_REGISTER_MODE_WP,
			 NULL);
	return ret;
}

static int start_check(struct ls_ctx *ctx, int region, struct ls_source *src,
		       enum ls_restore_mode mode)
{
	if (region < 0 || region >= ctx->nregions)
		return ls_err(ctx, EINVAL, "restore: region index %d does not exist",
			      region);
	if (!src || !src->ops || !src->ops->read_pages)
		return ls_err(ctx, EINVAL, "restore: no source");
	if (mode != LS_RESTORE_EAGER && mode != LS_RESTORE_LAZY &&
	    mode != LS_RESTORE_LAZY_HOLD)
		return ls_err(ctx, EINVAL, "restore: unknown mode %d", (int)mode);
	if (atomic_load(&ctx->armed))
		return ls_err(ctx, EBUSY,
			      "restore of region '%s': a snapshot is running",
			      ctx->regions[region].info.name);
	if (atomic_load(&ctx->track.on) && mode != LS_RESTORE_EAGER)
		return ls_err(ctx, EBUSY,
			      "restore of region '%s': writes are tracked in the context (ls_track_stop first)",
			      ctx->regions[region].info.name);
	if (atomic_load(&ctx->regions[region].restore))
		return ls_err(ctx, EBUSY,
			      "restore of region '%s': a lazy restore of it runs already",
			      ctx->regions[region].info.name);
	if (ctx->nrestores >= LS_MAX_REGIONS)
		return ls_err(ctx, ENOSPC, "restore: too many restores");
	return 0;
}

static struct ls_restore *restore_alloc(struct ls_ctx *ctx, int region,
					struct ls_source *src,
					uint32_t src_region,
					enum ls_restore_mode mode)
{
	const struct ls_region_info *info = &ctx->regions[region].info;
	struct ls_restore *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->ctx = ctx;
	r->region = region;
	memcpy(r->name, info->name, LS_NAME_MAX);
	r->base = (uint64_t)(uintptr_t)info->addr;
	r->len = info->len;
	r->ps = info->page_size;
	r->npages = info->len / info->page_size;
	r->type = info->type;
	r->src = src;
	r->src_region = src_region;
	r->lazy = mode != LS_RESTORE_EAGER;
	r->held = mode == LS_RESTORE_LAZY_HOLD;
	r->chunk_pages = r->ps >= PREFETCH_BYTES ? 1 : PREFETCH_BYTES / r->ps;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->go, NULL);
	ls_done_init(&r->end);
	if (posix_memalign((void **)&r->fbuf, LS_SMALL_PAGE, r->ps) ||
	    posix_memalign((void **)&r->pbuf, LS_SMALL_PAGE,
			   r->chunk_pages * r->ps)) {
		free(r->fbuf);
		free(r);
		return NULL;
	}
	memset(r->fbuf, 0, r->ps); /* faulted in: it serves faults */
	return r;
}

static void restore_free(struct ls_restore *r)
{
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->go);
	ls_done_destroy(&r->end);
	free(r->fbuf);
	free(r->pbuf);
	free(r);
}

int ls_restore_start(struct ls_ctx *ctx, int region, struct ls_source *src,
		     uint32_t src_region, enum ls_restore_mode mode,
		     struct ls_restore **rp)
{
	struct ls_restore *r = NULL;
	int ret;

	if (!ctx || !rp)
		return -EINVAL;
	*rp = NULL;
	pthread_mutex_lock(&ctx->lock);
	ret = start_check(ctx, region, src, mode);
	if (!ret) {
		r = restore_alloc(ctx, region, src, src_region, mode);
		if (!r)
			ret = ls_err(ctx, ENOMEM, "restore: out of memory");
	}
	if (!ret) {
		r->start_ns = ls_now_ns();
		if (r->lazy)
			ret = lazy_start(r, ctx);
	}
	if (!ret)
		ctx->restores[ctx->nrestores++] = r;
	pthread_mutex_unlock(&ctx->lock);
	if (ret) {
		if (r)
			restore_free(r);
		return ret;
	}
	if (!r->lazy) {
		fill_all(r);
		restore_done(r);
		if (r->result) {
			ls_err_copy(ctx, r->err);
			ret = r->result;
			ls_restore_destroy(r);
			return ret;
		}
	}
	*rp = r;
	return 0;
}

int ls_restore_prefetch(struct ls_restore *r)
{
	if (!r)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	r->held = false;
	pthread_cond_broadcast(&r->go);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

int ls_restore_wait(struct ls_restore *r)
{
	int ret;

	if (!r)
		return -EINVAL;
	ret = ls_done_wait(&r->end);
	if (ret)
		ls_err_copy(r->ctx, r->err);
	return ret;
}

int ls_restore_stats(struct ls_restore *r, struct ls_restore_stats *st)
{
	uint64_t hist[LS_HIST_BUCKETS], end;
	int result;

	if (!r || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	st->pages_total = r->npages;
	st->pages_done = atomic_load(&r->pages_done);
	st->faults = atomic_load(&r->faults);
	ls_hist_read(r->hist, hist);
	st->fault_max_ns = atomic_load(&r->fault_max);
	st->fault_p50_ns = ls_hist_pct_capped(hist, 0.5, st->fault_max_ns);
	st->fault_p99_ns = ls_hist_pct_capped(hist, 0.99, st->fault_max_ns);
	end = atomic_load(&r->end_ns);
	st->elapsed_ns = (end ? end : ls_now_ns()) - r->start_ns;
	st->complete = ls_done_is(&r->end, &result) && !result;
	return 0;
}

void ls_restore_detach(struct ls_restore *r)
{
	struct ls_ctx *ctx = r->ctx;

	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->lock);
	for (int i = 0; i < ctx->nrestores; i++) {
		if (ctx->restores[i] != r)
			continue;
		ctx->restores[i] = ctx->restores[--ctx->nrestores];
		break;
	}
	pthread_mutex_unlock(&ctx->lock);
	r->ctx = NULL;
}

void ls_restore_destroy(struct ls_restore *r)
{
	if (!r)
		return;
	ls_restore_prefetch(r); /* a held one could not end */
	ls_restore_wait(r);
	ls_restore_detach(r);
	restore_free(r);
}
