/* SPDX-License-Identifier: MIT */
/*
 * Writes into protected pages that are not a plain store from a user
 * thread: the kernel copying into them (read from a pipe, pread from a
 * file, recv from a socket, an O_DIRECT read, an io_uring read) and locked,
 * 16-byte and non-temporal stores. Each must succeed (no EFAULT, no SIGBUS),
 * land in memory, and leave the snapshot equal to the memory at begin; and
 * each must really have hit a protected page (the snapshot saw a fault).
 * Every memory type, every strategy.
 */
#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "helpers.h"

#define REGION (8 * MB)
/* Past the writer's first batch, which waits for the first fault. */
#define TARGET (5 * MB)
#define NBYTES (3 * 4096 + 200) /* crosses page boundaries */

enum op {
	OP_READ_PIPE,
	OP_PREAD_FILE,
	OP_RECV,
	OP_ODIRECT,
	OP_URING,
	OP_ATOMICS,
};

static const char *const op_names[] = {
	"read(pipe)", "pread(file)", "recv(socket)", "pread(O_DIRECT)",
	"io_uring read", "atomic/non-temporal stores",
};

/* A file in /tmp holding data (O_DIRECT: the file system must allow it). */
static int data_file(const unsigned char *data, size_t len, bool direct)
{
	char path[] = "/tmp/ls-kernel-XXXXXX";
	int fd = mkstemp(path), dfd;

	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(path);
	CHECK(write(fd, data, len) == (ssize_t)len, "write: %s",
	      strerror(errno));
	CHECK(!fsync(fd), "fsync: %s", strerror(errno));
	if (!direct)
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dfd = open(path, O_RDONLY | O_DIRECT);
	CHECK(dfd >= 0, "open O_DIRECT: %s", strerror(errno));
	close(fd);
	return dfd;
}

static ssize_t do_pipe(unsigned char *dst, const unsigned char *src, size_t n)
{
	int p[2];
	ssize_t got;

	CHECK(!pipe(p), "pipe: %s", strerror(errno));
	CHECK(write(p[1], src, n) == (ssize_t)n, "write pipe: %s",
	      strerror(errno));
	got = read(p[0], dst, n);
	if (got < 0)
		got = -errno;
	close(p[0]);
	close(p[1]);
	return got;
}

static ssize_t do_pread(unsigned char *dst, const unsigned char *src,
			size_t n, bool direct)
{
	int fd = data_file(src, n, direct);
	ssize_t got = pread(fd, dst, n, 0);

	if (got < 0)
		got = -errno;
	close(fd);
	return got;
}

static ssize_t do_recv(unsigned char *dst, const unsigned char *src, size_t n)
{
	int sv[2];
	ssize_t got;

	CHECK(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair: %s",
	      strerror(errno));
	CHECK(send(sv[0], src, n, 0) == (ssize_t)n, "send: %s",
	      strerror(errno));
	got = recv(sv[1], dst, n, MSG_WAITALL);
	if (got < 0)
		got = -errno;
	close(sv[0]);
	close(sv[1]);
	return got;
}

static ssize_t do_uring(unsigned char *dst, const unsigned char *src, size_t n)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int fd = data_file(src, n, false), ret;
	ssize_t got;

	ret = io_uring_queue_init(4, &ring, 0);
	CHECK(!ret, "io_uring_queue_init: %s", strerror(-ret));
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read(sqe, fd, dst, (unsigned)n, 0);
	ret = io_uring_submit(&ring);
	CHECK(ret == 1, "io_uring_submit: %s", strerror(-ret));
	ret = io_uring_wait_cqe(&ring, &cqe);
	CHECK(!ret, "io_uring_wait_cqe: %s", strerror(-ret));
	got = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	close(fd);
	return got;
}

/*
 * lock xadd, lock cmpxchg16b, movnti and movntdq, each into its own page;
 * the same operations on `expect` give what memory must hold after.
 */
static void store_ops(unsigned char *mem, size_t page)
{
	uint64_t *xadd = (uint64_t *)(mem + 0 * page + 64);
	unsigned __int128 *cx = (unsigned __int128 *)(mem + 1 * page + 128);
	long long *nti = (long long *)(mem + 2 * page + 8);
	__m128i *ntdq = (__m128i *)(mem + 3 * page + 256);
	unsigned __int128 old = *cx, want = ~old;
	uint64_t lo = (uint64_t)old, hi = (uint64_t)(old >> 64);
	bool swapped;

	__atomic_fetch_add(xadd, 0x1234567, __ATOMIC_SEQ_CST);
	__asm__ volatile("lock cmpxchg16b %1\n\tsete %0"
			 : "=q"(swapped), "+m"(*cx), "+a"(lo), "+d"(hi)
			 : "b"((uint64_t)want), "c"((uint64_t)(want >> 64))
			 : "memory", "cc");
	CHECK(swapped, "cmpxchg16b did not swap");
	_mm_stream_si64(nti, 0x0123456789abcdefll);
	_mm_stream_si128(ntdq, _mm_set_epi64x(0x1111222233334444ll,
					      0x5555666677778888ll));
	_mm_sfence();
}

static void store_ops_expect(unsigned char *mem, size_t page)
{
	uint64_t *xadd = (uint64_t *)(mem + 0 * page + 64);
	unsigned __int128 *cx = (unsigned __int128 *)(mem + 1 * page + 128);
	uint64_t *nti = (uint64_t *)(mem + 2 * page + 8);
	uint64_t *ntdq = (uint64_t *)(mem + 3 * page + 256);

	*xadd += 0x1234567;
	*cx = ~*cx;
	*nti = 0x0123456789abcdefull;
	ntdq[0] = 0x5555666677778888ull;
	ntdq[1] = 0x1111222233334444ull;
}

/* Runs the operation into protected memory at dst; checks its result. */
static void run_op(enum op op, struct test_mem *m, unsigned char *dst)
{
	unsigned char *src = malloc(NBYTES), *after = malloc(m->len);
	size_t n = NBYTES;
	ssize_t got = 0;

	CHECK(src && after, "out of memory");
	fill_random(src, NBYTES, NBYTES, 100, 77);
	if (op == OP_ODIRECT)
		n = 3 * 4096; /* aligned length, page-aligned buffer */
	memcpy(after, m->addr, m->len);
	switch (op) {
	case OP_READ_PIPE:
		got = do_pipe(dst, src, n);
		break;
	case OP_PREAD_FILE:
		got = do_pread(dst, src, n, false);
		break;
	case OP_RECV:
		got = do_recv(dst, src, n);
		break;
	case OP_ODIRECT:
		got = do_pread(dst, src, n, true);
		break;
	case OP_URING:
		got = do_uring(dst, src, n);
		break;
	case OP_ATOMICS:
		store_ops(dst, 4096);
		store_ops_expect(after + (dst - m->addr), 4096);
		got = (ssize_t)n;
		break;
	}
	CHECK(got == (ssize_t)n, "%s into protected %s memory returned %zd (%s)",
	      op_names[op], mem_kind_name(m->kind), got,
	      got < 0 ? strerror((int)-got) : "short");
	if (op != OP_ATOMICS)
		memcpy(after + (dst - m->addr), src, n);
	CHECK(!memcmp(after, m->addr, m->len),
	      "%s: memory does not hold what was written", op_names[op]);
	free(src);
	free(after);
}

static void one_case(enum mem_kind kind, enum ls_strategy strategy, enum op op)
{
	struct ls_snapshot_opts o = {.strategy = strategy};
	struct ls_snapshot *snap;
	struct mem_sink *s = mem_sink_new();
	struct ls_ctx *ctx;
	struct ls_stats st;
	struct test_mem m;
	unsigned char *ref;
	size_t off = TARGET;
	int ret;

	mem_map(&m, kind, REGION);
	fill_random(m.addr, m.len, m.page_size, 70, (unsigned)(kind + 10 * op));
	m.addr[8] = 1; /* the writer's first batch has data: it waits */
	if (op != OP_ODIRECT && op != OP_ATOMICS)
		off += 100; /* unaligned, across pages */
	ref = malloc(m.len);
	CHECK(ref, "out of memory");
	ctx = ctx_with_ram(&m);
	snap = snapshot_begin_gated(ctx, s, &o, &m, ref, NULL);
	run_op(op, &m, m.addr + off);
	ret = ls_snapshot_wait(snap);
	CHECK(!ret, "%s, %s: wait: %s", op_names[op], mem_kind_name(kind),
	      ls_snapshot_error(snap));
	CHECK(!ls_snapshot_stats(snap, &st) && st.faults > 0,
	      "%s on %s: no write fault: the write did not hit protected memory",
	      op_names[op], mem_kind_name(kind));
	mem_sink_expect(s, 0, ref, m.len);
	CHECK(count_wp_pages(m.addr, m.len) == 0, "pages left protected");
	ls_snapshot_destroy(snap);
	mem_sink_free(s);
	ls_ctx_destroy(ctx);
	free(ref);
	mem_unmap(&m);
}

/*
 * Every memory type with every strategy; under TSan (~20x slower) one
 * strategy per type, rotating with the operation.
 */
static void every_case(enum op op)
{
	for (int k = 0; k < MEM_NKINDS; k++)
		for (size_t i = 0; i < NSTRATEGIES; i++)
			if (strategy_wanted(k, i, (int)op))
				one_case((enum mem_kind)k, test_strategies[i],
					 op);
}

static void test_read_pipe(void **state)
{
	(void)state;
	every_case(OP_READ_PIPE);
}

static void test_pread_file(void **state)
{
	(void)state;
	every_case(OP_PREAD_FILE);
}

static void test_recv(void **state)
{
	(void)state;
	every_case(OP_RECV);
}

static void test_odirect(void **state)
{
	(void)state;
	every_case(OP_ODIRECT);
}

static void test_io_uring(void **state)
{
	(void)state;
	every_case(OP_URING);
}

static void test_atomic_nt_stores(void **state)
{
	(void)state;
	every_case(OP_ATOMICS);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_pipe),
		cmocka_unit_test(test_pread_file),
		cmocka_unit_test(test_recv),
		cmocka_unit_test(test_odirect),
		cmocka_unit_test(test_io_uring),
		cmocka_unit_test(test_atomic_nt_stores),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
