/* SPDX-License-Identifier: MIT */
/*
 * mksnap [--stream] [--small|--tiny|--one-page] [--seed N] PATH|-:
 * writes the tests' known snapshot (tests/format/helpers.c) as a file or
 * a stream, for the CLI tests and the fuzz seeds. "-" writes a stream to
 * stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

int main(int argc, char **argv)
{
	bool stream = false, small = false, tiny = false, one = false;
	uint64_t seed = 1;
	struct tsnap t;
	int i;

	for (i = 1; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--stream"))
			stream = true;
		else if (!strcmp(argv[i], "--small"))
			small = true;
		else if (!strcmp(argv[i], "--tiny"))
			tiny = true;
		else if (!strcmp(argv[i], "--one-page"))
			one = true;
		else if (!strcmp(argv[i], "--seed") && i + 2 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else
			break;
	}
	if (i != argc - 1) {
		fprintf(stderr, "usage: mksnap [--stream] "
				"[--small|--tiny|--one-page] "
				"[--seed N] PATH|-\n");
		return 2;
	}
	if (small)
		tsnap_small(&t, seed);
	else if (tiny || one)
		tsnap_tiny(&t, seed, one);
	else
		tsnap_default(&t, seed);
	if (!strcmp(argv[i], "-")) {
		struct ls_sink *sink;
		char err[LS_ERRMSG_MAX];

		if (ls_sink_stream_create(&sink, STDOUT_FILENO, err,
					  sizeof(err)) ||
		    tsnap_write(&t, sink, true)) {
			fprintf(stderr, "mksnap: %s\n", err);
			return 1;
		}
		ls_sink_destroy(sink);
	} else if (stream) {
		tsnap_stream_file(&t, argv[i]);
	} else {
		tsnap_file(&t, argv[i], 0);
	}
	return 0;
}
