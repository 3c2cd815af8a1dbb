/* SPDX-License-Identifier: MIT */
/*
 * QMP server: a unix socket speaking the QEMU Machine Protocol, on its own
 * thread. Commands live in a table that other files fill through
 * qmp_register_command() (qmp_vm.c: the VM commands; qmp_migrate.c can add
 * migration the same way). Handlers run on the QMP thread, one at a time.
 *
 * Protocol, as QEMU speaks it:
 *   greeting  {"QMP": {"version": {...}, "capabilities": []}}
 *   then only {"execute": "qmp_capabilities"} is accepted;
 *   {"execute": NAME, "arguments": {...}, "id": ANY}
 *     -> {"return": VALUE, "id": ANY}
 *     or {"error": {"class": "GenericError"|"CommandNotFound", "desc": ...}}
 *   events {"event": NAME, "data": {...}, "timestamp": {"seconds",
 *   "microseconds"}} go to every client past negotiation.
 */
#ifndef LS_VMM_QMP_H
#define LS_VMM_QMP_H

#include <jansson.h>

struct qmp_server;
struct qmp_req;

#define QMP_ERR_GENERIC	  "GenericError"
#define QMP_ERR_NOT_FOUND "CommandNotFound"

/*
 * A command handler. Returns the "return" value (a new reference; an empty
 * object for "nothing"), or NULL after qmp_req_error(). args is never NULL
 * (an empty object when the client sent none) and stays owned by the
 * caller.
 */
typedef json_t *(*qmp_cmd_fn)(struct qmp_req *req, json_t *args, void *opaque);

int qmp_server_create(struct qmp_server **sp, const char *path, char *err);
int qmp_server_start(struct qmp_server *s, char *err);
/* Sends queued events, closes every client, removes the socket file. */
void qmp_server_destroy(struct qmp_server *s);

/* -EEXIST if the name is taken, -ENOSPC if the table is full. */
int qmp_register_command(struct qmp_server *s, const char *name, qmp_cmd_fn fn,
			 void *opaque);

/*
 * Queues an event for every negotiated client; thread-safe. data is
 * stolen (NULL: no "data" member).
 */
void qmp_emit_event(struct qmp_server *s, const char *name, json_t *data);

/* Sets the error reply of the current command. */
void qmp_req_error(struct qmp_req *req, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct qmp_server *qmp_req_server(struct qmp_req *req);

/* Names of the registered commands, as a JSON array (query-commands). */
json_t *qmp_command_names(struct qmp_server *s);

#endif /* LS_VMM_QMP_H */
