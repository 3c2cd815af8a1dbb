/* SPDX-License-Identifier: MIT */
/*
 * Context and regions: feature probes, memory type detection, refusals with
 * messages, snapshot bookkeeping (blobs, one per context, zero pages) and
 * the stall histogram.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"

static struct ls_ctx *ctx_new(void)
{
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;

	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ls_ctx_create: %s", err);
	return ctx;
}

static void expect_error(struct ls_ctx *ctx, int ret, int want,
			 const char *needle1, const char *needle2)
{
	const char *msg = ls_ctx_error(ctx);

	CHECK(ret == want, "got %d, want %d (%s)", ret, want, msg);
	CHECK(strstr(msg, needle1), "message '%s' lacks '%s'", msg, needle1);
	if (needle2)
		CHECK(strstr(msg, needle2), "message '%s' lacks '%s'", msg,
		      needle2);
}

static void test_features(void **state)
{
	const unsigned want = LS_FEAT_WP | LS_FEAT_WP_SHMEM_HUGETLB |
			      LS_FEAT_WP_UNPOPULATED | LS_FEAT_WP_ASYNC |
			      LS_FEAT_PAGEMAP_SCAN | LS_FEAT_MISSING_SHMEM |
			      LS_FEAT_MISSING_HUGETLB | LS_FEAT_EVENT_REMOVE;
	struct ls_ctx *ctx = ctx_new();

	(void)state;
	/* This project's kernels (>= 6.7) have them all: a miss is a bug. */
	CHECK((ls_ctx_features(ctx) & want) == want,
	      "features 0x%x, expected at least 0x%x", ls_ctx_features(ctx),
	      want);
	CHECK(!strcmp(ls_ctx_error(ctx), ""), "error set after create");
	CHECK(ls_region_count(ctx) == 0, "fresh context has regions");
	ls_ctx_destroy(ctx);
}

/*
 * Discard events: a madvise(MADV_DONTNEED) or MADV_REMOVE over a region
 * waits until the event is read. With no snapshot, tracking or restore
 * ever started, the context's fault thread must still read it: each
 * returns (else the alarm ends the test).
 */
static void test_discard_idle(void **state)
{
	static const enum mem_kind kinds[] = {MEM_ANON_4K, MEM_ANON_THP,
					      MEM_MEMFD};

	(void)state;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct ls_ctx *ctx = ctx_new();
		struct test_mem m;

		mem_map(&m, kinds[k], 4 * MB);
		memset(m.addr, 0x5a, m.len);
		CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add: %s",
		      ls_ctx_error(ctx));
		alarm(60);
		for (int i = 0; i < 64; i++)
			CHECK(!madvise(m.addr + (size_t)i * 4096, 4096,
				       kinds[k] == MEM_MEMFD ? MADV_REMOVE
							     : MADV_DONTNEED),
			      "%s: madvise: %s", mem_kind_name(kinds[k]),
			      strerror(errno));
		alarm(0);
		CHECK(m.addr[0] == 0 && m.addr[64 * 4096] == 0x5a,
		      "%s: the discards did not happen",
		      mem_kind_name(kinds[k]));
		ls_ctx_destroy(ctx);
		mem_unmap(&m);
	}
}

/*
 * ls_ctx_create_opts: LS_CTX_NO_DISCARD_EVENTS leaves the context without
 * its own fault thread (nothing waits for a madvise); bad flags and
 * reserved words are refused with a message.
 */
static void test_ctx_opts(void **state)
{
	struct ls_ctx_opts o = {.flags = LS_CTX_NO_DISCARD_EVENTS};
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	struct test_mem m;
	int none, ret;

	(void)state;
	none = threads_settled(-1);
	CHECK(!ls_ctx_create_opts(&ctx, &o, err, sizeof(err)), "create: %s",
	      err);
	CHECK(threads_settled(none) == none,
	      "a context without discard events started %d threads",
	      threads_settled(none) - none);
	mem_map(&m, MEM_ANON_4K, 2 * MB);
	CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add: %s",
	      ls_ctx_error(ctx));
	CHECK(!madvise(m.addr, m.len, MADV_DONTNEED), "madvise: %s",
	      strerror(errno));
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
	CHECK(!ls_ctx_create_opts(&ctx, NULL, err, sizeof(err)),
	      "create (NULL options): %s", err);
	ls_ctx_destroy(ctx);
	o.flags = 1u << 9;
	ret = ls_ctx_create_opts(&ctx, &o, err, sizeof(err));
	CHECK(ret == -EINVAL && !ctx && strstr(err, "unknown flags 0x200"),
	      "unknown flag: %d '%s'", ret, err);
	o.flags = 0;
	o.reserved[3] = 1;
	ret = ls_ctx_create_opts(&ctx, &o, err, sizeof(err));
	CHECK(ret == -EINVAL && !ctx && strstr(err, "reserved[3]"),
	      "reserved word: %d '%s'", ret, err);
}

static void test_region_types(void **state)
{
	struct test_mem m[MEM_NKINDS];
	struct ls_region_info info;
	struct ls_ctx *ctx = ctx_new();
	char name[16];

	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++) {
		mem_map(&m[k], (enum mem_kind)k, 4 * MB);
		snprintf(name, sizeof(name), "r%d", k);
		CHECK(ls_region_add(ctx, name, m[k].addr, m[k].len) == k,
		      "add %s: %s", mem_kind_name((enum mem_kind)k),
		      ls_ctx_error(ctx));
	}
	CHECK(ls_region_count(ctx) == MEM_NKINDS, "count");
	for (int k = 0; k < MEM_NKINDS; k++) {
		CHECK(!ls_region_get(ctx, k, &info), "get");
		snprintf(name, sizeof(name), "r%d", k);
		CHECK(!strcmp(info.name, name) && info.addr == m[k].addr &&
			      info.len == m[k].len,
		      "region %d info", k);
		CHECK(info.type == mem_kind_type((enum mem_kind)k),
		      "%s detected as type %d", mem_kind_name((enum mem_kind)k),
		      info.type);
		CHECK(info.page_size == m[k].page_size,
		      "%s page size %zu", mem_kind_name((enum mem_kind)k),
		      info.page_size);
	}
	CHECK(ls_region_get(ctx, MEM_NKINDS, &info) == -EINVAL, "bad index");
	/* Remove the middle one: later indices move down by one. */
	CHECK(!ls_region_remove(ctx, 1), "remove: %s", ls_ctx_error(ctx));
	CHECK(ls_region_count(ctx) == MEM_NKINDS - 1, "count after remove");
	CHECK(!ls_region_get(ctx, 1, &info) && info.addr == m[2].addr,
	      "indices after remove");
	/* The range is free again. */
	CHECK(ls_region_add(ctx, "again", m[1].addr, m[1].len) >= 0,
	      "re-add after remove: %s", ls_ctx_error(ctx));
	ls_ctx_destroy(ctx);
	for (int k = 0; k < MEM_NKINDS; k++)
		mem_unmap(&m[k]);
}

static void *map_file(const char *path, size_t len, int flags, int *fdp)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	void *p;

	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	CHECK(!ftruncate(fd, (off_t)len), "ftruncate");
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
	CHECK(p != MAP_FAILED, "mmap %s: %s", path, strerror(errno));
	unlink(path);
	*fdp = fd;
	return p;
}

static void test_refusals(void **state)
{
	char path[64];
	struct ls_ctx *ctx = ctx_new();
	struct test_mem a;
	void *f, *g;
	int fd, gd;

	(void)state;
	snprintf(path, sizeof(path), "/var/tmp/ls-test-%d", getpid());
	f = map_file(path, 1 * MB, MAP_PRIVATE, &fd);
	expect_error(ctx, ls_region_add(ctx, "privfile", f, 1 * MB), -EINVAL,
		     "'privfile'", "private file mapping");
	g = map_file(path, 1 * MB, MAP_SHARED, &gd);
	expect_error(ctx, ls_region_add(ctx, "sharedfile", g, 1 * MB), -EINVAL,
		     "'sharedfile'", "not shmem");
	munmap(f, 1 * MB);
	munmap(g, 1 * MB);
	close(fd);
	close(gd);

	mem_map(&a, MEM_ANON_THP, 8 * MB);
	CHECK(ls_region_add(ctx, "a", a.addr, 4 * MB) == 0, "add a: %s",
	      ls_ctx_error(ctx));
	expect_error(ctx, ls_region_add(ctx, "b", a.addr + 2 * MB, 4 * MB),
		     -EINVAL, "'b'", "overlaps region 'a'");
	expect_error(ctx, ls_region_add(ctx, "a", a.addr + 4 * MB, 4 * MB),
		     -EEXIST, "'a'", "already registered");
	expect_error(ctx, ls_region_add(ctx, "c", a.addr + 4 * MB + 100, 4096),
		     -EINVAL, "'c'", "aligned");
	expect_error(ctx, ls_region_add(ctx, "", a.addr + 4 * MB, 4096),
		     -EINVAL, "name", NULL);
	/* A hole in the middle of the range. */
	munmap(a.addr + 6 * MB, 4096);
	expect_error(ctx, ls_region_add(ctx, "hole", a.addr + 4 * MB, 4 * MB),
		     -EFAULT, "'hole'", "nothing is mapped");
	CHECK(ls_region_count(ctx) == 1, "refused regions were counted");
	ls_ctx_destroy(ctx);
	mem_unmap(&a);
}

/* One range over an anonymous mapping followed by a memfd mapping. */
static void test_mixed_types(void **state)
{
	struct ls_ctx *ctx = ctx_new();
	struct test_mem m, h;
	int fd;
	void *p;

	(void)state;
	mem_map(&m, MEM_ANON_4K, 8 * MB);
	fd = memfd_create("mixed", MFD_CLOEXEC);
	CHECK(fd >= 0 && !ftruncate(fd, 4 * MB), "memfd");
	p = mmap(m.addr + 4 * MB, 4 * MB, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, fd, 0);
	CHECK(p == m.addr + 4 * MB, "mmap fixed");
	expect_error(ctx, ls_region_add(ctx, "mixed", m.addr, 8 * MB), -EINVAL,
		     "'mixed'", "different types");
	/* hugetlb needs 2 MiB alignment of address and length */
	mem_map(&h, MEM_HUGETLB, 4 * MB);
	expect_error(ctx, ls_region_add(ctx, "half", h.addr, 1 * MB), -EINVAL,
		     "'half'", "2097152-byte pages");
	ls_ctx_destroy(ctx);
	close(fd);
	mem_unmap(&m);
	mem_unmap(&h);
}

static void test_hist_percentile(void **state)
{
	uint64_t h[LS_HIST_BUCKETS] = {0};
	uint64_t p50, p99;

	(void)state;
	CHECK(ls_hist_percentile(h, 0.5) == 0, "empty histogram");
	h[10] = 90; /* [1024, 2048) ns */
	h[20] = 10; /* [1 Mi, 2 Mi) ns */
	p50 = ls_hist_percentile(h, 0.5);
	p99 = ls_hist_percentile(h, 0.99);
	CHECK(p50 >= 1024 && p50 < 2048, "p50 %llu", (unsigned long long)p50);
	CHECK(p99 >= (1u << 20) && p99 < (2u << 20), "p99 %llu",
	      (unsigned long long)p99);
	CHECK(ls_hist_percentile(h, 0.0) == 0 && ls_hist_percentile(h, 1.0) == 0,
	      "q outside (0, 1)");
}

/* Snapshot of idle memory: zero pages, untouched pages stay untouched. */
static void test_idle_snapshot(void **state)
{
	struct ls_ctx *ctx = ctx_new();
	struct mem_sink *s = mem_sink_new();
	struct mem_sink *s2 = mem_sink_new();
	struct ls_snapshot *snap, *other;
	struct test_mem m, h, sh;
	unsigned char *ref;
	struct ls_stats st;
	const char *blob = "device state";

	(void)state;
	mem_map(&m, MEM_ANON_4K, 8 * MB);
	mem_map(&h, MEM_HUGETLB, 4 * MB);
	fill_random(m.addr, 4 * MB, 4096, 30, 7); /* upper half untouched */
	fill_random(h.addr, h.len, h.page_size, 50, 8);
	mem_map(&sh, MEM_MEMFD, 8 * MB);
	fill_random(sh.addr, 4 * MB, 4096, 30, 9); /* upper half: holes */
	CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add");
	CHECK(ls_region_add(ctx, "huge", h.addr, h.len) == 1, "add");
	CHECK(ls_region_add(ctx, "shm", sh.addr, sh.len) == 2, "add");
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	other = (struct ls_snapshot *)1;
	expect_error(ctx,
		     ls_snapshot_create(ctx, &s2->base, NULL, &other), -EBUSY,
		     "already has a snapshot", NULL);
	CHECK(other == NULL && s2->destroyed,
	      "failed create: result set or sink not destroyed");
	mem_sink_free(s2);
	expect_error(ctx, ls_region_add(ctx, "late", m.addr, 4096), -EBUSY,
		     "snapshot", NULL);
	CHECK(ls_snapshot_wait(snap) == -EINVAL, "wait before begin");
	CHECK(!ls_snapshot_add_blob(snap, "dev", blob, strlen(blob)), "blob");
	CHECK(ls_snapshot_add_blob(snap, "dev", blob, 3) == -EEXIST,
	      "duplicate blob");
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	CHECK(ls_snapshot_begin(snap) == -EINVAL, "begin twice");
	CHECK(!ls_snapshot_add_blob(snap, "cpu", "x", 1), "blob while active");
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	CHECK(ls_snapshot_add_blob(snap, "late", "x", 1) == -EINVAL,
	      "blob after the end");
	CHECK(s->nblobs == 2 && !s->blob_after_commit && s->committed,
	      "blobs %u, after commit %d", s->nblobs, s->blob_after_commit);
	CHECK(!strcmp(s->blob_name[0], "dev") &&
		      s->blob_len[0] == strlen(blob),
	      "blob 0");
	/* The untouched half was neither read nor populated. */
	CHECK(!mincore_any(m.addr + 4 * MB, 4 * MB),
	      "the snapshot populated never-touched pages");
	CHECK(!mincore_any(sh.addr + 4 * MB, 4 * MB),
	      "the snapshot allocated the holes of a memfd");
	mem_sink_expect(s, 2, sh.addr, sh.len);
	mem_sink_expect(s, 0, m.addr, m.len);
	ref = malloc(h.len);
	memcpy(ref, h.addr, h.len);
	mem_sink_expect(s, 1, ref, h.len);
	free(ref);
	CHECK(!ls_snapshot_stats(snap, &st), "stats");
	CHECK(st.faults == 0 && st.pages_written + st.pages_zero == st.pages_total,
	      "idle stats");
	CHECK(st.pages_total == 2048 + 2 + 2048, "pages_total %llu",
	      (unsigned long long)st.pages_total);
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
	mem_unmap(&h);
	mem_unmap(&sh);
}

/*
 * A snapshot starts its writer and fault threads at create (out of the
 * caller's pause, see snap_start_threads); one that never begins must
 * still end them: destroyed, cancelled then destroyed, or left to
 * ls_ctx_destroy, and a begin after a cancel is refused. The context's
 * own fault thread (discard events) ends with the context.
 */
static void test_never_begun(void **state)
{
	struct test_mem m;
	int none, base;

	(void)state;
	mem_map(&m, MEM_ANON_4K, 2 * MB);
	none = threads_settled(-1);
	for (int way = 0; way < 3; way++) {
		struct ls_ctx *ctx = ctx_new();
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot *snap;

		base = threads_settled(-1);
		CHECK(base == none + !!(ls_ctx_features(ctx) &
					LS_FEAT_EVENT_REMOVE),
		      "a context started %d threads", base - none);
		CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add");
		CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap),
		      "create: %s", ls_ctx_error(ctx));
		CHECK(threads_settled(-1) > base, "create started no thread");
		if (way == 1) {
			ls_snapshot_cancel(snap);
			CHECK(ls_snapshot_begin(snap) == -EINVAL,
			      "begin after cancel");
			CHECK(ls_snapshot_wait(snap) == -ECANCELED, "wait");
		}
		if (way == 2) { /* the context goes first */
			ls_ctx_destroy(ctx);
			CHECK(threads_settled(none) == none,
			      "ls_ctx_destroy left %d threads",
			      threads_settled(none) - none);
			ls_snapshot_destroy(snap);
		} else {
			ls_snapshot_destroy(snap);
			CHECK(threads_settled(base) == base,
			      "way %d: destroy left %d threads", way,
			      threads_settled(base) - base);
			ls_ctx_destroy(ctx);
			CHECK(threads_settled(none) == none,
			      "way %d: ls_ctx_destroy left %d threads", way,
			      threads_settled(none) - none);
		}
		CHECK(s->aborted && !s->committed && s->destroyed,
		      "way %d: sink aborted %d committed %d", way, s->aborted,
		      s->committed);
		mem_sink_free(s);
	}
	mem_unmap(&m);
}

/* The tid of this process's thread named `name`, or 0. */
static pid_t thread_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t found = 0;

	CHECK(d, "opendir /proc/self/task");
	while ((e = readdir(d)) && !found) {
		char path[300], comm[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* the thread ended */
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
		if (!strcmp(comm, name))
			found = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return found;
}

/* Begins and waits for snap, checks it holds m whole, frees it and s. */
static void finish_whole(struct ls_ctx *ctx, struct ls_snapshot *snap,
			 struct mem_sink *s, struct test_mem *m)
{
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	mem_sink_expect(s, 0, m->addr, m->len);
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
}

/*
 * writer_idle: the writer (named, like the fault thread) runs SCHED_IDLE
 * from create on, and the snapshot is whole; without it, SCHED_BATCH (it
 * must not preempt the caller that wakes it in its pause).
 */
static void test_writer_idle(void **state)
{
	struct test_mem m;

	(void)state;
	mem_map(&m, MEM_ANON_4K, 4 * MB);
	fill_random(m.addr, m.len, 4096, 60, 11);
	for (int idle = 0; idle < 2; idle++) {
		struct ls_snapshot_opts o = {.writer_idle = idle};
		struct ls_ctx *ctx = ctx_new();
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot *snap;
		pid_t writer;
		int policy;

		CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add");
		CHECK(!ls_snapshot_create(ctx, &s->base, &o, &snap),
		      "create: %s", ls_ctx_error(ctx));
		writer = thread_named("ls-writer");
		CHECK(writer > 0, "no thread named ls-writer");
		CHECK(thread_named("ls-faults") > 0,
		      "no thread named ls-faults");
		policy = sched_getscheduler(writer);
		CHECK(policy == (idle ? SCHED_IDLE : SCHED_BATCH),
		      "writer_idle %d: the writer's policy is %d", idle,
		      policy);
		finish_whole(ctx, snap, s, &m);
		ls_ctx_destroy(ctx);
	}
	mem_unmap(&m);
}

static void *spin_hard(void *arg)
{
	atomic_bool *stop = arg;

	/* nice -20: a SCHED_IDLE thread on this CPU gets ~0.003 % of it */
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), -20);
	while (!atomic_load(stop))
		;
	return NULL;
}

/*
 * writer_idle where nothing else runs the writer: every thread of the
 * snapshot on one CPU with a busy thread (a VMM pinned to one CPU with a
 * busy vCPU). The starved writer goes back to SCHED_OTHER and the snapshot
 * ends whole; without that guard it would not end (the test times out).
 */
static void test_writer_idle_starved(void **state)
{
	cpu_set_t one, all;
	atomic_bool stop = false;
	struct test_mem m;
	pthread_t spinner;

	(void)state;
	CHECK(!sched_getaffinity(0, sizeof(all), &all), "sched_getaffinity");
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all)) {
			CPU_SET(c, &one);
			break;
		}
	mem_map(&m, MEM_ANON_4K, 16 * MB);
	fill_random(m.addr, m.len, 4096, 90, 12);
	/* threads made from here on (fault thread, writer) inherit it */
	CHECK(!sched_setaffinity(0, sizeof(one), &one), "sched_setaffinity");
	{
		struct ls_snapshot_opts o = {.writer_idle = true};
		struct ls_ctx *ctx = ctx_new();
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot *snap;

		CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add");
		CHECK(!ls_snapshot_create(ctx, &s->base, &o, &snap),
		      "create: %s", ls_ctx_error(ctx));
		CHECK(!pthread_create(&spinner, NULL, spin_hard, &stop),
		      "pthread_create");
		CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
		CHECK(!ls_snapshot_wait(snap), "wait: %s",
		      ls_snapshot_error(snap));
		atomic_store(&stop, true);
		pthread_join(spinner, NULL);
		CHECK(!sched_setaffinity(0, sizeof(all), &all),
		      "sched_setaffinity");
		mem_sink_expect(s, 0, m.addr, m.len);
		ls_snapshot_destroy(snap);
		mem_sink_free(s);
		ls_ctx_destroy(ctx);
	}
	mem_unmap(&m);
}

/*
 * Bytes of this process's mappings marked MADV_HUGEPAGE ("hg" in smaps):
 * the engine's prefaulted buffers (lib/engine/util.c); the test memory
 * here is MADV_NOHUGEPAGE. Adjacent buffers merge into one mapping, so
 * sizes are summed, not counted.
 */
static unsigned long hugepage_advised_bytes(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long lo = 0, hi = 0, sum = 0;
	char line[512];

	CHECK(f, "fopen /proc/self/smaps");
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			continue;
		if (!strncmp(line, "VmFlags:", 8) && strstr(line, " hg"))
			sum += hi - lo;
	}
	fclose(f);
	return sum;
}

/*
 * A snapshot's prefaulted buffers stay with the context after destroy,
 * the next snapshot takes them again (nothing new mapped), and
 * ls_ctx_destroy frees them.
 */
static void test_buffers_reused(void **state)
{
	struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_COPY,
				     .copy_buffer_bytes = 3 * MB};
	struct ls_ctx *ctx = ctx_new();
	unsigned long before, kept = 0;
	struct test_mem m;

	(void)state;
	mem_map(&m, MEM_ANON_4K, 4 * MB);
	fill_random(m.addr, m.len, 4096, 60, 12);
	CHECK(ls_region_add(ctx, "ram", m.addr, m.len) == 0, "add");
	before = hugepage_advised_bytes();
	for (int i = 0; i < 3; i++) {
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot *snap;

		CHECK(!ls_snapshot_create(ctx, &s->base, &o, &snap),
		      "create: %s", ls_ctx_error(ctx));
		if (!i)
			kept = hugepage_advised_bytes() - before;
		CHECK(kept >= 3 * MB &&
			      hugepage_advised_bytes() - before == kept,
		      "snapshot %d: %lu bytes of buffers, the first had %lu",
		      i, hugepage_advised_bytes() - before, kept);
		finish_whole(ctx, snap, s, &m);
		CHECK(hugepage_advised_bytes() - before == kept,
		      "the context did not keep the buffers");
	}
	ls_ctx_destroy(ctx);
	CHECK(hugepage_advised_bytes() == before,
	      "ls_ctx_destroy left %lu bytes of buffers",
	      hugepage_advised_bytes() - before);
	mem_unmap(&m);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_discard_idle),
		cmocka_unit_test(test_ctx_opts),
		cmocka_unit_test(test_region_types),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_mixed_types),
		cmocka_unit_test(test_hist_percentile),
		cmocka_unit_test(test_idle_snapshot),
		cmocka_unit_test(test_never_begun),
		cmocka_unit_test(test_writer_idle),
		cmocka_unit_test(test_writer_idle_starved),
		cmocka_unit_test(test_buffers_reused),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
