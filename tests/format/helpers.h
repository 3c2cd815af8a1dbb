/* SPDX-License-Identifier: MIT */
/*
 * Test helpers for the format layer: known snapshot content (every page
 * distinct, some pages zero), writing it through any sink from several
 * threads in random order, and checking what a reader gives back.
 */
#ifndef LS_TEST_FORMAT_HELPERS_H
#define LS_TEST_FORMAT_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "livesnap.h"

/* A snapshot to write: regions, content seed, blobs. */
struct tsnap {
	struct ls_layout layout;
	uint64_t seed;
	unsigned nthreads;
	unsigned max_run; /* pages per write_pages call, at most */
	bool dense;	  /* no zero pages */
	unsigned sparse;  /* if set: only every sparse-th page is non-zero */
	unsigned nblobs;
	const char *blob_names[4];
	size_t blob_lens[4];
};

/* 3 regions: 1 MiB of 4 KiB pages, 256 KiB of 4 KiB, 6 MiB of 2 MiB. */
void tsnap_default(struct tsnap *t, uint64_t seed);
/* 2 regions, 80 KiB in all: for tests that read every offset. */
void tsnap_small(struct tsnap *t, uint64_t seed);
/*
 * One region of 512 MiB of 4 KiB pages, one page in 8192 non-zero: a
 * 1 MiB page checksum table, which the reader maps (reader_file.c).
 */
void tsnap_large_sparse(struct tsnap *t, uint64_t seed);
/* Two regions of 2 and 1 pages (one_page: only the 1-page one), a blob. */
void tsnap_tiny(struct tsnap *t, uint64_t seed, bool one_page);

bool tsnap_page_zero(const struct tsnap *t, uint32_t region, uint64_t page);
void tsnap_page(const struct tsnap *t, uint32_t region, uint64_t page,
		void *buf);
void tsnap_blob(const struct tsnap *t, unsigned idx, void *buf);
uint64_t tsnap_nonzero(const struct tsnap *t, uint32_t region);

/*
 * start, write_pages (nthreads threads, shuffled runs), put_blob, and
 * commit when commit is true. Returns the first error (-errno).
 */
int tsnap_write(const struct tsnap *t, struct ls_sink *sink, bool commit);

/* Asserts (cmocka) that a region's memory holds exactly its content. */
void tsnap_check_region(const struct tsnap *t, uint32_t region,
			const void *mem);
/* Asserts that a reader describes t and holds its blobs. */
void tsnap_check_reader(const struct tsnap *t, struct ls_reader *r);

/* A fresh directory under $TMPDIR or /var/tmp, removed with rm -rf. */
char *tdir_create(void);
void tdir_remove(char *dir);
/* Asserts that dir holds no file at all. */
void tdir_assert_empty(const char *dir);
/* "dir/name" in a static buffer ring (4 entries). */
const char *tpath(const char *dir, const char *name);

/* Writes t to a committed file at path (asserts success). */
void tsnap_file(const struct tsnap *t, const char *path, unsigned flags);
/* Writes t as a stream into a regular file at path (asserts success). */
void tsnap_stream_file(const struct tsnap *t, const char *path);

/* A progress callback that records its calls (arg: struct tprog). */
struct tprog {
	uint64_t calls, last_done, total;
};
void tprog_fn(void *arg, uint64_t done, uint64_t total);

/* Fresh anonymous memory for a region (munmap with len). */
void *tmem(size_t len);

void *tslurp(const char *path, size_t *len);
void tspit(const char *path, const void *data, size_t len);

#endif
