/* SPDX-License-Identifier: MIT */
/*
 * Chains: a full snapshot file and the deltas taken after it, each delta
 * naming its parent by id (header.parent). Opening finds and checks every
 * link; reads then take each page from the newest file that holds it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reader.h"

#define CHAIN_MAX 4096 /* files in one chain */

struct ls_chain {
	unsigned n;
	struct ls_reader **r; /* 0: the full snapshot */
	char **path;
	char error[LS_ERRMSG_MAX];
};

static __attribute__((format(printf, 3, 0))) void
chain_failv(char *buf, size_t len, const char *fmt, va_list ap)
{
	if (buf && len)
		vsnprintf(buf, len, fmt, ap);
}

__attribute__((format(printf, 3, 4))) static int
chain_fail(struct ls_chain *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	chain_failv(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return err;
}

/* "3f2a9c01…": the first 8 bytes of an id in hex, for messages. */
static const char *id_short(const uint8_t id[LS_ID_BYTES], char buf[20])
{
	for (int i = 0; i < 8; i++)
		snprintf(buf + 2 * i, 3, "%02x", id[i]);
	return buf;
}

static bool id_zero(const uint8_t id[LS_ID_BYTES])
{
	for (int i = 0; i < LS_ID_BYTES; i++)
		if (id[i])
			return false;
	return true;
}

void ls_chain_close(struct ls_chain *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n; i++) {
		ls_reader_close(c->r[i]);
		free(c->path[i]);
	}
	free(c->r);
	free(c->path);
	free(c);
}

const char *ls_chain_error(const struct ls_chain *c)
{
	return c ? c->error : "";
}

unsigned ls_chain_length(const struct ls_chain *c)
{
	return c ? c->n : 0;
}

struct ls_reader *ls_chain_reader(const struct ls_chain *c, unsigned i)
{
	return c && i < c->n ? c->r[i] : NULL;
}

const char *ls_chain_path(const struct ls_chain *c, unsigned i)
{
	return c && i < c->n ? c->path[i] : NULL;
}

/* Puts a file in front of the chain (files are found newest first). */
static int chain_push_front(struct ls_chain *c, struct ls_reader *r,
			    const char *path)
{
	struct ls_reader **nr = realloc(c->r, (c->n + 1) * sizeof(*nr));
	char **np;

	if (nr)
		c->r = nr;
	np = nr ? realloc(c->path, (c->n + 1) * sizeof(*np)) : NULL;
	if (np)
		c->path = np;
	if (!nr || !np)
		return chain_fail(c, -ENOMEM, "chain: out of memory");
	memmove(c->r + 1, c->r, c->n * sizeof(*nr));
	memmove(c->path + 1, c->path, c->n * sizeof(*np));
	c->r[0] = r;
	c->path[0] = strdup(path);
	c->n++;
	return c->path[0] ? 0 : chain_fail(c, -ENOMEM, "chain: out of memory");
}

/* Same regions (names, sizes, page sizes, order) as the chain's base. */
static int same_regions(struct ls_chain *c, struct ls_reader *a,
			const char *apath, struct ls_reader *b,
			const char *bpath)
{
	uint32_t n = ls_reader_region_count(a);

	if (n != ls_reader_region_count(b))
		return chain_fail(c, -EBADMSG,
				  "chain: '%s' has %u regions, its parent '%s' %u",
				  apath, n, bpath, ls_reader_region_count(b));
	for (uint32_t i = 0; i < n; i++) {
		struct ls_reader_region x, y;

		ls_reader_region(a, i, &x);
		ls_reader_region(b, i, &y);
		if (strcmp(x.name, y.name) || x.len != y.len ||
		    x.page_size != y.page_size)
			return chain_fail(c, -EBADMSG,
					  "chain: region %u of '%s' ('%s', %llu bytes) is not its parent's ('%s' in '%s', %llu bytes)",
					  i, apath, x.name,
					  (unsigned long long)x.len, y.name,
					  bpath, (unsigned long long)y.len);
	}
	return 0;
}

/* The link from child (a delta) to parent: ids and regions. */
static int check_link(struct ls_chain *c, struct ls_reader *child,
		      const char *cpath, struct ls_reader *parent,
		      const char *ppath)
{
	struct ls_reader_info ci, pi;
	char a[20], b[20];

	ls_reader_get_info(child, &ci);
	ls_reader_get_info(parent, &pi);
	if (!ci.delta)
		return chain_fail(c, -EINVAL,
				  "chain: '%s' is a full snapshot, not a delta of '%s'",
				  cpath, ppath);
	if (id_zero(pi.id) || memcmp(ci.parent, pi.id, LS_ID_BYTES))
		return chain_fail(c, -EINVAL,
				  "chain: '%s' is a delta of snapshot %s, but '%s' is snapshot %s: wrong parent",
				  cpath, id_short(ci.parent, a), ppath,
				  id_short(pi.id, b));
	return same_regions(c, child, cpath, parent, ppath);
}

static int open_one(struct ls_chain *c, const char *path,
		    struct ls_reader **rp)
{
	char err[LS_ERRMSG_MAX];
	int ret = ls_reader_open(path, rp, err, sizeof(err));

	if (ret)
		return chain_fail(c, ret, "chain: %s", err);
	if (ls_reader_is_stream(*rp)) {
		ls_reader_close(*rp);
		*rp = NULL;
		return chain_fail(c, -ENOTSUP,
				  "chain: '%s' is a stream; chains are files",
				  path);
	}
	return 0;
}

/* Does the file at path carry snapshot id `id`? Reads its header only. */
static bool has_id(const char *path, const uint8_t id[LS_ID_BYTES])
{
	union {
		struct lsf_header h;
		char page[LSF_HEADER_BYTES];
	} *hp = malloc(sizeof(*hp));
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	bool yes = false;

	if (fd >= 0 && hp && !ls_pread_full(fd, hp, sizeof(*hp), 0))
		yes = !memcmp(hp->h.magic, LSF_MAGIC, LSF_MAGIC_LEN) &&
		      lsf_header_csum(&hp->h) == hp->h.header_csum &&
		      !memcmp(hp->h.id, id, LS_ID_BYTES);
	if (fd >= 0)
		close(fd);
	free(hp);
	return yes;
}

/* The directory part of path ("." if none). */
static void dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(dir, len, ".");
	else if (slash == path)
		snprintf(dir, len, "/");
	else
		snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

/*
 * The file in dir whose id is `id`, other than a file of the chain (a
 * flattened copy carries its newest delta's id). Full snapshots win over
 * deltas of the same id: they end the search.
 */
static int find_parent(struct ls_chain *c, const char *dir,
		       const uint8_t id[LS_ID_BYTES], char *out, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX];
	bool found = false;

	if (!d)
		return chain_fail(c, -errno, "chain: opendir('%s'): %s", dir,
				  strerror(errno));
	while ((e = readdir(d))) {
		bool ours = false;

		if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp."))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
		    (int)sizeof(path))
			continue;
		for (unsigned i = 0; i < c->n && !ours; i++)
			ours = !strcmp(c->path[i], path);
		if (ours || !has_id(path, id))
			continue;
		snprintf(out, len, "%s", path);
		found = true;
		break;
	}
	closedir(d);
	return found ? 0 : -ENOENT;
}

int ls_chain_open(const char *path, struct ls_chain **cp, char *errbuf,
		  size_t errlen)
{
	struct ls_chain *c = calloc(1, sizeof(*c));
	char dir[PATH_MAX], parent[PATH_MAX], a[20];
	struct ls_reader_info in;
	struct ls_reader *r = NULL;
	int ret;

	*cp = NULL;
	if (!c) {
		snprintf(errbuf, errlen, "chain: out of memory");
		return -ENOMEM;
	}
	dir_of(path, dir, sizeof(dir));
	ret = open_one(c, path, &r);
	if (!ret)
		ret = chain_push_front(c, r, path);
	else
		ls_reader_close(r);
	r = NULL;
	while (!ret) {
		ls_reader_get_info(c->r[0], &in);
		if (!in.delta)
			break;
		if (c->n >= CHAIN_MAX) {
			ret = chain_fail(c, -ELOOP, "chain: more than %d files",
					 CHAIN_MAX);
			break;
		}
		ret = find_parent(c, dir, in.parent, parent, sizeof(parent));
		if (ret == -ENOENT)
			ret = chain_fail(c, -ENOENT,
					 "chain: '%s' is a delta of snapshot %s, and no readable snapshot file in '%s' has that id (missing or damaged parent)",
					 c->path[0], id_short(in.parent, a), dir);
		if (!ret)
			ret = open_one(c, parent, &r);
		if (!ret)
			ret = check_link(c, c->r[0], c->path[0], r, parent);
		if (!ret)
			ret = chain_push_front(c, r, parent);
		else if (r)
			ls_reader_close(r);
		r = NULL;
	}
	if (ret) {
		snprintf(errbuf, errlen, "%s", c->error);
		ls_chain_close(c);
		return ret;
	}
	*cp = c;
	return 0;
}

int ls_chain_open_list(const char *const *paths, unsigned n,
		       struct ls_chain **cp, char *errbuf, size_t errlen)
{
	struct ls_chain *c = calloc(1, sizeof(*c));
	struct ls_reader *r = NULL;
	struct ls_reader_info in;
	int ret = 0;

	*cp = NULL;
	if (!c || !n || n > CHAIN_MAX) {
		snprintf(errbuf, errlen, "chain: %s",
			 c ? "1 to 4096 files" : "out of memory");
		free(c);
		return c ? -EINVAL : -ENOMEM;
	}
	/* Newest first, as ls_chain_open finds them. */
	for (unsigned i = n; i-- > 0 && !ret;) {
		ret = open_one(c, paths[i], &r);
		if (!ret && i + 1 < n)
			ret = check_link(c, c->r[0], c->path[0], r, paths[i]);
		if (!ret)
			ret = chain_push_front(c, r, paths[i]);
		else if (r)
			ls_reader_close(r);
		r = NULL;
	}
	if (!ret) {
		ls_reader_get_info(c->r[0], &in);
		if (in.delta)
			ret = chain_fail(c, -EINVAL,
					 "chain: '%s' is a delta: a chain starts with a full snapshot",
					 c->path[0]);
	}
	if (ret) {
		snprintf(errbuf, errlen, "%s", c->error);
		ls_chain_close(c);
		return ret;
	}
	*cp = c;
	return 0;
}

/* Copies a reader's message into the chain's. */
static int chain_reader_fail(struct ls_chain *c, unsigned i, int ret)
{
	return chain_fail(c, ret, "%s", ls_reader_error(c->r[i]));
}

int ls_chain_verify(struct ls_chain *c, ls_progress_fn fn, void *arg)
{
	for (unsigned i = 0; i < c->n; i++) {
		int ret = ls_reader_verify(c->r[i], fn, arg);

		if (ret)
			return chain_reader_fail(c, i, ret);
	}
	return 0;
}

int ls_chain_restore_region(struct ls_chain *c, uint32_t region, void *addr,
			    size_t len)
{
	int ret = rd_check_target(c->r[0], region, addr, len);

	if (ret)
		return chain_reader_fail(c, 0, ret);
	/* Each file over the one before: a delta's pages, zero ones too. */
	for (unsigned i = 0; i < c->n; i++) {
		ret = rd_file_restore(c->r[i], region, addr);
		if (ret)
			return chain_reader_fail(c, i, ret);
	}
	return 0;
}

/* The newest file holding page p of region (0: the full snapshot). */
static unsigned holder(const struct ls_chain *c, uint32_t region, uint64_t p)
{
	for (unsigned i = c->n; i-- > 1;)
		if (c->r[i]->regions[region].csums[p] != LSF_CSUM_ZERO)
			return i;
	return 0;
}

/* Reads pages through the chain, one run per file. */
static int chain_read(struct ls_chain *c, uint32_t region, uint64_t first,
		      void *buf, uint64_t npages)
{
	uint64_t ps, end = first + npages;
	int ret;

	if (region >= c->r[0]->nregions ||
	    first > c->r[0]->regions[region].npages ||
	    npages > c->r[0]->regions[region].npages - first)
		return chain_fail(c, -EINVAL, "chain: pages out of range");
	ps = c->r[0]->regions[region].info.page_size;
	for (uint64_t p = first; p < end;) {
		unsigned h = holder(c, region, p);
		uint64_t n = 1;

		while (p + n < end && holder(c, region, p + n) == h)
			n++;
		ret = ls_reader_read_pages(c->r[h], region, p,
					   (char *)buf + (p - first) * ps, n);
		if (ret)
			return chain_reader_fail(c, h, ret);
		p += n;
	}
	return 0;
}

struct chain_source {
	struct ls_source base;
	struct ls_chain *c;
};

static int cs_read(struct ls_source *src, uint32_t region, uint64_t first,
		   void *buf, uint64_t npages)
{
	return chain_read(((struct chain_source *)src)->c, region, first, buf,
			  npages);
}

static bool cs_is_zero(struct ls_source *src, uint32_t region, uint64_t page)
{
	struct ls_chain *c = ((struct chain_source *)src)->c;

	return region < c->r[0]->nregions &&
	       page < c->r[0]->regions[region].npages &&
	       holder(c, region, page) == 0 &&
	       c->r[0]->regions[region].csums[page] == LSF_CSUM_ZERO;
}

static void cs_destroy(struct ls_source *src)
{
	free(src);
}

static const struct ls_source_ops chain_source_ops = {
	.read_pages = cs_read,
	.is_zero = cs_is_zero,
	.destroy = cs_destroy,
};

int ls_chain_source(struct ls_chain *c, struct ls_source **srcp)
{
	struct chain_source *s = calloc(1, sizeof(*s));

	*srcp = NULL;
	if (!s)
		return chain_fail(c, -ENOMEM, "chain: out of memory");
	s->base.ops = &chain_source_ops;
	s->c = c;
	*srcp = &s->base;
	return 0;
}

/* ---------------- flatten ---------------- */

#define FLAT_CHUNK (2u << 20)

static int flat_region(struct ls_chain *c, struct ls_sink *sink, uint32_t r,
		       unsigned char *buf)
{
	const struct rd_region *reg = &c->r[0]->regions[r];
	uint64_t ps = reg->info.page_size;
	uint64_t per = ps >= FLAT_CHUNK ? 1 : FLAT_CHUNK / ps;
	int ret;

	for (uint64_t p = 0; p < reg->npages; p += per) {
		uint64_t n = reg->npages - p < per ? reg->npages - p : per;

		ret = chain_read(c, r, p, buf, n);
		if (ret)
			return ret;
		/* Zero pages stay holes: the result is a full snapshot. */
		for (uint64_t i = 0; i < n;) {
			uint64_t run = 0;

			while (i + run < n && !ls_mem_zero(buf + (i + run) * ps, ps))
				run++;
			if (!run) {
				i++;
				continue;
			}
			ret = sink->ops->write_pages(sink, r, p + i,
						     buf + i * ps, run);
			if (ret)
				return chain_fail(c, ret, "chain: writing: %s",
						  sink->error[0] ? sink->error
								 : strerror(-ret));
			i += run;
		}
	}
	return 0;
}

static int flat_all(struct ls_chain *c, struct ls_sink *sink,
		    unsigned char *buf)
{
	struct ls_reader *top = c->r[c->n - 1];
	int ret = 0;

	for (uint32_t r = 0; r < c->r[0]->nregions && !ret; r++)
		ret = flat_region(c, sink, r, buf);
	for (uint32_t i = 0; i < ls_reader_blob_count(top) && !ret; i++) {
		const char *name;
		const void *data;
		size_t len;

		ls_reader_blob(top, i, &name, &data, &len);
		ret = sink->ops->put_blob(sink, name, data, len);
		if (ret)
			ret = chain_fail(c, ret, "chain: blob '%s': %s", name,
					 sink->error[0] ? sink->error
							: strerror(-ret));
	}
	if (!ret) {
		ret = sink->ops->commit(sink);
		if (ret)
			ret = chain_fail(c, ret, "chain: commit: %s",
					 sink->error[0] ? sink->error
							: strerror(-ret));
	}
	return ret;
}

int ls_chain_flatten(struct ls_chain *c, struct ls_sink *sink)
{
	uint32_t n = c->r[0]->nregions;
	struct ls_layout_region *lr = calloc(n ? n : 1, sizeof(*lr));
	struct ls_layout layout = {.nregions = n, .regions = lr};
	struct ls_reader_info top;
	uint64_t maxps = FLAT_CHUNK;
	unsigned char *buf;
	int ret;

	for (uint32_t i = 0; lr && i < n; i++) {
		const struct rd_region *reg = &c->r[0]->regions[i];

		memcpy(lr[i].name, reg->info.name, LS_NAME_MAX);
		lr[i].len = reg->info.len;
		lr[i].page_size = reg->info.page_size;
		lr[i].type = reg->info.type;
		if (reg->info.page_size > maxps)
			maxps = reg->info.page_size;
	}
	buf = malloc(maxps);
	if (!lr || !buf) {
		free(lr);
		free(buf);
		return chain_fail(c, -ENOMEM, "chain: out of memory");
	}
	ls_reader_get_info(c->r[c->n - 1], &top);
	memcpy(layout.id, top.id, LS_ID_BYTES);
	ret = sink->ops->start(sink, &layout);
	if (ret)
		ret = chain_fail(c, ret, "chain: starting the output: %s",
				 sink->error[0] ? sink->error : strerror(-ret));
	else
		ret = flat_all(c, sink, buf);
	if (ret)
		sink->ops->abort(sink);
	free(lr);
	free(buf);
	return ret;
}
