/* SPDX-License-Identifier: MIT */
/*
 * lsg-dumpcheck: checks raw dumps of a paused default guest's memory
 * against guest/abi.h, for the QEMU boot test.
 *
 *   lsg-dumpcheck STATUS WS
 *     STATUS: LSG_STATUS_SIZE bytes of guest memory from LSG_STATUS_GPA
 *     WS:     the working sets, from LSG_WS_GPA (ncpus * ws_pages pages)
 *
 * Prints one line of key=value pairs and exits 0 only if the status area
 * is complete and consistent, no vCPU counted an error, and every page is
 * valid (lsg_page_valid; each vCPU's in-flight page excused), was written
 * by the vCPU owning it, with a generation that vCPU has reached.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi.h"

struct dump {
	unsigned char *data;
	size_t size;
};

static int read_dump(const char *path, struct dump *d)
{
	FILE *f = fopen(path, "rb");
	long size;

	if (!f) {
		fprintf(stderr, "lsg-dumpcheck: %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "lsg-dumpcheck: %s: cannot size: %s\n", path,
			strerror(errno));
		fclose(f);
		return -1;
	}
	d->size = (size_t)size;
	d->data = malloc(d->size ? d->size : 1);
	if (!d->data || fread(d->data, 1, d->size, f) != d->size) {
		fprintf(stderr, "lsg-dumpcheck: %s: cannot read %zu bytes\n",
			path, d->size);
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

static int fail(const char *what)
{
	fprintf(stderr, "lsg-dumpcheck: %s\n", what);
	return 1;
}

/* Checks the status header; 0 if usable. */
static int check_status(const struct dump *st)
{
	const struct lsg_status *s = (const struct lsg_status *)st->data;

	if (st->size != LSG_STATUS_SIZE)
		return fail("status dump is not LSG_STATUS_SIZE bytes");
	if (s->magic != LSG_STATUS_MAGIC || s->version != LSG_STATUS_VERSION)
		return fail("status area: bad magic or version");
	if (s->ready != 1)
		return fail("status area: not ready");
	if (!s->ncpus || s->ncpus > LSG_MAX_CPUS || !s->ws_pages)
		return fail("status area: bad ncpus or ws_pages");
	if (s->ws_gpa != LSG_WS_GPA || s->mode > 1)
		return fail("status area: bad ws_gpa or mode");
	if (s->e820_entries > LSG_E820_MAX)
		return fail("status area: bad e820_entries");
	if (!memchr(s->cmdline, '\0', LSG_CMDLINE_MAX))
		return fail("status area: command line not terminated");
	return 0;
}

static const struct lsg_vcpu_status *vcpu(const struct dump *st, uint32_t i)
{
	return (const struct lsg_vcpu_status *)(st->data +
						LSG_VCPU_STATUS_OFF(i));
}

/* Counts the bad pages of vCPU i's working set. */
static uint64_t check_pages(const struct dump *st, const struct dump *ws,
			    uint32_t i, uint64_t *written)
{
	const struct lsg_status *s = (const struct lsg_status *)st->data;
	const struct lsg_vcpu_status *v = vcpu(st, i);
	uint64_t bad = 0;

	for (uint64_t p = 0; p < s->ws_pages; p++) {
		uint64_t index = i * s->ws_pages + p;

		switch (lsg_page_verdict(ws->data + index * LSG_PAGE_SIZE, index,
					 v, i)) {
		case LSG_PAGE_BAD:
			bad++;
			break;
		case LSG_PAGE_WRITTEN:
			(*written)++;
			break;
		default:
			break;
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct dump st, ws;
	const struct lsg_status *s;
	uint64_t bad = 0, written = 0;
	int ret = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: lsg-dumpcheck STATUS WS\n");
		return 2;
	}
	if (read_dump(argv[1], &st) || read_dump(argv[2], &ws))
		return 1;
	if (check_status(&st))
		return 1;
	s = (const struct lsg_status *)st.data;
	if (ws.size != s->ncpus * s->ws_pages * LSG_PAGE_SIZE)
		return fail("working-set dump does not match ncpus * ws_pages");
	printf("ncpus=%u ws_pages=%llu", s->ncpus,
	       (unsigned long long)s->ws_pages);
	for (uint32_t i = 0; i < s->ncpus; i++) {
		const struct lsg_vcpu_status *v = vcpu(&st, i);
		uint64_t cpu_written = 0;

		if (v->magic != LSG_STATUS_MAGIC || v->cpu != i ||
		    v->running != 1 || v->writes != v->generation ||
		    v->errors || !v->writes)
			ret = 1;
		bad += check_pages(&st, &ws, i, &cpu_written);
		if (cpu_written > v->writes)
			ret = 1;
		written += cpu_written;
		printf(" cpu%u_writes=%llu cpu%u_errors=%llu", i,
		       (unsigned long long)v->writes, i,
		       (unsigned long long)v->errors);
	}
	printf(" written=%llu bad=%llu\n", (unsigned long long)written,
	       (unsigned long long)bad);
	return ret || bad ? 1 : 0;
}
