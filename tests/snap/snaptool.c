/* SPDX-License-Identifier: MIT */
/*
 * ls-snaptool: host-side checks of a VM snapshot file, for the snap tests
 * and the demo.
 *
 *   ls-snaptool check-guest FILE
 *     Validates every workload page of the default guest (guest/abi.h) in
 *     the snapshot with lsg_page_valid(), excusing each vCPU's in-flight
 *     page, and prints one JSON line: per-vCPU counters from the status
 *     page and the page counts. Exit 0 only if every page is whole and the
 *     guest counted no errors.
 *
 *   ls-snaptool set-blob IN NAME VALUE-FILE OUT
 *     Writes OUT, a copy of snapshot IN whose blob NAME holds the bytes of
 *     VALUE-FILE: well-formed files with content a test chooses.
 *
 *   ls-snaptool compare FILE DUMP
 *     Compares the memory in the snapshot byte for byte with DUMP, a raw
 *     copy of guest RAM taken by the VMM during the pause (its regions
 *     concatenated in index order). Exit 0 only if identical.
 *
 * FILE may be a snapshot file or a stream (read into memory first).
 * Guest-physical addresses are mapped to snapshot regions with the
 * "vm-config" blob (vmm/snapshot.h); without it, region 0 is taken to
 * start at GPA 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "abi.h"
#include "livesnap.h"

#define CHUNK_PAGES 256u
#define CHUNK_BYTES (2u << 20) /* compare: one 2 MiB page at most */
#define MAX_SLOTS   8

struct slot {
	uint64_t gpa, size, offset; /* offset: bytes into the region */
	uint32_t region;
};

struct snap {
	const char *path;
	struct ls_reader *r;
	/* A delta: pages come through its chain (blobs are its own). */
	struct ls_chain *chain;
	struct ls_source *csrc;
	struct slot slots[MAX_SLOTS];
	unsigned nslots;
	/* A stream cannot be read at random: it is read into memory. */
	uint32_t nmem;
	void **mem;
	size_t *mem_len;
};

/* npages pages of a region, from the file or from a stream's copy. */
static int read_region(struct snap *s, uint32_t region, uint64_t first,
		       void *buf, uint64_t npages)
{
	struct ls_reader_region info;

	if (s->csrc)
		return s->csrc->ops->read_pages(s->csrc, region, first, buf,
						npages);
	if (!s->mem)
		return ls_reader_read_pages(s->r, region, first, buf, npages);
	if (region >= s->nmem || ls_reader_region(s->r, region, &info) ||
	    (first + npages) * info.page_size > s->mem_len[region])
		return -EINVAL;
	memcpy(buf, (char *)s->mem[region] + first * info.page_size,
	       npages * info.page_size);
	return 0;
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int die(const char *fmt, ...)
{
	va_list ap;

	fputs("ls-snaptool: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Reads the GPA -> region map from the vm-config blob. */
static int load_slots(struct snap *s)
{
	const void *data;
	size_t len, i;
	json_error_t jerr;
	json_t *cfg, *slots, *e;

	if (ls_reader_find_blob(s->r, "vm-config", &data, &len)) {
		struct ls_reader_region info;

		if (ls_reader_region(s->r, 0, &info))
			return die("%s: no memory region", s->path);
		s->slots[0] = (struct slot){.size = info.len};
		s->nslots = 1;
		return 0;
	}
	cfg = json_loadb(data, len, 0, &jerr);
	if (!cfg)
		return die("%s: vm-config blob is not JSON: %s", s->path,
			   jerr.text);
	slots = json_object_get(cfg, "slots");
	json_array_foreach(slots, i, e)
	{
		const char *name =
		    json_string_value(json_object_get(e, "region"));
		int idx = name ? ls_reader_find_region(s->r, name) : -ENOENT;

		if (idx < 0 || s->nslots == MAX_SLOTS) {
			json_decref(cfg);
			return die("%s: vm-config slot %zu names no region of "
				   "the snapshot",
				   s->path, i);
		}
		s->slots[s->nslots++] = (struct slot){
		    .gpa = json_integer_value(json_object_get(e, "gpa")),
		    .size = json_integer_value(json_object_get(e, "size")),
		    .offset = json_integer_value(json_object_get(e, "offset")),
		    .region = (uint32_t)idx,
		};
	}
	json_decref(cfg);
	return s->nslots ? 0 : die("%s: vm-config has no slots", s->path);
}

/*
 * len bytes at byte offset off of a region, whose pages may be larger
 * than the guest's 4 KiB (hugetlb RAM: the huge pages around them).
 */
static int read_region_bytes(struct snap *s, uint32_t region, uint64_t off,
			     void *buf, uint64_t len)
{
	struct ls_reader_region info;
	uint64_t first, n;
	char *bounce;
	int rc;

	if (ls_reader_region(s->r, region, &info) || !info.page_size)
		return -EINVAL;
	if (off % info.page_size == 0 && len % info.page_size == 0)
		return read_region(s, region, off / info.page_size, buf,
				   len / info.page_size);
	first = off / info.page_size;
	n = (off + len - 1) / info.page_size - first + 1;
	bounce = malloc(n * info.page_size);
	if (!bounce)
		return -ENOMEM;
	rc = read_region(s, region, first, bounce, n);
	if (!rc)
		memcpy(buf, bounce + (off - first * info.page_size), len);
	free(bounce);
	return rc;
}

/* Reads npages guest pages from gpa (page aligned, within one slot). */
static int read_gpa(struct snap *s, uint64_t gpa, void *buf, uint64_t npages)
{
	for (unsigned i = 0; i < s->nslots; i++) {
		const struct slot *sl = &s->slots[i];
		uint64_t end = gpa + npages * LSG_PAGE_SIZE;
		int rc;

		if (gpa < sl->gpa || end > sl->gpa + sl->size)
			continue;
		rc = read_region_bytes(s, sl->region, sl->offset + gpa - sl->gpa,
				       buf, npages * LSG_PAGE_SIZE);
		if (rc)
			return die("%s: reading GPA 0x%llx: %s", s->path,
				   (unsigned long long)gpa,
				   ls_reader_error(s->r));
		return 0;
	}
	return die("%s: GPA 0x%llx (+%llu pages) is not guest RAM", s->path,
		   (unsigned long long)gpa, (unsigned long long)npages);
}

/* Reads a whole stream into anonymous memory, one mapping per region. */
static int stream_to_memory(struct snap *s)
{
	struct ls_reader_region info;

	s->nmem = ls_reader_region_count(s->r);
	s->mem = calloc(s->nmem ? s->nmem : 1, sizeof(*s->mem));
	s->mem_len = calloc(s->nmem ? s->nmem : 1, sizeof(*s->mem_len));
	if (!s->mem || !s->mem_len)
		return die("out of memory");
	for (uint32_t i = 0; i < s->nmem; i++) {
		ls_reader_region(s->r, i, &info);
		s->mem[i] =
		    mmap(NULL, info.len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (s->mem[i] == MAP_FAILED) {
			s->mem[i] = NULL;
			return die("%s: %llu bytes for region '%s': %s",
				   s->path, (unsigned long long)info.len,
				   info.name, strerror(errno));
		}
		s->mem_len[i] = info.len;
	}
	if (ls_reader_restore_all(s->r, s->mem, s->mem_len, s->nmem))
		return die("%s", ls_reader_error(s->r));
	return 0;
}

static void snap_close(struct snap *s)
{
	for (uint32_t i = 0; s->mem && i < s->nmem; i++)
		if (s->mem[i])
			munmap(s->mem[i], s->mem_len[i]);
	free(s->mem);
	free(s->mem_len);
	ls_source_destroy(s->csrc);
	ls_chain_close(s->chain);
	if (s->r)
		ls_reader_close(s->r);
}

static int snap_open(struct snap *s, const char *path)
{
	char err[LS_ERRMSG_MAX];

	s->path = path;
	if (ls_reader_open(path, &s->r, err, sizeof(err)))
		return die("%s", err);
	if (ls_reader_is_stream(s->r) && stream_to_memory(s))
		return 1;
	if (!ls_reader_is_stream(s->r)) {
		struct ls_reader_info in;

		ls_reader_get_info(s->r, &in);
		if (in.delta &&
		    (ls_chain_open(path, &s->chain, err, sizeof(err)) ||
		     ls_chain_source(s->chain, &s->csrc)))
			return die("%s", s->chain ? ls_chain_error(s->chain)
						  : err);
	}
	return load_slots(s);
}

#define VCPU_STATUS_PAGES                                                      \
	((sizeof(struct lsg_vcpu_status) + LSG_PAGE_SIZE - 1) / LSG_PAGE_SIZE)

struct guest {
	struct lsg_status st;
	struct lsg_vcpu_status *vs; /* ncpus of them, page-rounded */
	uint64_t pages;		    /* workload pages of all vCPUs */
};

static int read_guest_status(struct snap *s, struct guest *g)
{
	static char page[sizeof(struct lsg_status) + LSG_PAGE_SIZE];
	uint64_t np = (sizeof(g->st) + LSG_PAGE_SIZE - 1) / LSG_PAGE_SIZE;

	if (read_gpa(s, LSG_STATUS_GPA, page, np))
		return 1;
	memcpy(&g->st, page, sizeof(g->st));
	if (g->st.magic != LSG_STATUS_MAGIC || !g->st.ready)
		return die("%s: no ready guest status page at GPA 0x%llx "
			   "(magic 0x%llx)",
			   s->path, LSG_STATUS_GPA,
			   (unsigned long long)g->st.magic);
	if (g->st.version != LSG_STATUS_VERSION || !g->st.ncpus ||
	    g->st.ncpus > LSG_MAX_CPUS || g->st.ws_gpa % LSG_PAGE_SIZE)
		return die("%s: guest status page is inconsistent (version "
			   "%u, %u vCPUs)",
			   s->path, g->st.version, g->st.ncpus);
	g->pages = g->st.ws_pages * g->st.ncpus;
	g->vs = calloc(g->st.ncpus, VCPU_STATUS_PAGES * LSG_PAGE_SIZE);
	if (!g->vs)
		return die("out of memory");
	for (uint32_t c = 0; c < g->st.ncpus; c++) {
		void *dst =
		    (char *)g->vs + c * VCPU_STATUS_PAGES * LSG_PAGE_SIZE;

		if (read_gpa(s, LSG_STATUS_GPA + LSG_VCPU_STATUS_OFF(c), dst,
			     VCPU_STATUS_PAGES))
			return 1;
	}
	return 0;
}

static const struct lsg_vcpu_status *vcpu(const struct guest *g, uint32_t c)
{
	return (const void *)((const char *)g->vs +
			      c * VCPU_STATUS_PAGES * LSG_PAGE_SIZE);
}

struct page_counts {
	uint64_t written, zero, bad, excused;
	int64_t first_bad; /* -1: none */
};

static int check_pages(struct snap *s, const struct guest *g,
		       struct page_counts *pc)
{
	char *buf = malloc(CHUNK_PAGES * LSG_PAGE_SIZE);

	if (!buf)
		return die("out of memory");
	pc->first_bad = -1;
	for (uint64_t idx = 0; idx < g->pages; idx += CHUNK_PAGES) {
		uint64_t n =
		    g->pages - idx < CHUNK_PAGES ? g->pages - idx : CHUNK_PAGES;

		if (read_gpa(s, g->st.ws_gpa + idx * LSG_PAGE_SIZE, buf, n)) {
			free(buf);
			return 1;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint32_t owner = (uint32_t)((idx + i) / g->st.ws_pages);

			switch (lsg_page_verdict(buf + i * LSG_PAGE_SIZE, idx + i,
						 vcpu(g, owner), owner)) {
			case LSG_PAGE_ZERO:
				pc->zero++;
				break;
			case LSG_PAGE_WRITTEN:
				pc->written++;
				break;
			case LSG_PAGE_INFLIGHT:
				pc->excused++;
				break;
			case LSG_PAGE_BAD:
				if (pc->first_bad < 0)
					pc->first_bad = (int64_t)(idx + i);
				pc->bad++;
				break;
			}
		}
	}
	free(buf);
	return 0;
}

static int cmd_check_guest(const char *path)
{
	struct snap s = {0};
	struct guest g = {0};
	struct page_counts pc = {0};
	uint64_t errors = 0;
	json_t *out, *cpus;
	int rc = 1;

	if (snap_open(&s, path) || read_guest_status(&s, &g) ||
	    check_pages(&s, &g, &pc))
		goto out;
	cpus = json_array();
	for (uint32_t c = 0; c < g.st.ncpus; c++) {
		const struct lsg_vcpu_status *v = vcpu(&g, c);

		errors += v->errors;
		json_array_append_new(
		    cpus, json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:I}", "cpu", c,
				    "generation", (json_int_t)v->generation,
				    "writes", (json_int_t)v->writes, "errors",
				    (json_int_t)v->errors, "validated",
				    (json_int_t)v->validated, "inflight",
				    (json_int_t)v->inflight, "max_lat_ns",
				    (json_int_t)v->max_lat_ns));
	}
	out = json_pack("{s:b,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "ok",
			!pc.bad && !errors, "ncpus", g.st.ncpus, "pages",
			(json_int_t)g.pages, "written", (json_int_t)pc.written,
			"zero", (json_int_t)pc.zero, "excused",
			(json_int_t)pc.excused, "bad", (json_int_t)pc.bad,
			"first_bad", (json_int_t)pc.first_bad, "cpus", cpus);
	json_dumpf(out, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(out);
	if (pc.bad)
		fprintf(stderr,
			"ls-snaptool: %s: %llu workload pages are torn or "
			"wrong (first: page %lld)\n",
			path, (unsigned long long)pc.bad,
			(long long)pc.first_bad);
	if (errors)
		fprintf(stderr,
			"ls-snaptool: %s: the guest counted %llu bad pages\n",
			path, (unsigned long long)errors);
	rc = pc.bad || errors;
out:
	free(g.vs);
	snap_close(&s);
	return rc;
}

/* Compares region by region, chunk by chunk, with the raw dump. */
static int cmd_compare(const char *path, const char *dump)
{
	struct snap s = {0};
	char *a = malloc(CHUNK_BYTES), *b = malloc(CHUNK_BYTES);
	uint64_t diff = 0, pos = 0;
	int fd = -1, rc = 1;

	if (!a || !b) {
		die("out of memory");
		goto out;
	}
	if (snap_open(&s, path))
		goto out;
	fd = open(dump, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		die("%s: %s", dump, strerror(errno));
		goto out;
	}
	for (uint32_t reg = 0; reg < ls_reader_region_count(s.r); reg++) {
		struct ls_reader_region info;
		uint64_t pages;

		ls_reader_region(s.r, reg, &info);
		pages = info.len / info.page_size;
		uint64_t step = CHUNK_BYTES / info.page_size;

		if (!step || CHUNK_BYTES % info.page_size) {
			die("%s: region '%s' has %u-byte pages; this tool "
			    "handles up to %u",
			    path, info.name, info.page_size, CHUNK_BYTES);
			goto out;
		}
		for (uint64_t p = 0; p < pages; p += step) {
			uint64_t n = pages - p < step ? pages - p : step;
			size_t bytes = n * info.page_size;
			ssize_t got;

			if (read_region(&s, reg, p, a, n)) {
				die("%s: %s", path, ls_reader_error(s.r));
				goto out;
			}
			got = pread(fd, b, bytes, (off_t)pos);
			if (got != (ssize_t)bytes) {
				die("%s: shorter than the snapshot's memory "
				    "(at byte %llu)",
				    dump, (unsigned long long)pos);
				goto out;
			}
			for (uint64_t i = 0; i < n; i++)
				if (memcmp(a + i * info.page_size,
					   b + i * info.page_size,
					   info.page_size) &&
				    diff++ == 0)
					fprintf(stderr,
						"ls-snaptool: region '%s' page "
						"%llu differs from the dump\n",
						info.name,
						(unsigned long long)(p + i));
			pos += bytes;
		}
	}
	if (pread(fd, a, 1, (off_t)pos) != 0) {
		die("%s: longer than the snapshot's memory (%llu bytes)", dump,
		    (unsigned long long)pos);
		goto out;
	}
	printf("{\"identical\":%s,\"bytes\":%llu,\"pages_differing\":%llu}\n",
	       diff ? "false" : "true", (unsigned long long)pos,
	       (unsigned long long)diff);
	rc = diff != 0;
out:
	if (fd >= 0)
		close(fd);
	snap_close(&s);
	free(a);
	free(b);
	return rc;
}

static bool all_zero(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Copies every region's non-zero pages of s into sink. */
static int copy_regions(struct snap *s, struct ls_sink *sink, char *buf)
{
	for (uint32_t reg = 0; reg < ls_reader_region_count(s->r); reg++) {
		struct ls_reader_region info;
		uint64_t pages, step;

		ls_reader_region(s->r, reg, &info);
		pages = info.len / info.page_size;
		step = CHUNK_BYTES / info.page_size;
		for (uint64_t p = 0; p < pages; p += step) {
			uint64_t n = pages - p < step ? pages - p : step;

			if (read_region(s, reg, p, buf, n))
				return die("%s: %s", s->path,
					   ls_reader_error(s->r));
			for (uint64_t i = 0; i < n; i++) {
				const char *pg = buf + i * info.page_size;

				if (!all_zero(pg, info.page_size) &&
				    sink->ops->write_pages(sink, reg, p + i, pg,
							   1))
					return die("writing: %s", sink->error);
			}
		}
	}
	return 0;
}

/*
 * set-blob IN NAME VALUE OUT: a copy of snapshot IN with blob NAME's
 * content replaced by the file VALUE (added if absent): valid checksums
 * around content a test chooses, e.g. a vm-config of another VM.
 */
static int cmd_set_blob(const char *in, const char *name, const char *value,
			const char *out)
{
	struct ls_layout_region lr[64];
	struct ls_layout layout = {.regions = lr};
	struct snap s = {0};
	struct ls_sink *sink = NULL;
	char err[LS_ERRMSG_MAX], *buf = malloc(CHUNK_BYTES), *val = NULL;
	size_t vlen = 0;
	FILE *f = fopen(value, "rb");
	int rc = 1;

	if (!buf || !f || snap_open(&s, in)) {
		if (!f)
			die("%s: %s", value, strerror(errno));
		goto out;
	}
	val = malloc(1 << 20);
	vlen = val ? fread(val, 1, 1 << 20, f) : 0;
	layout.nregions = ls_reader_region_count(s.r);
	if (!val || layout.nregions > 64) {
		die("out of memory or too many regions");
		goto out;
	}
	for (uint32_t i = 0; i < layout.nregions; i++) {
		struct ls_reader_region info;

		ls_reader_region(s.r, i, &info);
		memcpy(lr[i].name, info.name, LS_NAME_MAX);
		lr[i].len = info.len;
		lr[i].page_size = info.page_size;
		lr[i].type = info.type;
	}
	if (ls_sink_file_create(&sink, out, 0, err, sizeof(err))) {
		die("%s", err);
		goto out;
	}
	if (sink->ops->start(sink, &layout) || copy_regions(&s, sink, buf))
		goto fail;
	for (uint32_t i = 0; i < ls_reader_blob_count(s.r); i++) {
		const char *bname;
		const void *data;
		size_t len;

		ls_reader_blob(s.r, i, &bname, &data, &len);
		if (strcmp(bname, name) &&
		    sink->ops->put_blob(sink, bname, data, len))
			goto fail;
	}
	if (sink->ops->put_blob(sink, name, val, vlen) ||
	    sink->ops->commit(sink))
		goto fail;
	rc = 0;
	goto out;
fail:
	die("writing %s: %s", out, sink->error);
	sink->ops->abort(sink);
out:
	if (sink)
		ls_sink_destroy(sink);
	if (f)
		fclose(f);
	free(val);
	free(buf);
	snap_close(&s);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "check-guest"))
		return cmd_check_guest(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "compare"))
		return cmd_compare(argv[2], argv[3]);
	if (argc == 6 && !strcmp(argv[1], "set-blob"))
		return cmd_set_blob(argv[2], argv[3], argv[4], argv[5]);
	fprintf(stderr, "usage: ls-snaptool check-guest FILE\n"
			"       ls-snaptool compare FILE RAM-DUMP\n"
			"       ls-snaptool set-blob IN NAME VALUE-FILE OUT\n");
	return 2;
}
