/* SPDX-License-Identifier: MIT */
/*
 * What a process does around a snapshot besides writing memory: fork()
 * while it runs, a signal whose handler writes another protected page while
 * the thread is blocked in a write fault, SIGKILL in the middle of a
 * snapshot to a file, and hundreds of snapshots and cancels in a row
 * (descriptors, threads and memory must stay flat).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers.h"

#if defined(__SANITIZE_ADDRESS__)
/*
 * The hygiene test asserts that RSS stays flat over 1000 snapshots; ASan's
 * quarantine of freed memory (256 MiB by default) would grow it anyway.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=0";
}
#endif

struct fixture {
	struct ls_ctx *ctx;
	struct test_mem m;
	struct mem_sink *s;
	struct ls_snapshot *snap;
	unsigned char *ref;
};

/* Region, context, a snapshot created (not begun) and the reference. */
static void setup(struct fixture *f, enum mem_kind kind, size_t len,
		  const struct ls_snapshot_opts *o, unsigned percent)
{
	memset(f, 0, sizeof(*f));
	mem_map(&f->m, kind, len);
	fill_random(f->m.addr, f->m.len, f->m.page_size, percent,
		    (unsigned)kind);
	f->m.addr[8] = 1; /* the writer's first batch has data: it waits */
	f->ref = malloc(len);
	CHECK(f->ref, "out of memory");
	f->ctx = ctx_with_ram(&f->m);
	f->s = mem_sink_new();
	CHECK(!ls_snapshot_create(f->ctx, &f->s->base, o, &f->snap),
	      "create: %s", ls_ctx_error(f->ctx));
	memcpy(f->ref, f->m.addr, len);
	/* The writer stops after its first batch until the first fault. */
	f->s->gate = f->snap;
}

/* The snapshot is exact, nothing is left protected; w (or NULL) stops. */
static void finish_exact(struct fixture *f, struct writers *w)
{
	int ret = ls_snapshot_wait(f->snap);

	CHECK(!ret, "wait: %s", ls_snapshot_error(f->snap));
	mem_sink_expect(f->s, 0, f->ref, f->m.len);
	CHECK(count_wp_pages(f->m.addr, f->m.len) == 0,
	      "pages left write-protected");
	if (w)
		writers_stop(w);
	ls_snapshot_destroy(f->snap);
	mem_sink_free(f->s);
	ls_ctx_destroy(f->ctx);
	free(f->ref);
	mem_unmap(&f->m);
}

/* ---------------- fork() during a snapshot ---------------- */

/*
 * The child: async-signal-safe calls only (the parent has threads). Its
 * copy of the region must carry no write protection; private memory is
 * written all over (copy-on-write: the parent does not see it), which
 * would hang on a protected page. Shared memory is not written: the child
 * would be an unregistered alias of the parent's region (docs/api.md).
 */
static int child_main(unsigned char *mem, size_t len, bool write_it)
{
	static uint64_t ent[512];
	uint64_t vpn = (uintptr_t)mem / 4096;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return 10;
	for (uint64_t i = 0; i < len / 4096; i += 512) {
		if (pread(fd, ent, sizeof(ent), (off_t)((vpn + i) * 8)) !=
		    (ssize_t)sizeof(ent))
			return 11;
		for (int k = 0; k < 512; k++)
			if (ent[k] & (1ull << 57))
				return 12; /* inherited protection */
	}
	close(fd);
	if (write_it)
		for (size_t off = 0; off < len; off += 4096)
			mem[off + 100] ^= 0xff;
	return 0;
}

static void fork_case(enum mem_kind kind, enum ls_strategy strategy)
{
	bool priv = kind == MEM_ANON_THP || kind == MEM_ANON_4K;
	struct ls_snapshot_opts o = {.strategy = strategy};
	struct fixture f;
	struct writers w;
	int status;
	pid_t pid;

	setup(&f, kind, 8 * MB, &o, 80);
	CHECK(!ls_snapshot_begin(f.snap), "begin: %s", ls_ctx_error(f.ctx));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(child_main(f.m.addr, f.m.len, priv));
	/* The parent writes on; its snapshot must be exact. */
	writers_start(&w, f.m.addr, f.m.len, f.m.page_size, 2);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "%s: the child %s %d", mem_kind_name(kind),
	      WIFEXITED(status) ? "exited with" : "was killed by signal",
	      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	writers_expect_progress(&w, 1000);
	finish_exact(&f, &w);
}

static void test_fork(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++)
		for (size_t i = 0; i < NSTRATEGIES; i++)
			if (strategy_wanted(k, i, 0))
				fork_case((enum mem_kind)k, test_strategies[i]);
}

/* ---------------- a signal while blocked in a write fault ---------------- */

struct sig_thread {
	unsigned char *a, *b; /* two protected pages, in different batches */
	atomic_bool started, handled, done;
	bool done_in_handler; /* the first write had finished already */
};

static struct sig_thread *sig_cur; /* for the handler */

static void on_usr1(int sig)
{
	(void)sig;
	/* Another protected page, from inside the fault on the first. */
	sig_cur->done_in_handler = atomic_load(&sig_cur->done);
	sig_cur->b[64] = 0xb7;
	atomic_store(&sig_cur->handled, true);
}

static void *sig_main(void *arg)
{
	struct sig_thread *t = arg;

	atomic_store(&t->started, true);
	t->a[32] = 0xa5; /* blocks in the write fault */
	atomic_store(&t->done, true);
	while (!atomic_load(&t->handled)) /* released early: signal here */
		sched_yield();
	return NULL;
}

/*
 * WRITE_FIRST with a slow sink on single pages holds the thread in its
 * fault for 200 ms: the signal arrives while it is blocked there (the
 * snapshot has seen the fault, the sink has not returned; asserted). Other
 * strategies release it sooner, and the signal may come after the write;
 * the handler's write into protected memory must work either way.
 */
static void signal_case(enum mem_kind kind, enum ls_strategy strategy)
{
	/* All data, 4 MiB batches: the writer's own runs are never 1 page. */
	struct ls_snapshot_opts o = {.strategy = strategy,
				     .batch_bytes = 4 * MB};
	struct sigaction sa = {.sa_handler = on_usr1}, old;
	struct sig_thread t = {0};
	struct ls_stats st;
	struct fixture f;
	pthread_t th;

	setup(&f, kind, 8 * MB, &o, 100);
	f.s->delay_single_us = 200000;
	t.a = f.m.addr + 4 * MB;
	t.b = f.m.addr + 6 * MB;
	sig_cur = &t;
	CHECK(!sigaction(SIGUSR1, &sa, &old), "sigaction: %s", strerror(errno));
	CHECK(!ls_snapshot_begin(f.snap), "begin: %s", ls_ctx_error(f.ctx));
	CHECK(!pthread_create(&th, NULL, sig_main, &t), "pthread_create");
	do {
		CHECK(!ls_snapshot_stats(f.snap, &st), "stats");
		sched_yield();
	} while (!st.faults && !atomic_load(&t.done));
	pthread_kill(th, SIGUSR1);
	pthread_join(th, NULL);
	CHECK(atomic_load(&t.handled) && atomic_load(&t.done),
	      "handler %d, write %d", atomic_load(&t.handled),
	      atomic_load(&t.done));
	CHECK(strategy != LS_STRATEGY_WRITE_FIRST || !t.done_in_handler,
	      "%s: the signal came after the fault, not during it",
	      mem_kind_name(kind));
	CHECK(t.a[32] == 0xa5 && t.b[64] == 0xb7,
	      "the writes did not land (0x%02x 0x%02x)", t.a[32], t.b[64]);
	sigaction(SIGUSR1, &old, NULL);
	finish_exact(&f, NULL);
}

static void test_signal_in_fault(void **state)
{
	(void)state;
	for (int k = 0; k < MEM_NKINDS; k++)
		for (size_t i = 0; i < NSTRATEGIES; i++)
			if (strategy_wanted(k, i, 1))
				signal_case((enum mem_kind)k,
					    test_strategies[i]);
}

/* ---------------- SIGKILL in the middle of a snapshot to a file ---------------- */

/*
 * A sink in front of the file sink: after the first pages reached the file
 * it tells the parent and stops, so the kill certainly lands mid-snapshot.
 */
struct stall_sink {
	struct ls_sink base;
	struct ls_sink *file;
	int notify_fd;
};

static int st_start(struct ls_sink *sink, const struct ls_layout *layout)
{
	struct stall_sink *s = (struct stall_sink *)sink;

	return s->file->ops->start(s->file, layout);
}

static int st_write(struct ls_sink *sink, uint32_t region, uint64_t first,
		    const void *data, uint64_t npages)
{
	struct stall_sink *s = (struct stall_sink *)sink;
	int ret = s->file->ops->write_pages(s->file, region, first, data,
					    npages);

	if (!ret && write(s->notify_fd, "w", 1) == 1)
		for (;;)
			pause(); /* until the parent's SIGKILL */
	return ret;
}

static int st_blob(struct ls_sink *sink, const char *name, const void *data,
		   size_t len)
{
	struct stall_sink *s = (struct stall_sink *)sink;

	return s->file->ops->put_blob(s->file, name, data, len);
}

static int st_commit(struct ls_sink *sink)
{
	struct stall_sink *s = (struct stall_sink *)sink;

	return s->file->ops->commit(s->file);
}

static void st_abort(struct ls_sink *sink)
{
	struct stall_sink *s = (struct stall_sink *)sink;

	s->file->ops->abort(s->file);
}

static void st_destroy(struct ls_sink *sink)
{
	struct stall_sink *s = (struct stall_sink *)sink;

	ls_sink_destroy(s->file);
	free(s);
}

static const struct ls_sink_ops stall_ops = {
	.start = st_start,
	.write_pages = st_write,
	.put_blob = st_blob,
	.commit = st_commit,
	.abort = st_abort,
	.destroy = st_destroy,
};

/* The child: a live snapshot of its memory to path, never finished. */
static int kill_child(const char *path, enum mem_kind kind, int notify_fd)
{
	struct stall_sink *s = calloc(1, sizeof(*s));
	struct ls_snapshot *snap;
	char err[LS_ERRMSG_MAX];
	struct ls_ctx *ctx;
	struct test_mem m;

	if (!s)
		return 20;
	mem_map(&m, kind, 8 * MB);
	fill_random(m.addr, m.len, m.page_size, 90, 5);
	s->base.ops = &stall_ops;
	s->notify_fd = notify_fd;
	if (ls_sink_file_create(&s->file, path, 0, err, sizeof(err)))
		return 21;
	if (ls_ctx_create(&ctx, err, sizeof(err)) ||
	    ls_region_add(ctx, "ram", m.addr, m.len) ||
	    ls_snapshot_create(ctx, &s->base, NULL, &snap) ||
	    ls_snapshot_add_blob(snap, "state", "abc", 3) ||
	    ls_snapshot_begin(snap))
		return 22;
	ls_snapshot_wait(snap);
	return 23; /* never: the sink stalls until the kill */
}

static void kill_case(enum mem_kind kind)
{
	char dir[] = "/tmp/ls-kill-XXXXXX", path[96], tmp[128];
	char err[LS_ERRMSG_MAX];
	struct ls_reader *r;
	struct stat stbuf;
	int p[2], status, ret;
	pid_t pid;
	char c;

	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/snap.ls", dir);
	CHECK(!pipe(p), "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		_exit(kill_child(path, kind, p[1]));
	}
	close(p[1]);
	/* Pages are in the file, the snapshot is not finished: kill it. */
	ret = (int)read(p[0], &c, 1);
	close(p[0]);
	kill(pid, SIGKILL);
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
	CHECK(ret == 1, "the child ended before its snapshot wrote (status 0x%x)",
	      status);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	      "the child was not killed (status 0x%x)", status);
	CHECK(stat(path, &stbuf) && errno == ENOENT,
	      "%s exists after a snapshot killed before its end", path);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)pid);
	CHECK(!stat(tmp, &stbuf) && stbuf.st_size > 0,
	      "no temporary file %s with the pages written so far", tmp);
	/* What is there must not pass for a snapshot. */
	ret = ls_reader_open(tmp, &r, err, sizeof(err));
	if (!ret) {
		ret = ls_reader_verify(r, NULL, NULL);
		snprintf(err, sizeof(err), "%s", ls_reader_error(r));
		ls_reader_close(r);
	}
	CHECK(ret < 0 && err[0], "the killed snapshot's temporary file verifies");
	CHECK(!unlink(tmp) && !rmdir(dir), "cleanup: %s", strerror(errno));
}

static void test_sigkill_mid_snapshot(void **state)
{
	(void)state;
	kill_case(MEM_ANON_THP);
	kill_case(MEM_MEMFD);
	kill_case(MEM_MEMFD_HUGE);
}

/* ---------------- resource hygiene ---------------- */

static long count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	long n = 0;

	CHECK(d, "opendir %s: %s", path, strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - (strcmp(path, "/proc/self/fd") == 0); /* opendir's own */
}

static long rss_kb(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	CHECK(f && fscanf(f, "%ld %ld", &size, &res) == 2, "statm");
	fclose(f);
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* One snapshot of the region; cancel: right after begin. */
static int cycle(struct ls_ctx *ctx, struct test_mem *m, bool cancel,
		 enum ls_strategy strategy)
{
	struct ls_snapshot_opts o = {.strategy = strategy};
	struct mem_sink *s = mem_sink_new();
	struct ls_snapshot *snap;
	int ret;

	CHECK(!ls_snapshot_create(ctx, &s->base, &o, &snap), "create: %s",
	      ls_ctx_error(ctx));
	CHECK(!ls_snapshot_begin(snap), "begin: %s", ls_ctx_error(ctx));
	if (cancel)
		ls_snapshot_cancel(snap);
	ret = ls_snapshot_wait(snap);
	CHECK(ret == 0 || (cancel && ret == -ECANCELED), "wait: %d %s", ret,
	      ls_snapshot_error(snap));
	m->addr[(size_t)rand() % m->len] ^= 1; /* never blocks: released */
	ls_snapshot_destroy(snap);
	CHECK(s->committed != s->aborted, "committed %d aborted %d",
	      s->committed, s->aborted);
	mem_sink_free(s);
	return ret;
}

#if defined(__SANITIZE_THREAD__)
#define CYCLES 100 /* TSan: ~20x slower */
/*
 * TSan's own state grows with every thread ever created (two per
 * snapshot here: ~18 kB each); RSS is asserted in the normal and the ASan
 * build, descriptors and threads in all three.
 */
#define CHECK_RSS 0
#else
#define CYCLES 500
#define CHECK_RSS 1
#endif
#define WARMUP 20
/* RSS may move by allocator caching, never by a leak per snapshot. */
#define RSS_SLACK_KB 2048

static void test_hygiene(void **state)
{
	long fds, threads, rss, d_fds, d_threads, d_rss;
	struct ls_ctx *ctx;
	struct test_mem m;
	int cancelled = 0;

	(void)state;
	mem_map(&m, MEM_ANON_THP, 4 * MB);
	fill_random(m.addr, m.len, m.page_size, 50, 9);
	ctx = ctx_with_ram(&m);
	for (int i = 0; i < WARMUP; i++) {
		cycle(ctx, &m, false, test_strategies[i % NSTRATEGIES]);
		cycle(ctx, &m, true, test_strategies[i % NSTRATEGIES]);
	}
	fds = count_dir("/proc/self/fd");
	threads = threads_settled(-1);
	rss = rss_kb();
	for (int i = 0; i < CYCLES; i++)
		cycle(ctx, &m, false, test_strategies[i % NSTRATEGIES]);
	for (int i = 0; i < CYCLES; i++)
		cancelled += cycle(ctx, &m, true,
				   test_strategies[i % NSTRATEGIES]) != 0;
	d_fds = count_dir("/proc/self/fd") - fds;
	d_threads = threads_settled((int)threads) - threads;
	d_rss = rss_kb() - rss;
	if (getenv("LS_TEST_VERBOSE"))
		fprintf(stderr,
			"hygiene: %d+%d cycles (%d cancelled in time): fds %+ld, threads %+ld, rss %+ld kB\n",
			CYCLES, CYCLES, cancelled, d_fds, d_threads, d_rss);
	CHECK(d_fds == 0, "%ld descriptors more after %d snapshots", d_fds,
	      2 * CYCLES);
	CHECK(d_threads == 0, "%ld threads more after %d snapshots",
	      d_threads, 2 * CYCLES);
	CHECK(!CHECK_RSS || d_rss <= RSS_SLACK_KB, "RSS grew by %ld kB over %d snapshots",
	      d_rss, 2 * CYCLES);
	CHECK(count_wp_pages(m.addr, m.len) == 0, "pages left protected");
	ls_ctx_destroy(ctx);
	mem_unmap(&m);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fork),
		cmocka_unit_test(test_signal_in_fault),
		cmocka_unit_test(test_sigkill_mid_snapshot),
		cmocka_unit_test(test_hygiene),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
