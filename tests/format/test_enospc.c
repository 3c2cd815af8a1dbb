/* SPDX-License-Identifier: MIT */
/*
 * Description: a full file system. On a 1 MiB tmpfs (the tests run as
 * root) the file sink must fail with -ENOSPC and a message naming the file
 * and the cause, whether the data or the tables at commit do not fit;
 * what it leaves before abort must not pass as a snapshot, and abort
 * must leave nothing. The stream sink reports ENOSPC the same way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "helpers.h"

static int setup(void **state)
{
	char *dir = tdir_create();

	if (mount("none", dir, "tmpfs", 0, "size=1m,mode=0700") < 0)
		fail_msg("mount -t tmpfs -o size=1m on %s: %s (the format "
			 "tests need root)",
			 dir, strerror(errno));
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	umount2(*state, MNT_DETACH);
	tdir_remove(*state);
	return 0;
}

/* path does not open, or does not verify. */
static void assert_not_snapshot(const char *path)
{
	struct ls_reader *r;
	char err[LS_ERRMSG_MAX];

	if (ls_reader_open(path, &r, err, sizeof(err)) < 0) {
		assert_non_null(strstr(err, "snapshot '"));
		return;
	}
	assert_int_equal(ls_reader_verify(r, NULL, NULL), -EBADMSG);
	ls_reader_close(r);
}

/* The data does not fit: write_pages fails. */
static void test_data_enospc(void **state)
{
	const char *path = tpath(*state, "snap");
	char tmp[4200];
	struct ls_sink *sink;
	struct tsnap t;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	tsnap_default(&t, 1); /* 7 MiB of data */
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(tsnap_write(&t, sink, true), -ENOSPC);
	if (!strstr(sink->error, "No space left on device") ||
	    !strstr(sink->error, path))
		fail_msg("unclear message: '%s'", sink->error);
	/* As after a crash: the temporary file is no snapshot. */
	assert_int_equal(access(path, F_OK), -1);
	assert_not_snapshot(tmp);
	sink->ops->abort(sink);
	ls_sink_destroy(sink);
	tdir_assert_empty(*state);
}

/* The data fits; a blob does not: commit fails, nothing is renamed. */
static void test_commit_enospc(void **state)
{
	const char *path = tpath(*state, "snap");
	struct ls_layout_region lr = {"ram", 512 << 10, 4096, LS_MEM_ANON};
	struct ls_layout layout = {1, &lr};
	struct ls_sink *sink;
	char *data = calloc(1, 900 << 10);

	memset(data, 0x33, 512 << 10);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(sink->ops->start(sink, &layout), 0);
	assert_int_equal(sink->ops->write_pages(sink, 0, 0, data, 128), 0);
	assert_int_equal(sink->ops->put_blob(sink, "big", data, 900 << 10), 0);
	assert_int_equal(sink->ops->commit(sink), -ENOSPC);
	if (!strstr(sink->error, "No space left on device") ||
	    !strstr(sink->error, "writing the tables"))
		fail_msg("unclear message: '%s'", sink->error);
	assert_int_equal(access(path, F_OK), -1);
	sink->ops->abort(sink);
	ls_sink_destroy(sink);
	tdir_assert_empty(*state);
	free(data);
}

static void test_stream_enospc(void **state)
{
	const char *path = tpath(*state, "stream");
	struct ls_sink *sink;
	struct tsnap t;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	tsnap_default(&t, 2);
	assert_int_equal(ls_sink_stream_create(&sink, fd, NULL, 0), 0);
	assert_int_equal(tsnap_write(&t, sink, true), -ENOSPC);
	assert_non_null(strstr(sink->error, "No space left on device"));
	sink->ops->abort(sink);
	ls_sink_destroy(sink);
	close(fd);
	assert_not_snapshot(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_data_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_enospc, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_stream_enospc, setup,
					    teardown),
	};

	return cmocka_run_group_tests_name("format-enospc", tests, NULL, NULL);
}
