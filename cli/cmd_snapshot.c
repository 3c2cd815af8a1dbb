/* SPDX-License-Identifier: MIT */
/*
 * livesnap snapshot: takes a live snapshot of a running VM through its QMP
 * socket, exactly as a QEMU user would drive a background snapshot:
 *
 *   migrate-set-capabilities background-snapshot=on
 *   migrate uri=file:PATH (or exec:CMD) x-livesnap-strategy=...
 *   query-migrate ... until completed / failed / cancelled
 *
 * and shows a progress bar (percent, MB/s, ETA) while the guest runs on,
 * then a summary: pause, total time, rate, write faults, stall percentiles.
 * Ctrl-C sends migrate_cancel and waits for the VMM to confirm.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"

#define QMP_LINE_MAX	  (1u << 20)
#define QMP_TIMEOUT_MS	  30000 /* a command answers in far less */
#define POLL_TTY_MS	  100	/* redraw period on a terminal */
#define POLL_LOG_MS	  250	/* query period otherwise */
#define LOG_LINE_EVERY_NS 5000000000ull

/* ------------------------------------------------------------------ */
/* A minimal QMP client: one JSON object per line, events set aside.   */
/* ------------------------------------------------------------------ */

struct qmpc {
	int fd;
	char *buf;
	size_t len;
	char err[256];
};

static int qmpc_fail(struct qmpc *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int qmpc_fail(struct qmpc *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
	return -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Extracts one complete line from the buffer, or NULL. */
static json_t *qmpc_take_line(struct qmpc *q)
{
	char *nl = memchr(q->buf, '\n', q->len);
	json_error_t jerr;
	json_t *msg;
	size_t n;

	if (!nl)
		return NULL;
	n = (size_t)(nl - q->buf) + 1;
	msg = json_loadb(q->buf, n, 0, &jerr);
	memmove(q->buf, q->buf + n, q->len - n);
	q->len -= n;
	if (!msg) {
		qmpc_fail(q, "malformed QMP message: %s", jerr.text);
		return json_null(); /* a marker the caller treats as error */
	}
	return msg;
}

/*
 * Reads the next message (reply or event). Waits at most timeout_ms;
 * returns NULL with err set on timeout, EOF or bad input. A return of
 * json_null() is never passed on: it is turned into NULL here.
 */
static json_t *qmpc_read(struct qmpc *q, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		json_t *msg = qmpc_take_line(q);
		struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
		int64_t left;
		ssize_t n;

		if (msg && json_is_null(msg))
			return NULL;
		if (msg)
			return msg;
		if (q->len == QMP_LINE_MAX) {
			qmpc_fail(q, "QMP message longer than %u bytes",
				  QMP_LINE_MAX);
			return NULL;
		}
		left = (int64_t)(deadline - now_ns()) / 1000000;
		if (left <= 0) {
			qmpc_fail(q, "no answer from the VMM within %d ms",
				  timeout_ms);
			return NULL;
		}
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			qmpc_fail(q, "poll on the QMP socket: %s",
				  strerror(errno));
			return NULL;
		}
		if (n == 0)
			continue;
		n = read(q->fd, q->buf + q->len, QMP_LINE_MAX - q->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			qmpc_fail(q, "read from the QMP socket: %s",
				  strerror(errno));
			return NULL;
		}
		if (n == 0) {
			qmpc_fail(q, "the VMM closed the QMP connection");
			return NULL;
		}
		q->len += (size_t)n;
	}
}

static int qmpc_send(struct qmpc *q, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len, off = 0;

	if (!text)
		return qmpc_fail(q, "cannot encode a QMP command");
	len = strlen(text);
	text[len] = '\n'; /* replace the NUL: one command per line */
	while (off < len + 1) {
		ssize_t n = write(q->fd, text + off, len + 1 - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(text);
			return qmpc_fail(q, "write to the QMP socket: %s",
					 strerror(errno));
		}
		off += (size_t)n;
	}
	free(text);
	return 0;
}

/*
 * Runs one command; returns its "return" value (a new reference) or NULL
 * with err set to the VMM's error description. Events that arrive before
 * the reply are dropped: this client polls query-migrate instead.
 */
static json_t *qmpc_execute(struct qmpc *q, const char *cmd, json_t *args)
{
	json_t *req = json_pack("{s:s}", "execute", cmd);
	int rc;

	if (args)
		json_object_set_new(req, "arguments", args);
	rc = qmpc_send(q, req);
	json_decref(req);
	if (rc)
		return NULL;
	for (;;) {
		json_t *msg = qmpc_read(q, QMP_TIMEOUT_MS);
		json_t *ret, *err;

		if (!msg)
			return NULL;
		ret = json_object_get(msg, "return");
		err = json_object_get(msg, "error");
		if (ret) {
			json_incref(ret);
			json_decref(msg);
			return ret;
		}
		if (err) {
			const char *desc =
			    json_string_value(json_object_get(err, "desc"));

			qmpc_fail(q, "%s: %s", cmd,
				  desc ? desc : "error without description");
			json_decref(msg);
			return NULL;
		}
		json_decref(msg); /* an event */
	}
}

static int qmpc_connect(struct qmpc *q, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	json_t *greeting, *ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return qmpc_fail(q, "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	q->buf = malloc(QMP_LINE_MAX);
	if (!q->buf)
		return qmpc_fail(q, "out of memory");
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0)
		return qmpc_fail(q, "socket: %s", strerror(errno));
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)))
		return qmpc_fail(q, "connect to %s: %s", path, strerror(errno));
	greeting = qmpc_read(q, QMP_TIMEOUT_MS);
	if (!greeting)
		return -1;
	if (!json_object_get(greeting, "QMP")) {
		json_decref(greeting);
		return qmpc_fail(q, "%s does not speak QMP (no greeting)",
				 path);
	}
	json_decref(greeting);
	ret = qmpc_execute(q, "qmp_capabilities", NULL);
	if (!ret)
		return -1;
	json_decref(ret);
	return 0;
}

static void qmpc_close(struct qmpc *q)
{
	if (q->fd >= 0)
		close(q->fd);
	free(q->buf);
}

/* ------------------------------------------------------------------ */
/* What query-migrate tells us                                         */
/* ------------------------------------------------------------------ */

struct mig_info {
	char status[32];
	char error[256];
	uint64_t ram_total, ram_transferred, ram_remaining;
	uint64_t ram_duplicate, ram_normal;
	uint64_t total_ms;
	/* x-livesnap extension */
	uint64_t downtime_ns, setup_ns, total_ns;
	uint64_t faults, faults_write_first, copied_pages;
	uint64_t stall_p50_ns, stall_p99_ns, stall_max_ns;
	char strategy[32];
	bool have_guest; /* the default guest reported its view */
	bool guest_all_seen;
	uint64_t guest_max_write_ns;
};

static uint64_t jget_u64(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return (uint64_t)json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) >= 0)
		return (uint64_t)json_real_value(v);
	return 0;
}

static void jget_str(json_t *obj, const char *key, char *dst, size_t len)
{
	const char *s = json_string_value(json_object_get(obj, key));

	snprintf(dst, len, "%s", s ? s : "");
}

static void mig_info_parse(json_t *r, struct mig_info *mi)
{
	json_t *ram = json_object_get(r, "ram");
	json_t *x = json_object_get(r, "x-livesnap");

	memset(mi, 0, sizeof(*mi));
	jget_str(r, "status", mi->status, sizeof(mi->status));
	jget_str(r, "error-desc", mi->error, sizeof(mi->error));
	mi->total_ms = jget_u64(r, "total-time");
	mi->ram_total = jget_u64(ram, "total");
	mi->ram_transferred = jget_u64(ram, "transferred");
	mi->ram_remaining = jget_u64(ram, "remaining");
	mi->ram_duplicate = jget_u64(ram, "duplicate");
	mi->ram_normal = jget_u64(ram, "normal");
	mi->downtime_ns = jget_u64(x, "downtime-ns");
	mi->setup_ns = jget_u64(x, "setup-ns");
	mi->total_ns = jget_u64(x, "total-ns");
	mi->faults = jget_u64(x, "faults");
	mi->faults_write_first = jget_u64(x, "faults-write-first");
	mi->copied_pages = jget_u64(x, "copied-pages");
	mi->stall_p50_ns = jget_u64(x, "stall-p50-ns");
	mi->stall_p99_ns = jget_u64(x, "stall-p99-ns");
	mi->stall_max_ns = jget_u64(x, "stall-max-ns");
	jget_str(x, "strategy", mi->strategy, sizeof(mi->strategy));
	if (json_object_get(x, "guest")) {
		json_t *g = json_object_get(x, "guest");

		mi->have_guest = true;
		mi->guest_max_write_ns = jget_u64(g, "max-write-ns");
		mi->guest_all_seen =
		    json_is_true(json_object_get(g, "all-intervals-seen"));
	}
	if (!mi->downtime_ns)
		mi->downtime_ns = jget_u64(r, "downtime") * 1000000ull;
	if (!mi->total_ns)
		mi->total_ns = mi->total_ms * 1000000ull;
}

static bool mig_finished(const struct mig_info *mi)
{
	return !strcmp(mi->status, "completed") ||
	       !strcmp(mi->status, "failed") ||
	       !strcmp(mi->status, "cancelled");
}

/* ------------------------------------------------------------------ */
/* Progress display                                                    */
/* ------------------------------------------------------------------ */

struct progress {
	bool tty;
	bool drawn; /* a TTY line is on screen */
	uint64_t start_ns;
	uint64_t last_ns, last_done;
	double rate; /* bytes of RAM processed per second, smoothed */
	int last_decile;
	uint64_t last_line_ns;
};

static void fmt_duration(char *buf, size_t len, double s)
{
	if (s < 0 || !isfinite(s) || s > 359999)
		snprintf(buf, len, "--:--");
	else if (s >= 3600)
		snprintf(buf, len, "%d:%02d:%02d", (int)s / 3600,
			 (int)s / 60 % 60, (int)s % 60);
	else
		snprintf(buf, len, "%d:%02d", (int)s / 60, (int)s % 60);
}

/* Human units for a latency or pause in ns. */
static void fmt_ns(char *buf, size_t len, uint64_t ns)
{
	if (ns < 10000)
		snprintf(buf, len, "%.1f us", ns / 1e3);
	else if (ns < 1000000)
		snprintf(buf, len, "%.0f us", ns / 1e3);
	else if (ns < 10000000000ull)
		snprintf(buf, len, "%.1f ms", ns / 1e6);
	else
		snprintf(buf, len, "%.2f s", ns / 1e9);
}

static double smooth(double avg, double sample)
{
	return avg ? 0.7 * avg + 0.3 * sample : sample;
}

/*
 * Rate: RAM processed per second, smoothed over the last polls; once every
 * page is saved and the end (blobs, fsync, rename) is being written, the
 * average over the whole run, and "ETA" says what is left to do.
 */
static void progress_update(struct progress *p, const struct mig_info *mi)
{
	uint64_t t = now_ns();
	uint64_t total = mi->ram_total;
	uint64_t done =
	    total > mi->ram_remaining ? total - mi->ram_remaining : 0;
	double pct = total ? 100.0 * (double)done / (double)total : 0;
	bool saved = total && done == total;
	char eta[32], bar[41];
	int filled = (int)(pct * 40 / 100);

	if (saved && t > p->start_ns)
		p->rate = (double)done * 1e9 / (double)(t - p->start_ns);
	else if (p->last_ns && t > p->last_ns && done >= p->last_done)
		p->rate = smooth(p->rate, (double)(done - p->last_done) * 1e9 /
					      (double)(t - p->last_ns));
	p->last_ns = t;
	p->last_done = done;
	if (saved)
		snprintf(eta, sizeof(eta), "sync");
	else
		fmt_duration(eta, sizeof(eta),
			     p->rate > 0 ? (double)(total - done) / p->rate
					 : -1);
	if (p->tty) {
		memset(bar, '#', (size_t)filled);
		memset(bar + filled, '.', (size_t)(40 - filled));
		bar[40] = 0;
		fprintf(stderr,
			"\r[%s] %5.1f%% %8.1f MB/s  ETA %-5s  faults %llu ",
			bar, pct, p->rate / 1e6, eta,
			(unsigned long long)mi->faults);
		p->drawn = true;
		return;
	}
	if ((int)(pct / 10) > p->last_decile ||
	    t - p->last_line_ns >= LOG_LINE_EVERY_NS) {
		p->last_decile = (int)(pct / 10);
		p->last_line_ns = t;
		fprintf(stderr,
			"snapshot: %5.1f%% %.1f MB/s ETA %s faults %llu\n", pct,
			p->rate / 1e6, eta, (unsigned long long)mi->faults);
	}
}

static void progress_end(struct progress *p)
{
	if (p->drawn)
		fputc('\n', stderr);
	p->drawn = false;
}

static void print_summary(const char *target, const struct mig_info *mi)
{
	double secs = mi->total_ns / 1e9;
	uint64_t bytes = mi->ram_transferred;
	char down[32], p50[32], p99[32], max[32];

	fmt_ns(down, sizeof(down), mi->downtime_ns);
	fmt_ns(p50, sizeof(p50), mi->stall_p50_ns);
	fmt_ns(p99, sizeof(p99), mi->stall_p99_ns);
	fmt_ns(max, sizeof(max), mi->stall_max_ns);
	printf("snapshot %s: completed\n", target);
	printf("  pause (downtime)    %s\n", down);
	printf("  total time          %.3f s\n", secs);
	printf("  RAM                 %.1f MiB, %.1f MiB written, "
	       "%llu zero pages\n",
	       mi->ram_total / 1048576.0, bytes / 1048576.0,
	       (unsigned long long)mi->ram_duplicate);
	printf("  rate                %.1f MB/s (RAM scanned), "
	       "%.1f MB/s (written)\n",
	       secs > 0 ? mi->ram_total / secs / 1e6 : 0,
	       secs > 0 ? bytes / secs / 1e6 : 0);
	printf("  strategy            %s\n",
	       mi->strategy[0] ? mi->strategy : "?");
	printf("  write faults        %llu (%llu copied aside, %llu saved "
	       "first)\n",
	       (unsigned long long)mi->faults,
	       (unsigned long long)mi->copied_pages,
	       (unsigned long long)mi->faults_write_first);
	printf("  vCPU stall p50/p99/max  %s / %s / %s\n", p50, p99, max);
	if (mi->have_guest) {
		fmt_ns(max, sizeof(max), mi->guest_max_write_ns);
		printf("  guest's worst write %s%s\n", max,
		       mi->guest_all_seen ? ""
					  : " (of the last 2048 ms it kept)");
	}
}

/* ------------------------------------------------------------------ */
/* The command                                                         */
/* ------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: livesnap snapshot --socket PATH [options] FILE\n"
	       "\n"
	       "Takes a live snapshot of the VM whose QMP socket is PATH into\n"
	       "FILE (or into a command's stdin when FILE is exec:CMD); the\n"
	       "guest runs on while its memory is saved.\n"
	       "\n"
	       "  -s, --socket PATH     the VM's QMP socket (required)\n"
	       "  -S, --strategy S      auto|copy|write-first (default auto)\n"
	       "  -q, --quiet           no progress bar, summary only\n"
	       "  -j, --json            the final query-migrate answer (JSON) "
	       "instead\n"
	       "                        of the summary\n"
	       "  -h, --help            this text\n");
}

/* FILE -> QMP uri: exec: and file: pass through, a path is made absolute
 * (the VMM's working directory is not ours). */
static char *make_uri(const char *target)
{
	char dir[PATH_MAX], *uri = NULL, *copy, *slash;
	const char *base;

	if (!strncmp(target, "exec:", 5) || !strncmp(target, "file:", 5))
		return strdup(target);
	if (target[0] == '/')
		return asprintf(&uri, "file:%s", target) < 0 ? NULL : uri;
	copy = strdup(target);
	if (!copy)
		return NULL;
	slash = strrchr(copy, '/');
	base = slash ? slash + 1 : copy;
	if (slash)
		*slash = 0;
	if (!realpath(slash ? (copy[0] ? copy : "/") : ".", dir)) {
		free(copy);
		return NULL;
	}
	if (asprintf(&uri, "file:%s/%s", strcmp(dir, "/") ? dir : "", base) < 0)
		uri = NULL;
	free(copy);
	return uri;
}

static int start_snapshot(struct qmpc *q, const char *uri, const char *strategy)
{
	json_t *ret;

	ret = qmpc_execute(q, "migrate-set-capabilities",
			   json_pack("{s:[{s:s,s:b}]}", "capabilities",
				     "capability", "background-snapshot",
				     "state", 1));
	if (!ret)
		return -1;
	json_decref(ret);
	ret = qmpc_execute(q, "migrate",
			   json_pack("{s:s,s:s}", "uri", uri,
				     "x-livesnap-strategy", strategy));
	if (!ret)
		return -1;
	json_decref(ret);
	return 0;
}

/*
 * Polls query-migrate until the end; fills mi with the last answer and,
 * if last is not NULL, keeps that answer there (a new reference).
 */
static int follow_snapshot(struct qmpc *q, bool quiet, struct mig_info *mi,
			   json_t **last)
{
	struct progress p = {.tty = isatty(STDERR_FILENO)};
	bool cancel_sent = false;

	p.start_ns = now_ns();
	for (;;) {
		json_t *r = qmpc_execute(q, "query-migrate", NULL);

		if (!r) {
			progress_end(&p);
			return -1;
		}
		mig_info_parse(r, mi);
		if (mig_finished(mi) && last) {
			*last = r;
			break;
		}
		json_decref(r);
		if (mig_finished(mi))
			break;
		if (interrupted && !cancel_sent) {
			r = qmpc_execute(q, "migrate_cancel", NULL);
			if (!r) {
				progress_end(&p);
				return -1;
			}
			json_decref(r);
			cancel_sent = true;
		}
		if (!quiet)
			progress_update(&p, mi);
		usleep((p.tty ? POLL_TTY_MS : POLL_LOG_MS) * 1000);
	}
	if (!quiet && !strcmp(mi->status, "completed"))
		progress_update(&p, mi);
	progress_end(&p);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"strategy", required_argument, NULL, 'S'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *sock = NULL, *strategy = "auto";
	struct qmpc q = {.fd = -1};
	struct mig_info mi;
	struct sigaction sa = {.sa_handler = on_sigint};
	bool quiet = false, as_json = false;
	json_t *last = NULL;
	char *uri;
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "s:S:qjh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock = optarg;
			break;
		case 'S':
			strategy = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'j':
			as_json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!sock || optind != argc - 1) {
		fprintf(stderr, "livesnap snapshot: %s\n",
			!sock ? "--socket is required"
			      : "exactly one FILE is required");
		usage(stderr);
		return 2;
	}
	if (strcmp(strategy, "auto") && strcmp(strategy, "copy") &&
	    strcmp(strategy, "write-first")) {
		fprintf(stderr,
			"livesnap snapshot: unknown strategy '%s' (auto, copy "
			"or write-first)\n",
			strategy);
		return 2;
	}
	uri = make_uri(argv[optind]);
	if (!uri) {
		fprintf(stderr, "livesnap snapshot: %s: %s\n", argv[optind],
			strerror(errno));
		return 1;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (qmpc_connect(&q, sock) || start_snapshot(&q, uri, strategy) ||
	    follow_snapshot(&q, quiet, &mi, &last)) {
		fprintf(stderr, "livesnap snapshot: %s\n", q.err);
		goto out;
	}
	if (as_json) {
		json_dumpf(last, stdout, JSON_COMPACT);
		putchar('\n');
	}
	if (!strcmp(mi.status, "completed")) {
		if (!as_json)
			print_summary(argv[optind], &mi);
		rc = 0;
	} else if (!strcmp(mi.status, "cancelled")) {
		fprintf(stderr, "livesnap snapshot: cancelled\n");
		rc = 130;
	} else {
		fprintf(stderr, "livesnap snapshot: failed: %s\n",
			mi.error[0] ? mi.error : "(no reason given)");
	}
out:
	json_decref(last);
	qmpc_close(&q);
	free(uri);
	return rc;
}
