/* SPDX-License-Identifier: MIT */
/*
 * Exactness: four threads write random words in a tight loop; the test
 * stops them for the instant of begin (copying memory as the reference),
 * lets them run again, and checks that the snapshot holds the reference
 * byte for byte, every page exactly once. For every strategy and every
 * memory type, over several iterations.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "helpers.h"

#if defined(__SANITIZE_THREAD__)
#define ITERS 2 /* TSan runs everything ~20x slower */
#define REGION (8 * MB)
#else
#define ITERS 6
#define REGION (16 * MB)
#endif
#define NWRITERS 4

struct totals {
	uint64_t faults, write_first, copied, snapshots;
	uint64_t huge_kb_before, huge_kb_after;
};

static void run_matrix(enum mem_kind kind, enum ls_strategy strategy,
		       size_t copy_buffer, struct totals *t);

static void one_snapshot(struct ls_ctx *ctx, struct test_mem *m,
			 struct writers *w, const struct ls_snapshot_opts *o,
			 unsigned char *ref, struct totals *t)
{
	struct ls_stats st;

	exact_snapshot(ctx, m, w, o, ref, &st);
	t->faults += st.faults;
	t->write_first += st.faults_write_first;
	t->copied += st.pages_copied;
	t->snapshots++;
}

static void run_matrix_opts(enum mem_kind kind,
			    const struct ls_snapshot_opts *opts,
			    struct totals *t)
{
	struct ls_snapshot_opts o = *opts;
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	struct test_mem m;
	struct writers w;
	unsigned char *ref;
	int idx;

	memset(t, 0, sizeof(*t));
	mem_map(&m, kind, REGION);
	fill_random(m.addr, m.len, m.page_size, 50, (unsigned)kind);
	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ls_ctx_create: %s", err);
	idx = ls_region_add(ctx, "ram", m.addr, m.len);
	CHECK(idx == 0, "ls_region_add(%s): %s", mem_kind_name(kind),
	      ls_ctx_error(ctx));
	ref = malloc(m.len);
	CHECK(ref, "out of memory");
	writers_start(&w, m.addr, m.len, m.page_size, NWRITERS);
	writers_expect_progress(&w, 1000);
	t->huge_kb_before = anon_huge_kb(m.addr);
	for (int i = 0; i < ITERS; i++)
		one_snapshot(ctx, &m, &w, &o, ref, t);
	t->huge_kb_after = anon_huge_kb(m.addr);
	writers_stop(&w);
	free(ref);
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
}

static void run_matrix(enum mem_kind kind, enum ls_strategy strategy,
		       size_t copy_buffer, struct totals *t)
{
	struct ls_snapshot_opts o = {.strategy = strategy,
				     .copy_buffer_bytes = copy_buffer};

	run_matrix_opts(kind, &o, t);
}

/*
 * keep_thp: faults capture whole huge pages, so no huge page is split (the
 * copy buffer, 64 MiB, holds the whole region: no fallback to 4 KiB).
 */
static void test_keep_thp_copy(void **state)
{
	struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_COPY,
				     .keep_thp = true};
	struct totals t;

	(void)state;
	run_matrix_opts(MEM_ANON_THP, &o, &t);
	CHECK(t.copied > 0, "nothing went through the copy buffer");
	CHECK(t.huge_kb_before > 0, "the test memory got no THP");
	CHECK(t.huge_kb_after >= t.huge_kb_before,
	      "huge pages split: %llu kB before, %llu kB after",
	      (unsigned long long)t.huge_kb_before,
	      (unsigned long long)t.huge_kb_after);
}

static void test_keep_thp_auto(void **state)
{
	struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_AUTO,
				     .keep_thp = true};
	struct totals t;

	(void)state;
	run_matrix_opts(MEM_ANON_THP, &o, &t);
	CHECK(t.faults > 0, "no faults");
}

/* No room in the copy buffer: whole huge pages saved write-first. */
static void test_keep_thp_write_first(void **state)
{
	struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_WRITE_FIRST,
				     .keep_thp = true};
	struct totals t;

	(void)state;
	run_matrix_opts(MEM_ANON_THP, &o, &t);
	CHECK(t.write_first > 0, "no write-first fault");
	CHECK(t.huge_kb_before > 0, "the test memory got no THP");
	CHECK(t.huge_kb_after >= t.huge_kb_before,
	      "huge pages split: %llu kB before, %llu kB after",
	      (unsigned long long)t.huge_kb_before,
	      (unsigned long long)t.huge_kb_after);
}

#define MATRIX_TEST(kind, strat)                                             \
	static void test_##kind##_##strat(void **state)                      \
	{                                                                    \
		struct totals t;                                             \
		(void)state;                                                 \
		run_matrix(kind, LS_STRATEGY_##strat, 0, &t);                \
		if (LS_STRATEGY_##strat == LS_STRATEGY_WRITE_FIRST)          \
			CHECK(t.write_first > 0, "no write-first fault");    \
		else                                                         \
			CHECK(t.copied > 0, "nothing went through the copy " \
					    "buffer");                       \
	}

MATRIX_TEST(MEM_ANON_THP, AUTO)
MATRIX_TEST(MEM_ANON_THP, COPY)
MATRIX_TEST(MEM_ANON_THP, WRITE_FIRST)
MATRIX_TEST(MEM_ANON_4K, AUTO)
MATRIX_TEST(MEM_ANON_4K, COPY)
MATRIX_TEST(MEM_ANON_4K, WRITE_FIRST)
MATRIX_TEST(MEM_MEMFD, AUTO)
MATRIX_TEST(MEM_MEMFD, COPY)
MATRIX_TEST(MEM_MEMFD, WRITE_FIRST)
MATRIX_TEST(MEM_HUGETLB, AUTO)
MATRIX_TEST(MEM_HUGETLB, COPY)
MATRIX_TEST(MEM_HUGETLB, WRITE_FIRST)
MATRIX_TEST(MEM_MEMFD_HUGE, AUTO)
MATRIX_TEST(MEM_MEMFD_HUGE, COPY)
MATRIX_TEST(MEM_MEMFD_HUGE, WRITE_FIRST)

/* A copy buffer of two pages: most faults must fall back to write-first. */
static void test_tiny_copy_buffer(void **state)
{
	struct totals t;

	(void)state;
	run_matrix(MEM_ANON_4K, LS_STRATEGY_COPY, 8192, &t);
	CHECK(t.write_first > 0, "the write-first fallback never ran");
	CHECK(t.copied > 0, "nothing went through the copy buffer");
}

static void test_tiny_copy_buffer_hugetlb(void **state)
{
	struct totals t;

	/* 4 MiB: two huge pages at most. */
	(void)state;
	run_matrix(MEM_HUGETLB, LS_STRATEGY_COPY, 4 * MB, &t);
	CHECK(t.write_first + t.copied > 0, "no fault was saved");
}

/*
 * A prepared full snapshot of huge-page-backed anonymous memory: a write
 * between prepare and begin releases its whole 2 MiB block, so no huge
 * page is split (a 4 KiB release inside one splits it for good), and the
 * snapshot still holds memory at begin, those writes included. Single
 * threaded: the reference is memory as begin finds it.
 */
/*
 * Memory of the kind with data in every page, a context on it and a
 * snapshot of it created (copy strategy) into s; *ref gets room for the
 * reference copy.
 */
static struct ls_snapshot *filled_snapshot(enum mem_kind kind, unsigned seed,
					   struct mem_sink *s,
					   struct test_mem *m,
					   struct ls_ctx **ctx,
					   unsigned char **ref)
{
	struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_COPY};
	struct ls_snapshot *snap;
	int ret;

	mem_map(m, kind, REGION);
	fill_random(m->addr, m->len, m->page_size, 100, seed);
	*ctx = ctx_with_ram(m);
	*ref = malloc(m->len);
	CHECK(*ref, "out of memory");
	ret = ls_snapshot_create(*ctx, &s->base, &o, &snap);
	CHECK(!ret, "ls_snapshot_create: %s", ls_ctx_error(*ctx));
	return snap;
}

static void test_prepare_keeps_thp(void **state)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	uint64_t huge_before, huge_after;
	struct ls_ctx *ctx;
	struct test_mem m;
	unsigned char *ref;
	int ret;

	(void)state;
	snap = filled_snapshot(MEM_ANON_THP, 11, s, &m, &ctx, &ref);
	huge_before = anon_huge_kb(m.addr);
	CHECK(huge_before >= REGION / 2 / 1024,
	      "the test memory got %llu kB of THP",
	      (unsigned long long)huge_before);
	ret = ls_snapshot_prepare(snap);
	CHECK(!ret, "ls_snapshot_prepare: %s", ls_snapshot_error(snap));
	CHECK(count_wp_pages(m.addr, m.len) == m.len / m.page_size,
	      "prepare protected %llu of %zu pages",
	      (unsigned long long)count_wp_pages(m.addr, m.len),
	      m.len / m.page_size);
	/* a page inside every block, then another in the same block */
	for (size_t off = 0; off < m.len; off += 2 * MB) {
		m.addr[off + 5 * 4096 + 8] ^= 0x5a;
		m.addr[off + 300 * 4096] ^= 0xa5;
	}
	huge_after = anon_huge_kb(m.addr);
	CHECK(huge_after == huge_before,
	      "writes between prepare and begin split huge pages: %llu kB "
	      "before, %llu kB after",
	      (unsigned long long)huge_before, (unsigned long long)huge_after);
	memcpy(ref, m.addr, m.len);
	ret = ls_snapshot_begin(snap);
	CHECK(!ret, "ls_snapshot_begin: %s", ls_snapshot_error(snap));
	for (size_t off = 0; off < m.len; off += 2 * MB)
		m.addr[off + 5 * 4096 + 8] ^= 0xff; /* after begin: not saved */
	ret = ls_snapshot_wait(snap);
	CHECK(!ret, "ls_snapshot_wait: %s", ls_snapshot_error(snap));
	CHECK(count_wp_pages(m.addr, m.len) == 0,
	      "pages still write-protected after the snapshot");
	expect_and_close(s, snap, ctx, ref, &m);
}

/* Minor faults the calling thread has taken so far. */
static uint64_t thread_minflt(void)
{
	struct rusage ru;

	CHECK(!getrusage(RUSAGE_THREAD, &ru), "getrusage: %s",
	      strerror(errno));
	return (uint64_t)ru.ru_minflt;
}

/*
 * Un-protecting leaves shmem and hugetlb entries read-only (lib/engine/
 * uffd.c): the snapshot makes every page it saved with data writable
 * again, so the application's next write to it takes no fault. Pages
 * written between prepare and begin, and after begin (the fault path),
 * are among them.
 */
static void release_writable(enum mem_kind kind)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	uint64_t before, faults;
	struct ls_ctx *ctx;
	struct test_mem m;
	unsigned char *ref;
	int ret;

	snap = filled_snapshot(kind, 5, s, &m, &ctx, &ref);
	ret = ls_snapshot_prepare(snap);
	CHECK(!ret, "ls_snapshot_prepare: %s", ls_snapshot_error(snap));
	m.addr[m.page_size + 8] ^= 0x5a; /* between prepare and begin */
	memcpy(ref, m.addr, m.len);
	ret = ls_snapshot_begin(snap);
	CHECK(!ret, "ls_snapshot_begin: %s", ls_snapshot_error(snap));
	m.addr[m.len - m.page_size + 8] ^= 0xa5; /* after begin: a fault */
	ret = ls_snapshot_wait(snap);
	CHECK(!ret, "ls_snapshot_wait: %s", ls_snapshot_error(snap));
	before = thread_minflt();
	for (size_t off = 0; off < m.len; off += m.page_size)
		m.addr[off + 16] ^= 0x3c;
	faults = thread_minflt() - before;
	CHECK(faults == 0,
	      "%s: %llu of %zu pages took a fault on their first write after "
	      "the snapshot",
	      mem_kind_name(kind), (unsigned long long)faults,
	      m.len / m.page_size);
	expect_and_close(s, snap, ctx, ref, &m);
}

static void test_release_writable_memfd(void **state)
{
	(void)state;
	release_writable(MEM_MEMFD);
}

static void test_release_writable_hugetlb(void **state)
{
	(void)state;
	release_writable(MEM_HUGETLB);
	release_writable(MEM_MEMFD_HUGE);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_MEM_ANON_THP_AUTO),
		cmocka_unit_test(test_prepare_keeps_thp),
		cmocka_unit_test(test_release_writable_memfd),
		cmocka_unit_test(test_release_writable_hugetlb),
		cmocka_unit_test(test_MEM_ANON_THP_COPY),
		cmocka_unit_test(test_MEM_ANON_THP_WRITE_FIRST),
		cmocka_unit_test(test_MEM_ANON_4K_AUTO),
		cmocka_unit_test(test_MEM_ANON_4K_COPY),
		cmocka_unit_test(test_MEM_ANON_4K_WRITE_FIRST),
		cmocka_unit_test(test_MEM_MEMFD_AUTO),
		cmocka_unit_test(test_MEM_MEMFD_COPY),
		cmocka_unit_test(test_MEM_MEMFD_WRITE_FIRST),
		cmocka_unit_test(test_MEM_HUGETLB_AUTO),
		cmocka_unit_test(test_MEM_HUGETLB_COPY),
		cmocka_unit_test(test_MEM_HUGETLB_WRITE_FIRST),
		cmocka_unit_test(test_MEM_MEMFD_HUGE_AUTO),
		cmocka_unit_test(test_MEM_MEMFD_HUGE_COPY),
		cmocka_unit_test(test_MEM_MEMFD_HUGE_WRITE_FIRST),
		cmocka_unit_test(test_tiny_copy_buffer),
		cmocka_unit_test(test_tiny_copy_buffer_hugetlb),
		cmocka_unit_test(test_keep_thp_copy),
		cmocka_unit_test(test_keep_thp_auto),
		cmocka_unit_test(test_keep_thp_write_first),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
