/* SPDX-License-Identifier: MIT */
/*
 * QMP server thread: poll() over the listening socket, an eventfd (events
 * queued by other threads, shutdown) and up to QMP_MAX_CLIENTS clients.
 * Sockets are non-blocking; what a client does not read at once waits in
 * its output buffer, and a client that lets that buffer grow past
 * QMP_MAX_OUTPUT is dropped rather than stalling the VM's control.
 * Input is a stream of JSON objects (jansson decodes one at a time); a
 * partial object waits for more bytes, malformed input gets an error and
 * is skipped up to the next newline, and more than QMP_MAX_INPUT bytes of
 * one unfinished object gets an error and a close.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "livesnap.h"
#include "qmp.h"
#include "util.h"

#define QMP_MAX_CLIENTS	 16
#define QMP_MAX_COMMANDS 64
#define QMP_MAX_INPUT	 (1u << 20) /* one unfinished object */
#define QMP_MAX_OUTPUT	 (4u << 20) /* unread replies and events */
#define QMP_FLUSH_MS	 500	    /* at shutdown, per client */

struct qmp_buf {
	char *data;
	size_t len, cap;
};

struct qmp_client {
	int fd;
	bool negotiated;
	struct qmp_buf in, out;
};

struct qmp_command {
	char name[64];
	qmp_cmd_fn fn;
	void *opaque;
};

struct qmp_event {
	struct qmp_event *next;
	char *text; /* serialized, with "\r\n" */
};

struct qmp_server {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd;
	int wake_fd; /* eventfd */
	pthread_t thread;
	bool started;
	struct qmp_client clients[QMP_MAX_CLIENTS];
	struct qmp_command cmds[QMP_MAX_COMMANDS];
	unsigned ncmds;

	pthread_mutex_t lock; /* events and stop */
	struct qmp_event *ev_head, **ev_tail;
	bool stop;
};

struct qmp_req {
	struct qmp_server *srv;
	const char *cls;
	char desc[VMM_ERR_MAX];
};

static int buf_append(struct qmp_buf *b, const char *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static void buf_consume(struct qmp_buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

static void buf_free(struct qmp_buf *b)
{
	free(b->data);
	*b = (struct qmp_buf){0};
}

/* ---- commands ---- */

int qmp_register_command(struct qmp_server *s, const char *name, qmp_cmd_fn fn,
			 void *opaque)
{
	for (unsigned i = 0; i < s->ncmds; i++)
		if (!strcmp(s->cmds[i].name, name))
			return -EEXIST;
	if (s->ncmds == QMP_MAX_COMMANDS ||
	    strlen(name) >= sizeof(s->cmds[0].name))
		return -ENOSPC;
	snprintf(s->cmds[s->ncmds].name, sizeof(s->cmds[0].name), "%s", name);
	s->cmds[s->ncmds].fn = fn;
	s->cmds[s->ncmds].opaque = opaque;
	s->ncmds++;
	return 0;
}

json_t *qmp_command_names(struct qmp_server *s)
{
	json_t *a = json_array();

	json_array_append_new(a,
			      json_pack("{s:s}", "name", "qmp_capabilities"));
	for (unsigned i = 0; i < s->ncmds; i++)
		json_array_append_new(
		    a, json_pack("{s:s}", "name", s->cmds[i].name));
	return a;
}

void qmp_req_error(struct qmp_req *req, const char *cls, const char *fmt, ...)
{
	va_list ap;

	req->cls = cls;
	va_start(ap, fmt);
	vsnprintf(req->desc, sizeof(req->desc), fmt, ap);
	va_end(ap);
}

struct qmp_server *qmp_req_server(struct qmp_req *req)
{
	return req->srv;
}

/* ---- output ---- */

static void client_close(struct qmp_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	*c = (struct qmp_client){.fd = -1};
}

/* Writes what the socket takes now; false if the client is gone. */
static bool client_flush(struct qmp_client *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK;
		}
		buf_consume(&c->out, (size_t)n);
	}
	return true;
}

static void client_send_text(struct qmp_client *c, const char *text)
{
	if (c->fd < 0)
		return;
	if (c->out.len + strlen(text) > QMP_MAX_OUTPUT ||
	    buf_append(&c->out, text, strlen(text))) {
		fprintf(stderr, "livesnap: qmp: dropping a client that reads "
				"nothing\n");
		client_close(c);
		return;
	}
	if (!client_flush(c))
		client_close(c);
}

static void client_send(struct qmp_client *c, json_t *msg)
{
	char *s = json_dumps(msg, JSON_COMPACT);
	char *line;

	if (!s)
		return;
	/* QEMU ends every message with CRLF. */
	if (asprintf(&line, "%s\r\n", s) >= 0) {
		client_send_text(c, line);
		free(line);
	}
	free(s);
}

static void client_send_error(struct qmp_client *c, json_t *id, const char *cls,
			      const char *desc)
{
	json_t *m =
	    json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);

	if (id)
		json_object_set(m, "id", id);
	client_send(c, m);
	json_decref(m);
}

/* ---- events ---- */

void qmp_emit_event(struct qmp_server *s, const char *name, json_t *data)
{
	struct qmp_event *ev = calloc(1, sizeof(*ev));
	struct timeval tv;
	uint64_t one = 1;
	json_t *m;
	char *text;

	gettimeofday(&tv, NULL);
	m = json_pack("{s:s,s:{s:I,s:I}}", "event", name, "timestamp",
		      "seconds", (json_int_t)tv.tv_sec, "microseconds",
		      (json_int_t)tv.tv_usec);
	if (data)
		json_object_set_new(m, "data", data);
	text = m ? json_dumps(m, JSON_COMPACT) : NULL;
	json_decref(m);
	if (!ev || !text || asprintf(&ev->text, "%s\r\n", text) < 0) {
		free(ev);
		free(text);
		return;
	}
	free(text);
	pthread_mutex_lock(&s->lock);
	*s->ev_tail = ev;
	s->ev_tail = &ev->next;
	pthread_mutex_unlock(&s->lock);
	if (write(s->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		fprintf(stderr, "livesnap: qmp: eventfd: %s\n",
			strerror(errno));
}

static void deliver_events(struct qmp_server *s)
{
	struct qmp_event *ev;

	pthread_mutex_lock(&s->lock);
	ev = s->ev_head;
	s->ev_head = NULL;
	s->ev_tail = &s->ev_head;
	pthread_mutex_unlock(&s->lock);
	while (ev) {
		struct qmp_event *next = ev->next;

		for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
			if (s->clients[i].fd >= 0 && s->clients[i].negotiated)
				client_send_text(&s->clients[i], ev->text);
		free(ev->text);
		free(ev);
		ev = next;
	}
}

/* ---- requests ---- */

static const struct qmp_command *find_command(struct qmp_server *s,
					      const char *name)
{
	for (unsigned i = 0; i < s->ncmds; i++)
		if (!strcmp(s->cmds[i].name, name))
			return &s->cmds[i];
	return NULL;
}

/* Checks the members of a request: 0, or -1 with why in desc. */
static int check_request(json_t *msg, const char **name, json_t **args,
			 char *desc)
{
	const char *key;
	json_t *v;

	if (!json_is_object(msg)) {
		strcpy(desc, "QMP input must be a JSON object");
		return -1;
	}
	json_object_foreach(msg, key, v)
	{
		if (strcmp(key, "execute") && strcmp(key, "arguments") &&
		    strcmp(key, "id")) {
			snprintf(desc, VMM_ERR_MAX,
				 "QMP input member '%.64s' is unexpected", key);
			return -1;
		}
	}
	v = json_object_get(msg, "execute");
	if (!json_is_string(v)) {
		strcpy(desc, "QMP input lacks member 'execute' (a string)");
		return -1;
	}
	*name = json_string_value(v);
	*args = json_object_get(msg, "arguments");
	if (*args && !json_is_object(*args)) {
		strcpy(desc, "QMP input member 'arguments' must be an object");
		return -1;
	}
	return 0;
}

static void run_command(struct qmp_server *s, struct qmp_client *c,
			const struct qmp_command *cmd, json_t *args, json_t *id)
{
	struct qmp_req req = {.srv = s};
	json_t *empty = json_object();
	json_t *ret = cmd->fn(&req, args ? args : empty, cmd->opaque);

	json_decref(empty);
	if (!ret) {
		client_send_error(c, id, req.cls ? req.cls : QMP_ERR_GENERIC,
				  req.desc[0] ? req.desc : "command failed");
		return;
	}
	json_t *m = json_pack("{s:o}", "return", ret);

	if (id)
		json_object_set(m, "id", id);
	client_send(c, m);
	json_decref(m);
}

static void handle_message(struct qmp_server *s, struct qmp_client *c,
			   json_t *msg)
{
	json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
	const struct qmp_command *cmd;
	const char *name = NULL;
	json_t *args = NULL;
	char desc[VMM_ERR_MAX];

	if (check_request(msg, &name, &args, desc)) {
		client_send_error(c, id, QMP_ERR_GENERIC, desc);
		return;
	}
	if (!strcmp(name, "qmp_capabilities")) {
		if (c->negotiated) {
			client_send_error(c, id, QMP_ERR_NOT_FOUND,
					  "Capabilities negotiation is already "
					  "complete, command ignored");
			return;
		}
		c->negotiated = true;
		json_t *m = json_pack("{s:{}}", "return");

		if (id)
			json_object_set(m, "id", id);
		client_send(c, m);
		json_decref(m);
		return;
	}
	if (!c->negotiated) {
		client_send_error(c, id, QMP_ERR_NOT_FOUND,
				  "Expecting capabilities negotiation with "
				  "'qmp_capabilities'");
		return;
	}
	cmd = find_command(s, name);
	if (!cmd) {
		snprintf(desc, sizeof(desc),
			 "The command %.64s has not been "
			 "found",
			 name);
		client_send_error(c, id, QMP_ERR_NOT_FOUND, desc);
		return;
	}
	run_command(s, c, cmd, args, id);
}

/*
 * Drops malformed input: everything up to the first newline at or after
 * where the parser gave up (or all of it), so one bad line costs one
 * error even when it arrived in pieces.
 */
static void skip_bad_input(struct qmp_client *c, size_t error_pos)
{
	size_t from = error_pos < c->in.len ? error_pos : c->in.len;
	char *nl = memchr(c->in.data + from, '\n', c->in.len - from);

	buf_consume(&c->in, nl ? (size_t)(nl - c->in.data) + 1 : c->in.len);
}

static size_t leading_space(const struct qmp_buf *b)
{
	size_t i = 0;

	while (i < b->len && (b->data[i] == ' ' || b->data[i] == '\t' ||
			      b->data[i] == '\r' || b->data[i] == '\n'))
		i++;
	return i;
}

/* Handles every complete object in the input; false to close. */
static bool process_input(struct qmp_server *s, struct qmp_client *c)
{
	while (c->fd >= 0) {
		json_error_t jerr;
		json_t *msg;
		char desc[VMM_ERR_MAX];

		buf_consume(&c->in, leading_space(&c->in));
		if (!c->in.len)
			return true;
		msg = json_loadb(c->in.data, c->in.len, JSON_DISABLE_EOF_CHECK,
				 &jerr);
		if (msg) {
			buf_consume(&c->in, (size_t)jerr.position);
			handle_message(s, c, msg);
			json_decref(msg);
			continue;
		}
		if (json_error_code(&jerr) ==
		    json_error_premature_end_of_input) {
			if (c->in.len <= QMP_MAX_INPUT)
				return true; /* wait for the rest */
			client_send_error(c, NULL, QMP_ERR_GENERIC,
					  "JSON input too long: closing");
			client_flush(c);
			return false;
		}
		snprintf(desc, sizeof(desc), "JSON parse error, %s", jerr.text);
		client_send_error(c, NULL, QMP_ERR_GENERIC, desc);
		skip_bad_input(
		    c, (size_t)(jerr.position > 0 ? jerr.position - 1 : 0));
	}
	return false;
}

static void client_read(struct qmp_server *s, struct qmp_client *c)
{
	char chunk[65536];
	ssize_t n = recv(c->fd, chunk, sizeof(chunk), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0 || buf_append(&c->in, chunk, (size_t)n)) {
		client_close(c);
		return;
	}
	if (!process_input(s, c))
		client_close(c);
}

static json_t *greeting(void)
{
	return json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version",
			 "qemu", "major", LS_VERSION_MAJOR, "minor",
			 LS_VERSION_MINOR, "micro", 0, "package", "livesnap",
			 "capabilities");
}

static void accept_client(struct qmp_server *s)
{
	int fd =
	    accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	json_t *g;

	if (fd < 0)
		return;
	for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
		struct qmp_client *c = &s->clients[i];

		if (c->fd >= 0)
			continue;
		c->fd = fd;
		g = greeting();
		client_send(c, g);
		json_decref(g);
		return;
	}
	/* Full: tell the client why instead of leaving it hanging. */
	static const char full[] = "{\"error\": {\"class\": \"GenericError\", "
				   "\"desc\": \"too many QMP clients\"}}\r\n";
	/* Best effort: the client may already be gone. */
	(void)send(fd, full, sizeof(full) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

static bool should_stop(struct qmp_server *s)
{
	bool stop;

	pthread_mutex_lock(&s->lock);
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

/* At shutdown: give every client a moment to take what is queued. */
static void flush_all(struct qmp_server *s)
{
	for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++) {
		struct qmp_client *c = &s->clients[i];
		uint64_t end = vmm_now_ns() + QMP_FLUSH_MS * 1000000ull;

		while (c->fd >= 0 && c->out.len && vmm_now_ns() < end) {
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};

			if (poll(&p, 1, 50) < 0 && errno != EINTR)
				break;
			if (!client_flush(c))
				break;
		}
		client_close(c);
	}
}

static void *qmp_thread(void *arg)
{
	struct qmp_server *s = arg;
	struct pollfd pfd[QMP_MAX_CLIENTS + 2];
	int idx[QMP_MAX_CLIENTS + 2];

	while (!should_stop(s)) {
		nfds_t n = 0;
		uint64_t v;

		pfd[n++] = (struct pollfd){.fd = s->wake_fd, .events = POLLIN};
		pfd[n++] =
		    (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		for (int i = 0; i < QMP_MAX_CLIENTS; i++) {
			struct qmp_client *c = &s->clients[i];

			if (c->fd < 0)
				continue;
			idx[n] = i;
			pfd[n++] = (struct pollfd){
			    .fd = c->fd,
			    .events = POLLIN | (c->out.len ? POLLOUT : 0),
			};
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "livesnap: qmp: poll: %s\n",
				strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			if (read(s->wake_fd, &v, sizeof(v)) < 0 &&
			    errno != EAGAIN)
				break;
		}
		deliver_events(s);
		if (pfd[1].revents & POLLIN)
			accept_client(s);
		for (nfds_t i = 2; i < n; i++) {
			struct qmp_client *c = &s->clients[idx[i]];

			if (c->fd != pfd[i].fd)
				continue; /* closed and maybe reused */
			if ((pfd[i].revents & POLLOUT) && !client_flush(c)) {
				client_close(c);
				continue;
			}
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				client_read(s, c);
		}
		/* Commands may have queued events: send them now. */
		deliver_events(s);
	}
	deliver_events(s);
	flush_all(s);
	return NULL;
}

/* ---- set-up ---- */

static int listen_on(struct qmp_server *s, const char *path, char *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int ret;

	if (strlen(path) >= sizeof(addr.sun_path))
		return vmm_failx(err, ENAMETOOLONG,
				 "--qmp %s: path longer than %zu bytes", path,
				 sizeof(addr.sun_path) - 1);
	/* A stale socket from an earlier run may go; anything else stays. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return vmm_failx(err, EEXIST,
					 "--qmp %s: exists and is not a socket",
					 path);
		if (unlink(path) < 0)
			return vmm_fail(err, errno, "--qmp %s: unlink", path);
	}
	strcpy(addr.sun_path, path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0)
		return vmm_fail(err, errno, "socket(AF_UNIX)");
	/* Created 0600 from the start: no window where others can connect. */
	old = umask(0077);
	ret = bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (ret < 0)
		return vmm_fail(err, errno, "--qmp %s: bind", path);
	snprintf(s->path, sizeof(s->path), "%s", path);
	if (chmod(path, 0600) < 0)
		return vmm_fail(err, errno, "--qmp %s: chmod 0600", path);
	if (listen(s->listen_fd, SOMAXCONN) < 0)
		return vmm_fail(err, errno, "--qmp %s: listen", path);
	return 0;
}

int qmp_server_create(struct qmp_server **sp, const char *path, char *err)
{
	struct qmp_server *s = calloc(1, sizeof(*s));
	int ret;

	*sp = NULL;
	if (!s)
		return vmm_fail(err, ENOMEM, "QMP server");
	s->listen_fd = -1;
	s->ev_tail = &s->ev_head;
	pthread_mutex_init(&s->lock, NULL);
	for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
		s->clients[i].fd = -1;
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake_fd < 0) {
		ret = vmm_fail(err, errno, "eventfd");
		qmp_server_destroy(s);
		return ret;
	}
	ret = listen_on(s, path, err);
	if (ret) {
		qmp_server_destroy(s);
		return ret;
	}
	*sp = s;
	return 0;
}

int qmp_server_start(struct qmp_server *s, char *err)
{
	int ret = pthread_create(&s->thread, NULL, qmp_thread, s);

	if (ret)
		return vmm_fail(err, ret, "pthread_create(QMP)");
	pthread_setname_np(s->thread, "qmp");
	s->started = true;
	return 0;
}

void qmp_server_destroy(struct qmp_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_mutex_unlock(&s->lock);
		/* Cannot fail: the counter is far from overflowing. */
		(void)!write(s->wake_fd, &one, sizeof(one));
		pthread_join(s->thread, NULL);
	}
	for (unsigned i = 0; i < QMP_MAX_CLIENTS; i++)
		client_close(&s->clients[i]);
	deliver_events(s); /* frees what nobody received */
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->path[0])
		unlink(s->path);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
