/* SPDX-License-Identifier: MIT */
/*
 * Chains of snapshot files: a live, tracked full snapshot of memory that
 * two threads keep writing, then deltas, all through the file sink. Every
 * chain (ending at each file) must restore, eagerly and lazily, to memory
 * as it was at that snapshot's begin, byte for byte; a flattened chain
 * too. Then the links: a missing, damaged or wrong parent, a broken link
 * in the middle, a delta restored alone: refused with a clear message, and
 * nothing restored.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"

#define MB (1ul << 20)
#define LEN (8 * MB)
#define NSNAP 6 /* a full snapshot and 5 deltas */

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fail_msg(__VA_ARGS__);                               \
	} while (0)

struct live {
	unsigned char *mem;
	pthread_t th[2];
	atomic_bool quit;
	atomic_int pause_req, paused;
	atomic_uint hot; /* the 1 MiB window being written now */
};

static void *writer(void *arg)
{
	struct live *l = arg;
	uint64_t s = (uint64_t)(uintptr_t)&s | 1;

	while (!atomic_load(&l->quit)) {
		uint64_t off;

		if (atomic_load(&l->pause_req)) {
			atomic_fetch_add(&l->paused, 1);
			while (atomic_load(&l->pause_req) &&
			       !atomic_load(&l->quit))
				sched_yield();
			atomic_fetch_sub(&l->paused, 1);
			continue;
		}
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		off = atomic_load(&l->hot) * MB + (s % MB & ~7ull);
		/* now and then a page cleared to zero: a delta must carry it */
		if (s % 4096 == 0)
			memset(l->mem + (off & ~4095ull), 0, 4096);
		else
			__atomic_store_n((uint64_t *)(l->mem + off), s | 1,
					 __ATOMIC_RELAXED);
	}
	return NULL;
}

static void live_pause(struct live *l)
{
	atomic_store(&l->pause_req, 1);
	while (atomic_load(&l->paused) < 2)
		sched_yield();
}

static char *dir;
static unsigned char *refs[NSNAP];
static char paths[NSNAP][64];

static void *fresh(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	CHECK(p != MAP_FAILED, "mmap");
	return p;
}

/* The chain: a tracked full snapshot, then deltas, into files. */
static int make_chain(void **state)
{
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	struct live l = {0};

	(void)state;
	dir = tdir_create();
	l.mem = fresh(LEN);
	for (size_t off = 0; off < LEN; off += 4096)
		if (off % (3 * 4096))
			memset(l.mem + off, (int)(off / 4096) | 1, 4096);
	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ctx: %s", err);
	CHECK(ls_region_add(ctx, "ram", l.mem, LEN) == 0, "region: %s",
	      ls_ctx_error(ctx));
	for (int i = 0; i < 2; i++)
		pthread_create(&l.th[i], NULL, writer, &l);
	for (int i = 0; i < NSNAP; i++) {
		struct ls_snapshot_opts o = {.track = true, .delta = i > 0};
		struct ls_snapshot *snap;
		struct ls_sink *sink;

		if (i)
			snprintf(paths[i], sizeof(paths[i]), "%s/d%d.snap", dir,
				 i);
		else
			snprintf(paths[i], sizeof(paths[i]), "%s/base.snap", dir);
		CHECK(!ls_sink_file_create(&sink, paths[i], 0, err, sizeof(err)),
		      "sink: %s", err);
		CHECK(!ls_snapshot_create(ctx, sink, &o, &snap), "create: %s",
		      ls_ctx_error(ctx));
		ls_snapshot_add_blob(snap, "state", &i, sizeof(i));
		live_pause(&l);
		refs[i] = malloc(LEN);
		CHECK(refs[i], "out of memory");
		memcpy(refs[i], l.mem, LEN);
		CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
		atomic_store(&l.hot, (unsigned)(i * 3 % 8));
		atomic_store(&l.pause_req, 0);
		CHECK(!ls_snapshot_wait(snap), "snapshot %d: %s", i,
		      ls_snapshot_error(snap));
		ls_snapshot_destroy(snap);
		usleep(20000);
	}
	atomic_store(&l.quit, true);
	for (int i = 0; i < 2; i++)
		pthread_join(l.th[i], NULL);
	ls_ctx_destroy(ctx);
	munmap(l.mem, LEN);
	return 0;
}

static int drop_chain(void **state)
{
	(void)state;
	for (int i = 0; i < NSNAP; i++)
		free(refs[i]);
	tdir_remove(dir);
	return 0;
}

static struct ls_chain *open_chain(const char *path)
{
	char err[LS_ERRMSG_MAX];
	struct ls_chain *c;

	CHECK(!ls_chain_open(path, &c, err, sizeof(err)), "ls_chain_open(%s): %s",
	      path, err);
	return c;
}

static void check_eager(struct ls_chain *c, const unsigned char *ref)
{
	unsigned char *mem = fresh(LEN);

	CHECK(!ls_chain_restore_region(c, 0, mem, LEN), "eager: %s",
	      ls_chain_error(c));
	CHECK(!memcmp(mem, ref, LEN), "eager restore differs from memory at begin");
	munmap(mem, LEN);
}

static void check_lazy(struct ls_chain *c, const unsigned char *ref)
{
	unsigned char *mem = fresh(LEN);
	char err[LS_ERRMSG_MAX];
	struct ls_restore *r;
	struct ls_source *src;
	struct ls_ctx *ctx;
	uint64_t sum = 0;

	CHECK(!ls_ctx_create(&ctx, err, sizeof(err)), "ctx: %s", err);
	CHECK(ls_region_add(ctx, "ram", mem, LEN) == 0, "region");
	CHECK(!ls_chain_source(c, &src), "source: %s", ls_chain_error(c));
	CHECK(!ls_restore_start(ctx, 0, src, 0, LS_RESTORE_LAZY, &r),
	      "lazy: %s", ls_ctx_error(ctx));
	/* Touch pages from the top while the prefetch fills from the bottom. */
	for (size_t off = LEN; off > 0; off -= 64 * 4096)
		sum += mem[off - 4096];
	CHECK(!ls_restore_wait(r), "lazy restore: %s", ls_ctx_error(ctx));
	ls_restore_destroy(r);
	ls_source_destroy(src);
	(void)sum;
	CHECK(!memcmp(mem, ref, LEN), "lazy restore differs from memory at begin");
	ls_ctx_destroy(ctx);
	munmap(mem, LEN);
}

/* Every chain, ending at each file, found from that file alone. */
static void test_restore_each(void **state)
{
	(void)state;
	for (int i = 0; i < NSNAP; i++) {
		struct ls_chain *c = open_chain(paths[i]);
		struct ls_reader_info in;
		const void *data;
		size_t len;

		CHECK(ls_chain_length(c) == (unsigned)i + 1,
		      "chain of %s has %u files", paths[i], ls_chain_length(c));
		CHECK(!strcmp(ls_chain_path(c, 0), paths[0]),
		      "the chain does not start at the full snapshot");
		ls_reader_get_info(ls_chain_reader(c, (unsigned)i), &in);
		CHECK(in.delta == (i > 0) && in.version_minor == 1,
		      "info: delta %d, version 1.%u", in.delta, in.version_minor);
		CHECK(in.pages_nonzero < (i ? LEN / 4096 / 2 : LEN / 4096),
		      "delta %d holds %llu pages", i,
		      (unsigned long long)in.pages_nonzero);
		CHECK(!ls_reader_find_blob(ls_chain_reader(c, (unsigned)i),
					   "state", &data, &len) &&
			      len == sizeof(int) && *(const int *)data == i,
		      "the delta's blob");
		CHECK(!ls_chain_verify(c, NULL, NULL), "verify: %s",
		      ls_chain_error(c));
		check_eager(c, refs[i]);
		check_lazy(c, refs[i]);
		ls_chain_close(c);
	}
}

static void test_flatten(void **state)
{
	struct ls_chain *c = open_chain(paths[NSNAP - 1]);
	char err[LS_ERRMSG_MAX], out[128];
	struct ls_reader_info a, b;
	struct ls_sink *sink;
	struct ls_reader *r;
	unsigned char *mem = fresh(LEN);

	(void)state;
	snprintf(out, sizeof(out), "%s/flat.out", dir);
	CHECK(!ls_sink_file_create(&sink, out, 0, err, sizeof(err)), "%s", err);
	CHECK(!ls_chain_flatten(c, sink), "flatten: %s", ls_chain_error(c));
	ls_sink_destroy(sink);
	CHECK(!ls_reader_open(out, &r, err, sizeof(err)), "%s", err);
	ls_reader_get_info(r, &a);
	ls_reader_get_info(ls_chain_reader(c, NSNAP - 1), &b);
	CHECK(!a.delta && !memcmp(a.id, b.id, LS_ID_BYTES),
	      "the flat file is not a full snapshot with the newest id");
	CHECK(!ls_reader_restore_region(r, 0, mem, LEN), "restore: %s",
	      ls_reader_error(r));
	CHECK(!memcmp(mem, refs[NSNAP - 1], LEN), "flat restore differs");
	CHECK(!ls_reader_verify(r, NULL, NULL), "verify flat");
	ls_reader_close(r);
	ls_chain_close(c);
	unlink(out);
	munmap(mem, LEN);
}

static bool resident(void *addr, size_t len)
{
	unsigned char vec[LEN / 4096];
	bool any = false;

	CHECK(!mincore(addr, len, vec), "mincore");
	for (size_t i = 0; i < len / 4096; i++)
		any |= vec[i] & 1;
	return any;
}

/* A delta alone: neither restored nor served lazily. */
static void test_delta_alone(void **state)
{
	char err[LS_ERRMSG_MAX];
	struct ls_source *src;
	struct ls_reader *r;
	unsigned char *mem = fresh(LEN);
	int ret;

	(void)state;
	CHECK(!ls_reader_open(paths[2], &r, err, sizeof(err)), "%s", err);
	ret = ls_reader_restore_region(r, 0, mem, LEN);
	CHECK(ret == -EINVAL && strstr(ls_reader_error(r), "delta"),
	      "a delta restored alone: %d %s", ret, ls_reader_error(r));
	ret = ls_reader_source(r, &src);
	CHECK(ret == -EINVAL, "a delta as a lazy source: %d", ret);
	CHECK(!resident(mem, LEN), "memory was touched");
	ls_reader_close(r);
	munmap(mem, LEN);
}

/* Opening fails with msg in the message; nothing else is needed. */
static void expect_open_fails(const char *path, int err, const char *msg)
{
	char buf[LS_ERRMSG_MAX];
	struct ls_chain *c;
	int ret = ls_chain_open(path, &c, buf, sizeof(buf));

	CHECK(ret == err && strstr(buf, msg) && !c,
	      "ls_chain_open(%s): %d '%s', expected %d '%s'", path, ret, buf,
	      err, msg);
	CHECK(!strchr(buf, '\n'), "a message of several lines");
}

static void test_missing_parent(void **state)
{
	char away[128], moved[160];

	(void)state;
	/* d2 elsewhere: d3..d5 have a broken link in the middle. */
	snprintf(away, sizeof(away), "%s/away", dir);
	snprintf(moved, sizeof(moved), "%s/d2.snap", away);
	CHECK(!mkdir(away, 0700) && !rename(paths[2], moved), "rename");
	expect_open_fails(paths[4], -ENOENT, "missing or damaged parent");
	expect_open_fails(paths[3], -ENOENT, "d3.snap' is a delta of snapshot");
	/* d1 and base still fine */
	ls_chain_close(open_chain(paths[1]));
	CHECK(!rename(moved, paths[2]) && !rmdir(away), "rename back");
	ls_chain_close(open_chain(paths[4]));
}

static void flip(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char b;

	CHECK(fd >= 0 && pread(fd, &b, 1, off) == 1, "open %s", path);
	b ^= 0x40;
	CHECK(pwrite(fd, &b, 1, off) == 1, "pwrite");
	close(fd);
}

static void test_damaged_parent(void **state)
{
	size_t len;
	void *copy = tslurp(paths[1], &len);

	(void)state;
	/* A damaged header: the parent cannot be found by its id. */
	flip(paths[1], 200);
	expect_open_fails(paths[3], -ENOENT, "missing or damaged parent");
	tspit(paths[1], copy, len);
	/* A damaged table (the end of the file): found, and refused. */
	flip(paths[1], (off_t)len - 10);
	expect_open_fails(paths[3], -EBADMSG, "d1.snap");
	tspit(paths[1], copy, len);
	ls_chain_close(open_chain(paths[3]));
	free(copy);
}

static void test_damaged_page(void **state)
{
	unsigned char *mem = fresh(LEN);
	struct ls_chain *c;
	size_t len;
	void *copy = tslurp(paths[2], &len);
	int ret;

	(void)state;
	/* Flip a byte in the first data page d2 holds. */
	for (off_t off = 4096; off < (off_t)(4096 + LEN); off += 4096) {
		unsigned char b[8];
		int fd = open(paths[2], O_RDONLY);

		CHECK(pread(fd, b, 8, off) == 8, "pread");
		close(fd);
		if (memcmp(b, "\0\0\0\0\0\0\0\0", 8)) {
			flip(paths[2], off + 3);
			break;
		}
	}
	c = open_chain(paths[3]);
	ret = ls_chain_verify(c, NULL, NULL);
	CHECK(ret == -EBADMSG && strstr(ls_chain_error(c), "d2.snap") &&
		      strstr(ls_chain_error(c), "checksum"),
	      "verify of a damaged chain: %d %s", ret, ls_chain_error(c));
	ret = ls_chain_restore_region(c, 0, mem, LEN);
	CHECK(ret == -EBADMSG, "restore of a damaged chain: %d", ret);
	ls_chain_close(c);
	tspit(paths[2], copy, len);
	free(copy);
	munmap(mem, LEN);
}

/* An explicit list: a delta given after the wrong parent. */
static void test_wrong_parent(void **state)
{
	const char *skip[] = {paths[0], paths[1], paths[3]};
	const char *nobase[] = {paths[1], paths[2]};
	const char *ok[] = {paths[0], paths[1], paths[2]};
	char buf[LS_ERRMSG_MAX];
	struct ls_chain *c;
	int ret;

	(void)state;
	ret = ls_chain_open_list(skip, 3, &c, buf, sizeof(buf));
	CHECK(ret == -EINVAL && strstr(buf, "wrong parent") &&
		      strstr(buf, "d3.snap") && strstr(buf, "d1.snap"),
	      "wrong parent: %d %s", ret, buf);
	ret = ls_chain_open_list(nobase, 2, &c, buf, sizeof(buf));
	CHECK(ret == -EINVAL && strstr(buf, "starts with a full snapshot"),
	      "no base: %d %s", ret, buf);
	CHECK(!ls_chain_open_list(ok, 3, &c, buf, sizeof(buf)), "%s", buf);
	check_eager(c, refs[2]);
	ls_chain_close(c);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restore_each),
		cmocka_unit_test(test_flatten),
		cmocka_unit_test(test_delta_alone),
		cmocka_unit_test(test_missing_parent),
		cmocka_unit_test(test_damaged_parent),
		cmocka_unit_test(test_damaged_page),
		cmocka_unit_test(test_wrong_parent),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, make_chain, drop_chain);
}
