/* SPDX-License-Identifier: MIT */
/*
 * Opening a snapshot (a file or a stream, told apart by the magic), the
 * lookups over what was opened, and the lazy-restore source over a file
 * reader. The work is in reader_file.c and reader_stream.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reader.h"

int rd_fail(struct ls_reader *r, int err, const char *fmt, ...)
{
	va_list ap;
	int n;

	/* r->name is shorter than the buffer: the message always shows. */
	pthread_mutex_lock(&r->err_lock);
	n = snprintf(r->error, sizeof(r->error), "snapshot '%s': ", r->name);
	va_start(ap, fmt);
	vsnprintf(r->error + n, sizeof(r->error) - (size_t)n, fmt, ap);
	va_end(ap);
	/*
	 * Names in a damaged file may hold any byte: the message must stay
	 * one printable line (found by tests/fuzz: a newline in a region name).
	 */
	for (char *c = r->error; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	pthread_mutex_unlock(&r->err_lock);
	return err;
}

int rd_add_blob(struct ls_reader *r, const char *name, void *data, size_t len)
{
	struct rd_blob *b;

	for (uint32_t i = 0; i < r->nblobs; i++)
		if (!strcmp(r->blobs[i].name, name))
			return rd_fail(r, -EBADMSG, "blob '%s' appears twice",
				       name);
	if (r->nblobs == LSF_MAX_BLOBS)
		return rd_fail(r, -EBADMSG, "more than %u blobs",
			       LSF_MAX_BLOBS);
	b = realloc(r->blobs, (r->nblobs + 1) * sizeof(*b));
	if (!b)
		return rd_fail(r, -ENOMEM, "out of memory for blob '%s'", name);
	r->blobs = b;
	b = &r->blobs[r->nblobs++];
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->data = data;
	b->len = len;
	return 0;
}

void ls_reader_close(struct ls_reader *r)
{
	if (!r)
		return;
	for (uint32_t i = 0; i < r->nregions; i++) {
		if (r->regions[i].csums_map)
			munmap(r->regions[i].csums_map,
			       r->regions[i].csums_map_len);
		else
			free(r->regions[i].csums);
		if (r->regions[i].seen)
			munmap(r->regions[i].seen, r->regions[i].seen_len);
	}
	free(r->regions);
	for (uint32_t i = 0; i < r->nblobs; i++)
		free(r->blobs[i].data);
	free(r->blobs);
	if (r->fd >= 0)
		close(r->fd);
	pthread_mutex_destroy(&r->err_lock);
	free(r);
}

/* Reads the magic and hands over to the file or the stream reader. */
static int rd_open(struct ls_reader *r)
{
	char magic[LSF_MAGIC_LEN];
	struct stat st;
	ssize_t n;
	bool seekable;

	if (fstat(r->fd, &st) < 0)
		return rd_fail(r, -errno, "fstat: %s", strerror(errno));
	if (S_ISDIR(st.st_mode))
		return rd_fail(r, -EISDIR, "is a directory");
	seekable = S_ISREG(st.st_mode) || S_ISBLK(st.st_mode);
	if (seekable && lseek(r->fd, 0, SEEK_SET) < 0)
		return rd_fail(r, -errno, "lseek: %s", strerror(errno));
	n = ls_read_full(r->fd, magic, sizeof(magic));
	if (n < 0)
		return rd_fail(r, (int)n, "read: %s", strerror((int)-n));
	if (n < (ssize_t)sizeof(magic))
		return rd_fail(r, -EBADMSG,
			       "truncated: %zd bytes, not even a magic number",
			       n);
	if (!memcmp(magic, LSS_MAGIC, LSF_MAGIC_LEN)) {
		r->info.stream = true;
		return rd_stream_open(r);
	}
	if (memcmp(magic, LSF_MAGIC, LSF_MAGIC_LEN))
		return rd_fail(r, -EBADMSG,
			       "not a livesnap snapshot (bad magic)");
	if (!S_ISREG(st.st_mode))
		return rd_fail(r, -ESPIPE,
			       "a snapshot file must be read from "
			       "a regular file, not a pipe or device (write "
			       "a stream instead)");
	return rd_file_open(r, (uint64_t)st.st_size,
			    (uint64_t)st.st_blocks * 512);
}

/* Takes fd (closes it on failure). */
static int rd_open_named(int fd, const char *name, struct ls_reader **rp,
			 char *errbuf, size_t errlen)
{
	struct ls_reader *r;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r) {
		close(fd);
		snprintf(errbuf, errlen, "snapshot '%s': out of memory", name);
		return -ENOMEM;
	}
	r->fd = fd;
	pthread_mutex_init(&r->err_lock, NULL);
	snprintf(r->name, sizeof(r->name), "%s", name);
	ret = rd_open(r);
	if (ret) {
		snprintf(errbuf, errlen, "%s", r->error);
		ls_reader_close(r);
		return ret;
	}
	*rp = r;
	return 0;
}

int ls_reader_open(const char *path, struct ls_reader **rp, char *errbuf,
		   size_t errlen)
{
	char dummy[LS_ERRMSG_MAX];
	bool is_stdin = !strcmp(path, "-");
	int fd;

	if (!errbuf) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*rp = NULL;
	if (is_stdin)
		fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
	else
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		snprintf(errbuf, errlen, "snapshot '%s': %s",
			 is_stdin ? "<stdin>" : path, strerror(err));
		return -err;
	}
	return rd_open_named(fd, is_stdin ? "<stdin>" : path, rp, errbuf,
			     errlen);
}

int ls_reader_open_fd(int fd, struct ls_reader **rp, char *errbuf,
		      size_t errlen)
{
	char dummy[LS_ERRMSG_MAX], name[32];
	int own;

	if (!errbuf) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*rp = NULL;
	snprintf(name, sizeof(name), "fd %d", fd);
	/* The reader keeps its own descriptor: the caller may close fd. */
	own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (own < 0) {
		int err = errno;

		snprintf(errbuf, errlen, "snapshot '%s': %s", name,
			 strerror(err));
		return -err;
	}
	return rd_open_named(own, name, rp, errbuf, errlen);
}

const char *ls_reader_error(const struct ls_reader *r)
{
	return r->error;
}

bool ls_reader_is_stream(const struct ls_reader *r)
{
	return r->info.stream;
}

int ls_reader_get_info(const struct ls_reader *r, struct ls_reader_info *info)
{
	*info = r->info;
	return 0;
}

uint32_t ls_reader_region_count(const struct ls_reader *r)
{
	return r->nregions;
}

int ls_reader_region(const struct ls_reader *r, uint32_t idx,
		     struct ls_reader_region *info)
{
	if (idx >= r->nregions)
		return -ENOENT;
	*info = r->regions[idx].info;
	return 0;
}

int ls_reader_find_region(const struct ls_reader *r, const char *name)
{
	for (uint32_t i = 0; i < r->nregions; i++)
		if (!strncmp(r->regions[i].info.name, name, LS_NAME_MAX))
			return (int)i;
	return -ENOENT;
}

uint32_t ls_reader_blob_count(const struct ls_reader *r)
{
	return r->nblobs;
}

int ls_reader_blob(const struct ls_reader *r, uint32_t idx, const char **name,
		   const void **data, size_t *len)
{
	if (idx >= r->nblobs)
		return -ENOENT;
	if (name)
		*name = r->blobs[idx].name;
	if (data)
		*data = r->blobs[idx].data;
	if (len)
		*len = r->blobs[idx].len;
	return 0;
}

int ls_reader_find_blob(const struct ls_reader *r, const char *name,
			const void **data, size_t *len)
{
	for (uint32_t i = 0; i < r->nblobs; i++)
		if (!strncmp(r->blobs[i].name, name, LS_NAME_MAX))
			return ls_reader_blob(r, i, NULL, data, len);
	return -ENOENT;
}

int ls_reader_verify(struct ls_reader *r, ls_progress_fn fn, void *arg)
{
	if (r->info.stream)
		return rd_stream_consume(r, NULL, fn, arg);
	return rd_file_verify(r, fn, arg, NULL);
}

int ls_reader_verify_all(struct ls_reader *r, ls_progress_fn fn, void *arg,
			 uint64_t *bad)
{
	for (uint32_t i = 0; i < r->nregions; i++)
		bad[i] = 0;
	if (r->info.stream)
		return rd_stream_consume(r, NULL, fn, arg);
	return rd_file_verify(r, fn, arg, bad);
}

int rd_check_target(struct ls_reader *r, uint32_t region, void *addr,
		    size_t len)
{
	if (region >= r->nregions)
		return rd_fail(r, -ENOENT, "no region %u (%u regions)", region,
			       r->nregions);
	if (len != r->regions[region].info.len)
		return rd_fail(
		    r, -EINVAL, "region '%s' has %llu bytes, the target %zu",
		    r->regions[region].info.name,
		    (unsigned long long)r->regions[region].info.len, len);
	if (!addr || (uintptr_t)addr % LSF_MIN_PAGE)
		return rd_fail(r, -EINVAL,
			       "region '%s': target address %p "
			       "not page aligned",
			       r->regions[region].info.name, addr);
	return 0;
}

int ls_reader_restore_region(struct ls_reader *r, uint32_t region, void *addr,
			     size_t len)
{
	int ret;

	if (r->info.stream)
		return rd_fail(r, -ENOTSUP,
			       "a stream restores all regions at "
			       "once (ls_reader_restore_all)");
	if (r->info.delta)
		return rd_fail(r, -EINVAL,
			       "a delta alone cannot be restored: open its chain (ls_chain_restore_region)");
	ret = rd_check_target(r, region, addr, len);
	return ret ? ret : rd_file_restore(r, region, addr);
}

int ls_reader_restore_all(struct ls_reader *r, void *const *addrs,
			  const size_t *lens, uint32_t n)
{
	int ret;

	if (n != r->nregions)
		return rd_fail(r, -EINVAL, "%u targets for %u regions", n,
			       r->nregions);
	if (r->info.delta)
		return rd_fail(r, -EINVAL,
			       "a delta alone cannot be restored: open its chain (ls_chain_restore_region)");
	/* A NULL target skips its region (a stream still checks it). */
	for (uint32_t i = 0; i < n; i++) {
		if (!addrs[i])
			continue;
		ret = rd_check_target(r, i, addrs[i], lens[i]);
		if (ret)
			return ret;
	}
	if (r->info.stream)
		return rd_stream_consume(r, addrs, NULL, NULL);
	for (uint32_t i = 0; i < n; i++) {
		if (!addrs[i])
			continue;
		ret = rd_file_restore(r, i, addrs[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- the lazy restore source over a file reader ---- */

struct rd_source {
	struct ls_source base; /* first: the engine sees a struct ls_source */
	struct ls_reader *r;
};

static int rd_source_read(struct ls_source *src, uint32_t region,
			  uint64_t first_page, void *buf, uint64_t npages)
{
	return ls_reader_read_pages(((struct rd_source *)src)->r, region,
				    first_page, buf, npages);
}

static bool rd_source_is_zero(struct ls_source *src, uint32_t region,
			      uint64_t page)
{
	const struct ls_reader *r = ((struct rd_source *)src)->r;

	return region < r->nregions && page < r->regions[region].npages &&
	       r->regions[region].csums[page] == LSF_CSUM_ZERO;
}

static void rd_source_destroy(struct ls_source *src)
{
	free(src);
}

static const struct ls_source_ops rd_source_ops = {
    .read_pages = rd_source_read,
    .is_zero = rd_source_is_zero,
    .destroy = rd_source_destroy,
};

int ls_reader_source(struct ls_reader *r, struct ls_source **srcp)
{
	struct rd_source *s;

	*srcp = NULL;
	if (r->info.stream)
		return rd_fail(r, -ENOTSUP,
			       "a stream cannot serve lazy "
			       "restore (it is read once, in order)");
	if (r->info.delta)
		return rd_fail(r, -EINVAL,
			       "a delta alone cannot serve a restore: open its chain (ls_chain_source)");
	s = calloc(1, sizeof(*s));
	if (!s)
		return rd_fail(r, -ENOMEM, "out of memory");
	s->base.ops = &rd_source_ops;
	s->r = r;
	*srcp = &s->base;
	return 0;
}
