/* SPDX-License-Identifier: MIT */
/* CHECK() for the C VM tests: counts failures, keeps going, reports. */
#ifndef LS_TESTS_VMM_CHECK_H
#define LS_TESTS_VMM_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                       \
			fprintf(stderr, "\n");                              \
			check_failures++;                                   \
		}                                                           \
	} while (0)

/* The exit status: 0 if every CHECK held. */
static inline int check_report(const char *what)
{
	if (check_failures) {
		fprintf(stderr, "%d check(s) failed\n", check_failures);
		return 1;
	}
	printf("PASS: %s\n", what);
	return 0;
}

#endif
