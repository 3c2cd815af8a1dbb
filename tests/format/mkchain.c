/* SPDX-License-Identifier: MIT */
/*
 * mkchain DIR N: a chain of snapshot files of 4 MiB of this program's
 * memory, taken by the engine: DIR/base.snap (tracked, full) and
 * DIR/d1.snap .. DIR/dN.snap (deltas), 64 pages changed between two (one
 * of them cleared to zero). DIR/ref-K.bin holds memory at snapshot K's
 * begin (0: the base), for the CLI tests to compare restores against.
 *
 * mkchain --check FILE REF: restores the chain that ends with FILE (a
 * full snapshot: itself) eagerly and compares it with REF: exit 0 if
 * equal, 1 with a message if not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "livesnap.h"

#define LEN (4u << 20)

static int fail(const char *what, const char *why)
{
	fprintf(stderr, "mkchain: %s: %s\n", what, why);
	return 1;
}

static int save(const char *path, const void *mem)
{
	FILE *f = fopen(path, "w");
	int ok = f && fwrite(mem, 1, LEN, f) == LEN;

	if (f && fclose(f))
		ok = 0;
	return ok ? 0 : fail(path, "cannot write");
}

static int snap(struct ls_ctx *ctx, const char *path, bool delta, int k)
{
	struct ls_snapshot_opts o = {.track = true, .delta = delta};
	char err[LS_ERRMSG_MAX];
	struct ls_snapshot *s;
	struct ls_sink *sink;

	if (ls_sink_file_create(&sink, path, 0, err, sizeof(err)))
		return fail(path, err);
	if (ls_snapshot_create(ctx, sink, &o, &s))
		return fail(path, ls_ctx_error(ctx));
	ls_snapshot_add_blob(s, "state", &k, sizeof(k));
	if (ls_snapshot_begin(s) || ls_snapshot_wait(s))
		return fail(path, ls_snapshot_error(s));
	ls_snapshot_destroy(s);
	return 0;
}

static int check(const char *file, const char *ref)
{
	unsigned char *mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *want = malloc(LEN);
	char err[LS_ERRMSG_MAX];
	struct ls_chain *c;
	FILE *f = fopen(ref, "r");

	if (mem == MAP_FAILED || !want || !f || fread(want, 1, LEN, f) != LEN)
		return fail(ref, "cannot read");
	fclose(f);
	if (ls_chain_open(file, &c, err, sizeof(err)))
		return fail("ls_chain_open", err);
	if (ls_chain_restore_region(c, 0, mem, LEN))
		return fail("restore", ls_chain_error(c));
	ls_chain_close(c);
	if (memcmp(mem, want, LEN))
		return fail(file, "restored memory differs from the reference");
	munmap(mem, LEN);
	free(want);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned char *mem;
	char err[LS_ERRMSG_MAX], path[4096];
	struct ls_ctx *ctx;
	int n;

	if (argc == 4 && !strcmp(argv[1], "--check"))
		return check(argv[2], argv[3]);
	if (argc != 3 || (n = atoi(argv[2])) < 0) {
		fprintf(stderr, "usage: mkchain DIR N\n");
		return 2;
	}
	mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap", "failed");
	for (unsigned p = 0; p < LEN / 4096; p += 2)
		memset(mem + p * 4096, (int)(p % 251) + 1, 4096);
	if (ls_ctx_create(&ctx, err, sizeof(err)))
		return fail("ls_ctx_create", err);
	if (ls_region_add(ctx, "ram", mem, LEN) < 0)
		return fail("ls_region_add", ls_ctx_error(ctx));
	for (int k = 0; k <= n; k++) {
		if (k) {
			for (unsigned i = 0; i < 64; i++)
				mem[(size_t)((k * 97 + i * 13) % (LEN / 4096)) *
					    4096 + i] = (unsigned char)(k + i);
			memset(mem + (size_t)(k * 7) * 4096, 0, 4096);
		}
		snprintf(path, sizeof(path), "%s/ref-%d.bin", argv[1], k);
		if (save(path, mem))
			return 1;
		if (k)
			snprintf(path, sizeof(path), "%s/d%d.snap", argv[1], k);
		else
			snprintf(path, sizeof(path), "%s/base.snap", argv[1]);
		if (snap(ctx, path, k > 0, k))
			return 1;
	}
	ls_ctx_destroy(ctx);
	return 0;
}
