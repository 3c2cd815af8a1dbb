/* SPDX-License-Identifier: MIT */
/*
 * Small shared pieces: generic sink and source helpers, the log2 stall
 * histogram and the zero-page test.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

void ls_sink_set_error(struct ls_sink *sink, const char *fmt, ...)
{
	va_list ap;

	if (!sink)
		return;
	va_start(ap, fmt);
	vsnprintf(sink->error, sizeof(sink->error), fmt, ap);
	va_end(ap);
}

void ls_sink_destroy(struct ls_sink *sink)
{
	if (sink && sink->ops && sink->ops->destroy)
		sink->ops->destroy(sink);
}

void ls_source_destroy(struct ls_source *src)
{
	if (src && src->ops && src->ops->destroy)
		src->ops->destroy(src);
}

static unsigned hist_bucket(uint64_t ns)
{
	return ns ? 63u - (unsigned)__builtin_clzll(ns) : 0;
}

void ls_hist_add(_Atomic uint64_t *hist, _Atomic uint64_t *max, uint64_t ns)
{
	uint64_t old = atomic_load_explicit(max, memory_order_relaxed);

	atomic_fetch_add_explicit(&hist[hist_bucket(ns)], 1,
				  memory_order_relaxed);
	while (ns > old && !atomic_compare_exchange_weak_explicit(
				   max, &old, ns, memory_order_relaxed,
				   memory_order_relaxed))
		;
}

void ls_hist_read(_Atomic uint64_t *hist, uint64_t out[LS_HIST_BUCKETS])
{
	for (int i = 0; i < LS_HIST_BUCKETS; i++)
		out[i] = atomic_load_explicit(&hist[i], memory_order_relaxed);
}

/*
 * The value below which a fraction q of the samples lie, interpolated
 * linearly inside the log2 bucket that holds it.
 */
uint64_t ls_hist_percentile(const uint64_t hist[LS_HIST_BUCKETS], double q)
{
	uint64_t total = 0, seen = 0;
	double target;

	if (!hist || !(q > 0.0) || !(q < 1.0))
		return 0;
	for (int i = 0; i < LS_HIST_BUCKETS; i++)
		total += hist[i];
	if (!total)
		return 0;
	target = q * (double)total;
	for (int i = 0; i < LS_HIST_BUCKETS; i++) {
		double lo, width, frac;

		if (!hist[i] || (double)(seen + hist[i]) < target) {
			seen += hist[i];
			continue;
		}
		lo = i ? (double)(1ull << i) : 0.0;
		width = i ? lo : 2.0;
		frac = (target - (double)seen) / (double)hist[i];
		return (uint64_t)(lo + frac * width);
	}
	return UINT64_MAX;
}

uint64_t ls_hist_pct_capped(const uint64_t hist[LS_HIST_BUCKETS], double q,
			    uint64_t max)
{
	uint64_t v = ls_hist_percentile(hist, q);

	return v > max ? max : v;
}

void *ls_alloc_prefaulted(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_HUGEPAGE);
	if (madvise(p, len, MADV_POPULATE_WRITE))
		memset(p, 0, len); /* kernels before 5.14 */
	return p;
}

/*
 * calloc() hands out untouched pages for large sizes (its own mmap), and
 * the first touch of each then came inside a pause: begin's walk of a
 * 4 GiB region's fresh 128 KiB dirty set took 32 page faults, 0.30-0.37
 * ms of a TCG VM's first pause on this project's PVM hosts (0.03-0.05 ms
 * on later ones, whose bitmaps came from reused heap memory).
 */
void *ls_bitmap_new(uint64_t npages)
{
	size_t len = ls_bitmap_bytes(npages);
	volatile unsigned char *p = calloc(1, len);

	for (size_t i = 0; p && i < len; i += LS_SMALL_PAGE)
		p[i] = 0;
	return (void *)p;
}

void ls_free_prefaulted(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

/* A cached buffer of exactly len bytes, or a new one. */
void *ls_buf_take(struct ls_ctx *ctx, size_t len)
{
	for (int i = 0; ctx && i < LS_BUF_CACHE; i++) {
		void *p = ctx->bufs[i].p;

		if (p && ctx->bufs[i].len == len) {
			ctx->bufs[i].p = NULL;
			return p;
		}
	}
	return ls_alloc_prefaulted(len);
}

/* Keeps p for the next snapshot; a full cache lets its first one go. */
void ls_buf_give(struct ls_ctx *ctx, void *p, size_t len)
{
	int i = 0;

	if (!p)
		return;
	if (!ctx) {
		ls_free_prefaulted(p, len);
		return;
	}
	while (i < LS_BUF_CACHE && ctx->bufs[i].p)
		i++;
	if (i == LS_BUF_CACHE) {
		i = 0;
		ls_free_prefaulted(ctx->bufs[0].p, ctx->bufs[0].len);
	}
	ctx->bufs[i] = (struct ls_buf){.p = p, .len = len};
}

void ls_bufs_free(struct ls_ctx *ctx)
{
	for (int i = 0; i < LS_BUF_CACHE; i++) {
		ls_free_prefaulted(ctx->bufs[i].p, ctx->bufs[i].len);
		ctx->bufs[i].p = NULL;
	}
}

bool ls_page_is_zero(const void *page, size_t len)
{
	const uint64_t *p = page;
	uint64_t acc = 0;

	/* Most non-zero pages differ early: look at the start first. */
	if (p[0] | p[1] | p[len / 16])
		return false;
	for (size_t i = 0; i < len / 8; i += 8) {
		acc |= p[i] | p[i + 1] | p[i + 2] | p[i + 3] | p[i + 4] |
		       p[i + 5] | p[i + 6] | p[i + 7];
		if ((i & 511) == 504 && acc)
			return false;
	}
	return acc == 0;
}

void ls_done_init(struct ls_done *d)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
}

void ls_done_destroy(struct ls_done *d)
{
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
}

void ls_done_started(struct ls_done *d, pthread_t thread)
{
	pthread_mutex_lock(&d->lock);
	d->thread = thread;
	d->started = true;
	pthread_mutex_unlock(&d->lock);
}

void ls_done_set(struct ls_done *d, int result)
{
	pthread_mutex_lock(&d->lock);
	d->result = result;
	d->done = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

bool ls_done_is(struct ls_done *d, int *result)
{
	bool done;

	pthread_mutex_lock(&d->lock);
	done = d->done;
	if (result)
		*result = d->result;
	pthread_mutex_unlock(&d->lock);
	return done;
}

int ls_done_wait(struct ls_done *d)
{
	bool join;
	int ret;

	pthread_mutex_lock(&d->lock);
	while (!d->done)
		pthread_cond_wait(&d->cond, &d->lock);
	join = d->started && !d->joined;
	d->joined = true;
	ret = d->result;
	pthread_mutex_unlock(&d->lock);
	if (join)
		pthread_join(d->thread, NULL);
	return ret;
}

int ls_seek_data(int fd, uint64_t start, uint64_t npages, uint64_t ps,
		 uint64_t max_runs, uint64_t *bits)
{
	off_t pos = (off_t)start, end = (off_t)(start + npages * ps);
	off_t data, hole;
	uint64_t runs = 0;

	while (pos < end) {
		if (max_runs && ++runs > max_runs)
			return -E2BIG;
		data = lseek(fd, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			return 0; /* holes to the end of the file */
		if (data < 0)
			return -errno;
		if (data >= end)
			return 0;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		hole = hole > end ? end : hole;
		ls_bits_set(bits, (uint64_t)(data - (off_t)start) / ps,
			    ((uint64_t)(hole - (off_t)start) + ps - 1) / ps);
		pos = hole;
	}
	return 0;
}
