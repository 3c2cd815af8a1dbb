/* SPDX-License-Identifier: MIT */
/*
 * Reading a snapshot stream, once, in order. Opening reads the head record
 * (the regions); consuming (verify, or restore into target memory) reads
 * every record up to the trailer and checks each record's checksums, the
 * pages against the regions (in range, none twice) and the trailer's
 * totals and chain against what was read. A stream that ends before its
 * trailer is refused: truncation can never pass.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "reader.h"

#define RD_SCRATCH (1u << 20)

/* Reads len bytes; a short read is truncation inside `what`. */
static int rd_read_exact(struct ls_reader *r, void *buf, size_t len,
			 const char *what)
{
	ssize_t n = ls_read_full(r->fd, buf, len);

	if (n < 0)
		return rd_fail(r, (int)n, "reading the stream at byte %llu: %s",
			       (unsigned long long)r->info.size,
			       strerror((int)-n));
	r->info.size += (uint64_t)n;
	if ((size_t)n < len)
		return rd_fail(r, -EBADMSG,
			       "truncated: the stream ends at "
			       "byte %llu, inside %s",
			       (unsigned long long)r->info.size, what);
	return 0;
}

static int rd_read_rec(struct ls_reader *r, struct lss_rec *rec)
{
	uint64_t at = r->info.size;
	ssize_t n = ls_read_full(r->fd, rec, sizeof(*rec));

	if (n < 0)
		return rd_fail(r, (int)n, "reading the stream at byte %llu: %s",
			       (unsigned long long)at, strerror((int)-n));
	r->info.size += (uint64_t)n;
	if (n == 0)
		return rd_fail(r, -EBADMSG,
			       "truncated: the stream ends after "
			       "%llu bytes without a trailer",
			       (unsigned long long)at);
	if ((size_t)n < sizeof(*rec))
		return rd_fail(r, -EBADMSG,
			       "truncated: the stream ends at "
			       "byte %llu, inside a record header",
			       (unsigned long long)r->info.size);
	if (lss_rec_hdr_csum(rec) != rec->hdr_csum)
		return rd_fail(r, -EBADMSG,
			       "corrupt record header at byte %llu",
			       (unsigned long long)at);
	return 0;
}

/* Counts a record (not the trailer) into the chain. */
static void rd_account(struct ls_reader *r, const struct lss_rec *rec)
{
	r->chain = lss_chain(r->chain, rec);
	r->records++;
}

/*
 * The bitmap of pages received, one bit per page, as a private anonymous
 * mapping that takes memory only where bits get set. A region may be
 * 256 TiB (LSF_MAX_REGION_BYTES), a bitmap of 8 GiB: a stream's head,
 * damaged or not, must not make the reader commit that before a single
 * page arrived (the fuzzer's out-of-memory find).
 */
static uint64_t *rd_bitmap_alloc(uint64_t nbits, size_t *len)
{
	void *m;

	*len = (size_t)((nbits + 63) / 64 * sizeof(uint64_t));
	m = mmap(NULL, *len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return m == MAP_FAILED ? NULL : m;
}

static int rd_head_regions(struct ls_reader *r, const struct lss_head *head,
			   const struct lss_region *rr)
{
	r->regions = calloc(head->nregions + 1, sizeof(*r->regions));
	if (!r->regions)
		return rd_fail(r, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < head->nregions; i++) {
		const struct lss_region *e = &rr[i];
		struct rd_region *reg = &r->regions[i];

		if (!ls_region_ok(e->name, e->len, e->page_size))
			return rd_fail(r, -EBADMSG,
				       "corrupt head record (region %u)", i);
		memcpy(reg->info.name, e->name, LS_NAME_MAX);
		r->nregions = i + 1;
		if (ls_reader_find_region(r, e->name) != (int)i)
			return rd_fail(r, -EBADMSG, "region '%s' appears twice",
				       e->name);
		reg->info.len = e->len;
		reg->info.page_size = e->page_size;
		reg->info.type = e->type;
		reg->npages = e->len / e->page_size;
		reg->seen = rd_bitmap_alloc(reg->npages, &reg->seen_len);
		if (!reg->seen)
			return rd_fail(r, -ENOMEM,
				       "out of memory for region '%s' "
				       "(%llu pages)",
				       e->name,
				       (unsigned long long)reg->npages);
		r->info.pages_total += reg->npages;
	}
	return 0;
}

static int rd_head(struct ls_reader *r, const struct lss_rec *rec,
		   const char *payload)
{
	struct lss_head head;

	memcpy(&head, payload, sizeof(head));
	if (head.version_major != LSF_VERSION_MAJOR)
		return rd_fail(r, -ENOTSUP,
			       "format version %u.%u is not "
			       "supported (this reader knows %u.x)",
			       head.version_major, head.version_minor,
			       LSF_VERSION_MAJOR);
	if (head.incompat_flags & ~LSS_INCOMPAT_KNOWN)
		return rd_fail(r, -ENOTSUP,
			       "needs format features %#x this "
			       "reader does not know",
			       head.incompat_flags);
	if (head.nregions > LSF_MAX_REGIONS ||
	    rec->len !=
		sizeof(head) + head.nregions * sizeof(struct lss_region))
		return rd_fail(r, -EBADMSG,
			       "corrupt head record (%u regions in %llu bytes)",
			       head.nregions, (unsigned long long)rec->len);
	r->info.version_major = head.version_major;
	r->info.version_minor = head.version_minor;
	r->info.host_page_size = head.host_page_size;
	r->info.compat_flags = head.compat_flags;
	r->info.created_ns = head.created_ns;
	return rd_head_regions(
	    r, &head, (const struct lss_region *)(payload + sizeof(head)));
}

int rd_stream_open(struct ls_reader *r)
{
	struct lss_rec rec;
	char *payload;
	int ret;

	r->info.size = LSF_MAGIC_LEN;
	ret = rd_read_rec(r, &rec);
	if (ret)
		return ret;
	if (rec.type != LSS_REC_HEAD)
		return rd_fail(r, -EBADMSG,
			       "the stream does not start with a head record");
	if (rec.len < sizeof(struct lss_head) ||
	    rec.len > sizeof(struct lss_head) +
			  LSF_MAX_REGIONS * sizeof(struct lss_region))
		return rd_fail(r, -EBADMSG, "corrupt head record (%llu bytes)",
			       (unsigned long long)rec.len);
	payload = malloc(rec.len);
	if (!payload)
		return rd_fail(r, -ENOMEM, "out of memory");
	ret = rd_read_exact(r, payload, rec.len, "the head record");
	if (!ret && XXH3_64bits(payload, rec.len) != rec.data_csum)
		ret = rd_fail(r, -EBADMSG,
			      "corrupt head record (checksum mismatch)");
	if (!ret)
		ret = rd_head(r, &rec, payload);
	free(payload);
	if (!ret)
		rd_account(r, &rec);
	return ret;
}

/*
 * Reads len payload bytes into dst, or through scratch when dst is NULL,
 * and checks them against the record's data checksum.
 */
static int rd_payload(struct ls_reader *r, const struct lss_rec *rec, char *dst,
		      char *scratch, const char *what)
{
	uint64_t at = r->info.size - sizeof(*rec);
	XXH3_state_t st;
	int ret;

	XXH3_64bits_reset(&st);
	for (uint64_t done = 0; done < rec->len;) {
		size_t n = rec->len - done;
		char *buf = dst ? dst + done : scratch;

		if (!dst && n > RD_SCRATCH)
			n = RD_SCRATCH;
		ret = rd_read_exact(r, buf, n, what);
		if (ret)
			return ret;
		XXH3_64bits_update(&st, buf, n);
		done += n;
	}
	if (XXH3_64bits_digest(&st) != rec->data_csum)
		return rd_fail(r, -EBADMSG,
			       "corrupt %s at byte %llu (checksum mismatch)",
			       what, (unsigned long long)at);
	return 0;
}

static int rd_pages_rec(struct ls_reader *r, const struct lss_rec *rec,
			void *const *addrs, char *scratch)
{
	struct rd_region *reg;
	uint64_t ps;
	char *dst = NULL;
	int ret;

	if (rec->index >= r->nregions)
		return rd_fail(r, -EBADMSG,
			       "pages record for region %u (%u regions)",
			       rec->index, r->nregions);
	reg = &r->regions[rec->index];
	ps = reg->info.page_size;
	/* count * ps must not wrap: a count of 2^52 pages "of 0 bytes" */
	if (rec->count == 0 || rec->first >= reg->npages ||
	    rec->count > reg->npages - rec->first ||
	    rec->count > UINT64_MAX / ps || rec->len != rec->count * ps)
		return rd_fail(r, -EBADMSG,
			       "region '%s': pages record out of "
			       "range (pages %llu+%llu, %llu bytes)",
			       reg->info.name, (unsigned long long)rec->first,
			       (unsigned long long)rec->count,
			       (unsigned long long)rec->len);
	if (addrs && addrs[rec->index])
		dst = (char *)addrs[rec->index] + rec->first * ps;
	/*
	 * The payload first: the pages are marked only once their bytes
	 * were there, so a record that claims more pages than the stream
	 * holds ends at its end, not after a walk of its count. A page sent
	 * twice is found after its bytes were read: the read fails then.
	 */
	ret = rd_payload(r, rec, dst, scratch, "pages record");
	if (ret)
		return ret;
	for (uint64_t p = rec->first; p < rec->first + rec->count; p++) {
		if (reg->seen[p / 64] & (1ull << (p % 64)))
			return rd_fail(r, -EBADMSG,
				       "region '%s' page %llu sent twice",
				       reg->info.name, (unsigned long long)p);
		reg->seen[p / 64] |= 1ull << (p % 64);
	}
	reg->info.pages_nonzero += rec->count;
	r->info.pages_nonzero += rec->count;
	r->pages += rec->count;
	return 0;
}

static int rd_blob_rec(struct ls_reader *r, const struct lss_rec *rec)
{
	size_t dlen;
	char *buf;
	int ret;

	if (rec->len < LS_NAME_MAX ||
	    rec->len - LS_NAME_MAX > LSF_MAX_BLOB_BYTES)
		return rd_fail(r, -EBADMSG, "corrupt blob record (%llu bytes)",
			       (unsigned long long)rec->len);
	dlen = rec->len - LS_NAME_MAX;
	buf = malloc(rec->len);
	if (!buf)
		return rd_fail(r, -ENOMEM,
			       "out of memory for a blob of %zu bytes", dlen);
	ret = rd_payload(r, rec, buf, NULL, "blob record");
	if (!ret && !ls_name_ok(buf, LS_NAME_MAX))
		ret = rd_fail(r, -EBADMSG, "corrupt blob record (its name)");
	if (!ret) {
		char name[LS_NAME_MAX];

		/* The name stays in front of the data: keep only the data. */
		memcpy(name, buf, LS_NAME_MAX);
		memmove(buf, buf + LS_NAME_MAX, dlen);
		ret = rd_add_blob(r, name, buf, dlen);
	}
	if (ret)
		free(buf);
	return ret;
}

static int rd_trailer(struct ls_reader *r, const struct lss_rec *rec)
{
	uint64_t before = r->info.size - sizeof(*rec);
	struct lss_trailer t;
	int ret;

	if (rec->len != sizeof(t))
		return rd_fail(r, -EBADMSG, "corrupt trailer (%llu bytes)",
			       (unsigned long long)rec->len);
	ret = rd_payload(r, rec, (char *)&t, NULL, "trailer");
	if (ret)
		return ret;
	if (t.records != r->records || t.pages != r->pages ||
	    t.blobs != r->nblobs || t.bytes != before)
		return rd_fail(
		    r, -EBADMSG,
		    "incomplete: read %llu records, "
		    "%llu pages, %u blobs, %llu bytes; the trailer "
		    "says %llu, %llu, %llu, %llu",
		    (unsigned long long)r->records,
		    (unsigned long long)r->pages, r->nblobs,
		    (unsigned long long)before, (unsigned long long)t.records,
		    (unsigned long long)t.pages, (unsigned long long)t.blobs,
		    (unsigned long long)t.bytes);
	if (t.chain != r->chain)
		return rd_fail(r, -EBADMSG,
			       "corrupt: the records are not the "
			       "ones the writer sent (chain mismatch)");
	return 0;
}

/* Reads one record; 1 at the trailer, 0 to go on, or -errno. */
static int rd_next(struct ls_reader *r, void *const *addrs, char *scratch)
{
	struct lss_rec rec;
	int ret = rd_read_rec(r, &rec);

	if (ret)
		return ret;
	switch (rec.type) {
	case LSS_REC_PAGES:
		ret = rd_pages_rec(r, &rec, addrs, scratch);
		break;
	case LSS_REC_BLOB:
		ret = rd_blob_rec(r, &rec);
		break;
	case LSS_REC_TRAILER:
		ret = rd_trailer(r, &rec);
		return ret ? ret : 1;
	case LSS_REC_ABORT:
		return rd_fail(
		    r, -EBADMSG,
		    "incomplete: the writer aborted the snapshot at byte %llu",
		    (unsigned long long)(r->info.size - sizeof(rec)));
	default:
		return rd_fail(
		    r, -EBADMSG, "unexpected record type %u at byte %llu",
		    rec.type, (unsigned long long)(r->info.size - sizeof(rec)));
	}
	if (!ret)
		rd_account(r, &rec);
	return ret;
}

int rd_stream_consume(struct ls_reader *r, void *const *addrs,
		      ls_progress_fn fn, void *arg)
{
	char *scratch;
	int ret;

	if (r->consumed) {
		if (addrs)
			return rd_fail(r, -EALREADY,
				       "the stream was read already");
		return r->result;
	}
	scratch = malloc(RD_SCRATCH);
	if (!scratch)
		return rd_fail(r, -ENOMEM, "out of memory");
	do {
		ret = rd_next(r, addrs, scratch);
		if (fn && ret >= 0)
			fn(arg, r->info.size, 0);
	} while (ret == 0);
	free(scratch);
	r->consumed = true;
	r->result = ret < 0 ? ret : 0;
	r->info.complete = ret == 1;
	r->info.disk_bytes = r->info.size;
	return r->result;
}
