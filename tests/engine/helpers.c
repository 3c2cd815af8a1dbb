/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"
#include "../hugetlb_pool.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4u
#endif

static const char *const kind_names[] = {
	[MEM_ANON_THP] = "anon-thp", [MEM_ANON_4K] = "anon-4k",
	[MEM_MEMFD] = "memfd",       [MEM_HUGETLB] = "hugetlb",
	[MEM_MEMFD_HUGE] = "memfd-hugetlb",
};

const char *mem_kind_name(enum mem_kind kind)
{
	return kind_names[kind];
}

enum ls_mem_type mem_kind_type(enum mem_kind kind)
{
	switch (kind) {
	case MEM_MEMFD:
		return LS_MEM_SHMEM;
	case MEM_HUGETLB:
	case MEM_MEMFD_HUGE:
		return LS_MEM_HUGETLB;
	default:
		return LS_MEM_ANON;
	}
}

static void sleep_us(unsigned us)
{
	struct timespec ts = {.tv_sec = us / 1000000,
			      .tv_nsec = (long)(us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

/* An address range aligned to 2 MiB, reserved PROT_NONE. */
static void *reserve_aligned(size_t len)
{
	size_t span = len + 2 * MB;
	unsigned char *p = mmap(NULL, span, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				-1, 0);
	uintptr_t a;

	CHECK(p != MAP_FAILED, "mmap reserve: %s", strerror(errno));
	a = ((uintptr_t)p + 2 * MB - 1) & ~(uintptr_t)(2 * MB - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	munmap((void *)(a + len), (uintptr_t)p + span - (a + len));
	return (void *)a;
}

void mem_map(struct test_mem *m, enum mem_kind kind, size_t len)
{
	int prot = PROT_READ | PROT_WRITE;
	void *want = reserve_aligned(len), *p;
	char err[256];

	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->len = len;
	m->fd = -1;
	m->page_size = 4096;
	switch (kind) {
	case MEM_ANON_THP:
	case MEM_ANON_4K:
		p = mmap(want, len, prot,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		CHECK(p != MAP_FAILED, "mmap anon: %s", strerror(errno));
		madvise(p, len,
			kind == MEM_ANON_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		break;
	case MEM_MEMFD:
	case MEM_MEMFD_HUGE:
		m->fd = memfd_create("ls-test",
				     MFD_CLOEXEC |
					     (kind == MEM_MEMFD_HUGE ? MFD_HUGETLB
								     : 0));
		CHECK(m->fd >= 0, "memfd_create: %s", strerror(errno));
		CHECK(ftruncate(m->fd, (off_t)len) == 0, "ftruncate: %s",
		      strerror(errno));
		if (kind == MEM_MEMFD_HUGE) {
			p = hugetlb_pool_mmap(want, len, prot,
					      MAP_SHARED | MAP_FIXED, m->fd,
					      err, sizeof(err));
			CHECK(p != MAP_FAILED, "mmap hugetlb memfd: %s", err);
			break;
		}
		p = mmap(want, len, prot, MAP_SHARED | MAP_FIXED, m->fd, 0);
		CHECK(p != MAP_FAILED, "mmap memfd: %s", strerror(errno));
		break;
	default:
		p = hugetlb_pool_mmap(want, len, prot,
				      MAP_PRIVATE | MAP_ANONYMOUS |
					      MAP_HUGETLB | MAP_FIXED,
				      -1, err, sizeof(err));
		CHECK(p != MAP_FAILED, "mmap MAP_HUGETLB: %s", err);
		break;
	}
	if (kind == MEM_HUGETLB || kind == MEM_MEMFD_HUGE)
		m->page_size = 2 * MB;
	m->addr = p;
}

void mem_unmap(struct test_mem *m)
{
	if (m->addr)
		munmap(m->addr, m->len);
	if (m->fd >= 0)
		close(m->fd);
	m->addr = NULL;
	m->fd = -1;
}

/* ---------------- in-memory sink ---------------- */

static struct mem_sink *ms(struct ls_sink *sink)
{
	return (struct mem_sink *)sink;
}

static int ms_start(struct ls_sink *sink, const struct ls_layout *layout)
{
	struct mem_sink *s = ms(sink);

	if (s->start_err) {
		ls_sink_set_error(sink, "mem sink: injected start failure");
		return -s->start_err;
	}
	if (layout->nregions > 8) {
		ls_sink_set_error(sink, "mem sink: too many regions");
		return -EINVAL;
	}
	s->nregions = layout->nregions;
	for (uint32_t r = 0; r < layout->nregions; r++) {
		const struct ls_layout_region *l = &layout->regions[r];

		s->layout[r] = *l;
		s->mem[r] = calloc(1, l->len);
		s->seen[r] = calloc(l->len / l->page_size, 1);
		if (!s->mem[r] || !s->seen[r])
			return -ENOMEM;
	}
	s->started = true;
	return 0;
}

/*
 * Sink calls wait until the snapshot has taken its first write fault, so
 * that the application's threads certainly write into protected memory
 * while the snapshot runs. The fault thread never waits here (a fault is
 * what it is handling); the writer thread waits for the application, which
 * runs. The 10 s bound only keeps a broken engine from hanging the test.
 */
static void ms_gate(struct mem_sink *s)
{
	struct ls_stats st;

	for (int i = 0; i < 10000; i++) {
		if (!ls_snapshot_stats(s->gate, &st) && st.faults)
			break;
		sleep_us(1000);
	}
	atomic_store(&s->gate_done, true);
}

static int ms_write_pages(struct ls_sink *sink, uint32_t region,
			  uint64_t first, const void *data, uint64_t npages)
{
	struct mem_sink *s = ms(sink);
	uint64_t ps, before;
	int now, max, ret = 0;

	if (region >= s->nregions) {
		atomic_store(&s->out_of_range, true);
		return -EINVAL;
	}
	ps = s->layout[region].page_size;
	if ((first + npages) * ps > s->layout[region].len) {
		atomic_store(&s->out_of_range, true);
		return -EINVAL;
	}
	now = atomic_fetch_add(&s->calls_now, 1) + 1;
	max = atomic_load(&s->calls_max);
	while (now > max &&
	       !atomic_compare_exchange_weak(&s->calls_max, &max, now))
		;
	if (s->gate && !atomic_load(&s->gate_done))
		ms_gate(s);
	if (s->delay_us)
		sleep_us(s->delay_us);
	if (s->delay_single_us && npages == 1)
		sleep_us(s->delay_single_us);
	before = atomic_fetch_add(&s->pages, npages);
	if (s->fail_after >= 0 && before + npages > (uint64_t)s->fail_after &&
	    (!s->fail_single_only || npages == 1)) {
		/* write_pages runs on several threads: one message at once */
		pthread_mutex_lock(&s->err_lock);
		ls_sink_set_error(sink, "mem sink: injected failure: %s",
				  strerror(s->fail_err));
		pthread_mutex_unlock(&s->err_lock);
		ret = -s->fail_err;
		goto out;
	}
	memcpy(s->mem[region] + first * ps, data, npages * ps);
	for (uint64_t i = 0; i < npages; i++)
		if (atomic_fetch_add(&s->seen[region][first + i], 1))
			atomic_store(&s->duplicate, true);
out:
	atomic_fetch_sub(&s->calls_now, 1);
	return ret;
}

static int ms_put_blob(struct ls_sink *sink, const char *name,
		       const void *data, size_t len)
{
	struct mem_sink *s = ms(sink);

	if (s->committed)
		s->blob_after_commit = true;
	if (s->nblobs < 4) {
		snprintf(s->blob_name[s->nblobs], LS_NAME_MAX, "%s", name);
		s->blob_len[s->nblobs] = len;
	}
	s->nblobs++;
	return 0;
}

static int ms_commit(struct ls_sink *sink)
{
	if (ms(sink)->commit_err)
		return -ms(sink)->commit_err; /* no message: the engine's */
	ms(sink)->committed = true;
	return 0;
}

static void ms_abort(struct ls_sink *sink)
{
	ms(sink)->aborted = true;
}

/* The test owns the memory: destroy only records that it was called. */
static void ms_destroy(struct ls_sink *sink)
{
	ms(sink)->destroyed = true;
}

static const struct ls_sink_ops mem_sink_ops = {
	.start = ms_start,
	.write_pages = ms_write_pages,
	.put_blob = ms_put_blob,
	.commit = ms_commit,
	.abort = ms_abort,
	.destroy = ms_destroy,
};

struct mem_sink *mem_sink_new(void)
{
	struct mem_sink *s = calloc(1, sizeof(*s));

	CHECK(s, "out of memory");
	s->base.ops = &mem_sink_ops;
	s->fail_after = -1;
	pthread_mutex_init(&s->err_lock, NULL);
	return s;
}

void mem_sink_free(struct mem_sink *s)
{
	for (uint32_t r = 0; r < s->nregions; r++) {
		free(s->mem[r]);
		free((void *)s->seen[r]);
	}
	free(s);
}

void mem_sink_expect(struct mem_sink *s, uint32_t region,
		     const unsigned char *ref, size_t len)
{
	size_t ps;

	CHECK(!atomic_load(&s->duplicate), "a page was written twice");
	CHECK(!atomic_load(&s->out_of_range), "a write was out of range");
	CHECK(region < s->nregions && s->layout[region].len == len,
	      "sink region %u has the wrong size", region);
	ps = s->layout[region].page_size;
	for (size_t off = 0; off < len; off += ps) {
		bool zero = true;

		for (size_t i = 0; i < ps && zero; i += 8)
			zero = !*(const uint64_t *)(ref + off + i);
		if (memcmp(s->mem[region] + off, ref + off, ps))
			fail_msg("region %u page %zu differs from the reference "
				 "(ref %s, sink %s)",
				 region, off / ps, zero ? "zero" : "data",
				 atomic_load(&s->seen[region][off / ps])
					 ? "written"
					 : "hole");
		if (zero && atomic_load(&s->seen[region][off / ps]))
			fail_msg("region %u page %zu is zero but was written",
				 region, off / ps);
	}
}

void expect_and_close(struct mem_sink *s, struct ls_snapshot *snap,
		      struct ls_ctx *ctx, unsigned char *ref,
		      struct test_mem *m)
{
	mem_sink_expect(s, 0, ref, m->len);
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	free(ref);
	mem_unmap(m);
}

/* ---------------- in-memory source ---------------- */

static int msrc_read(struct ls_source *src, uint32_t region,
		     uint64_t first, void *buf, uint64_t npages)
{
	struct mem_source *s = (struct mem_source *)src;
	int now, max;

	if (region != 0 || (first + npages) * s->page_size > s->len)
		return -EINVAL;
	if (s->fail_at_page >= 0 && (int64_t)first <= s->fail_at_page &&
	    s->fail_at_page < (int64_t)(first + npages))
		return -EIO;
	now = atomic_fetch_add(&s->calls_now, 1) + 1;
	max = atomic_load(&s->calls_max);
	while (now > max &&
	       !atomic_compare_exchange_weak(&s->calls_max, &max, now))
		;
	for (int i = 0; i < 10000 && first == 0 && atomic_load(&s->hold); i++)
		sleep_us(1000);
	if (s->delay_us)
		sleep_us(s->delay_us);
	memcpy(buf, s->data + first * s->page_size, npages * s->page_size);
	atomic_fetch_add(&s->reads, npages);
	atomic_fetch_sub(&s->calls_now, 1);
	return 0;
}

static bool msrc_is_zero(struct ls_source *src, uint32_t region,
			 uint64_t page)
{
	struct mem_source *s = (struct mem_source *)src;
	const unsigned char *p = s->data + page * s->page_size;

	for (int i = 0; i < 10000 && page == 0 && atomic_load(&s->hold); i++)
		sleep_us(1000);
	for (size_t i = 0; i < s->page_size; i++)
		if (p[i])
			return false;
	return true;
}

static void msrc_destroy(struct ls_source *src)
{
	(void)src;
}

static const struct ls_source_ops mem_source_ops = {
	.read_pages = msrc_read,
	.is_zero = msrc_is_zero,
	.destroy = msrc_destroy,
};

void mem_source_init(struct mem_source *src, const unsigned char *data,
		     size_t len, size_t page_size)
{
	memset(src, 0, sizeof(*src));
	src->base.ops = &mem_source_ops;
	src->data = data;
	src->len = len;
	src->page_size = page_size;
	src->fail_at_page = -1;
}

/* ---------------- threads ---------------- */

void threads_start(pthread_t *th, int n, void *(*fn)(void *), void *owner)
{
	for (int i = 0; i < n; i++) {
		struct thread_arg *a = malloc(sizeof(*a));

		CHECK(a, "out of memory");
		a->owner = owner;
		a->id = i;
		CHECK(!pthread_create(&th[i], NULL, fn, a), "pthread_create");
	}
}

bool pause_point(atomic_int *pause_req, atomic_int *paused,
		 atomic_bool *quit)
{
	if (!atomic_load(pause_req))
		return false;
	atomic_fetch_add(paused, 1);
	while (atomic_load(pause_req) && !atomic_load(quit))
		sched_yield();
	atomic_fetch_sub(paused, 1);
	return true;
}

void threads_pause(atomic_int *pause_req, atomic_int *paused, int n)
{
	atomic_store(pause_req, 1);
	while (atomic_load(paused) < n)
		sched_yield();
}

/* ---------------- writer threads ---------------- */

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *writer_main(void *p)
{
	struct thread_arg *a = p;
	struct writers *w = a->owner;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(a->id + 1);
	size_t words = w->len / 8;
	int id = a->id;

	free(a);
	while (!atomic_load(&w->quit)) {
		uint64_t r, *word;

		if (pause_point(&w->pause_req, &w->paused, &w->quit))
			continue;
		r = xorshift(&seed);
		word = (uint64_t *)w->mem + r % words;
		/* relaxed atomic: writers may hit the same word */
		__atomic_store_n(word, xorshift(&seed) | 1, __ATOMIC_RELAXED);
		atomic_fetch_add(&w->per_thread[id], 1);
		atomic_fetch_add(&w->writes, 1);
	}
	return NULL;
}

void writers_start(struct writers *w, unsigned char *mem, size_t len,
		   size_t page_size, int n)
{
	memset(w, 0, sizeof(*w));
	w->mem = mem;
	w->len = len;
	w->page_size = page_size;
	w->n = n;
	threads_start(w->th, n, writer_main, w);
}

void writers_pause(struct writers *w)
{
	threads_pause(&w->pause_req, &w->paused, w->n);
}

void writers_resume(struct writers *w)
{
	atomic_store(&w->pause_req, 0);
}

void writers_stop(struct writers *w)
{
	atomic_store(&w->quit, true);
	for (int i = 0; i < w->n; i++)
		pthread_join(w->th[i], NULL);
}

void writers_expect_progress(struct writers *w, uint64_t more)
{
	for (int i = 0; i < w->n; i++) {
		uint64_t start = atomic_load(&w->per_thread[i]);

		while (atomic_load(&w->per_thread[i]) < start + more)
			sched_yield();
	}
}

void fill_random(unsigned char *mem, size_t len, size_t page_size,
		 unsigned percent, unsigned seed)
{
	uint64_t s = seed * 2654435761u + 1;

	for (size_t off = 0; off < len; off += page_size) {
		if (xorshift(&s) % 100 >= percent)
			continue;
		for (size_t i = 0; i < page_size; i += 8)
			*(uint64_t *)(mem + off + i) = xorshift(&s);
	}
}

static int threads_now(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	CHECK(d, "opendir /proc/self/task: %s", strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

int threads_settled(int want)
{
	int n = threads_now(), still = 0;

	for (int i = 0; i < 5000; i++) {
		if (want >= 0 ? n == want : still >= 20)
			break;
		int m;

		usleep(1000);
		m = threads_now();
		still = m == n ? still + 1 : 0;
		n = m;
	}
	return n;
}

uint64_t count_wp_pages(const void *addr, size_t len)
{
	uint64_t start = (uintptr_t)addr / 4096, n = len / 4096, wp = 0;
	uint64_t *ent = malloc(n * 8);
	int fd = open("/proc/self/pagemap", O_RDONLY);

	CHECK(fd >= 0 && ent, "open /proc/self/pagemap: %s", strerror(errno));
	CHECK(pread(fd, ent, n * 8, (off_t)(start * 8)) == (ssize_t)(n * 8),
	      "read pagemap: %s", strerror(errno));
	close(fd);
	for (uint64_t i = 0; i < n; i++)
		wp += (ent[i] >> 57) & 1;
	free(ent);
	return wp;
}

bool mincore_any(void *addr, size_t len)
{
	size_t n = len / 4096;
	unsigned char *vec = malloc(n);
	bool any = false;

	CHECK(vec && !mincore(addr, len, vec), "mincore: %s", strerror(errno));
	for (size_t i = 0; i < n; i++)
		any |= vec[i] & 1;
	free(vec);
	return any;
}

/* ---------------- one live snapshot ---------------- */

const enum ls_strategy test_strategies[NSTRATEGIES] = {
	LS_STRATEGY_AUTO,
	LS_STRATEGY_COPY,
	LS_STRATEGY_WRITE_FIRST,
};

bool strategy_wanted(int kind, size_t i, int salt)
{
#if defined(__SANITIZE_THREAD__)
	return i == (size_t)(kind + salt) % NSTRATEGIES;
#else
	(void)kind, (void)i, (void)salt;
	return true;
#endif
}

struct ls_ctx *ctx_with_ram(const struct test_mem *m)
{
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;

	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ctx: %s", err);
	CHECK(ls_region_add(ctx, "ram", m->addr, m->len) == 0, "add: %s",
	      ls_ctx_error(ctx));
	return ctx;
}

struct ls_snapshot *snapshot_begin_gated(struct ls_ctx *ctx,
					 struct mem_sink *s,
					 const struct ls_snapshot_opts *o,
					 const struct test_mem *m,
					 unsigned char *ref, struct writers *w)
{
	struct ls_snapshot *snap;
	int ret;

	ret = ls_snapshot_create(ctx, &s->base, o, &snap);
	CHECK(!ret, "ls_snapshot_create: %s", ls_ctx_error(ctx));
	if (w)
		writers_pause(w);
	memcpy(ref, m->addr, m->len);
	s->gate = snap;
	ret = ls_snapshot_begin(snap);
	if (w)
		writers_resume(w);
	CHECK(!ret, "ls_snapshot_begin: %s", ls_ctx_error(ctx));
	return snap;
}

void exact_snapshot(struct ls_ctx *ctx, struct test_mem *m, struct writers *w,
		    const struct ls_snapshot_opts *o, unsigned char *ref,
		    struct ls_stats *stats)
{
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	struct ls_progress p;
	struct ls_stats st;
	int ret;

	snap = snapshot_begin_gated(ctx, s, o, m, ref, w);
	CHECK(s->started, "sink not started at create");
	ret = ls_snapshot_wait(snap);
	CHECK(!ret, "ls_snapshot_wait: %d %s", ret, ls_snapshot_error(snap));
	CHECK(ls_snapshot_poll(snap) == 0, "poll after the end");
	CHECK(!ls_snapshot_stats(snap, &st), "stats");
	CHECK(!ls_snapshot_progress(snap, &p), "progress");
	if (getenv("LS_TEST_VERBOSE"))
		fprintf(stderr,
			"snapshot: %.1f ms, arm %.3f ms, %llu faults (%llu write-first, %llu copied), stall p50 %llu p99 %llu max %llu ns\n",
			(double)st.total_ns / 1e6, (double)st.arm_ns / 1e6,
			(unsigned long long)st.faults,
			(unsigned long long)st.faults_write_first,
			(unsigned long long)st.pages_copied,
			(unsigned long long)st.stall_p50_ns,
			(unsigned long long)st.stall_p99_ns,
			(unsigned long long)st.stall_max_ns);
	mem_sink_expect(s, 0, ref, m->len);
	CHECK(s->committed && !s->aborted, "committed %d aborted %d",
	      s->committed, s->aborted);
	CHECK(p.state == LS_SNAP_COMPLETED && p.pages_done == p.pages_total,
	      "progress: state %d, %llu of %llu", p.state,
	      (unsigned long long)p.pages_done,
	      (unsigned long long)p.pages_total);
	CHECK(st.pages_total == m->len / m->page_size, "pages_total %llu",
	      (unsigned long long)st.pages_total);
	CHECK(st.pages_written + st.pages_zero == st.pages_total,
	      "written %llu + zero %llu != total %llu",
	      (unsigned long long)st.pages_written,
	      (unsigned long long)st.pages_zero,
	      (unsigned long long)st.pages_total);
	CHECK(st.pages_written == atomic_load(&s->pages),
	      "stats say %llu pages written, the sink got %llu",
	      (unsigned long long)st.pages_written,
	      (unsigned long long)atomic_load(&s->pages));
	CHECK(st.bytes_written == st.pages_written * m->page_size,
	      "bytes_written");
	CHECK(st.faults > 0, "no write fault although the writers wrote");
	CHECK(st.stall_p50_ns <= st.stall_p99_ns &&
		      st.stall_p99_ns <= st.stall_p999_ns &&
		      st.stall_p999_ns <= st.stall_max_ns,
	      "stall percentiles out of order");
	if (o->strategy == LS_STRATEGY_WRITE_FIRST)
		CHECK(st.pages_copied == 0 && st.copy_buffer_hwm == 0,
		      "write-first used the copy buffer");
	CHECK(st.copy_buffer_hwm <= (o->copy_buffer_bytes
					     ? o->copy_buffer_bytes
					     : 64 * MB),
	      "copy buffer above its bound");
	*stats = st;
	ls_snapshot_destroy(snap);
	CHECK(s->destroyed, "sink not destroyed with the snapshot");
	mem_sink_free(s);
	CHECK(count_wp_pages(m->addr, m->len) == 0,
	      "pages still write-protected after the snapshot");
}

uint64_t anon_huge_kb(const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	unsigned long long start, end, kb;
	bool in = false;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "r");

	CHECK(f, "open /proc/self/smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, ' ') && line[strcspn(line, " ")] == ' ' &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = a >= start && a < end;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %llu kB", &kb) == 1) {
			fclose(f);
			return kb;
		}
	}
	fclose(f);
	return 0;
}
