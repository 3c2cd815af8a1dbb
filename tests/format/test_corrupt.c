/* SPDX-License-Identifier: MIT */
/*
 * Description: damaged snapshots are refused with a one-line message and
 * never crash the reader (run under ASan/UBSan too). Bytes are flipped in
 * the header, every table, the data and the blobs of a file and all over
 * a stream; both are truncated at many offsets; and files with valid
 * checksums but impossible offsets and sizes check that bounds are
 * enforced on their own, not just by the checksums.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/format.h"
#include "helpers.h"

static int setup(void **state)
{
	*state = tdir_create();
	return 0;
}

static int teardown(void **state)
{
	tdir_remove(*state);
	return 0;
}

/*
 * Opens and verifies path: returns 0 if both pass, else the error, with
 * the message checked to be one non-empty line that names the snapshot.
 */
static int open_and_verify(const char *path, char *msg)
{
	struct ls_reader *r;
	char err[LS_ERRMSG_MAX] = "";
	int ret;

	ret = ls_reader_open(path, &r, err, sizeof(err));
	if (!ret) {
		ret = ls_reader_verify(r, NULL, NULL);
		snprintf(err, sizeof(err), "%s", ls_reader_error(r));
		ls_reader_close(r);
	}
	if (ret) {
		if (strncmp(err, "snapshot '", 10) || strchr(err, '\n') ||
		    strlen(err) < 20)
			fail_msg("bad message: '%s'", err);
		if (msg)
			snprintf(msg, LS_ERRMSG_MAX, "%s", err);
	}
	return ret;
}

static void flip(int fd, uint64_t off)
{
	unsigned char c;

	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x10;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
}

/* Flips each chosen byte in turn; every one must be caught. */
static void flip_all(const char *path, uint64_t size, uint64_t dense_from,
		     uint64_t dense_to, unsigned stride)
{
	int fd = open(path, O_RDWR);
	unsigned tried = 0;

	assert_true(fd >= 0);
	for (uint64_t off = 0; off < size; off++) {
		bool dense = off < sizeof(struct lsf_header) ||
			     (off >= dense_from && off < dense_to);
		char msg[LS_ERRMSG_MAX];

		if (!dense && off % stride)
			continue;
		flip(fd, off);
		if (open_and_verify(path, msg) == 0)
			fail_msg("flipped byte %llu of %llu went unnoticed",
				 (unsigned long long)off,
				 (unsigned long long)size);
		flip(fd, off);
		tried++;
	}
	close(fd);
	assert_int_equal(open_and_verify(path, NULL), 0);
	assert_true(tried > 500);
}

static void test_file_flips(void **state)
{
	const char *path = tpath(*state, "snap");
	struct tsnap t;
	struct stat st;

	tsnap_small(&t, 1);
	tsnap_file(&t, path, 0);
	assert_int_equal(stat(path, &st), 0);
	/* Every byte of the header and of everything after the data. */
	flip_all(path, (uint64_t)st.st_size, 4096 + (80 << 10),
		 (uint64_t)st.st_size, 61);
}

/* Truncates a copy of the file at each offset; all must be refused. */
static void truncations(const char *path, const uint64_t *offs, size_t n)
{
	const char *dir_copy = "copy";
	char copy[4200], msg[LS_ERRMSG_MAX];
	size_t len;
	char *data = tslurp(path, &len);

	snprintf(copy, sizeof(copy), "%s.%s", path, dir_copy);
	tspit(copy, data, len);
	/* Shrinking only: go from the largest offset down. */
	for (size_t i = n; i-- > 0;) {
		assert_true(offs[i] < len);
		assert_int_equal(truncate(copy, (off_t)offs[i]), 0);
		if (open_and_verify(copy, msg) == 0)
			fail_msg("truncation at %llu of %zu went unnoticed",
				 (unsigned long long)offs[i], len);
		if (offs[i] >= 8 && !strstr(msg, "truncated"))
			fail_msg("at %llu: '%s' does not say truncated",
				 (unsigned long long)offs[i], msg);
	}
	unlink(copy);
	free(data);
}

static void test_file_truncations(void **state)
{
	const char *small = tpath(*state, "small");
	const char *big = tpath(*state, "big");
	uint64_t offs[400];
	size_t n = 0;
	struct tsnap t;
	struct stat st;
	uint64_t rnd = 12345;

	tsnap_small(&t, 2);
	tsnap_file(&t, small, 0);
	assert_int_equal(stat(small, &st), 0);
	for (uint64_t off = 0; off < (uint64_t)st.st_size && n < 399;
	     off += 512)
		offs[n++] = off;
	offs[n++] = (uint64_t)st.st_size - 1;
	truncations(small, offs, n);

	tsnap_default(&t, 3);
	tsnap_file(&t, big, 0);
	assert_int_equal(stat(big, &st), 0);
	for (n = 0; n < 40; n++) {
		rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
		offs[n] = (rnd >> 11) % (uint64_t)st.st_size;
	}
	/* ascending, as truncations() walks down */
	for (size_t i = 1; i < n; i++)
		for (size_t k = i; k > 0 && offs[k - 1] > offs[k]; k--) {
			uint64_t tmp = offs[k];

			offs[k] = offs[k - 1];
			offs[k - 1] = tmp;
		}
	truncations(big, offs, n);
}

static void test_stream_flips_and_truncations(void **state)
{
	const char *path = tpath(*state, "stream");
	uint64_t offs[400];
	size_t n = 0;
	struct tsnap t;
	struct stat st;

	tsnap_small(&t, 4);
	tsnap_stream_file(&t, path);
	assert_int_equal(stat(path, &st), 0);
	/* Records: dense over the head and the last 400 bytes. */
	flip_all(path, (uint64_t)st.st_size, (uint64_t)st.st_size - 400,
		 (uint64_t)st.st_size, 53);
	for (uint64_t off = 0; off < (uint64_t)st.st_size && n < 399;
	     off += 256)
		offs[n++] = off;
	offs[n++] = (uint64_t)st.st_size - 1;
	truncations(path, offs, n);
}

static void expect_refused(const char *path, int err, const char *words)
{
	char msg[LS_ERRMSG_MAX];
	int ret = open_and_verify(path, msg);

	if (ret != err || !strstr(msg, words))
		fail_msg("got %d '%s', wanted %d and '%s'", ret, msg, err,
			 words);
}

static void test_not_snapshots(void **state)
{
	const char *path = tpath(*state, "x");
	char buf[5000];

	tspit(path, "", 0);
	expect_refused(path, -EBADMSG, "truncated: 0 bytes");
	tspit(path, "LSNPFIL", 7);
	expect_refused(path, -EBADMSG, "truncated: 7 bytes");
	memset(buf, 'x', sizeof(buf));
	tspit(path, buf, sizeof(buf));
	expect_refused(path, -EBADMSG, "not a livesnap snapshot");
	memcpy(buf, "LSNPFILE", 8);
	tspit(path, buf, 100);
	expect_refused(path, -EBADMSG, "its header alone needs 4096");
	memcpy(buf, "LSNPSTRM", 8);
	tspit(path, buf, 30);
	expect_refused(path, -EBADMSG, "inside a record header");
	expect_refused(*state, -EISDIR, "is a directory");
	expect_refused("/nonexistent", -ENOENT, "No such file");
}

/* Rewrites the header (and its checksum) of the file at path. */
static void edit_header(const char *path,
			void (*edit)(struct lsf_header *, void *), void *arg)
{
	union {
		struct lsf_header h;
		char page[LSF_HEADER_BYTES];
	} hp;
	int fd = open(path, O_RDWR);

	assert_int_equal(pread(fd, &hp, sizeof(hp), 0), sizeof(hp));
	edit(&hp.h, arg);
	hp.h.header_csum = lsf_header_csum(&hp.h);
	assert_int_equal(pwrite(fd, &hp, sizeof(hp), 0), sizeof(hp));
	close(fd);
}

static void set_version(struct lsf_header *h, void *arg)
{
	h->version_major = 2;
}

static void set_incompat(struct lsf_header *h, void *arg)
{
	h->incompat_flags = 4;
}

static void set_nregions(struct lsf_header *h, void *arg)
{
	h->nregions = 5000;
}

static void set_size(struct lsf_header *h, void *arg)
{
	h->file_size -= 1;
}

struct region_edit {
	const char *path;
	int field;
	uint64_t value;
};

/* Edits region 0 in the table and re-seals table and header. */
static void set_region(struct lsf_header *h, void *arg)
{
	struct region_edit *e = arg;
	struct lsf_region rt[2];
	int fd = open(e->path, O_RDWR);

	assert_int_equal(h->nregions, 2);
	assert_int_equal(pread(fd, rt, sizeof(rt), (off_t)h->regions_off),
			 sizeof(rt));
	switch (e->field) {
	case 0:
		rt[0].data_off = e->value;
		break;
	case 1:
		rt[0].csums_off = e->value;
		break;
	case 2:
		rt[0].len = e->value;
		rt[0].npages = e->value / 4096;
		break;
	case 3:
		rt[0].pages_nonzero = e->value;
		break;
	case 4:
		memcpy(rt[1].name, rt[0].name, LS_NAME_MAX);
		break;
	case 5:
		rt[0].page_size = (uint32_t)e->value;
		break;
	}
	h->regions_csum = XXH3_64bits(rt, sizeof(rt));
	assert_int_equal(pwrite(fd, rt, sizeof(rt), (off_t)h->regions_off),
			 sizeof(rt));
	close(fd);
}

/*
 * A checksum table of 1 MiB and more is mapped, not read: it opens and
 * reads back like any other, and a damaged one is refused the same way.
 */
static void test_mapped_table(void **state)
{
	const char *path = tpath(*state, "large");
	struct ls_reader *r;
	struct lsf_region rt;
	struct lsf_header h;
	char err[LS_ERRMSG_MAX];
	struct tsnap t;
	int fd;

	tsnap_large_sparse(&t, 11);
	tsnap_file(&t, path, 0);
	assert_int_equal(ls_reader_open(path, &r, err, sizeof(err)), 0);
	tsnap_check_reader(&t, r);
	assert_int_equal(ls_reader_verify(r, NULL, NULL), 0);
	ls_reader_close(r);

	fd = open(path, O_RDWR);
	assert_int_equal(pread(fd, &h, sizeof(h), 0), sizeof(h));
	assert_int_equal(pread(fd, &rt, sizeof(rt), (off_t)h.regions_off),
			 sizeof(rt));
	assert_int_equal(rt.npages * 8, 1u << 20);
	flip(fd, rt.csums_off + 4096 * 8 + 3); /* page 4096's checksum */
	close(fd);
	expect_refused(path, -EBADMSG,
		       "region 'ram' checksum table (checksum mismatch)");
}

static void region_case(const char *dir, const struct tsnap *t, int field,
			uint64_t value, const char *words)
{
	const char *path = tpath(dir, "crafted");
	struct region_edit e = {path, field, value};

	tsnap_file(t, path, 0);
	edit_header(path, set_region, &e);
	expect_refused(path, -EBADMSG, words);
	unlink(path);
}

/* Valid checksums, impossible contents: the bounds checks alone. */
static void test_crafted(void **state)
{
	const char *path = tpath(*state, "crafted");
	struct tsnap t;

	tsnap_small(&t, 5);
	tsnap_file(&t, path, 0);
	edit_header(path, set_version, NULL);
	expect_refused(path, -ENOTSUP, "format version 2.1 is not supported");
	tsnap_file(&t, path, 0);
	edit_header(path, set_incompat, NULL);
	expect_refused(path, -ENOTSUP, "format features 0x4");
	tsnap_file(&t, path, 0);
	edit_header(path, set_nregions, NULL);
	expect_refused(path, -EBADMSG, "5000 regions");
	tsnap_file(&t, path, 0);
	edit_header(path, set_size, NULL);
	expect_refused(path, -EBADMSG, "the header says");

	region_case(*state, &t, 0, 1ull << 40,
		    "truncated: region 'ram' data ends at 1099511693312");
	region_case(*state, &t, 0, 4097, "corrupt data offset 4097");
	region_case(*state, &t, 1, UINT64_MAX - 8, "checksum table at offset");
	region_case(*state, &t, 2, 1ull << 50, "corrupt size");
	region_case(*state, &t, 2, 1ull << 30, "data ends at");
	region_case(*state, &t, 3, 17, "corrupt size");
	region_case(*state, &t, 3, 1, "non-zero pages in its table");
	region_case(*state, &t, 4, 0, "appears twice");
	region_case(*state, &t, 5, 4096 + 1, "corrupt size");
}

/* ---- crafted streams: valid checksums, impossible contents ---- */

struct sbuf {
	char *p;
	size_t len;
	uint64_t chain, records, pages, blobs;
};

static void sb_put(struct sbuf *sb, const void *data, size_t len)
{
	if (!len)
		return;
	sb->p = realloc(sb->p, sb->len + len);
	memcpy(sb->p + sb->len, data, len);
	sb->len += len;
}

/* Appends a sealed record; payload is one or two pieces. */
static void sb_rec(struct sbuf *sb, uint32_t type, uint32_t index,
		   uint64_t first, uint64_t count, const void *a, size_t alen,
		   const void *b, size_t blen)
{
	struct lss_rec rec = {type, index, alen + blen, first, count, 0, 0};
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, a, alen);
	XXH3_64bits_update(&st, b, blen);
	rec.data_csum = XXH3_64bits_digest(&st);
	lss_rec_seal(&rec);
	sb_put(sb, &rec, sizeof(rec));
	sb_put(sb, a, alen);
	sb_put(sb, b, blen);
	if (type != LSS_REC_TRAILER) {
		sb->chain = lss_chain(sb->chain, &rec);
		sb->records++;
	}
}

/* Magic and a head with one region of 4 pages of 4 KiB. */
static void sb_head(struct sbuf *sb, uint16_t major, uint32_t nregions)
{
	struct lss_head head = {.version_major = major,
				.host_page_size = 4096,
				.nregions = nregions};
	struct lss_region reg = {"ram", 4 * 4096, 4096, LS_MEM_ANON};

	memset(sb, 0, sizeof(*sb));
	sb_put(sb, LSS_MAGIC, LSF_MAGIC_LEN);
	sb_rec(sb, LSS_REC_HEAD, 0, 0, 0, &head, sizeof(head), &reg,
	       sizeof(reg));
}

static void sb_pages(struct sbuf *sb, uint32_t region, uint64_t first,
		     uint64_t count, uint64_t len)
{
	char *data = calloc(1, len + 1);

	memset(data, 0x42, len);
	sb_rec(sb, LSS_REC_PAGES, region, first, count, data, len, NULL, 0);
	sb->pages += count;
	free(data);
}

static void sb_blob(struct sbuf *sb, const char *name, size_t namelen)
{
	char n[LS_NAME_MAX];

	memset(n, 'n', sizeof(n));
	memcpy(n, name, namelen);
	sb_rec(sb, LSS_REC_BLOB, 0, 0, 0, n, sizeof(n), "blob", 4);
	sb->blobs++;
}

static void sb_trailer(struct sbuf *sb, int64_t pages_delta, uint64_t chain_xor)
{
	struct lss_trailer t = {
	    .records = sb->records,
	    .pages = sb->pages + (uint64_t)pages_delta,
	    .blobs = sb->blobs,
	    .bytes = sb->len,
	    .chain = sb->chain ^ chain_xor,
	};

	sb_rec(sb, LSS_REC_TRAILER, 0, 0, 0, &t, sizeof(t), NULL, 0);
}

/*
 * Restores the crafted stream into heap memory (ASan watches its edges)
 * and expects err and words; 0 means it must restore whole.
 */
static void sb_expect(const char *dir, struct sbuf *sb, int err,
		      const char *words)
{
	const char *path = tpath(dir, "crafted.stream");
	char msg[LS_ERRMSG_MAX] = "";
	struct ls_reader *r;
	size_t len = 4 * 4096;
	void *mem = aligned_alloc(4096, len);
	int ret;

	memset(mem, 0, len);
	tspit(path, sb->p, sb->len);
	ret = ls_reader_open(path, &r, msg, sizeof(msg));
	if (!ret) {
		ret = ls_reader_restore_all(r, &mem, &len, 1);
		snprintf(msg, sizeof(msg), "%s", ls_reader_error(r));
		ls_reader_close(r);
	}
	if (ret != err || (err && !strstr(msg, words)))
		fail_msg("got %d '%s', wanted %d and '%s'", ret, msg, err,
			 words);
	free(mem);
	free(sb->p);
}

static void test_crafted_stream(void **state)
{
	struct sbuf sb;

	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 1, 2, 2 * 4096);
	sb_blob(&sb, "state", 6);
	sb_trailer(&sb, 0, 0);
	sb_expect(*state, &sb, 0, NULL);

	sb_head(&sb, 2, 1);
	sb_expect(*state, &sb, -ENOTSUP, "format version 2.0");
	sb_head(&sb, 1, 3);
	sb_expect(*state, &sb, -EBADMSG, "corrupt head record (3 regions");

	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 4, 1, 4096);
	sb_expect(*state, &sb, -EBADMSG, "pages record out of range");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 3, 2, 2 * 4096);
	sb_expect(*state, &sb, -EBADMSG, "pages record out of range");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 0, 1ull << 52, 4096);
	sb_expect(*state, &sb, -EBADMSG, "pages record out of range");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 0, 1, 3 * 4096);
	sb_expect(*state, &sb, -EBADMSG, "pages record out of range");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 5, 0, 1, 4096);
	sb_expect(*state, &sb, -EBADMSG, "pages record for region 5");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 0, 2, 2 * 4096);
	sb_pages(&sb, 0, 1, 1, 4096);
	sb_expect(*state, &sb, -EBADMSG, "region 'ram' page 1 sent twice");

	sb_head(&sb, 1, 1);
	sb_rec(&sb, 99, 0, 0, 0, NULL, 0, NULL, 0);
	sb_expect(*state, &sb, -EBADMSG, "unexpected record type 99");
	sb_head(&sb, 1, 1);
	sb_rec(&sb, LSS_REC_HEAD, 0, 0, 0, NULL, 0, NULL, 0);
	sb_expect(*state, &sb, -EBADMSG, "unexpected record type 1");
	sb_head(&sb, 1, 1);
	sb_rec(&sb, LSS_REC_ABORT, 0, 0, 0, NULL, 0, NULL, 0);
	sb_expect(*state, &sb, -EBADMSG, "the writer aborted");

	sb_head(&sb, 1, 1);
	sb_blob(&sb, "", 0); /* 64 bytes, no NUL */
	sb_expect(*state, &sb, -EBADMSG, "corrupt blob record (its name)");
	sb_head(&sb, 1, 1);
	sb_blob(&sb, "a", 2);
	sb_blob(&sb, "a", 2);
	sb_expect(*state, &sb, -EBADMSG, "blob 'a' appears twice");
	sb_head(&sb, 1, 1);
	sb_rec(&sb, LSS_REC_BLOB, 0, 0, 0, "x", 1, NULL, 0);
	sb_expect(*state, &sb, -EBADMSG, "corrupt blob record (1 bytes)");

	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 0, 1, 4096);
	sb_trailer(&sb, 1, 0);
	sb_expect(*state, &sb, -EBADMSG, "incomplete: read 2 records, 1 pages");
	sb_head(&sb, 1, 1);
	sb_pages(&sb, 0, 0, 1, 4096);
	sb_trailer(&sb, 0, 1);
	sb_expect(*state, &sb, -EBADMSG, "chain mismatch");
}

/*
 * Random damage: a few random bytes anywhere, many times. Verify must pass
 * only if the bytes are the original ones (a byte may be overwritten with
 * its own value). Restore must refuse, or give exactly the original
 * content: it may accept damage where it never reads (inside a zero
 * page's hole), never return wrong data.
 */
static void restore_damaged(const char *path, const struct tsnap *t)
{
	struct ls_reader *r;
	void *mem[2];
	size_t lens[2];

	for (uint32_t i = 0; i < 2; i++) {
		lens[i] = t->layout.regions[i].len;
		mem[i] = aligned_alloc(4096, lens[i]);
		memset(mem[i], 0, lens[i]);
	}
	if (!ls_reader_open(path, &r, NULL, 0)) {
		if (!ls_reader_restore_all(r, mem, lens, 2)) {
			tsnap_check_reader(t, r);
			tsnap_check_region(t, 0, mem[0]);
			tsnap_check_region(t, 1, mem[1]);
		}
		ls_reader_close(r);
	}
	free(mem[0]);
	free(mem[1]);
}

static void damage_rounds(const char *dir, const struct tsnap *t, bool stream)
{
	const char *path = tpath(dir, "damaged");
	uint64_t rnd = stream ? 99 : 7;
	size_t len;
	char *orig, *bad;

	if (stream)
		tsnap_stream_file(t, path);
	else
		tsnap_file(t, path, 0);
	orig = tslurp(path, &len);
	bad = malloc(len);
	for (int round = 0; round < 150; round++) {
		int n;

		memcpy(bad, orig, len);
		rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
		n = 1 + (int)((rnd >> 33) % 16);
		for (int i = 0; i < n; i++) {
			rnd = rnd * 6364136223846793005ull + 1;
			bad[(rnd >> 20) % len] = (char)(rnd >> 56);
		}
		tspit(path, bad, len);
		if (open_and_verify(path, NULL) == 0 && memcmp(bad, orig, len))
			fail_msg("round %d: damage passed verify", round);
		restore_damaged(path, t);
	}
	free(bad);
	free(orig);
}

static void test_random_damage(void **state)
{
	struct tsnap t;

	tsnap_small(&t, 6);
	damage_rounds(*state, &t, false);
	damage_rounds(*state, &t, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_file_flips, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_truncations, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_stream_flips_and_truncations,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_snapshots, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_crafted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mapped_table, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_random_damage, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_crafted_stream, setup,
					    teardown),
	};

	return cmocka_run_group_tests_name("format-corrupt", tests, NULL, NULL);
}
