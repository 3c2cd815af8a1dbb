/* SPDX-License-Identifier: MIT */
/*
 * bench_engine: what a live snapshot costs the application and how fast it
 * goes. Writer threads store into anonymous memory (THP or 4 KiB pages) in a
 * tight loop; for each configuration the program measures their throughput
 * before the snapshot, quiesces them, calls ls_snapshot_begin(), resumes
 * them and measures again until the snapshot ends. Each store is timed, so
 * the stalls are what the writers saw (not only the engine's own
 * fault-read-to-wake histogram, which is reported next to them).
 *
 * Sinks: "discard" (accepts and drops every page: the engine's own ceiling)
 * and "file" (the real file sink, ls_sink_file_create, in --dir). The plain
 * bandwidth of the file sink for the same memory, written without a
 * snapshot, is measured in the same run.
 *
 * With -m, the memory is a memfd (MAP_SHARED, 4 KiB pages) of 1 and 4 GiB,
 * each snapshot taken once with ls_snapshot_prepare() before the writers
 * are quiesced and once without: the arm column is then the pause's arm
 * (the prepare's own time is in the strategy column; the writers ran
 * through it).
 *
 * Usage: bench_engine [-q] [-m] [-d DIR]   (-q: the 1 GiB part only)
 * Output: one markdown table row per configuration on stdout.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "livesnap.h"

#define GiB (1ull << 30)
#define MiB (1ull << 20)
#define MAX_WRITERS 8
#define HOT_BYTES (64 * MiB)

enum pattern {
	PAT_HOTCOLD, /* 99 % of stores into a 64 MiB hot set, 1 % anywhere */
	PAT_UNIFORM, /* every store at a uniformly random place */
};

struct config {
	uint64_t bytes;
	bool thp;
	enum ls_strategy strategy;
	bool file_sink;
	int spin_us; /* 0: engine default, < 0: block */
	enum pattern pattern;
	int writers;
	bool keep_thp;
	bool memfd;   /* a memfd, MAP_SHARED, instead of anonymous memory */
	bool prepare; /* ls_snapshot_prepare() before the writers stop */
};

/* ---------------- writers ---------------- */

struct writer {
	pthread_t th;
	struct bench *b;
	int id;
	_Atomic uint64_t ops;
	_Atomic uint64_t hist[64]; /* per-store latency, log2 ns */
	_Atomic uint64_t max_ns;
};

struct bench {
	unsigned char *map, *mem;
	uint64_t len;
	enum pattern pattern;
	int nwriters;
	struct writer w[MAX_WRITERS];
	atomic_bool quit, pause_req, record;
	atomic_int paused;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t pick_offset(struct bench *b, uint64_t *seed)
{
	uint64_t r = xorshift(seed);

	if (b->pattern == PAT_HOTCOLD && r % 100) {
		uint64_t hot = b->len < HOT_BYTES ? b->len : HOT_BYTES;

		return (r >> 8) % hot & ~63ull;
	}
	return (r >> 8) % b->len & ~63ull;
}

static void record(struct writer *w, uint64_t ns)
{
	unsigned bucket = ns ? 63u - (unsigned)__builtin_clzll(ns) : 0;
	uint64_t old = atomic_load_explicit(&w->max_ns, memory_order_relaxed);

	atomic_fetch_add_explicit(&w->hist[bucket], 1, memory_order_relaxed);
	if (ns > old)
		atomic_store_explicit(&w->max_ns, ns, memory_order_relaxed);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct bench *b = w->b;
	uint64_t seed = 0x2545f4914f6cdd1dull * (uint64_t)(w->id + 1);

	while (!atomic_load_explicit(&b->quit, memory_order_relaxed)) {
		uint64_t t0, t1, off;

		if (atomic_load_explicit(&b->pause_req, memory_order_relaxed)) {
			atomic_fetch_add(&b->paused, 1);
			while (atomic_load(&b->pause_req))
				__builtin_ia32_pause();
			atomic_fetch_sub(&b->paused, 1);
			continue;
		}
		off = pick_offset(b, &seed);
		t0 = now_ns();
		/* one cache line: 8 stores */
		for (int i = 0; i < 8; i++)
			((volatile uint64_t *)(b->mem + off))[i] = t0 + (uint64_t)i;
		t1 = now_ns();
		atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
		if (atomic_load_explicit(&b->record, memory_order_relaxed))
			record(w, t1 - t0);
	}
	return NULL;
}

static uint64_t total_ops(struct bench *b)
{
	uint64_t n = 0;

	for (int i = 0; i < b->nwriters; i++)
		n += atomic_load(&b->w[i].ops);
	return n;
}

static void writers_start(struct bench *b)
{
	atomic_store(&b->quit, false);
	for (int i = 0; i < b->nwriters; i++) {
		struct writer *w = &b->w[i];

		memset(w->hist, 0, sizeof(w->hist));
		atomic_store(&w->ops, 0);
		atomic_store(&w->max_ns, 0);
		w->b = b;
		w->id = i;
		if (pthread_create(&w->th, NULL, writer_main, w)) {
			perror("pthread_create");
			exit(1);
		}
	}
}

static void writers_stop(struct bench *b)
{
	atomic_store(&b->quit, true);
	atomic_store(&b->pause_req, false);
	for (int i = 0; i < b->nwriters; i++)
		pthread_join(b->w[i].th, NULL);
}

static void writers_pause(struct bench *b)
{
	atomic_store(&b->pause_req, true);
	while (atomic_load(&b->paused) < b->nwriters)
		;
}

/* ---------------- sinks ---------------- */

struct discard_sink {
	struct ls_sink base;
};

static int ds_start(struct ls_sink *s, const struct ls_layout *l)
{
	return 0;
}

static int ds_write(struct ls_sink *s, uint32_t r, uint64_t first,
		    const void *data, uint64_t n)
{
	return 0;
}

static int ds_blob(struct ls_sink *s, const char *name, const void *d,
		   size_t len)
{
	return 0;
}

static int ds_commit(struct ls_sink *s)
{
	return 0;
}

static void ds_abort(struct ls_sink *s)
{
}

static void ds_destroy(struct ls_sink *s)
{
	free(s);
}

static const struct ls_sink_ops discard_ops = {
	ds_start, ds_write, ds_blob, ds_commit, ds_abort, ds_destroy,
};

static const char *bench_dir = "/var/tmp";

static struct ls_sink *sink_new(bool file, char *path, size_t pathlen)
{
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;

	if (!file) {
		struct discard_sink *d = calloc(1, sizeof(*d));

		d->base.ops = &discard_ops;
		return &d->base;
	}
	snprintf(path, pathlen, "%s/bench-engine-%d.lsnap", bench_dir,
		 getpid());
	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err))) {
		fprintf(stderr, "file sink: %s\n", err);
		exit(1);
	}
	return sink;
}

/* The file sink alone: the same memory written without a snapshot. */
static double sink_only_mbps(const struct bench *b)
{
	struct ls_layout_region lr = {.name = "ram", .len = b->len,
				      .page_size = 4096, .type = LS_MEM_ANON};
	struct ls_layout layout = {.nregions = 1, .regions = &lr};
	uint64_t t0, chunk = 2 * MiB;
	char path[256];
	struct ls_sink *sink = sink_new(true, path, sizeof(path));

	sync();
	t0 = now_ns();
	if (sink->ops->start(sink, &layout))
		goto fail;
	for (uint64_t off = 0; off < b->len; off += chunk)
		if (sink->ops->write_pages(sink, 0, off / 4096, b->mem + off,
					   chunk / 4096))
			goto fail;
	if (sink->ops->commit(sink))
		goto fail;
	t0 = now_ns() - t0;
	ls_sink_destroy(sink);
	unlink(path);
	return (double)b->len / 1e6 / ((double)t0 / 1e9);
fail:
	fprintf(stderr, "file sink: %s\n", sink->error);
	exit(1);
}

/* ---------------- one run ---------------- */

static const char *strategy_name(enum ls_strategy s, bool keep_thp)
{
	if (keep_thp)
		return s == LS_STRATEGY_AUTO ? "auto+keep_thp" : "copy+keep_thp";
	return s == LS_STRATEGY_AUTO ? "auto"
	       : s == LS_STRATEGY_COPY ? "copy"
				       : "write-first";
}

static uint64_t hist_pct(const uint64_t *h, double q)
{
	return ls_hist_percentile(h, q);
}

static void print_us(uint64_t ns)
{
	if (ns >= 10000000)
		printf(" %.0f ms |", (double)ns / 1e6);
	else
		printf(" %.1f |", (double)ns / 1e3);
}

/* AnonHugePages of the process, in percent of the bench memory. */
static double thp_percent(const struct bench *b)
{
	unsigned long long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return 100.0 * (double)kb * 1024 / (double)b->len;
}

/* A second snapshot right after the first: what a split THP costs. */
static double rearm_ms(struct ls_ctx *ctx)
{
	struct discard_sink *d = calloc(1, sizeof(*d));
	struct ls_snapshot *snap;
	struct ls_stats st;

	d->base.ops = &discard_ops;
	if (ls_snapshot_create(ctx, &d->base, NULL, &snap) ||
	    ls_snapshot_begin(snap) || ls_snapshot_wait(snap)) {
		fprintf(stderr, "re-arm snapshot: %s\n", ls_ctx_error(ctx));
		exit(1);
	}
	ls_snapshot_stats(snap, &st);
	ls_snapshot_destroy(snap);
	return (double)st.arm_ns / 1e6;
}

static void bench_map(struct bench *b, uint64_t bytes, bool thp, bool memfd);
static void bench_unmap(struct bench *b);

static void run(struct bench *b, const struct config *c)
{
	struct ls_snapshot_opts o = {.strategy = c->strategy,
				     .fault_spin_us = c->spin_us,
				     .keep_thp = c->keep_thp};
	uint64_t ops0, t_before, t0, t1, ops1, ops2, wh[64] = {0}, wmax = 0;
	double before, during, mbps, sink_mbps = 0, thp;
	char err[LS_ERRMSG_MAX], path[256] = "", sinkcol[64], strat[64];
	double prep_ms = 0;
	struct ls_snapshot *snap;
	struct ls_ctx *ctx;
	struct ls_stats st;
	int ret;

	bench_map(b, c->bytes, c->thp, c->memfd);
	thp = thp_percent(b);
	if (ls_ctx_create(&ctx, err, sizeof(err)) ||
	    ls_region_add(ctx, "ram", b->mem, b->len) < 0) {
		fprintf(stderr, "setup: %s %s\n", err, ctx ? ls_ctx_error(ctx) : "");
		exit(1);
	}
	b->pattern = c->pattern;
	b->nwriters = c->writers;
	atomic_store(&b->record, false);
	writers_start(b);
	usleep(200000); /* warm up */
	ops0 = total_ops(b);
	t_before = now_ns();
	usleep(1000000);
	before = (double)(total_ops(b) - ops0) * 1e9 /
		 (double)(now_ns() - t_before);
	if (c->file_sink) {
		/*
		 * The first pass warms the page cache's memory (this VM's host
		 * reclaims idle memory; a cold first touch is several times
		 * slower); the second is the sink's own bandwidth, measured
		 * with the writers running, as during the snapshot.
		 */
		sink_only_mbps(b);
		sink_mbps = sink_only_mbps(b);
	}
	if (ls_snapshot_create(ctx, sink_new(c->file_sink, path, sizeof(path)),
			       &o, &snap)) {
		fprintf(stderr, "create: %s\n", ls_ctx_error(ctx));
		exit(1);
	}
	if (c->prepare) {
		uint64_t tp = now_ns();

		if (ls_snapshot_prepare(snap)) {
			fprintf(stderr, "prepare: %s\n", ls_ctx_error(ctx));
			exit(1);
		}
		prep_ms = (double)(now_ns() - tp) / 1e6;
		usleep(20000); /* writes between the prepare and the pause */
	}
	writers_pause(b);
	for (int i = 0; i < b->nwriters; i++) {
		memset(b->w[i].hist, 0, sizeof(b->w[i].hist));
		atomic_store(&b->w[i].max_ns, 0);
	}
	atomic_store(&b->record, true);
	ret = ls_snapshot_begin(snap);
	ops1 = total_ops(b);
	t0 = now_ns();
	atomic_store(&b->pause_req, false);
	if (ret) {
		fprintf(stderr, "begin: %s\n", ls_ctx_error(ctx));
		exit(1);
	}
	ret = ls_snapshot_wait(snap);
	t1 = now_ns();
	ops2 = total_ops(b);
	atomic_store(&b->record, false);
	writers_stop(b);
	if (ret) {
		fprintf(stderr, "snapshot: %s\n", ls_snapshot_error(snap));
		exit(1);
	}
	ls_snapshot_stats(snap, &st);
	ls_snapshot_destroy(snap);
	if (path[0])
		unlink(path);
	for (int i = 0; i < b->nwriters; i++) {
		for (int k = 0; k < 64; k++)
			wh[k] += atomic_load(&b->w[i].hist[k]);
		if (atomic_load(&b->w[i].max_ns) > wmax)
			wmax = atomic_load(&b->w[i].max_ns);
	}
	during = (double)(ops2 - ops1) * 1e9 / (double)(t1 - t0);
	mbps = (double)st.bytes_written / 1e6 / ((double)st.total_ns / 1e9);
	snprintf(strat, sizeof(strat), "%s", strategy_name(c->strategy, c->keep_thp));
	if (c->prepare)
		snprintf(strat, sizeof(strat), "%s, prepared (%.1f ms)",
			 strategy_name(c->strategy, c->keep_thp), prep_ms);
	printf("| %llu GiB | %s %.0f%% | %s | %s | %s | %d | %s | %.3f | %.3f | %.0f |",
	       (unsigned long long)(c->bytes / GiB),
	       c->memfd ? "memfd 4K" : c->thp ? "THP" : "4K", thp,
	       c->pattern == PAT_HOTCOLD ? "hot/cold" : "uniform", strat,
	       c->file_sink ? "file" : "discard",
	       c->writers,
	       c->spin_us < 0 ? "block" : c->spin_us ? "spin" : "default",
	       (double)st.arm_ns / 1e6, rearm_ms(ctx),
	       (double)st.total_ns / 1e6);
	if (c->file_sink)
		snprintf(sinkcol, sizeof(sinkcol), "%.0f (%.0f %%)", sink_mbps,
			 100.0 * mbps / sink_mbps);
	else
		snprintf(sinkcol, sizeof(sinkcol), "n/a (no-op)");
	printf(" %.0f | %s |", mbps, sinkcol);
	printf(" %llu |", (unsigned long long)st.faults);
	print_us(st.stall_p50_ns);
	print_us(st.stall_p99_ns);
	print_us(st.stall_p999_ns);
	print_us(st.stall_max_ns);
	print_us(hist_pct(wh, 0.99));
	print_us(hist_pct(wh, 0.999));
	print_us(wmax);
	printf(" %.2f | %.2f | %.2f |\n", before / 1e6, during / 1e6,
	       during / before);
	fflush(stdout);
	ls_ctx_destroy(ctx);
	bench_unmap(b);
}

static void header(void)
{
	printf("| size | pages (THP) | writes | strategy | sink | writers | "
	       "fault thread | arm ms | re-arm ms | total ms | snapshot MB/s | "
	       "sink-only MB/s "
	       "(ratio) | faults | engine stall p50 us | p99 | p99.9 | max | "
	       "writer-seen p99 us | p99.9 | max | Mops/s before | during | "
	       "ratio |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	       "---|---|---|---|---|---|---|---|\n");
}

/* Maps and fills the memory once per size and page kind. */
static void bench_map(struct bench *b, uint64_t bytes, bool thp, bool memfd)
{
	int fd = -1;

	b->len = bytes;
	if (memfd) {
		fd = memfd_create("bench", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)(bytes + 2 * MiB))) {
			perror("memfd_create/ftruncate");
			exit(1);
		}
	}
	b->map = mmap(NULL, bytes + 2 * MiB, PROT_READ | PROT_WRITE,
		      memfd ? MAP_SHARED
			    : MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		      fd, 0);
	if (fd >= 0)
		close(fd);
	if (b->map == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	b->mem = (unsigned char *)(((uintptr_t)b->map + 2 * MiB - 1) &
				   ~(uintptr_t)(2 * MiB - 1));
	madvise(b->mem, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (uint64_t off = 0; off < bytes; off += 4096)
		memset(b->mem + off, (int)(off >> 12) | 1, 4096);
}

static void bench_unmap(struct bench *b)
{
	munmap(b->map, b->len + 2 * MiB);
}

struct size_plan {
	uint64_t gib;
	bool thp;
	bool all_strategies, file, uniform, spin_variants, two_writers;
};

static void run_plan(struct bench *b, const struct size_plan *p)
{
	const enum ls_strategy all[] = {LS_STRATEGY_AUTO, LS_STRATEGY_COPY,
					LS_STRATEGY_WRITE_FIRST};
	int nstrat = p->all_strategies ? 3 : 1;
	struct config c = {.bytes = p->gib * GiB, .thp = p->thp, .writers = 1};

	for (int s = 0; s < nstrat; s++) {
		c.strategy = all[s];
		c.file_sink = false;
		run(b, &c);
		if (p->file) {
			c.file_sink = true;
			run(b, &c);
		}
	}
	if (p->thp) {
		/* Whole huge pages captured on a fault: re-arm stays cheap. */
		c.strategy = p->all_strategies ? LS_STRATEGY_COPY
					       : LS_STRATEGY_AUTO;
		c.keep_thp = true;
		c.file_sink = false;
		run(b, &c);
		if (p->file && p->all_strategies) {
			c.file_sink = true;
			run(b, &c);
		}
		c.keep_thp = false;
	}
	c.strategy = LS_STRATEGY_COPY;
	c.file_sink = false;
	if (p->spin_variants) {
		const int spins[] = {-1, 50};

		for (int i = 0; i < 2; i++) {
			c.spin_us = spins[i];
			run(b, &c);
		}
		c.spin_us = 0;
	}
	if (p->uniform) {
		c.pattern = PAT_UNIFORM;
		run(b, &c);
		c.pattern = PAT_HOTCOLD;
	}
	if (p->two_writers) {
		c.writers = 2;
		run(b, &c);
		c.writers = 1;
	}
}

/* -m: memfd memory, each snapshot without and with a prepare. */
static void run_memfd(struct bench *b)
{
	struct config c = {.strategy = LS_STRATEGY_COPY, .writers = 1,
			   .memfd = true};
	const uint64_t gib[] = {1, 4};

	for (int i = 0; i < 2; i++) {
		c.bytes = gib[i] * GiB;
		for (int rep = 0; rep < 2; rep++) {
			c.prepare = false;
			run(b, &c);
			c.prepare = true;
			run(b, &c);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct size_plan full[] = {
		{1, true, true, true, true, true, true},
		{1, false, true, true, false, false, false},
		{4, true, true, true, false, false, false},
		{8, true, false, true, false, false, false},
		{8, false, false, false, false, false, false},
	};
	static const struct size_plan quick[] = {
		{1, true, true, true, true, true, true},
	};
	const struct size_plan *plan = full;
	size_t nplan = sizeof(full) / sizeof(full[0]);
	static struct bench b;
	bool memfd = false;
	int opt;

	while ((opt = getopt(argc, argv, "qmd:")) != -1) {
		if (opt == 'm') {
			memfd = true;
		} else if (opt == 'q') {
			plan = quick;
			nplan = 1;
		} else if (opt == 'd') {
			bench_dir = optarg;
		} else {
			fprintf(stderr, "usage: %s [-q] [-m] [-d DIR]\n", argv[0]);
			return 2;
		}
	}
	header();
	if (memfd) {
		run_memfd(&b);
		return 0;
	}
	for (size_t i = 0; i < nplan; i++)
		run_plan(&b, &plan[i]);
	return 0;
}
