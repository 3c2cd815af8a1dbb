/* SPDX-License-Identifier: MIT */
/*
 * The 2 MiB hugetlb pool, shared by tests that run at the same time: meson
 * runs suite 'lib' in parallel and several of its tests map hugetlb memory.
 *
 * A hugetlb mmap() reserves all its pages at once or fails with ENOMEM.
 * The pages a new mapping can have are the free ones not already reserved
 * by another mapping (free_hugepages - resv_hugepages: reserved pages stay
 * "free" until first touched). A test that needs more grows the pool by
 * what is missing. Check, grow and mmap happen under one lock: without it
 * two tests that both find the pool short grow it to the same size, and
 * one of them gets ENOMEM.
 *
 * Everything that changes the pool takes the same lock (an flock on
 * HUGETLB_POOL_LOCK): these helpers, scripts/run-tests.sh (which sizes the
 * pool for the whole run first) and tests/vmm/test_mem.py.
 */
#ifndef LS_TEST_HUGETLB_POOL_H
#define LS_TEST_HUGETLB_POOL_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGETLB_POOL_LOCK "/run/livesnap-hugetlb.lock"
#define HUGETLB_POOL_SYSFS "/sys/kernel/mm/hugepages/hugepages-2048kB/"
#define HUGETLB_POOL_PAGE (2ul << 20)

static inline long hugetlb_pool_read(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), HUGETLB_POOL_SYSFS "%s", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* Pages a new mapping can reserve now, or -1. */
static inline long hugetlb_pool_available(void)
{
	long free_now = hugetlb_pool_read("free_hugepages");
	long resv = hugetlb_pool_read("resv_hugepages");

	return free_now < 0 || resv < 0 ? -1 : free_now - resv;
}

static inline void hugetlb_pool_err(char *err, size_t errlen,
				    const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void hugetlb_pool_err(char *err, size_t errlen,
				    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * The process's lock file, opened once: flock belongs to the open file,
 * so a test that failed (longjmp) while holding the lock can take it again
 * instead of waiting for itself.
 */
static inline int *hugetlb_pool_lock_fd(void)
{
	static int fd = -1;

	return &fd;
}

/* Grows the pool until n pages are available; the caller holds the lock. */
static inline int hugetlb_pool_grow(unsigned long n, char *err, size_t errlen)
{
	long avail = hugetlb_pool_available();
	long nr = hugetlb_pool_read("nr_hugepages");
	FILE *f;

	if (avail < 0 || nr < 0) {
		hugetlb_pool_err(err, errlen, "cannot read %s: %s",
				 HUGETLB_POOL_SYSFS, strerror(errno));
		return -1;
	}
	if ((unsigned long)avail >= n)
		return 0;
	f = fopen(HUGETLB_POOL_SYSFS "nr_hugepages", "w");
	if (f) {
		/* sysfs reports a failed write at the flush, in fclose */
		fprintf(f, "%lu\n", (unsigned long)nr + n - (unsigned long)avail);
		if (fclose(f) != 0)
			f = NULL;
	}
	if (!f) {
		hugetlb_pool_err(err, errlen,
				 "cannot grow the hugetlb pool (%s"
				 "nr_hugepages): %s (the tests need root)",
				 HUGETLB_POOL_SYSFS, strerror(errno));
		return -1;
	}
	avail = hugetlb_pool_available();
	if (avail < 0 || (unsigned long)avail < n) {
		hugetlb_pool_err(err, errlen,
				 "the kernel gave %ld of the %lu free 2 MiB "
				 "huge pages needed (memory short or "
				 "fragmented)",
				 avail, n);
		return -1;
	}
	return 0;
}

/*
 * mmap() of len bytes of 2 MiB hugetlb memory (flags and fd as for mmap:
 * MAP_HUGETLB, or a hugetlb memfd), with its pages available first. Returns
 * MAP_FAILED with the reason in err.
 */
static inline void *hugetlb_pool_mmap(void *addr, size_t len, int prot,
				      int flags, int fd, char *err,
				      size_t errlen)
{
	int *lock = hugetlb_pool_lock_fd();
	void *p = MAP_FAILED;

	if (*lock < 0)
		*lock = open(HUGETLB_POOL_LOCK, O_RDWR | O_CREAT | O_CLOEXEC,
			     0600);
	if (*lock < 0 || flock(*lock, LOCK_EX) != 0) {
		hugetlb_pool_err(err, errlen, "lock %s: %s (the tests need root)",
				 HUGETLB_POOL_LOCK, strerror(errno));
		return MAP_FAILED;
	}
	if (hugetlb_pool_grow((len + HUGETLB_POOL_PAGE - 1) / HUGETLB_POOL_PAGE,
			      err, errlen) == 0) {
		p = mmap(addr, len, prot, flags, fd, 0);
		if (p == MAP_FAILED) {
			int e = errno;

			hugetlb_pool_err(err, errlen,
					 "%s (%ld huge pages were available)",
					 strerror(e), hugetlb_pool_available());
		}
	}
	/* The mapping holds its reservation now: others may take the rest. */
	flock(*lock, LOCK_UN);
	return p;
}

#endif
