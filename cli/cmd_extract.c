/* SPDX-License-Identifier: MIT */
/*
 * livesnap extract FILE REGION [OUT]   a region's memory, raw
 * livesnap blob FILE NAME [OUT]        a blob's bytes
 *
 * Both write to OUT (created or truncated) or to standard output. Every
 * page read is checked against its checksum, so what comes out is what was
 * saved. A region's zero pages are holes in OUT when it can seek.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "livesnap.h"

#define CHUNK (4u << 20) /* bytes read at a time, a multiple of 2 MiB */

struct out {
	const char *name; /* for messages */
	int fd;
	bool seekable;	/* a regular file: zero pages become holes */
	uint64_t start; /* the offset where our bytes begin */
};

static int out_open(const char *cmd, const char *path, struct out *o)
{
	struct stat st;

	o->name = path ? path : "standard output";
	o->fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			    0644)
		     : STDOUT_FILENO;
	if (o->fd < 0) {
		fprintf(stderr, "livesnap %s: %s: %s\n", cmd, path,
			strerror(errno));
		return -1;
	}
	o->seekable = !fstat(o->fd, &st) && S_ISREG(st.st_mode);
	if (o->seekable) {
		off_t pos = lseek(o->fd, 0, SEEK_CUR);

		o->seekable = pos >= 0;
		o->start = pos >= 0 ? (uint64_t)pos : 0;
	}
	return 0;
}

static int out_close(const char *cmd, struct out *o, int status)
{
	if (o->fd != STDOUT_FILENO && close(o->fd) && !status) {
		fprintf(stderr, "livesnap %s: close %s: %s\n", cmd, o->name,
			strerror(errno));
		return 1;
	}
	return status;
}

static int write_all(const char *cmd, struct out *o, const void *buf,
		     size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(o->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "livesnap %s: write %s: %s\n", cmd,
				o->name, strerror(errno));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool all_zero(const void *buf, size_t len)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Writes one chunk: its zero pages skipped (holes) when seekable. */
static int put_chunk(const char *cmd, struct out *o, const char *buf,
		     size_t len, size_t page)
{
	for (size_t off = 0; off < len; off += page) {
		if (o->seekable && all_zero(buf + off, page)) {
			if (lseek(o->fd, (off_t)page, SEEK_CUR) < 0) {
				fprintf(stderr, "livesnap %s: lseek %s: %s\n",
					cmd, o->name, strerror(errno));
				return -1;
			}
			continue;
		}
		if (write_all(cmd, o, buf + off, page))
			return -1;
	}
	return 0;
}

static int open_file_reader(const char *cmd, const char *path,
			    struct ls_reader **rp)
{
	char err[LS_ERRMSG_MAX];

	if (ls_reader_open(path, rp, err, sizeof(err))) {
		fprintf(stderr, "livesnap %s: %s\n", cmd, err);
		return -1;
	}
	return 0;
}

/* A delta's pages come through its chain: each from the newest file. */
struct via_chain {
	struct ls_chain *chain;
	struct ls_source *src;
};

static int read_chunk(struct ls_reader *r, const struct via_chain *vc,
		      uint32_t idx, uint64_t first, char *buf, uint64_t n)
{
	if (!vc->src) {
		if (!ls_reader_read_pages(r, idx, first, buf, n))
			return 0;
		fprintf(stderr, "livesnap extract: %s\n", ls_reader_error(r));
		return -1;
	}
	if (!vc->src->ops->read_pages(vc->src, idx, first, buf, n))
		return 0;
	fprintf(stderr, "livesnap extract: %s\n", ls_chain_error(vc->chain));
	return -1;
}

static int extract_region(struct ls_reader *r, const struct via_chain *vc,
			  uint32_t idx, struct out *o)
{
	struct ls_reader_region g;
	uint64_t pages, per, done;
	char *buf;
	int status = 1;

	ls_reader_region(r, idx, &g);
	pages = g.len / g.page_size;
	per = CHUNK / g.page_size ? CHUNK / g.page_size : 1;
	buf = malloc(per * g.page_size);
	if (!buf) {
		fprintf(stderr, "livesnap extract: out of memory\n");
		return 1;
	}
	for (done = 0; done < pages; done += per) {
		uint64_t n = pages - done < per ? pages - done : per;

		if (read_chunk(r, vc, idx, done, buf, n))
			goto out;
		if (put_chunk("extract", o, buf, n * g.page_size, g.page_size))
			goto out;
	}
	/* trailing holes: the size is the region's */
	if (o->seekable && ftruncate(o->fd, (off_t)(o->start + g.len))) {
		fprintf(stderr, "livesnap extract: ftruncate %s: %s\n",
			o->name, strerror(errno));
		goto out;
	}
	status = 0;
out:
	free(buf);
	return status;
}

static int extract_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct via_chain vc = {0};
	struct ls_reader_info in;
	char err[LS_ERRMSG_MAX];
	struct cli_parser p;
	struct ls_reader *r;
	struct out o;
	int status, idx, c;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0)
		;
	if (c == CLI_EXIT)
		return p.status;
	if (open_file_reader("extract", p.operands[0], &r))
		return 1;
	if (ls_reader_is_stream(r)) {
		fprintf(stderr, "livesnap extract: %s: a stream; extract reads "
				"snapshot files (save the stream to a file "
				"with 'livesnap restore' or cat first)\n",
			p.operands[0]);
		ls_reader_close(r);
		return 1;
	}
	idx = ls_reader_find_region(r, p.operands[1]);
	if (idx < 0) {
		fprintf(stderr, "livesnap extract: %s: no region '%s'\n",
			p.operands[0], p.operands[1]);
		ls_reader_close(r);
		return 1;
	}
	ls_reader_get_info(r, &in);
	if (in.delta &&
	    (ls_chain_open(p.operands[0], &vc.chain, err, sizeof(err)) ||
	     ls_chain_source(vc.chain, &vc.src))) {
		fprintf(stderr, "livesnap extract: %s\n",
			vc.chain ? ls_chain_error(vc.chain) : err);
		ls_chain_close(vc.chain);
		ls_reader_close(r);
		return 1;
	}
	if (out_open("extract", p.noperands > 2 ? p.operands[2] : NULL, &o)) {
		ls_source_destroy(vc.src);
		ls_chain_close(vc.chain);
		ls_reader_close(r);
		return 1;
	}
	status = extract_region(r, &vc, (uint32_t)idx, &o);
	status = out_close("extract", &o, status);
	ls_source_destroy(vc.src);
	ls_chain_close(vc.chain);
	ls_reader_close(r);
	return status;
}

static int blob_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct cli_parser p;
	struct ls_reader *r;
	const void *data;
	struct out o;
	size_t len;
	int status = 1, c;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0)
		;
	if (c == CLI_EXIT)
		return p.status;
	if (open_file_reader("blob", p.operands[0], &r))
		return 1;
	/* a stream's blobs come after its pages: read it whole first */
	if (ls_reader_is_stream(r) && ls_reader_verify(r, NULL, NULL)) {
		fprintf(stderr, "livesnap blob: %s\n", ls_reader_error(r));
		goto out;
	}
	if (ls_reader_find_blob(r, p.operands[1], &data, &len)) {
		fprintf(stderr, "livesnap blob: %s: no blob '%s'\n",
			p.operands[0], p.operands[1]);
		goto out;
	}
	if (out_open("blob", p.noperands > 2 ? p.operands[2] : NULL, &o))
		goto out;
	status = write_all("blob", &o, data, len) ? 1 : 0;
	status = out_close("blob", &o, status);
out:
	ls_reader_close(r);
	return status;
}

const struct cli_cmd cmd_extract = {
    .name = "extract",
    .synopsis = "[options] FILE REGION [OUT]",
    .summary = "write a region's memory out of a snapshot file",
    .description =
	"Writes the memory of region REGION (a name 'livesnap info' shows)\n"
	"of snapshot file FILE to OUT (created or truncated), or to standard\n"
	"output: the region's size in bytes, raw. Every page is checked\n"
	"against its checksum on the way. Zero pages are holes in OUT when\n"
	"it is a regular file (a sparse file). Streams cannot be read here.\n"
	"For a delta, the region as it was at that snapshot, each page read\n"
	"from the newest file of its chain that holds it.\n",
    .exit_status = "  0  written\n"
		   "  1  the snapshot cannot be read, is damaged or has no\n"
		   "     such region, or OUT cannot be written\n" CLI_EXIT_USAGE,
    .min_operands = 2,
    .max_operands = 3,
    .run = extract_run,
};

const struct cli_cmd cmd_blob = {
    .name = "blob",
    .synopsis = "[options] FILE|- NAME [OUT]",
    .summary = "write a blob out of a snapshot",
    .description =
	"Writes blob NAME (a name 'livesnap info' shows; the VMM saves its\n"
	"state in blobs) of a snapshot file, or of a stream on standard\n"
	"input (-), to OUT (created or truncated) or to standard output.\n"
	"A blob is checked against its checksum when the snapshot is opened\n"
	"(a stream: when it is read whole, first).\n",
    .exit_status = "  0  written\n"
		   "  1  the snapshot cannot be read, is damaged or has no\n"
		   "     such blob, or OUT cannot be written\n" CLI_EXIT_USAGE,
    .min_operands = 2,
    .max_operands = 3,
    .run = blob_run,
};
