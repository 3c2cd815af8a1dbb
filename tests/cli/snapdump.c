/* SPDX-License-Identifier: MIT */
/*
 * snapdump DIR BLOB: DIR/vm.snap, one page of region "ram" and a blob
 * "vm-config" holding BLOB (a VM snapshot's configuration, for info).
 *
 * snapdump DIR: the tests' known snapshot (tests/format/helpers.c) as
 * DIR/t.snap and as a stream DIR/t.stream, and what they must hold, made
 * from the content generator, not read back: DIR/region-NAME (the
 * region's bytes) and DIR/blob-NAME for each blob. For `livesnap extract`
 * and `livesnap blob`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void dump(const char *dir, const char *kind, const char *name,
		 const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s-%s", dir, kind, name);
	f = fopen(path, "we");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static int vm_snap(const char *dir, const char *blob)
{
	static const struct ls_layout_region ram = {
	    .name = "ram", .len = 4096, .page_size = 4096, .type = LS_MEM_ANON};
	const struct ls_layout layout = {.nregions = 1, .regions = &ram};
	static char page[4096] = "guest memory";
	char path[4096], err[LS_ERRMSG_MAX];
	struct ls_sink *sink;

	snprintf(path, sizeof(path), "%s/vm.snap", dir);
	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err))) {
		fprintf(stderr, "snapdump: %s\n", err);
		return 1;
	}
	if (sink->ops->start(sink, &layout) ||
	    sink->ops->write_pages(sink, 0, 0, page, 1) ||
	    sink->ops->put_blob(sink, "vm-config", blob, strlen(blob)) ||
	    sink->ops->commit(sink)) {
		fprintf(stderr, "snapdump: %s\n", sink->error);
		return 1;
	}
	ls_sink_destroy(sink);
	return 0;
}

int main(int argc, char **argv)
{
	char path[4096];
	struct tsnap t;

	if (argc == 3)
		return vm_snap(argv[1], argv[2]);
	if (argc != 2) {
		fprintf(stderr, "usage: snapdump DIR [VM-CONFIG]\n");
		return 2;
	}
	tsnap_default(&t, 7);
	snprintf(path, sizeof(path), "%s/t.snap", argv[1]);
	tsnap_file(&t, path, 0);
	snprintf(path, sizeof(path), "%s/t.stream", argv[1]);
	tsnap_stream_file(&t, path);
	for (uint32_t r = 0; r < t.layout.nregions; r++) {
		const struct ls_layout_region *g = &t.layout.regions[r];
		char *mem = calloc(1, g->len);

		if (!mem)
			return 1;
		for (uint64_t p = 0; p < g->len / g->page_size; p++)
			if (!tsnap_page_zero(&t, r, p))
				tsnap_page(&t, r, p, mem + p * g->page_size);
		dump(argv[1], "region", g->name, mem, g->len);
		free(mem);
	}
	for (unsigned b = 0; b < t.nblobs; b++) {
		char *buf = malloc(t.blob_lens[b] + 1);

		if (!buf)
			return 1;
		tsnap_blob(&t, b, buf);
		dump(argv[1], "blob", t.blob_names[b], buf, t.blob_lens[b]);
		free(buf);
	}
	return 0;
}
