/* SPDX-License-Identifier: MIT */
/*
 * The on-disk snapshot file and the sequential snapshot stream: layouts,
 * constants and the helpers shared by the writers (sink_file.c,
 * sink_stream.c) and the reader (reader*.c). docs/format.md is the spec;
 * keep the two in step.
 *
 * Every integer is little-endian. Checksums are XXH3-64 (seed 0 unless
 * said otherwise).
 */
#ifndef LS_FORMAT_H
#define LS_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "livesnap.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the snapshot format is little-endian; add byte swapping first"
#endif

#define LSF_VERSION_MAJOR 1
#define LSF_VERSION_MINOR 1 /* 1.1: snapshot ids, deltas */

#define LSF_MAGIC     "LSNPFILE" /* 8 bytes, no NUL */
#define LSS_MAGIC     "LSNPSTRM"
#define LSF_MAGIC_LEN 8

#define LSF_HEADER_BYTES     4096u /* the header page; all of it is summed */
#define LSF_ALIGN	     4096u /* minimum alignment of a data section */
#define LSF_MAX_REGIONS	     1024u
#define LSF_MAX_BLOBS	     LS_MAX_BLOBS
#define LSF_MAX_BLOB_BYTES   LS_MAX_BLOB_BYTES
#define LSF_MAX_REGION_BYTES (1ull << 48)
#define LSF_MIN_PAGE	     4096u
#define LSF_MAX_PAGE	     (1u << 30)

/* header.compat_flags: informational, readers ignore unknown bits */
#define LSF_COMPAT_DIRECT 1u /* data written with O_DIRECT */
/* header.incompat_flags: a reader refuses any bit it does not know */
#define LSF_INCOMPAT_DELTA 1u /* a delta: absent pages are its parent's */
#define LSF_INCOMPAT_KNOWN LSF_INCOMPAT_DELTA
#define LSS_INCOMPAT_KNOWN 0u /* streams hold full snapshots only */

/* 0 in a page checksum table means "zero page, a hole" */
#define LSF_CSUM_ZERO 0ull

/*
 * The file header at offset 0. The checksum covers the whole header page
 * (LSF_HEADER_BYTES) with header_csum read as 0, so no byte of page 0 can
 * change unnoticed. It is written last of all, by commit.
 */
struct lsf_header {
	char magic[LSF_MAGIC_LEN];
	uint16_t version_major;
	uint16_t version_minor;
	uint32_t header_size; /* sizeof(struct lsf_header) of the writer */
	uint64_t header_csum;
	uint32_t incompat_flags;
	uint32_t compat_flags;
	uint64_t created_ns; /* CLOCK_REALTIME when the snapshot started */
	uint64_t file_size;  /* the whole file, as committed */
	uint32_t host_page_size;
	uint32_t nregions;
	uint32_t nblobs;
	uint32_t reserved0;
	uint64_t regions_off; /* nregions struct lsf_region */
	uint64_t regions_csum;
	uint64_t blobs_off; /* nblobs struct lsf_blob */
	uint64_t blobs_csum;
	uint64_t pages_total;
	uint64_t pages_nonzero; /* a delta: the pages it holds */
	uint8_t id[LS_ID_BYTES];     /* 1.1: the snapshot's id (0: none) */
	uint8_t parent[LS_ID_BYTES]; /* 1.1, delta: the parent's id */
	uint64_t reserved[4];
};

/* One memory region: its data section and its page checksum table. */
struct lsf_region {
	char name[LS_NAME_MAX]; /* NUL-terminated */
	uint64_t len;
	uint32_t page_size;
	uint32_t type;	   /* enum ls_mem_type */
	uint64_t data_off; /* aligned to max(page_size, LSF_ALIGN) */
	uint64_t npages;   /* len / page_size */
	uint64_t pages_nonzero;
	uint64_t csums_off;  /* npages uint64 page checksums */
	uint64_t csums_csum; /* checksum of that table */
	uint64_t reserved;
};

struct lsf_blob {
	char name[LS_NAME_MAX];
	uint64_t off;
	uint64_t len;
	uint64_t csum;
	uint64_t reserved;
};

_Static_assert(sizeof(struct lsf_header) <= LSF_HEADER_BYTES, "header");
_Static_assert(sizeof(struct lsf_header) == 176, "header layout");
_Static_assert(sizeof(struct lsf_region) == 128, "region layout");
_Static_assert(sizeof(struct lsf_blob) == 96, "blob layout");

/*
 * The stream: LSS_MAGIC, then records, each a struct lss_rec followed by
 * len payload bytes. hdr_csum covers the first 40 bytes of the record
 * header (so a damaged length is caught before it is used), data_csum the
 * payload. The chain is XXH3-64 of each record's hdr_csum seeded with the
 * chain so far (0 at the start): the trailer carries the chain over every
 * record before it, so a lost, repeated or reordered record is caught.
 */
enum lss_rec_type {
	LSS_REC_HEAD = 1,    /* struct lss_head + nregions struct lss_region */
	LSS_REC_PAGES = 2,   /* index = region, first, count; count pages */
	LSS_REC_BLOB = 3,    /* name[LS_NAME_MAX] then the blob's bytes */
	LSS_REC_TRAILER = 4, /* struct lss_trailer */
	LSS_REC_ABORT = 5,   /* the writer gave up; no payload */
};

struct lss_rec {
	uint32_t type;
	uint32_t index;
	uint64_t len; /* payload bytes that follow */
	uint64_t first;
	uint64_t count;
	uint64_t data_csum;
	uint64_t hdr_csum; /* of the 40 bytes above */
};

struct lss_head {
	uint16_t version_major;
	uint16_t version_minor;
	uint32_t incompat_flags;
	uint32_t compat_flags;
	uint32_t host_page_size;
	uint64_t created_ns;
	uint32_t nregions;
	uint32_t reserved0;
	uint64_t reserved[4];
};

struct lss_region {
	char name[LS_NAME_MAX];
	uint64_t len;
	uint32_t page_size;
	uint32_t type;
};

struct lss_trailer {
	uint64_t records; /* before the trailer, the head included */
	uint64_t pages;	  /* in PAGES records */
	uint64_t blobs;
	uint64_t bytes; /* from the magic to the trailer's record header */
	uint64_t chain; /* over every record before the trailer */
	uint64_t reserved[3];
};

_Static_assert(sizeof(struct lss_rec) == 48, "record layout");
_Static_assert(sizeof(struct lss_head) == 64, "head layout");
_Static_assert(sizeof(struct lss_region) == 80, "stream region layout");
_Static_assert(sizeof(struct lss_trailer) == 64, "trailer layout");

/* ---- helpers shared by the writers and the reader (format.c) ---- */

/* The checksum stored for a non-zero page: never LSF_CSUM_ZERO. */
static inline uint64_t lsf_page_csum(const void *page, size_t len)
{
	uint64_t h = XXH3_64bits(page, len);

	return h == LSF_CSUM_ZERO ? 1 : h;
}

uint64_t lsf_header_csum(const struct lsf_header *hdr_page);
void lss_rec_seal(struct lss_rec *rec);
uint64_t lss_rec_hdr_csum(const struct lss_rec *rec);
uint64_t lss_chain(uint64_t chain, const struct lss_rec *rec);

/* True if name is a NUL-terminated, non-empty string within LS_NAME_MAX. */
bool ls_name_ok(const char *name, size_t max);
bool ls_page_size_ok(uint64_t page_size);
/* A region the format can hold: name, page size, a whole number of pages. */
bool ls_region_ok(const char *name, uint64_t len, uint64_t page_size);
bool ls_mem_zero(const void *p, size_t len);
uint64_t ls_align_up(uint64_t v, uint64_t align);
uint64_t ls_now_realtime_ns(void);

/* Full-length I/O loops: 0, or -errno (-EIO for an unexpected EOF/short). */
int ls_pwrite_full(int fd, const void *buf, size_t len, off_t off);
int ls_pread_full(int fd, void *buf, size_t len, off_t off);
/* Waits for events (POLLIN/POLLOUT) on a non-blocking fd. */
int ls_wait_fd(int fd, short events);
/*
 * Reads up to len; returns bytes read (short only at EOF) or -errno.
 * A non-blocking fd is waited for.
 */
ssize_t ls_read_full(int fd, void *buf, size_t len);

#endif /* LS_FORMAT_H */
