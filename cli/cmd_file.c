/* SPDX-License-Identifier: MIT */
/*
 * livesnap info FILE|-     describe a snapshot file or stream (and its chain)
 * livesnap verify FILE|-   check every checksum of one (and of its chain)
 * livesnap merge -o OUT FILE   fold a delta's chain into one full snapshot
 *
 * Exit status: 0 fine, 1 the snapshot cannot be read or is damaged,
 * 2 bad usage. Errors are one line on stderr.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "livesnap.h"

static const char *const mem_types[] = {"anon", "shmem", "hugetlb"};

static const char *mem_type_name(uint32_t type)
{
	return type < 3 ? mem_types[type] : "unknown";
}

/* "1.5 GiB": fits in 16 bytes. */
static const char *human(uint64_t bytes, char buf[16])
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, 16, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, 16, "%.1f %s", v, units[u]);
	return buf;
}

static void utc_time(uint64_t ns, char buf[32])
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, 32, "?");
}

static struct ls_reader *open_reader(const char *cmd, const char *path)
{
	char err[LS_ERRMSG_MAX];
	struct ls_reader *r;

	if (ls_reader_open(path, &r, err, sizeof(err))) {
		fprintf(stderr, "livesnap %s: %s\n", cmd, err);
		return NULL;
	}
	return r;
}

/* An id in hex (32 digits and the NUL). */
static const char *id_hex(const uint8_t id[LS_ID_BYTES], char buf[33])
{
	for (int i = 0; i < LS_ID_BYTES; i++)
		snprintf(buf + 2 * i, 3, "%02x", id[i]);
	return buf;
}

/* A delta's chain, or NULL with the reason on stderr. */
static struct ls_chain *open_chain(const char *cmd, const char *path)
{
	char err[LS_ERRMSG_MAX];
	struct ls_chain *c;

	if (ls_chain_open(path, &c, err, sizeof(err))) {
		fprintf(stderr, "livesnap %s: %s\n", cmd, err);
		return NULL;
	}
	return c;
}

static void print_chain(const struct ls_chain *c)
{
	char hex[33];

	printf("chain      %u files, oldest first\n", ls_chain_length(c));
	for (unsigned i = 0; i < ls_chain_length(c); i++) {
		struct ls_reader_info ci;

		ls_reader_get_info(ls_chain_reader(c, i), &ci);
		printf("  %s  %-5s %s (%" PRIu64 " pages)\n",
		       id_hex(ci.id, hex), ci.delta ? "delta" : "full",
		       ls_chain_path(c, i), ci.pages_nonzero);
	}
}

/*
 * The VM's configuration, when the snapshot is a VM's: the VMM's
 * "vm-config" blob (VM_SNAP_BLOB_CONFIG, vmm/snapshot.c), a JSON object
 * with vcpus, mem-bytes, mem-backend, page-size, tsc-khz, accel and the
 * VM state's format. NULL without one; *why says when one does not parse.
 */
static json_t *vm_config(struct ls_reader *r, char why[256])
{
	json_error_t jerr;
	const void *data;
	size_t len;
	json_t *cfg;

	why[0] = 0;
	if (ls_reader_find_blob(r, "vm-config", &data, &len))
		return NULL;
	cfg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!cfg || !json_is_object(cfg)) {
		snprintf(why, 256, "vm-config blob unreadable: %.160s",
			 cfg ? "not a JSON object" : jerr.text);
		json_decref(cfg);
		return NULL;
	}
	return cfg;
}

static json_int_t cfg_int(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);

	return json_is_integer(v) ? json_integer_value(v) : -1;
}

static const char *cfg_str(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);

	return json_is_string(v) ? json_string_value(v) : "?";
}

/* "vm  2 vCPUs, 512.0 MiB RAM (anon, 4.0 KiB pages), accel tcg, ..." */
static void print_vm(struct ls_reader *r)
{
	char why[256], b1[16], b2[16];
	json_t *cfg = vm_config(r, why);

	if (!cfg) {
		if (why[0])
			printf("vm         %s\n", why);
		return;
	}
	printf("vm         %lld vCPUs, %s RAM (%s, %s pages), accel %s, "
	       "TSC %lld kHz, VM state format %lld\n",
	       (long long)cfg_int(cfg, "vcpus"),
	       human((uint64_t)cfg_int(cfg, "mem-bytes"), b1),
	       cfg_str(cfg, "mem-backend"),
	       human((uint64_t)cfg_int(cfg, "page-size"), b2),
	       cfg_str(cfg, "accel"), (long long)cfg_int(cfg, "tsc-khz"),
	       (long long)cfg_int(cfg, "format"));
	json_decref(cfg);
}

static void print_text(const char *path, struct ls_reader *r,
		       const struct ls_chain *c)
{
	struct ls_reader_info in;
	uint64_t mem = 0, nonzero = 0;
	char when[32], b1[16], b2[16];

	ls_reader_get_info(r, &in);
	utc_time(in.created_ns, when);
	printf("snapshot   %s\n", path);
	printf("format     livesnap %s, version %u.%u\n",
	       in.stream ? "stream" : "file", in.version_major,
	       in.version_minor);
	printf("created    %s\n", when);
	printf("host page  %u\n", in.host_page_size);
	print_vm(r);
	if (!in.stream && in.version_minor >= 1) {
		char hex[33];

		printf("id         %s\n", id_hex(in.id, hex));
		if (in.delta)
			printf("delta of   %s\n", id_hex(in.parent, hex));
	}
	printf("regions    %u\n", ls_reader_region_count(r));
	printf("  %-20s %10s %9s %-8s %s\n", "NAME", "SIZE", "PAGE", "TYPE",
	       "NON-ZERO PAGES");
	for (uint32_t i = 0; i < ls_reader_region_count(r); i++) {
		struct ls_reader_region g;
		uint64_t pages;

		ls_reader_region(r, i, &g);
		pages = g.len / g.page_size;
		mem += g.len;
		nonzero += g.pages_nonzero * g.page_size;
		printf("  %-20s %10s %9s %-8s %" PRIu64 " of %" PRIu64
		       " (%.1f%%)%s\n",
		       g.name, human(g.len, b1), human(g.page_size, b2),
		       mem_type_name(g.type), g.pages_nonzero, pages,
		       100.0 * (double)g.pages_nonzero / (double)pages,
		       in.delta ? " in the delta" : "");
	}
	printf("blobs      %u\n", ls_reader_blob_count(r));
	for (uint32_t i = 0; i < ls_reader_blob_count(r); i++) {
		const char *name;
		size_t len;

		ls_reader_blob(r, i, &name, NULL, &len);
		printf("  %-20s %10s\n", name, human(len, b1));
	}
	printf("memory     %s in regions, %s %s\n", human(mem, b1),
	       human(nonzero, b2), in.delta ? "in the delta" : "non-zero");
	if (in.stream)
		printf("stream     %s read\n", human(in.size, b1));
	else
		printf("file       %s (%s on disk)\n", human(in.size, b1),
		       human(in.disk_bytes, b2));
	if (c)
		print_chain(c);
}

static json_t *chain_json(const struct ls_chain *c)
{
	json_t *files = json_array();
	char hex[33];

	for (unsigned i = 0; c && i < ls_chain_length(c); i++) {
		struct ls_reader_info ci;

		ls_reader_get_info(ls_chain_reader(c, i), &ci);
		json_array_append_new(
		    files, json_pack("{s:s, s:s, s:b, s:I}", "path",
				     ls_chain_path(c, i), "id",
				     id_hex(ci.id, hex), "delta", ci.delta,
				     "pages", (json_int_t)ci.pages_nonzero));
	}
	return files;
}

static json_t *info_json(const char *path, struct ls_reader *r,
			 const struct ls_chain *c)
{
	struct ls_reader_info in;
	json_t *regions = json_array(), *blobs = json_array(), *j;
	char when[32], version[24], hex[33];
	uint64_t mem = 0, nonzero = 0;

	ls_reader_get_info(r, &in);
	utc_time(in.created_ns, when);
	snprintf(version, sizeof(version), "%u.%u", in.version_major,
		 in.version_minor);
	for (uint32_t i = 0; i < ls_reader_region_count(r); i++) {
		struct ls_reader_region g;

		ls_reader_region(r, i, &g);
		mem += g.len;
		nonzero += g.pages_nonzero * g.page_size;
		json_array_append_new(
		    regions,
		    json_pack("{s:s, s:I, s:I, s:s, s:I, s:I}", "name", g.name,
			      "size", (json_int_t)g.len, "page_size",
			      (json_int_t)g.page_size, "type",
			      mem_type_name(g.type), "pages",
			      (json_int_t)(g.len / g.page_size),
			      "pages_nonzero", (json_int_t)g.pages_nonzero));
	}
	for (uint32_t i = 0; i < ls_reader_blob_count(r); i++) {
		const char *name;
		size_t len;

		ls_reader_blob(r, i, &name, NULL, &len);
		json_array_append_new(blobs,
				      json_pack("{s:s, s:I}", "name", name,
						"size", (json_int_t)len));
	}
	j = json_pack(
	    "{s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:I, s:I, s:I, s:I}",
	    "path", path, "kind", in.stream ? "stream" : "file", "version",
	    version, "created", when, "created_ns", (json_int_t)in.created_ns,
	    "host_page_size", (json_int_t)in.host_page_size, "regions", regions,
	    "blobs", blobs, "memory_bytes", (json_int_t)mem, "nonzero_bytes",
	    (json_int_t)nonzero, "size", (json_int_t)in.size, "disk_bytes",
	    (json_int_t)in.disk_bytes);
	if (j) {
		char why[256];
		json_t *cfg = vm_config(r, why);

		json_object_set_new(j, "vm", cfg ? cfg : json_null());
	}
	if (j && !in.stream) {
		json_object_set_new(j, "id", json_string(id_hex(in.id, hex)));
		json_object_set_new(j, "delta", json_boolean(in.delta));
		if (in.delta)
			json_object_set_new(j, "parent",
					    json_string(id_hex(in.parent, hex)));
		if (c)
			json_object_set_new(j, "chain", chain_json(c));
	}
	return j;
}

/* For a delta: its chain (every link checked), else NULL and *bad. */
static struct ls_chain *chain_if_delta(const char *cmd, const char *path,
				       struct ls_reader *r, bool *bad)
{
	struct ls_reader_info in;
	struct ls_chain *c;

	*bad = false;
	ls_reader_get_info(r, &in);
	if (in.stream || !in.delta)
		return NULL;
	c = open_chain(cmd, path);
	*bad = !c;
	return c;
}

static int info_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct cli_parser p;
	bool json = false;
	int status = 1, c;
	const char *path;
	struct ls_reader *r;
	struct ls_chain *chain = NULL;
	bool bad;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0)
		if (c == 'j')
			json = true;
	if (c == CLI_EXIT)
		return p.status;
	path = p.operands[0];
	r = open_reader("info", path);
	if (!r)
		return 1;
	/* A stream tells its blobs and page counts only once read. */
	if (ls_reader_is_stream(r) && ls_reader_verify(r, NULL, NULL)) {
		fprintf(stderr, "livesnap info: %s\n", ls_reader_error(r));
		goto out;
	}
	chain = chain_if_delta("info", path, r, &bad);
	if (bad)
		goto out;
	if (json) {
		json_t *j = info_json(path, r, chain);

		if (!j || json_dumpf(j, stdout, JSON_INDENT(2)) < 0) {
			fprintf(stderr, "livesnap info: cannot build JSON\n");
			json_decref(j);
			goto out;
		}
		json_decref(j);
		putchar('\n');
	} else {
		print_text(path, r, chain);
	}
	status = fflush(stdout) ? 1 : 0;
out:
	ls_chain_close(chain);
	ls_reader_close(r);
	return status;
}

struct progress {
	const char *path;
	struct timespec start, last;
};

static double secs_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Prints at most ten times a second; total is 0 for a stream. */
static void show_progress(void *arg, uint64_t done, uint64_t total)
{
	struct progress *p = arg;
	struct timespec now;
	double el;
	char b1[16];

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (secs_between(&p->last, &now) < 0.1 && done != total)
		return;
	p->last = now;
	el = secs_between(&p->start, &now);
	if (total)
		fprintf(stderr, "\rverifying %s: %3.0f%%  %s  %.0f MB/s\033[K",
			p->path, 100.0 * (double)done / (double)total,
			human(done, b1), el > 0 ? (double)done / el / 1e6 : 0);
	else
		fprintf(stderr, "\rverifying %s: %s  %.0f MB/s\033[K", p->path,
			human(done, b1), el > 0 ? (double)done / el / 1e6 : 0);
}

/* The result of a verify, for the text and the JSON report. */
struct verdict {
	const char *path;
	int ret;	   /* 0, or the reader's -errno */
	const char *error; /* its message when ret */
	bool all;	   /* damage counted per region */
	uint64_t *bad;	   /* per region, with all */
	uint64_t damaged;  /* their sum */
	unsigned chain_len; /* a delta: the files of its chain */
};

/*
 * A delta's chain: opened (every link checked) and every file before the
 * delta verified; 0, or -errno with the message in err.
 */
static int verify_ancestors(const char *path, struct ls_reader *r,
			    struct ls_chain **cp, char *err, size_t errlen)
{
	struct ls_reader_info in;
	int ret;

	ls_reader_get_info(r, &in);
	if (in.stream || !in.delta)
		return 0;
	ret = ls_chain_open(path, cp, err, errlen);
	for (unsigned i = 0; !ret && i + 1 < ls_chain_length(*cp); i++) {
		ret = ls_reader_verify(ls_chain_reader(*cp, i), NULL, NULL);
		if (ret)
			snprintf(err, errlen, "%s",
				 ls_reader_error(ls_chain_reader(*cp, i)));
	}
	return ret;
}

static void verify_text(struct ls_reader *r, const struct verdict *v)
{
	struct ls_reader_info in;
	char b1[16];

	if (v->ret && !v->damaged) {
		fprintf(stderr, "livesnap verify: %s\n", v->error);
		return;
	}
	ls_reader_get_info(r, &in);
	if (!v->ret && v->chain_len)
		printf("%s: chain of %u files OK\n", v->path, v->chain_len);
	if (!v->ret) {
		printf("%s: OK (%u regions, %" PRIu64 " non-zero pages, %u "
		       "blobs, %s)\n",
		       v->path, ls_reader_region_count(r), in.pages_nonzero,
		       ls_reader_blob_count(r), human(in.size, b1));
		return;
	}
	printf("%s: DAMAGED: %" PRIu64 " pages\n", v->path, v->damaged);
	for (uint32_t i = 0; i < ls_reader_region_count(r); i++) {
		struct ls_reader_region g;

		ls_reader_region(r, i, &g);
		printf("  %-20s %" PRIu64 " of %" PRIu64 " pages damaged\n",
		       g.name, v->bad[i], g.len / g.page_size);
	}
	fprintf(stderr, "livesnap verify: %s\n", v->error);
}

/* r may be NULL: the snapshot could not be opened. */
static int verify_json(struct ls_reader *r, const struct verdict *v)
{
	json_t *j, *regions = json_array();
	struct ls_reader_info in = {0};
	int ret;

	if (r)
		ls_reader_get_info(r, &in);
	for (uint32_t i = 0; r && i < ls_reader_region_count(r); i++) {
		struct ls_reader_region g;
		json_t *bad = v->all && (!v->ret || v->damaged)
				  ? json_integer((json_int_t)v->bad[i])
				  : json_null();

		ls_reader_region(r, i, &g);
		json_array_append_new(
		    regions, json_pack("{s:s, s:I, s:I, s:o}", "name", g.name,
				       "pages", (json_int_t)(g.len / g.page_size),
				       "pages_nonzero",
				       (json_int_t)g.pages_nonzero,
				       "pages_damaged", bad));
	}
	j = json_pack("{s:s, s:b, s:s?, s:o, s:I, s:I}", "path", v->path, "ok",
		      !v->ret, "error", v->ret ? v->error : NULL, "regions",
		      regions, "blobs",
		      (json_int_t)(r ? ls_reader_blob_count(r) : 0), "size",
		      (json_int_t)in.size);
	if (!j)
		return -1;
	if (v->chain_len)
		json_object_set_new(j, "chain", json_integer(v->chain_len));
	ret = json_dumpf(j, stdout, JSON_INDENT(2));
	json_decref(j);
	putchar('\n');
	return ret;
}

static int verify_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct progress prog = {0};
	struct verdict v = {0};
	struct cli_parser p;
	bool quiet = false, json = false, tty;
	char err[LS_ERRMSG_MAX];
	int status = 1, c;
	struct ls_reader *r = NULL;
	struct ls_chain *chain = NULL;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0) {
		if (c == 'q')
			quiet = true;
		if (c == 'j')
			json = true;
		if (c == 'a')
			v.all = true;
	}
	if (c == CLI_EXIT)
		return p.status;
	v.path = p.operands[0];
	v.ret = ls_reader_open(v.path, &r, err, sizeof(err));
	if (v.ret) {
		v.error = err;
		r = NULL;
		goto report;
	}
	v.bad = calloc(ls_reader_region_count(r) + 1, sizeof(*v.bad));
	if (!v.bad) {
		fprintf(stderr, "livesnap verify: out of memory\n");
		goto out;
	}
	tty = !quiet && !json && isatty(STDERR_FILENO);
	prog.path = v.path;
	clock_gettime(CLOCK_MONOTONIC, &prog.start);
	prog.last = prog.start;
	/* A delta: its chain's links, then the files before it. */
	v.ret = verify_ancestors(v.path, r, &chain, err, sizeof(err));
	if (v.ret) {
		v.error = err;
		goto report;
	}
	v.chain_len = chain ? ls_chain_length(chain) : 0;
	if (v.all)
		v.ret = ls_reader_verify_all(r, tty ? show_progress : NULL,
					     &prog, v.bad);
	else
		v.ret = ls_reader_verify(r, tty ? show_progress : NULL, &prog);
	if (tty)
		fprintf(stderr, "\r\033[K");
	v.error = ls_reader_error(r);
	for (uint32_t i = 0; v.all && i < ls_reader_region_count(r); i++)
		v.damaged += v.bad[i];
report:
	if (json) {
		if (verify_json(r, &v)) {
			fprintf(stderr, "livesnap verify: cannot build JSON\n");
			goto out;
		}
	} else if (r) {
		verify_text(r, &v);
	} else {
		fprintf(stderr, "livesnap verify: %s\n", v.error);
	}
	status = fflush(stdout) || v.ret ? 1 : 0;
out:
	ls_chain_close(chain);
	free(v.bad);
	if (r)
		ls_reader_close(r);
	return status;
}

static int merge_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *out = NULL, *path;
	char err[LS_ERRMSG_MAX];
	struct ls_chain *chain;
	struct ls_sink *sink;
	struct cli_parser p;
	int c, ret;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0)
		if (c == 'o')
			out = p.arg;
	if (c == CLI_EXIT)
		return p.status;
	if (!out)
		return cli_usage_error(cmd, "-o OUT is required");
	path = p.operands[0];
	chain = open_chain("merge", path);
	if (!chain)
		return 1;
	if (ls_sink_file_create(&sink, out, 0, err, sizeof(err))) {
		fprintf(stderr, "livesnap merge: %s\n", err);
		ls_chain_close(chain);
		return 1;
	}
	ret = ls_chain_flatten(chain, sink);
	ls_sink_destroy(sink);
	if (ret)
		fprintf(stderr, "livesnap merge: %s\n", ls_chain_error(chain));
	else
		printf("%s: %u files merged into %s\n", path,
		       ls_chain_length(chain), out);
	ls_chain_close(chain);
	return ret ? 1 : (fflush(stdout) ? 1 : 0);
}

static const struct cli_opt info_opts[] = {
    {"json", 'j', NULL, "print one JSON object instead of text"},
    {0},
};

const struct cli_cmd cmd_info = {
    .name = "info",
    .synopsis = "[options] FILE|-",
    .summary = "describe a snapshot file or stream",
    .description =
	"Describes a snapshot file, or a stream read from stdin (-) or a\n"
	"FIFO: format version, creation time, id, regions, blobs, sizes,\n"
	"and for a VM's snapshot the VM's configuration (vCPUs, RAM, memory\n"
	"backend, accelerator). A stream is read to its end (and checked)\n"
	"first. For a delta, also its chain: the files found by parent id in\n"
	"its directory, oldest first (a broken chain is an error).\n",
    .opts = info_opts,
    .exit_status = "  0  described\n"
		   "  1  the snapshot cannot be read or is damaged\n"
		   CLI_EXIT_USAGE,
    .min_operands = 1,
    .max_operands = 1,
    .run = info_run,
};

static const struct cli_opt verify_opts[] = {
    {"quiet", 'q', NULL, "no progress line (it is shown only on a terminal)"},
    {"all", 'a', NULL,
     "check every page of a file, and count the damaged\n"
     "ones per region, instead of stopping at the first"},
    {"json", 'j', NULL,
     "print one JSON object (ok, error, regions with\n"
     "pages_damaged under --all) instead of text; also\n"
     "when the snapshot cannot be opened"},
    {0},
};

const struct cli_cmd cmd_verify = {
    .name = "verify",
    .synopsis = "[options] FILE|-",
    .summary = "check every checksum of a snapshot",
    .description =
	"Checks a snapshot file or stream whole: header, tables, every page\n"
	"and blob against its checksum, zero pages really zero, a stream's\n"
	"trailer; for a delta, every file of its chain and every link\n"
	"first. Prints OK, or one line saying what is damaged. With\n"
	"--all a file is checked to its end and the damaged pages of each\n"
	"region counted (a stream's checksums chain: it stops at its first\n"
	"damage; so does a chain, in the files before the last).\n",
    .opts = verify_opts,
    .exit_status = "  0  the snapshot is whole\n"
		   "  1  it cannot be read or is damaged\n" CLI_EXIT_USAGE,
    .min_operands = 1,
    .max_operands = 1,
    .run = verify_run,
};

static const struct cli_opt merge_opts[] = {
    {"output", 'o', "OUT", "the full snapshot file to write (required)"},
    {0},
};

const struct cli_cmd cmd_merge = {
    .name = "merge",
    .synopsis = "-o OUT FILE",
    .summary = "fold a delta's chain into one full snapshot",
    .description =
	"Reads the chain that ends with the snapshot FILE (a delta's parent is\n"
	"the file in the same directory with the parent's id; every file and\n"
	"link is checked) and writes its last state to OUT as one full\n"
	"snapshot file, with FILE's blobs and id (deltas taken after FILE\n"
	"apply to OUT too). A full snapshot FILE is copied.\n",
    .opts = merge_opts,
    .exit_status = "  0  written\n"
		   "  1  the chain cannot be read, is broken, or OUT cannot be written\n"
		   CLI_EXIT_USAGE,
    .min_operands = 1,
    .max_operands = 1,
    .run = merge_run,
};
