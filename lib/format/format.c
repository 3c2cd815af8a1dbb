/* SPDX-License-Identifier: MIT */
/* Checksums and I/O loops shared by the snapshot writers and reader. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "format.h"

uint64_t lsf_header_csum(const struct lsf_header *hdr_page)
{
	XXH3_state_t st;
	uint64_t zero = 0;
	const char *p = (const char *)hdr_page;
	size_t at = offsetof(struct lsf_header, header_csum);

	/* The checksum field itself reads as zero. */
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, p, at);
	XXH3_64bits_update(&st, &zero, sizeof(zero));
	XXH3_64bits_update(&st, p + at + sizeof(zero),
			   LSF_HEADER_BYTES - at - sizeof(zero));
	return XXH3_64bits_digest(&st);
}

uint64_t lss_rec_hdr_csum(const struct lss_rec *rec)
{
	return XXH3_64bits(rec, offsetof(struct lss_rec, hdr_csum));
}

void lss_rec_seal(struct lss_rec *rec)
{
	rec->hdr_csum = lss_rec_hdr_csum(rec);
}

uint64_t lss_chain(uint64_t chain, const struct lss_rec *rec)
{
	return XXH3_64bits_withSeed(&rec->hdr_csum, sizeof(rec->hdr_csum),
				    chain);
}

bool ls_name_ok(const char *name, size_t max)
{
	/* strnlen: never reads past a caller's shorter string. */
	size_t n = strnlen(name, max);

	return n > 0 && n < max;
}

bool ls_page_size_ok(uint64_t page_size)
{
	return page_size >= LSF_MIN_PAGE && page_size <= LSF_MAX_PAGE &&
	       (page_size & (page_size - 1)) == 0;
}

bool ls_region_ok(const char *name, uint64_t len, uint64_t page_size)
{
	return ls_name_ok(name, LS_NAME_MAX) && ls_page_size_ok(page_size) &&
	       len != 0 && len <= LSF_MAX_REGION_BYTES && len % page_size == 0;
}

bool ls_mem_zero(const void *p, size_t len)
{
	const unsigned char *c = p;

	/* Compare the buffer with itself shifted by one: fast and short. */
	return len == 0 || (c[0] == 0 && memcmp(c, c + 1, len - 1) == 0);
}

uint64_t ls_align_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

uint64_t ls_now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* pread or pwrite all of len bytes: a short transfer is retried. */
static int prw_full(int fd, char *buf, size_t len, off_t off, bool write)
{
	while (len) {
		ssize_t n = write ? pwrite(fd, buf, len, off)
				  : pread(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int ls_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	return prw_full(fd, (char *)buf, len, off, true);
}

int ls_pread_full(int fd, void *buf, size_t len, off_t off)
{
	return prw_full(fd, buf, len, off, false);
}

int ls_wait_fd(int fd, short events)
{
	struct pollfd pfd = {.fd = fd, .events = events};

	while (poll(&pfd, 1, -1) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

ssize_t ls_read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, p + done, len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && ls_wait_fd(fd, POLLIN) == 0)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}
