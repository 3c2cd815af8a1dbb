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
 * Ctrl-C or SIGTERM, or the end of --timeout, stops the wait at once:
 * a snapshot already asked for is cancelled (migrate_cancel, and a few
 * seconds for the VMM to confirm; a second signal does not wait for that).
 */
#include <errno.h>
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
#define CANCEL_WAIT_MS	  5000	/* for the VMM to confirm a cancel */
#define POLL_TTY_MS	  100	/* redraw period on a terminal */
#define POLL_LOG_MS	  250	/* query period otherwise */
#define LOG_LINE_EVERY_NS 5000000000ull

/* ------------------------------------------------------------------ */
/* A minimal QMP client: one JSON object per line, events set aside.   */
/* ------------------------------------------------------------------ */

/*
 * Signals received (SIGINT, SIGTERM), and the last one. The two are blocked
 * but in ppoll(), so none can slip in between a check and a wait.
 */
static volatile sig_atomic_t signals, last_signal;
static sigset_t wait_mask; /* the mask in ppoll: both unblocked */

/* Sleeps ms, less when a signal comes. */
static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	ppoll(NULL, 0, &ts, &wait_mask);
}

struct qmpc {
	int fd;
	char *buf;
	size_t len;
	uint64_t id;	      /* of the last command sent */
	uint64_t deadline_ns; /* --timeout; 0: none */
	int signals_ok;	      /* a wait ends when more signals came */
	bool stopped;	      /* a wait ended for a signal or the deadline */
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

/* Whether a signal or --timeout ends the wait now (err says which). */
static bool qmpc_stopped(struct qmpc *q)
{
	if (signals > q->signals_ok) {
		q->stopped = true;
		qmpc_fail(q, "interrupted by SIG%s", sigabbrev_np(last_signal));
	} else if (q->deadline_ns && now_ns() >= q->deadline_ns) {
		q->stopped = true;
		qmpc_fail(q, "--timeout reached");
	}
	return q->stopped;
}

/*
 * Reads the next message (reply or event). Waits at most timeout_ms, and
 * not past --timeout nor past a signal; returns NULL with err set then, or
 * on EOF or bad input. A return of json_null() is never passed on: it is
 * turned into NULL here.
 */
static json_t *qmpc_read(struct qmpc *q, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;

	if (q->deadline_ns && q->deadline_ns < deadline)
		deadline = q->deadline_ns;
	for (;;) {
		json_t *msg = qmpc_take_line(q);
		struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
		struct timespec ts;
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
		if (qmpc_stopped(q))
			return NULL;
		left = ((int64_t)(deadline - now_ns()) + 999999) / 1000000;
		if (left <= 0) {
			qmpc_fail(q, "no answer from the VMM within %d ms",
				  timeout_ms);
			return NULL;
		}
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (long)(left % 1000) * 1000000;
		n = ppoll(&pfd, 1, &ts, &wait_mask);
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
	json_t *req = json_pack("{s:s, s:I}", "execute", cmd, "id",
				(json_int_t)++q->id);
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
		/* the late answer to a command whose wait a signal ended */
		if (json_object_get(msg, "id") &&
		    json_integer_value(json_object_get(msg, "id")) !=
			(json_int_t)q->id) {
			json_decref(msg);
			continue;
		}
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
	uint64_t stop_ns, capture_ns, arm_ns, prepare_ns; /* the pause's parts */
	uint64_t faults, faults_write_first, copied_pages;
	uint64_t stall_p50_ns, stall_p99_ns, stall_max_ns;
	char strategy[32];
	bool delta;	 /* an incremental snapshot that is a delta */
	char parent[40]; /* its parent's id */
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
	mi->stop_ns = jget_u64(x, "stop-ns");
	mi->capture_ns = jget_u64(x, "capture-ns");
	mi->arm_ns = jget_u64(x, "arm-ns");
	mi->prepare_ns = jget_u64(x, "prepare-ns");
	mi->faults = jget_u64(x, "faults");
	mi->faults_write_first = jget_u64(x, "faults-write-first");
	mi->copied_pages = jget_u64(x, "copied-pages");
	mi->stall_p50_ns = jget_u64(x, "stall-p50-ns");
	mi->stall_p99_ns = jget_u64(x, "stall-p99-ns");
	mi->stall_max_ns = jget_u64(x, "stall-max-ns");
	jget_str(x, "strategy", mi->strategy, sizeof(mi->strategy));
	mi->delta = json_is_true(json_object_get(x, "delta"));
	jget_str(x, "parent", mi->parent, sizeof(mi->parent));
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
	char down[32], p50[32], p99[32], max[32], stop[32], cap[32], arm[32];
	char prep[32];

	fmt_ns(down, sizeof(down), mi->downtime_ns);
	fmt_ns(stop, sizeof(stop), mi->stop_ns);
	fmt_ns(cap, sizeof(cap), mi->capture_ns);
	fmt_ns(arm, sizeof(arm), mi->arm_ns);
	fmt_ns(prep, sizeof(prep), mi->prepare_ns);
	fmt_ns(p50, sizeof(p50), mi->stall_p50_ns);
	fmt_ns(p99, sizeof(p99), mi->stall_p99_ns);
	fmt_ns(max, sizeof(max), mi->stall_max_ns);
	printf("snapshot %s: completed\n", target);
	printf("  pause (downtime)    %s: vCPUs stopped in %s, state %s, "
	       "write protection %s\n",
	       down, stop, cap, arm);
	printf("  prepare             %s, before the pause, vCPUs running "
	       "(RAM write-protected early)\n",
	       prep);
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
	if (mi->delta)
		printf("  delta of            %s\n", mi->parent);
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

static void on_signal(int sig)
{
	last_signal = sig;
	signals = signals + 1;
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

static int start_snapshot(struct qmpc *q, const char *uri, const char *strategy,
			  bool incremental)
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
			   json_pack("{s:s,s:s,s:b}", "uri", uri,
				     "x-livesnap-strategy", strategy,
				     "x-livesnap-incremental", incremental));
	if (!ret)
		return -1;
	json_decref(ret);
	return 0;
}

/*
 * After a signal or --timeout: cancels the snapshot and waits a little for
 * the VMM to confirm; a further signal ends that wait too.
 */
static void cancel_snapshot(struct qmpc *q, struct mig_info *mi)
{
	uint64_t until = now_ns() + CANCEL_WAIT_MS * 1000000ull;
	json_t *r;

	q->signals_ok = signals;
	q->deadline_ns = until;
	q->stopped = false;
	r = qmpc_execute(q, "migrate_cancel", NULL);
	while (r && !mig_finished(mi)) {
		json_decref(r);
		r = qmpc_execute(q, "query-migrate", NULL);
		if (r)
			mig_info_parse(r, mi);
		if (r && !mig_finished(mi))
			sleep_ms(POLL_TTY_MS);
	}
	json_decref(r);
}

/*
 * Polls query-migrate until the end; fills mi with the last answer and,
 * if last is not NULL, keeps that answer there (a new reference).
 */
static int follow_snapshot(struct qmpc *q, bool quiet, struct mig_info *mi,
			   json_t **last)
{
	struct progress p = {.tty = isatty(STDERR_FILENO)};

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
		if (!quiet)
			progress_update(&p, mi);
		sleep_ms(p.tty ? POLL_TTY_MS : POLL_LOG_MS);
		if (qmpc_stopped(q)) {
			progress_end(&p);
			return -1;
		}
	}
	if (!quiet && !strcmp(mi->status, "completed"))
		progress_update(&p, mi);
	progress_end(&p);
	return 0;
}

enum { OPT_TIMEOUT = CLI_LONG };

struct snap_opts {
	const char *sock, *strategy, *target;
	bool quiet, json, incremental;
	uint64_t timeout_ns; /* 0: none */
};

static int parse_timeout(const struct cli_cmd *cmd, const char *s,
			 uint64_t *ns)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e7)
		return cli_usage_error(cmd, "--timeout '%s': not a number of "
				       "seconds above 0", s);
	*ns = (uint64_t)(v * 1e9);
	return 0;
}

static int parse_args(const struct cli_cmd *cmd, int argc, char **argv,
		      struct snap_opts *o)
{
	struct cli_parser p;
	int c;

	*o = (struct snap_opts){.strategy = "auto"};
	cli_begin(&p, cmd, argc, argv);
	while ((c = cli_next(&p)) > 0) {
		switch (c) {
		case 's':
			o->sock = p.arg;
			break;
		case 'S':
			o->strategy = p.arg;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'i':
			o->incremental = true;
			break;
		case 'j':
			o->json = true;
			break;
		case OPT_TIMEOUT:
			if (parse_timeout(cmd, p.arg, &o->timeout_ns))
				return 2;
			break;
		}
	}
	if (c == CLI_EXIT)
		return p.status;
	o->target = p.operands[0];
	if (!o->sock)
		return cli_usage_error(cmd, "--socket is required");
	if (strcmp(o->strategy, "auto") && strcmp(o->strategy, "copy") &&
	    strcmp(o->strategy, "write-first"))
		return cli_usage_error(cmd, "unknown strategy '%s' (auto, copy "
				       "or write-first)", o->strategy);
	return -1;
}

/* The exit status once the snapshot has ended (or its wait was stopped). */
static int report(const struct snap_opts *o, const struct mig_info *mi,
		  json_t *last)
{
	if (o->json && last) {
		json_dumpf(last, stdout, JSON_COMPACT);
		putchar('\n');
	}
	if (!strcmp(mi->status, "completed")) {
		if (!o->json)
			print_summary(o->target, mi);
		return 0;
	}
	if (!strcmp(mi->status, "failed")) {
		fprintf(stderr, "livesnap snapshot: failed: %s\n",
			mi->error[0] ? mi->error : "(no reason given)");
		return 1;
	}
	fprintf(stderr, "livesnap snapshot: cancelled\n");
	return signals ? 128 + last_signal : 1;
}

static int catch_signals(const struct sigaction *sa)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, &wait_mask) ||
	    sigaction(SIGINT, sa, NULL) || sigaction(SIGTERM, sa, NULL)) {
		fprintf(stderr, "livesnap snapshot: sigaction: %s\n",
			strerror(errno));
		return -1;
	}
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGTERM);
	return 0;
}

static int snapshot_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
	struct qmpc q = {.fd = -1};
	struct mig_info mi = {0};
	struct snap_opts o;
	json_t *last = NULL;
	bool asked = false;
	char *uri;
	int rc;

	rc = parse_args(cmd, argc, argv, &o);
	if (rc >= 0)
		return rc;
	uri = make_uri(o.target);
	if (!uri) {
		fprintf(stderr, "livesnap snapshot: %s: %s\n", o.target,
			strerror(errno));
		return 1;
	}
	if (catch_signals(&sa)) {
		free(uri);
		return 1;
	}
	if (o.timeout_ns)
		q.deadline_ns = now_ns() + o.timeout_ns;
	rc = qmpc_connect(&q, o.sock);
	if (!rc) {
		asked = true; /* from "migrate" on, a snapshot may run */
		rc = start_snapshot(&q, uri, o.strategy, o.incremental);
	}
	rc = rc ?: follow_snapshot(&q, o.quiet, &mi, &last);
	if (rc && q.stopped && asked) {
		fprintf(stderr, "livesnap snapshot: %s: cancelling\n", q.err);
		cancel_snapshot(&q, &mi);
		if (!mig_finished(&mi))
			fprintf(stderr, "livesnap snapshot: the VMM did not "
					"confirm the cancel: %s\n", q.err);
		rc = signals ? 128 + last_signal : 1;
	} else if (rc) {
		fprintf(stderr, "livesnap snapshot: %s\n", q.err);
		rc = q.stopped && signals ? 128 + last_signal : 1;
	} else {
		rc = report(&o, &mi, last);
	}
	json_decref(last);
	qmpc_close(&q);
	free(uri);
	return rc;
}

static const struct cli_opt snapshot_opts[] = {
    {"socket", 's', "PATH", "the VM's QMP socket (required)"},
    {"strategy", 'S', "S", "auto|copy|write-first (default auto)"},
    {"incremental", 'i', NULL,
     "a delta of the VM's previous incremental snapshot\n"
     "(only the pages written since; the first is full);\n"
     "keep a chain's files in one directory"},
    {"timeout", OPT_TIMEOUT, "SECONDS",
     "cancel the snapshot unless done within SECONDS\n"
     "(default: no limit; each answer of the VMM is\n"
     "waited for 30 s at most)"},
    {"quiet", 'q', NULL, "no progress bar, summary only"},
    {"json", 'j', NULL, "the final query-migrate answer (JSON) instead\n"
			"of the summary"},
    {0},
};

const struct cli_cmd cmd_snapshot = {
    .name = "snapshot",
    .synopsis = "--socket PATH [options] FILE|exec:CMD",
    .summary = "take a live snapshot of a running VM through its control "
	       "socket",
    .description =
	"Takes a live snapshot of the VM whose QMP socket is PATH into FILE\n"
	"(or into a command's stdin when the target is exec:CMD); the guest\n"
	"runs on while its memory is saved. Ctrl-C or SIGTERM stops at once\n"
	"and cancels a snapshot already started, as --timeout does.\n",
    .opts = snapshot_opts,
    .exit_status = "  0  the snapshot completed\n"
		   "  1  it failed, was cancelled after --timeout, or the VMM "
		   "could not be\n"
		   "     reached or did not answer\n" CLI_EXIT_USAGE
		   "  130, 143  stopped by SIGINT (Ctrl-C) or SIGTERM "
		   "(128 + the signal)\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = snapshot_run,
};
