/* SPDX-License-Identifier: MIT */
/*
 * bench_track: full against incremental live snapshots of process memory,
 * and what write tracking costs.
 *
 * 1. First write to a page (one thread writes one word into each page of
 *    the working set, in order), ns per page: memory already writable
 *    (the floor), tracked by liblivesnap (a fault-thread round trip), and a
 *    raw UFFD_FEATURE_WP_ASYNC descriptor (the kernel resolves the fault;
 *    what the engine cannot use between snapshots, see docs/engine.md).
 * 2. Memory of M MiB, all of it non-zero data, writer threads storing
 *    random words into the first W MiB (the working set) without pause.
 *    A series of full snapshots, then a chain (a tracked full snapshot and
 *    deltas), to snapshot files in DIR, one every interval: per snapshot
 *    the pause (ls_snapshot_begin() with the writers stopped), bytes
 *    written, snapshot time, and the writers' store rate during the
 *    snapshot and in the interval before it.
 *    Also madvise(MADV_DONTNEED) of a page, ns per call: plain memory and
 *    a region of a context (discard events: each call waits for the
 *    context's fault thread to read its event).
 * 3. Restore of the chain ending at file 1, 4 and 16 (or what was taken):
 *    eager (ls_chain_restore_region) and lazy (to the end of the prefetch).
 *
 * Usage: bench_track [-m MiB] [-w MiB] [-t threads] [-i interval_ms]
 *                    [-f full_snapshots] [-n deltas] [-d DIR] [-g bytes]
 *                    [-s spin_us] [-4]
 *   -4: 4 KiB pages (MADV_NOHUGEPAGE) instead of THP.
 *   -g: ls_snapshot_opts.track_granule (0: one page, exact).
 *   -s: ls_snapshot_opts.fault_spin_us (0: the default, block; it applies
 *       to tracking faults between snapshots too).
 *   -a: after each tracked snapshot, stop the writers once more and
 *       ls_track_settle(): tracking between snapshots by the kernel's
 *       asynchronous write protection (the time of that stop is reported).
 * Output: markdown tables on stdout. Files are removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "livesnap.h"

#define MiB (1ull << 20)
#define PAGE 4096ull
#define MAX_CHAIN 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench_track: %s: %s\n", what, why);
	exit(1);
}

static unsigned char *map_mem(uint64_t len, bool thp)
{
	unsigned char *p = mmap(NULL, len + 2 * MiB, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap", strerror(errno));
	p = (unsigned char *)(((uintptr_t)p + 2 * MiB - 1) & ~(2 * MiB - 1));
	madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return p;
}

/* Non-zero data in every page, as a database's or a guest's memory. */
static void fill(unsigned char *p, uint64_t len)
{
	for (uint64_t off = 0; off < len; off += 8)
		*(uint64_t *)(p + off) = off * 0x9e3779b97f4a7c15ull | 1;
}

static double touch_all(unsigned char *p, uint64_t len)
{
	uint64_t t0 = now_ns();

	for (uint64_t off = 0; off < len; off += PAGE)
		((volatile unsigned char *)p)[off + 8] = 2;
	return (double)(now_ns() - t0) / (double)(len / PAGE);
}

/* ---------------- 1: first-write cost ---------------- */

/* A sink that drops everything (the snapshot that arms tracking). */
static int ns_start(struct ls_sink *s, const struct ls_layout *l)
{
	return 0;
}

static int ns_write(struct ls_sink *s, uint32_t r, uint64_t f, const void *d,
		    uint64_t n)
{
	return 0;
}

static int ns_blob(struct ls_sink *s, const char *n, const void *d, size_t l)
{
	return 0;
}

static int ns_commit(struct ls_sink *s)
{
	return 0;
}

static void ns_abort(struct ls_sink *s)
{
}

static void ns_destroy(struct ls_sink *s)
{
	free(s);
}

static const struct ls_sink_ops null_ops = {
    ns_start, ns_write, ns_blob, ns_commit, ns_abort, ns_destroy,
};

/* Tracking armed by a tracked snapshot with this granule. */
static int spin_us;
static bool settle; /* -a */
static bool prepare; /* -p: ls_snapshot_prepare() before the writers stop */
static bool sleepy; /* -z: quiesced writers sleep instead of spinning */

static void track_by_snapshot(struct ls_ctx *ctx, size_t granule)
{
	struct ls_snapshot_opts o = {.track = true, .track_granule = granule,
				     .fault_spin_us = spin_us};
	struct ls_sink *sink = calloc(1, sizeof(*sink));
	struct ls_snapshot *snap;

	if (!sink)
		die("calloc", "out of memory");
	sink->ops = &null_ops;
	if (ls_snapshot_create(ctx, sink, &o, &snap) ||
	    ls_snapshot_begin(snap) || ls_snapshot_wait(snap))
		die("tracked snapshot", ls_ctx_error(ctx));
	ls_snapshot_destroy(snap);
	if (settle && ls_track_settle(ctx))
		die("ls_track_settle", ls_ctx_error(ctx));
}

/* how: 0 writable, 1 tracked, 2 raw WP_ASYNC, 3 tracked with a 2 MiB granule */
static double first_write(uint64_t len, bool thp, int how)
{
	unsigned char *p = map_mem(len, thp);
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx = NULL;
	int fd = -1;
	double ns;

	fill(p, len);
	if (how == 1 || how == 3) {
		if (ls_ctx_create(&ctx, err, sizeof(err)))
			die("ls_ctx_create", err);
		if (ls_region_add(ctx, "ram", p, len) < 0)
			die("tracking", ls_ctx_error(ctx));
		track_by_snapshot(ctx, how == 3 ? 2 * MiB : 0);
	} else if (how == 2) {
		struct uffdio_api api = {
		    .api = UFFD_API,
		    .features = UFFD_FEATURE_WP_ASYNC |
				UFFD_FEATURE_WP_UNPOPULATED};
		struct uffdio_register reg = {
		    .range = {(uint64_t)(uintptr_t)p, len},
		    .mode = UFFDIO_REGISTER_MODE_WP};
		struct uffdio_writeprotect wp = {
		    .range = reg.range, .mode = UFFDIO_WRITEPROTECT_MODE_WP};

		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (fd < 0 || ioctl(fd, UFFDIO_API, &api) ||
		    ioctl(fd, UFFDIO_REGISTER, &reg) ||
		    ioctl(fd, UFFDIO_WRITEPROTECT, &wp))
			die("userfaultfd WP_ASYNC", strerror(errno));
	}
	ns = touch_all(p, len);
	if (ctx)
		ls_ctx_destroy(ctx);
	if (fd >= 0)
		close(fd);
	munmap(p, len);
	return ns;
}

/*
 * madvise(MADV_DONTNEED) of one 4 KiB page that holds data, ns per call,
 * over len bytes page by page: plain memory, or a region of a context
 * (with discard events each call waits until the fault thread has read
 * its event; tracking on or off, the same).
 */
static double discard_cost(uint64_t len, bool thp, bool registered)
{
	unsigned char *p = map_mem(len, thp);
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx = NULL;
	uint64_t t0;
	double ns;

	fill(p, len);
	if (registered) {
		if (ls_ctx_create(&ctx, err, sizeof(err)))
			die("ls_ctx_create", err);
		if (ls_region_add(ctx, "ram", p, len) < 0)
			die("ls_region_add", ls_ctx_error(ctx));
	}
	t0 = now_ns();
	for (uint64_t off = 0; off < len; off += PAGE)
		if (madvise(p + off, PAGE, MADV_DONTNEED))
			die("madvise", strerror(errno));
	ns = (double)(now_ns() - t0) / (double)(len / PAGE);
	if (ctx)
		ls_ctx_destroy(ctx);
	munmap(p, len);
	return ns;
}

/* ---------------- writers ---------------- */

struct bench {
	unsigned char *mem;
	uint64_t len, ws;
	int nthreads;
	pthread_t th[8];
	atomic_bool quit;
	atomic_int pause_req, paused;
	_Atomic uint64_t ops;
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *writer(void *arg)
{
	struct bench *b = arg;
	uint64_t seed = (uint64_t)(uintptr_t)&seed | 1, n = 0;

	while (!atomic_load(&b->quit)) {
		if (atomic_load(&b->pause_req)) {
			atomic_fetch_add(&b->ops, n);
			n = 0;
			atomic_fetch_add(&b->paused, 1);
			while (atomic_load(&b->pause_req) &&
			       !atomic_load(&b->quit)) {
				if (sleepy)
					syscall(SYS_futex, &b->pause_req,
						FUTEX_WAIT_PRIVATE, 1, NULL);
				else
					sched_yield();
			}
			atomic_fetch_sub(&b->paused, 1);
			continue;
		}
		((volatile uint64_t *)b->mem)[rnd(&seed) % (b->ws / 8)] = n | 1;
		if (++n == 64) {
			atomic_fetch_add(&b->ops, n);
			n = 0;
		}
	}
	return NULL;
}

static void pause_all(struct bench *b)
{
	atomic_store(&b->pause_req, 1);
	while (atomic_load(&b->paused) < b->nthreads)
		sched_yield();
}

static void resume_all(struct bench *b)
{
	atomic_store(&b->pause_req, 0);
	if (sleepy)
		syscall(SYS_futex, &b->pause_req, FUTEX_WAKE_PRIVATE, INT_MAX);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

struct row {
	double settle_ms;     /* -a: the writers' second stop */
	double control_mops;  /* the interval before that (see below) */
	double interval_mops; /* writer stores/s in the interval before */
	double during_mops;   /* and during the snapshot */
	double prepare_ms, pause_ms, arm_ms, total_ms;
	uint64_t bytes;
};

/* One snapshot to path; the interval before it has passed. */
static void snapshot(struct ls_ctx *ctx, struct bench *b, const char *path,
		     const struct ls_snapshot_opts *o, struct row *row)
{
	char err[LS_ERRMSG_MAX];
	struct ls_snapshot *snap;
	struct ls_sink *sink;
	struct ls_stats st;
	uint64_t t0, o0;

	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err)))
		die(path, err);
	if (ls_snapshot_create(ctx, sink, o, &snap))
		die("ls_snapshot_create", ls_ctx_error(ctx));
	t0 = now_ns();
	if (prepare && ls_snapshot_prepare(snap))
		die("ls_snapshot_prepare", ls_ctx_error(ctx));
	row->prepare_ms = (double)(now_ns() - t0) / 1e6;
	pause_all(b);
	t0 = now_ns();
	if (ls_snapshot_begin(snap))
		die("ls_snapshot_begin", ls_ctx_error(ctx));
	row->pause_ms = (double)(now_ns() - t0) / 1e6;
	o0 = atomic_load(&b->ops);
	resume_all(b);
	if (ls_snapshot_wait(snap))
		die("snapshot", ls_snapshot_error(snap));
	row->during_mops = (double)(atomic_load(&b->ops) - o0) * 1e3 /
			   (double)(now_ns() - t0);
	row->settle_ms = 0;
	if (settle && o->track) {
		pause_all(b);
		t0 = now_ns();
		if (ls_track_settle(ctx))
			die("ls_track_settle", ls_ctx_error(ctx));
		row->settle_ms = (double)(now_ns() - t0) / 1e6;
		resume_all(b);
	}
	ls_snapshot_stats(snap, &st);
	row->arm_ms = (double)st.arm_ns / 1e6;
	row->total_ms = (double)st.total_ns / 1e6;
	row->bytes = st.bytes_written;
	ls_snapshot_destroy(snap);
}

static double interval(struct bench *b, unsigned ms)
{
	uint64_t o0 = atomic_load(&b->ops), t0 = now_ns();

	sleep_ms(ms);
	return (double)(atomic_load(&b->ops) - o0) * 1e3 /
	       (double)(now_ns() - t0);
}

static void print_row(const char *what, int k, const struct row *r)
{
	printf("| %s %d | %.3f | %.3f | %.3f | %.3f | %.0f | %.1f | %.2f | %.2f | %.2f |\n",
	       what, k, r->prepare_ms, r->pause_ms, r->arm_ms, r->settle_ms,
	       r->total_ms,
	       (double)r->bytes / (double)MiB, r->control_mops,
	       r->interval_mops, r->during_mops);
}

/* ---------------- 3: restore ---------------- */

static void restore_chain(const char *path, uint64_t len, int n)
{
	char err[LS_ERRMSG_MAX];
	struct ls_chain *c;
	struct ls_source *src;
	struct ls_restore *r;
	struct ls_ctx *ctx;
	unsigned char *mem;
	double eager, lazy;
	uint64_t t0;

	/* Cold-ish: drop the files from the page cache first. */
	sync();
	{
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

		if (fd >= 0) {
			if (write(fd, "1", 1) < 0) {
				/* not root: warm cache, said in the report */
			}
			close(fd);
		}
	}
	t0 = now_ns();
	if (ls_chain_open(path, &c, err, sizeof(err)))
		die("ls_chain_open", err);
	mem = map_mem(len, true);
	if (ls_chain_restore_region(c, 0, mem, len))
		die("eager restore", ls_chain_error(c));
	eager = (double)(now_ns() - t0) / 1e6;
	munmap(mem, len);
	ls_chain_close(c);

	t0 = now_ns();
	if (ls_chain_open(path, &c, err, sizeof(err)))
		die("ls_chain_open", err);
	mem = map_mem(len, true);
	if (ls_ctx_create(&ctx, err, sizeof(err)))
		die("ls_ctx_create", err);
	if (ls_region_add(ctx, "ram", mem, len) < 0 || ls_chain_source(c, &src) ||
	    ls_restore_start(ctx, 0, src, 0, LS_RESTORE_LAZY, &r) ||
	    ls_restore_wait(r))
		die("lazy restore", ls_ctx_error(ctx));
	lazy = (double)(now_ns() - t0) / 1e6;
	ls_restore_destroy(r);
	ls_source_destroy(src);
	ls_ctx_destroy(ctx);
	munmap(mem, len);
	ls_chain_close(c);
	printf("| %d | %.0f | %.0f |\n", n, eager, lazy);
}

int main(int argc, char **argv)
{
	uint64_t mib = 4096, ws_mib = 256;
	unsigned ival = 2000;
	int nfull = 3, ndelta = 16, c;
	size_t granule = 0;
	const char *dir = "/var/tmp";
	bool thp = true;
	struct bench b = {.nthreads = 2};
	char err[LS_ERRMSG_MAX], path[MAX_CHAIN][512], fpath[512];
	struct ls_ctx *ctx;
	struct row row, sum_full = {0}, sum_inc = {0};

	while ((c = getopt(argc, argv, "m:w:t:i:f:n:d:g:s:4apz")) != -1) {
		switch (c) {
		case 'm': mib = strtoull(optarg, NULL, 0); break;
		case 'w': ws_mib = strtoull(optarg, NULL, 0); break;
		case 't': b.nthreads = atoi(optarg); break;
		case 'i': ival = (unsigned)atoi(optarg); break;
		case 'f': nfull = atoi(optarg); break;
		case 'n': ndelta = atoi(optarg); break;
		case 'd': dir = optarg; break;
		case 'g': granule = strtoull(optarg, NULL, 0); break;
		case 's': spin_us = atoi(optarg); break;
		case '4': thp = false; break;
		case 'a': settle = true; break;
		case 'p': prepare = true; break;
		case 'z': sleepy = true; break;
		default:
			fprintf(stderr, "usage: bench_track [-m MiB] [-w MiB] [-t threads] [-i ms] [-f full] [-n deltas] [-d DIR] [-g bytes] [-s spin_us] [-4] [-a] [-p] [-z]\n");
			return 2;
		}
	}
	if (b.nthreads < 1 || b.nthreads > 8 || ws_mib > mib || !ws_mib ||
	    ndelta < 0 || ndelta >= MAX_CHAIN || nfull < 1)
		die("options", "1-8 threads, 0 < working set <= memory, 0-63 deltas");
	printf("memory %llu MiB (%s, all non-zero), working set %llu MiB, %d writer threads, interval %u ms, track granule %zu, fault spin %d us, %s between snapshots, %s, %s, files in %s\n\n",
	       (unsigned long long)mib, thp ? "THP" : "4 KiB pages",
	       (unsigned long long)ws_mib, b.nthreads, ival, granule, spin_us,
	       settle ? "settled (asynchronous) tracking" : "write faults",
	       prepare ? "each snapshot prepared (ls_snapshot_prepare) before the writers stop" : "no prepare",
	       sleepy ? "quiesced writers sleep (futex)" : "quiesced writers spin (sched_yield)",
	       dir);

	printf("| first write to a page (%llu MiB, one thread) | ns/page |\n|---|---:|\n",
	       (unsigned long long)ws_mib);
	printf("| already writable | %.0f |\n", first_write(ws_mib * MiB, thp, 0));
	printf("| tracked (liblivesnap: %s) | %.0f |\n",
	       settle ? "settled, the kernel resolves" : "fault-thread round trip",
	       first_write(ws_mib * MiB, thp, 1));
	printf("| tracked, 2 MiB granule (one fault per 2 MiB) | %.0f |\n",
	       first_write(ws_mib * MiB, thp, 3));
	printf("| raw WP_ASYNC descriptor (kernel resolves) | %.0f |\n\n",
	       first_write(ws_mib * MiB, thp, 2));
	printf("| madvise(MADV_DONTNEED) of one 4 KiB page (64 MiB, one thread) | ns/call |\n|---|---:|\n");
	printf("| plain memory | %.0f |\n", discard_cost(64 * MiB, thp, false));
	printf("| a region of a context (%s) | %.0f |\n\n",
	       "discard events: waits for the fault thread",
	       discard_cost(64 * MiB, thp, true));
	fflush(stdout);

	b.len = mib * MiB;
	b.ws = ws_mib * MiB;
	b.mem = map_mem(b.len, thp);
	fill(b.mem, b.len);
	if (ls_ctx_create(&ctx, err, sizeof(err)))
		die("ls_ctx_create", err);
	if (ls_region_add(ctx, "ram", b.mem, b.len) < 0)
		die("ls_region_add", ls_ctx_error(ctx));
	atomic_store(&b.pause_req, 1);
	for (int i = 0; i < b.nthreads; i++)
		pthread_create(&b.th[i], NULL, writer, &b);
	pause_all(&b);
	resume_all(&b);

	/*
	 * Each snapshot: a control interval, then the interval before it,
	 * back to back. In the chain the control interval follows the last
	 * snapshot's end plus one interval, so the working set is written
	 * free there (every block already released): the two rates differ by
	 * what tracking costs, under the same background load.
	 */
	printf("| snapshot | prepare ms | pause ms | arm ms | settle ms | total ms | MiB written | Mstores/s control | before | during |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	snprintf(fpath, sizeof(fpath), "%s/bench-track-full.snap", dir);
	for (int k = 0; k < nfull; k++) {
		struct ls_snapshot_opts o = {.fault_spin_us = spin_us};

		row.control_mops = interval(&b, ival);
		row.interval_mops = interval(&b, ival);
		snapshot(ctx, &b, fpath, &o, &row);
		print_row("full", k, &row);
		fflush(stdout);
		unlink(fpath);
		if (k) {
			sum_full.interval_mops += row.interval_mops;
			sum_full.pause_ms += row.pause_ms;
		}
	}
	for (int k = 0; k <= ndelta; k++) {
		struct ls_snapshot_opts o = {.track = true, .delta = k > 0,
					     .track_granule = granule,
					     .fault_spin_us = spin_us};

		snprintf(path[k], sizeof(path[k]), "%s/bench-track-%d.snap",
			 dir, k);
		/* the first interval: first writes since the last begin */
		row.interval_mops = interval(&b, ival);
		row.control_mops = interval(&b, ival);
		snapshot(ctx, &b, path[k], &o, &row);
		print_row(k ? "delta" : "tracked full", k, &row);
		fflush(stdout);
		if (k) {
			sum_inc.interval_mops += row.interval_mops;
			sum_inc.control_mops += row.control_mops;
			sum_inc.pause_ms += row.pause_ms;
		}
	}
	/*
	 * A full snapshot at the chain's end: the same memory as the last
	 * delta's (a working set that per-page tracking left in 4 KiB
	 * entries), which is what a delta's pause compares with.
	 */
	if (ndelta) {
		struct ls_snapshot_opts o = {.track = true,
					     .fault_spin_us = spin_us};

		row.interval_mops = interval(&b, ival);
		row.control_mops = interval(&b, ival);
		snapshot(ctx, &b, fpath, &o, &row);
		print_row("full after the chain", ndelta + 1, &row);
		unlink(fpath);
	}
	atomic_store(&b.quit, true);
	resume_all(&b);
	for (int i = 0; i < b.nthreads; i++)
		pthread_join(b.th[i], NULL);
	ls_ctx_destroy(ctx);
	munmap(b.mem, b.len);
	if (nfull > 1 && ndelta)
		printf("\nbetween snapshots, in the chain: %.2f Mstores/s in the first interval after a snapshot (the working set's first writes tracked), %.2f in the next (%+.1f%%); full series %.2f; mean pause %.3f ms full, %.3f ms delta\n",
		       sum_inc.interval_mops / ndelta,
		       sum_inc.control_mops / ndelta,
		       100.0 * (sum_inc.interval_mops / sum_inc.control_mops -
				1.0),
		       sum_full.interval_mops / (nfull - 1),
		       sum_full.pause_ms / (nfull - 1),
		       sum_inc.pause_ms / ndelta);

	printf("\n| restore, chain of | eager ms | lazy ms (to the last page) |\n|---:|---:|---:|\n");
	for (int n = 1; n <= ndelta + 1; n *= 4)
		restore_chain(path[n - 1], mib * MiB, n);
	if (ndelta + 1 != 1 && ndelta + 1 != 4 && ndelta + 1 != 16)
		restore_chain(path[ndelta], mib * MiB, ndelta + 1);
	for (int k = 0; k <= ndelta; k++)
		unlink(path[k]);
	return 0;
}
