/* SPDX-License-Identifier: MIT */
/*
 * The reader's state, shared by reader.c (opening, lookups, the lazy
 * restore source), reader_file.c (seekable files) and reader_stream.c
 * (sequential streams).
 */
#ifndef LS_FORMAT_READER_H
#define LS_FORMAT_READER_H

#include <pthread.h>
#include <stdbool.h>

#include "format.h"

struct rd_region {
	struct ls_reader_region info;
	uint64_t npages;
	uint64_t data_off; /* file: the data section */
	uint64_t *csums;   /* file: npages page checksums */
	void *csums_map;   /* file: the mapping csums lies in, or NULL */
	size_t csums_map_len;
	uint64_t *seen;	   /* stream: bitmap of pages received (mapped) */
	size_t seen_len;
};

struct rd_blob {
	char name[LS_NAME_MAX];
	void *data;
	size_t len;
};

struct ls_reader {
	int fd;
	char name[128]; /* for messages: the path, "<stdin>" or "fd N" */
	struct ls_reader_info info;
	uint32_t nregions;
	struct rd_region *regions;
	uint32_t nblobs;
	struct rd_blob *blobs;

	/* stream readers: sequential state */
	uint64_t chain;	  /* over the records read so far */
	uint64_t records; /* read so far, the head included */
	uint64_t pages;	  /* in PAGES records so far */
	bool consumed;	  /* up to the trailer, or failed */
	int result;	  /* of the consumption, once consumed */

	pthread_mutex_t err_lock; /* read_pages runs in several threads */
	char error[LS_ERRMSG_MAX];
};

/* Sets r->error to "snapshot 'NAME': <fmt>" and returns err. */
int rd_fail(struct ls_reader *r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int rd_add_blob(struct ls_reader *r, const char *name, void *data, size_t len);
/* A restore target: an existing region, its size, page aligned. */
int rd_check_target(struct ls_reader *r, uint32_t region, void *addr,
		    size_t len);

/* reader_file.c */
int rd_file_open(struct ls_reader *r, uint64_t size, uint64_t disk_bytes);
/* bad: NULL, or a counter per region (verify_all: go on past damage) */
int rd_file_verify(struct ls_reader *r, ls_progress_fn fn, void *arg,
		   uint64_t *bad);
int rd_file_restore(struct ls_reader *r, uint32_t region, void *addr);

/* reader_stream.c; the magic has been read */
int rd_stream_open(struct ls_reader *r);
int rd_stream_consume(struct ls_reader *r, void *const *addrs,
		      ls_progress_fn fn, void *arg);

#endif /* LS_FORMAT_READER_H */
