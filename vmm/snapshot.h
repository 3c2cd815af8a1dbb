/* SPDX-License-Identifier: MIT */
/*
 * Live snapshots of a running VM (snapshot.c) and restore of one into a
 * fresh VM shell (restore.c), on top of liblivesnap.
 *
 * A snapshot is one liblivesnap snapshot of guest RAM plus named blobs that
 * carry everything else, captured in one pause:
 *
 *   "vm-config"    JSON: format version, vCPU count, RAM size and backend,
 *                  the GPA -> region layout, TSC kHz, the accelerator
 *                  that took it. A restore refuses a snapshot whose config
 *                  does not match its VM.
 *   "dev.<name>"   one device model's state struct (devices/devices.h):
 *                  dev.serial, dev.i8042, dev.rtc, dev.pio-sink
 *   "vcpu.<i>"     vCPU i's architectural state, struct x86_cpu_state
 *                  (x86/cpu_state.h), whichever accelerator saved it
 *   "vm-state"     the VM-wide state, struct x86_vm_state: guest time and
 *                  the saving accelerator's chips (KVM: PIT, clock,
 *                  irqchips)
 *
 * Restore loads RAM first, then every vCPU, then the VM, then devices
 * (kvm-notes 2.4), then resumes. Format 1 (KVM structs) is refused.
 *
 * The QMP face of this (migrate, query-migrate, ...) is qmp_migrate.c.
 */
#ifndef LS_VMM_SNAPSHOT_H
#define LS_VMM_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "livesnap.h"

struct x86_cpu_state;
struct vm;
struct vm_config;
struct vm_snap;
struct vm_restore;

#define VM_SNAP_FORMAT	    2	  /* vm-config "format"; bump on change */
#define VM_SNAP_RAM_REGION  "ram" /* the one region: all guest RAM */
#define VM_SNAP_BLOB_CONFIG "vm-config"
#define VM_SNAP_BLOB_VM	    "vm-state"
#define VM_SNAP_BLOB_VCPU   "vcpu." /* + decimal vCPU index */

/* Migration status, named as QEMU's MigrationStatus. */
enum vm_snap_status {
	VM_SNAP_NONE,
	VM_SNAP_SETUP,
	VM_SNAP_ACTIVE,
	VM_SNAP_COMPLETED,
	VM_SNAP_FAILED,
	VM_SNAP_CANCELLED,
};

const char *vm_snap_status_name(enum vm_snap_status st);

/* Called on every status change, from whichever thread made it. */
typedef void (*vm_snap_event_fn)(void *opaque, enum vm_snap_status st);

/*
 * Creates the VM's snapshot controller: a liblivesnap context with all
 * guest RAM registered as region VM_SNAP_RAM_REGION. Call once, after
 * vm_create() and before the vCPUs first run or memory is restored.
 * Where the kernel cannot write-protect the RAM, the controller exists
 * but refuses snapshots (vm_snap_unavailable()).
 */
int vm_snap_create(struct vm_snap **sp, struct vm *vm, char *err);
/*
 * Cancels a snapshot still running, waits for its end (its last status
 * event included) and refuses new ones: call it while the QMP server still
 * runs, before destroying it.
 */
void vm_snap_stop(struct vm_snap *s);
/* vm_snap_stop(), then frees everything (before the VM's RAM goes). */
void vm_snap_destroy(struct vm_snap *s);

/* NULL, or why this VM cannot be snapshotted (then vm_snap_ctx() is NULL). */
const char *vm_snap_unavailable(struct vm_snap *s);
struct ls_ctx *vm_snap_ctx(struct vm_snap *s);
int vm_snap_ram_region(struct vm_snap *s);
void vm_snap_set_event_fn(struct vm_snap *s, vm_snap_event_fn fn, void *opaque);

/* A restore in progress: a snapshot waits for its lazy memory first. */
void vm_snap_set_restore(struct vm_snap *s, struct vm_restore *r);

struct vm_snap_params {
	enum ls_strategy strategy;
	/* liblivesnap tuning (struct ls_snapshot_opts); 0/false: defaults */
	bool keep_thp;
	int fault_spin_us;
	size_t copy_buffer_bytes;
	/*
	 * Incremental: track writes after this snapshot, and make it a delta
	 * of the previous one when writes were tracked since (a file: uri
	 * only; the first is a full snapshot).
	 */
	bool incremental;
	size_t track_granule; /* ls_snapshot_opts.track_granule */
	/*
	 * ls_snapshot_opts.writer_idle: the writer yields its CPU at once to
	 * a vCPU (default true: the guest first; false when the snapshot's
	 * length matters more than the guest's on CPUs the vCPUs keep busy).
	 */
	bool writer_idle;
	/*
	 * incremental: after each snapshot, stop the vCPUs once more to hand
	 * tracking to the kernel's asynchronous write protection (default
	 * true; ls_track_settle).
	 */
	bool track_async;
	/*
	 * incremental, on an accelerator that logs the guest's writes itself
	 * (KVM's dirty log): track by that log between snapshots, where the
	 * guest's first write to a page costs what KVM's logging costs and
	 * nothing stays write-protected (default true; ls_track_by_caller).
	 * Decided when a chain starts (its full snapshot, or a restore) and
	 * kept to its end. Not with a track granule.
	 */
	bool track_dirty_log;
	/*
	 * Test only: during the pause, copy all guest RAM into this file
	 * (NULL: no copy), so a test can compare it with the snapshot.
	 */
	const char *test_copy_ram;
	/*
	 * Test only: the guest runs this long between the prepare and the
	 * pause, so that a test sees it write there.
	 */
	unsigned test_prepare_wait_ms;
};

/*
 * Starts a live snapshot to uri: "file:PATH" (a seekable snapshot file) or
 * "exec:CMD" (a stream into CMD's stdin, run by /bin/sh -c). Opens the
 * sink at once (an unusable destination fails here), then pauses, saves,
 * arms and resumes on a thread of its own and returns. -EBUSY while
 * another snapshot runs.
 */
/*
 * After a restore of snapshot `parent` (its id), with the vCPUs not yet
 * running: writes are tracked from here, so that the next incremental
 * snapshot is a delta of it. By the accelerator's dirty log where it has
 * one (also while a lazy restore installs pages: those hold the parent's
 * content); else, after an eager restore only, by write faults settled on
 * the kernel's asynchronous write protection where the kernel can.
 */
int vm_snap_track_restored(struct vm_snap *s, const uint8_t *parent,
			   bool lazy, char *err);

int vm_snap_start(struct vm_snap *s, const char *uri,
		  const struct vm_snap_params *p, char *err);

/* Requests cancellation (-EINVAL when nothing runs). */
int vm_snap_cancel(struct vm_snap *s);

/* Waits until the current snapshot (if any) has ended. */
void vm_snap_wait(struct vm_snap *s);

enum vm_snap_status vm_snap_status(struct vm_snap *s);

/* The query-migrate answer (see docs/snapshot.md). */
json_t *vm_snap_query(struct vm_snap *s);

/* ---- restore.c ---- */

enum vm_restore_mode {
	VM_RESTORE_EAGER,
	VM_RESTORE_LAZY,
};

/*
 * Opens a snapshot for restore: a file path, or "exec:CMD" for a stream
 * out of CMD's stdout (eager only). For a file, the vm-config blob is read
 * and checked here; cfg's vCPU count and RAM size are filled from it where
 * they are 0 and refused when they differ.
 */
int vm_restore_open(struct vm_restore **rp, const char *src,
		    enum vm_restore_mode mode, struct vm_config *cfg,
		    char *err);
void vm_restore_destroy(struct vm_restore *r);

/*
 * Ends a lazy restore's use of the liblivesnap context (waits for it):
 * vm_snap_destroy() calls it before the context goes.
 */
void vm_restore_detach(struct vm_restore *r);

/*
 * Fills guest RAM (eager: all of it now; lazy: starts serving faults and
 * a prefetch behind), then loads the KVM state of every vCPU and the VM
 * and the devices' state, in that order. The vCPUs must exist and never
 * have run.
 */
int vm_restore_load(struct vm_restore *r, struct vm *vm, struct vm_snap *s,
		    char *err);

/* Marks the guest running: the end of "restore time". */
void vm_restore_running(struct vm_restore *r);

/* Waits for a lazy restore's memory to be complete (0 or -errno). */
int vm_restore_wait_memory(struct vm_restore *r, char *err);

/* query-livesnap-restore: mode, times, pages, faults. */
json_t *vm_restore_query(struct vm_restore *r);

/* ---- qmp_migrate.c ---- */

struct qmp_server;

/* The migration commands' context; must outlive the QMP server. */
struct qmp_migrate {
	struct qmp_server *srv;
	struct vm_snap *snap;
	struct vm_restore *restore;	/* NULL unless this VM was restored */
	bool background;		/* capability background-snapshot */
	struct vm_snap_params defaults; /* migrate-set-parameters */
};

/*
 * Registers migrate, migrate-set-capabilities, query-migrate and the rest
 * (see qmp_migrate.c) and routes status changes to MIGRATION events.
 */
int qmp_migrate_register(struct qmp_migrate *q, struct qmp_server *srv,
			 struct vm_snap *snap, struct vm_restore *restore);

/* ---- shared by snapshot.c and restore.c only ---- */

/* One device model's state as a blob "dev.<name>". */
struct vm_dev_blob {
	const char *name; /* blob name */
	size_t size;	  /* of its state struct */
	void (*save)(struct vm *vm, void *state);
	int (*restore)(struct vm *vm, const void *state, char *err);
};

extern const struct vm_dev_blob vm_dev_blobs[];
extern const unsigned vm_n_dev_blobs;

/* The vm-config blob of a VM, as JSON. */
json_t *vm_snap_config_json(struct vm *vm);

int vm_snap_save_devices(struct vm *vm, struct ls_snapshot *snap, char *err);
int vm_snap_save_cpus(struct vm *vm, struct ls_snapshot *snap,
		      struct x86_cpu_state *vst, char *err);

/*
 * Runs /bin/sh -c cmd in a process group of its own with a pipe on its
 * stdin (to_cmd) or stdout; *fdp gets our end. Reap with
 * vm_snap_reap_exec(): 0 only for exit status 0.
 */
int vm_snap_spawn_exec(const char *cmd, bool to_cmd, int *fdp, pid_t *pidp,
		       char *err);
int vm_snap_reap_exec(pid_t pid, const char *cmd, char *err);

#endif /* LS_VMM_SNAPSHOT_H */
