/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the VMM files: the error contract (return -errno,
 * leave a one-line message in a caller's buffer) and a monotonic clock.
 */
#ifndef LS_VMM_UTIL_H
#define LS_VMM_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define VMM_ERR_MAX 256

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Writes "<fmt>: <strerror(e)>" into err (VMM_ERR_MAX bytes) and returns -e.
 * e is a positive errno value.
 */
static inline int __attribute__((format(printf, 3, 4)))
vmm_fail(char *err, int e, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(err, VMM_ERR_MAX, fmt, ap);
	va_end(ap);
	if (n >= 0 && n < VMM_ERR_MAX)
		snprintf(err + n, VMM_ERR_MAX - n, ": %s", strerror(e));
	return -e;
}

/* Like vmm_fail() but the message is complete: no strerror appended. */
static inline int __attribute__((format(printf, 3, 4)))
vmm_failx(char *err, int e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, VMM_ERR_MAX, fmt, ap);
	va_end(ap);
	return -e;
}

static inline uint64_t vmm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif /* LS_VMM_UTIL_H */
