/* SPDX-License-Identifier: MIT */
/*
 * The stream sink: the snapshot as a sequence of records on any fd (a pipe,
 * a socket, a command's stdin, a file). See docs/format.md.
 *
 * Pages are hashed in the caller's thread; the record header, the chain
 * and the write itself are serialized by a mutex, so the chain follows
 * the order in which records really reach the fd.
 *
 * A closed reader must give an error, not kill the process: sockets are
 * written with MSG_NOSIGNAL; for other fds SIGPIPE is blocked in the
 * writing thread around the write and a SIGPIPE it raised is consumed
 * before the mask is restored.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "format.h"

struct ssink_region {
	uint64_t npages;
	uint32_t page_size;
};

struct ssink {
	struct ls_sink base; /* first: the engine sees a struct ls_sink */
	int fd;
	bool is_socket, is_regular;
	bool started, ended;
	uint32_t nregions;
	struct ssink_region *regions;
	pthread_mutex_t lock; /* the fd, the chain, the totals, err */
	uint64_t chain;
	uint64_t records, pages, blobs, bytes;
	int err; /* first error (-errno), 0 while healthy */
};

static struct ssink *to_ssink(struct ls_sink *sink)
{
	return (struct ssink *)sink;
}

/* Call with the lock held. Keeps the first failure only. */
__attribute__((format(printf, 3, 4))) static int
ssink_fail_locked(struct ssink *s, int err, const char *fmt, ...)
{
	char msg[LS_ERRMSG_MAX];
	va_list ap;

	if (s->err)
		return s->err;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ls_sink_set_error(&s->base, "%s", msg);
	s->err = err;
	return err;
}

static ssize_t ssink_writev_once(struct ssink *s, struct iovec *iov, int n)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};

	if (s->is_socket)
		return sendmsg(s->fd, &mh, MSG_NOSIGNAL);
	return writev(s->fd, iov, n);
}

/* Writes every byte of iov, or returns -errno. */
static int ssink_writev_all(struct ssink *s, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = ssink_writev_once(s, iov, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			/* The caller's fd may be non-blocking. */
			if (errno == EAGAIN && ls_wait_fd(s->fd, POLLOUT) == 0)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/*
 * writev with SIGPIPE blocked in this thread. If the write raised a
 * SIGPIPE that was not already pending, it is taken off the thread's
 * pending set, so unblocking does not deliver it.
 */
static int ssink_write_nosigpipe(struct ssink *s, struct iovec *iov, int n)
{
	static const struct timespec zero;
	sigset_t pipe_set, old, pending;
	bool was_pending;
	int ret;

	if (s->is_socket)
		return ssink_writev_all(s, iov, n);
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	ret = ssink_writev_all(s, iov, n);
	if (ret == -EPIPE && !was_pending)
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 &&
		       errno == EINTR)
			;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

static const char *rec_name(uint32_t type)
{
	switch (type) {
	case LSS_REC_HEAD:
		return "head";
	case LSS_REC_PAGES:
		return "pages";
	case LSS_REC_BLOB:
		return "blob";
	case LSS_REC_TRAILER:
		return "trailer";
	default:
		return "abort";
	}
}

/* Writes iov whole; a failure fails the sink. Call with the lock held. */
static int ssink_write_locked(struct ssink *s, struct iovec *iov, int n,
			      const char *what)
{
	int ret = ssink_write_nosigpipe(s, iov, n);

	if (ret)
		return ssink_fail_locked(s, ret,
					 "snapshot stream (fd %d): "
					 "writing %s: %s%s",
					 s->fd, what, strerror(-ret),
					 ret == -EPIPE ? " (the reader went "
							 "away)"
						       : "");
	return 0;
}

/*
 * Seals rec (whose data_csum the caller set), and writes it and its
 * payload (iov[1..n-1]; iov[0] is for the header). Call with the lock held.
 */
static int ssink_emit_locked(struct ssink *s, struct lss_rec *rec,
			     struct iovec *iov, int n)
{
	char what[32];
	int ret;

	if (s->err)
		return s->err;
	lss_rec_seal(rec);
	iov[0].iov_base = rec;
	iov[0].iov_len = sizeof(*rec);
	snprintf(what, sizeof(what), "a %s record", rec_name(rec->type));
	ret = ssink_write_locked(s, iov, n, what);
	if (ret)
		return ret;
	s->chain = lss_chain(s->chain, rec);
	s->records++;
	s->bytes += sizeof(*rec) + rec->len;
	return 0;
}

static int ssink_fail(struct ssink *s, int err, const char *what)
{
	pthread_mutex_lock(&s->lock);
	err = ssink_fail_locked(s, err, "snapshot stream (fd %d): %s", s->fd,
				what);
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* The checksum of a payload sent in two pieces. */
static uint64_t csum2(const void *a, size_t alen, const void *b, size_t blen)
{
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, a, alen);
	XXH3_64bits_update(&st, b, blen);
	return XXH3_64bits_digest(&st);
}

static int ssink_check_layout(const struct ls_layout *layout)
{
	if (layout->nregions > LSF_MAX_REGIONS)
		return -E2BIG;
	for (uint32_t i = 0; i < layout->nregions; i++) {
		const struct ls_layout_region *lr = &layout->regions[i];

		if (!ls_region_ok(lr->name, lr->len, lr->page_size))
			return -EINVAL;
	}
	return 0;
}

static int ssink_start(struct ls_sink *sink, const struct ls_layout *layout)
{
	struct ssink *s = to_ssink(sink);
	struct lss_head head = {0};
	struct lss_region *rr;
	struct lss_rec rec = {.type = LSS_REC_HEAD};
	struct iovec iov[3];
	size_t rlen = layout->nregions * sizeof(*rr);
	int ret;

	if (s->started)
		return ssink_fail(s, -EINVAL, "started twice");
	s->started = true;
	if (layout->delta)
		return ssink_fail(s, -ENOTSUP,
				  "this format version cannot hold a delta");
	if (ssink_check_layout(layout))
		return ssink_fail(s, -EINVAL, "bad region layout");
	rr = calloc(layout->nregions + 1, sizeof(*rr));
	s->regions = calloc(layout->nregions + 1, sizeof(*s->regions));
	if (!rr || !s->regions) {
		free(rr);
		return ssink_fail(s, -ENOMEM, "out of memory");
	}
	s->nregions = layout->nregions;
	for (uint32_t i = 0; i < layout->nregions; i++) {
		const struct ls_layout_region *lr = &layout->regions[i];

		memcpy(rr[i].name, lr->name, LS_NAME_MAX);
		rr[i].len = lr->len;
		rr[i].page_size = lr->page_size;
		rr[i].type = lr->type;
		s->regions[i].npages = lr->len / lr->page_size;
		s->regions[i].page_size = lr->page_size;
	}
	head.version_major = LSF_VERSION_MAJOR;
	head.version_minor = LSF_VERSION_MINOR;
	head.host_page_size = (uint32_t)sysconf(_SC_PAGESIZE);
	head.created_ns = ls_now_realtime_ns();
	head.nregions = layout->nregions;
	rec.len = sizeof(head) + rlen;
	rec.data_csum = csum2(&head, sizeof(head), rr, rlen);
	/* The magic is not a record: it is how readers tell a stream. */
	iov[0].iov_base = LSS_MAGIC;
	iov[0].iov_len = LSF_MAGIC_LEN;
	pthread_mutex_lock(&s->lock);
	ret = ssink_write_locked(s, iov, 1, "the magic");
	s->bytes = LSF_MAGIC_LEN;
	iov[1].iov_base = &head;
	iov[1].iov_len = sizeof(head);
	iov[2].iov_base = rr;
	iov[2].iov_len = rlen;
	if (!ret)
		ret = ssink_emit_locked(s, &rec, iov, 3);
	pthread_mutex_unlock(&s->lock);
	free(rr);
	return ret;
}

static int ssink_write_pages(struct ls_sink *sink, uint32_t region,
			     uint64_t first_page, const void *data,
			     uint64_t npages)
{
	struct ssink *s = to_ssink(sink);
	struct lss_rec rec = {.type = LSS_REC_PAGES};
	struct iovec iov[2];
	uint64_t len;
	int ret;

	if (!s->started || region >= s->nregions || npages == 0 ||
	    first_page >= s->regions[region].npages ||
	    npages > s->regions[region].npages - first_page)
		return ssink_fail(s, -EINVAL, "page write out of range");
	len = npages * s->regions[region].page_size;
	rec.index = region;
	rec.first = first_page;
	rec.count = npages;
	rec.len = len;
	rec.data_csum = XXH3_64bits(data, len); /* outside the lock */
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = len;
	pthread_mutex_lock(&s->lock);
	ret = ssink_emit_locked(s, &rec, iov, 2);
	if (!ret)
		s->pages += npages;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int ssink_put_blob(struct ls_sink *sink, const char *name,
			  const void *data, size_t len)
{
	struct ssink *s = to_ssink(sink);
	struct lss_rec rec = {.type = LSS_REC_BLOB};
	char bname[LS_NAME_MAX] = {0};
	struct iovec iov[3];
	int ret;

	if (!s->started)
		return ssink_fail(s, -EINVAL, "blob before start");
	if (!ls_name_ok(name, LS_NAME_MAX) || len > LSF_MAX_BLOB_BYTES)
		return ssink_fail(s, -EINVAL, "blob name or size out of range");
	snprintf(bname, sizeof(bname), "%s", name);
	rec.data_csum = csum2(bname, sizeof(bname), data, len);
	rec.len = sizeof(bname) + len;
	iov[1].iov_base = bname;
	iov[1].iov_len = sizeof(bname);
	iov[2].iov_base = (void *)data;
	iov[2].iov_len = len;
	pthread_mutex_lock(&s->lock);
	ret = ssink_emit_locked(s, &rec, iov, 3);
	if (!ret)
		s->blobs++;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int ssink_commit(struct ls_sink *sink)
{
	struct ssink *s = to_ssink(sink);
	struct lss_rec rec = {.type = LSS_REC_TRAILER};
	struct lss_trailer t = {0};
	struct iovec iov[2];
	int ret;

	if (!s->started)
		return ssink_fail(s, -EINVAL, "commit before start");
	pthread_mutex_lock(&s->lock);
	if (s->ended && !s->err)
		ssink_fail_locked(s, -EINVAL,
				  "snapshot stream (fd %d): committed twice",
				  s->fd);
	t.records = s->records;
	t.pages = s->pages;
	t.blobs = s->blobs;
	t.bytes = s->bytes;
	t.chain = s->chain;
	rec.len = sizeof(t);
	rec.data_csum = XXH3_64bits(&t, sizeof(t));
	iov[1].iov_base = &t;
	iov[1].iov_len = sizeof(t);
	ret = ssink_emit_locked(s, &rec, iov, 2);
	s->ended = true;
	pthread_mutex_unlock(&s->lock);
	/* A stream into a regular file is as durable as a snapshot file. */
	if (!ret && s->is_regular && fdatasync(s->fd) < 0) {
		ret = -errno;
		pthread_mutex_lock(&s->lock);
		ssink_fail_locked(s, ret,
				  "snapshot stream (fd %d): fdatasync: %s",
				  s->fd, strerror(-ret));
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

static void ssink_abort(struct ls_sink *sink)
{
	struct ssink *s = to_ssink(sink);
	struct lss_rec rec = {.type = LSS_REC_ABORT};
	struct iovec iov[1];

	rec.data_csum = XXH3_64bits("", 0);

	/* Best effort: tells the reader why; no trailer follows either way. */
	pthread_mutex_lock(&s->lock);
	if (s->started && !s->ended && !s->err)
		ssink_emit_locked(s, &rec, iov, 1);
	s->ended = true;
	pthread_mutex_unlock(&s->lock);
}

static void ssink_destroy(struct ls_sink *sink)
{
	struct ssink *s = to_ssink(sink);

	free(s->regions);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct ls_sink_ops ssink_ops = {
    .start = ssink_start,
    .write_pages = ssink_write_pages,
    .put_blob = ssink_put_blob,
    .commit = ssink_commit,
    .abort = ssink_abort,
    .destroy = ssink_destroy,
};

int ls_sink_stream_create(struct ls_sink **sinkp, int fd, char *errbuf,
			  size_t errlen)
{
	char dummy[LS_ERRMSG_MAX];
	struct ssink *s;
	struct stat st;

	if (!errbuf) {
		errbuf = dummy;
		errlen = sizeof(dummy);
	}
	*sinkp = NULL;
	if (fstat(fd, &st) < 0) {
		snprintf(errbuf, errlen, "snapshot stream: fd %d: %s", fd,
			 strerror(errno));
		return -errno;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "snapshot stream: out of memory");
		return -ENOMEM;
	}
	s->base.ops = &ssink_ops;
	s->fd = fd;
	s->is_socket = S_ISSOCK(st.st_mode);
	s->is_regular = S_ISREG(st.st_mode);
	pthread_mutex_init(&s->lock, NULL);
	*sinkp = &s->base;
	return 0;
}
