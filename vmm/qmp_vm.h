/* SPDX-License-Identifier: MIT */
/*
 * The VM's QMP commands: query-status, stop, cont, quit, query-cpus-fast,
 * query-livesnap-guest (the guest's status page, read from RAM without
 * exits), query-livesnap-vm (pause statistics), query-commands,
 * query-version. Other command files (qmp_migrate.c) register theirs on
 * the same server and share this context.
 */
#ifndef LS_VMM_QMP_VM_H
#define LS_VMM_QMP_VM_H

#include <stdbool.h>

#include "qmp.h"

struct vm;

struct qmp_vm {
	struct vm *vm;
	struct qmp_server *srv;
	bool user_stopped; /* "stop" without "cont"; QMP thread only */
};

/* Registers the commands above; ctx must outlive the server. */
int qmp_vm_register(struct qmp_vm *ctx, struct qmp_server *s, struct vm *vm);

/* The guest status page as JSON (also used by tests and tools). */
json_t *qmp_vm_guest_status(struct vm *vm);

#endif /* LS_VMM_QMP_VM_H */
