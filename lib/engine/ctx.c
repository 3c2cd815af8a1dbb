/* SPDX-License-Identifier: MIT */
/*
 * The context: one userfaultfd per context, API negotiation and run-time
 * probes of every feature the engine may use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

uint64_t ls_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int ls_err(struct ls_ctx *ctx, int err, const char *fmt, ...)
{
	va_list ap;

	if (ctx) {
		pthread_mutex_lock(&ctx->errlock);
		va_start(ap, fmt);
		vsnprintf(ctx->err, sizeof(ctx->err), fmt, ap);
		va_end(ap);
		pthread_mutex_unlock(&ctx->errlock);
	}
	return err > 0 ? -err : err;
}

void ls_err_copy(struct ls_ctx *ctx, const char *msg)
{
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->errlock);
	snprintf(ctx->err, sizeof(ctx->err), "%s", msg);
	pthread_mutex_unlock(&ctx->errlock);
}

static void errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errbuf || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

/*
 * A new userfaultfd: the syscall first; where it is refused (a seccomp
 * filter, vm.unprivileged_userfaultfd) the /dev/userfaultfd device. Not
 * UFFD_USER_MODE_ONLY: KVM touches guest memory from kernel mode and those
 * faults must reach us too.
 */
int ls_uffd_new(char *errbuf, size_t errlen)
{
	int fd, dev, err;

	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	err = errno;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		errbuf_set(errbuf, errlen,
			   "userfaultfd(): %s; open(/dev/userfaultfd): %s",
			   strerror(err), strerror(errno));
		return -err;
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = errno;
	close(dev);
	if (fd < 0) {
		errbuf_set(errbuf, errlen,
			   "ioctl(USERFAULTFD_IOC_NEW) on /dev/userfaultfd: %s",
			   strerror(err));
		return -err;
	}
	return fd;
}

/*
 * UFFDIO_API may be issued once per descriptor, and asking for a feature the
 * kernel lacks fails the call: ask a throw-away descriptor what exists first.
 */
static int uffd_supported(uint64_t *features, char *errbuf, size_t errlen)
{
	struct uffdio_api api = {.api = UFFD_API};
	int fd, err;

	fd = ls_uffd_new(errbuf, errlen);
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		err = errno;
		close(fd);
		errbuf_set(errbuf, errlen, "ioctl(UFFDIO_API): %s",
			   strerror(err));
		return -err;
	}
	close(fd);
	*features = api.features;
	return 0;
}

/* A trial PAGEMAP_SCAN over one page of our own stack. */
static int pagemap_probe(void)
{
	struct page_region vec[1];
	struct pm_scan_arg arg = {0};
	uint64_t page = (uint64_t)(uintptr_t)vec & ~(LS_SMALL_PAGE - 1);
	int fd;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	arg.size = sizeof(arg);
	arg.start = page;
	arg.end = page + LS_SMALL_PAGE;
	arg.vec = (uint64_t)(uintptr_t)vec;
	arg.vec_len = 1;
	arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
	arg.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
	if (ioctl(fd, PAGEMAP_SCAN, &arg) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static unsigned features_from_uffd(uint64_t f)
{
	unsigned out = 0;

	if (f & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
		out |= LS_FEAT_WP;
	if (f & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
		out |= LS_FEAT_WP_SHMEM_HUGETLB;
	if (f & UFFD_FEATURE_WP_UNPOPULATED)
		out |= LS_FEAT_WP_UNPOPULATED;
	if (f & UFFD_FEATURE_WP_ASYNC)
		out |= LS_FEAT_WP_ASYNC;
	if (f & UFFD_FEATURE_MISSING_SHMEM)
		out |= LS_FEAT_MISSING_SHMEM;
	if (f & UFFD_FEATURE_MISSING_HUGETLBFS)
		out |= LS_FEAT_MISSING_HUGETLB;
	if (f & UFFD_FEATURE_EVENT_REMOVE)
		out |= LS_FEAT_EVENT_REMOVE;
	return out;
}

/* Opens the context's descriptor with every feature the engine uses. */
static int ctx_open_uffd(struct ls_ctx *ctx, bool no_events, char *errbuf,
			 size_t errlen)
{
	/* WP_ASYNC is only probed: it would resolve faults behind our back. */
	const uint64_t wanted = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
				UFFD_FEATURE_WP_UNPOPULATED |
				UFFD_FEATURE_MISSING_SHMEM |
				UFFD_FEATURE_MISSING_HUGETLBFS |
				UFFD_FEATURE_EVENT_REMOVE;
	struct uffdio_api api = {.api = UFFD_API};
	uint64_t have = 0;
	bool events;
	int ret;

	ret = uffd_supported(&have, errbuf, errlen);
	if (ret)
		return ret;
	if (!(have & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
		errbuf_set(errbuf, errlen,
			   "userfaultfd write-protect is not supported by this "
			   "kernel (features 0x%llx; needs Linux >= 5.7)",
			   (unsigned long long)have);
		return -ENOTSUP;
	}
	ctx->uffd = ls_uffd_new(errbuf, errlen);
	if (ctx->uffd < 0)
		return ctx->uffd;
	api.features = have & wanted;
	if (no_events)
		api.features &= ~(uint64_t)UFFD_FEATURE_EVENT_REMOVE;
	/* What is asked for: UFFDIO_API answers with all it supports. */
	events = api.features & UFFD_FEATURE_EVENT_REMOVE;
	if (ioctl(ctx->uffd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		errbuf_set(errbuf, errlen,
			   "ioctl(UFFDIO_API, features 0x%llx): %s",
			   (unsigned long long)(have & wanted), strerror(-ret));
		return ret;
	}
	ctx->uffd_features = api.features;
	ctx->features = features_from_uffd(have);
	ctx->events = events;
	return 0;
}

/*
 * With discard events, a madvise(MADV_DONTNEED, MADV_FREE, MADV_REMOVE)
 * over a registered region waits until the event is read: the fault thread
 * runs for as long as the context does, not only while someone needs
 * faults served.
 */
static int ctx_start_events(struct ls_ctx *ctx, char *errbuf, size_t errlen)
{
	int ret;

	if (!ctx->events) /* set before the thread, which reads it */
		return 0;
	pthread_mutex_lock(&ctx->lock);
	ret = ls_svc_get(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (ret) {
		ctx->events = false;
		errbuf_set(errbuf, errlen, "%s", ctx->err);
	}
	return ret;
}

int ls_ctx_create(struct ls_ctx **ctxp, char *errbuf, size_t errlen)
{
	return ls_ctx_create_opts(ctxp, NULL, errbuf, errlen);
}

static int check_ctx_opts(const struct ls_ctx_opts *o, char *errbuf,
			  size_t errlen)
{
	if (!o)
		return 0;
	if (o->flags & ~(uint32_t)LS_CTX_NO_DISCARD_EVENTS) {
		errbuf_set(errbuf, errlen,
			   "ls_ctx_create_opts: unknown flags 0x%x",
			   (unsigned)(o->flags &
				      ~(uint32_t)LS_CTX_NO_DISCARD_EVENTS));
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]);
	     i++)
		if (o->reserved[i]) {
			errbuf_set(errbuf, errlen,
				   "ls_ctx_create_opts: reserved[%zu] is not zero",
				   i);
			return -EINVAL;
		}
	return 0;
}

int ls_ctx_create_opts(struct ls_ctx **ctxp, const struct ls_ctx_opts *opts,
		       char *errbuf, size_t errlen)
{
	struct ls_ctx *ctx;
	int ret;

	errbuf_set(errbuf, errlen, "%s", "");
	if (!ctxp) {
		errbuf_set(errbuf, errlen, "ls_ctx_create: ctxp is NULL");
		return -EINVAL;
	}
	*ctxp = NULL;
	ret = check_ctx_opts(opts, errbuf, errlen);
	if (ret)
		return ret;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		errbuf_set(errbuf, errlen, "ls_ctx_create: out of memory");
		return -ENOMEM;
	}
	ctx->uffd = -1;
	ctx->pagemap_fd = -1;
	ctx->track.auffd = -1;
	ctx->svc.stop_fd = -1;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_mutex_init(&ctx->errlock, NULL);
	pthread_rwlock_init(&ctx->regions_rw, NULL);
	ret = ctx_open_uffd(ctx, opts && (opts->flags & LS_CTX_NO_DISCARD_EVENTS),
			    errbuf, errlen);
	if (!ret)
		ret = ctx_start_events(ctx, errbuf, errlen);
	if (ret) {
		ls_ctx_destroy(ctx);
		return ret;
	}
	ctx->pagemap_fd = pagemap_probe();
	if (ctx->pagemap_fd >= 0)
		ctx->features |= LS_FEAT_PAGEMAP_SCAN;
	*ctxp = ctx;
	return 0;
}

void ls_ctx_destroy(struct ls_ctx *ctx)
{
	struct ls_snapshot *snap;
	struct ls_restore *r;

	if (!ctx)
		return;
	/* A running snapshot is cancelled and waited for, then let go. */
	pthread_mutex_lock(&ctx->lock);
	snap = ctx->snap;
	pthread_mutex_unlock(&ctx->lock);
	if (snap) {
		ls_snapshot_cancel(snap);
		ls_snapshot_wait(snap);
		ls_snapshot_detach(snap);
	}
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		r = ctx->nrestores ? ctx->restores[0] : NULL;
		pthread_mutex_unlock(&ctx->lock);
		if (!r)
			break;
		ls_restore_prefetch(r); /* a held one could not end */
		ls_restore_wait(r);
		ls_restore_detach(r);
	}
	ls_track_stop(ctx);
	ls_track_free_held(ctx);
	while (ctx->nregions)
		ls_region_remove(ctx, ctx->nregions - 1);
	if (ctx->events) { /* nothing is registered: no event can come */
		pthread_mutex_lock(&ctx->lock);
		ls_svc_put(ctx);
		pthread_mutex_unlock(&ctx->lock);
	}
	if (ctx->uffd >= 0)
		close(ctx->uffd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);
	if (ctx->track.auffd >= 0)
		close(ctx->track.auffd);
	ls_bufs_free(ctx);
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->errlock);
	pthread_rwlock_destroy(&ctx->regions_rw);
	free(ctx);
}

const char *ls_ctx_error(const struct ls_ctx *ctx)
{
	return ctx ? ctx->err : "";
}

unsigned ls_ctx_features(const struct ls_ctx *ctx)
{
	return ctx ? ctx->features : 0;
}
