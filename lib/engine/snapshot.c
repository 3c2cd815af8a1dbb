/* SPDX-License-Identifier: MIT */
/*
 * Snapshot lifecycle: create (layout to the sink), begin (arm write
 * protection, start the threads), the end (lift protection, blobs, commit or
 * abort) and the queries.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "snap.h"

#define DEFAULT_BATCH (2ul << 20)
#define DEFAULT_COPY_BUFFER (64ul << 20)
#define AUTO_COPY_MIN (4ul << 20)
#define DEFAULT_SPIN_US 0

static const char *snap_name(const struct ls_snapshot *snap, uint32_t r)
{
	return snap->layout[r].name;
}

/* Records the first failure; later ones are consequences. */
static __attribute__((format(printf, 3, 0))) void
snap_failv(struct ls_snapshot *snap, int code, const char *fmt, va_list ap)
{
	bool expect = false;

	if (!atomic_compare_exchange_strong(&snap->failed, &expect, true))
		return;
	pthread_mutex_lock(&snap->lock);
	snap->fail_code = code > 0 ? -code : code;
	vsnprintf(snap->err, sizeof(snap->err), fmt, ap);
	pthread_mutex_unlock(&snap->lock);
	atomic_store(&snap->stop, true);
	snap_wake_writer(snap);
}

void snap_fail(struct ls_snapshot *snap, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	snap_failv(snap, code, fmt, ap);
	va_end(ap);
}

/*
 * A sink callback failed. Its own message (sink->error) is read only at the
 * end, when no other thread can be inside the sink any more.
 */
void snap_fail_sink(struct ls_snapshot *snap, int code, const char *what)
{
	snap_fail(snap, code, "snapshot sink: %s: %s", what,
		  strerror(code < 0 ? -code : code));
	atomic_store(&snap->sink_failed, true);
}

/* At the end (single-threaded): prefer the sink's own words. */
static void snap_take_sink_error(struct ls_snapshot *snap)
{
	if (!atomic_load(&snap->sink_failed) || !snap->sink->error[0])
		return;
	pthread_mutex_lock(&snap->lock);
	snprintf(snap->err, sizeof(snap->err), "snapshot sink: %.230s",
		 snap->sink->error);
	pthread_mutex_unlock(&snap->lock);
}

void snap_wake_writer(struct ls_snapshot *snap)
{
	if (!atomic_load(&snap->writer_waiting))
		return;
	pthread_mutex_lock(&snap->lock);
	pthread_cond_signal(&snap->cond);
	pthread_mutex_unlock(&snap->lock);
}

/* ------------------------------------------------------------------ */
/* Create                                                              */
/* ------------------------------------------------------------------ */

/*
 * AUTO sizes its copy buffer to 1/16 of the memory snapshotted, at least
 * 4 MiB and at most 64 MiB (and never below two of the largest page), so
 * small processes do not pay 64 MiB and large ones stay bounded.
 */
static size_t copy_buffer_size(const struct ls_snapshot_opts *o,
			       uint64_t total_bytes, size_t max_ps)
{
	size_t want;

	if (o->strategy == LS_STRATEGY_WRITE_FIRST)
		return 0;
	if (o->copy_buffer_bytes)
		return o->copy_buffer_bytes;
	if (o->strategy == LS_STRATEGY_COPY)
		return DEFAULT_COPY_BUFFER;
	want = (size_t)(total_bytes / 16);
	if (want < AUTO_COPY_MIN)
		want = AUTO_COPY_MIN;
	if (want > DEFAULT_COPY_BUFFER)
		want = DEFAULT_COPY_BUFFER;
	if (want < 2 * max_ps && max_ps <= LS_HUGE_2M)
		want = 2 * max_ps;
	return want;
}

static int snap_regions_init(struct ls_snapshot *snap, struct ls_ctx *ctx,
			     size_t batch_bytes)
{
	snap->nregions = (uint32_t)ctx->nregions;
	snap->regions = calloc(snap->nregions ? snap->nregions : 1,
			       sizeof(*snap->regions));
	snap->layout = calloc(snap->nregions ? snap->nregions : 1,
			      sizeof(*snap->layout));
	if (!snap->regions || !snap->layout)
		return -ENOMEM;
	for (uint32_t r = 0; r < snap->nregions; r++) {
		const struct ls_region_info *info = &ctx->regions[r].info;
		struct snap_region *sr = &snap->regions[r];
		struct ls_layout_region *lr = &snap->layout[r];

		sr->idx = r;
		sr->base = (uint64_t)(uintptr_t)info->addr;
		sr->len = info->len;
		sr->ps = info->page_size;
		sr->npages = info->len / info->page_size;
		sr->type = info->type;
		sr->batch = (batch_bytes + sr->ps - 1) / sr->ps * sr->ps;
		sr->scan = info->type == LS_MEM_ANON && ctx->pagemap_fd >= 0;
		sr->seek_fd = ctx->regions[r].seek_fd;
		sr->file_fd = ctx->regions[r].file_fd;
		sr->file_off = ctx->regions[r].file_off;
		sr->state = calloc(sr->npages, 1);
		if (!sr->state)
			return -ENOMEM;
		if (info->type == LS_MEM_HUGETLB ||
		    ctx->regions[r].seek_fd >= 0) {
			sr->held = ls_bitmap_new(sr->npages);
			if (!sr->held)
				return -ENOMEM;
			sr->zero_unheld = ctx->regions[r].anon_huge;
		}
		if (snap->delta) {
			bool look = info->type == LS_MEM_ANON && !ctx->events;

			memset((void *)sr->state, PG_CLEAN, sr->npages);
			sr->rescan = look ? ls_alloc_prefaulted(
						ls_bitmap_bytes(sr->npages))
					  : NULL;
			if (look && !sr->rescan)
				return -ENOMEM;
		}
		if (snap->track) {
			sr->fresh = ls_set_new(sr->npages);
			if (!sr->fresh)
				return -ENOMEM;
		}
		memcpy(lr->name, info->name, LS_NAME_MAX);
		lr->len = info->len;
		lr->page_size = (uint32_t)info->page_size;
		lr->type = info->type;
		snap->pages_total += sr->npages;
		if (sr->ps > snap->max_ps)
			snap->max_ps = sr->ps;
	}
	return 0;
}

/* The writer's bounce buffer: one batch of the largest. */
static size_t bounce_len(const struct ls_snapshot *snap)
{
	uint64_t max_batch = 0;

	for (uint32_t r = 0; snap->regions && r < snap->nregions; r++)
		if (snap->regions[r].batch > max_batch)
			max_batch = snap->regions[r].batch;
	return max_batch ? max_batch : LS_SMALL_PAGE;
}

/* ctx->lock held: buffers come from the context's cache (ls_buf_take). */
static int snap_buffers_init(struct ls_snapshot *snap, struct ls_ctx *ctx,
			     const struct ls_snapshot_opts *o)
{
	uint64_t total = 0;

	for (uint32_t r = 0; r < snap->nregions; r++)
		total += snap->regions[r].len;
	snap->bounce = ls_buf_take(ctx, bounce_len(snap));
	if (!snap->bounce)
		return -ENOMEM;
	snap->batch_flags = calloc(bounce_len(snap) / LS_SMALL_PAGE + 1, 1);
	if (!snap->batch_flags ||
	    posix_memalign((void **)&snap->fpage, LS_SMALL_PAGE,
			   snap->max_ps ? snap->max_ps : LS_SMALL_PAGE))
		return -ENOMEM;
	memset(snap->fpage, 0, snap->max_ps ? snap->max_ps : LS_SMALL_PAGE);
	if (snap->keep_thp) {
		snap->thp_buf = ls_buf_take(ctx, LS_HUGE_2M);
		snap->thp_flags = calloc(LS_HUGE_2M / LS_SMALL_PAGE, 1);
		if (!snap->thp_buf || !snap->thp_flags)
			return -ENOMEM;
	}
	return ring_init(&snap->ring, copy_buffer_size(o, total, snap->max_ps),
			 ctx);
}

/* ctx->lock held: the buffers go back to the context, for the next one. */
static void snap_buffers_return(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	ls_buf_give(ctx, snap->bounce, bounce_len(snap));
	snap->bounce = NULL;
	ls_buf_give(ctx, snap->thp_buf, LS_HUGE_2M);
	snap->thp_buf = NULL;
	ls_buf_give(ctx, snap->ring.data, snap->ring.nslots * LS_SMALL_PAGE);
	snap->ring.data = NULL;
}

static void snap_free(struct ls_snapshot *snap)
{
	struct blob *b;

	ls_free_prefaulted(snap->bounce, bounce_len(snap));
	for (uint32_t r = 0; snap->regions && r < snap->nregions; r++) {
		free(snap->regions[r].state);
		free((void *)snap->regions[r].fresh);
		free((void *)snap->regions[r].prev);
		free(snap->regions[r].held);
		free((void *)snap->regions[r].later);
		free((void *)snap->regions[r].late);
		ls_free_prefaulted(snap->regions[r].rescan,
				   ls_bitmap_bytes(snap->regions[r].npages));
	}
	while ((b = snap->blobs)) {
		snap->blobs = b->next;
		free(b);
	}
	ring_free(&snap->ring);
	ls_free_prefaulted(snap->thp_buf, LS_HUGE_2M);
	free(snap->thp_flags);
	free(snap->batch_flags);
	free(snap->fpage);
	free(snap->regions);
	free(snap->layout);
	pthread_mutex_destroy(&snap->lock);
	pthread_cond_destroy(&snap->cond);
	ls_done_destroy(&snap->end);
	free(snap);
}

static int check_opts(struct ls_ctx *ctx, const struct ls_snapshot_opts *o)
{
	if (o->track_granule & (o->track_granule - 1) ||
	    (o->track_granule && o->track_granule < LS_SMALL_PAGE))
		return ls_err(ctx, EINVAL,
			      "snapshot: track_granule %zu is not 0 or a power of two of 4096 or more",
			      o->track_granule);
	if (o->strategy > LS_STRATEGY_WRITE_FIRST)
		return ls_err(ctx, EINVAL, "snapshot: unknown strategy %d",
			      (int)o->strategy);
	if (o->batch_bytes % LS_SMALL_PAGE)
		return ls_err(ctx, EINVAL,
			      "snapshot: batch_bytes %zu is not a multiple of 4096",
			      o->batch_bytes);
	return 0;
}

static int snap_init(struct ls_snapshot *snap, struct ls_ctx *ctx,
		     const struct ls_snapshot_opts *o)
{
	int ret;

	snap->strategy = o->strategy;
	/* keep_thp releases 2 MiB at once: tracking needs each page's write */
	snap->keep_thp = o->keep_thp && !o->track && !o->delta;
	snap->track = o->track;
	snap->by_caller = o->track && o->track_by_caller;
	snap->writer_idle = o->writer_idle;
	snap->delta = o->delta;
	snap->granule = o->track_granule;
	snap->spin_ns = o->fault_spin_us < 0  ? 0
			: o->fault_spin_us ? (int64_t)o->fault_spin_us * 1000
					   : DEFAULT_SPIN_US * 1000;
	ret = snap_regions_init(snap, ctx,
				o->batch_bytes ? o->batch_bytes
					       : DEFAULT_BATCH);
	if (!ret)
		ret = snap_buffers_init(snap, ctx, o);
	if (ret)
		return ls_err(ctx, ret, "snapshot: out of memory for %llu pages",
			      (unsigned long long)snap->pages_total);
	return 0;
}

static int snap_start_sink(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	struct ls_layout layout = {
		.nregions = snap->nregions,
		.regions = snap->layout,
		.delta = snap->delta,
	};
	int ret;

	memcpy(layout.id, snap->id, LS_ID_BYTES);
	memcpy(layout.parent, snap->parent, LS_ID_BYTES);
	ret = snap->sink->ops->start(snap->sink, &layout);
	if (ret)
		return ls_err(ctx, ret, "snapshot sink: start: %s",
			      snap->sink->error[0] ? snap->sink->error
						   : strerror(-ret));
	snap->sink_started = true;
	return 0;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

/*
 * A fault releases its page alone, and un-protecting 4 KiB inside a huge
 * page splits it for good: the next arm would pay the 4 KiB-PTE rate
 * (20-25 ms per GiB) instead of ~0.1 ms. The fault thread notes which
 * 2 MiB it split; the next snapshot collapses them back here.
 */
void ls_note_split(struct ls_ctx *ctx, uint32_t region, uint64_t off)
{
	struct ls_region *reg = &ctx->regions[region];
	uint64_t chunk = off / LS_HUGE_2M;

	if (reg->thp_zero)
		atomic_fetch_or(&reg->split[chunk / 8],
				(uint8_t)(1u << (chunk % 8)));
}

static void collapse_split(struct ls_region *reg)
{
	uint64_t nchunks = reg->info.len / LS_HUGE_2M;

	for (uint64_t c = 0; c < nchunks; c++) {
		uint8_t bit = (uint8_t)(1u << (c % 8));

		if (!(atomic_fetch_and(&reg->split[c / 8], (uint8_t)~bit) &
		      bit))
			continue;
		(void)madvise((char *)reg->info.addr + c * LS_HUGE_2M,
			      LS_HUGE_2M, MADV_COLLAPSE);
	}
}

/*
 * Arming untouched memory with WP_UNPOPULATED costs 5-30 ms per GiB (a PTE
 * marker per 4 KiB page, page tables allocated), all of it inside the
 * caller's pause. Untouched THP-eligible anonymous memory can instead map
 * the huge zero page (one PMD per 2 MiB, no memory), which arms at about
 * 0.1 ms per GiB; huge pages split by the last snapshot are collapsed
 * again. This runs here, before the pause, while the writers run; a
 * failure only costs speed. Regions being restored lazily are skipped:
 * populating them would pull the whole restore into this call.
 */
static void prepare_huge_pages(struct ls_ctx *ctx)
{
	for (int r = 0; r < ctx->nregions; r++) {
		struct ls_region *reg = &ctx->regions[r];

		if (!reg->thp_zero || atomic_load(&reg->restore))
			continue;
		collapse_split(reg);
		(void)madvise(reg->info.addr, reg->info.len,
			      MADV_POPULATE_READ);
	}
}

/* A random id; the clock and the address as a fallback (no entropy). */
static void new_id(struct ls_snapshot *snap)
{
	uint64_t t = ls_now_ns(), a = (uint64_t)(uintptr_t)snap;

	if (getrandom(snap->id, LS_ID_BYTES, GRND_NONBLOCK) == LS_ID_BYTES)
		return;
	memcpy(snap->id, &t, 8);
	memcpy(snap->id + 8, &a, 8);
}

/* A delta needs a parent: tracking on since a snapshot (ctx->lock held). */
static int delta_check(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	if (!snap->delta)
		return 0;
	if (!atomic_load(&ctx->track.on) || !ctx->track.has_parent)
		return ls_err(ctx, ENOENT,
			      "snapshot: a delta needs a previous snapshot taken with tracking (track) or ls_track_start(); none is tracked");
	if (atomic_load(&ctx->track.broken))
		return ls_err(ctx, ESTALE,
			      "snapshot: write tracking was lost (an un-protect or the check for discarded pages failed); take a full snapshot");
	memcpy(snap->parent, ctx->track.parent, LS_ID_BYTES);
	return 0;
}

/*
 * A shmem file's map costs two lseek() per run of data (milliseconds for a
 * fragmented 4 GiB memfd): past this many runs the region goes without
 * (its block count still tells).
 */
#define HELD_MAX_EXTENTS 4096

static int64_t file_blocks(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? -1 : (int64_t)st.st_blocks;
}

static int held_map(struct ls_snapshot *snap, struct ls_ctx *ctx, uint32_t r)
{
	struct snap_region *sr = &snap->regions[r];
	int ret;

	memset(sr->held, 0, ls_bitmap_bytes(sr->npages));
	if (sr->seek_fd < 0) {
		ret = ls_pages_present(ctx, (int)r, 0, sr->npages, sr->held);
	} else {
		sr->held_blocks = file_blocks(sr->seek_fd);
		ret = ls_seek_data(sr->seek_fd, sr->file_off, sr->npages,
				   sr->ps, HELD_MAX_EXTENTS, sr->held);
		if (ret == -E2BIG || sr->held_blocks < 0) {
			free(sr->held);
			sr->held = NULL;
			return 0;
		}
	}
	if (ret)
		return ls_err(ctx, -ret, "region '%s': %s: %s",
			      snap_name(snap, r),
			      sr->seek_fd < 0 ? "reading /proc/self/pagemap"
					      : "lseek SEEK_DATA/SEEK_HOLE",
			      strerror(-ret));
	return 0;
}

/*
 * At create, outside the caller's pause: the shmem files' data maps. Holes
 * filled before begin only leave a page unchecked; a punch before begin
 * lowers the block count, and begin maps that file again.
 */
static int held_prepare(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	for (uint32_t r = 0; r < snap->nregions; r++) {
		int ret = snap->regions[r].held && snap->regions[r].seek_fd >= 0
				  ? held_map(snap, ctx, r)
				  : 0;

		if (ret)
			return ret;
	}
	return 0;
}

/* At begin: which pages hold data (see check_held() in writer.c). */
static int held_note(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];
		int ret;

		if (!sr->held || (sr->seek_fd >= 0 &&
				  file_blocks(sr->seek_fd) >= sr->held_blocks))
			continue;
		ret = held_map(snap, ctx, r);
		if (ret)
			return ret;
	}
	return 0;
}

/* The writer thread until begin armed the snapshot or a cancel came. */
static void *snap_writer_wait(void *arg)
{
	struct ls_snapshot *snap = arg;
	bool cancelled;

	pthread_mutex_lock(&snap->lock);
	while (atomic_load(&snap->state) == LS_SNAP_SETUP &&
	       !snap->setup_cancel)
		pthread_cond_wait(&snap->cond, &snap->lock);
	cancelled = snap->setup_cancel;
	pthread_mutex_unlock(&snap->lock);
	if (!cancelled)
		snap_writer_main(snap);
	if (snap->guard_ctx)
		atomic_fetch_sub(&snap->guard_ctx->svc.guard_users, 1);
	return NULL;
}

/*
 * The writer reads live memory with process_vm_readv (writer.c). A seccomp
 * policy may refuse it (some container defaults do): then memcpy, and an
 * unmapped range kills the process as it would any reader (docs/api.md).
 */
static bool vm_readv_works(int pid)
{
	uint64_t from = 1, to = 0;
	struct iovec l = {&to, sizeof(to)}, r = {&from, sizeof(from)};

	return process_vm_readv(pid, &l, 1, &r, 1, 0) == sizeof(to) && to == 1;
}

/*
 * SCHED_IDLE with writer_idle, else SCHED_BATCH: the writer, parked
 * until begin, is woken inside the caller's pause, and a SCHED_OTHER
 * thread woken after a long sleep preempts its waker at once, so the
 * caller's begin returned a scheduler slice late (2-3 ms in half of the
 * begins of bench_track, whose writers keep both CPUs busy). A batch
 * thread gets the same share of the CPU but does not preempt on wakeup.
 * On failure the parked writer is ended and joined.
 */
static int writer_set_policy(struct ls_snapshot *snap, pthread_t writer)
{
	struct sched_param sp = {.sched_priority = 0};
	int ret = pthread_setschedparam(
	    writer, snap->writer_idle ? SCHED_IDLE : SCHED_BATCH, &sp);

	if (ret) {
		pthread_mutex_lock(&snap->lock);
		snap->setup_cancel = true;
		pthread_cond_broadcast(&snap->cond);
		pthread_mutex_unlock(&snap->lock);
		pthread_join(writer, NULL);
	}
	return ret;
}

/*
 * Thread creation stays out of the caller's pause: the first one of a
 * process maps and faults a fresh stack, 2-5 ms measured on a loaded
 * 2-CPU machine (tens of us once glibc caches stacks). So create starts
 * the writer, parked until begin, and the fault service, whose first
 * reference begin takes over. ctx->lock held.
 */
static int snap_start_threads(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	pthread_t writer;
	int ret;

	snap->pid = getpid();
	snap->no_vm_readv = !vm_readv_works(snap->pid);
	ret = ls_svc_get(ctx);
	if (ret)
		return ret;
	ret = pthread_create(&writer, NULL, snap_writer_wait, snap);
	if (ret) {
		ls_svc_put(ctx);
		return ls_err(ctx, ret, "snapshot: starting the writer thread: %s",
			      strerror(ret));
	}
	pthread_setname_np(writer, "ls-writer");
	snap->writer = writer;
	snap->guard_beats = UINT64_MAX; /* the guard's first look: no beat */
	ret = writer_set_policy(snap, writer);
	atomic_store(&snap->writer_is_idle, snap->writer_idle && !ret);
	if (snap->writer_idle && !ret) {
		/*
		 * The fault thread bounds its poll() from now on, for the
		 * guard; told here, not in begin: a thread woken inside the
		 * caller's pause can cost it a scheduler slice (3-5 ms
		 * measured with the VMM's threads on one CPU).
		 */
		snap->guard_ctx = ctx;
		atomic_fetch_add(&ctx->svc.guard_users, 1);
		ls_svc_kick(ctx);
	}
	if (ret) {
		ls_svc_put(ctx);
		return ls_err(ctx, ret,
			      "snapshot: pthread_setschedparam(%s) for the writer: %s",
			      snap->writer_idle ? "SCHED_IDLE" : "SCHED_BATCH",
			      strerror(ret));
	}
	snap->svc_warm = true;
	ls_done_started(&snap->end, writer);
	return 0;
}

/* Drops create's fault-service reference once it is not needed. */
static void snap_svc_cool(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	if (snap->svc_warm) {
		snap->svc_warm = false;
		ls_svc_put(ctx);
	}
}

int ls_snapshot_create(struct ls_ctx *ctx, struct ls_sink *sink,
		       const struct ls_snapshot_opts *opts,
		       struct ls_snapshot **snapp)
{
	const struct ls_snapshot_opts defaults = {0};
	const struct ls_snapshot_opts *o = opts ? opts : &defaults;
	struct ls_snapshot *snap;
	int ret;

	if (snapp)
		*snapp = NULL;
	if (!ctx || !sink || !sink->ops || !snapp) {
		ls_sink_destroy(sink);
		return ls_err(ctx, EINVAL,
			      "ls_snapshot_create: NULL context, sink or result");
	}
	ret = check_opts(ctx, o);
	if (ret) {
		ls_sink_destroy(sink);
		return ret;
	}
	snap = calloc(1, sizeof(*snap));
	if (!snap) {
		ls_sink_destroy(sink);
		return ls_err(ctx, ENOMEM, "snapshot: out of memory");
	}
	pthread_mutex_init(&snap->lock, NULL);
	pthread_cond_init(&snap->cond, NULL);
	ls_done_init(&snap->end);
	snap->sink = sink;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->snap) {
		ret = ls_err(ctx, EBUSY,
			     "snapshot: the context already has a snapshot");
	} else {
		snap->delta = o->delta;
		new_id(snap);
		ret = delta_check(snap, ctx);
		if (!ret)
			ret = ls_regions_check_aliases(ctx);
		if (!ret) {
			prepare_huge_pages(ctx);
			ret = snap_init(snap, ctx, o);
		}
		if (!ret)
			ret = held_prepare(snap, ctx);
		if (!ret)
			ret = snap_start_sink(snap, ctx);
		if (!ret)
			ret = snap_start_threads(snap, ctx);
	}
	if (!ret) {
		snap->ctx = ctx;
		ctx->snap = snap;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (ret) {
		if (snap->sink_started)
			sink->ops->abort(sink);
		ls_sink_destroy(sink);
		snap_free(snap);
		return ret;
	}
	*snapp = snap;
	return 0;
}

int ls_snapshot_add_blob(struct ls_snapshot *snap, const char *name,
			 const void *data, size_t len)
{
	struct blob *b, **tail;
	int ret = 0;

	if (!snap || !name || !name[0] || strlen(name) >= LS_NAME_MAX ||
	    (len && !data))
		return ls_err(snap ? snap->ctx : NULL, EINVAL,
			      "snapshot blob: bad name or data");
	b = malloc(sizeof(*b) + len);
	if (!b)
		return ls_err(snap->ctx, ENOMEM,
			      "snapshot blob '%s': out of memory (%zu bytes)",
			      name, len);
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->len = len;
	b->next = NULL;
	if (len)
		memcpy(b->data, data, len);
	pthread_mutex_lock(&snap->lock);
	for (tail = &snap->blobs; *tail; tail = &(*tail)->next)
		if (!strcmp((*tail)->name, name))
			break;
	if (snap->blobs_closed)
		ret = ls_err(snap->ctx, EINVAL,
			     "snapshot blob '%s': the snapshot has ended", name);
	else if (*tail)
		ret = ls_err(snap->ctx, EEXIST,
			     "snapshot blob '%s': a blob of that name exists",
			     name);
	else
		*tail = b;
	pthread_mutex_unlock(&snap->lock);
	if (ret)
		free(b);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Begin and end                                                       */
/* ------------------------------------------------------------------ */

/*
 * Lifts protection from a region as far as it is still mapped and
 * registered. One ioctl stops at the first mapping that is not (the
 * application unmapped, moved or replaced part of the region), so what
 * follows is lifted piece by piece. Then every thread blocked in the range
 * is woken, also on pages that are gone (its retry meets the unmapping).
 */
/* Takes protection off every region (waking anyone blocked on it). */
static void lift_all(struct ls_snapshot *snap, uint32_t nregions)
{
	for (uint32_t r = 0; r < nregions; r++) {
		struct snap_region *sr = &snap->regions[r];
		int ret = ls_uffd_lift(snap->ctx->uffd, sr->base, sr->len,
					sr->ps);

		if (ret)
			snap_fail(snap, ret,
				  "ioctl(UFFDIO_WRITEPROTECT) lifting region '%s': %s",
				  snap_name(snap, r), strerror(-ret));
	}
}

/*
 * Without WP_UNPOPULATED, protecting an unpopulated anonymous page does
 * nothing, so the first write to it would go unseen: map the zero page
 * first (cheap: no memory is allocated).
 */
static int populate_if_needed(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	if (ctx->features & LS_FEAT_WP_UNPOPULATED)
		return 0;
	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];

		if (sr->type != LS_MEM_ANON)
			continue;
		if (madvise((void *)(uintptr_t)sr->base, sr->len,
			    MADV_POPULATE_READ))
			return ls_err(ctx, errno,
				      "madvise(MADV_POPULATE_READ) on region '%s': %s",
				      snap_name(snap, r), strerror(errno));
	}
	return 0;
}

/* The pages of word w of a set (bits) become PENDING, counted once. */
static void pending_word(struct ls_snapshot *snap, struct snap_region *sr,
			 uint64_t w, uint64_t bits)
{
	for (; bits; bits &= bits - 1) {
		uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);

		/* nobody else changes states before begin ends */
		if (atomic_load_explicit(&sr->state[p], memory_order_relaxed) ==
		    PG_PENDING)
			continue;
		atomic_store_explicit(&sr->state[p], PG_PENDING,
				      memory_order_relaxed);
		snap->pages_total++;
	}
}

/*
 * A delta's pages: those of a set of region r that holds still (the
 * writers quiesced, or the set put aside by prepare) become PENDING,
 * counted once (a prepared delta's begin adds a second set). The others
 * stay CLEAN.
 */
static void pending_add(struct ls_snapshot *snap, uint32_t r,
			const _Atomic uint64_t *set)
{
	struct snap_region *sr = &snap->regions[r];
	uint64_t nw = ls_set_words(sr->npages);

	for (uint64_t w = ls_set_next(set, sr->npages, 0); w < nw;
	     w = ls_set_next(set, sr->npages, w + 1))
		pending_word(snap, sr, w,
			     atomic_load_explicit(&set[w],
						  memory_order_relaxed));
}

/*
 * A delta prepared under the caller's tracking, in the pause: its late
 * reports join the delta's set and become pending, in one pass over the
 * words they marked.
 */
static void pending_join(struct ls_snapshot *snap, uint32_t r,
			 const _Atomic uint64_t *late, _Atomic uint64_t *set)
{
	struct snap_region *sr = &snap->regions[r];
	uint64_t nw = ls_set_words(sr->npages);

	for (uint64_t w = ls_set_next(late, sr->npages, 0); w < nw;
	     w = ls_set_next(late, sr->npages, w + 1)) {
		uint64_t bits =
		    atomic_load_explicit(&late[w], memory_order_relaxed);

		ls_set_or(set, sr->npages, w, bits);
		pending_word(snap, sr, w, bits);
	}
}

/*
 * A delta's pages and its arm, in the pause, after the look for discarded
 * pages: every page of the sets, or after a prepare (which marked and
 * protected the sets as they were then) what was written since. There the
 * look must come first: it skips what the sets hold, and a page that
 * prepare protected again may have been discarded since. Settled tracking
 * protected everything again already. Prepared under the caller's
 * tracking: the delta is every page reported, and what was written since
 * the prepare is protected again (where the prepare protected).
 */
static int delta_arm(struct ls_snapshot *snap, struct ls_ctx *ctx,
		     bool settled)
{
	_Atomic uint64_t *news[LS_MAX_REGIONS] = {NULL};
	_Atomic uint64_t *late[LS_MAX_REGIONS] = {NULL};
	uint64_t *scan[LS_MAX_REGIONS];
	bool by_caller = ctx->track.prep == LS_PREP_CALLER_DELTA;
	bool prepared = ctx->track.prep == LS_PREP_DELTA || by_caller;
	int ret;

	for (uint32_t r = 0; r < snap->nregions; r++)
		scan[r] = snap->regions[r].rescan;
	/* By the caller: the look's finds join its late reports. */
	if (by_caller)
		ls_track_late_swap(ctx, news);
	/*
	 * Anonymous discards: marked as they happen with discard events;
	 * the caller's tracking reports them; settled tracking's scan saw
	 * them. Else the look walks the regions' page tables.
	 */
	ret = ls_track_rescan(ctx,
			      !settled && !ctx->track.caller && !ctx->events,
			      scan);
	if (prepared && !by_caller)
		ls_track_prepared_merge(ctx, news, true);
	else if (!prepared)
		snap->pages_total = 0;
	if (by_caller) /* every report, and their pages pending */
		ls_track_prepared_merge(ctx, late, false);
	for (uint32_t r = 0; by_caller && r < snap->nregions; r++)
		pending_join(snap, r, late[r], atomic_load(&ctx->track.dirty[r]));
	for (uint32_t r = 0; !ret && r < snap->nregions; r++) {
		const _Atomic uint64_t *all = atomic_load(&ctx->track.dirty[r]);
		const _Atomic uint64_t *set = prepared ? news[r] : all;

		if (!by_caller)
			pending_add(snap, r, set);
		else if (!ls_track_preparable(ctx, (int)r))
			set = all;
		if (!settled)
			ret = ls_track_protect_set(ctx, (int)r, set);
	}
	for (uint32_t r = 0; prepared && r < snap->nregions; r++) {
		/* a begin again frees the old; free()s munmap: later */
		free((void *)snap->regions[r].later);
		free((void *)snap->regions[r].late);
		snap->regions[r].later = news[r];
		snap->regions[r].late = late[r];
	}
	return ret;
}

/*
 * A delta's prepare (ls_track_prepare_delta()): its pages so far become
 * pending now, the writers running; tracked by faults they are protected
 * again. On failure the sets come back together; what was protected
 * stays so.
 */
static int delta_prepare(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	int ret;

	if (ctx->track.prep != LS_PREP_NONE)
		return 0;
	ret = ls_track_prepare_delta(ctx);
	if (ret || ctx->track.prep == LS_PREP_NONE)
		return ret;
	snap->pages_total = 0;
	for (uint32_t r = 0; r < snap->nregions; r++) {
		pending_add(snap, r, ctx->track.prep_sets[r]);
		if (ctx->track.prep == LS_PREP_CALLER_DELTA)
			continue; /* it protected the memory whole */
		ret = ls_track_protect_set(ctx, (int)r, ctx->track.prep_sets[r]);
		if (ret) {
			ls_track_unprepare(ctx);
			return ret;
		}
	}
	return 0;
}

static int arm_whole(struct ls_snapshot *snap, struct ls_ctx *ctx,
		     uint32_t r)
{
	struct snap_region *sr = &snap->regions[r];
	int ret = ls_uffd_wp(ctx->uffd, sr->base, sr->len, true);

	if (ret)
		return ls_err(ctx, ret,
			      "ioctl(UFFDIO_WRITEPROTECT) arming region '%s': %s",
			      snap_name(snap, r), strerror(-ret));
	return 0;
}

/*
 * A full snapshot's arm: every region whole, except after a prepare
 * (ls_track_prepare()), where the regions it protected are protected but
 * for what was written (or, anonymous, discarded) since, which
 * ls_track_protect_set() re-protects. A failure lifts what this arm, or
 * the prepare, protected (a begin again arms every region whole); a
 * prepare that started tracking for itself ends here either way.
 */
static int arm_full(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	bool prepared = ctx->track.prep != LS_PREP_NONE;
	_Atomic uint64_t *news[LS_MAX_REGIONS] = {NULL};
	int ret = 0;

	for (uint32_t r = 0; r < snap->nregions; r++) {
		ret = prepared && ls_track_preparable(ctx, (int)r)
			      ? ls_track_protect_set(ctx, (int)r,
						 atomic_load(&ctx->track.dirty[r]))
			      : arm_whole(snap, ctx, r);
		if (ret) {
			lift_all(snap, prepared ? snap->nregions : r);
			break;
		}
	}
	if (!prepared)
		return ret;
	ls_track_refine_end(ctx, news);
	for (uint32_t r = 0; r < snap->nregions; r++) {
		free((void *)snap->regions[r].later);
		snap->regions[r].later = news[r]; /* free()s munmap: later */
	}
	if (ret)
		ls_track_unprepare(ctx);
	else if (ctx->track.prep == LS_PREP_OWN)
		atomic_store(&ctx->track.granule, ctx->track.prep_granule);
	ls_track_prep_set(ctx, LS_PREP_NONE);
	return ret;
}

/*
 * From this begin on, writes are recorded in the snapshot's fresh sets (or,
 * without track, no more); the sets they replace go to the snapshot: a
 * delta's pages, and what a failed snapshot gives back. ctx->lock held,
 * writers quiesced, after the arm.
 */
static void take_sets(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	bool was_on = atomic_load(&ctx->track.on);

	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];

		sr->prev = atomic_exchange(&ctx->track.dirty[r],
					   snap->track ? sr->fresh : NULL);
		sr->fresh = NULL;
	}
	ls_svc_quiesce(ctx); /* nobody marks the old sets any more */
	if (snap->track) {
		atomic_store(&ctx->track.granule, snap->granule);
		atomic_store(&ctx->track.on, true);
		atomic_store(&ctx->track.broken, false);
		ctx->track.caller = !snap->track_faults;
		snap->tracker_ref = false; /* the context holds it now */
		if (!was_on)
			ctx->track.has_parent = false;
	} else if (was_on) {
		atomic_store(&ctx->track.on, false);
		ls_track_free_held(ctx); /* a delta's rescan renewed them */
		ctx->track.has_parent = false;
		ctx->track.caller = false;
		ls_svc_put(ctx); /* the snapshot holds its own */
	}
}

/*
 * A hole punched in a shared region's file (fallocate, MADV_REMOVE) or a
 * truncation takes pages away without a write fault, and a hole reads as
 * zero. Both lower the file's allocated blocks: noted at begin, compared at
 * the end. (Not its ctime: shmem updates that on every write fault that
 * dirties a clean page.) A punch that the application's own writes into
 * holes make up for in blocks goes unseen: callers must not punch holes
 * during a snapshot (docs/api.md).
 */
static void files_note(struct ls_snapshot *snap)
{
	struct stat st;

	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];

		sr->blocks0 = -1;
		if (sr->file_fd >= 0 && !fstat(sr->file_fd, &st))
			sr->blocks0 = (int64_t)st.st_blocks;
	}
}

static void files_check(struct ls_snapshot *snap)
{
	struct stat st;

	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];

		if (sr->blocks0 < 0 || fstat(sr->file_fd, &st) ||
		    (int64_t)st.st_blocks >= sr->blocks0)
			continue;
		snap_fail(snap, -ESTALE,
			  "region '%s': its file lost %lld KiB of pages during the snapshot (hole punched with fallocate or MADV_REMOVE, or truncated): what they held at begin may be missing",
			  snap_name(snap, r),
			  (long long)(sr->blocks0 - (int64_t)st.st_blocks) / 2);
		return;
	}
}

static int begin_check(struct ls_snapshot *snap, struct ls_ctx *ctx,
		       const char *fn)
{
	int busy = ls_ctx_restoring(ctx);

	if (atomic_load(&snap->state) != LS_SNAP_SETUP)
		return ls_err(ctx, EINVAL,
			      "snapshot: %s called after begin or the end", fn);
	if (busy >= 0)
		return ls_err(ctx, EBUSY,
			      "snapshot: region '%s' is still being restored lazily (ls_restore_wait first)",
			      ctx->regions[busy].info.name);
	return 0;
}

int ls_snapshot_prepare(struct ls_snapshot *snap)
{
	struct ls_ctx *ctx = snap ? snap->ctx : NULL;
	int ret;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ret = begin_check(snap, ctx, "prepare");
	if (!ret)
		ret = snap->delta ? delta_prepare(snap, ctx)
				  : ls_track_prepare(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/* A snapshot that never armed gives its prepare back. */
static void snap_unprepare(struct ls_snapshot *snap, struct ls_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	if (ctx->snap == snap)
		ls_track_unprepare(ctx);
	pthread_mutex_unlock(&ctx->lock);
}

int ls_snapshot_begin(struct ls_snapshot *snap)
{
	struct ls_ctx *ctx = snap ? snap->ctx : NULL;
	bool settled, prepared;
	uint64_t t0;
	int ret;

	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	ret = begin_check(snap, ctx, "begin");
	if (!ret)
		ret = populate_if_needed(snap, ctx);
	if (!ret)
		ret = held_note(snap, ctx);
	if (ret)
		goto out;
	files_note(snap);
	/*
	 * Tracking after this begin is the caller's when asked for, or in a
	 * delta that goes on with the caller's chain: then the saved pages
	 * need not stay protected.
	 */
	snap->track_faults = snap->track && !snap->by_caller &&
			     !(snap->delta && ctx->track.caller);
	atomic_store(&ctx->svc.spin_ns, snap->spin_ns);
	atomic_store(&ctx->armed, snap);
	ret = ls_svc_get(ctx);
	if (ret)
		goto out_disarm;
	if (snap->track && !atomic_load(&ctx->track.on)) {
		ret = ls_svc_get(ctx); /* tracking keeps it after the end */
		if (ret)
			goto out_svc;
		snap->tracker_ref = true;
	}
	t0 = ls_now_ns();
	/*
	 * Settled tracking: collect its writes (discarded anonymous pages
	 * among them), back to the fault descriptor with every page
	 * protected again, which is all the arm has to do.
	 */
	settled = ctx->track.async;
	prepared = ctx->track.prep != LS_PREP_NONE;
	ret = ls_track_unsettle(ctx, true);
	if (ret)
		goto out_svc;
	if (snap->delta) {
		ret = delta_arm(snap, ctx, settled);
		if (ret)
			goto out_svc;
	} else if (!settled) {
		ret = arm_full(snap, ctx);
		if (ret) { /* arm_full lifted what it had armed */
			atomic_store(&ctx->track.broken, true);
			goto out_svc;
		}
	}
	ret = ls_track_discards_reprotect(ctx, prepared);
	if (ret) {
		lift_all(snap, snap->nregions);
		atomic_store(&ctx->track.broken, true);
		goto out_svc;
	}
	if (snap->track || snap->delta || atomic_load(&ctx->track.on))
		take_sets(snap, ctx);
	/* A full snapshot restarts tracking: what its pages hold is the
	 * reference for the next delta (a delta's rescan renewed it). */
	if (snap->track && !snap->delta && ls_track_note(ctx))
		atomic_store(&ctx->track.broken, true);
	atomic_store(&snap->begin_ns, t0);
	atomic_store(&snap->arm_ns, ls_now_ns() - t0);
	pthread_mutex_lock(&snap->lock);
	atomic_store(&snap->state, LS_SNAP_ACTIVE);
	pthread_cond_broadcast(&snap->cond); /* the parked writer */
	pthread_mutex_unlock(&snap->lock);
	snap_svc_cool(snap, ctx);
	goto out;
out_svc:
	if (snap->tracker_ref)
		ls_svc_put(ctx);
	snap->tracker_ref = false;
	ls_svc_put(ctx);
out_disarm:
	atomic_store(&ctx->armed, NULL);
out:
	pthread_mutex_unlock(&ctx->lock);
	if (ret && !atomic_load(&snap->failed)) {
		/* Not failed (it may begin again): but say why, here too. */
		pthread_mutex_lock(&snap->lock);
		snprintf(snap->err, sizeof(snap->err), "%s", ls_ctx_error(ctx));
		atomic_store(&snap->begin_failed, true);
		pthread_mutex_unlock(&snap->lock);
	}
	return ret;
}

/* Blobs, then commit; the sink sees nothing after a failure but abort. */
static void snap_commit(struct ls_snapshot *snap)
{
	struct ls_sink *sink = snap->sink;
	int ret;

	pthread_mutex_lock(&snap->lock);
	snap->blobs_closed = true;
	pthread_mutex_unlock(&snap->lock);
	for (struct blob *b = snap->blobs; b && !atomic_load(&snap->stop);
	     b = b->next) {
		ret = sink->ops->put_blob(sink, b->name, b->data, b->len);
		if (ret)
			snap_fail_sink(snap, ret, "put_blob");
	}
	if (!atomic_load(&snap->stop)) {
		ret = sink->ops->commit(sink);
		if (ret)
			snap_fail_sink(snap, ret, "commit");
	}
}

/* Detaches the snapshot from the fault thread (which may stop). */
static void snap_disarm(struct ls_snapshot *snap)
{
	struct ls_ctx *ctx = snap->ctx;

	atomic_store(&ctx->armed, NULL);
	ls_svc_quiesce(ctx);
	/* Tracking goes on: its first writes come in bursts too. */
	atomic_store(&ctx->svc.spin_ns,
		     atomic_load(&ctx->track.on) ? snap->spin_ns : 0);
	pthread_mutex_lock(&ctx->lock);
	ls_svc_put(ctx);
	pthread_mutex_unlock(&ctx->lock);
}

/*
 * Tracking after a tracked snapshot: success makes it the parent of the
 * next delta; a failure gives its sets back, so that the next delta still
 * holds every page written since the last snapshot that did succeed.
 */
static void track_end(struct ls_snapshot *snap, int result)
{
	struct ls_ctx *ctx = snap->ctx;
	bool had = true;

	if (!snap->track)
		return;
	pthread_mutex_lock(&ctx->lock);
	if (atomic_load(&ctx->track.broken)) {
		lift_all(snap, snap->nregions);
		ls_track_off(ctx);
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	/* The caller's tracking: nothing stays protected (a failed lift
	 * leaves pages that record their writes as before). */
	if (ctx->track.caller)
		(void)ls_track_lift(ctx);
	if (!result) {
		memcpy(ctx->track.parent, snap->id, LS_ID_BYTES);
		ctx->track.has_parent = true;
	} else {
		for (uint32_t r = 0; r < snap->nregions; r++) {
			struct snap_region *sr = &snap->regions[r];

			if (!sr->prev) {
				had = false;
				continue;
			}
			ls_set_merge(atomic_load(&ctx->track.dirty[r]), sr->prev,
				  sr->npages);
		}
		if (!had)
			ctx->track.has_parent = false;
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* The end, on the writer thread: whatever happened, nobody stays blocked. */
void snap_finish(struct ls_snapshot *snap)
{
	int result;

	if (!atomic_load(&snap->stop))
		files_check(snap);
	/*
	 * Tracked: what is still protected is what nobody wrote; keep it.
	 * An untracked delta ends tracking, which left the pages outside it
	 * protected (the writer releases only batches that hold the delta's
	 * pages): lifted here, before the fault thread lets go.
	 */
	if ((atomic_load(&snap->stop) || snap->delta) &&
	    (!snap->track || atomic_load(&snap->ctx->track.broken)))
		lift_all(snap, snap->nregions);
	snap_disarm(snap);
	if (!atomic_load(&snap->stop))
		snap_commit(snap);
	if (atomic_load(&snap->stop)) {
		snap_take_sink_error(snap);
		snap->sink->ops->abort(snap->sink);
	}
	atomic_store(&snap->end_ns, ls_now_ns());
	pthread_mutex_lock(&snap->lock);
	result = atomic_load(&snap->failed) ? snap->fail_code : 0;
	if (result)
		ls_err_copy(snap->ctx, snap->err);
	pthread_mutex_unlock(&snap->lock);
	track_end(snap, result);
	atomic_store(&snap->state, !result		    ? LS_SNAP_COMPLETED
				   : result == -ECANCELED ? LS_SNAP_CANCELLED
							  : LS_SNAP_FAILED);
	ls_done_set(&snap->end, result);
}

void ls_snapshot_cancel(struct ls_snapshot *snap)
{
	bool ended = false;

	if (!snap)
		return;
	pthread_mutex_lock(&snap->lock);
	if (atomic_load(&snap->state) == LS_SNAP_SETUP &&
	    !ls_done_is(&snap->end, NULL)) {
		/* Never begun: it ends here. */
		snprintf(snap->err, sizeof(snap->err), "snapshot cancelled");
		atomic_store(&snap->failed, true);
		snap->fail_code = -ECANCELED;
		atomic_store(&snap->state, LS_SNAP_CANCELLED);
		snap->setup_cancel = true;
		pthread_cond_broadcast(&snap->cond); /* the parked writer */
		ls_done_set(&snap->end, -ECANCELED);
		ended = true;
	}
	pthread_mutex_unlock(&snap->lock);
	if (!ended) {
		snap_fail(snap, -ECANCELED, "snapshot cancelled");
		return;
	}
	if (snap->ctx)
		snap_unprepare(snap, snap->ctx);
	if (snap->sink_started)
		snap->sink->ops->abort(snap->sink);
}

int ls_snapshot_wait(struct ls_snapshot *snap)
{
	if (!snap)
		return -EINVAL;
	if (atomic_load(&snap->state) == LS_SNAP_SETUP &&
	    !ls_done_is(&snap->end, NULL))
		return ls_err(snap->ctx, EINVAL, "snapshot: not begun");
	return ls_done_wait(&snap->end);
}

int ls_snapshot_poll(struct ls_snapshot *snap)
{
	if (!snap)
		return -EINVAL;
	if (!ls_done_is(&snap->end, NULL) &&
	    atomic_load(&snap->state) == LS_SNAP_ACTIVE)
		return -EAGAIN;
	return ls_snapshot_wait(snap);
}

static uint64_t snap_elapsed(const struct ls_snapshot *snap)
{
	uint64_t end = atomic_load(&snap->end_ns);
	uint64_t begin = atomic_load(&snap->begin_ns);

	if (!begin)
		return 0;
	return (end ? end : ls_now_ns()) - begin;
}

int ls_snapshot_progress(struct ls_snapshot *snap, struct ls_progress *p)
{
	if (!snap || !p)
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	p->state = (enum ls_snapshot_state)atomic_load(&snap->state);
	p->pages_total = snap->pages_total;
	p->pages_done = atomic_load(&snap->pages_done);
	p->bytes_written = atomic_load(&snap->bytes_written);
	p->elapsed_ns = snap_elapsed(snap);
	if (p->elapsed_ns)
		p->rate_bps = (double)p->bytes_written * 1e9 /
			      (double)p->elapsed_ns;
	return 0;
}

int ls_snapshot_stats(struct ls_snapshot *snap, struct ls_stats *st)
{
	if (!snap || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	st->pages_total = snap->pages_total;
	st->pages_written = atomic_load(&snap->pages_written);
	st->pages_zero = atomic_load(&snap->pages_zero);
	st->pages_copied = atomic_load(&snap->pages_copied);
	st->faults = atomic_load(&snap->faults);
	st->faults_write_first = atomic_load(&snap->faults_write_first);
	pthread_mutex_lock(&snap->ring.lock);
	st->copy_buffer_hwm = snap->ring.hwm_slots * LS_SMALL_PAGE;
	pthread_mutex_unlock(&snap->ring.lock);
	st->bytes_written = atomic_load(&snap->bytes_written);
	st->arm_ns = atomic_load(&snap->arm_ns);
	st->total_ns = snap_elapsed(snap);
	ls_hist_read(snap->hist, st->stall_hist);
	st->stall_max_ns = atomic_load(&snap->stall_max);
	st->stall_p50_ns =
		ls_hist_pct_capped(st->stall_hist, 0.5, st->stall_max_ns);
	st->stall_p99_ns =
		ls_hist_pct_capped(st->stall_hist, 0.99, st->stall_max_ns);
	st->stall_p999_ns =
		ls_hist_pct_capped(st->stall_hist, 0.999, st->stall_max_ns);
	return 0;
}

int ls_snapshot_id(const struct ls_snapshot *snap, uint8_t id[LS_ID_BYTES],
		   uint8_t parent[LS_ID_BYTES])
{
	if (!snap)
		return -EINVAL;
	if (id)
		memcpy(id, snap->id, LS_ID_BYTES);
	if (parent)
		memcpy(parent, snap->parent, LS_ID_BYTES);
	return snap->delta ? 1 : 0;
}

const char *ls_snapshot_error(const struct ls_snapshot *snap)
{
	struct ls_snapshot *s = (struct ls_snapshot *)snap;

	if (!s || (!atomic_load(&s->failed) && !atomic_load(&s->begin_failed)))
		return "";
	return snap->err;
}

void ls_snapshot_detach(struct ls_snapshot *snap)
{
	struct ls_ctx *ctx = snap->ctx;

	if (!ctx)
		return;
	snap_unprepare(snap, ctx);
	pthread_mutex_lock(&ctx->lock);
	if (ctx->snap == snap)
		ctx->snap = NULL;
	snap_svc_cool(snap, ctx);
	snap_buffers_return(snap, ctx);
	pthread_mutex_unlock(&ctx->lock);
	snap->ctx = NULL;
}

void ls_snapshot_destroy(struct ls_snapshot *snap)
{
	if (!snap)
		return;
	if (atomic_load(&snap->state) == LS_SNAP_ACTIVE) {
		ls_snapshot_cancel(snap);
		ls_snapshot_wait(snap);
	} else if (atomic_load(&snap->state) == LS_SNAP_SETUP) {
		ls_snapshot_cancel(snap);
		ls_snapshot_wait(snap); /* joins the parked writer */
	} else {
		ls_snapshot_wait(snap); /* joins the writer thread */
	}
	ls_snapshot_detach(snap);
	ls_sink_destroy(snap->sink);
	snap_free(snap);
}
