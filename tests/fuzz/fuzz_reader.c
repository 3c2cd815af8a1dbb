/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target over the snapshot reader: every input is opened as a
 * file (from a memfd, through its /proc path, as the CLI opens a path) and
 * as a stream (from a pipe), and whatever opens is walked the way the CLI
 * and a restore walk it: info, regions and blobs by index and by name,
 * page reads through the reader and through the lazy-restore source, an
 * eager restore into fresh memory, verify.
 *
 * Random bytes almost never carry valid XXH3 checksums, so most inputs
 * would stop at the first table check. Each input therefore also runs a
 * second time with its checksums recomputed (fix_file(), fix_stream()),
 * which takes the mutation past the checksums to the bounds checks behind
 * them.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined (tests/fuzz/
 * meson.build); a crash, a leak or undefined behaviour fails the run.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "format/format.h"
#include "livesnap.h"

#define MAX_PAGE (2u << 20)  /* larger pages are only looked up, not read */
#define MAX_RESTORE (4u << 20) /* restore targets up to this size */
#define PIPE_BYTES (1u << 20)

static void read_some_pages(struct ls_reader *r, uint32_t i,
			    const struct ls_reader_region *reg)
{
	uint64_t npages = reg->page_size ? reg->len / reg->page_size : 0;
	uint64_t pick[3] = {0, npages / 2, npages ? npages - 1 : 0};
	void *buf;

	if (!npages || reg->page_size > MAX_PAGE)
		return;
	buf = malloc(reg->page_size);
	if (!buf)
		return;
	for (int k = 0; k < 3; k++)
		ls_reader_read_pages(r, i, pick[k], buf, 1);
	/* out of range on purpose: must be refused, not read */
	ls_reader_read_pages(r, i, npages, buf, 1);
	ls_reader_read_pages(r, i, UINT64_MAX, buf, 2);
	free(buf);
}

static void via_source(struct ls_reader *r, uint32_t i,
		       const struct ls_reader_region *reg)
{
	struct ls_source *src;
	void *buf;

	if (!reg->page_size || reg->page_size > MAX_PAGE ||
	    ls_reader_source(r, &src))
		return;
	buf = malloc(reg->page_size);
	if (buf && reg->len >= reg->page_size) {
		if (src->ops->is_zero)
			src->ops->is_zero(src, i, 0);
		src->ops->read_pages(src, i, 0, buf, 1);
	}
	free(buf);
	ls_source_destroy(src);
}

static void restore_small(struct ls_reader *r, uint32_t i,
			  const struct ls_reader_region *reg)
{
	void *mem;

	if (!reg->len || reg->len > MAX_RESTORE)
		return;
	mem = calloc(1, reg->len);
	if (!mem)
		return;
	ls_reader_restore_region(r, i, mem, reg->len);
	free(mem);
}

static void walk_blobs(struct ls_reader *r)
{
	uint32_t n = ls_reader_blob_count(r);
	const void *data;
	const char *name;
	size_t len;

	for (uint32_t i = 0; i < n; i++) {
		if (ls_reader_blob(r, i, &name, &data, &len))
			continue;
		ls_reader_find_blob(r, name, &data, &len);
		if (len) /* touch both ends: ASan checks the length */
			(void)(((const volatile char *)data)[0] +
			       ((const volatile char *)data)[len - 1]);
	}
	ls_reader_blob(r, n, &name, &data, &len);
	ls_reader_find_blob(r, "no such blob", &data, &len);
}

/* A stream is consumed once: restore it whole if small, else verify. */
static void walk_stream(struct ls_reader *r)
{
	uint32_t n = ls_reader_region_count(r);
	void *addrs[8] = {0};
	size_t lens[8] = {0};
	struct ls_reader_region reg;
	bool small = n <= 8;

	for (uint32_t i = 0; i < n && small; i++) {
		if (ls_reader_region(r, i, &reg) || reg.len > MAX_RESTORE) {
			small = false;
			break;
		}
		lens[i] = reg.len;
		addrs[i] = reg.len ? calloc(1, reg.len) : NULL;
		if (reg.len && !addrs[i])
			small = false;
	}
	if (small)
		ls_reader_restore_all(r, addrs, lens, n);
	else
		ls_reader_verify(r, NULL, NULL);
	for (uint32_t i = 0; i < 8; i++)
		free(addrs[i]);
	walk_blobs(r);
}

static void walk(struct ls_reader *r)
{
	struct ls_reader_info info;
	struct ls_reader_region reg;
	uint32_t n;

	ls_reader_get_info(r, &info);
	if (ls_reader_is_stream(r)) {
		walk_stream(r);
		return;
	}
	n = ls_reader_region_count(r);
	for (uint32_t i = 0; i < n && i < 16; i++) {
		if (ls_reader_region(r, i, &reg))
			continue;
		ls_reader_find_region(r, reg.name);
		read_some_pages(r, i, &reg);
		via_source(r, i, &reg);
		restore_small(r, i, &reg);
	}
	ls_reader_region(r, n, &reg);
	ls_reader_find_region(r, "no such region");
	walk_blobs(r);
	ls_reader_verify(r, NULL, NULL);
}

/* Opens data as a file (a memfd through its path); walks what opens. */
static void as_file(const uint8_t *data, size_t size)
{
	char path[64], err[LS_ERRMSG_MAX];
	struct ls_reader *r;
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!ls_reader_open(path, &r, err, sizeof(err))) {
		walk(r);
		ls_reader_close(r);
	} else if (!err[0] || strchr(err, '\n')) {
		fprintf(stderr, "bad message: [%s]\n", err);
		abort(); /* every refusal has a one-line message */
	}
	close(fd);
}

/* Opens data as a stream from a pipe (sequential reads, no seeking). */
static void as_pipe(const uint8_t *data, size_t size)
{
	char err[LS_ERRMSG_MAX];
	struct ls_reader *r;
	int p[2];

	if (size > PIPE_BYTES || pipe2(p, O_CLOEXEC))
		return;
	if (fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES) < (int)PIPE_BYTES ||
	    (size && write(p[1], data, size) != (ssize_t)size)) {
		close(p[0]);
		close(p[1]);
		return;
	}
	close(p[1]);
	if (!ls_reader_open_fd(p[0], &r, err, sizeof(err))) {
		walk(r);
		ls_reader_close(r);
	} else if (!err[0] || strchr(err, '\n')) {
		abort();
	}
	close(p[0]);
}

/* ---- checksums recomputed, so mutations reach the bounds checks ---- */

static bool in_file(uint64_t off, uint64_t len, size_t size)
{
	return off <= size && len <= size - off;
}

static void fix_file(uint8_t *d, size_t size)
{
	struct lsf_header *h = (struct lsf_header *)d;

	if (size < LSF_HEADER_BYTES)
		return;
	if (h->nregions <= LSF_MAX_REGIONS &&
	    in_file(h->regions_off, (uint64_t)h->nregions * 128, size)) {
		struct lsf_region *reg = (struct lsf_region *)(d + h->regions_off);

		for (uint32_t i = 0; i < h->nregions; i++) {
			struct lsf_region e;

			memcpy(&e, &reg[i], sizeof(e));
			if (e.npages < size / 8 &&
			    in_file(e.csums_off, e.npages * 8, size))
				e.csums_csum = XXH3_64bits(d + e.csums_off,
							   e.npages * 8);
			memcpy(&reg[i], &e, sizeof(e));
		}
		h->regions_csum = XXH3_64bits(reg, (size_t)h->nregions * 128);
	}
	if (h->nblobs <= LSF_MAX_BLOBS &&
	    in_file(h->blobs_off, (uint64_t)h->nblobs * 96, size)) {
		struct lsf_blob *b = (struct lsf_blob *)(d + h->blobs_off);

		for (uint32_t i = 0; i < h->nblobs; i++) {
			struct lsf_blob e;

			memcpy(&e, &b[i], sizeof(e));
			if (in_file(e.off, e.len, size))
				e.csum = XXH3_64bits(d + e.off, e.len);
			memcpy(&b[i], &e, sizeof(e));
		}
		h->blobs_csum = XXH3_64bits(b, (size_t)h->nblobs * 96);
	}
	h->header_csum = lsf_header_csum(h);
}

static void fix_stream(uint8_t *d, size_t size)
{
	size_t off = LSF_MAGIC_LEN;
	uint64_t chain = 0;

	while (off + sizeof(struct lss_rec) <= size) {
		struct lss_rec rec;
		size_t body = off + sizeof(rec);

		memcpy(&rec, d + off, sizeof(rec));
		if (rec.len <= size - body)
			rec.data_csum = XXH3_64bits(d + body, rec.len);
		if (rec.type == LSS_REC_TRAILER &&
		    rec.len == sizeof(struct lss_trailer) &&
		    rec.len <= size - body) {
			struct lss_trailer t;

			memcpy(&t, d + body, sizeof(t));
			t.chain = chain;
			memcpy(d + body, &t, sizeof(t));
			rec.data_csum = XXH3_64bits(d + body, rec.len);
		}
		lss_rec_seal(&rec);
		memcpy(d + off, &rec, sizeof(rec));
		chain = lss_chain(chain, &rec);
		if (rec.len > size - body)
			break;
		off = body + rec.len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	as_file(data, size);
	as_pipe(data, size);
	if (size < LSF_MAGIC_LEN)
		return 0;
	fixed = malloc(size);
	if (!fixed)
		return 0;
	memcpy(fixed, data, size);
	if (!memcmp(fixed, LSF_MAGIC, LSF_MAGIC_LEN))
		fix_file(fixed, size);
	else if (!memcmp(fixed, LSS_MAGIC, LSF_MAGIC_LEN))
		fix_stream(fixed, size);
	if (memcmp(fixed, data, size)) {
		as_file(fixed, size);
		as_pipe(fixed, size);
	}
	free(fixed);
	return 0;
}
