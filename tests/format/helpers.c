/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

static const struct ls_layout_region default_regions[] = {
    {"ram", 1 << 20, 4096, LS_MEM_ANON},
    {"shm", 256 << 10, 4096, LS_MEM_SHMEM},
    {"huge", 6 << 20, 2 << 20, LS_MEM_HUGETLB},
};

static const struct ls_layout_region small_regions[] = {
    {"ram", 64 << 10, 4096, LS_MEM_ANON},
    {"rom", 16 << 10, 4096, LS_MEM_SHMEM},
};

static const struct ls_layout_region large_regions[] = {
    {"ram", 512ull << 20, 4096, LS_MEM_ANON},
};

void tsnap_large_sparse(struct tsnap *t, uint64_t seed)
{
	*t = (struct tsnap){
	    .layout = {1, large_regions},
	    .seed = seed,
	    .nthreads = 2,
	    .max_run = 1,
	    .sparse = 8192,
	};
}

void tsnap_default(struct tsnap *t, uint64_t seed)
{
	*t = (struct tsnap){
	    .layout = {3, default_regions},
	    .seed = seed,
	    .nthreads = 4,
	    .max_run = 24,
	    .nblobs = 2,
	    .blob_names = {"vm-state", "empty"},
	    .blob_lens = {10000, 0},
	};
}

/* The fuzz seeds and the truncation sweep: a few KiB of file. */
static const struct ls_layout_region tiny_regions[] = {
    {"ram", 8 << 10, 4096, LS_MEM_ANON},
    {"rom", 4 << 10, 4096, LS_MEM_SHMEM},
};

void tsnap_tiny(struct tsnap *t, uint64_t seed, bool one_page)
{
	*t = (struct tsnap){
	    .layout = {one_page ? 1 : 2, one_page ? tiny_regions + 1
						  : tiny_regions},
	    .seed = seed,
	    .nthreads = 1,
	    .max_run = 2,
	    .nblobs = 1,
	    .blob_names = {"state"},
	    .blob_lens = {40},
	};
}

void tsnap_small(struct tsnap *t, uint64_t seed)
{
	*t = (struct tsnap){
	    .layout = {2, small_regions},
	    .seed = seed,
	    .nthreads = 2,
	    .max_run = 3,
	    .nblobs = 1,
	    .blob_names = {"state"},
	    .blob_lens = {300},
	};
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

bool tsnap_page_zero(const struct tsnap *t, uint32_t region, uint64_t page)
{
	if (t->sparse)
		return page % t->sparse != 0;
	return !t->dense && (page * 7 + region * 3 + t->seed) % 5 == 0;
}

void tsnap_page(const struct tsnap *t, uint32_t region, uint64_t page,
		void *buf)
{
	size_t ps = t->layout.regions[region].page_size;
	uint64_t *w = buf;
	uint64_t base = mix(t->seed ^ ((uint64_t)region << 56) ^ page);

	if (tsnap_page_zero(t, region, page)) {
		memset(buf, 0, ps);
		return;
	}
	for (size_t i = 0; i < ps / 8; i++)
		w[i] = base + i * 0x9e3779b97f4a7c15ull;
}

void tsnap_blob(const struct tsnap *t, unsigned idx, void *buf)
{
	unsigned char *c = buf;

	for (size_t i = 0; i < t->blob_lens[idx]; i++)
		c[i] = (unsigned char)(mix(t->seed + idx * 1000003 + i) >> 7);
}

uint64_t tsnap_nonzero(const struct tsnap *t, uint32_t region)
{
	const struct ls_layout_region *lr = &t->layout.regions[region];
	uint64_t n = 0;

	for (uint64_t p = 0; p < lr->len / lr->page_size; p++)
		n += !tsnap_page_zero(t, region, p);
	return n;
}

struct run {
	uint32_t region;
	uint64_t first, count;
};

struct wjob {
	const struct tsnap *t;
	struct ls_sink *sink;
	const struct run *runs;
	size_t nruns, start, step;
	int ret;
};

static void *writer(void *arg)
{
	struct wjob *j = arg;
	size_t max = 0;
	char *buf;

	for (uint32_t i = 0; i < j->t->layout.nregions; i++)
		if (j->t->layout.regions[i].page_size > max)
			max = j->t->layout.regions[i].page_size;
	buf = aligned_alloc(4096, max * j->t->max_run);
	for (size_t i = j->start; i < j->nruns && !j->ret; i += j->step) {
		const struct run *r = &j->runs[i];
		size_t ps = j->t->layout.regions[r->region].page_size;

		for (uint64_t k = 0; k < r->count; k++)
			tsnap_page(j->t, r->region, r->first + k, buf + k * ps);
		j->ret = j->sink->ops->write_pages(j->sink, r->region, r->first,
						   buf, r->count);
	}
	free(buf);
	return NULL;
}

/* Runs of consecutive non-zero pages, cut at random lengths, shuffled. */
static struct run *make_runs(const struct tsnap *t, size_t *nruns)
{
	struct run *runs = NULL;
	size_t n = 0, cap = 0;
	uint64_t rnd = t->seed * 31 + 7;

	for (uint32_t i = 0; i < t->layout.nregions; i++) {
		const struct ls_layout_region *lr = &t->layout.regions[i];
		uint64_t np = lr->len / lr->page_size;

		for (uint64_t p = 0; p < np;) {
			uint64_t c = 0, want;

			if (tsnap_page_zero(t, i, p)) {
				p++;
				continue;
			}
			rnd = mix(rnd);
			want = 1 + rnd % t->max_run;
			while (c < want && p + c < np &&
			       !tsnap_page_zero(t, i, p + c))
				c++;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				runs = realloc(runs, cap * sizeof(*runs));
			}
			runs[n++] = (struct run){i, p, c};
			p += c;
		}
	}
	for (size_t i = n; i > 1; i--) {
		size_t k;
		struct run tmp;

		rnd = mix(rnd);
		k = rnd % i;
		tmp = runs[i - 1];
		runs[i - 1] = runs[k];
		runs[k] = tmp;
	}
	*nruns = n;
	return runs;
}

int tsnap_write(const struct tsnap *t, struct ls_sink *sink, bool commit)
{
	struct wjob jobs[8];
	pthread_t th[8];
	struct run *runs;
	size_t nruns;
	int ret;

	assert_true(t->nthreads >= 1 && t->nthreads <= 8);
	ret = sink->ops->start(sink, &t->layout);
	if (ret)
		return ret;
	runs = make_runs(t, &nruns);
	for (unsigned i = 0; i < t->nthreads; i++) {
		jobs[i] =
		    (struct wjob){t, sink, runs, nruns, i, t->nthreads, 0};
		assert_int_equal(pthread_create(&th[i], NULL, writer, &jobs[i]),
				 0);
	}
	for (unsigned i = 0; i < t->nthreads; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].ret && !ret)
			ret = jobs[i].ret;
	}
	free(runs);
	for (unsigned i = 0; i < t->nblobs && !ret; i++) {
		char *b = malloc(t->blob_lens[i] + 1);

		tsnap_blob(t, i, b);
		ret = sink->ops->put_blob(sink, t->blob_names[i], b,
					  t->blob_lens[i]);
		free(b);
	}
	if (!ret && commit)
		ret = sink->ops->commit(sink);
	return ret;
}

void tsnap_check_region(const struct tsnap *t, uint32_t region, const void *mem)
{
	const struct ls_layout_region *lr = &t->layout.regions[region];
	const char *m = mem;
	char *want = malloc(lr->page_size);

	for (uint64_t p = 0; p < lr->len / lr->page_size; p++) {
		tsnap_page(t, region, p, want);
		if (memcmp(m + p * lr->page_size, want, lr->page_size))
			fail_msg("region %u page %llu differs", region,
				 (unsigned long long)p);
	}
	free(want);
}

void tsnap_check_reader(const struct tsnap *t, struct ls_reader *r)
{
	assert_int_equal(ls_reader_region_count(r), t->layout.nregions);
	for (uint32_t i = 0; i < t->layout.nregions; i++) {
		const struct ls_layout_region *lr = &t->layout.regions[i];
		struct ls_reader_region g;

		assert_int_equal(ls_reader_region(r, i, &g), 0);
		assert_string_equal(g.name, lr->name);
		assert_int_equal(g.len, lr->len);
		assert_int_equal(g.page_size, lr->page_size);
		assert_int_equal(g.type, lr->type);
		assert_int_equal(g.pages_nonzero, tsnap_nonzero(t, i));
		assert_int_equal(ls_reader_find_region(r, lr->name), (int)i);
	}
	assert_int_equal(ls_reader_find_region(r, "nope"), -ENOENT);
	assert_int_equal(ls_reader_blob_count(r), t->nblobs);
	for (unsigned i = 0; i < t->nblobs; i++) {
		const void *data;
		size_t len;
		char *want = malloc(t->blob_lens[i] + 1);

		tsnap_blob(t, i, want);
		assert_int_equal(
		    ls_reader_find_blob(r, t->blob_names[i], &data, &len), 0);
		assert_int_equal(len, t->blob_lens[i]);
		assert_memory_equal(data, want, len ? len : 0);
		free(want);
	}
	assert_int_equal(ls_reader_find_blob(r, "nope", NULL, NULL), -ENOENT);
}

char *tdir_create(void)
{
	const char *base = getenv("TMPDIR");
	char *dir;

	if (asprintf(&dir, "%s/ls-format-XXXXXX", base ? base : "/var/tmp") < 0)
		fail();
	assert_non_null(mkdtemp(dir));
	return dir;
}

void tdir_remove(char *dir)
{
	char *cmd;

	assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(dir);
}

void tdir_assert_empty(const char *dir)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", dir);
	assert_int_equal(system(cmd), 0);
}

void tprog_fn(void *arg, uint64_t done, uint64_t total)
{
	struct tprog *p = arg;

	assert_true(done >= p->last_done);
	p->calls++;
	p->last_done = done;
	p->total = total;
}

const char *tpath(const char *dir, const char *name)
{
	static __thread char ring[4][4096];
	static __thread int next;
	char *p = ring[next++ % 4];

	snprintf(p, 4096, "%s/%s", dir, name);
	return p;
}

void tsnap_file(const struct tsnap *t, const char *path, unsigned flags)
{
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;
	int ret;

	ret = ls_sink_file_create(&sink, path, flags, err, sizeof(err));
	if (ret)
		fail_msg("%s", err);
	ret = tsnap_write(t, sink, true);
	if (ret)
		fail_msg("%s", sink->error);
	ls_sink_destroy(sink);
}

void tsnap_stream_file(const struct tsnap *t, const char *path)
{
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	if (ls_sink_stream_create(&sink, fd, err, sizeof(err)))
		fail_msg("%s", err);
	if (tsnap_write(t, sink, true))
		fail_msg("%s", sink->error);
	ls_sink_destroy(sink);
	close(fd);
}

void *tmem(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

void *tslurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

void tspit(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}
