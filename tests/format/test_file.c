/* SPDX-License-Identifier: MIT */
/*
 * Description: the snapshot file sink and the file reader. Files are
 * written through the sink ops from several threads in random order and
 * read back byte for byte (read_pages, restore_region, restore_all, the
 * lazy-restore source); zero pages must be holes; the file appears under
 * its name only at commit; abort and destroy leave nothing behind.
 */
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

static int setup(void **state)
{
	*state = tdir_create();
	return 0;
}

static int teardown(void **state)
{
	tdir_remove(*state);
	return 0;
}

static struct ls_reader *open_ok(const char *path)
{
	char err[LS_ERRMSG_MAX];
	struct ls_reader *r;

	if (ls_reader_open(path, &r, err, sizeof(err)))
		fail_msg("%s", err);
	return r;
}

static void test_roundtrip_read_pages(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_reader_info in;
	struct ls_reader *r;
	struct tsnap t;

	tsnap_default(&t, 1);
	tsnap_file(&t, path, 0);
	r = open_ok(path);
	assert_false(ls_reader_is_stream(r));
	tsnap_check_reader(&t, r);
	ls_reader_get_info(r, &in);
	assert_true(in.complete);
	assert_int_equal(in.version_major, 1);
	assert_int_equal(in.pages_total, 256 + 64 + 3);
	assert_int_equal(in.pages_nonzero, tsnap_nonzero(&t, 0) +
					       tsnap_nonzero(&t, 1) +
					       tsnap_nonzero(&t, 2));
	for (uint32_t i = 0; i < t.layout.nregions; i++) {
		const struct ls_layout_region *lr = &t.layout.regions[i];
		char *buf = malloc(lr->len);

		/* Whole region at once, then page by page from the end. */
		assert_int_equal(
		    ls_reader_read_pages(r, i, 0, buf, lr->len / lr->page_size),
		    0);
		tsnap_check_region(&t, i, buf);
		memset(buf, 0xaa, lr->len);
		for (uint64_t p = lr->len / lr->page_size; p-- > 0;)
			assert_int_equal(
			    ls_reader_read_pages(r, i, p,
						 buf + p * lr->page_size, 1),
			    0);
		tsnap_check_region(&t, i, buf);
		free(buf);
	}
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);
}

static void test_restore_region_and_all(void **state)
{
	const char *path = tpath(*state, "snap");
	void *mem[3];
	size_t lens[3];
	struct ls_reader *r;
	struct tsnap t;

	tsnap_default(&t, 2);
	tsnap_file(&t, path, 0);
	r = open_ok(path);
	for (uint32_t i = 0; i < 3; i++) {
		lens[i] = t.layout.regions[i].len;
		mem[i] = tmem(lens[i]);
		assert_int_equal(
		    ls_reader_restore_region(r, i, mem[i], lens[i]), 0);
		tsnap_check_region(&t, i, mem[i]);
		munmap(mem[i], lens[i]);
		mem[i] = tmem(lens[i]);
	}
	assert_int_equal(ls_reader_restore_all(r, mem, lens, 3), 0);
	for (uint32_t i = 0; i < 3; i++) {
		tsnap_check_region(&t, i, mem[i]);
		munmap(mem[i], lens[i]);
	}
	ls_reader_close(r);
}

static void test_reader_bad_calls(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_reader_region g;
	struct ls_reader *r;
	struct tsnap t;
	char *buf = malloc(8192);
	void *mem = tmem(1 << 20);

	tsnap_small(&t, 3);
	tsnap_file(&t, path, 0);
	r = open_ok(path);
	assert_int_equal(ls_reader_read_pages(r, 2, 0, buf, 1), -ENOENT);
	assert_int_equal(ls_reader_read_pages(r, 0, 16, buf, 1), -EINVAL);
	assert_int_equal(ls_reader_read_pages(r, 0, 15, buf, 2), -EINVAL);
	assert_non_null(strstr(ls_reader_error(r), "out of range"));
	assert_int_equal(ls_reader_restore_region(r, 0, mem, 1 << 20), -EINVAL);
	assert_non_null(strstr(ls_reader_error(r), "65536 bytes"));
	assert_int_equal(ls_reader_restore_region(r, 0, buf + 1, 65536),
			 -EINVAL);
	assert_int_equal(ls_reader_region(r, 2, &g), -ENOENT);
	assert_int_equal(ls_reader_blob(r, 1, NULL, NULL, NULL), -ENOENT);
	ls_reader_close(r);
	munmap(mem, 1 << 20);
	free(buf);
}

/* Zero pages are holes: no blocks, and SEEK_DATA skips them. */
static void test_sparse_holes(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_layout_region big = {"big", 64 << 20, 4096, LS_MEM_ANON};
	struct tsnap t;
	struct stat st;
	char page[4096];
	struct ls_sink *sink;
	int fd;

	/* 64 MiB region, only two pages written. */
	tsnap_small(&t, 4);
	t.layout = (struct ls_layout){1, &big};
	t.nblobs = 0;
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(sink->ops->start(sink, &t.layout), 0);
	memset(page, 0x5a, sizeof(page));
	assert_int_equal(sink->ops->write_pages(sink, 0, 1000, page, 1), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 9000, page, 1), 0);
	assert_int_equal(sink->ops->commit(sink), 0);
	ls_sink_destroy(sink);

	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size > (64 << 20));
	/* 2 data pages plus the header and 128 KiB of checksums. */
	assert_true((uint64_t)st.st_blocks * 512 < (1 << 20));
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	/* The data section starts at 4096: page 1000 is the first data. */
	assert_int_equal(lseek(fd, 4096, SEEK_DATA), 4096 + 1000 * 4096);
	assert_int_equal(lseek(fd, 4096 + 1001 * 4096, SEEK_DATA),
			 4096 + 9000 * 4096);
	close(fd);
}

/* PATH appears only at commit; the temporary name never survives. */
static void test_temp_name_until_commit(void **state)
{
	const char *path = tpath(*state, "snap");
	char tmp[4200];
	struct ls_sink *sink;
	struct tsnap t;
	struct stat st;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	tsnap_small(&t, 5);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(tsnap_write(&t, sink, false), 0);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(stat(tmp, &st), 0);
	assert_int_equal(sink->ops->commit(sink), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(stat(tmp, &st), -1);
	ls_sink_destroy(sink); /* must not remove a committed file */
	assert_int_equal(stat(path, &st), 0);
}

static void test_abort_leaves_nothing(void **state)
{
	const char *dir = *state;
	const char *path = tpath(dir, "snap");
	struct ls_sink *sink;
	struct tsnap t;
	struct stat st;

	tsnap_small(&t, 6);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(tsnap_write(&t, sink, false), 0);
	sink->ops->abort(sink);
	ls_sink_destroy(sink);
	/* Destroy without commit or abort cleans up too. */
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(tsnap_write(&t, sink, false), 0);
	ls_sink_destroy(sink);
	assert_int_equal(stat(path, &st), -1);
	tdir_assert_empty(dir);
}

static void test_sink_bad_calls(void **state)
{
	const char *path = tpath(*state, "snap");
	char err[LS_ERRMSG_MAX], page[4096] = {1};
	struct ls_sink *sink, *other;
	struct tsnap t;

	assert_int_equal(ls_sink_file_create(&sink, path, 8, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(ls_sink_file_create(&sink, "/nonexistent/dir/snap", 0,
					     err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/dir/snap.tmp."));
	assert_non_null(strstr(err, "No such file or directory"));

	tsnap_small(&t, 7);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, err, sizeof(err)),
			 0);
	/* The same path twice in one process: the second is refused. */
	assert_int_equal(ls_sink_file_create(&other, path, 0, err, sizeof(err)),
			 -EEXIST);
	assert_int_equal(sink->ops->start(sink, &t.layout), 0);
	assert_int_equal(sink->ops->put_blob(sink, "a", "x", 1), 0);
	assert_int_equal(sink->ops->put_blob(sink, "a", "y", 1), -EEXIST);
	assert_non_null(strstr(sink->error, "blob 'a'"));
	ls_sink_destroy(sink);

	assert_int_equal(ls_sink_file_create(&sink, path, 0, err, sizeof(err)),
			 0);
	assert_int_equal(sink->ops->start(sink, &t.layout), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 16, page, 1), -EINVAL);
	assert_non_null(strstr(sink->error, "out of range"));
	ls_sink_destroy(sink);

	assert_int_equal(ls_sink_file_create(&sink, path, 0, err, sizeof(err)),
			 0);
	assert_int_equal(sink->ops->start(sink, &t.layout), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 3, page, 1), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 3, page, 1), -EINVAL);
	assert_non_null(strstr(sink->error, "page 3 written twice"));
	/* A failed sink cannot commit. */
	assert_int_equal(sink->ops->commit(sink), -EINVAL);
	ls_sink_destroy(sink);
	assert_int_equal(access(path, F_OK), -1);
}

/* Pages of [off, off+len) of the file that are in the page cache. */
static uint64_t resident_pages(const char *path, uint64_t off, size_t len)
{
	int fd = open(path, O_RDONLY);
	unsigned char *vec = malloc(len / 4096);
	uint64_t n = 0;
	void *p;

	assert_true(fd >= 0);
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
	assert_true(p != MAP_FAILED);
	assert_int_equal(mincore(p, len, vec), 0);
	for (size_t i = 0; i < len / 4096; i++)
		n += vec[i] & 1;
	munmap(p, len);
	close(fd);
	free(vec);
	return n;
}

/* O_DIRECT with batches of every size: the content is the same. */
static void test_direct_io(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_reader_info in;
	struct ls_reader *r;
	struct tsnap t;

	tsnap_default(&t, 8);
	t.dense = true;
	t.max_run = 128; /* up to 512 KiB: direct and buffered batches */
	tsnap_file(&t, path, LS_FILE_DIRECT);
	r = open_ok(path);
	tsnap_check_reader(&t, r);
	ls_reader_get_info(r, &in);
	assert_int_equal(in.compat_flags, 1);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);
}

/* A large batch bypasses the page cache; a single page does not. */
static void test_direct_bypasses_cache(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_layout_region lr = {"ram", 1 << 20, 4096, LS_MEM_ANON};
	struct ls_layout layout = {1, &lr};
	struct ls_sink *sink;
	char *data = aligned_alloc(4096, 129 * 4096);

	memset(data, 0x77, 129 * 4096);
	assert_int_equal(
	    ls_sink_file_create(&sink, path, LS_FILE_DIRECT, NULL, 0), 0);
	assert_int_equal(sink->ops->start(sink, &layout), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 0, data, 128), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 200, data, 1), 0);
	assert_int_equal(sink->ops->commit(sink), 0);
	ls_sink_destroy(sink);
	/* Region 0's data section starts at 4096. */
	assert_int_equal(resident_pages(path, 4096, 128 * 4096), 0);
	assert_int_equal(resident_pages(path, 4096 + 200 * 4096, 4096), 1);
	free(data);
}

struct src_job {
	const struct tsnap *t;
	struct ls_source *src;
	unsigned start;
	int ret;
};

/* Several threads read the same source, every page, as lazy restore. */
static void *source_reader(void *arg)
{
	struct src_job *j = arg;
	const struct ls_layout_region *lr = &j->t->layout.regions[0];
	uint64_t np = lr->len / lr->page_size;
	char *buf = malloc(4096), *want = malloc(4096);

	for (uint64_t k = 0; k < np && !j->ret; k++) {
		uint64_t p = (k + j->start * 37) % np;

		if (j->src->ops->is_zero(j->src, 0, p) !=
		    tsnap_page_zero(j->t, 0, p))
			j->ret = -1;
		if (j->src->ops->read_pages(j->src, 0, p, buf, 1))
			j->ret = -2;
		tsnap_page(j->t, 0, p, want);
		if (memcmp(buf, want, 4096))
			j->ret = -3;
	}
	free(buf);
	free(want);
	return NULL;
}

static void test_source_threads(void **state)
{
	const char *path = tpath(*state, "snap");
	struct src_job jobs[3];
	pthread_t th[3];
	struct ls_source *src;
	struct ls_reader *r;
	struct tsnap t;

	tsnap_default(&t, 9);
	tsnap_file(&t, path, 0);
	r = open_ok(path);
	assert_int_equal(ls_reader_source(r, &src), 0);
	for (unsigned i = 0; i < 3; i++) {
		jobs[i] = (struct src_job){&t, src, i, 0};
		pthread_create(&th[i], NULL, source_reader, &jobs[i]);
	}
	for (unsigned i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(jobs[i].ret, 0);
	}
	assert_false(src->ops->is_zero(src, 7, 0));
	src->ops->destroy(src);
	ls_reader_close(r);
}

/* The reader keeps its own descriptor; open_fd works on files too. */
static void test_open_fd(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_reader *r;
	struct tsnap t;
	int fd;

	tsnap_small(&t, 10);
	tsnap_file(&t, path, 0);
	fd = open(path, O_RDONLY);
	assert_int_equal(ls_reader_open_fd(fd, &r, NULL, 0), 0);
	close(fd);
	tsnap_check_reader(&t, r);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);
}

static void test_verify_progress(void **state)
{
	const char *path = tpath(*state, "snap");
	struct tprog p = {0};
	struct ls_reader *r;
	struct tsnap t;
	uint64_t data = 0;

	tsnap_default(&t, 11);
	tsnap_file(&t, path, 0);
	for (uint32_t i = 0; i < 3; i++)
		data += tsnap_nonzero(&t, i) * t.layout.regions[i].page_size;
	r = open_ok(path);
	assert_int_equal(ls_reader_verify(r, tprog_fn, &p), 0);
	assert_true(p.calls > 1);
	assert_int_equal(p.total, data);
	assert_int_equal(p.last_done, data);
	ls_reader_close(r);
}

/* An older snapshot under PATH stays whole until the new one commits. */
static void test_replace_existing(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_sink *sink;
	struct ls_reader *r;
	struct tsnap old, new;

	tsnap_small(&old, 12);
	tsnap_default(&new, 13);
	tsnap_file(&old, path, 0);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(tsnap_write(&new, sink, false), 0);
	r = open_ok(path);
	tsnap_check_reader(&old, r);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	assert_int_equal(sink->ops->commit(sink), 0);
	ls_sink_destroy(sink);
	/* The open reader still reads the old file; a new one the new. */
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);
	r = open_ok(path);
	tsnap_check_reader(&new, r);
	ls_reader_close(r);
}

/* ls_version() is the header's version; a new file carries the format's. */
static void test_versions(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_reader_info in;
	unsigned major, minor;
	struct ls_reader *r;
	struct tsnap t;
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", LS_VERSION_MAJOR,
		 LS_VERSION_MINOR, LS_VERSION_PATCH);
	assert_string_equal(ls_version(), want);
	ls_format_version(&major, &minor);
	tsnap_default(&t, 1);
	tsnap_file(&t, path, 0);
	r = open_ok(path);
	ls_reader_get_info(r, &in);
	assert_int_equal(in.version_major, major);
	assert_int_equal(in.version_minor, minor);
	ls_reader_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_versions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roundtrip_read_pages, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_restore_region_and_all, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_reader_bad_calls, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_sparse_holes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_temp_name_until_commit, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_replace_existing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_sink_bad_calls, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_direct_io, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_direct_bypasses_cache, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_source_threads, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_open_fd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_progress, setup,
					    teardown),
	};

	return cmocka_run_group_tests_name("format-file", tests, NULL, NULL);
}
