/* SPDX-License-Identifier: MIT */
/*
 * Description: the file sink refuses, when it is created, a target that
 * commit could never rename the snapshot to or that cannot be written: a
 * directory (or a symlink to one), a missing directory, a read-only file
 * system. The message names the path and the reason, nothing is left
 * behind. An existing regular file is a fine target (replaced at commit).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
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

static void refused(const char *path, int want, const char *why)
{
	char err[LS_ERRMSG_MAX] = "";
	struct ls_sink *sink = (struct ls_sink *)1;

	assert_int_equal(ls_sink_file_create(&sink, path, 0, err, sizeof(err)),
			 want);
	assert_null(sink);
	if (!strstr(err, path) || !strstr(err, why))
		fail_msg("message '%s' does not name '%s' and '%s'", err, path,
			 why);
}

static void test_directory(void **state)
{
	const char *dir = *state;
	const char *sub = tpath(dir, "sub");
	const char *link = tpath(dir, "link");

	assert_int_equal(mkdir(sub, 0755), 0);
	refused(sub, -EISDIR, "a directory");
	assert_int_equal(symlink(sub, link), 0);
	refused(link, -EISDIR, "a directory");
	/* nothing created next to them */
	assert_int_equal(unlink(link), 0);
	assert_int_equal(rmdir(sub), 0);
	tdir_assert_empty(dir);
}

static void test_missing_directory(void **state)
{
	refused(tpath(*state, "nodir/t.snap"), -ENOENT,
		"No such file or directory");
	tdir_assert_empty(*state);
}

static void test_read_only(void **state)
{
	const char *dir = *state;

	if (mount("none", dir, "tmpfs", MS_RDONLY, "size=1m") < 0)
		fail_msg("mount -t tmpfs -o ro on %s: %s (the format tests "
			 "need root)",
			 dir, strerror(errno));
	refused(tpath(dir, "t.snap"), -EROFS, "Read-only file system");
	assert_int_equal(umount2(dir, MNT_DETACH), 0);
	tdir_assert_empty(dir);
}

static void test_existing_file_replaced(void **state)
{
	const char *path = tpath(*state, "t.snap");
	struct ls_sink *sink;
	struct ls_reader *r;
	struct tsnap t;
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	fputs("an older file\n", f);
	assert_int_equal(fclose(f), 0);
	tsnap_small(&t, 3);
	assert_int_equal(ls_sink_file_create(&sink, path, 0, NULL, 0), 0);
	assert_int_equal(tsnap_write(&t, sink, true), 0);
	ls_sink_destroy(sink);
	assert_int_equal(ls_reader_open(path, &r, NULL, 0), 0);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	tsnap_check_reader(&t, r);
	ls_reader_close(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_directory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_directory, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_existing_file_replaced,
					    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
