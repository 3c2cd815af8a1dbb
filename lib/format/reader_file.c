/* SPDX-License-Identifier: MIT */
/*
 * Reading a seekable snapshot file. Opening checks the header, every table
 * and its checksum, and every offset and length against the real size of
 * the file before anything is read through it; after that, reads only go
 * where the checked tables point. Page data is checked against its page
 * checksum whenever it is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "reader.h"

#define RD_CHUNK (1u << 20)  /* bytes read and checked at a time */
#define RD_AHEAD (32u << 20) /* sequential passes ask for this much ahead */
#define RD_MAP_MIN (1u << 20) /* checksum tables this large are mapped */

/* off + len within the file (size), else a "truncated" message. */
static int rd_range(struct ls_reader *r, const char *what, uint64_t off,
		    uint64_t len, uint64_t size)
{
	uint64_t end;

	if (__builtin_add_overflow(off, len, &end))
		return rd_fail(r, -EBADMSG,
			       "corrupt: %s at offset %llu has "
			       "impossible length %llu",
			       what, (unsigned long long)off,
			       (unsigned long long)len);
	if (end > size)
		return rd_fail(r, -EBADMSG,
			       "truncated: %s ends at %llu but "
			       "the file has %llu bytes",
			       what, (unsigned long long)end,
			       (unsigned long long)size);
	return 0;
}

/* Reads a table that must lie within the file and match its checksum. */
static void *rd_table(struct ls_reader *r, const char *what, uint64_t off,
		      uint64_t len, uint64_t csum, uint64_t size, int *err)
{
	void *buf;

	*err = rd_range(r, what, off, len, size);
	if (*err)
		return NULL;
	buf = malloc(len ? len : 1);
	if (!buf) {
		*err = rd_fail(r, -ENOMEM, "out of memory for the %s", what);
		return NULL;
	}
	*err = ls_pread_full(r->fd, buf, len, (off_t)off);
	if (*err) {
		*err = rd_fail(r, *err == -EIO ? -EBADMSG : *err,
			       "reading the %s: %s", what,
			       *err == -EIO ? "file shrank while read"
					    : strerror(-*err));
	} else if (XXH3_64bits(buf, len) != csum) {
		*err = rd_fail(r, -EBADMSG, "corrupt %s (checksum mismatch)",
			       what);
	}
	if (*err) {
		free(buf);
		return NULL;
	}
	return buf;
}

/*
 * Maps a large table of the file read-only, checked against its checksum;
 * NULL with *err = 0 where the file cannot be mapped (the caller reads it
 * instead). Why map: a lazy restore opens the file on its way to a
 * running guest, and a 4 GiB region's table is 8 MiB. Reading it means
 * faulting in 8 MiB of fresh anonymous memory and copying into it, 10-50
 * ms on the virtual machines this was measured on; the page cache's
 * pages, mapped with MAP_POPULATE, take 0.2-2 ms. The price: a file
 * truncated while the reader holds it raises SIGBUS on the next look at
 * the table, where a read would have failed; docs/format.md says not to.
 */
static void *rd_map_table(struct ls_reader *r, const char *what, uint64_t off,
			  uint64_t len, uint64_t csum, size_t *map_len,
			  void **map, int *err)
{
	uint64_t base = off & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
	void *m;

	*err = 0;
	*map_len = (size_t)(off - base + len);
	m = mmap(NULL, *map_len, PROT_READ, MAP_SHARED | MAP_POPULATE, r->fd,
		 (off_t)base);
	if (m == MAP_FAILED)
		return NULL;
	if (XXH3_64bits((char *)m + (off - base), len) != csum) {
		munmap(m, *map_len);
		*err = rd_fail(r, -EBADMSG, "corrupt %s (checksum mismatch)",
			       what);
		return NULL;
	}
	*map = m;
	return (char *)m + (off - base);
}

/* A region's page checksum table: mapped when large, else read. */
static int rd_csums(struct ls_reader *r, const char *what,
		    const struct lsf_region *e, struct rd_region *reg,
		    uint64_t size)
{
	uint64_t len = e->npages * 8;
	int ret = rd_range(r, what, e->csums_off, len, size);

	if (ret)
		return ret;
	if (len >= RD_MAP_MIN) {
		reg->csums = rd_map_table(r, what, e->csums_off, len,
					  e->csums_csum, &reg->csums_map_len,
					  &reg->csums_map, &ret);
		if (reg->csums || ret)
			return ret;
	}
	reg->csums = rd_table(r, what, e->csums_off, len, e->csums_csum, size,
			      &ret);
	return ret;
}

static int rd_header(struct ls_reader *r, struct lsf_header *h, uint64_t size)
{
	union {
		struct lsf_header h;
		char page[LSF_HEADER_BYTES];
	} * hp;
	int ret;

	if (size < LSF_HEADER_BYTES)
		return rd_fail(r, -EBADMSG,
			       "truncated: the file has %llu "
			       "bytes, its header alone needs %u",
			       (unsigned long long)size, LSF_HEADER_BYTES);
	hp = malloc(sizeof(*hp));
	if (!hp)
		return rd_fail(r, -ENOMEM, "out of memory");
	ret = ls_pread_full(r->fd, hp, sizeof(*hp), 0);
	if (ret)
		ret = rd_fail(r, ret, "reading the header: %s", strerror(-ret));
	else if (hp->h.version_major != LSF_VERSION_MAJOR)
		ret = rd_fail(r, -ENOTSUP,
			      "format version %u.%u is not "
			      "supported (this reader knows %u.x)",
			      hp->h.version_major, hp->h.version_minor,
			      LSF_VERSION_MAJOR);
	else if (lsf_header_csum(&hp->h) != hp->h.header_csum)
		ret =
		    rd_fail(r, -EBADMSG, "corrupt header (checksum mismatch)");
	else if (hp->h.header_size < sizeof(struct lsf_header) ||
		 hp->h.header_size > LSF_HEADER_BYTES)
		ret = rd_fail(r, -EBADMSG, "corrupt header (size %u)",
			      hp->h.header_size);
	else if (hp->h.incompat_flags & ~LSF_INCOMPAT_KNOWN)
		ret = rd_fail(r, -ENOTSUP,
			      "needs format features %#x this "
			      "reader does not know",
			      hp->h.incompat_flags);
	else if (hp->h.nregions > LSF_MAX_REGIONS ||
		 hp->h.nblobs > LSF_MAX_BLOBS)
		ret = rd_fail(r, -EBADMSG,
			      "corrupt header (%u regions, %u blobs)",
			      hp->h.nregions, hp->h.nblobs);
	*h = hp->h;
	free(hp);
	return ret;
}

/* One region table entry: fields, bounds and its checksum table. */
static int rd_region(struct ls_reader *r, const struct lsf_region *e,
		     struct rd_region *reg, uint64_t size)
{
	char what[LS_NAME_MAX + 48];
	uint64_t align, nonzero = 0;
	int ret;

	if (!ls_name_ok(e->name, LS_NAME_MAX))
		return rd_fail(r, -EBADMSG, "corrupt region table (a name)");
	if (!ls_region_ok(e->name, e->len, e->page_size) ||
	    e->npages != e->len / e->page_size || e->pages_nonzero > e->npages)
		return rd_fail(r, -EBADMSG,
			       "region '%s': corrupt size, page "
			       "size or page count",
			       e->name);
	align = e->page_size > LSF_ALIGN ? e->page_size : LSF_ALIGN;
	if (e->data_off < LSF_HEADER_BYTES || e->data_off % align)
		return rd_fail(r, -EBADMSG,
			       "region '%s': corrupt data offset %llu", e->name,
			       (unsigned long long)e->data_off);
	snprintf(what, sizeof(what), "region '%s' data", e->name);
	ret = rd_range(r, what, e->data_off, e->len, size);
	if (ret)
		return ret;
	snprintf(what, sizeof(what), "region '%s' checksum table", e->name);
	ret = rd_csums(r, what, e, reg, size);
	if (ret)
		return ret;
	for (uint64_t p = 0; p < e->npages; p++)
		nonzero += reg->csums[p] != LSF_CSUM_ZERO;
	if (nonzero != e->pages_nonzero)
		return rd_fail(r, -EBADMSG,
			       "region '%s': %llu non-zero pages "
			       "in its table, %llu in its entry",
			       e->name, (unsigned long long)nonzero,
			       (unsigned long long)e->pages_nonzero);
	memcpy(reg->info.name, e->name, LS_NAME_MAX);
	reg->info.len = e->len;
	reg->info.page_size = e->page_size;
	reg->info.type = e->type;
	reg->info.pages_nonzero = e->pages_nonzero;
	reg->npages = e->npages;
	reg->data_off = e->data_off;
	return 0;
}

static int rd_regions(struct ls_reader *r, const struct lsf_header *h,
		      uint64_t size)
{
	struct lsf_region *rt;
	uint64_t total = 0, nonzero = 0;
	int ret = 0;

	rt = rd_table(r, "region table", h->regions_off,
		      (uint64_t)h->nregions * sizeof(*rt), h->regions_csum,
		      size, &ret);
	if (!rt)
		return ret;
	r->regions = calloc(h->nregions + 1, sizeof(*r->regions));
	if (!r->regions)
		ret = rd_fail(r, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < h->nregions && !ret; i++) {
		ret = rd_region(r, &rt[i], &r->regions[i], size);
		r->nregions = i + 1; /* so close frees the table */
		if (!ret && ls_reader_find_region(r, rt[i].name) != (int)i)
			ret = rd_fail(r, -EBADMSG, "region '%s' appears twice",
				      rt[i].name);
		total += rt[i].npages;
		nonzero += rt[i].pages_nonzero;
	}
	free(rt);
	if (!ret && (total != h->pages_total || nonzero != h->pages_nonzero))
		ret = rd_fail(r, -EBADMSG, "corrupt header (page totals)");
	return ret;
}

static int rd_blobs(struct ls_reader *r, const struct lsf_header *h,
		    uint64_t size)
{
	struct lsf_blob *bt;
	int ret = 0;

	bt = rd_table(r, "blob table", h->blobs_off,
		      (uint64_t)h->nblobs * sizeof(*bt), h->blobs_csum, size,
		      &ret);
	if (!bt)
		return ret;
	for (uint32_t i = 0; i < h->nblobs && !ret; i++) {
		char what[LS_NAME_MAX + 16];
		void *data;

		if (!ls_name_ok(bt[i].name, LS_NAME_MAX) ||
		    bt[i].len > LSF_MAX_BLOB_BYTES) {
			ret = rd_fail(r, -EBADMSG, "corrupt blob table");
			break;
		}
		snprintf(what, sizeof(what), "blob '%s'", bt[i].name);
		data = rd_table(r, what, bt[i].off, bt[i].len, bt[i].csum, size,
				&ret);
		if (data && (ret = rd_add_blob(r, bt[i].name, data, bt[i].len)))
			free(data);
	}
	free(bt);
	return ret;
}

int rd_file_open(struct ls_reader *r, uint64_t size, uint64_t disk_bytes)
{
	struct lsf_header h = {0};
	int ret;

	ret = rd_header(r, &h, size);
	if (!ret)
		ret = rd_regions(r, &h, size);
	if (!ret)
		ret = rd_blobs(r, &h, size);
	if (ret)
		return ret;
	if (h.file_size != size)
		return rd_fail(r, -EBADMSG,
			       "%s: the header says %llu bytes "
			       "but the file has %llu",
			       size < h.file_size ? "truncated" : "corrupt",
			       (unsigned long long)h.file_size,
			       (unsigned long long)size);
	r->info.complete = true;
	r->info.version_major = h.version_major;
	r->info.version_minor = h.version_minor;
	r->info.host_page_size = h.host_page_size;
	r->info.compat_flags = h.compat_flags;
	r->info.created_ns = h.created_ns;
	r->info.pages_total = h.pages_total;
	r->info.pages_nonzero = h.pages_nonzero;
	r->info.delta = h.incompat_flags & LSF_INCOMPAT_DELTA;
	memcpy(r->info.id, h.id, LS_ID_BYTES);
	memcpy(r->info.parent, h.parent, LS_ID_BYTES);
	r->info.size = size;
	r->info.disk_bytes = disk_bytes;
	return 0;
}

/* Checks n non-zero pages just read into buf against their checksums. */
static int rd_check_pages(struct ls_reader *r, const struct rd_region *reg,
			  uint64_t first, const char *buf, uint64_t n)
{
	uint64_t ps = reg->info.page_size;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t want = reg->csums[first + i];

		if (want == LSF_CSUM_ZERO) {
			if (!ls_mem_zero(buf + i * ps, ps))
				return rd_fail(r, -EBADMSG,
					       "region '%s' page "
					       "%llu: a zero page that holds "
					       "data",
					       reg->info.name,
					       (unsigned long long)(first + i));
		} else if (lsf_page_csum(buf + i * ps, ps) != want) {
			return rd_fail(r, -EBADMSG,
				       "region '%s' page %llu: "
				       "checksum mismatch (corrupt data)",
				       reg->info.name,
				       (unsigned long long)(first + i));
		}
	}
	return 0;
}

/* Reads pages [first, first+n) of a region into buf and checks them. */
static int rd_read_checked(struct ls_reader *r, const struct rd_region *reg,
			   uint64_t first, char *buf, uint64_t n)
{
	uint64_t ps = reg->info.page_size;
	int ret;

	ret = ls_pread_full(r->fd, buf, n * ps,
			    (off_t)(reg->data_off + first * ps));
	if (ret)
		return rd_fail(r, ret == -EIO ? -EBADMSG : ret,
			       "region '%s': reading pages %llu-%llu: %s",
			       reg->info.name, (unsigned long long)first,
			       (unsigned long long)(first + n - 1),
			       ret == -EIO ? "the file shrank"
					   : strerror(-ret));
	return rd_check_pages(r, reg, first, buf, n);
}

/* The run of pages from p with the same zeroness, at most max pages. */
static uint64_t rd_run(const struct rd_region *reg, uint64_t p, uint64_t end,
		       uint64_t max, bool *zero)
{
	uint64_t n = 1;

	*zero = reg->csums[p] == LSF_CSUM_ZERO;
	while (n < max && p + n < end &&
	       (reg->csums[p + n] == LSF_CSUM_ZERO) == *zero)
		n++;
	return n;
}

static uint64_t rd_chunk_pages(uint64_t ps)
{
	return ps >= RD_CHUNK ? 1 : RD_CHUNK / ps;
}

int ls_reader_read_pages(struct ls_reader *r, uint32_t region,
			 uint64_t first_page, void *buf, uint64_t npages)
{
	const struct rd_region *reg;
	uint64_t end, ps;
	char *dst = buf;

	if (r->info.stream)
		return rd_fail(r, -ENOTSUP,
			       "a stream cannot be read at random "
			       "(read_pages)");
	if (region >= r->nregions)
		return rd_fail(r, -ENOENT, "no region %u", region);
	reg = &r->regions[region];
	ps = reg->info.page_size;
	if (first_page >= reg->npages || npages > reg->npages - first_page)
		return rd_fail(r, -EINVAL,
			       "region '%s': pages %llu+%llu out "
			       "of range (%llu pages)",
			       reg->info.name, (unsigned long long)first_page,
			       (unsigned long long)npages,
			       (unsigned long long)reg->npages);
	end = first_page + npages;
	for (uint64_t p = first_page; p < end;) {
		bool zero;
		uint64_t n = rd_run(reg, p, end, UINT64_MAX, &zero);
		char *at = dst + (p - first_page) * ps;
		int ret = 0;

		if (zero)
			memset(at, 0, n * ps);
		else
			ret = rd_read_checked(r, reg, p, at, n);
		if (ret)
			return ret;
		p += n;
	}
	return 0;
}

/*
 * A sequential pass over [from, to) of the file: ask the kernel to read
 * ahead of it, so that the disk is busy while a chunk is checked. Plain
 * readahead stays too small for one synchronous reader at a time.
 */
struct rd_ahead {
	uint64_t next, end;
};

static void rd_ahead_init(struct rd_ahead *ra, uint64_t from, uint64_t to)
{
	ra->next = from;
	ra->end = to;
}

static void rd_ahead_at(const struct ls_reader *r, struct rd_ahead *ra,
			uint64_t off)
{
	uint64_t len;

	if (ra->next >= ra->end || off + RD_AHEAD / 2 < ra->next)
		return;
	if (ra->next < off)
		ra->next = off;
	len = ra->end - ra->next < RD_AHEAD ? ra->end - ra->next : RD_AHEAD;
	/* Advice only: a failure just means no read-ahead. */
	posix_fadvise(r->fd, (off_t)ra->next, (off_t)len, POSIX_FADV_WILLNEED);
	ra->next += len;
}

int rd_file_restore(struct ls_reader *r, uint32_t region, void *addr)
{
	const struct rd_region *reg = &r->regions[region];
	uint64_t ps = reg->info.page_size;
	uint64_t max = rd_chunk_pages(ps);
	struct rd_ahead ra;

	rd_ahead_init(&ra, reg->data_off, reg->data_off + reg->info.len);

	/* Zero pages are left alone: the target is fresh, zero memory. */
	for (uint64_t p = 0; p < reg->npages;) {
		bool zero;
		uint64_t n = rd_run(reg, p, reg->npages, max, &zero);
		int ret = 0;

		if (!zero) {
			rd_ahead_at(r, &ra, reg->data_off + p * ps);
			ret = rd_read_checked(r, reg, p, (char *)addr + p * ps,
					      n);
		}
		if (ret)
			return ret;
		p += n;
	}
	return 0;
}

/* True if [off, off+len) of the file holds no data (a hole, or EOF). */
static bool rd_is_hole(const struct ls_reader *r, uint64_t off, uint64_t len)
{
	off_t data = lseek(r->fd, (off_t)off, SEEK_DATA);

	/* ENXIO: no data from off to EOF. Other errors: read and see. */
	if (data < 0)
		return errno == ENXIO;
	return (uint64_t)data >= off + len;
}

/*
 * verify_all: a damaged chunk is checked again page by page and its bad
 * pages counted; the first damage's message is kept for the end.
 */
struct rd_damage {
	uint64_t *bad; /* per region; NULL: stop at the first damage */
	uint64_t total;
	char first[LS_ERRMSG_MAX];
};

static int rd_count_damage(struct ls_reader *r, const struct rd_region *reg,
			   uint64_t first, char *buf, uint64_t n,
			   struct rd_damage *dmg, uint64_t *bad)
{
	if (!dmg->total)
		snprintf(dmg->first, sizeof(dmg->first), "%s", r->error);
	for (uint64_t i = 0; i < n; i++) {
		int ret = rd_read_checked(r, reg, first + i, buf, 1);

		if (ret && ret != -EBADMSG)
			return ret;
		if (ret) {
			(*bad)++;
			dmg->total++;
		}
	}
	return 0;
}

static int rd_verify_region(struct ls_reader *r, const struct rd_region *reg,
			    char *buf, uint64_t *done, uint64_t total,
			    ls_progress_fn fn, void *arg, struct rd_damage *dmg,
			    uint64_t *bad)
{
	uint64_t ps = reg->info.page_size;
	uint64_t per = rd_chunk_pages(ps);
	struct rd_ahead ra;

	rd_ahead_init(&ra, reg->data_off, reg->data_off + reg->info.len);
	for (uint64_t p = 0; p < reg->npages; p += per) {
		uint64_t n = reg->npages - p < per ? reg->npages - p : per;
		uint64_t nonzero = 0;
		int ret;

		for (uint64_t i = 0; i < n; i++)
			nonzero += reg->csums[p + i] != LSF_CSUM_ZERO;
		if (!nonzero && rd_is_hole(r, reg->data_off + p * ps, n * ps))
			continue;
		rd_ahead_at(r, &ra, reg->data_off + p * ps);
		ret = rd_read_checked(r, reg, p, buf, n);
		if (ret == -EBADMSG && bad)
			ret = rd_count_damage(r, reg, p, buf, n, dmg, bad);
		if (ret)
			return ret;
		*done += nonzero * ps;
		if (fn)
			fn(arg, *done, total);
	}
	return 0;
}

int rd_file_verify(struct ls_reader *r, ls_progress_fn fn, void *arg,
		   uint64_t *bad)
{
	uint64_t total = 0, done = 0, bufsz = RD_CHUNK;
	struct rd_damage dmg = {.bad = bad};
	char *buf;
	int ret = 0;

	for (uint32_t i = 0; i < r->nregions; i++) {
		total += r->regions[i].info.pages_nonzero *
			 r->regions[i].info.page_size;
		if (r->regions[i].info.page_size > bufsz)
			bufsz = r->regions[i].info.page_size;
	}
	buf = malloc(bufsz);
	if (!buf)
		return rd_fail(r, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < r->nregions && !ret; i++)
		ret = rd_verify_region(r, &r->regions[i], buf, &done, total, fn,
				       arg, &dmg, bad ? &bad[i] : NULL);
	free(buf);
	if (!ret && fn)
		fn(arg, done, total);
	if (!ret && dmg.total) {
		pthread_mutex_lock(&r->err_lock);
		memcpy(r->error, dmg.first, sizeof(r->error));
		pthread_mutex_unlock(&r->err_lock);
		ret = -EBADMSG;
	}
	return ret;
}
