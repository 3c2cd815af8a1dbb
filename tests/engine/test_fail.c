/* SPDX-License-Identifier: MIT */
/*
 * Every way a snapshot ends early: the sink fails (on the writer's path, on
 * the fault path, at start, at commit), the caller cancels, destroys the
 * snapshot or the whole context while it runs. Whatever the end, the sink is
 * aborted, no page stays write-protected, and the application's threads run
 * on unhindered.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "helpers.h"

struct fixture {
	struct ls_ctx *ctx;
	struct test_mem m;
	struct writers w;
	struct mem_sink *s;
	struct ls_snapshot *snap;
};

static void setup(struct fixture *f, enum mem_kind kind, size_t len)
{
	memset(f, 0, sizeof(*f));
	mem_map(&f->m, kind, len);
	fill_random(f->m.addr, f->m.len, f->m.page_size, 60, 3);
	f->ctx = ctx_with_ram(&f->m);
	writers_start(&f->w, f->m.addr, f->m.len, f->m.page_size, 4);
	f->s = mem_sink_new();
}

static void begin(struct fixture *f, enum ls_strategy strategy)
{
	struct ls_snapshot_opts o = {.strategy = strategy};

	CHECK(!ls_snapshot_create(f->ctx, &f->s->base, &o, &f->snap),
	      "create: %s", ls_ctx_error(f->ctx));
	writers_pause(&f->w);
	f->s->gate = f->snap;
	CHECK(!ls_snapshot_begin(f->snap), "begin: %s", ls_ctx_error(f->ctx));
	writers_resume(&f->w);
}

/* After any end: aborted, nothing protected, writers all moving. */
static void expect_released(struct fixture *f)
{
	CHECK(f->s->aborted && !f->s->committed, "aborted %d committed %d",
	      f->s->aborted, f->s->committed);
	CHECK(count_wp_pages(f->m.addr, f->m.len) == 0,
	      "pages still write-protected after the end");
	/* Blocked writers would hang here (and the test time out). */
	writers_expect_progress(&f->w, 20000);
}

static void teardown(struct fixture *f)
{
	writers_stop(&f->w);
	ls_snapshot_destroy(f->snap);
	ls_ctx_destroy(f->ctx);
	mem_sink_free(f->s);
	mem_unmap(&f->m);
}

static void expect_failed(struct fixture *f, int err, const char *needle)
{
	struct ls_progress p;
	int ret = ls_snapshot_wait(f->snap);

	CHECK(ret == -err, "wait returned %d, want %d (%s)", ret, -err,
	      ls_snapshot_error(f->snap));
	CHECK(strstr(ls_snapshot_error(f->snap), needle),
	      "snapshot error '%s' lacks '%s'", ls_snapshot_error(f->snap),
	      needle);
	CHECK(strstr(ls_ctx_error(f->ctx), needle),
	      "context error '%s' lacks '%s'", ls_ctx_error(f->ctx), needle);
	CHECK(!ls_snapshot_progress(f->snap, &p), "progress");
	CHECK(p.state == (err == ECANCELED ? LS_SNAP_CANCELLED : LS_SNAP_FAILED),
	      "state %d", p.state);
	expect_released(f);
}

static void sink_fails_after(enum mem_kind kind, enum ls_strategy strategy)
{
	struct fixture f;

	setup(&f, kind, 32 * MB);
	f.s->fail_after = 1000;
	f.s->fail_err = ENOSPC;
	begin(&f, strategy);
	expect_failed(&f, ENOSPC, "injected failure: No space left on device");
	teardown(&f);
}

static void test_sink_fails_auto(void **state)
{
	(void)state;
	sink_fails_after(MEM_ANON_THP, LS_STRATEGY_AUTO);
}

static void test_sink_fails_write_first(void **state)
{
	(void)state;
	sink_fails_after(MEM_ANON_4K, LS_STRATEGY_WRITE_FIRST);
}

static void test_sink_fails_memfd(void **state)
{
	(void)state;
	sink_fails_after(MEM_MEMFD, LS_STRATEGY_COPY);
}

static void test_sink_fails_hugetlb(void **state)
{
	struct fixture f;

	(void)state;
	setup(&f, MEM_HUGETLB, 16 * MB);
	f.s->fail_after = 3; /* huge pages */
	f.s->fail_err = EIO;
	begin(&f, LS_STRATEGY_AUTO);
	expect_failed(&f, EIO, "Input/output error");
	teardown(&f);
}

/* The fault thread's own write (write-first) fails. */
static void test_sink_fails_on_fault(void **state)
{
	struct fixture f;
	struct ls_stats st;

	(void)state;
	setup(&f, MEM_ANON_4K, 32 * MB);
	f.s->fail_after = 0;
	f.s->fail_single_only = true;
	f.s->fail_err = EPIPE;
	begin(&f, LS_STRATEGY_WRITE_FIRST);
	expect_failed(&f, EPIPE, "Broken pipe");
	CHECK(!ls_snapshot_stats(f.snap, &st) && st.faults_write_first > 0,
	      "no write-first fault");
	teardown(&f);
}

static void test_commit_fails(void **state)
{
	struct fixture f;

	(void)state;
	setup(&f, MEM_ANON_THP, 8 * MB);
	f.s->commit_err = EIO;
	begin(&f, LS_STRATEGY_AUTO);
	expect_failed(&f, EIO, "commit: Input/output error");
	teardown(&f);
}

static void test_start_fails(void **state)
{
	struct fixture f;
	int ret;

	(void)state;
	setup(&f, MEM_ANON_THP, 4 * MB);
	f.s->start_err = EACCES;
	ret = ls_snapshot_create(f.ctx, &f.s->base, NULL, &f.snap);
	CHECK(ret == -EACCES && !f.snap, "create returned %d", ret);
	CHECK(strstr(ls_ctx_error(f.ctx), "injected start failure"),
	      "message '%s'", ls_ctx_error(f.ctx));
	CHECK(f.s->destroyed, "sink not destroyed after a failed create");
	/* The context takes a new snapshot afterwards. */
	mem_sink_free(f.s);
	f.s = mem_sink_new();
	begin(&f, LS_STRATEGY_AUTO);
	CHECK(!ls_snapshot_wait(f.snap), "wait: %s", ls_snapshot_error(f.snap));
	teardown(&f);
}

/* Waits until the snapshot has done some pages but not all. */
static void wait_some_progress(struct fixture *f)
{
	struct ls_progress p;

	do {
		CHECK(!ls_snapshot_progress(f->snap, &p), "progress");
		CHECK(p.state == LS_SNAP_ACTIVE, "ended early (state %d)",
		      p.state);
	} while (!p.pages_done);
}

static void test_cancel(void **state)
{
	struct fixture f;

	(void)state;
	setup(&f, MEM_ANON_THP, 64 * MB);
	f.s->delay_us = 2000; /* 2 ms per write: long enough to cancel */
	begin(&f, LS_STRATEGY_AUTO);
	wait_some_progress(&f);
	ls_snapshot_cancel(f.snap);
	expect_failed(&f, ECANCELED, "cancel");
	CHECK(ls_snapshot_poll(f.snap) == -ECANCELED, "poll after cancel");
	teardown(&f);
}

static void test_poll_and_destroy_active(void **state)
{
	struct fixture f;

	(void)state;
	setup(&f, MEM_MEMFD, 32 * MB);
	f.s->delay_us = 2000;
	begin(&f, LS_STRATEGY_COPY);
	CHECK(ls_snapshot_poll(f.snap) == -EAGAIN, "poll while active");
	ls_snapshot_destroy(f.snap); /* cancels and waits */
	f.snap = NULL;
	CHECK(f.s->destroyed, "sink not destroyed");
	expect_released(&f);
	teardown(&f);
}

static void test_ctx_destroy_active(void **state)
{
	struct fixture f;

	(void)state;
	setup(&f, MEM_ANON_4K, 32 * MB);
	f.s->delay_us = 2000;
	begin(&f, LS_STRATEGY_WRITE_FIRST);
	wait_some_progress(&f);
	ls_ctx_destroy(f.ctx); /* cancels, waits, unregisters */
	f.ctx = NULL;
	expect_released(&f);
	CHECK(ls_snapshot_wait(f.snap) == -ECANCELED, "wait after ctx destroy");
	teardown(&f);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sink_fails_auto),
		cmocka_unit_test(test_sink_fails_write_first),
		cmocka_unit_test(test_sink_fails_memfd),
		cmocka_unit_test(test_sink_fails_hugetlb),
		cmocka_unit_test(test_sink_fails_on_fault),
		cmocka_unit_test(test_commit_fails),
		cmocka_unit_test(test_start_fails),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_poll_and_destroy_active),
		cmocka_unit_test(test_ctx_destroy_active),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
