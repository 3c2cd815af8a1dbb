/* SPDX-License-Identifier: MIT */
/*
 * livesnap check [--json] [--feature NAME]...
 *
 * Will livesnap work here? One line per thing it stands on: userfaultfd
 * access, each userfaultfd feature the library probes (ls_ctx_features()),
 * transparent and hugetlb huge pages, and each accelerator with what the
 * VMM needs of it; what is missing comes with its fix.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "commands.h"
#include "livesnap.h"
#ifdef LS_HAVE_VMM
#include "accel/accel.h"
#endif

#define DETAIL_MAX 320

enum need {
	NEED_YES,   /* livesnap does not work without it */
	NEED_ONE,   /* one of the accelerators is needed */
	NEED_NO,    /* optional: faster, or a memory type, or a mode */
};

struct feature {
	const char *name;
	const char *what;
	enum need need;
	bool ok;
	char detail[DETAIL_MAX]; /* what was found */
	const char *fix;	 /* when missing */
};

/* The facts gathered once, then one struct feature each. */
struct host {
	int uffd_syscall, uffd_dev; /* 0 or -errno */
	int ctx_ret;		    /* ls_ctx_create */
	char ctx_err[LS_ERRMSG_MAX];
	unsigned feats;
};

static int probe_uffd_syscall(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

static int probe_uffd_dev(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC), fd;

	if (dev < 0)
		return -errno;
#ifdef USERFAULTFD_IOC_NEW
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
#else
	fd = -1;
	errno = ENOTTY;
#endif
	if (fd < 0) {
		fd = -errno;
		close(dev);
		return fd;
	}
	close(fd);
	close(dev);
	return 0;
}

static void probe_host(struct host *h)
{
	struct ls_ctx *ctx;

	h->uffd_syscall = probe_uffd_syscall();
	h->uffd_dev = probe_uffd_dev();
	h->ctx_ret = ls_ctx_create(&ctx, h->ctx_err, sizeof(h->ctx_err));
	if (h->ctx_ret == 0) {
		h->feats = ls_ctx_features(ctx);
		ls_ctx_destroy(ctx);
	}
}

static void check_uffd(const struct host *h, struct feature *f)
{
	f->ok = !h->uffd_syscall || !h->uffd_dev;
	snprintf(f->detail, DETAIL_MAX,
		 "userfaultfd(): %s; /dev/userfaultfd: %s",
		 h->uffd_syscall ? strerror(-h->uffd_syscall) : "ok",
		 h->uffd_dev ? strerror(-h->uffd_dev) : "ok");
	f->fix = "run as root, or set sysctl vm.unprivileged_userfaultfd=1, "
		 "or give read-write access to /dev/userfaultfd (Linux 6.1); "
		 "the kernel needs CONFIG_USERFAULTFD";
}

/* One LS_FEAT_* bit the library probed. */
static void check_bit(const struct host *h, struct feature *f, unsigned bit,
		      const char *kernel)
{
	f->ok = h->ctx_ret == 0 && (h->feats & bit);
	if (h->ctx_ret)
		snprintf(f->detail, DETAIL_MAX, "not probed: %s", h->ctx_err);
	else
		snprintf(f->detail, DETAIL_MAX, "%s", f->ok ? "ok" : "absent");
	f->fix = kernel;
}

static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ret = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f))
		ret = -EIO;
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
	return ret;
}

static void check_thp(struct feature *f)
{
	char mode[128], *sel, *end;
	int ret = read_line("/sys/kernel/mm/transparent_hugepage/enabled",
			    mode, sizeof(mode));

	f->fix = "echo always > /sys/kernel/mm/transparent_hugepage/enabled "
		 "(or madvise; livesnap run's anon RAM asks for huge pages)";
	if (ret) {
		snprintf(f->detail, DETAIL_MAX,
			 "/sys/kernel/mm/transparent_hugepage/enabled: %s",
			 strerror(-ret));
		return;
	}
	/* "always [madvise] never": the bracketed word is the mode */
	sel = strchr(mode, '[');
	end = sel ? strchr(sel, ']') : NULL;
	if (!sel || !end) {
		snprintf(f->detail, DETAIL_MAX, "mode unreadable: '%s'", mode);
		return;
	}
	*end = 0;
	f->ok = strcmp(sel + 1, "never") != 0;
	snprintf(f->detail, DETAIL_MAX, "mode %s", sel + 1);
}

static void check_hugetlb(struct feature *f)
{
	const char *dir = "/sys/kernel/mm/hugepages/hugepages-2048kB";
	char path[128], nr[32], fr[32];
	int ret;

	f->fix = "echo N > /sys/kernel/mm/hugepages/hugepages-2048kB/"
		 "nr_hugepages (N 2 MiB pages: a VM's RAM over 2 MiB, for "
		 "--mem-backend hugetlb)";
	snprintf(path, sizeof(path), "%s/nr_hugepages", dir);
	ret = read_line(path, nr, sizeof(nr));
	if (!ret) {
		snprintf(path, sizeof(path), "%s/free_hugepages", dir);
		ret = read_line(path, fr, sizeof(fr));
	}
	if (ret) {
		snprintf(f->detail, DETAIL_MAX, "%s: %s", path, strerror(-ret));
		return;
	}
	f->ok = atol(fr) > 0;
	snprintf(f->detail, DETAIL_MAX, "%s of %s pages of 2 MiB free", fr,
		 nr);
}

static void check_accel(struct feature *f, const char *name)
{
#ifdef LS_HAVE_VMM
	const struct accel_ops *ops = strcmp(name, "kvm") ? &accel_tcg_ops
							  : &accel_kvm_ops;
	char err[256] = "";

	f->ok = ops->probe(err) == 0;
	snprintf(f->detail, DETAIL_MAX, "%s", f->ok ? "ok" : err);
#else
	snprintf(f->detail, DETAIL_MAX, "not built (meson -Dvmm=false)");
#endif
	f->fix = strcmp(name, "kvm")
		     ? "apt-get install libunicorn2 (Unicorn 2, loaded at run "
		       "time)"
		     : "a host (or a VM with nested virtualization) with KVM: "
		       "modprobe kvm_intel or kvm_amd, and read-write access "
		       "to /dev/kvm";
}

static int gather(struct feature *fs)
{
	struct host h = {0};
	int n = 0;

	probe_host(&h);
#define F(nm, wh, nd) (fs[n] = (struct feature){.name = nm, .what = wh, \
						 .need = nd})
	F("userfaultfd", "userfaultfd access", NEED_YES);
	check_uffd(&h, &fs[n++]);
	F("wp-anon", "write-protect of anonymous memory", NEED_YES);
	check_bit(&h, &fs[n++], LS_FEAT_WP, "Linux 5.7 with "
		  "CONFIG_HAVE_ARCH_USERFAULTFD_WP");
	F("wp-shmem", "write-protect of shmem (memfd)", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_WP_SHMEM_HUGETLB, "Linux 5.19");
	F("wp-hugetlbfs", "write-protect of hugetlbfs", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_WP_SHMEM_HUGETLB, "Linux 5.19");
	F("wp-unpopulated", "arm without populating (UFFD_FEATURE_WP_"
	  "UNPOPULATED)", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_WP_UNPOPULATED, "Linux 6.4");
	F("wp-async", "UFFD_FEATURE_WP_ASYNC", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_WP_ASYNC, "Linux 6.7");
	F("pagemap-scan", "PAGEMAP_SCAN ioctl", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_PAGEMAP_SCAN, "Linux 6.7");
	F("missing-shmem", "lazy restore into shmem", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_MISSING_SHMEM, "Linux 4.11");
	F("missing-hugetlbfs", "lazy restore into hugetlbfs", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_MISSING_HUGETLB, "Linux 4.11");
	F("discard-events", "discards reported (UFFD_FEATURE_EVENT_REMOVE): "
	  "no look for them in a delta's pause", NEED_NO);
	check_bit(&h, &fs[n++], LS_FEAT_EVENT_REMOVE, "Linux 4.11");
	F("thp", "transparent huge pages", NEED_NO);
	check_thp(&fs[n++]);
	F("hugetlb-pool", "hugetlb pool", NEED_NO);
	check_hugetlb(&fs[n++]);
	F("kvm", "KVM with every capability the VMM needs", NEED_ONE);
	check_accel(&fs[n++], "kvm");
	F("tcg", "the TCG accelerator (Unicorn)", NEED_ONE);
	check_accel(&fs[n++], "tcg");
#undef F
	return n;
}

#define NFEATURES 14

/* "WP_ASYNC" and "wp-async" name the same feature. */
static bool same_name(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		int x = *a == '_' ? '-' : tolower((unsigned char)*a);
		int y = *b == '_' ? '-' : tolower((unsigned char)*b);

		if (x != y)
			return false;
	}
	return !*a && !*b;
}

static struct feature *find(struct feature *fs, int n, const char *name)
{
	/* the words for the write-protect features */
	static const char *const alias[][2] = {
	    {"anon", "wp-anon"}, {"shmem", "wp-shmem"},
	    {"hugetlbfs", "wp-hugetlbfs"}, {"hugetlb", "wp-hugetlbfs"},
	    {"uffd", "userfaultfd"},
	};

	for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
		if (same_name(name, alias[i][0]))
			name = alias[i][1];
	for (int i = 0; i < n; i++)
		if (same_name(name, fs[i].name))
			return &fs[i];
	return NULL;
}

/* Exit 0 when what was asked for (default: what livesnap needs) is here. */
static bool enough(const struct feature *fs, int n, bool asked)
{
	bool accel = false, all = true;

	for (int i = 0; i < n; i++) {
		if (asked && !fs[i].ok)
			all = false;
		if (!asked && fs[i].need == NEED_YES && !fs[i].ok)
			all = false;
		if (fs[i].need == NEED_ONE && fs[i].ok)
			accel = true;
	}
	return asked ? all : all && accel;
}

static const char *need_word(enum need need)
{
	return need == NEED_YES ? "needed"
	       : need == NEED_ONE ? "needed (one accelerator)"
				  : "optional";
}

static void print_text(const struct feature *fs, int n)
{
	for (int i = 0; i < n; i++) {
		printf("%-18s %-7s %s", fs[i].name, fs[i].ok ? "ok" : "missing",
		       fs[i].what);
		if (strcmp(fs[i].detail, "ok"))
			printf(": %s", fs[i].detail);
		if (!fs[i].ok)
			printf(" [%s; fix: %s]", need_word(fs[i].need),
			       fs[i].fix);
		putchar('\n');
	}
}

static int print_json(const struct feature *fs, int n, bool ok)
{
	json_t *arr = json_array(), *j;
	unsigned major, minor;
	char fmt[24];
	int ret;

	for (int i = 0; i < n; i++)
		json_array_append_new(
		    arr, json_pack("{s:s, s:s, s:b, s:s, s:s, s:s?}", "name",
				   fs[i].name, "what", fs[i].what, "ok",
				   fs[i].ok, "need",
				   fs[i].need == NEED_YES   ? "yes"
				   : fs[i].need == NEED_ONE ? "one-accelerator"
							    : "no",
				   "detail", fs[i].detail, "fix",
				   fs[i].ok ? NULL : fs[i].fix));
	ls_format_version(&major, &minor);
	snprintf(fmt, sizeof(fmt), "%u.%u", major, minor);
	j = json_pack("{s:s, s:s, s:b, s:o}", "version", ls_version(),
		      "format_version", fmt, "ok", ok, "features", arr);
	if (!j)
		return -1;
	ret = json_dumpf(j, stdout, JSON_INDENT(2));
	json_decref(j);
	putchar('\n');
	return ret;
}

static int check_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct feature fs[NFEATURES], *sel[NFEATURES];
	const char *asked[CLI_OPERANDS_MAX];
	struct cli_parser p;
	int n, nasked = 0, c;
	bool json = false, ok;

	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0) {
		if (c == 'j')
			json = true;
		if (c == 'f' && nasked == CLI_OPERANDS_MAX)
			return cli_usage_error(cmd, "at most %d --feature",
					       CLI_OPERANDS_MAX);
		if (c == 'f')
			asked[nasked++] = p.arg;
	}
	if (c == CLI_EXIT)
		return p.status;
	n = gather(fs);
	for (int i = 0; i < nasked; i++) {
		sel[i] = find(fs, n, asked[i]);
		if (!sel[i])
			return cli_usage_error(cmd, "unknown feature '%s'",
					       asked[i]);
	}
	if (nasked) { /* only those, in the order asked */
		struct feature tmp[NFEATURES];

		for (int i = 0; i < nasked; i++)
			tmp[i] = *sel[i];
		for (int i = 0; i < nasked; i++)
			fs[i] = tmp[i];
		n = nasked;
	}
	ok = enough(fs, n, nasked > 0);
	if (json) {
		if (print_json(fs, n, ok)) {
			fprintf(stderr, "livesnap check: cannot build JSON\n");
			return 1;
		}
	} else {
		print_text(fs, n);
		if (!nasked)
			printf("livesnap %s here\n",
			       ok ? "can snapshot and run VMs"
				  : "cannot work: see 'missing' and 'needed' "
				    "above");
	}
	if (fflush(stdout))
		return 1;
	return ok ? 0 : 1;
}

static const struct cli_opt check_opts[] = {
    {"json", 'j', NULL, "print one JSON object instead of text"},
    {"feature", 'f', "NAME",
     "check only this feature (again for more): userfaultfd,\n"
     "wp-anon (anon), wp-shmem (shmem), wp-hugetlbfs (hugetlbfs),\n"
     "wp-unpopulated, wp-async, pagemap-scan, missing-shmem,\n"
     "missing-hugetlbfs, discard-events, thp, hugetlb-pool, kvm, tcg;\n"
     "'_' for '-' and any case do too (WP_ASYNC)"},
    {0},
};

const struct cli_cmd cmd_check = {
    .name = "check",
    .synopsis = "[options]",
    .summary = "tell whether livesnap works on this host, and what to fix",
    .description =
	"Checks what livesnap stands on, one line each: userfaultfd access\n"
	"(the syscall, /dev/userfaultfd), each userfaultfd feature the\n"
	"library finds (write-protect of anonymous, shmem and hugetlbfs\n"
	"memory, WP_UNPOPULATED, WP_ASYNC, PAGEMAP_SCAN, lazy restore into\n"
	"shmem and hugetlbfs), transparent huge pages, the 2 MiB hugetlb\n"
	"pool, /dev/kvm with every KVM capability the VMM needs, and the TCG\n"
	"accelerator. A missing one comes with its fix. Needed: userfaultfd,\n"
	"write-protect of anonymous memory, and one accelerator.\n",
    .opts = check_opts,
    .exit_status = "  0  what is needed is here (with --feature: those\n"
		   "     features are)\n"
		   "  1  something needed is missing\n" CLI_EXIT_USAGE,
    .min_operands = 0,
    .max_operands = 0,
    .run = check_run,
};
