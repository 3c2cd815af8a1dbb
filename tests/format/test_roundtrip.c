/* SPDX-License-Identifier: MIT */
/*
 * Description: the engine and the format together. Live memory of three
 * kinds (anonymous, memfd shmem, hugetlb memfd) is snapshotted while the
 * test keeps writing to it; the snapshot (a file, or a stream through a
 * pipe) must hold the memory as it was at begin, byte for byte, and come
 * back the same through eager restore, the engine's lazy restore from
 * ls_reader_source(), and a stream's restore_all.
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "../hugetlb_pool.h"

#define MIB  (1ul << 20)
#define NREG 3

struct mem {
	const char *name;
	unsigned char *addr;
	size_t len, ps;
	int kind; /* 0 anon, 1 memfd, 2 hugetlb memfd */
};

struct rt {
	char *dir;
	struct ls_ctx *ctx;
	struct mem live[NREG];
	unsigned char *ref[NREG]; /* the memory at begin */
};

static const char blob[] = "device state, opaque to livesnap";

static void mem_map(struct mem *m, const char *name, int kind, size_t len)
{
	char err[256];
	int fd = -1;

	m->name = name;
	m->kind = kind;
	m->len = len;
	m->ps = kind == 2 ? 2 * MIB : 4096;
	if (kind == 0) {
		m->addr = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(m->addr != MAP_FAILED);
		madvise(m->addr, len, MADV_NOHUGEPAGE);
		return;
	}
	fd = memfd_create(name, MFD_CLOEXEC | (kind == 2 ? MFD_HUGETLB : 0));
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	if (kind == 2)
		m->addr = hugetlb_pool_mmap(NULL, len, PROT_READ | PROT_WRITE,
					    MAP_SHARED, fd, err, sizeof(err));
	else
		m->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
			       fd, 0);
	if (m->addr == MAP_FAILED)
		fail_msg("mmap %s: %s", name,
			 kind == 2 ? err : strerror(errno));
	close(fd);
}

/* A pattern with zero pages (never touched, so unpopulated) in it. */
static void fill(struct mem *m, unsigned seed)
{
	for (size_t p = 0; p < m->len / m->ps; p++) {
		uint64_t *w = (uint64_t *)(m->addr + p * m->ps);

		if ((p + seed) % 4 == 0 && m->kind != 2)
			continue;
		for (size_t i = 0; i < m->ps / 8; i += 16)
			w[i] = (seed + 1) * 0x100000001b3ull ^ (p << 20) ^ i;
	}
}

static int setup(void **state)
{
	static const size_t lens[NREG] = {8 * MIB, 4 * MIB, 4 * MIB};
	static const char *const names[NREG] = {"ram", "shm", "huge"};
	char err[LS_ERRMSG_MAX];
	struct rt *t = calloc(1, sizeof(*t));

	t->dir = tdir_create();
	if (ls_ctx_create(&t->ctx, err, sizeof(err)))
		fail_msg("%s", err);
	for (int i = 0; i < NREG; i++) {
		mem_map(&t->live[i], names[i], i, lens[i]);
		fill(&t->live[i], (unsigned)i);
		t->ref[i] = malloc(lens[i]);
		if (ls_region_add(t->ctx, names[i], t->live[i].addr, lens[i]) !=
		    i)
			fail_msg("%s", ls_ctx_error(t->ctx));
	}
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct rt *t = *state;

	ls_ctx_destroy(t->ctx);
	umount2(tpath(t->dir, "small"), MNT_DETACH); /* if test_enospc failed */
	for (int i = 0; i < NREG; i++) {
		munmap(t->live[i].addr, t->live[i].len);
		free(t->ref[i]);
	}
	tdir_remove(t->dir);
	free(t);
	return 0;
}

/*
 * A live snapshot into sink: the reference is taken, protection armed,
 * and then every third page of every region is overwritten while the
 * writer runs. The snapshot must hold the reference, not the new bytes.
 */
static void live_snapshot(struct rt *t, struct ls_sink *sink)
{
	struct ls_snapshot *snap;
	struct ls_stats st;

	for (int i = 0; i < NREG; i++)
		memcpy(t->ref[i], t->live[i].addr, t->live[i].len);
	if (ls_snapshot_create(t->ctx, sink, NULL, &snap))
		fail_msg("%s", ls_ctx_error(t->ctx));
	assert_int_equal(ls_snapshot_add_blob(snap, "vm", blob, sizeof(blob)),
			 0);
	if (ls_snapshot_begin(snap))
		fail_msg("%s", ls_ctx_error(t->ctx));
	for (int i = 0; i < NREG; i++)
		for (size_t p = 0; p < t->live[i].len / t->live[i].ps; p += 3)
			memset(t->live[i].addr + p * t->live[i].ps + 64, 0xee,
			       64);
	if (ls_snapshot_wait(snap))
		fail_msg("%s", ls_snapshot_error(snap));
	assert_int_equal(ls_snapshot_stats(snap, &st), 0);
	assert_true(st.pages_written > 0);
	ls_snapshot_destroy(snap);
}

static void check_reader_meta(struct rt *t, struct ls_reader *r)
{
	const void *data;
	size_t len;

	assert_int_equal(ls_reader_region_count(r), NREG);
	for (uint32_t i = 0; i < NREG; i++) {
		struct ls_reader_region g;

		assert_int_equal(ls_reader_region(r, i, &g), 0);
		assert_string_equal(g.name, t->live[i].name);
		assert_int_equal(g.len, t->live[i].len);
		assert_int_equal(g.page_size, t->live[i].ps);
	}
	assert_int_equal(ls_reader_find_blob(r, "vm", &data, &len), 0);
	assert_int_equal(len, sizeof(blob));
	assert_memory_equal(data, blob, len);
}

/* A fresh mapping of the same kind as live[i], for a restore. */
static struct mem fresh_like(const struct mem *live)
{
	struct mem m;

	mem_map(&m, live->name, live->kind, live->len);
	return m;
}

static void lazy_restore(struct rt *t, struct ls_reader *r, uint32_t i,
			 enum ls_restore_mode mode)
{
	struct mem m = fresh_like(&t->live[i]);
	struct ls_restore_stats rs;
	struct ls_restore *res;
	struct ls_source *src;
	char name[LS_NAME_MAX];
	int idx;

	snprintf(name, sizeof(name), "restored-%s-%d", t->live[i].name, mode);
	idx = ls_region_add(t->ctx, name, m.addr, m.len);
	if (idx < 0)
		fail_msg("%s", ls_ctx_error(t->ctx));
	assert_int_equal(ls_reader_source(r, &src), 0);
	if (ls_restore_start(t->ctx, idx, src, i, mode, &res))
		fail_msg("%s", ls_ctx_error(t->ctx));
	/* Touching every page now faults the ones not yet in. */
	if (memcmp(m.addr, t->ref[i], m.len))
		fail_msg("region '%s' differs during restore", name);
	assert_int_equal(ls_restore_wait(res), 0);
	assert_int_equal(ls_restore_stats(res, &rs), 0);
	assert_true(rs.complete);
	ls_restore_destroy(res);
	src->ops->destroy(src);
	assert_memory_equal(m.addr, t->ref[i], m.len);
	assert_int_equal(ls_region_remove(t->ctx, idx), 0);
	munmap(m.addr, m.len);
}

static void test_file(void **state)
{
	struct rt *t = *state;
	const char *path = tpath(t->dir, "vm.snap");
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;
	struct ls_reader *r;

	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err)))
		fail_msg("%s", err);
	live_snapshot(t, sink);
	if (ls_reader_open(path, &r, err, sizeof(err)))
		fail_msg("%s", err);
	if (ls_reader_verify(r, NULL, NULL))
		fail_msg("%s", ls_reader_error(r));
	check_reader_meta(t, r);
	for (uint32_t i = 0; i < NREG; i++) {
		struct mem m = fresh_like(&t->live[i]);

		assert_int_equal(
		    ls_reader_read_pages(r, i, 0, m.addr, m.len / m.ps), 0);
		assert_memory_equal(m.addr, t->ref[i], m.len);
		munmap(m.addr, m.len);
		m = fresh_like(&t->live[i]);
		assert_int_equal(ls_reader_restore_region(r, i, m.addr, m.len),
				 0);
		assert_memory_equal(m.addr, t->ref[i], m.len);
		munmap(m.addr, m.len);
		lazy_restore(t, r, i, LS_RESTORE_LAZY);
		lazy_restore(t, r, i, LS_RESTORE_EAGER);
	}
	ls_reader_close(r);
}

struct stream_reader {
	int fd;
	struct mem m[NREG];
	int ret;
	char err[LS_ERRMSG_MAX];
};

static void *stream_restore(void *arg)
{
	struct stream_reader *s = arg;
	struct ls_reader *r;
	void *addrs[NREG];
	size_t lens[NREG];

	s->ret = ls_reader_open_fd(s->fd, &r, s->err, sizeof(s->err));
	close(s->fd);
	if (s->ret)
		return NULL;
	for (int i = 0; i < NREG; i++) {
		addrs[i] = s->m[i].addr;
		lens[i] = s->m[i].len;
	}
	s->ret = ls_reader_restore_all(r, addrs, lens, NREG);
	snprintf(s->err, sizeof(s->err), "%s", ls_reader_error(r));
	ls_reader_close(r);
	return NULL;
}

static void test_stream(void **state)
{
	struct rt *t = *state;
	struct stream_reader s;
	struct ls_sink *sink;
	pthread_t th;
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	s.fd = fds[0];
	for (int i = 0; i < NREG; i++)
		s.m[i] = fresh_like(&t->live[i]);
	pthread_create(&th, NULL, stream_restore, &s);
	assert_int_equal(ls_sink_stream_create(&sink, fds[1], NULL, 0), 0);
	live_snapshot(t, sink);
	close(fds[1]);
	pthread_join(th, NULL);
	if (s.ret)
		fail_msg("%s", s.err);
	for (int i = 0; i < NREG; i++) {
		assert_memory_equal(s.m[i].addr, t->ref[i], s.m[i].len);
		munmap(s.m[i].addr, s.m[i].len);
	}
}

/* A full disk mid-snapshot: the engine reports the sink's ENOSPC. */
static void test_enospc(void **state)
{
	struct rt *t = *state;
	const char *mnt = tpath(t->dir, "small");
	char path[4200], err[LS_ERRMSG_MAX];
	struct ls_snapshot *snap;
	struct ls_sink *sink;
	int ret;

	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("none", mnt, "tmpfs", 0, "size=1m") < 0)
		fail_msg("mount tmpfs on %s: %s (the tests need root)", mnt,
			 strerror(errno));
	snprintf(path, sizeof(path), "%s/vm.snap", mnt);
	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(ls_snapshot_create(t->ctx, sink, NULL, &snap), 0);
	assert_int_equal(ls_snapshot_begin(snap), 0);
	ret = ls_snapshot_wait(snap);
	if (ret != -ENOSPC ||
	    !strstr(ls_snapshot_error(snap), "No space left on device"))
		fail_msg("got %d '%s'", ret, ls_snapshot_error(snap));
	ls_snapshot_destroy(snap);
	/* The memory is writable again and nothing is left on disk. */
	for (int i = 0; i < NREG; i++)
		memset(t->live[i].addr, 1, t->live[i].len);
	tdir_assert_empty(mnt);
	assert_int_equal(umount2(mnt, MNT_DETACH), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enospc, setup, teardown),
	};

	return cmocka_run_group_tests_name("format-roundtrip", tests, NULL,
					   NULL);
}
