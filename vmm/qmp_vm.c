/* SPDX-License-Identifier: MIT */
/* The VM's QMP commands (see qmp_vm.h). They run on the QMP thread. */
#include <stdlib.h>

#include "abi.h"
#include "layout.h"
#include "qmp_vm.h"
#include "vm.h"

static json_t *cmd_query_status(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_vm *q = opaque;
	bool paused = vm_is_paused(q->vm);

	return json_pack("{s:s,s:b,s:b}", "status",
			 paused ? "paused" : "running", "running", !paused,
			 "singlestep", 0);
}

static json_t *cmd_stop(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_vm *q = opaque;
	int ret;

	if (q->user_stopped)
		return json_object(); /* QEMU: stopping twice is fine */
	ret = vm_pause(q->vm);
	if (ret) {
		qmp_req_error(req, QMP_ERR_GENERIC, "pause failed: %s",
			      strerror(-ret));
		return NULL;
	}
	q->user_stopped = true;
	vm_notify_clock_paused(q->vm);
	qmp_emit_event(q->srv, "STOP", json_object());
	return json_object();
}

static json_t *cmd_cont(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_vm *q = opaque;
	int ret;

	if (!q->user_stopped)
		return json_object();
	ret = vm_resume(q->vm);
	if (ret) {
		qmp_req_error(req, QMP_ERR_GENERIC, "resume failed: %s",
			      strerror(-ret));
		return NULL;
	}
	q->user_stopped = false;
	qmp_emit_event(q->srv, "RESUME", json_object());
	return json_object();
}

static json_t *cmd_quit(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_vm *q = opaque;

	vm_request_exit(q->vm, VM_EXIT_QMP_QUIT, 0, "quit requested over QMP");
	return json_object();
}

static json_t *cmd_query_cpus_fast(struct qmp_req *req, json_t *args,
				   void *opaque)
{
	struct qmp_vm *q = opaque;
	json_t *a = json_array();

	for (unsigned i = 0; i < q->vm->ncpus; i++) {
		char path[64];

		snprintf(path, sizeof(path), "/machine/unattached/device[%u]",
			 i);
		json_array_append_new(
		    a, json_pack("{s:i,s:I,s:s,s:s,s:{s:i,s:i,s:i}}",
				 "cpu-index", (int)i, "thread-id",
				 (json_int_t)__atomic_load_n(
				     &q->vm->vcpus[i].tid, __ATOMIC_RELAXED),
				 "qom-path", path, "target", "x86_64", "props",
				 "socket-id", 0, "core-id", (int)i, "thread-id",
				 0));
	}
	return a;
}

static json_t *cmd_query_livesnap_guest(struct qmp_req *req, json_t *args,
					void *opaque)
{
	struct qmp_vm *q = opaque;

	return qmp_vm_guest_status(q->vm);
}

static json_t *cmd_query_livesnap_vm(struct qmp_req *req, json_t *args,
				     void *opaque)
{
	struct qmp_vm *q = opaque;
	struct vm_pause_stats ps;

	vm_pause_stats(q->vm, &ps);
	return json_pack(
	    "{s:s,s:i,s:I,s:s,s:I,s:b,s:I,s:I,s:I,s:I}", "accel",
	    q->vm->accel->name, "cpus", (int)q->vm->ncpus,
	    "mem-bytes", (json_int_t)q->vm->mem.size, "mem-backend",
	    mem_backend_name(q->vm->mem.backend), "tsc-khz",
	    (json_int_t)q->vm->tsc_khz, "paused", vm_is_paused(q->vm), "pauses",
	    (json_int_t)ps.pauses, "last-stop-ns", (json_int_t)ps.last_stop_ns,
	    "last-downtime-ns", (json_int_t)ps.last_total_ns, "max-downtime-ns",
	    (json_int_t)ps.max_total_ns);
}

/* QEMU's query-kvm: whether this VM runs on KVM, and whether it could. */
static json_t *cmd_query_kvm(struct qmp_req *req, json_t *args, void *opaque)
{
	struct qmp_vm *q = opaque;

	return json_pack("{s:b,s:b}", "enabled",
			 q->vm->accel == &accel_kvm_ops, "present",
			 accel_kvm_usable(NULL) == 0);
}

static json_t *cmd_query_commands(struct qmp_req *req, json_t *args,
				  void *opaque)
{
	return qmp_command_names(qmp_req_server(req));
}

static json_t *cmd_query_version(struct qmp_req *req, json_t *args,
				 void *opaque)
{
	return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major", 0, "minor",
			 1, "micro", 0, "package", "livesnap");
}

int qmp_vm_register(struct qmp_vm *ctx, struct qmp_server *s, struct vm *vm)
{
	static const struct {
		const char *name;
		qmp_cmd_fn fn;
	} cmds[] = {
	    {"query-status", cmd_query_status},
	    {"stop", cmd_stop},
	    {"cont", cmd_cont},
	    {"quit", cmd_quit},
	    {"query-cpus-fast", cmd_query_cpus_fast},
	    {"query-kvm", cmd_query_kvm},
	    {"query-livesnap-guest", cmd_query_livesnap_guest},
	    {"query-livesnap-vm", cmd_query_livesnap_vm},
	    {"query-commands", cmd_query_commands},
	    {"query-version", cmd_query_version},
	};
	int ret;

	*ctx = (struct qmp_vm){.vm = vm, .srv = s};
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		ret = qmp_register_command(s, cmds[i].name, cmds[i].fn, ctx);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- the guest status page ---- */

static uint64_t load64(const volatile uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static uint32_t load32(const volatile uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* A JSON string from guest bytes: printable ASCII only, bounded. */
static json_t *guest_string(const volatile char *p, size_t max)
{
	char buf[LSG_CMDLINE_MAX + 1];
	size_t n = 0;

	if (max > LSG_CMDLINE_MAX)
		max = LSG_CMDLINE_MAX;
	while (n < max && p[n]) {
		char ch = p[n];

		buf[n++] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
	}
	buf[n] = 0;
	return json_string(buf);
}

static json_t *guest_vcpu(struct vm *vm, unsigned i)
{
	volatile struct lsg_vcpu_status *v = vm_gpa_to_hva(
	    vm, LSG_STATUS_GPA + LSG_VCPU_STATUS_OFF(i), sizeof(*v));

	if (!v || load64(&v->magic) != LSG_STATUS_MAGIC)
		return json_pack("{s:i,s:b}", "cpu", (int)i, "valid", 0);
	return json_pack("{s:i,s:b,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "cpu",
			 (int)i, "valid", 1, "running",
			 load32(&v->running) != 0, "writes",
			 (json_int_t)load64(&v->writes), "generation",
			 (json_int_t)load64(&v->generation), "max_lat_ns",
			 (json_int_t)load64(&v->max_lat_ns), "errors",
			 (json_int_t)load64(&v->errors), "validated",
			 (json_int_t)load64(&v->validated), "inflight",
			 (json_int_t)load64(&v->inflight), "heartbeat_tsc",
			 (json_int_t)load64(&v->heartbeat_tsc));
}

static json_t *guest_e820(volatile struct lsg_status *st)
{
	uint32_t n = load32(&st->e820_entries);
	json_t *a = json_array();

	if (n > LSG_E820_MAX)
		n = LSG_E820_MAX;
	for (uint32_t i = 0; i < n; i++)
		json_array_append_new(
		    a, json_pack("{s:I,s:I,s:i}", "addr",
				 (json_int_t)load64(&st->e820[i].addr), "size",
				 (json_int_t)load64(&st->e820[i].size), "type",
				 (int)load32(&st->e820[i].type)));
	return a;
}

json_t *qmp_vm_guest_status(struct vm *vm)
{
	volatile struct lsg_status *st =
	    vm_gpa_to_hva(vm, LSG_STATUS_GPA, sizeof(*st));
	json_t *cpus, *r;
	uint32_t n;

	/* ready is written last by the guest: read it first. */
	if (!st || !__atomic_load_n(&st->ready, __ATOMIC_ACQUIRE) ||
	    load64(&st->magic) != LSG_STATUS_MAGIC)
		return json_pack("{s:b}", "ready", 0);
	n = load32(&st->ncpus);
	if (n > LSG_MAX_CPUS)
		n = LSG_MAX_CPUS;
	if (n > vm->ncpus)
		n = vm->ncpus;
	cpus = json_array();
	for (uint32_t i = 0; i < n; i++)
		json_array_append_new(cpus, guest_vcpu(vm, i));
	r = json_pack("{s:b,s:i,s:i,s:I,s:I,s:s,s:I,s:I,s:I,s:I}", "ready", 1,
		      "version", (int)load32(&st->version), "ncpus", (int)n,
		      "ws_gpa", (json_int_t)load64(&st->ws_gpa), "ws_pages",
		      (json_int_t)load64(&st->ws_pages), "mode",
		      load32(&st->mode) ? "rand" : "seq", "tsc_khz",
		      (json_int_t)load64(&st->tsc_khz), "ram_bytes",
		      (json_int_t)load64(&st->ram_bytes), "initrd_addr",
		      (json_int_t)load64(&st->initrd_addr), "initrd_size",
		      (json_int_t)load64(&st->initrd_size));
	json_object_set_new(r, "cmdline",
			    guest_string(st->cmdline, LSG_CMDLINE_MAX));
	json_object_set_new(r, "e820", guest_e820(st));
	json_object_set_new(r, "cpus", cpus);
	return r;
}
