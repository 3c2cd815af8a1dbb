/* SPDX-License-Identifier: MIT */
/*
 * Memory that changes under a snapshot other than by a store: discards
 * (MADV_DONTNEED, MADV_FREE, MADV_REMOVE, fallocate PUNCH_HOLE) and mapping
 * changes (munmap, mremap, mprotect) of region pages after begin, before
 * they are saved. Each either leaves the snapshot exact or fails it with a
 * message naming the cause; never a snapshot that is silently wrong. After
 * either, nothing is left write-protected and the application's threads
 * run on. Every memory type where the operation applies, every strategy
 * (hugetlb included: the engine checks that huge pages mapped at begin are
 * still mapped before it reads them).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"

#define REGION (8 * MB)
#define WRITERS_LEN (4 * MB) /* the writers' part: always stays mapped */
#define TARGET (4 * MB)      /* the operation's part, not saved yet */
#define TARGET_LEN (2 * MB)

enum op {
	OP_DONTNEED,
	OP_FREE,
	OP_REMOVE,
	OP_PUNCH,
	OP_MUNMAP,
	OP_MREMAP,
	OP_MPROTECT,
};

static const char *const op_names[] = {
	"MADV_DONTNEED", "MADV_FREE", "MADV_REMOVE", "fallocate(PUNCH_HOLE)",
	"munmap", "mremap", "mprotect(PROT_READ)",
};

/* What the snapshot must end in. */
enum outcome {
	EXACT,
	FAILS,
	EITHER, /* MADV_FREE: exact unless the kernel reclaimed the pages */
};

static bool shared_kind(enum mem_kind kind)
{
	return kind == MEM_MEMFD || kind == MEM_MEMFD_HUGE;
}

/* Whether the operation applies to the memory type (the kernel allows it). */
static bool applies(enum op op, enum mem_kind kind)
{
	switch (op) {
	case OP_FREE:
		return kind == MEM_ANON_THP || kind == MEM_ANON_4K;
	case OP_REMOVE:
	case OP_PUNCH:
		return shared_kind(kind); /* a file; MADV_REMOVE: shared */
	default:
		return true;
	}
}

static enum outcome expected(enum op op, enum mem_kind kind)
{
	switch (op) {
	case OP_DONTNEED:
		/* shared memory keeps its pages in the file */
		return shared_kind(kind) ? EXACT : FAILS;
	case OP_FREE:
		return EITHER;
	case OP_MPROTECT:
		return EXACT;
	default:
		return FAILS;
	}
}

/* Where mremap moves the target to: a free 2 MiB-aligned range. */
static void *free_aligned_range(size_t len)
{
	unsigned char *p = mmap(NULL, len + 2 * MB, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	a = ((uintptr_t)p + 2 * MB - 1) & ~(uintptr_t)(2 * MB - 1);
	munmap(p, len + 2 * MB);
	return (void *)a;
}

/* Runs the operation on the target; returns where it now is (or NULL). */
static unsigned char *run_op(enum op op, struct test_mem *m)
{
	unsigned char *t = m->addr + TARGET, *moved;
	int ret = 0;

	switch (op) {
	case OP_DONTNEED:
		ret = madvise(t, TARGET_LEN, MADV_DONTNEED);
		break;
	case OP_FREE:
		ret = madvise(t, TARGET_LEN, MADV_FREE);
		break;
	case OP_REMOVE:
		ret = madvise(t, TARGET_LEN, MADV_REMOVE);
		break;
	case OP_PUNCH:
		ret = fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				TARGET, TARGET_LEN);
		break;
	case OP_MUNMAP:
		ret = munmap(t, TARGET_LEN);
		return NULL;
	case OP_MREMAP:
		moved = mremap(t, TARGET_LEN, TARGET_LEN,
			       MREMAP_MAYMOVE | MREMAP_FIXED,
			       free_aligned_range(TARGET_LEN));
		CHECK(moved != MAP_FAILED, "mremap: %s", strerror(errno));
		return moved;
	case OP_MPROTECT:
		ret = mprotect(t, TARGET_LEN, PROT_READ);
		break;
	}
	CHECK(!ret, "%s on %s: %s", op_names[op], mem_kind_name(m->kind),
	      strerror(errno));
	return t;
}

static void expect_failure(struct ls_snapshot *snap, struct ls_ctx *ctx,
			   struct mem_sink *s, int ret, enum op op,
			   enum mem_kind kind)
{
	const char *msg = ls_snapshot_error(snap);

	CHECK(ret == -ESTALE || ret == -EFAULT,
	      "%s on %s: wait returned %d (%s), want a failure", op_names[op],
	      mem_kind_name(kind), ret, msg);
	CHECK(strstr(msg, "region 'ram'") &&
		      (strstr(msg, "discarded") || strstr(msg, "unmapped") ||
		       strstr(msg, "hole punched")),
	      "%s on %s: the message does not say what happened: '%s'",
	      op_names[op], mem_kind_name(kind), msg);
	CHECK(!strcmp(ls_ctx_error(ctx), msg), "context error '%s'",
	      ls_ctx_error(ctx));
	CHECK(s->aborted && !s->committed, "sink not aborted");
}

static void one_case(enum mem_kind kind, enum ls_strategy strategy, enum op op)
{
	struct ls_snapshot_opts o = {.strategy = strategy};
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	unsigned char *ref, *t;
	struct ls_ctx *ctx;
	struct test_mem m;
	struct writers w;
	int ret;

	mem_map(&m, kind, REGION);
	fill_random(m.addr, m.len, m.page_size, 100, (unsigned)(op * 7 + kind));
	ref = malloc(m.len);
	CHECK(ref, "out of memory");
	ctx = ctx_with_ram(&m);
	snap = snapshot_begin_gated(ctx, s, &o, &m, ref, NULL);
	t = run_op(op, &m);
	writers_start(&w, m.addr, WRITERS_LEN, m.page_size, 2);
	ret = ls_snapshot_wait(snap);
	switch (expected(op, kind)) {
	case EXACT:
		CHECK(!ret, "%s on %s: wait: %s", op_names[op],
		      mem_kind_name(kind), ls_snapshot_error(snap));
		mem_sink_expect(s, 0, ref, m.len);
		break;
	case FAILS:
		expect_failure(snap, ctx, s, ret, op, kind);
		break;
	case EITHER:
		if (ret)
			expect_failure(snap, ctx, s, ret, op, kind);
		else
			mem_sink_expect(s, 0, ref, m.len);
		break;
	}
	/* Nothing left protected; the threads run on. */
	CHECK(count_wp_pages(m.addr, WRITERS_LEN) == 0 &&
		      count_wp_pages(m.addr + TARGET + TARGET_LEN,
				     REGION - TARGET - TARGET_LEN) == 0,
	      "%s on %s: pages left write-protected", op_names[op],
	      mem_kind_name(kind));
	writers_expect_progress(&w, 20000);
	writers_stop(&w);
	if (t) {
		CHECK(count_wp_pages(t, TARGET_LEN) == 0,
		      "%s: the target is left write-protected", op_names[op]);
		if (op == OP_MPROTECT)
			CHECK(!mprotect(t, TARGET_LEN, PROT_READ | PROT_WRITE),
			      "mprotect: %s", strerror(errno));
		memset(t, 0x5a, TARGET_LEN); /* would block if protected */
	}
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	if (t && t != m.addr + TARGET)
		munmap(t, TARGET_LEN);
	free(ref);
	mem_unmap(&m);
}

/*
 * Every applicable memory type with every strategy; under TSan (~20x
 * slower) one strategy per type, rotating with the operation, so that each
 * type and each strategy still meet every operation's outcome.
 */
static void every_case(enum op op)
{
	for (int k = 0; k < MEM_NKINDS; k++) {
		if (!applies(op, (enum mem_kind)k))
			continue;
		for (size_t i = 0; i < NSTRATEGIES; i++)
			if (strategy_wanted(k, i, (int)op))
				one_case((enum mem_kind)k, test_strategies[i],
					 op);
	}
}

#define OP_TEST(name, op)                                                    \
	static void test_##name(void **state)                                \
	{                                                                    \
		(void)state;                                                 \
		every_case(op);                                              \
	}

OP_TEST(dontneed, OP_DONTNEED)
OP_TEST(madv_free, OP_FREE)
OP_TEST(remove, OP_REMOVE)
OP_TEST(punch_hole, OP_PUNCH)
OP_TEST(munmap, OP_MUNMAP)
OP_TEST(mremap, OP_MREMAP)
OP_TEST(mprotect, OP_MPROTECT)

/*
 * A hole punched in a memfd region while a hole elsewhere is filled: the
 * file's block count comes out even, so only the per-page check sees that
 * the punched page lost what it held at begin.
 */
static void test_punch_and_fill(void **state)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct ls_ctx *ctx;
	struct test_mem m;
	int ret;

	(void)state;
	mem_map(&m, MEM_MEMFD, REGION);
	fill_random(m.addr, m.len, m.page_size, 100, 9);
	/* A hole at begin, where the writes after begin go. */
	CHECK(!fallocate(m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 TARGET + TARGET_LEN, 4096),
	      "fallocate: %s", strerror(errno));
	ctx = ctx_with_ram(&m);
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	s->gate = snap; /* the writer waits after its first batch */
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	CHECK(!fallocate(m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 TARGET, 4096),
	      "fallocate: %s", strerror(errno));
	memset(m.addr + TARGET + TARGET_LEN, 0x77, 4096); /* fills the hole */
	ret = ls_snapshot_wait(snap);
	CHECK(ret == -ESTALE && strstr(ls_snapshot_error(snap), "+0x400000") &&
		      strstr(ls_snapshot_error(snap), "hole punched"),
	      "punch and fill: wait returned %d (%s), want -ESTALE naming page +0x400000",
	      ret, ls_snapshot_error(snap));
	CHECK(count_wp_pages(m.addr, m.len) == 0, "pages left protected");
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
}

/*
 * The engine maps a shmem file's data at create, outside the pause: a hole
 * punched between create and begin was a hole at begin (zero), and must
 * not fail the snapshot; begin sees the lower block count and maps again.
 */
static void test_punch_before_begin(void **state)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct ls_ctx *ctx;
	struct test_mem m;
	unsigned char *ref;

	(void)state;
	mem_map(&m, MEM_MEMFD, REGION);
	fill_random(m.addr, m.len, m.page_size, 100, 10);
	ctx = ctx_with_ram(&m);
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	ref = malloc(m.len);
	CHECK(ref, "out of memory");
	memcpy(ref, m.addr, m.len);
	/* (not read after: a read would fill the hole again) */
	CHECK(!fallocate(m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 TARGET, 4096),
	      "fallocate: %s", strerror(errno));
	memset(ref + TARGET, 0, 4096);
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	CHECK(!ls_snapshot_wait(snap), "a hole punched before begin: %s",
	      ls_snapshot_error(snap));
	expect_and_close(s, snap, ctx, ref, &m);
}

/*
 * Private hugetlb pages never touched are zero: the snapshot finds them
 * so without reading them (a read would allocate a huge page each, from a
 * pool that may not have them). Touched pages are saved as usual.
 */
static void test_hugetlb_untouched(void **state)
{
	struct mem_sink *s = mem_sink_new();
	size_t ps = 2 * MB, n = REGION / (2 * MB);
	struct ls_snapshot *snap;
	unsigned char vec[REGION / 4096]; /* mincore: a byte per 4 KiB */
	struct ls_ctx *ctx;
	struct test_mem m;
	unsigned char *ref;

	(void)state;
	mem_map(&m, MEM_HUGETLB, REGION);
	ref = calloc(1, m.len);
	CHECK(ref, "out of memory");
	for (size_t p = 0; p < n; p += 2) { /* pages 0, 2, ...: data */
		memset(m.addr + p * ps + 4096, (int)(0x40 + p), 4096);
		memset(ref + p * ps + 4096, (int)(0x40 + p), 4096);
	}
	CHECK(!mincore(m.addr, m.len, vec), "mincore: %s", strerror(errno));
	for (size_t p = 0; p < n; p++)
		CHECK((vec[p * (ps / 4096)] & 1) == (p % 2 == 0),
		      "before: huge page %zu %s mapped", p,
		      vec[p * (ps / 4096)] & 1 ? "is" : "is not");
	ctx = ctx_with_ram(&m);
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	mem_sink_expect(s, 0, ref, m.len);
	CHECK(!mincore(m.addr, m.len, vec), "mincore: %s", strerror(errno));
	for (size_t p = 1; p < n; p += 2)
		CHECK(!(vec[p * (ps / 4096)] & 1),
		      "the snapshot mapped untouched huge page %zu", p);
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	free(ref);
	mem_unmap(&m);
}

/*
 * A second writable mapping of a region's memfd pages (a device backend's
 * view, say) is refused at create with a message naming it; a read-only
 * one, or none, is fine. Two regions of the same pages are aliases too.
 */
static void alias_case(enum mem_kind kind)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap = NULL;
	unsigned char *alias, *ref;
	struct ls_ctx *ctx;
	struct test_mem m;
	char want[64];
	int ret;

	mem_map(&m, kind, REGION);
	fill_random(m.addr, m.len, m.page_size, 100, 4);
	ctx = ctx_with_ram(&m);
	/* A writable view of the second half: refused. */
	alias = mmap(NULL, REGION / 2, PROT_READ | PROT_WRITE, MAP_SHARED,
		     m.fd, REGION / 2);
	CHECK(alias != MAP_FAILED, "mmap alias: %s", strerror(errno));
	ret = ls_snapshot_create(ctx, &s->base, NULL, &snap);
	snprintf(want, sizeof(want), "0x%lx-", (unsigned long)(uintptr_t)alias);
	CHECK(ret == -EBUSY && !snap, "%s: create with an alias returned %d",
	      mem_kind_name(kind), ret);
	CHECK(strstr(ls_ctx_error(ctx), "region 'ram'") &&
		      strstr(ls_ctx_error(ctx), want) &&
		      strstr(ls_ctx_error(ctx), "escape write protection"),
	      "message '%s' does not name the alias at %s", ls_ctx_error(ctx),
	      want);
	CHECK(s->destroyed, "sink not destroyed after a refused create");
	/* Read-only: nothing can be written through it; exact. */
	CHECK(!mprotect(alias, REGION / 2, PROT_READ), "mprotect: %s",
	      strerror(errno));
	mem_sink_free(s);
	s = mem_sink_new();
	CHECK(!ls_snapshot_create(ctx, &s->base, NULL, &snap), "create: %s",
	      ls_ctx_error(ctx));
	ref = malloc(m.len);
	CHECK(ref, "out of memory");
	memcpy(ref, m.addr, m.len);
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	memset(m.addr + REGION / 2, 0x11, 4096); /* through the region */
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	mem_sink_expect(s, 0, ref, m.len);
	CHECK(alias[0] == 0x11, "the read-only view does not show the write");
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	munmap(alias, REGION / 2);
	/* The same pages registered twice: refused as well. */
	alias = mmap(NULL, REGION / 2, PROT_READ | PROT_WRITE, MAP_SHARED,
		     m.fd, 0);
	CHECK(alias != MAP_FAILED, "mmap: %s", strerror(errno));
	CHECK(ls_region_add(ctx, "again", alias, REGION / 2) == 1, "add: %s",
	      ls_ctx_error(ctx));
	s = mem_sink_new();
	ret = ls_snapshot_create(ctx, &s->base, NULL, &snap);
	CHECK(ret == -EBUSY, "create with two regions of the same pages: %d",
	      ret);
	CHECK(!ls_region_remove(ctx, 1), "remove: %s", ls_ctx_error(ctx));
	munmap(alias, REGION / 2);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	free(ref);
	mem_unmap(&m);
}

static void test_alias(void **state)
{
	(void)state;
	alias_case(MEM_MEMFD);
	alias_case(MEM_MEMFD_HUGE);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dontneed),
		cmocka_unit_test(test_madv_free),
		cmocka_unit_test(test_remove),
		cmocka_unit_test(test_punch_hole),
		cmocka_unit_test(test_munmap),
		cmocka_unit_test(test_mremap),
		cmocka_unit_test(test_mprotect),
		cmocka_unit_test(test_alias),
		cmocka_unit_test(test_hugetlb_untouched),
		cmocka_unit_test(test_punch_and_fill),
		cmocka_unit_test(test_punch_before_begin),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
