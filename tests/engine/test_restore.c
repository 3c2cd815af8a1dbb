/* SPDX-License-Identifier: MIT */
/*
 * Restore mechanics from an in-memory source: lazy restore with several
 * threads touching pages while the prefetch runs (every touched page must
 * read the source's bytes at once), the whole region afterwards, a live
 * snapshot of the restored region, eager restore, a failing source, a lazy
 * restore whose prefetch is held (LAZY_HOLD), and the refusals while a lazy
 * restore runs.
 */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"

#define NTOUCHERS 4
#define TOUCHES 256

static _Atomic unsigned touched;

struct toucher {
	pthread_t th;
	const unsigned char *mem, *src;
	size_t len, ps;
	unsigned seed;
	uint64_t bad;
};

/*
 * Reads random pages (never page 0, where the prefetch waits until a
 * quarter of the touches are done; the rest race with the prefetch).
 */
static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	uint64_t npages = t->len / t->ps, s = t->seed * 7919u + 17;

	for (int i = 0; i < TOUCHES; i++) {
		uint64_t page;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		page = 1 + s % (npages - 1);
		if (memcmp(t->mem + page * t->ps, t->src + page * t->ps, t->ps))
			t->bad++;
		atomic_fetch_add(&touched, 1);
	}
	return NULL;
}

/* While a lazy restore runs, a snapshot cannot begin. */
static void expect_busy(struct ls_ctx *ctx)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	int ret;

	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	ret = ls_snapshot_begin(snap);
	CHECK(ret == -EBUSY, "begin during lazy restore returned %d: %s", ret,
	      ls_ctx_error(ctx));
	CHECK(strstr(ls_ctx_error(ctx), "'ram'") &&
		      strstr(ls_ctx_error(ctx), "restored lazily"),
	      "message '%s'", ls_ctx_error(ctx));
	CHECK(!strcmp(ls_snapshot_error(snap), ls_ctx_error(ctx)),
	      "snapshot error '%s' after a refused begin",
	      ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	CHECK(s->aborted || !s->committed, "refused snapshot committed");
	mem_sink_free(s);
}

static void lazy_round_trip(enum mem_kind kind, size_t len)
{
	struct ls_snapshot_opts o = {0};
	struct toucher t[NTOUCHERS];
	struct ls_restore_stats rs;
	struct ls_restore *r, *r2;
	struct mem_source src;
	struct test_mem m;
	struct writers w;
	struct ls_stats st;
	struct ls_ctx *ctx;
	unsigned char *data, *ref;

	mem_map(&m, kind, len);
	data = malloc(len);
	ref = malloc(len);
	CHECK(data && ref, "out of memory");
	memset(data, 0, len);
	fill_random(data, len, m.page_size, 60, 11 + (unsigned)kind);
	mem_source_init(&src, data, len, m.page_size);
	atomic_store(&src.hold, true); /* prefetch waits at page 0 */
	ctx = ctx_with_ram(&m);
	CHECK(!ls_restore_start(ctx, 0, &src.base, 0, LS_RESTORE_LAZY, &r),
	      "restore_start: %s", ls_ctx_error(ctx));
	expect_busy(ctx);
	CHECK(ls_restore_start(ctx, 0, &src.base, 0, LS_RESTORE_LAZY, &r2) ==
			      -EBUSY &&
		      !r2,
	      "a second lazy restore of the same region");
	atomic_store(&touched, 0);
	for (int i = 0; i < NTOUCHERS; i++) {
		t[i] = (struct toucher){.mem = m.addr, .src = data,
					.len = len, .ps = m.page_size,
					.seed = (unsigned)i + 1};
		CHECK(!pthread_create(&t[i].th, NULL, toucher_main, &t[i]),
		      "pthread_create");
	}
	while (atomic_load(&touched) < NTOUCHERS * TOUCHES / 4)
		sched_yield();
	atomic_store(&src.hold, false); /* the prefetch runs from here on */
	for (int i = 0; i < NTOUCHERS; i++) {
		pthread_join(t[i].th, NULL);
		CHECK(!t[i].bad, "toucher %d read %llu wrong pages", i,
		      (unsigned long long)t[i].bad);
	}
	CHECK(!ls_restore_wait(r), "restore_wait: %s", ls_ctx_error(ctx));
	CHECK(!ls_restore_stats(r, &rs), "restore stats");
	CHECK(rs.complete && rs.pages_done == rs.pages_total &&
		      rs.pages_total == len / m.page_size,
	      "restore stats: complete %d, %llu of %llu", rs.complete,
	      (unsigned long long)rs.pages_done,
	      (unsigned long long)rs.pages_total);
	CHECK(rs.faults > 0 && rs.fault_p50_ns <= rs.fault_max_ns,
	      "touches before the prefetch were not served as faults");
	CHECK(src.calls_max <= 2, "more than two concurrent source reads");
	CHECK(!memcmp(m.addr, data, len), "restored memory differs");
	ls_restore_destroy(r);

	/* The restored region is an ordinary region again: snapshot it. */
	writers_start(&w, m.addr, len, m.page_size, 4);
	exact_snapshot(ctx, &m, &w, &o, ref, &st);
	writers_stop(&w);
	ls_ctx_destroy(ctx);
	free(data);
	free(ref);
	mem_unmap(&m);
}

static void test_lazy_anon_4k(void **state)
{
	(void)state;
	lazy_round_trip(MEM_ANON_4K, 32 * MB);
}

static void test_lazy_anon_thp(void **state)
{
	(void)state;
	lazy_round_trip(MEM_ANON_THP, 32 * MB);
}

static void test_lazy_memfd(void **state)
{
	(void)state;
	lazy_round_trip(MEM_MEMFD, 32 * MB);
}

static void test_lazy_hugetlb(void **state)
{
	(void)state;
	lazy_round_trip(MEM_HUGETLB, 16 * MB);
}

static void test_lazy_memfd_hugetlb(void **state)
{
	(void)state;
	lazy_round_trip(MEM_MEMFD_HUGE, 16 * MB);
}

static void eager(enum mem_kind kind, size_t len)
{
	struct ls_restore_stats rs;
	struct ls_restore *r;
	struct mem_source src;
	struct test_mem m;
	struct ls_ctx *ctx;
	unsigned char *data = calloc(1, len);

	CHECK(data, "out of memory");
	mem_map(&m, kind, len);
	fill_random(data, len, m.page_size, 50, 5);
	mem_source_init(&src, data, len, m.page_size);
	ctx = ctx_with_ram(&m);
	CHECK(!ls_restore_start(ctx, 0, &src.base, 0, LS_RESTORE_EAGER, &r),
	      "eager: %s", ls_ctx_error(ctx));
	CHECK(!ls_restore_stats(r, &rs) && rs.complete &&
		      rs.pages_done == rs.pages_total && rs.faults == 0,
	      "eager stats");
	CHECK(!ls_restore_wait(r), "wait");
	CHECK(!memcmp(m.addr, data, len), "eager restore differs");
	ls_restore_destroy(r);
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
	free(data);
}

static void test_eager_anon(void **state)
{
	(void)state;
	eager(MEM_ANON_THP, 16 * MB);
}

static void test_eager_hugetlb(void **state)
{
	(void)state;
	eager(MEM_MEMFD_HUGE, 8 * MB);
}

/*
 * LAZY_HOLD: touches are served while the prefetch is held (it has done
 * nothing, whatever the timing); ls_restore_prefetch() lets it finish.
 * With let_go false the restore is destroyed while still held, which
 * must let it go too rather than wait for ever.
 */
static void lazy_hold(bool let_go)
{
	static const uint64_t pages[] = {5, 100, 1000, 2047};
	const size_t len = 8 * MB, ps = 4096;
	struct ls_restore_stats rs;
	struct ls_restore *r;
	struct mem_source src;
	struct test_mem m;
	struct ls_ctx *ctx;
	unsigned char *data = calloc(1, len);

	CHECK(data, "out of memory");
	fill_random(data, len, ps, 60, 23);
	mem_map(&m, MEM_ANON_4K, len);
	mem_source_init(&src, data, len, ps);
	ctx = ctx_with_ram(&m);
	CHECK(!ls_restore_start(ctx, 0, &src.base, 0, LS_RESTORE_LAZY_HOLD,
				&r),
	      "restore_start: %s", ls_ctx_error(ctx));
	expect_busy(ctx);
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++)
		CHECK(!memcmp((unsigned char *)m.addr + pages[i] * ps,
			      data + pages[i] * ps, ps),
		      "page %llu touched while held differs",
		      (unsigned long long)pages[i]);
	CHECK(!ls_restore_stats(r, &rs), "restore stats");
	CHECK(rs.pages_done == 0 && !rs.complete && rs.faults >= 4,
	      "held: %llu pages done, complete %d, %llu faults",
	      (unsigned long long)rs.pages_done, rs.complete,
	      (unsigned long long)rs.faults);
	if (let_go) {
		CHECK(!ls_restore_prefetch(r), "restore_prefetch");
		CHECK(!ls_restore_wait(r), "restore_wait: %s",
		      ls_ctx_error(ctx));
		CHECK(!ls_restore_stats(r, &rs) && rs.complete &&
			      rs.pages_done == rs.pages_total,
		      "after the prefetch: complete %d, %llu of %llu",
		      rs.complete, (unsigned long long)rs.pages_done,
		      (unsigned long long)rs.pages_total);
	}
	ls_restore_destroy(r);
	CHECK(!memcmp(m.addr, data, len), "restored memory differs");
	CHECK(ls_restore_prefetch(NULL) == -EINVAL, "prefetch(NULL)");
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
	free(data);
}

static void test_lazy_hold(void **state)
{
	(void)state;
	lazy_hold(true);
}

static void test_lazy_hold_destroyed(void **state)
{
	(void)state;
	lazy_hold(false);
}

/* A source that fails: the restore fails, the region is usable again. */
static void test_lazy_source_fails(void **state)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct ls_restore *r;
	struct mem_source src;
	struct test_mem m;
	struct ls_ctx *ctx;
	unsigned char *data = calloc(1, 8 * MB);
	int ret;

	(void)state;
	CHECK(data, "out of memory");
	memset(data, 0x5a, 8 * MB);
	mem_map(&m, MEM_ANON_4K, 8 * MB);
	mem_source_init(&src, data, 8 * MB, 4096);
	src.fail_at_page = 1000;
	ctx = ctx_with_ram(&m);
	CHECK(!ls_restore_start(ctx, 0, &src.base, 0, LS_RESTORE_LAZY, &r),
	      "start: %s", ls_ctx_error(ctx));
	ret = ls_restore_wait(r);
	CHECK(ret == -EIO, "wait returned %d", ret);
	CHECK(strstr(ls_ctx_error(ctx), "'ram'") &&
		      strstr(ls_ctx_error(ctx), "Input/output error"),
	      "message '%s'", ls_ctx_error(ctx));
	ls_restore_destroy(r);
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap) &&
		      !ls_snapshot_begin(snap) && !ls_snapshot_wait(snap),
	      "snapshot after a failed restore: %s", ls_ctx_error(ctx));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
	free(data);
}

static void test_restore_bad_args(void **state)
{
	struct ls_restore *r;
	struct mem_source src;
	struct test_mem m;
	struct ls_ctx *ctx;
	unsigned char page[4096] = {0};

	(void)state;
	mem_map(&m, MEM_ANON_4K, 4 * MB);
	mem_source_init(&src, page, sizeof(page), 4096);
	ctx = ctx_with_ram(&m);
	CHECK(ls_restore_start(ctx, 1, &src.base, 0, LS_RESTORE_LAZY, &r) ==
		      -EINVAL,
	      "bad region index");
	CHECK(ls_restore_start(ctx, 0, NULL, 0, LS_RESTORE_LAZY, &r) == -EINVAL,
	      "no source");
	CHECK(ls_restore_start(ctx, 0, &src.base, 0, (enum ls_restore_mode)7,
			       &r) == -EINVAL,
	      "bad mode");
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lazy_anon_4k),
		cmocka_unit_test(test_lazy_anon_thp),
		cmocka_unit_test(test_lazy_memfd),
		cmocka_unit_test(test_lazy_hugetlb),
		cmocka_unit_test(test_lazy_memfd_hugetlb),
		cmocka_unit_test(test_eager_anon),
		cmocka_unit_test(test_eager_hugetlb),
		cmocka_unit_test(test_lazy_hold),
		cmocka_unit_test(test_lazy_hold_destroyed),
		cmocka_unit_test(test_lazy_source_fails),
		cmocka_unit_test(test_restore_bad_args),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
