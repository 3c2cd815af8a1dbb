/* SPDX-License-Identifier: MIT */
/*
 * The QMP migration commands, as a QEMU user drives a background snapshot:
 *
 *   migrate-set-capabilities  only background-snapshot may be switched on
 *   query-migrate-capabilities
 *   migrate-set-parameters    x-livesnap-strategy: auto|copy|write-first,
 *                             x-livesnap-incremental: true (each snapshot
 *                             a delta of the one before; see snapshot.md)
 *   query-migrate-parameters
 *   migrate                   uri file:PATH | exec:CMD; our arguments
 *                             x-livesnap-strategy and (tests only)
 *                             x-test-copy-ram: PATH,
 *                             x-test-prepare-wait-ms: N
 *   query-migrate             QEMU's fields plus an x-livesnap object
 *   migrate_cancel
 *   query-livesnap-restore    how this VM was restored (if it was)
 *
 * and the MIGRATION event {"status": ...} at every status change. Handlers
 * run on the QMP thread one at a time, so the capability and parameter
 * state below needs no lock.
 */
#include <stddef.h>
#include <string.h>

#include "qmp.h"
#include "snapshot.h"
#include "util.h"

static const char *const unsupported_caps[] = {
    "xbzrle",
    "rdma-pin-all",
    "auto-converge",
    "zero-blocks",
    "compress",
    "events",
    "postcopy-ram",
    "x-colo",
    "release-ram",
    "block",
    "return-path",
    "pause-before-switchover",
    "multifd",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "x-ignore-shared",
    "validate-uuid",
    "zero-copy-send",
    "postcopy-preempt",
    "switchover-ack",
    "dirty-limit",
    "mapped-ram",
};

static bool strategy_parse(const char *s, enum ls_strategy *out)
{
	if (!strcmp(s, "auto"))
		*out = LS_STRATEGY_AUTO;
	else if (!strcmp(s, "copy"))
		*out = LS_STRATEGY_COPY;
	else if (!strcmp(s, "write-first"))
		*out = LS_STRATEGY_WRITE_FIRST;
	else
		return false;
	return true;
}

static const char *strategy_str(enum ls_strategy s)
{
	return s == LS_STRATEGY_COPY	      ? "copy"
	       : s == LS_STRATEGY_WRITE_FIRST ? "write-first"
					      : "auto";
}

static bool snapshot_running(struct qmp_migrate *q)
{
	enum vm_snap_status st = vm_snap_status(q->snap);

	return st == VM_SNAP_SETUP || st == VM_SNAP_ACTIVE;
}

static void on_status(void *opaque, enum vm_snap_status st)
{
	struct qmp_migrate *q = opaque;

	qmp_emit_event(q->srv, "MIGRATION",
		       json_pack("{s:s}", "status", vm_snap_status_name(st)));
}

/* Checks one {"capability": NAME, "state": BOOL}; applies it to *bg. */
static bool set_capability(struct qmp_req *req, json_t *cap, bool *bg)
{
	const char *name =
	    json_string_value(json_object_get(cap, "capability"));
	json_t *state = json_object_get(cap, "state");

	if (!name || !json_is_boolean(state)) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "each capability needs 'capability' (a string) "
			      "and 'state' (a boolean)");
		return false;
	}
	if (!strcmp(name, "background-snapshot")) {
		*bg = json_is_true(state);
		return true;
	}
	for (size_t i = 0; i < ARRAY_SIZE(unsupported_caps); i++) {
		if (strcmp(name, unsupported_caps[i]))
			continue;
		if (json_is_false(state))
			return true; /* off is what we do anyway */
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "capability '%s' is not supported: livesnap "
			      "only takes background snapshots "
			      "(background-snapshot)",
			      name);
		return false;
	}
	qmp_req_error(req, QMP_ERR_GENERIC, "unknown capability '%s'", name);
	return false;
}

static json_t *cmd_set_caps(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_migrate *q = opaque;
	json_t *caps = json_object_get(args, "capabilities"), *c;
	bool bg = q->background;
	size_t i;

	if (!json_is_array(caps)) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "'capabilities' must be an array");
		return NULL;
	}
	if (snapshot_running(q)) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "there's a migration process in progress");
		return NULL;
	}
	json_array_foreach(caps, i, c)
	{
		if (!set_capability(req, c, &bg))
			return NULL; /* all or nothing */
	}
	q->background = bg;
	return json_object();
}

static json_t *cmd_query_caps(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_migrate *q = opaque;
	json_t *a = json_array();

	json_array_append_new(a, json_pack("{s:s,s:b}", "capability",
					   "background-snapshot", "state",
					   q->background));
	for (size_t i = 0; i < ARRAY_SIZE(unsupported_caps); i++)
		json_array_append_new(a, json_pack("{s:s,s:b}", "capability",
						   unsupported_caps[i], "state",
						   0));
	return a;
}

/*
 * Our tuning parameters: migrate-set-parameters sets defaults, migrate may
 * override them for one snapshot. Each reads args[name] into p if present:
 * through parse/show, or, a boolean, as the bool at offset `flag`.
 */
struct param {
	const char *name;
	bool (*parse)(json_t *v, struct vm_snap_params *p);
	json_t *(*show)(const struct vm_snap_params *p);
	const char *expect; /* for the error message */
	size_t flag;
};

#define FLAG_PARAM(name, field)                                               \
	{name, NULL, NULL, "a boolean", offsetof(struct vm_snap_params, field)}

static bool param_parse(const struct param *prm, json_t *v,
			struct vm_snap_params *p)
{
	if (prm->parse)
		return prm->parse(v, p);
	*(bool *)((char *)p + prm->flag) = json_is_true(v);
	return json_is_boolean(v);
}

static json_t *param_show(const struct param *prm,
			  const struct vm_snap_params *p)
{
	if (prm->show)
		return prm->show(p);
	return json_boolean(*(const bool *)((const char *)p + prm->flag));
}

static bool parse_strategy(json_t *v, struct vm_snap_params *p)
{
	return json_is_string(v) &&
	       strategy_parse(json_string_value(v), &p->strategy);
}

static json_t *show_strategy(const struct vm_snap_params *p)
{
	return json_string(strategy_str(p->strategy));
}

static bool parse_spin(json_t *v, struct vm_snap_params *p)
{
	json_int_t n = json_integer_value(v);

	p->fault_spin_us = (int)n;
	return json_is_integer(v) && n >= -1 && n <= 1000000;
}

static json_t *show_spin(const struct vm_snap_params *p)
{
	return json_integer(p->fault_spin_us);
}

static bool parse_copy_buffer(json_t *v, struct vm_snap_params *p)
{
	json_int_t n = json_integer_value(v);

	p->copy_buffer_bytes = (size_t)n;
	return json_is_integer(v) && n >= 0 && n <= (json_int_t)1 << 40;
}

static json_t *show_copy_buffer(const struct vm_snap_params *p)
{
	return json_integer((json_int_t)p->copy_buffer_bytes);
}

static bool parse_granule(json_t *v, struct vm_snap_params *p)
{
	json_int_t n = json_integer_value(v);

	p->track_granule = (size_t)n;
	return json_is_integer(v) && n >= 0 && n <= (json_int_t)1 << 30 &&
	       !(n & (n - 1)) && (!n || n >= 4096);
}

static json_t *show_granule(const struct vm_snap_params *p)
{
	return json_integer((json_int_t)p->track_granule);
}

static const struct param params[] = {
    {"x-livesnap-strategy", parse_strategy, show_strategy,
     "auto, copy or write-first"},
    FLAG_PARAM("x-livesnap-keep-thp", keep_thp),
    {"x-livesnap-fault-spin-us", parse_spin, show_spin,
     "microseconds from -1 (never spin) to 1000000, 0 for the default"},
    {"x-livesnap-copy-buffer-bytes", parse_copy_buffer, show_copy_buffer,
     "bytes, 0 for the default"},
    FLAG_PARAM("x-livesnap-incremental", incremental),
    {"x-livesnap-track-granule", parse_granule, show_granule,
     "0 (one page) or a power of two from 4096 to 1 GiB (bytes)"},
    FLAG_PARAM("x-livesnap-writer-idle", writer_idle),
    FLAG_PARAM("x-livesnap-track-async", track_async),
    FLAG_PARAM("x-livesnap-track-dirty-log", track_dirty_log),
};

static const struct param *find_param(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(params); i++)
		if (!strcmp(params[i].name, name))
			return &params[i];
	return NULL;
}

/*
 * Applies every tuning parameter in args to *p; other keys must be in
 * `also` (the command's own arguments). All or nothing.
 */
static bool get_params(struct qmp_req *req, const char *cmd, json_t *args,
		       const char *const *also, struct vm_snap_params *p)
{
	struct vm_snap_params next = *p;
	const char *key;
	json_t *v;

	json_object_foreach(args, key, v)
	{
		const struct param *prm = find_param(key);
		bool own = false;

		for (const char *const *k = also; *k && !own; k++)
			own = !strcmp(key, *k);
		if (own)
			continue;
		if (!prm) {
			qmp_req_error(req, QMP_ERR_GENERIC,
				      "%s: parameter '%s' is not supported",
				      cmd, key);
			return false;
		}
		if (!param_parse(prm, v, &next)) {
			qmp_req_error(req, QMP_ERR_GENERIC, "%s must be %s",
				      key, prm->expect);
			return false;
		}
	}
	*p = next;
	return true;
}

static json_t *cmd_set_params(struct qmp_req *req, json_t *args, void *opaque)
{
	static const char *const none[] = {NULL};
	struct qmp_migrate *q = opaque;

	if (!get_params(req, "migrate-set-parameters", args, none,
			&q->defaults))
		return NULL;
	return json_object();
}

static json_t *cmd_query_params(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_migrate *q = opaque;
	json_t *r = json_object();

	for (size_t i = 0; i < ARRAY_SIZE(params); i++)
		json_object_set_new(r, params[i].name,
				    param_show(&params[i], &q->defaults));
	return r;
}

static json_t *cmd_migrate(struct qmp_req *req, json_t *args, void *opaque)
{
	static const char *const own[] = {"uri", "detach", "x-test-copy-ram",
					  "x-test-prepare-wait-ms", NULL};
	struct qmp_migrate *q = opaque;
	struct vm_snap_params p = q->defaults;
	const char *uri = json_string_value(json_object_get(args, "uri"));
	json_t *copy = json_object_get(args, "x-test-copy-ram");
	json_t *wait = json_object_get(args, "x-test-prepare-wait-ms");
	char err[VMM_ERR_MAX];
	int ret;

	if (!get_params(req, "migrate", args, own, &p))
		return NULL;
	if (!uri) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "migrate: 'uri' (file:PATH or exec:CMD) is "
			      "required");
		return NULL;
	}
	if (copy && !json_is_string(copy)) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "x-test-copy-ram must be a path");
		return NULL;
	}
	if (wait && (!json_is_integer(wait) || json_integer_value(wait) < 0 ||
		     json_integer_value(wait) > 10000)) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "x-test-prepare-wait-ms must be 0..10000");
		return NULL;
	}
	if (!q->background) {
		qmp_req_error(req, QMP_ERR_GENERIC,
			      "livesnap only takes background snapshots: set "
			      "capability background-snapshot first "
			      "(migrate-set-capabilities)");
		return NULL;
	}
	p.test_copy_ram = json_string_value(copy);
	p.test_prepare_wait_ms =
	    wait ? (unsigned)json_integer_value(wait) : 0;
	ret = vm_snap_start(q->snap, uri, &p, err);
	if (ret) {
		qmp_req_error(req, QMP_ERR_GENERIC, "%s", err);
		return NULL;
	}
	return json_object();
}

static json_t *cmd_query_migrate(struct qmp_req *req, json_t *args,
				 void *opaque)
{
	struct qmp_migrate *q = opaque;

	return vm_snap_query(q->snap);
}

static json_t *cmd_migrate_cancel(struct qmp_req *req, json_t *args,
				  void *opaque)
{
	struct qmp_migrate *q = opaque;

	vm_snap_cancel(q->snap); /* QEMU: nothing to cancel is fine */
	return json_object();
}

static json_t *cmd_query_restore(struct qmp_req *req, json_t *args,
				 void *opaque)
{
	struct qmp_migrate *q = opaque;

	if (!q->restore)
		return json_pack("{s:b}", "restored", 0);
	return vm_restore_query(q->restore);
}

int qmp_migrate_register(struct qmp_migrate *q, struct qmp_server *srv,
			 struct vm_snap *snap, struct vm_restore *restore)
{
	static const struct {
		const char *name;
		qmp_cmd_fn fn;
	} cmds[] = {
	    {"migrate-set-capabilities", cmd_set_caps},
	    {"query-migrate-capabilities", cmd_query_caps},
	    {"migrate-set-parameters", cmd_set_params},
	    {"query-migrate-parameters", cmd_query_params},
	    {"migrate", cmd_migrate},
	    {"query-migrate", cmd_query_migrate},
	    {"migrate_cancel", cmd_migrate_cancel},
	    {"query-livesnap-restore", cmd_query_restore},
	};

	*q = (struct qmp_migrate){.srv = srv,
				  .snap = snap,
				  .restore = restore,
				  .defaults = {.strategy = LS_STRATEGY_AUTO,
					       .writer_idle = true,
					       .track_async = true,
					       .track_dirty_log = true}};
	vm_snap_set_event_fn(snap, on_status, q);
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		int ret =
		    qmp_register_command(srv, cmds[i].name, cmds[i].fn, q);

		if (ret)
			return ret;
	}
	return 0;
}
