/* SPDX-License-Identifier: MIT */
/*
 * The file sink: writes a seekable snapshot file (docs/format.md).
 *
 * start() lays the data sections out (one per region, aligned so restore
 * could mmap them) and ftruncate()s the file to their end, so every page
 * the engine never passes (zero pages) stays a hole. write_pages() hashes
 * and pwrite()s each batch in the caller's thread (callers write distinct
 * pages, so each thread only touches its own checksum table entries) and
 * starts the writeback of large batches at once, so the disk streams
 * while the writer prepares the next batch. commit() appends the checksum
 * tables, blobs and the region and blob tables, syncs, writes the header
 * last, syncs again, renames the temporary file to its name and syncs the
 * directory. Nothing ever carries the final name before it is complete.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"

/*
 * A large batch (the writer thread's): its writeback is started at once,
 * or it goes O_DIRECT. Smaller ones (single pages from fault threads,
 * whose writers wait for them) always go through the page cache.
 */
#define FSINK_BIG_BYTES (256u << 10)

struct fsink_region {
	struct lsf_region d;
	uint64_t *csums; /* npages; LSF_CSUM_ZERO until written */
	_Atomic uint64_t nonzero;
};

struct fsink_blob {
	char name[LS_NAME_MAX];
	void *data;
	size_t len;
};

struct fsink {
	struct ls_sink base; /* first: the engine sees a struct ls_sink */
	char path[PATH_MAX];
	char tmp[PATH_MAX];
	int fd;	       /* buffered: metadata, and data unless O_DIRECT */
	int direct_fd; /* O_DIRECT data writes, or -1 */
	unsigned flags;
	bool started, committed, removed;
	uint64_t created_ns;
	bool delta;
	uint8_t id[LS_ID_BYTES], parent[LS_ID_BYTES];
	uint64_t data_end;
	uint32_t nregions;
	struct fsink_region *regions;
	pthread_mutex_t lock; /* blobs and the first error */
	uint32_t nblobs;
	struct fsink_blob blobs[LSF_MAX_BLOBS];
	_Atomic int err; /* first error (-errno), 0 while healthy */
};

static struct fsink *to_fsink(struct ls_sink *sink)
{
	return (struct fsink *)sink;
}

/* Records the first failure only: later ones are usually its echoes. */
__attribute__((format(printf, 3, 4))) static int
fsink_fail(struct fsink *s, int err, const char *fmt, ...)
{
	char msg[LS_ERRMSG_MAX];
	int expected = 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->lock);
	if (atomic_compare_exchange_strong(&s->err, &expected, err))
		ls_sink_set_error(&s->base, "%s", msg);
	pthread_mutex_unlock(&s->lock);
	return atomic_load(&s->err);
}

static int fsink_layout(struct fsink *s, const struct ls_layout *layout)
{
	uint64_t off = LSF_HEADER_BYTES;

	if (layout->nregions > LSF_MAX_REGIONS)
		return fsink_fail(s, -E2BIG,
				  "snapshot file '%s': %u regions (at most %u)",
				  s->path, layout->nregions, LSF_MAX_REGIONS);
	s->regions = calloc(layout->nregions ? layout->nregions : 1,
			    sizeof(*s->regions));
	if (!s->regions)
		return fsink_fail(s, -ENOMEM,
				  "snapshot file '%s': out of memory", s->path);
	s->nregions = layout->nregions;
	for (uint32_t i = 0; i < layout->nregions; i++) {
		const struct ls_layout_region *lr = &layout->regions[i];
		struct fsink_region *r = &s->regions[i];
		uint64_t align;

		if (!ls_region_ok(lr->name, lr->len, lr->page_size))
			return fsink_fail(s, -EINVAL,
					  "snapshot file '%s': "
					  "region %u: bad name, size or page "
					  "size",
					  s->path, i);
		align = lr->page_size > LSF_ALIGN ? lr->page_size : LSF_ALIGN;
		memcpy(r->d.name, lr->name, LS_NAME_MAX);
		r->d.len = lr->len;
		r->d.page_size = lr->page_size;
		r->d.type = lr->type;
		r->d.npages = lr->len / lr->page_size;
		r->d.data_off = ls_align_up(off, align);
		off = r->d.data_off + lr->len;
		r->csums = calloc(r->d.npages, sizeof(uint64_t));
		if (!r->csums)
			return fsink_fail(s, -ENOMEM,
					  "snapshot file '%s': "
					  "out of memory for the checksums of "
					  "region '%s'",
					  s->path, r->d.name);
	}
	s->data_end = off;
	return 0;
}

static int fsink_start(struct ls_sink *sink, const struct ls_layout *layout)
{
	struct fsink *s = to_fsink(sink);
	int ret;

	if (s->started)
		return fsink_fail(s, -EINVAL,
				  "snapshot file '%s': started twice", s->path);
	s->started = true;
	s->delta = layout->delta;
	memcpy(s->id, layout->id, LS_ID_BYTES);
	memcpy(s->parent, layout->parent, LS_ID_BYTES);
	s->created_ns = ls_now_realtime_ns();
	ret = fsink_layout(s, layout);
	if (ret)
		return ret;
	/*
	 * The data sections exist at once, as holes. Not with O_DIRECT:
	 * ext4 writes directly into holes below the file size about a third
	 * slower than past it (the extents must be converted), and commit's
	 * tables, which lie past the data, give the file its size anyway.
	 */
	if (s->direct_fd < 0 && ftruncate(s->fd, (off_t)s->data_end) < 0)
		return fsink_fail(s, -errno,
				  "snapshot file '%s': ftruncate "
				  "to %llu bytes: %s",
				  s->tmp, (unsigned long long)s->data_end,
				  strerror(errno));
	return 0;
}

/* The descriptor a data write goes through. */
static int fsink_data_fd(const struct fsink *s, const void *data, size_t len)
{
	/*
	 * O_DIRECT needs aligned memory. A small write goes buffered too:
	 * a synchronous trip to the disk would lengthen a fault's stall.
	 */
	if (s->direct_fd >= 0 && ((uintptr_t)data % LSF_ALIGN) == 0 &&
	    len % LSF_ALIGN == 0 && len >= FSINK_BIG_BYTES)
		return s->direct_fd;
	return s->fd;
}

static int fsink_write_pages(struct ls_sink *sink, uint32_t region,
			     uint64_t first_page, const void *data,
			     uint64_t npages)
{
	struct fsink *s = to_fsink(sink);
	struct fsink_region *r;
	const char *p = data;
	uint64_t ps, off;
	size_t len;
	int fd, ret = atomic_load_explicit(&s->err, memory_order_relaxed);

	if (ret)
		return ret;
	if (!s->started || region >= s->nregions)
		return fsink_fail(s, -EINVAL,
				  "snapshot file '%s': write to "
				  "region %u of %u",
				  s->path, region, s->nregions);
	r = &s->regions[region];
	ps = r->d.page_size;
	if (npages == 0 || first_page >= r->d.npages ||
	    npages > r->d.npages - first_page)
		return fsink_fail(s, -EINVAL,
				  "snapshot file '%s': region "
				  "'%s': pages %llu+%llu out of range (%llu "
				  "pages)",
				  s->path, r->d.name,
				  (unsigned long long)first_page,
				  (unsigned long long)npages,
				  (unsigned long long)r->d.npages);
	for (uint64_t i = 0; i < npages; i++) {
		uint64_t *slot = &r->csums[first_page + i];

		if (*slot != LSF_CSUM_ZERO)
			return fsink_fail(s, -EINVAL,
					  "snapshot file '%s': "
					  "region '%s': page %llu written "
					  "twice",
					  s->path, r->d.name,
					  (unsigned long long)(first_page + i));
		*slot = lsf_page_csum(p + i * ps, ps);
	}
	len = npages * ps;
	off = r->d.data_off + first_page * ps;
	fd = fsink_data_fd(s, data, len);
	ret = ls_pwrite_full(fd, data, len, (off_t)off);
	/*
	 * Start the writeback of a large batch now, so that the disk works
	 * while the next batch is hashed and copied, instead of all of it
	 * waiting for commit's fdatasync. Merely advice: errors show there.
	 */
	if (!ret && fd == s->fd && len >= FSINK_BIG_BYTES)
		sync_file_range(fd, (off_t)off, (off_t)len,
				SYNC_FILE_RANGE_WRITE);
	if (ret)
		return fsink_fail(s, ret,
				  "writing snapshot file '%s' (region "
				  "'%s', %zu bytes at offset %llu): %s",
				  s->tmp, r->d.name, len,
				  (unsigned long long)off, strerror(-ret));
	atomic_fetch_add_explicit(&r->nonzero, npages, memory_order_relaxed);
	return 0;
}

static int fsink_put_blob(struct ls_sink *sink, const char *name,
			  const void *data, size_t len)
{
	struct fsink *s = to_fsink(sink);
	struct fsink_blob *b;
	int ret = 0;

	if (!ls_name_ok(name, LS_NAME_MAX))
		return fsink_fail(s, -EINVAL,
				  "snapshot file '%s': blob name "
				  "empty or longer than %d bytes",
				  s->path, LS_NAME_MAX - 1);
	if (len > LSF_MAX_BLOB_BYTES)
		return fsink_fail(s, -EFBIG,
				  "snapshot file '%s': blob '%s' "
				  "has %zu bytes (at most %llu)",
				  s->path, name, len, LSF_MAX_BLOB_BYTES);
	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < s->nblobs; i++)
		if (!strcmp(s->blobs[i].name, name))
			ret = -EEXIST;
	if (!ret && s->nblobs == LSF_MAX_BLOBS)
		ret = -E2BIG;
	if (!ret) {
		b = &s->blobs[s->nblobs];
		b->data = malloc(len ? len : 1);
		if (!b->data) {
			ret = -ENOMEM;
		} else {
			memcpy(b->data, data, len);
			b->len = len;
			snprintf(b->name, sizeof(b->name), "%s", name);
			s->nblobs++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (ret)
		return fsink_fail(
		    s, ret, "snapshot file '%s': blob '%s': %s", s->path, name,
		    ret == -EEXIST ? "added twice" : strerror(-ret));
	return 0;
}

/* Appends the checksum tables, blobs and both tables; fills the header. */
static int fsink_write_tables(struct fsink *s, struct lsf_header *h)
{
	struct lsf_region *rt;
	struct lsf_blob *bt;
	uint64_t off = s->data_end;
	int ret = 0;

	rt = calloc(s->nregions + 1, sizeof(*rt));
	bt = calloc(s->nblobs + 1, sizeof(*bt));
	if (!rt || !bt) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < s->nregions && !ret; i++) {
		struct fsink_region *r = &s->regions[i];
		size_t tlen = r->d.npages * sizeof(uint64_t);

		r->d.pages_nonzero = atomic_load(&r->nonzero);
		r->d.csums_off = off;
		r->d.csums_csum = XXH3_64bits(r->csums, tlen);
		rt[i] = r->d;
		h->pages_total += r->d.npages;
		h->pages_nonzero += r->d.pages_nonzero;
		ret = ls_pwrite_full(s->fd, r->csums, tlen, (off_t)off);
		off += tlen;
	}
	for (uint32_t i = 0; i < s->nblobs && !ret; i++) {
		struct fsink_blob *b = &s->blobs[i];

		memcpy(bt[i].name, b->name, LS_NAME_MAX);
		bt[i].off = off;
		bt[i].len = b->len;
		bt[i].csum = XXH3_64bits(b->data, b->len);
		ret = ls_pwrite_full(s->fd, b->data, b->len, (off_t)off);
		off += b->len; /* packed: no byte of the file goes unsummed */
	}
	if (ret)
		goto out;
	h->nregions = s->nregions;
	h->regions_off = off;
	h->regions_csum = XXH3_64bits(rt, s->nregions * sizeof(*rt));
	ret = ls_pwrite_full(s->fd, rt, s->nregions * sizeof(*rt), (off_t)off);
	off += s->nregions * sizeof(*rt);
	h->nblobs = s->nblobs;
	h->blobs_off = off;
	h->blobs_csum = XXH3_64bits(bt, s->nblobs * sizeof(*bt));
	if (!ret)
		ret = ls_pwrite_full(s->fd, bt, s->nblobs * sizeof(*bt),
				     (off_t)off);
	off += s->nblobs * sizeof(*bt);
	h->file_size = off;
out:
	free(rt);
	free(bt);
	return ret;
}

static void fsink_fill_header(const struct fsink *s, struct lsf_header *h)
{
	memcpy(h->magic, LSF_MAGIC, LSF_MAGIC_LEN);
	h->version_major = LSF_VERSION_MAJOR;
	h->version_minor = LSF_VERSION_MINOR;
	h->header_size = sizeof(*h);
	h->incompat_flags = s->delta ? LSF_INCOMPAT_DELTA : 0;
	h->compat_flags = s->direct_fd >= 0 ? LSF_COMPAT_DIRECT : 0;
	memcpy(h->id, s->id, LS_ID_BYTES);
	if (s->delta)
		memcpy(h->parent, s->parent, LS_ID_BYTES);
	h->created_ns = s->created_ns;
	h->host_page_size = (uint32_t)sysconf(_SC_PAGESIZE);
}

static int fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, ret = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int fsink_commit(struct ls_sink *sink)
{
	struct fsink *s = to_fsink(sink);
	union {
		struct lsf_header h;
		char page[LSF_HEADER_BYTES];
	} * hp;
	const char *what;
	int ret = atomic_load(&s->err);

	if (ret)
		return ret;
	if (!s->started || s->committed || s->removed)
		return fsink_fail(s, -EINVAL,
				  "snapshot file '%s': commit "
				  "without start, or twice",
				  s->path);
	hp = calloc(1, sizeof(*hp));
	if (!hp)
		return fsink_fail(s, -ENOMEM,
				  "snapshot file '%s': out of memory", s->path);
	fsink_fill_header(s, &hp->h);
	what = "writing the tables";
	ret = fsink_write_tables(s, &hp->h);
	/* Everything the header points to is durable before the header. */
	if (!ret) {
		what = "fdatasync";
		ret = fdatasync(s->fd) < 0 ? -errno : 0;
	}
	if (!ret) {
		hp->h.header_csum = lsf_header_csum(&hp->h);
		what = "writing the header";
		ret = ls_pwrite_full(s->fd, hp, sizeof(*hp), 0);
	}
	if (!ret) {
		what = "fdatasync";
		ret = fdatasync(s->fd) < 0 ? -errno : 0;
	}
	free(hp);
	if (ret)
		return fsink_fail(s, ret, "snapshot file '%s': %s: %s", s->tmp,
				  what, strerror(-ret));
	if (rename(s->tmp, s->path) < 0)
		return fsink_fail(s, -errno,
				  "snapshot file: rename '%s' to '%s': %s",
				  s->tmp, s->path, strerror(errno));
	s->committed = true;
	ret = fsync_dir_of(s->path);
	if (ret)
		return fsink_fail(s, ret,
				  "snapshot file '%s': fsync of its "
				  "directory: %s",
				  s->path, strerror(-ret));
	return 0;
}

static void fsink_close_fds(struct fsink *s)
{
	if (s->direct_fd >= 0)
		close(s->direct_fd);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = s->direct_fd = -1;
}

static void fsink_abort(struct ls_sink *sink)
{
	struct fsink *s = to_fsink(sink);

	fsink_close_fds(s);
	if (!s->committed && !s->removed) {
		unlink(s->tmp);
		s->removed = true;
	}
}

static void fsink_destroy(struct ls_sink *sink)
{
	struct fsink *s = to_fsink(sink);

	fsink_abort(sink); /* a no-op once committed */
	for (uint32_t i = 0; i < s->nregions; i++)
		free(s->regions[i].csums);
	free(s->regions);
	for (uint32_t i = 0; i < s->nblobs; i++)
		free(s->blobs[i].data);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct ls_sink_ops fsink_ops = {
    .start = fsink_start,
    .write_pages = fsink_write_pages,
    .put_blob = fsink_put_blob,
    .commit = fsink_commit,
    .abort = fsink_abort,
    .destroy = fsink_destroy,
};

/*
 * What commit's rename would refuse, refused now, before a whole snapshot
 * is written: a directory (or a symlink to one: rename replaces the link,
 * but the caller meant the directory) at the path.
 */
static int fsink_check_target(struct fsink *s, char *errbuf, size_t errlen)
{
	struct stat st;

	if (stat(s->path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(errbuf, errlen, "snapshot file '%s': %s", s->path,
			 strerror(errno));
		return -errno;
	}
	if (S_ISDIR(st.st_mode)) {
		snprintf(errbuf, errlen,
			 "snapshot file '%s': a directory (name a file in it)",
			 s->path);
		return -EISDIR;
	}
	return 0;
}

static int fsink_open(struct fsink *s, char *errbuf, size_t errlen)
{
	int err;

	err = fsink_check_target(s, errbuf, errlen);
	if (err)
		return err;
	s->fd = open(s->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (s->fd < 0) {
		err = errno;
		snprintf(errbuf, errlen, "snapshot file: create '%s': %s%s",
			 s->tmp, strerror(err),
			 err == EEXIST ? " (another snapshot to the same path "
					 "in progress?)"
				       : "");
		return -err;
	}
	if (!(s->flags & LS_FILE_DIRECT))
		return 0;
	s->direct_fd = open(s->tmp, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (s->direct_fd < 0) {
		err = errno;
		snprintf(errbuf, errlen, "snapshot file '%s': O_DIRECT: %s%s",
			 s->tmp, strerror(err),
			 err == EINVAL ? " (not supported by this file system)"
				       : "");
		unlink(s->tmp);
		return -err;
	}
	return 0;
}

int ls_sink_file_create(struct ls_sink **sinkp, const char *path,
			unsigned flags, char *errbuf, size_t errlen)
{
	char dummy[LS_ERRMSG_MAX];
	struct fsink *s;
	int ret;

	if (!errbuf) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*sinkp = NULL;
	if (flags & ~LS_FILE_DIRECT) {
		snprintf(errbuf, errlen,
			 "snapshot file '%s': unknown flags %#x", path, flags);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "snapshot file '%s': out of memory",
			 path);
		return -ENOMEM;
	}
	s->base.ops = &fsink_ops;
	s->fd = s->direct_fd = -1;
	s->flags = flags;
	pthread_mutex_init(&s->lock, NULL);
	if (snprintf(s->path, sizeof(s->path), "%s", path) >=
		(int)sizeof(s->path) ||
	    snprintf(s->tmp, sizeof(s->tmp), "%s.tmp.%d", path,
		     (int)getpid()) >= (int)sizeof(s->tmp) ||
	    path[0] == '\0') {
		snprintf(errbuf, errlen,
			 "snapshot file: path empty or too long");
		ret = -ENAMETOOLONG;
		goto fail;
	}
	ret = fsink_open(s, errbuf, errlen);
	if (ret)
		goto fail;
	*sinkp = &s->base;
	return 0;
fail:
	pthread_mutex_destroy(&s->lock);
	free(s);
	return ret;
}
