/* SPDX-License-Identifier: MIT */
/*
 * Deltas: a chain of snapshots, the first full and each next one holding
 * only the pages written since the one before, all live. Four threads
 * write a random set of pages between two snapshots (some of them to all
 * zeros); the test knows the set, so each delta must hold exactly it
 * (count and set, every page once), and base + deltas applied in order
 * must equal memory at each begin byte for byte (reference copies taken
 * while the threads were stopped). Then tracking across failures, cancels,
 * ls_track_start/stop and the refusals.
 */
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

#include <cmocka.h>

#include "helpers.h"

#if defined(__SANITIZE_THREAD__)
#define CHAIN_LONG 12 /* TSan runs everything ~20x slower */
#define CHAIN_SHORT 4
#define REGION (8 * MB)
#else
#define CHAIN_LONG 100
#define CHAIN_SHORT 10
#define REGION (16 * MB)
#endif
#define NWRITERS 4

/* ---------------- writers of a known page set ---------------- */

/*
 * Each round, thread t owns the pages p of the set with p % NWRITERS == t:
 * it first writes every one of them once (a "zero" page is cleared
 * whole, the others get a random non-zero word), then keeps writing
 * random words into its non-zero pages until it is paused.
 */
struct setw {
	unsigned char *mem;
	size_t ps;
	uint64_t npages;
	uint8_t *want;     /* per page: 0 no, 1 write, 2 clear to zero */
	pthread_t th[NWRITERS];
	atomic_bool quit;
	atomic_int pause_req, paused;
	atomic_uint round;           /* bumped when want changes */
	atomic_uint swept[NWRITERS]; /* the round whose sweep is done */
	_Atomic uint64_t writes;
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void write_word(struct setw *w, uint64_t page, uint64_t *seed)
{
	uint64_t *word = (uint64_t *)(w->mem + page * w->ps) +
			 rnd(seed) % (w->ps / 8);

	__atomic_store_n(word, rnd(seed) | 1, __ATOMIC_RELAXED);
	atomic_fetch_add(&w->writes, 1);
}

static void setw_sweep(struct setw *w, int id, uint64_t *seed)
{
	for (uint64_t p = (uint64_t)id; p < w->npages; p += NWRITERS) {
		if (w->want[p] == 2)
			memset(w->mem + p * w->ps, 0, w->ps);
		else if (w->want[p] == 1)
			write_word(w, p, seed);
	}
}

static void *setw_main(void *p)
{
	struct thread_arg *a = p;
	struct setw *w = a->owner;
	int id = a->id;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 7);
	unsigned done = 0;

	free(a);
	while (!atomic_load(&w->quit)) {
		unsigned round = atomic_load(&w->round);
		uint64_t page;

		if (pause_point(&w->pause_req, &w->paused, &w->quit))
			continue;
		if (done != round) {
			setw_sweep(w, id, &seed);
			done = round;
			atomic_store(&w->swept[id], round);
			continue;
		}
		page = rnd(&seed) % w->npages;
		page -= page % NWRITERS;
		page += (uint64_t)id;
		if (page < w->npages && w->want[page] == 1)
			write_word(w, page, &seed);
		else
			sched_yield(); /* a sparse set: do not spin hard */
	}
	return NULL;
}

static void setw_start(struct setw *w, struct test_mem *m)
{
	memset(w, 0, sizeof(*w));
	w->mem = m->addr;
	w->ps = m->page_size;
	w->npages = m->len / m->page_size;
	w->want = calloc(w->npages, 1);
	CHECK(w->want, "out of memory");
	atomic_store(&w->pause_req, 1);
	threads_start(w->th, NWRITERS, setw_main, w);
	threads_pause(&w->pause_req, &w->paused, NWRITERS);
}

static void setw_pause(struct setw *w)
{
	threads_pause(&w->pause_req, &w->paused, NWRITERS);
}

/* While paused: a new random set (percent of the pages), then resume. */
static uint64_t setw_next(struct setw *w, unsigned percent, uint64_t *seed)
{
	uint64_t n = 0;

	for (uint64_t p = 0; p < w->npages; p++) {
		w->want[p] = rnd(seed) % 100 < percent;
		if (w->want[p] && rnd(seed) % 16 == 0)
			w->want[p] = 2;
		n += w->want[p] != 0;
	}
	atomic_fetch_add(&w->round, 1);
	atomic_store(&w->pause_req, 0);
	return n;
}

/* Waits until every thread has written its whole share of the set. */
static void setw_wait_swept(struct setw *w)
{
	unsigned round = atomic_load(&w->round);

	for (int i = 0; i < NWRITERS; i++)
		while (atomic_load(&w->swept[i]) != round)
			sched_yield();
}

static void setw_stop(struct setw *w)
{
	atomic_store(&w->quit, true);
	for (int i = 0; i < NWRITERS; i++)
		pthread_join(w->th[i], NULL);
	free(w->want);
}

/* ---------------- the chain ---------------- */

enum track_how {
	BY_FAULTS,  /* the fault thread records first writes */
	SETTLED,    /* ls_track_settle() after each snapshot */
	BY_CALLER,  /* ls_track_by_caller(): the test reports its sets */
};

struct chain {
	struct ls_ctx *ctx;
	struct test_mem m;
	struct setw w;
	unsigned char *ref;   /* memory at the last begin */
	unsigned char *image; /* base + deltas applied so far */
	uint8_t *expect;      /* the set written since the last begin */
	uint64_t expect_n;
	uint8_t last_id[LS_ID_BYTES];
	uint64_t seed;
	unsigned n;
	size_t granule; /* opts.track_granule */
	bool write_after; /* the next set is written after the snapshot */
	enum track_how how; /* between snapshots */
	bool by_caller_opt; /* BY_CALLER through opts.track_by_caller */
	bool prepare; /* each snapshot calls ls_snapshot_prepare() */
	bool prepare_running; /* ... with the threads writing meanwhile */
	bool reported; /* BY_CALLER: the next delta's set is reported already */
	uint8_t *early; /* BY_CALLER: pages reported before the prepare */
	/* called before a delta's prepare (threads stopped) and after it */
	void (*before_prepare)(struct chain *c);
	void (*after_prepare)(struct chain *c);
	void (*after_full_prepare)(struct chain *c); /* a full one's */
	uint64_t extra;	/* pages a granule added to deltas */
	/* Pages known to be zero that the reference copy must not touch. */
	const uint8_t *zeroed;
	struct discarder *disc; /* discards between snapshots, or NULL */
};

/*
 * A thread that discards random pages (MADV_DONTNEED) between snapshots,
 * while the writers fault: each discard is a UFFD_EVENT_REMOVE the fault
 * thread must read while it serves those faults (its un-protects meet
 * EAGAIN until it has). Stopped from before each begin until the
 * snapshot has ended (a pending page discarded would fail it); what it
 * discarded joins the delta's expected set then.
 */
struct discarder {
	unsigned char *mem;
	size_t ps;
	uint64_t npages;
	_Atomic uint8_t *hit; /* discarded since the last begin */
	pthread_t th[1];
	atomic_bool quit;
	atomic_int pause_req, paused;
	_Atomic uint64_t discards;
};

static void *discarder_main(void *p)
{
	struct thread_arg *a = p;
	struct discarder *d = a->owner;
	uint64_t seed = 0xd15ca4dull;

	free(a);
	while (!atomic_load(&d->quit)) {
		uint64_t page;

		if (pause_point(&d->pause_req, &d->paused, &d->quit))
			continue;
		page = rnd(&seed) % d->npages;
		CHECK(!madvise(d->mem + page * d->ps, d->ps, MADV_DONTNEED),
		      "madvise(MADV_DONTNEED): %s", strerror(errno));
		atomic_store(&d->hit[page], 1);
		atomic_fetch_add(&d->discards, 1);
		sched_yield(); /* a few hundred a snapshot, not a flood */
	}
	return NULL;
}

static void discarder_start(struct discarder *d, struct test_mem *m)
{
	memset(d, 0, sizeof(*d));
	d->mem = m->addr;
	d->ps = m->page_size;
	d->npages = m->len / m->page_size;
	d->hit = calloc(d->npages, 1);
	CHECK(d->hit, "out of memory");
	atomic_store(&d->pause_req, 1);
	threads_start(d->th, 1, discarder_main, d);
	threads_pause(&d->pause_req, &d->paused, 1);
}

/* Stops it and adds what it discarded to the expected set. */
static void discarder_pause(struct discarder *d, struct chain *c)
{
	threads_pause(&d->pause_req, &d->paused, 1);
	for (uint64_t p = 0; p < d->npages; p++) {
		if (!atomic_exchange(&d->hit[p], 0))
			continue;
		c->expect_n += !c->expect[p];
		c->expect[p] = 1;
	}
}

static void discarder_stop(struct discarder *d)
{
	atomic_store(&d->quit, true);
	pthread_join(d->th[0], NULL);
	free((void *)d->hit);
}

/*
 * The chains' contexts: with discard events (the default), or without
 * (LS_CTX_NO_DISCARD_EVENTS: the look for anonymous discards in begin,
 * anonymous regions not prepared), for the tests that run both ways.
 */
static uint32_t ctx_flags;

static void chain_open_len(struct chain *c, enum mem_kind kind, size_t len)
{
	struct ls_ctx_opts co = {.flags = ctx_flags};
	char err[LS_ERRMSG_MAX];

	memset(c, 0, sizeof(*c));
	c->seed = 0x1234567ull + (uint64_t)kind;
	mem_map(&c->m, kind, len);
	fill_random(c->m.addr, c->m.len, c->m.page_size, 50, (unsigned)kind);
	CHECK(!ls_ctx_create_opts(&c->ctx, &co, err, sizeof(err)),
	      "ls_ctx_create_opts: %s", err);
	CHECK(ls_region_add(c->ctx, "ram", c->m.addr, c->m.len) == 0,
	      "ls_region_add(%s): %s", mem_kind_name(kind),
	      ls_ctx_error(c->ctx));
	c->ref = malloc(c->m.len);
	c->image = calloc(1, c->m.len);
	CHECK(c->ref && c->image, "out of memory");
	setw_start(&c->w, &c->m);
}

static void chain_open(struct chain *c, enum mem_kind kind)
{
	chain_open_len(c, kind, REGION);
}

static void chain_close(struct chain *c)
{
	setw_stop(&c->w);
	CHECK(!ls_track_stop(c->ctx), "ls_track_stop: %s",
	      ls_ctx_error(c->ctx));
	CHECK(count_wp_pages(c->m.addr, c->m.len) == 0,
	      "pages still write-protected after ls_track_stop");
	ls_ctx_destroy(c->ctx);
	free(c->ref);
	free(c->image);
	free(c->expect);
	mem_unmap(&c->m);
}

/* With a granule: was a page of p's block written? */
static bool block_written(const struct chain *c, uint64_t p)
{
	uint64_t per = c->granule / c->m.page_size, first = p - p % per;

	for (uint64_t q = first; q < first + per && q < c->w.npages; q++)
		if (c->expect[q])
			return true;
	return false;
}

/*
 * Checks a finished delta against the set and applies it to the image.
 * With a granule, the delta holds every written page and may hold the
 * other pages of a written block (only those).
 */
static void check_delta(struct chain *c, struct mem_sink *s,
			const struct ls_stats *st)
{
	uint64_t ps = c->m.page_size, got = 0;

	CHECK(!atomic_load(&s->duplicate), "snapshot %u: a page twice", c->n);
	for (uint64_t p = 0; p < c->w.npages; p++) {
		bool in = atomic_load(&s->seen[0][p]) != 0;

		got += in;
		if (c->granule > ps && in && !c->expect[p] &&
		    block_written(c, p)) {
			c->extra++;
			memcpy(c->image + p * ps, s->mem[0] + p * ps, ps);
			continue;
		}
		if (in != (c->expect[p] != 0))
			fail_msg("snapshot %u (delta): page %llu is %s the delta but was %s since the last begin",
				 c->n, (unsigned long long)p,
				 in ? "in" : "not in",
				 c->expect[p] ? "written" : "not written");
		if (in)
			memcpy(c->image + p * ps, s->mem[0] + p * ps, ps);
	}
	CHECK((got == c->expect_n || c->granule > ps) &&
		      st->pages_total == got && st->pages_written == got,
	      "snapshot %u: delta of %llu pages, stats %llu/%llu, %llu written",
	      c->n, (unsigned long long)got,
	      (unsigned long long)st->pages_written,
	      (unsigned long long)st->pages_total,
	      (unsigned long long)c->expect_n);
}

/*
 * Memory at begin, read while the threads are stopped. A discarded shmem
 * or hugetlb page is not read: a read would allocate it again.
 */
static void take_reference(struct chain *c)
{
	size_t ps = c->m.page_size;

	if (!c->zeroed) {
		memcpy(c->ref, c->m.addr, c->m.len);
		return;
	}
	for (uint64_t p = 0; p < c->w.npages; p++)
		if (c->zeroed[p])
			memset(c->ref + p * ps, 0, ps);
		else
			memcpy(c->ref + p * ps, c->m.addr + p * ps, ps);
}

/*
 * The caller's report before a delta: the set written since the last
 * begin, as ls_track_dirty_bitmap() takes it (4 KiB units). First a write
 * that it leaves out: a page outside the set gets a byte changed and put
 * back, which tracking by write faults would have recorded.
 */
static void report_set(struct chain *c)
{
	uint64_t per = c->m.page_size / 4096, n4k = c->w.npages * per;
	uint64_t *bits = calloc((n4k + 63) / 64, 8);
	volatile unsigned char *b = NULL;

	CHECK(bits, "out of memory");
	for (uint64_t p = 0; p < c->w.npages; p++) {
		if (c->early && c->early[p])
			continue; /* reported before the prepare */
		if (c->expect[p])
			bits[p * per / 64] |= 1ull << (p * per % 64);
		else if (!b && (!c->zeroed || !c->zeroed[p]))
			b = c->m.addr + p * c->m.page_size + 8;
	}
	if (b) {
		unsigned char v = *b;

		*b = (unsigned char)(v + 1);
		*b = v;
	}
	CHECK(!ls_track_dirty_bitmap(c->ctx, c->m.addr, n4k, bits),
	      "ls_track_dirty_bitmap: %s", ls_ctx_error(c->ctx));
	free(bits);
	free(c->early);
	c->early = NULL;
}

/*
 * A delta's pages so far reported before its prepare (as the VMM hands
 * over the dirty log taken early); the report before begin leaves them
 * out, so that the delta holds them only if those reports count.
 */
static void report_before_prepare(struct chain *c)
{
	report_set(c);
	c->early = malloc(c->w.npages);
	CHECK(c->early, "out of memory");
	memcpy(c->early, c->expect, c->w.npages);
}

/* Whether the chains' contexts have discard events. */
static bool discard_events(void)
{
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	bool have;

	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ls_ctx_create: %s",
	      err);
	have = ls_ctx_features(ctx) & LS_FEAT_EVENT_REMOVE;
	ls_ctx_destroy(ctx);
	return have && !(ctx_flags & LS_CTX_NO_DISCARD_EVENTS);
}

/*
 * The kinds a full snapshot's ls_snapshot_prepare() protects: shmem and
 * hugetlbfs, and anonymous memory where discards are reported.
 */
static bool kind_prepared(enum mem_kind kind)
{
	return mem_kind_type(kind) != LS_MEM_ANON || discard_events();
}

/*
 * ls_snapshot_prepare() before a snapshot, the threads stopped. A full
 * one: the kinds it prepares are then protected whole, except (tracked by
 * faults already) the pages written since the last begin; the others as
 * they were. A delta tracked by faults: every page is protected again (the
 * delta's pages so far too); by the caller, the kinds a full snapshot's
 * prepare protects are protected whole. Then the
 * threads run again and the test itself writes every 3rd page, so that
 * begin must re-protect what was written since the prepare (a delta must
 * hold those pages too).
 */
static void chain_prepare(struct chain *c, struct ls_snapshot *snap,
			  bool delta)
{
	uint64_t all = c->m.len / 4096, before, after;
	bool faults = ls_track_active(c->ctx, NULL) && c->how == BY_FAULTS;
	bool all_now = delta ? faults || (c->how == BY_CALLER &&
					  kind_prepared(c->m.kind))
			     : kind_prepared(c->m.kind) && !faults;

	if (c->prepare_running) {
		CHECK(!ls_snapshot_prepare(snap), "ls_snapshot_prepare: %s",
		      ls_ctx_error(c->ctx));
		return;
	}
	setw_pause(&c->w);
	if (delta && c->before_prepare)
		c->before_prepare(c);
	before = count_wp_pages(c->m.addr, c->m.len);
	CHECK(!ls_snapshot_prepare(snap), "ls_snapshot_prepare: %s",
	      ls_ctx_error(c->ctx));
	CHECK(!ls_snapshot_prepare(snap), "ls_snapshot_prepare twice: %s",
	      ls_ctx_error(c->ctx));
	after = count_wp_pages(c->m.addr, c->m.len);
	if (!all_now)
		CHECK(after == before,
		      "snapshot %u: prepare changed the protection of %s memory (%llu -> %llu pages)",
		      c->n, mem_kind_name(c->m.kind),
		      (unsigned long long)before, (unsigned long long)after);
	else
		CHECK(after == all,
		      "snapshot %u: prepare protected %llu of %llu pages",
		      c->n, (unsigned long long)after, (unsigned long long)all);
	atomic_store(&c->w.pause_req, 0);
	for (uint64_t p = 0; p < c->w.npages; p += 3) {
		if (c->zeroed && c->zeroed[p])
			continue;
		/* the threads write words too */
		__atomic_fetch_add((uint64_t *)(c->m.addr +
						p * c->m.page_size + 8),
				   1, __ATOMIC_RELAXED);
		if (delta && !c->expect[p]) {
			c->expect[p] = 1;
			c->expect_n++;
		}
	}
	if (delta ? c->after_prepare : c->after_full_prepare)
		(delta ? c->after_prepare : c->after_full_prepare)(c);
}

/*
 * One snapshot of the chain: stop the threads, take the reference, begin,
 * give the threads their next set, wait, check.
 */
static void chain_step(struct chain *c, bool delta, enum ls_strategy strat,
		       unsigned percent)
{
	struct ls_snapshot_opts o = {.strategy = strat, .track = true,
				     .delta = delta,
				     .track_granule = c->granule,
				     .track_by_caller = c->by_caller_opt};
	struct mem_sink *s = mem_sink_new();
	uint8_t id[LS_ID_BYTES], parent[LS_ID_BYTES];
	struct ls_snapshot *snap;
	struct ls_stats st;
	uint64_t next_n = 0;
	int ret;

	ret = ls_snapshot_create(c->ctx, &s->base, &o, &snap);
	CHECK(!ret, "ls_snapshot_create: %s", ls_ctx_error(c->ctx));
	CHECK(s->started, "sink not started");
	if (c->prepare)
		chain_prepare(c, snap, delta);
	if (c->disc)
		discarder_pause(c->disc, c);
	setw_pause(&c->w);
	take_reference(c);
	if (c->how == BY_CALLER && delta && !c->reported)
		report_set(c);
	c->reported = false;
	ret = ls_snapshot_begin(snap);
	CHECK(!ret, "ls_snapshot_begin: %s", ls_ctx_error(c->ctx));
	/*
	 * The threads write the next set while the snapshot runs, except in
	 * the granule chains: there they write after it (between snapshots,
	 * where the granule applies), so that blocks do get added.
	 */
	if (!c->write_after)
		next_n = setw_next(&c->w, percent, &c->seed);
	ret = ls_snapshot_wait(snap);
	if (c->disc)
		atomic_store(&c->disc->pause_req, 0);
	if (c->how == SETTLED) {
		/* Running threads go on writing the set after a stop for this;
		 * with write_after they are still stopped. */
		if (!c->write_after)
			setw_pause(&c->w);
		CHECK(!ls_track_settle(c->ctx), "snapshot %u: ls_track_settle: %s",
		      c->n, ls_ctx_error(c->ctx));
		if (!c->write_after)
			atomic_store(&c->w.pause_req, 0);
	}
	if (c->how == BY_CALLER) {
		CHECK(c->by_caller_opt || !ls_track_by_caller(c->ctx),
		      "snapshot %u: ls_track_by_caller: %s", c->n,
		      ls_ctx_error(c->ctx));
		CHECK(count_wp_pages(c->m.addr, c->m.len) == 0,
		      "snapshot %u: pages write-protected under the caller's tracking",
		      c->n);
	}
	if (c->write_after)
		next_n = setw_next(&c->w, percent, &c->seed);
	CHECK(!ret, "snapshot %u: %s", c->n, ls_snapshot_error(snap));
	CHECK(s->committed && !s->aborted, "not committed");
	CHECK(!ls_snapshot_stats(snap, &st), "stats");
	CHECK(ls_snapshot_id(snap, id, parent) == (delta ? 1 : 0),
	      "ls_snapshot_id: wrong kind");
	CHECK(!memcmp(s->layout[0].name, "ram", 4), "layout");
	if (delta) {
		CHECK(!memcmp(parent, c->last_id, LS_ID_BYTES),
		      "snapshot %u: the delta's parent is not the last snapshot",
		      c->n);
		check_delta(c, s, &st);
	} else {
		mem_sink_expect(s, 0, c->ref, c->m.len);
		memcpy(c->image, s->mem[0], c->m.len);
	}
	if (memcmp(c->image, c->ref, c->m.len))
		fail_msg("snapshot %u: base + deltas differ from memory at begin",
			 c->n);
	CHECK(memcmp(id, c->last_id, LS_ID_BYTES), "the id did not change");
	memcpy(c->last_id, id, LS_ID_BYTES);
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	/* What the threads write until the next begin is the next delta. */
	setw_wait_swept(&c->w);
	free(c->expect);
	c->expect = malloc(c->w.npages);
	CHECK(c->expect, "out of memory");
	memcpy(c->expect, c->w.want, c->w.npages);
	c->expect_n = next_n;
	c->n++;
}

static void run_chain_opts(enum mem_kind kind, unsigned len, size_t granule,
			   bool write_after, enum track_how how)
{
	struct chain c;
	uint64_t seed = 99;

	chain_open(&c, kind);
	c.granule = granule;
	c.write_after = write_after;
	c.how = how;
	/* by the option on the writers' odd memory kinds */
	c.by_caller_opt = how == BY_CALLER && kind % 2;
	chain_step(&c, false, LS_STRATEGY_AUTO, 20);
	for (unsigned i = 1; i < len; i++)
		chain_step(&c, true, test_strategies[i % NSTRATEGIES],
			   (unsigned)(rnd(&seed) % 40));
	CHECK(!write_after || !granule || c.extra,
	      "the granule never added a page");
	setw_pause(&c.w);
	chain_close(&c);
}

static void run_chain_granule(enum mem_kind kind, unsigned len,
			      size_t granule, bool write_after)
{
	run_chain_opts(kind, len, granule, write_after, BY_FAULTS);
}

static void run_chain(enum mem_kind kind, unsigned len)
{
	run_chain_granule(kind, len, 0, false);
}

/*
 * Anonymous memory, tracked by faults, with a thread discarding random
 * pages between snapshots while the writers fault: each delta holds
 * exactly the pages written or discarded since the last begin, and base
 * + deltas equal memory at each begin.
 */
static void test_chain_discards_racing(void **state)
{
	static const enum mem_kind kinds[] = {MEM_ANON_4K, MEM_ANON_THP};

	(void)state;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct discarder d;
		struct chain c;
		uint64_t seed = 5;

		chain_open(&c, kinds[k]);
		discarder_start(&d, &c.m);
		c.disc = &d;
		chain_step(&c, false, LS_STRATEGY_AUTO, 20);
		for (unsigned i = 1; i < CHAIN_SHORT; i++)
			chain_step(&c, true, test_strategies[i % NSTRATEGIES],
				   (unsigned)(rnd(&seed) % 40));
		CHECK(atomic_load(&d.discards) > 0, "no page was discarded");
		discarder_pause(&d, &c);
		discarder_stop(&d);
		setw_pause(&c.w);
		chain_close(&c);
	}
}

/*
 * Settled (asynchronous) tracking between snapshots, every memory kind:
 * the threads write each set partly during the snapshot (write faults)
 * and partly after the settle (the kernel's own resolution); each delta
 * must still hold exactly the set, and base + deltas equal memory.
 */
static void test_chain_settled(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++)
		run_chain_opts((enum mem_kind)k, CHAIN_SHORT, 0, false, SETTLED);
	/* written only after the settle */
	run_chain_opts(MEM_ANON_THP, CHAIN_SHORT, 0, true, SETTLED);
	run_chain_opts(MEM_MEMFD, CHAIN_SHORT, 0, true, SETTLED);
}

/*
 * Tracking by the caller, every memory kind: after each snapshot nothing
 * stays write-protected, and each delta holds exactly what the test
 * reported (its sets, as a bitmap), not a page written but not reported.
 * Half the kinds ask for it in their snapshots' options
 * (track_by_caller), the others call ls_track_by_caller() after each.
 */
static void test_chain_by_caller(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++)
		run_chain_opts((enum mem_kind)k, CHAIN_SHORT, 0, false,
			       BY_CALLER);
	run_chain_opts(MEM_ANON_THP, CHAIN_SHORT, 0, true, BY_CALLER);
}

/*
 * Tracking by blocks: every written page, and no more than their blocks;
 * written between snapshots (where blocks are certainly added) and while
 * they run (the fault path releases blocks of captured pages).
 */
static void test_chain_granule(void **state)
{
	(void)state;
	run_chain_granule(MEM_ANON_THP, CHAIN_SHORT, 64 << 10, true);
	run_chain_granule(MEM_MEMFD, CHAIN_SHORT, 2 << 20, true);
	run_chain_granule(MEM_ANON_THP, CHAIN_SHORT, 2 << 20, false);
	run_chain_granule(MEM_ANON_4K, CHAIN_SHORT, 64 << 10, false);
}

static void test_chain_anon_thp(void **state)
{
	(void)state;
	run_chain(MEM_ANON_THP, CHAIN_LONG);
}

static void test_chain_anon_4k(void **state)
{
	(void)state;
	run_chain(MEM_ANON_4K, CHAIN_SHORT);
}

static void test_chain_memfd(void **state)
{
	(void)state;
	run_chain(MEM_MEMFD, CHAIN_SHORT);
}

static void test_chain_hugetlb(void **state)
{
	(void)state;
	run_chain(MEM_HUGETLB, CHAIN_SHORT);
}

static void test_chain_memfd_huge(void **state)
{
	(void)state;
	run_chain(MEM_MEMFD_HUGE, CHAIN_SHORT);
}

/*
 * Prepared full snapshots (ls_snapshot_prepare()), every memory kind, by
 * faults and by the caller: the first from no tracking (prepare tracks
 * for itself), one in the middle of the chain (tracking already on); both
 * must equal memory at begin, though the threads and the test wrote
 * between the prepare and the begin and the threads go on writing during
 * the snapshot; the deltas after them hold exactly the sets. `running`:
 * the threads write through each prepare (test_prepared_running).
 */
static void run_prepared(enum mem_kind kind, enum track_how how,
			 bool running)
{
	struct chain c;

	/* a memfd large enough for its first protect to take a few ms */
	chain_open_len(&c, kind,
		       running && kind == MEM_MEMFD ? 16 * REGION : REGION);
	c.how = how;
	c.by_caller_opt = how == BY_CALLER && kind % 2;
	c.prepare = true;
	c.prepare_running = running;
	if (how == BY_CALLER && !running)
		c.before_prepare = report_before_prepare;
	chain_step(&c, false, LS_STRATEGY_AUTO, 20);
	chain_step(&c, true, LS_STRATEGY_COPY, 20);
	chain_step(&c, false, LS_STRATEGY_WRITE_FIRST, 30);
	chain_step(&c, true, LS_STRATEGY_AUTO, 10);
	setw_pause(&c.w);
	chain_close(&c);
}

static void test_prepared(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++) {
		run_prepared((enum mem_kind)k, BY_FAULTS, false);
		run_prepared((enum mem_kind)k, BY_CALLER, false);
	}
}

/*
 * Prepares while the threads write (their sets, 30 % of the pages, again
 * and again): on file kinds a full snapshot's prepare protects whole,
 * then protects again the blocks written meanwhile, after which writes
 * are released page by page (its second pass); begin protects only what
 * was written after that. Fulls from no tracking and under the caller's
 * tracking, deltas prepared too; each equals memory at begin. The memfd
 * region is large enough (its first protect a few ms) for the threads to
 * write into it meanwhile; a small region gets through before they do.
 */
static void test_prepared_running(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++) {
		if (!kind_prepared((enum mem_kind)k))
			continue;
		run_prepared((enum mem_kind)k, BY_FAULTS, true);
		run_prepared((enum mem_kind)k, BY_CALLER, true);
	}
}

/*
 * A full snapshot's prepare of anonymous memory (with discard events): a
 * page discarded between prepare and begin loses its protection with its
 * content, in a 2 MiB block nothing else was written in (so begin's
 * re-protect of the written pages does not cover it by chance). Begin
 * must protect it again, as its event marked it: the test writes it right
 * after begin, and the snapshot must hold it zero, as it was at begin.
 * Then with 100 more discards, more than the begin keeps ranges of (it
 * protects the anonymous regions whole instead: the kernel may zap a page
 * after a prepare protected it again, docs/engine.md).
 */
static void test_prepared_discard(void **state)
{
	static const enum mem_kind kinds[] = {MEM_ANON_4K, MEM_ANON_THP};

	(void)state;
	if (!discard_events())
		fail_msg("no discard events: anonymous memory is not prepared");
	/* k >= 2: also more discards than the begin keeps ranges of */
	for (size_t k = 0; k < 4; k++) {
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot_opts o = {.strategy = LS_STRATEGY_COPY};
		char err[LS_ERRMSG_MAX];
		struct ls_snapshot *snap;
		struct test_mem m;
		struct ls_ctx *ctx;
		unsigned char *ref;
		uint64_t victim;

		mem_map(&m, kinds[k % 2], REGION);
		fill_random(m.addr, m.len, m.page_size, 100, 7);
		victim = m.len / m.page_size - 3;
		CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "create: %s", err);
		CHECK(!ls_region_add(ctx, "ram", m.addr, m.len), "add: %s",
		      ls_ctx_error(ctx));
		CHECK(!ls_snapshot_create(ctx, &s->base, &o, &snap),
		      "ls_snapshot_create: %s", ls_ctx_error(ctx));
		CHECK(!ls_snapshot_prepare(snap), "ls_snapshot_prepare: %s",
		      ls_ctx_error(ctx));
		CHECK(count_wp_pages(m.addr, m.len) == m.len / 4096,
		      "%s: prepare left pages unprotected",
		      mem_kind_name(kinds[k]));
		for (uint64_t p = 1; p < 10; p += 4) /* a few, far from it */
			m.addr[p * m.page_size] ^= 1;
		CHECK(!madvise(m.addr + victim * m.page_size, m.page_size,
			       MADV_DONTNEED),
		      "madvise: %s", strerror(errno));
		for (uint64_t i = 0; k >= 2 && i < 100; i++)
			CHECK(!madvise(m.addr + (victim - 3 - 2 * i) *
						    m.page_size,
				       m.page_size, MADV_DONTNEED),
			      "madvise: %s", strerror(errno));
		ref = malloc(m.len);
		CHECK(ref, "out of memory");
		memcpy(ref, m.addr, m.len);
		CHECK(!ls_snapshot_begin(snap), "ls_snapshot_begin: %s",
		      ls_ctx_error(ctx));
		m.addr[victim * m.page_size + 8] = 0x42;
		if (k >= 2)
			m.addr[(victim - 5) * m.page_size + 8] = 0x43;
		CHECK(!ls_snapshot_wait(snap), "%s: snapshot: %s",
		      mem_kind_name(kinds[k % 2]), ls_snapshot_error(snap));
		expect_and_close(s, snap, ctx, ref, &m);
	}
}

/* Prepares that never begin give the protection back; the refusals. */
static void test_prepare_undo(void **state)
{
	struct ls_snapshot_opts full = {.track = true}, delta = {.delta = true};
	struct ls_snapshot_opts delta_tracked = {.delta = true, .track = true};
	uint64_t all;
	struct ls_snapshot *snap;
	struct mem_sink *s;
	struct chain c;
	int ret;

	(void)state;
	chain_open(&c, MEM_MEMFD);
	setw_pause(&c.w);
	all = c.m.len / 4096;
	/* No tracking: destroyed, then cancelled, before begin. */
	for (int i = 0; i < 2; i++) {
		s = mem_sink_new();
		CHECK(!ls_snapshot_create(c.ctx, &s->base, &full, &snap), "create");
		CHECK(!ls_snapshot_prepare(snap), "prepare: %s", ls_ctx_error(c.ctx));
		CHECK(count_wp_pages(c.m.addr, c.m.len) == all, "not prepared");
		ret = ls_track_settle(c.ctx);
		CHECK(ret == -EBUSY && strstr(ls_ctx_error(c.ctx), "prepared"),
		      "settle while prepared: %d %s", ret, ls_ctx_error(c.ctx));
		if (i)
			ls_snapshot_cancel(snap);
		else
			ls_snapshot_destroy(snap);
		CHECK(count_wp_pages(c.m.addr, c.m.len) == 0,
		      "still protected after a prepared snapshot was %s",
		      i ? "cancelled" : "destroyed");
		if (i)
			ls_snapshot_destroy(snap);
		mem_sink_free(s);
		CHECK(!ls_track_active(c.ctx, NULL), "tracking after an undone prepare");
	}
	/* The caller's tracking: refusals, a delta, then undone. */
	c.how = BY_CALLER;
	chain_step(&c, false, LS_STRATEGY_AUTO, 20);
	setw_pause(&c.w);
	s = mem_sink_new();
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &full, &snap), "create");
	CHECK(!ls_snapshot_prepare(snap), "prepare: %s", ls_ctx_error(c.ctx));
	ret = ls_track_by_caller(c.ctx);
	CHECK(ret == -EBUSY && strstr(ls_ctx_error(c.ctx), "prepared"),
	      "by_caller while prepared: %d %s", ret, ls_ctx_error(c.ctx));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(count_wp_pages(c.m.addr, c.m.len) == 0,
	      "protected under the caller's tracking after an undone prepare");
	CHECK(ls_track_active(c.ctx, NULL), "the chain lost its parent");
	/*
	 * A delta's prepare protects the memory whole. Undone, nothing stays
	 * protected, and what the caller reported before it and while it was
	 * prepared stays the next delta's (not reported again: the delta
	 * holds exactly the set written since the last begin).
	 */
	for (int i = 0; i < 2; i++) {
		s = mem_sink_new();
		CHECK(!ls_snapshot_create(c.ctx, &s->base, &delta_tracked,
					  &snap),
		      "create delta");
		if (i)
			report_set(&c);
		CHECK(!ls_snapshot_prepare(snap), "prepare a delta: %s",
		      ls_ctx_error(c.ctx));
		CHECK(count_wp_pages(c.m.addr, c.m.len) == all,
		      "a delta's prepare under the caller's tracking left pages unprotected");
		if (!i)
			report_set(&c);
		ls_snapshot_destroy(snap);
		mem_sink_free(s);
		CHECK(count_wp_pages(c.m.addr, c.m.len) == 0,
		      "protected under the caller's tracking after an undone delta prepare");
		c.reported = true;
		atomic_store(&c.w.pause_req, 0);
		chain_step(&c, true, LS_STRATEGY_AUTO, 20);
		setw_pause(&c.w);
	}
	/* After begin a prepare is refused. */
	s = mem_sink_new();
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &delta, &snap), "create delta");
	CHECK(!ls_snapshot_prepare(snap), "prepare a delta: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	ret = ls_snapshot_prepare(snap);
	CHECK(ret == -EINVAL && strstr(ls_ctx_error(c.ctx), "after begin"),
	      "prepare after begin: %d %s", ret, ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	chain_close(&c);
}

/*
 * A prepared delta tracked by faults that never begins: destroyed, then
 * cancelled. Its pages so far and those written after its prepare stay in
 * the sets: the next delta holds exactly all of them.
 */
static void test_prepare_delta_undo(void **state)
{
	struct ls_snapshot_opts delta = {.delta = true, .track = true};
	struct chain c;

	(void)state;
	chain_open(&c, MEM_ANON_THP);
	chain_step(&c, false, LS_STRATEGY_AUTO, 20);
	for (uint64_t i = 0; i < 2; i++) {
		struct mem_sink *s = mem_sink_new();
		struct ls_snapshot *snap;
		int ret;

		setw_pause(&c.w);
		CHECK(!ls_snapshot_create(c.ctx, &s->base, &delta, &snap),
		      "create: %s", ls_ctx_error(c.ctx));
		CHECK(!ls_snapshot_prepare(snap), "prepare: %s",
		      ls_ctx_error(c.ctx));
		CHECK(count_wp_pages(c.m.addr, c.m.len) == c.m.len / 4096,
		      "a delta's prepare left pages unprotected");
		ret = ls_track_settle(c.ctx);
		CHECK(ret == -EBUSY && strstr(ls_ctx_error(c.ctx), "prepared"),
		      "settle while a delta is prepared: %d %s", ret,
		      ls_ctx_error(c.ctx));
		/* written after the prepare: recorded in the later sets */
		for (uint64_t p = 1 + i; p < c.w.npages; p += 7) {
			c.m.addr[p * c.m.page_size + 24] ^= 0x5a;
			c.expect_n += !c.expect[p];
			c.expect[p] = 1;
		}
		if (i)
			ls_snapshot_cancel(snap);
		ls_snapshot_destroy(snap);
		mem_sink_free(s);
		atomic_store(&c.w.pause_req, 0);
	}
	chain_step(&c, true, LS_STRATEGY_AUTO, 10);
	setw_pause(&c.w);
	chain_close(&c);
}

/* ---------------- discards between snapshots ---------------- */

/*
 * A discard changes a page without a write fault. Between two snapshots of
 * a chain, each way of discarding a page that the memory kind allows; the
 * next delta must hold exactly those pages whose content changed (and
 * then read zero, or what was written after), and base + deltas must equal
 * memory at its begin. The delta after it must hold nothing: the checks
 * find no page twice.
 */
enum discard {
	DONTNEED,       /* madvise(MADV_DONTNEED), then nothing */
	DONTNEED_READ,  /* ... then a read */
	DONTNEED_WRITE, /* ... then a write (no fault for anonymous memory) */
	DONTNEED_KEEPS, /* shmem: the file keeps the page: not in the delta */
	REMOVE,         /* madvise(MADV_REMOVE) */
	PUNCH,          /* fallocate(PUNCH_HOLE) on the file */
	PUNCH_WRITE,    /* ... then a write */
	PUNCH_READ,     /* ... then a read: unseen; ls_track_dirty says it */
};

static void discard(struct chain *c, uint64_t p, enum discard how,
		    uint8_t *zeroed)
{
	size_t ps = c->m.page_size;
	unsigned char *a = c->m.addr + p * ps;
	int ret = 0;

	if (how <= DONTNEED_KEEPS)
		ret = madvise(a, ps, MADV_DONTNEED);
	else if (how == REMOVE)
		ret = madvise(a, ps, MADV_REMOVE);
	else
		ret = fallocate(c->m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)(p * ps), (off_t)ps);
	CHECK(!ret, "discard %d of page %llu: %s", (int)how,
	      (unsigned long long)p, strerror(errno));
	if (how == DONTNEED_READ || how == PUNCH_READ)
		CHECK(*(volatile unsigned char *)a == 0, "a discarded page reads non-zero");
	if (how == DONTNEED_WRITE || how == PUNCH_WRITE)
		memset(a + 64, 0x5a, 64);
	if (how == PUNCH_READ)
		CHECK(!ls_track_dirty(c->ctx, a, ps), "ls_track_dirty: %s",
		      ls_ctx_error(c->ctx));
	c->expect[p] = how != DONTNEED_KEEPS;
	c->expect_n += how != DONTNEED_KEEPS;
	zeroed[p] = how != DONTNEED_KEEPS && how != DONTNEED_WRITE &&
		    how != PUNCH_WRITE;
}

static void discards_between(enum mem_kind kind, const enum discard *hows,
			     unsigned n, bool settle)
{
	uint8_t *zeroed;
	struct chain c;

	chain_open(&c, kind);
	c.how = settle ? SETTLED : BY_FAULTS; /* settled: the discards meet
						 asynchronous tracking */
	zeroed = calloc(c.w.npages, 1);
	CHECK(zeroed, "out of memory");
	chain_step(&c, false, LS_STRATEGY_AUTO, 0);
	setw_pause(&c.w);
	/* pages 1, 2, ...: a hugetlb region has only a few (4 under TSan) */
	CHECK(n < c.w.npages, "%u discards in %llu pages", n,
	      (unsigned long long)c.w.npages);
	for (unsigned i = 0; i < n; i++)
		discard(&c, 1 + i, hows[i], zeroed);
	/*
	 * Anonymous: pages 128-191 written whole (one word of the dirty set
	 * full, which the check skips), then one of them discarded: in the
	 * delta as written, and zero; page 300, after the skipped word.
	 */
	if (mem_kind_type(kind) == LS_MEM_ANON) {
		for (uint64_t p = 128; p < 192; p++) {
			memset(c.m.addr + p * c.m.page_size + 512, 0x33, 8);
			c.expect_n += !c.expect[p];
			c.expect[p] = 1;
		}
		CHECK(!madvise(c.m.addr + 130 * c.m.page_size, c.m.page_size,
			       MADV_DONTNEED),
		      "madvise: %s", strerror(errno));
		zeroed[130] = 1;
		/* and one discard past the full word (a run of its own) */
		CHECK(!madvise(c.m.addr + 300 * c.m.page_size, c.m.page_size,
			       MADV_DONTNEED),
		      "madvise: %s", strerror(errno));
		c.expect[300] = 1;
		c.expect_n++;
		zeroed[300] = 1;
	}
	c.zeroed = zeroed;
	chain_step(&c, true, LS_STRATEGY_AUTO, 0);
	c.zeroed = NULL;
	chain_step(&c, true, LS_STRATEGY_AUTO, 0);
	setw_pause(&c.w);
	chain_close(&c);
	free(zeroed);
}

static void all_discards_between(bool settle)
{
	static const enum discard anon[] = {DONTNEED, DONTNEED_READ,
					    DONTNEED_WRITE};
	static const enum discard shmem[] = {DONTNEED_KEEPS, REMOVE, PUNCH,
					     PUNCH_WRITE, PUNCH_READ};
	static const enum discard huge_private[] = {DONTNEED, DONTNEED_WRITE};
	static const enum discard huge_shared[] = {REMOVE, PUNCH, PUNCH_WRITE};

	discards_between(MEM_ANON_THP, anon, 3, settle);
	discards_between(MEM_ANON_4K, anon, 3, settle);
	discards_between(MEM_MEMFD, shmem, 5, settle);
	discards_between(MEM_HUGETLB, huge_private, 2, settle);
	discards_between(MEM_MEMFD_HUGE, huge_shared, 3, settle);
}

static void test_discards_between(void **state)
{
	(void)state;
	all_discards_between(false);
}

/* Without discard events: begin's walk must find the anonymous ones. */
static void test_discards_between_no_events(void **state)
{
	(void)state;
	ctx_flags = LS_CTX_NO_DISCARD_EVENTS;
	all_discards_between(false);
	ctx_flags = 0;
}

/* The same discards after ls_track_settle(): PAGEMAP_SCAN must see them. */
static void test_discards_settled(void **state)
{
	(void)state;
	all_discards_between(true);
}

/*
 * Prepared deltas tracked by faults, every memory kind: each prepare
 * protects the delta's pages so far again, then the threads and the test
 * write (chain_prepare) and one page that the delta did not hold yet and
 * that holds data is discarded: the discard must be found in the begin,
 * not in the prepare. Anonymous: pages 128-191 are also written whole
 * before the prepare (a full word of its set), and one of them discarded
 * after it: the begin must look there too, though the set holds it.
 * Each delta holds exactly its set, base + deltas equal memory at begin.
 * The chain's full snapshots (the first, and one tracked by faults) are
 * prepared too, with an anonymous page discarded after their prepare.
 */
static unsigned prep_discards;

static void fill_word_before_prepare(struct chain *c)
{
	if (mem_kind_type(c->m.kind) != LS_MEM_ANON)
		return;
	for (uint64_t p = 128; p < 192; p++) {
		memset(c->m.addr + p * c->m.page_size + 512, 0x33, 8);
		c->expect_n += !c->expect[p];
		c->expect[p] = 1;
	}
}

static void discard_after_prepare(struct chain *c)
{
	enum discard how = mem_kind_type(c->m.kind) == LS_MEM_ANON ||
				   c->m.kind == MEM_HUGETLB
			       ? DONTNEED
			       : PUNCH;

	size_t ps = c->m.page_size;

	/*
	 * A page that holds data (a discarded hole or zero page changes
	 * nothing); a hole is not read (that would allocate it).
	 */
	for (uint64_t p = 1 + c->n % 5; p < c->w.npages; p++) {
		unsigned char *a = c->m.addr + p * ps;

		if (p % 3 && !c->expect[p] && mincore_any(a, ps) &&
		    (a[0] || memcmp(a, a + 1, ps - 1))) {
			discard(c, p, how, (uint8_t *)c->zeroed);
			prep_discards++;
			break;
		}
	}
	/* one the threads do not write (they would put data back) */
	for (uint64_t p = 128; mem_kind_type(c->m.kind) == LS_MEM_ANON &&
			       p < 192; p++) {
		if (p % 3 == 0 || c->w.want[p])
			continue;
		CHECK(!madvise(c->m.addr + p * ps, ps, MADV_DONTNEED),
		      "madvise: %s", strerror(errno));
		((uint8_t *)c->zeroed)[p] = 1;
		break;
	}
}

/*
 * After a full snapshot's prepare, anonymous memory: a page that holds
 * data (and that the threads do not write back) is discarded, and its
 * protection goes with it; the snapshot must still equal memory at begin.
 * (test_prepared_discard checks that begin protects it again.)
 */
static void discard_after_full_prepare(struct chain *c)
{
	size_t ps = c->m.page_size;

	if (mem_kind_type(c->m.kind) != LS_MEM_ANON)
		return;
	for (uint64_t p = c->w.npages - 1 - c->n % 7; p > 0; p--) {
		if (c->w.want[p])
			continue;
		CHECK(!madvise(c->m.addr + p * ps, ps, MADV_DONTNEED),
		      "madvise: %s", strerror(errno));
		prep_discards++;
		break;
	}
}

static void prepared_deltas(void)
{
	for (int k = 0; k < MEM_NKINDS; k++) {
		struct chain c;
		uint8_t *zeroed;

		chain_open(&c, (enum mem_kind)k);
		zeroed = calloc(c.w.npages, 1);
		CHECK(zeroed, "out of memory");
		/* data to discard in every page (a hugetlb region has few) */
		setw_pause(&c.w);
		for (uint64_t p = 0; p < c.w.npages; p++)
			memset(c.m.addr + p * c.m.page_size + 64, 0x77, 8);
		atomic_store(&c.w.pause_req, 0);
		c.prepare = true;
		c.before_prepare = fill_word_before_prepare;
		c.after_prepare = discard_after_prepare;
		c.after_full_prepare = discard_after_full_prepare;
		prep_discards = 0;
		/* full from no tracking, delta, full tracked by faults, delta */
		for (unsigned i = 0; i < 4; i++) {
			c.zeroed = zeroed;
			chain_step(&c, i % 2, test_strategies[i % NSTRATEGIES],
				   20);
			memset(zeroed, 0, c.w.npages);
		}
		CHECK(prep_discards > 0, "%s: no page to discard",
		      mem_kind_name(c.m.kind));
		c.zeroed = NULL;
		setw_pause(&c.w);
		chain_close(&c);
		free(zeroed);
	}
}

static void test_prepared_deltas(void **state)
{
	(void)state;
	prepared_deltas();
}

/*
 * Without discard events: anonymous regions are armed whole by a full
 * snapshot's begin, and a delta's begin walks for discards.
 */
static void test_prepared_deltas_no_events(void **state)
{
	(void)state;
	ctx_flags = LS_CTX_NO_DISCARD_EVENTS;
	prepared_deltas();
	for (int k = 0; k < MEM_NKINDS; k++) /* prepare leaves anon alone */
		if (mem_kind_type((enum mem_kind)k) == LS_MEM_ANON)
			run_prepared((enum mem_kind)k, BY_FAULTS, false);
	ctx_flags = 0;
}

/* ls_track_settle's refusals, and tracking that stops while settled. */
static void test_settle_refusals(void **state)
{
	struct ls_snapshot_opts o = {.track = true};
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct chain c;
	int ret;

	(void)state;
	chain_open(&c, MEM_ANON_4K);
	setw_pause(&c.w);
	ret = ls_track_settle(c.ctx);
	CHECK(ret == -ENOENT && strstr(ls_ctx_error(c.ctx), "not tracked"),
	      "settle without tracking: %d %s", ret, ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &o, &snap), "create: %s",
	      ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	ret = ls_track_settle(c.ctx);
	CHECK(ret == -EBUSY || (ret == 0 && ls_snapshot_poll(snap) == 0),
	      "settle during a snapshot: %d %s", ret, ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(!ls_track_settle(c.ctx), "settle: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_track_settle(c.ctx), "settle twice: %s", ls_ctx_error(c.ctx));
	CHECK(count_wp_pages(c.m.addr, c.m.len) == c.m.len / 4096,
	      "settled memory is not all write-protected");
	chain_close(&c); /* ls_track_stop while settled: nothing protected */
}

/* ls_track_by_caller's and ls_track_dirty_bitmap's refusals. */
static void test_by_caller_refusals(void **state)
{
	uint64_t bits[2] = {~0ull, ~0ull};
	struct chain c;
	int ret;

	(void)state;
	chain_open(&c, MEM_ANON_4K);
	setw_pause(&c.w);
	ret = ls_track_by_caller(c.ctx);
	CHECK(ret == -ENOENT && strstr(ls_ctx_error(c.ctx), "not tracked"),
	      "by_caller without tracking: %d %s", ret, ls_ctx_error(c.ctx));
	ret = ls_track_dirty_bitmap(c.ctx, c.m.addr, 64, bits);
	CHECK(ret == -ENOENT, "bitmap without tracking: %d", ret);
	CHECK(!ls_track_start(c.ctx, NULL), "ls_track_start: %s",
	      ls_ctx_error(c.ctx));
	CHECK(!ls_track_by_caller(c.ctx), "by_caller: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_track_by_caller(c.ctx), "by_caller twice: %s",
	      ls_ctx_error(c.ctx));
	ret = ls_track_settle(c.ctx);
	CHECK(ret == -EINVAL && strstr(ls_ctx_error(c.ctx), "caller"),
	      "settle under the caller's tracking: %d %s", ret,
	      ls_ctx_error(c.ctx));
	ret = ls_track_dirty_bitmap(c.ctx, c.m.addr + 100, 64, bits);
	CHECK(ret == -EINVAL && strstr(ls_ctx_error(c.ctx), "whole"),
	      "bitmap unaligned: %d %s", ret, ls_ctx_error(c.ctx));
	ret = ls_track_dirty_bitmap(c.ctx, c.m.addr + c.m.len - 4096, 2, bits);
	CHECK(ret == -EINVAL, "bitmap past the region: %d", ret);
	ret = ls_track_dirty_bitmap(c.ctx, c.m.addr, UINT64_MAX / 1024, bits);
	CHECK(ret == -EINVAL, "bitmap of 2^54 pages: %d", ret);
	CHECK(!ls_track_dirty_bitmap(c.ctx, c.m.addr + 4096, 70, bits),
	      "bitmap, not word-aligned: %s", ls_ctx_error(c.ctx));
	/* ls_track_start hands tracking back: protected again */
	CHECK(!ls_track_start(c.ctx, NULL), "ls_track_start: %s",
	      ls_ctx_error(c.ctx));
	CHECK(count_wp_pages(c.m.addr, c.m.len) == c.m.len / 4096,
	      "ls_track_start after by_caller: not all write-protected");
	chain_close(&c);
}

/* ls_track_dirty's refusals. */
static void test_track_dirty_refusals(void **state)
{
	struct chain c;
	int ret;

	(void)state;
	chain_open(&c, MEM_ANON_4K);
	setw_pause(&c.w);
	ret = ls_track_dirty(c.ctx, c.m.addr, 4096);
	CHECK(ret == -ENOENT && strstr(ls_ctx_error(c.ctx), "not tracked"),
	      "ls_track_dirty without tracking: %d %s", ret,
	      ls_ctx_error(c.ctx));
	CHECK(!ls_track_start(c.ctx, NULL), "ls_track_start: %s",
	      ls_ctx_error(c.ctx));
	ret = ls_track_dirty(c.ctx, c.m.addr + 100, 4096);
	CHECK(ret == -EINVAL && strstr(ls_ctx_error(c.ctx), "whole"),
	      "ls_track_dirty unaligned: %d %s", ret, ls_ctx_error(c.ctx));
	ret = ls_track_dirty(c.ctx, c.m.addr, c.m.len + 4096);
	CHECK(ret == -EINVAL, "ls_track_dirty past the region: %d", ret);
	ret = ls_track_dirty(c.ctx, &ret, 4096);
	CHECK(ret == -EINVAL && strstr(ls_ctx_error(c.ctx), "not in a region"),
	      "ls_track_dirty outside: %d %s", ret, ls_ctx_error(c.ctx));
	CHECK(!ls_track_dirty(c.ctx, c.m.addr, c.m.len), "ls_track_dirty: %s",
	      ls_ctx_error(c.ctx));
	chain_close(&c);
}

/* ---------------- failures, cancels, start/stop, refusals ---------------- */

/*
 * A delta that fails (sink error) or is cancelled gives its pages back:
 * the next delta holds everything written since the last snapshot that
 * succeeded, and names that snapshot as its parent.
 */
static void failed_delta(bool cancel)
{
	struct ls_snapshot_opts o = {.track = true, .delta = true};
	struct mem_sink *s = mem_sink_new();
	uint8_t parent[LS_ID_BYTES];
	struct ls_snapshot *snap;
	struct chain c;
	uint64_t seed = 5;
	int ret;

	chain_open(&c, MEM_ANON_4K);
	chain_step(&c, false, LS_STRATEGY_AUTO, 10);
	chain_step(&c, true, LS_STRATEGY_AUTO, 10);
	/* The failing one: pages written before it stay expected. */
	s->fail_after = cancel ? -1 : 0;
	s->fail_err = EIO;
	s->delay_us = cancel ? 20000 : 0; /* still running at the cancel */
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &o, &snap), "create: %s",
	      ls_ctx_error(c.ctx));
	setw_pause(&c.w);
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	if (cancel)
		ls_snapshot_cancel(snap);
	/* The next set adds to the one the failed delta held. */
	setw_next(&c.w, 10, &seed);
	ret = ls_snapshot_wait(snap);
	CHECK(ret == (cancel ? -ECANCELED : -EIO),
	      "the %s delta returned %d (%s)", cancel ? "cancelled" : "failing",
	      ret, ls_snapshot_error(snap));
	CHECK(s->aborted, "sink not aborted");
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(ls_track_active(c.ctx, parent), "tracking lost after a %s delta",
	      cancel ? "cancelled" : "failed");
	CHECK(!memcmp(parent, c.last_id, LS_ID_BYTES),
	      "the parent moved to the failed delta");
	setw_wait_swept(&c.w);
	c.expect_n = 0;
	for (uint64_t p = 0; p < c.w.npages; p++) {
		if (c.w.want[p])
			c.expect[p] = c.w.want[p];
		c.expect_n += c.expect[p] != 0;
	}
	chain_step(&c, true, LS_STRATEGY_COPY, 10);
	chain_step(&c, true, LS_STRATEGY_WRITE_FIRST, 10);
	setw_pause(&c.w);
	chain_close(&c);
}

static void test_failed_delta(void **state)
{
	(void)state;
	failed_delta(false);
}

static void test_cancelled_delta(void **state)
{
	(void)state;
	failed_delta(true);
}

/*
 * ls_track_start after (say) a restore, the next delta's parent given.
 * Tracking started on memory as it is ("restored" from `given`), on write
 * faults or by the caller; then deltas of it. By the caller, tracking
 * that ran on faults before is taken over: what it protected is lifted.
 */
static void track_start_chain(enum mem_kind kind, bool by_caller,
			      uint8_t fill, uint64_t seed)
{
	uint8_t given[LS_ID_BYTES], parent[LS_ID_BYTES];
	struct chain c;

	memset(given, fill, sizeof(given));
	chain_open(&c, kind);
	CHECK(!ls_track_active(c.ctx, NULL), "tracking before any snapshot");
	if (by_caller) {
		c.how = BY_CALLER;
		setw_pause(&c.w);
		CHECK(!ls_track_start(c.ctx, NULL), "ls_track_start: %s",
		      ls_ctx_error(c.ctx));
	}
	CHECK(!(by_caller ? ls_track_start_by_caller(c.ctx, given)
			  : ls_track_start(c.ctx, given)),
	      "ls_track_start%s: %s", by_caller ? "_by_caller" : "",
	      ls_ctx_error(c.ctx));
	CHECK(ls_track_active(c.ctx, parent) &&
		      !memcmp(parent, given, LS_ID_BYTES),
	      "ls_track_active after ls_track_start");
	CHECK(count_wp_pages(c.m.addr, c.m.len) ==
		      (by_caller ? 0 : c.m.len / 4096),
	      "ls_track_start%s: wrong pages protected",
	      by_caller ? "_by_caller" : "");
	memcpy(c.last_id, given, LS_ID_BYTES);
	memcpy(c.image, c.m.addr, c.m.len); /* "restored" memory */
	c.expect = calloc(c.w.npages, 1);
	c.expect_n = setw_next(&c.w, 15, &seed);
	setw_wait_swept(&c.w);
	memcpy(c.expect, c.w.want, c.w.npages);
	chain_step(&c, true, LS_STRATEGY_AUTO, 15);
	chain_step(&c, true, LS_STRATEGY_AUTO, 15);
	setw_pause(&c.w);
	chain_close(&c);
}

static void test_track_start(void **state)
{
	(void)state;
	track_start_chain(MEM_ANON_THP, false, 0xa5, 11);
}

static void test_track_start_by_caller(void **state)
{
	(void)state;
	track_start_chain(MEM_MEMFD, true, 0x5a, 12);
}

/*
 * A delta without track ends the chain. Its pages are protected, and the
 * others still were (tracking by faults; under the caller's, by the
 * delta's prepare): the writers write a new set while it runs, pages
 * outside the delta among them, and must all get through; the delta is
 * still exact, and nothing stays protected after it, also where no page
 * of the delta is near (an empty delta).
 */
static void untracked_delta(enum track_how how, unsigned percent)
{
	struct ls_snapshot_opts o = {.delta = true};
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct ls_stats st;
	struct chain c;

	chain_open(&c, MEM_ANON_4K);
	c.how = how;
	chain_step(&c, false, LS_STRATEGY_AUTO, percent);
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &o, &snap), "create: %s",
	      ls_ctx_error(c.ctx));
	setw_pause(&c.w);
	if (how == BY_CALLER) {
		CHECK(!ls_snapshot_prepare(snap), "prepare: %s",
		      ls_ctx_error(c.ctx));
		report_set(&c);
	}
	take_reference(&c);
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	/* An empty delta: no write at all, so nothing but the end lifts. */
	if (percent) {
		setw_next(&c.w, 60, &c.seed);
		setw_wait_swept(&c.w);
		setw_pause(&c.w);
	}
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	CHECK(!ls_snapshot_stats(snap, &st), "stats");
	check_delta(&c, s, &st);
	CHECK(!memcmp(c.image, c.ref, c.m.len),
	      "base + delta differ from memory at begin");
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(!ls_track_active(c.ctx, NULL), "tracking after an untracked delta");
	CHECK(count_wp_pages(c.m.addr, c.m.len) == 0,
	      "%llu pages protected after an untracked delta (%u %%, %s)",
	      (unsigned long long)count_wp_pages(c.m.addr, c.m.len), percent,
	      how == BY_CALLER ? "prepared, by the caller" : "by faults");
	chain_close(&c);
}

static void test_untracked_delta(void **state)
{
	(void)state;
	untracked_delta(BY_FAULTS, 10);
	untracked_delta(BY_FAULTS, 0);
	untracked_delta(BY_CALLER, 10);
	untracked_delta(BY_CALLER, 0);
}

static void test_refusals(void **state)
{
	struct ls_snapshot_opts full = {0}, delta = {.delta = true};
	struct ls_snapshot_opts tracked = {.track = true};
	struct mem_sink *s;
	struct ls_snapshot *snap;
	unsigned char *other;
	struct chain c;
	int ret;

	(void)state;
	chain_open(&c, MEM_ANON_4K);
	setw_pause(&c.w);
	/* No tracking yet. */
	s = mem_sink_new();
	ret = ls_snapshot_create(c.ctx, &s->base, &delta, &snap);
	CHECK(ret == -ENOENT && strstr(ls_ctx_error(c.ctx), "delta"),
	      "a delta without tracking: %d %s", ret, ls_ctx_error(c.ctx));
	CHECK(!snap && s->destroyed, "sink not destroyed on refusal");
	mem_sink_free(s);
	/* A tracked snapshot; then regions are fixed. */
	s = mem_sink_new();
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &tracked, &snap), "create");
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(ls_track_active(c.ctx, NULL), "not tracking after a tracked snapshot");
	CHECK(count_wp_pages(c.m.addr, c.m.len) == c.m.len / 4096,
	      "a tracked snapshot left unwritten pages unprotected");
	other = mmap(NULL, 2 * MB, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(other != MAP_FAILED, "mmap");
	ret = ls_region_add(c.ctx, "more", other, 2 * MB);
	CHECK(ret == -EBUSY && strstr(ls_ctx_error(c.ctx), "tracked"),
	      "region add while tracking: %d %s", ret, ls_ctx_error(c.ctx));
	ret = ls_region_remove(c.ctx, 0);
	CHECK(ret == -EBUSY, "region remove while tracking: %d", ret);
	/* A snapshot without track ends tracking. */
	s = mem_sink_new();
	CHECK(!ls_snapshot_create(c.ctx, &s->base, &full, &snap), "create");
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_snapshot_wait(snap), "wait: %s", ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	CHECK(!ls_track_active(c.ctx, NULL), "tracking after an untracked snapshot");
	CHECK(count_wp_pages(c.m.addr, c.m.len) == 0,
	      "pages protected after an untracked snapshot");
	s = mem_sink_new();
	ret = ls_snapshot_create(c.ctx, &s->base, &delta, &snap);
	CHECK(ret == -ENOENT, "a delta after an untracked snapshot: %d", ret);
	mem_sink_free(s);
	/* Start, stop: nothing stays protected; regions may change again. */
	CHECK(!ls_track_start(c.ctx, NULL), "ls_track_start: %s",
	      ls_ctx_error(c.ctx));
	CHECK(!ls_track_active(c.ctx, NULL), "a delta without a parent");
	CHECK(!ls_track_stop(c.ctx), "ls_track_stop: %s", ls_ctx_error(c.ctx));
	CHECK(count_wp_pages(c.m.addr, c.m.len) == 0, "protected after stop");
	CHECK(ls_region_add(c.ctx, "more", other, 2 * MB) == 1,
	      "region add after stop: %s", ls_ctx_error(c.ctx));
	CHECK(!ls_region_remove(c.ctx, 1), "region remove");
	munmap(other, 2 * MB);
	chain_close(&c);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain_anon_thp),
		cmocka_unit_test(test_chain_anon_4k),
		cmocka_unit_test(test_chain_memfd),
		cmocka_unit_test(test_chain_hugetlb),
		cmocka_unit_test(test_chain_memfd_huge),
		cmocka_unit_test(test_chain_granule),
		cmocka_unit_test(test_chain_settled),
		cmocka_unit_test(test_chain_discards_racing),
		cmocka_unit_test(test_chain_by_caller),
		cmocka_unit_test(test_prepared),
		cmocka_unit_test(test_prepared_running),
		cmocka_unit_test(test_prepare_undo),
		cmocka_unit_test(test_prepare_delta_undo),
		cmocka_unit_test(test_discards_between),
		cmocka_unit_test(test_discards_between_no_events),
		cmocka_unit_test(test_discards_settled),
		cmocka_unit_test(test_prepared_deltas),
		cmocka_unit_test(test_prepared_deltas_no_events),
		cmocka_unit_test(test_prepared_discard),
		cmocka_unit_test(test_settle_refusals),
		cmocka_unit_test(test_track_dirty_refusals),
		cmocka_unit_test(test_by_caller_refusals),
		cmocka_unit_test(test_failed_delta),
		cmocka_unit_test(test_cancelled_delta),
		cmocka_unit_test(test_track_start),
		cmocka_unit_test(test_track_start_by_caller),
		cmocka_unit_test(test_untracked_delta),
		cmocka_unit_test(test_refusals),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
