/* SPDX-License-Identifier: MIT */
/*
 * sweep LIVESNAP SNAPSHOT [--cli-stride N] [--flips N]: damages a small
 * real snapshot file every way it can be truncated and by a sample of bit
 * flips, and checks what `livesnap info` and `livesnap verify` do with it.
 *
 * Every truncation (0 to size-1 bytes) and every flip goes through the
 * reader as the commands use it (open, then verify): nothing may pass
 * verify, every refusal is one line naming the snapshot. The commands
 * themselves (an exec costs ~20 ms here: the binary carries the VMM) run
 * on every Nth truncation and every Nth flip (N = --cli-stride, 1 = all):
 * no signal, exit 1 with one line on stderr, the reader's own message, and
 * info exiting 0 exactly when the reader opens the file. Prints counts;
 * exit 0 when all held.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "livesnap.h"

extern char **environ;

static const char *livesnap;
static char path[64];
static int errfd;
static unsigned failures, cli_runs;

#define FAIL(...)                                                           \
	do {                                                                \
		fprintf(stderr, "sweep: " __VA_ARGS__);                     \
		fputc('\n', stderr);                                        \
		failures++;                                                 \
	} while (0)

static void put_file(const unsigned char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd)) {
		perror("sweep: writing the damaged copy");
		exit(1);
	}
}

/* The reader's verdict: 0 opened (and *verify its verify result). */
static int api(char *msg, int *verify)
{
	struct ls_reader *r;
	int ret;

	msg[0] = '\0';
	ret = ls_reader_open(path, &r, msg, LS_ERRMSG_MAX);
	*verify = ret;
	if (ret)
		return ret;
	*verify = ls_reader_verify(r, NULL, NULL);
	snprintf(msg, LS_ERRMSG_MAX, "%s", ls_reader_error(r));
	ls_reader_close(r);
	return 0;
}

static bool one_line(const char *msg)
{
	size_t n = strlen(msg);

	return n > 12 && !strncmp(msg, "snapshot '", 10) &&
	       !memchr(msg, '\n', n);
}

/* Runs `livesnap CMD path`; returns the exit code, stderr into err. */
static int cli(const char *cmd, char *err, size_t errlen)
{
	char *argv[] = {(char *)livesnap, (char *)cmd, path, NULL};
	posix_spawn_file_actions_t fa;
	ssize_t n;
	pid_t pid;
	int st;

	cli_runs++;
	if (ftruncate(errfd, 0) || lseek(errfd, 0, SEEK_SET))
		exit(1);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, errfd, 2);
	if (posix_spawn(&pid, livesnap, &fa, NULL, argv, environ) ||
	    waitpid(pid, &st, 0) != pid) {
		perror("sweep: spawn");
		exit(1);
	}
	posix_spawn_file_actions_destroy(&fa);
	n = pread(errfd, err, errlen - 1, 0);
	err[n > 0 ? n : 0] = '\0';
	if (WIFSIGNALED(st))
		return -WTERMSIG(st);
	return WEXITSTATUS(st);
}

/* One damaged copy, what: "truncated to 123" or "bit 5 of byte 77". */
static void check(const char *what, bool run_cli)
{
	char msg[LS_ERRMSG_MAX], err[1024], want[LS_ERRMSG_MAX + 32];
	int open_ret, verify_ret, rc;

	open_ret = api(msg, &verify_ret);
	if (!verify_ret)
		FAIL("%s: passes verify", what);
	else if (!one_line(msg))
		FAIL("%s: reader message not one line naming it: '%s'", what,
		     msg);
	if (!run_cli)
		return;
	rc = cli("verify", err, sizeof(err));
	snprintf(want, sizeof(want), "livesnap verify: %s\n", msg);
	if (rc != 1 || strcmp(err, want))
		FAIL("%s: verify exited %d with '%s', want 1 with '%s'", what,
		     rc, err, want);
	rc = cli("info", err, sizeof(err));
	if (open_ret) {
		snprintf(want, sizeof(want), "livesnap info: %s\n", msg);
		if (rc != 1 || strcmp(err, want))
			FAIL("%s: info exited %d with '%s', want 1 with '%s'",
			     what, rc, err, want);
	} else if (rc != 0 || err[0]) {
		FAIL("%s: info exited %d ('%s'), want 0: the file opens", what,
		     rc, err);
	}
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	unsigned stride = 1, flips = 2000, ntrunc = 0;
	unsigned char *good, *bad;
	char what[64], err[1024], dir[] = "/tmp/ls-sweep-XXXXXX";
	uint64_t seed = 0x5eed;
	struct stat st;
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: sweep LIVESNAP SNAPSHOT "
				"[--cli-stride N] [--flips N]\n");
		return 2;
	}
	livesnap = argv[1];
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--cli-stride"))
			stride = (unsigned)strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--flips"))
			flips = (unsigned)strtoul(argv[i + 1], NULL, 0);
	}
	fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) || !mkdtemp(dir)) {
		perror("sweep: the snapshot");
		return 1;
	}
	good = malloc((size_t)st.st_size);
	bad = malloc((size_t)st.st_size);
	if (!good || !bad ||
	    read(fd, good, (size_t)st.st_size) != st.st_size)
		return 1;
	close(fd);
	snprintf(path, sizeof(path), "%s/s.snap", dir);
	errfd = memfd_create("stderr", MFD_CLOEXEC);

	/* the intact file passes, or the sweep proves nothing */
	put_file(good, (size_t)st.st_size);
	if (cli("verify", err, sizeof(err)) || cli("info", err, sizeof(err)))
		FAIL("the intact file fails: %s", err);
	for (off_t len = 0; len < st.st_size; len++, ntrunc++) {
		put_file(good, (size_t)len);
		snprintf(what, sizeof(what), "truncated to %lld",
			 (long long)len);
		check(what, ntrunc % stride == 0 ||
				    len == st.st_size - 1);
	}
	for (unsigned i = 0; i < flips; i++) {
		uint64_t bit = xorshift(&seed) % ((uint64_t)st.st_size * 8);

		memcpy(bad, good, (size_t)st.st_size);
		bad[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		put_file(bad, (size_t)st.st_size);
		snprintf(what, sizeof(what), "bit %u of byte %llu",
			 (unsigned)(bit % 8), (unsigned long long)(bit / 8));
		check(what, i % stride == 0);
	}
	unlink(path);
	rmdir(dir);
	printf("sweep: %lld-byte file: %u truncations and %u bit flips "
	       "refused by the reader, %u runs of the CLI, %u failures\n",
	       (long long)st.st_size, ntrunc, flips, cli_runs, failures);
	return failures ? 1 : 0;
}
