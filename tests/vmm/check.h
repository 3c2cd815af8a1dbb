/* SPDX-License-Identifier: MIT */
/* CHECK() for the C VM tests: counts failures, keeps going, reports. */
#ifndef LS_TESTS_VMM_CHECK_H
#define LS_TESTS_VMM_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "accel/accel.h"

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

/*
 * The accelerator the test runs on: $LS_ACCEL (the meson test variant:
 * kvm or tcg), auto when unset. Exits 1 on a bad name.
 */
static inline const struct accel_ops *test_accel(void)
{
	const char *name = getenv("LS_ACCEL");
	const struct accel_ops *ops;
	char why[256], err[256];

	if (accel_select(name ? name : "auto", &ops, why, err)) {
		fprintf(stderr, "FAIL: LS_ACCEL: %s\n", err);
		exit(1);
	}
	printf("accelerator: %s\n", ops->name);
	return ops;
}

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
