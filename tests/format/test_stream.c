/* SPDX-License-Identifier: MIT */
/*
 * Description: the stream sink and the stream reader. Snapshots written
 * from several threads go through a pipe, a socketpair, a FIFO, stdin and
 * a regular file and are restored byte for byte; a writer that stops
 * early or aborts is reported as such; a reader that goes away gives the
 * writer EPIPE, never a SIGPIPE death.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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

struct wjob {
	const struct tsnap *t;
	const char *fifo; /* open this for writing, or use fd */
	int fd;
	bool commit, abort;
	int ret;
	char error[LS_ERRMSG_MAX];
};

static void *stream_writer(void *arg)
{
	struct wjob *j = arg;
	struct ls_sink *sink;
	int fd = j->fifo ? open(j->fifo, O_WRONLY | O_CLOEXEC) : j->fd;

	j->ret = ls_sink_stream_create(&sink, fd, j->error, sizeof(j->error));
	if (!j->ret) {
		j->ret = tsnap_write(j->t, sink, j->commit);
		snprintf(j->error, sizeof(j->error), "%s", sink->error);
		if (j->abort)
			sink->ops->abort(sink);
		ls_sink_destroy(sink);
	}
	close(fd);
	return NULL;
}

static struct ls_reader *open_fd_ok(int fd)
{
	char err[LS_ERRMSG_MAX];
	struct ls_reader *r;

	if (ls_reader_open_fd(fd, &r, err, sizeof(err)))
		fail_msg("%s", err);
	return r;
}

/* Restores every region from r into fresh memory and checks it. */
static void restore_and_check(const struct tsnap *t, struct ls_reader *r)
{
	void *mem[4];
	size_t lens[4];
	struct ls_reader_info in;

	for (uint32_t i = 0; i < t->layout.nregions; i++) {
		lens[i] = t->layout.regions[i].len;
		mem[i] = tmem(lens[i]);
	}
	if (ls_reader_restore_all(r, mem, lens, t->layout.nregions))
		fail_msg("%s", ls_reader_error(r));
	for (uint32_t i = 0; i < t->layout.nregions; i++) {
		tsnap_check_region(t, i, mem[i]);
		munmap(mem[i], lens[i]);
	}
	tsnap_check_reader(t, r);
	ls_reader_get_info(r, &in);
	assert_true(in.stream);
	assert_true(in.complete);
	assert_int_equal(
	    ls_reader_restore_all(r, mem, lens, t->layout.nregions), -EALREADY);
}

/* The writer in a thread, fds[1]; the reader here, fds[0]. */
static void through_fd_pair(int fds[2], uint64_t seed)
{
	struct ls_reader *r;
	struct tsnap t;
	pthread_t th;
	struct wjob j;

	tsnap_default(&t, seed);
	j = (struct wjob){.t = &t, .fd = fds[1], .commit = true};
	pthread_create(&th, NULL, stream_writer, &j);
	r = open_fd_ok(fds[0]);
	close(fds[0]);
	assert_true(ls_reader_is_stream(r));
	restore_and_check(&t, r);
	pthread_join(th, NULL);
	if (j.ret)
		fail_msg("%s", j.error);
	ls_reader_close(r);
}

static void test_pipe(void **state)
{
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	through_fd_pair(fds, 1);
}

static void test_socketpair(void **state)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	through_fd_pair(fds, 2);
}

/* Non-blocking descriptors on both sides are waited for, not failed. */
static void test_nonblocking_pipe(void **state)
{
	int fds[2];

	assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
	through_fd_pair(fds, 9);
}

static void test_fifo_path(void **state)
{
	const char *fifo = tpath(*state, "fifo");
	struct ls_reader *r;
	struct tsnap t;
	pthread_t th;
	struct wjob j;
	char err[LS_ERRMSG_MAX];

	tsnap_default(&t, 3);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	j = (struct wjob){.t = &t, .fifo = fifo, .commit = true};
	pthread_create(&th, NULL, stream_writer, &j);
	if (ls_reader_open(fifo, &r, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	tsnap_check_reader(&t, r);
	pthread_join(th, NULL);
	assert_int_equal(j.ret, 0);
	ls_reader_close(r);
}

/* A stream saved in a regular file reads as a stream, from "-" too. */
static void test_stream_in_file_and_stdin(void **state)
{
	const char *path = tpath(*state, "stream");
	struct ls_reader *r;
	struct tsnap t;
	int saved, fd;

	tsnap_default(&t, 4);
	tsnap_stream_file(&t, path);
	assert_int_equal(ls_reader_open(path, &r, NULL, 0), 0);
	restore_and_check(&t, r);
	ls_reader_close(r);

	saved = dup(0);
	fd = open(path, O_RDONLY);
	assert_int_equal(dup2(fd, 0), 0);
	close(fd);
	assert_int_equal(ls_reader_open("-", &r, NULL, 0), 0);
	dup2(saved, 0);
	close(saved);
	restore_and_check(&t, r);
	ls_reader_close(r);
}

/* NULL targets skip a region; the stream is still checked whole. */
static void test_restore_some(void **state)
{
	const char *path = tpath(*state, "stream");
	struct ls_reader *r;
	struct tsnap t;
	void *mem[3] = {NULL, NULL, NULL};
	size_t lens[3] = {0, 0, 0};

	tsnap_default(&t, 5);
	tsnap_stream_file(&t, path);
	assert_int_equal(ls_reader_open(path, &r, NULL, 0), 0);
	lens[1] = t.layout.regions[1].len;
	mem[1] = tmem(lens[1]);
	assert_int_equal(ls_reader_restore_all(r, mem, lens, 3), 0);
	tsnap_check_region(&t, 1, mem[1]);
	tsnap_check_reader(&t, r);
	munmap(mem[1], lens[1]);
	ls_reader_close(r);
}

static void test_stream_reader_limits(void **state)
{
	const char *path = tpath(*state, "stream");
	struct ls_source *src;
	struct ls_reader *r;
	struct tsnap t;
	char buf[4096];

	tsnap_small(&t, 6);
	tsnap_stream_file(&t, path);
	assert_int_equal(ls_reader_open(path, &r, NULL, 0), 0);
	assert_int_equal(ls_reader_read_pages(r, 0, 0, buf, 1), -ENOTSUP);
	assert_int_equal(ls_reader_restore_region(r, 0, buf, 4096), -ENOTSUP);
	assert_int_equal(ls_reader_source(r, &src), -ENOTSUP);
	assert_non_null(strstr(ls_reader_error(r), "lazy"));
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	/* Verifying again answers from the first pass. */
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);
}

/* Reads a stream whose writer stopped (or aborted) before its trailer. */
static void cut_short(bool abort, const char *expect)
{
	struct ls_reader *r;
	struct tsnap t;
	pthread_t th;
	struct wjob j;
	int fds[2];

	tsnap_default(&t, 7);
	assert_int_equal(pipe(fds), 0);
	j = (struct wjob){.t = &t, .fd = fds[1], .abort = abort};
	pthread_create(&th, NULL, stream_writer, &j);
	r = open_fd_ok(fds[0]);
	close(fds[0]);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), -EBADMSG);
	if (!strstr(ls_reader_error(r), expect))
		fail_msg("'%s' lacks '%s'", ls_reader_error(r), expect);
	pthread_join(th, NULL);
	assert_int_equal(j.ret, 0);
	ls_reader_close(r);
}

static void test_writer_stops_early(void **state)
{
	cut_short(false, "truncated: the stream ends after");
}

static void test_writer_aborts(void **state)
{
	cut_short(true, "the writer aborted");
}

/* A reader that went away: -EPIPE and a message; SIGPIPE kills no one. */
static void closed_reader(int fds[2])
{
	struct ls_layout_region lr = {"ram", 1 << 20, 4096, LS_MEM_ANON};
	struct ls_layout layout = {1, &lr};
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;
	sigset_t pending;

	assert_true(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	close(fds[0]);
	assert_int_equal(ls_sink_stream_create(&sink, fds[1], err, sizeof(err)),
			 0);
	assert_int_equal(sink->ops->start(sink, &layout), -EPIPE);
	assert_non_null(strstr(sink->error, "Broken pipe"));
	assert_non_null(strstr(sink->error, "the reader went away"));
	/* Later calls keep failing, quietly. */
	assert_int_equal(sink->ops->put_blob(sink, "x", "y", 1), -EPIPE);
	assert_int_equal(sink->ops->commit(sink), -EPIPE);
	sink->ops->abort(sink);
	ls_sink_destroy(sink);
	close(fds[1]);
	sigpending(&pending);
	assert_false(sigismember(&pending, SIGPIPE));
}

static void test_epipe_pipe(void **state)
{
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	closed_reader(fds);
}

static void test_epipe_socket(void **state)
{
	int fds[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	closed_reader(fds);
}

static void test_stream_progress(void **state)
{
	const char *path = tpath(*state, "stream");
	struct tprog p = {0};
	struct ls_reader_info in;
	struct ls_reader *r;
	struct tsnap t;
	struct stat st;

	tsnap_default(&t, 8);
	tsnap_stream_file(&t, path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(ls_reader_open(path, &r, NULL, 0), 0);
	ls_reader_get_info(r, &in);
	assert_false(in.complete);
	assert_int_equal(ls_reader_verify(r, tprog_fn, &p), 0);
	assert_true(p.calls > 1);
	assert_int_equal(p.total, 0);
	ls_reader_get_info(r, &in);
	assert_true(in.complete);
	assert_int_equal(in.size, (uint64_t)st.st_size);
	assert_int_equal(p.last_done, (uint64_t)st.st_size);
	ls_reader_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pipe),
	    cmocka_unit_test(test_socketpair),
	    cmocka_unit_test(test_nonblocking_pipe),
	    cmocka_unit_test_setup_teardown(test_fifo_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_in_file_and_stdin,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore_some, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_reader_limits, setup,
					    teardown),
	    cmocka_unit_test(test_writer_stops_early),
	    cmocka_unit_test(test_writer_aborts),
	    cmocka_unit_test(test_epipe_pipe),
	    cmocka_unit_test(test_epipe_socket),
	    cmocka_unit_test_setup_teardown(test_stream_progress, setup,
					    teardown),
	};

	return cmocka_run_group_tests_name("format-stream", tests, NULL, NULL);
}
