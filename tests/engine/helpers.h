/* SPDX-License-Identifier: MIT */
/*
 * Test helpers for the engine: an in-memory sink that checks every page
 * arrives exactly once, an in-memory restore source, memory of every type
 * (hugetlb from a pool shared with the tests running alongside), and a crowd
 * of writer threads that can be quiesced for the instant of
 * ls_snapshot_begin().
 */
#ifndef LS_TEST_ENGINE_HELPERS_H
#define LS_TEST_ENGINE_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livesnap.h"

#define MB (1ul << 20)

/* Fails the test (cmocka) with a message when cond is false. */
#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fail_msg(__VA_ARGS__);                               \
	} while (0)

/* ---------------- memory of every type ---------------- */

enum mem_kind {
	MEM_ANON_THP,   /* private anonymous, MADV_HUGEPAGE */
	MEM_ANON_4K,    /* private anonymous, MADV_NOHUGEPAGE */
	MEM_MEMFD,      /* memfd, MAP_SHARED */
	MEM_HUGETLB,    /* MAP_HUGETLB private, 2 MiB pages */
	MEM_MEMFD_HUGE, /* memfd MFD_HUGETLB, MAP_SHARED */
	MEM_NKINDS,
};

struct test_mem {
	enum mem_kind kind;
	unsigned char *addr;
	size_t len;
	size_t page_size;
	int fd;
};

const char *mem_kind_name(enum mem_kind kind);
enum ls_mem_type mem_kind_type(enum mem_kind kind);
/* Maps len bytes (2 MiB aligned) of the kind; fails the test on error.
 * Hugetlb kinds grow the huge page pool when short (../hugetlb_pool.h). */
void mem_map(struct test_mem *m, enum mem_kind kind, size_t len);
void mem_unmap(struct test_mem *m);

/* ---------------- in-memory sink ---------------- */

struct mem_sink {
	struct ls_sink base;
	uint32_t nregions;
	struct ls_layout_region layout[8];
	unsigned char *mem[8];
	_Atomic uint8_t *seen[8];
	atomic_bool duplicate, out_of_range;
	_Atomic uint64_t pages;
	atomic_int calls_now, calls_max; /* concurrency seen */
	/* Injection: after fail_after pages, write_pages fails with fail_err. */
	int64_t fail_after;
	int fail_err;
	bool fail_single_only; /* only fail 1-page writes (fault path) */
	unsigned delay_us;     /* per write_pages call */
	unsigned delay_single_us; /* per 1-page call (a write-first fault) */
	int start_err, commit_err; /* injected into start / commit */
	pthread_mutex_t err_lock;
	/* Gate: calls wait for the snapshot's first fault (see ms_gate). */
	struct ls_snapshot *gate;
	atomic_bool gate_done;
	bool started, committed, aborted, destroyed, blob_after_commit;
	unsigned nblobs;
	char blob_name[4][LS_NAME_MAX];
	size_t blob_len[4];
};

struct mem_sink *mem_sink_new(void);
void mem_sink_free(struct mem_sink *s);
/* Asserts the sink holds exactly ref (zero pages left as holes). */
void mem_sink_expect(struct mem_sink *s, uint32_t region,
		     const unsigned char *ref, size_t len);
/*
 * A one-region snapshot's end: asserts the sink holds ref (m->len bytes),
 * then frees the snapshot, the sink, the context, ref and the memory.
 */
void expect_and_close(struct mem_sink *s, struct ls_snapshot *snap,
		      struct ls_ctx *ctx, unsigned char *ref,
		      struct test_mem *m);

/* ---------------- in-memory source ---------------- */

struct mem_source {
	struct ls_source base;
	const unsigned char *data;
	size_t len, page_size;
	unsigned delay_us;    /* per read_pages call */
	int64_t fail_at_page; /* -1: never */
	_Atomic uint64_t reads;
	/* Any look at page 0 waits (<= 10 s) until hold is cleared. */
	atomic_bool hold;
	atomic_int calls_now, calls_max;
};

void mem_source_init(struct mem_source *src, const unsigned char *data,
		     size_t len, size_t page_size);

/* ---------------- threads ---------------- */

/* What each thread of threads_start gets (and frees): its owner, number. */
struct thread_arg {
	void *owner;
	int id;
};

/* Starts n threads running fn, thread i with {owner, i}. */
void threads_start(pthread_t *th, int n, void *(*fn)(void *), void *owner);

/*
 * The pause point of a thread that others quiesce: while *pause_req is
 * set (and *quit is not) it counts itself in *paused and waits. Returns
 * whether it paused: the state it works on may have changed meanwhile.
 */
bool pause_point(atomic_int *pause_req, atomic_int *paused,
		 atomic_bool *quit);
/* The other side: sets *pause_req and waits until n threads are paused. */
void threads_pause(atomic_int *pause_req, atomic_int *paused, int n);

/* ---------------- writer threads ---------------- */

struct writers {
	unsigned char *mem;
	size_t len, page_size;
	int n;
	pthread_t th[8];
	atomic_bool quit;
	atomic_int pause_req, paused;
	_Atomic uint64_t writes;        /* all threads */
	_Atomic uint64_t per_thread[8]; /* each thread's writes */
};

void writers_start(struct writers *w, unsigned char *mem, size_t len,
		   size_t page_size, int n);
void writers_pause(struct writers *w); /* returns when all are idle */
void writers_resume(struct writers *w);
void writers_stop(struct writers *w);
/* Waits until every thread has written at least `more` times again. */
void writers_expect_progress(struct writers *w, uint64_t more);

/* Fills a fraction of the pages of mem with random data (the rest zero). */
void fill_random(unsigned char *mem, size_t len, size_t page_size,
		 unsigned percent, unsigned seed);

/* AnonHugePages (kB) of the mapping that holds addr. */
uint64_t anon_huge_kb(const void *addr);

/* True if any page of [addr, addr+len) is resident. */
bool mincore_any(void *addr, size_t len);

/* Number of pages of [addr, addr+len) that are userfaultfd write-protected. */
uint64_t count_wp_pages(const void *addr, size_t len);
/*
 * Threads of this process (/proc/self/task). A joined thread can still be
 * listed for a moment after pthread_join() returned (the kernel wakes the
 * joiner before it reaps the task), so: with want >= 0, the count once it
 * is want (or after 5 s, whatever it is); with want < 0, once it has held
 * still for 20 ms.
 */
int threads_settled(int want);

/* ---------------- one live snapshot ---------------- */

/* Every strategy, for the tests that run each. */
#define NSTRATEGIES 3
extern const enum ls_strategy test_strategies[NSTRATEGIES];

/*
 * Whether a test runs memory kind `kind` with test_strategies[i]: always,
 * but under TSan (~20x slower) only one strategy per kind, rotating with
 * `salt` (a number of the test's own), so that across a file's tests each
 * kind and each strategy still meet.
 */
bool strategy_wanted(int kind, size_t i, int salt);

/* A new context whose only region, "ram" (index 0), is m. */
struct ls_ctx *ctx_with_ram(const struct test_mem *m);

/*
 * Creates a snapshot of ctx into s, copies m into ref and begins it. The
 * sink's gate (mem_sink.gate) holds the writer after its first batch
 * until the first write fault, so that writes after begin meet protected
 * pages. w, if not NULL, is paused from the copy to the end of begin.
 */
struct ls_snapshot *snapshot_begin_gated(struct ls_ctx *ctx,
					 struct mem_sink *s,
					 const struct ls_snapshot_opts *o,
					 const struct test_mem *m,
					 unsigned char *ref, struct writers *w);

/*
 * One live snapshot of the context's only region (m) while w writes:
 * quiesce, copy the reference into ref, begin, resume, wait; asserts the
 * sink holds the reference byte for byte and that the stats add up.
 */
void exact_snapshot(struct ls_ctx *ctx, struct test_mem *m, struct writers *w,
		    const struct ls_snapshot_opts *o, unsigned char *ref,
		    struct ls_stats *stats);

#endif
