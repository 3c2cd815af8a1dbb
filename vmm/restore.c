/* SPDX-License-Identifier: MIT */
/*
 * Restore of a snapshot into a fresh VM shell (vm_create() without a
 * kernel): RAM first (eager: read all of it now; lazy: serve each page on
 * first touch while a prefetch thread fills the rest), then the state of
 * every vCPU, then the VM's (KVM: PIT, clock, irqchips), then the devices
 * (kvm-notes 2.4), through the accelerator, and the VM is started.
 *
 * A snapshot file has its blobs in its tables, so the vm-config blob is
 * checked before any VM exists. A stream (exec:CMD) carries its blobs after
 * its pages, so its config is checked once RAM is read, and only eager
 * restore is possible.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout.h"
#include "snapshot.h"
#include "util.h"
#include "vm.h"
#include "x86/cpu_state.h"

struct vm_restore {
	char *src;
	enum vm_restore_mode mode;
	pid_t child; /* exec: */
	int fd;	     /* exec: our end of its stdout */
	struct ls_reader *reader;
	struct ls_chain *chain; /* a delta: its chain, else NULL */
	int src_region;
	json_t *slots; /* the snapshot's memory layout (vm-config) */
	struct ls_source *source;
	struct ls_ctx *ctx;
	struct ls_restore *lazy;
	uint64_t t_open, t_memory, t_state, t_running; /* monotonic ns */
	struct vm *vm;
	pthread_t watcher; /* lazy: waits for the end, stops the VM on error */
	bool watcher_live;

	pthread_mutex_t lock; /* below */
	pthread_cond_t cond;
	bool memory_done;
	int memory_result;
	char memory_err[VMM_ERR_MAX];
};

static const char *mode_name(enum vm_restore_mode m)
{
	return m == VM_RESTORE_LAZY ? "lazy" : "eager";
}

/* ------------------------------------------------------------------ */
/* The vm-config blob                                                  */
/* ------------------------------------------------------------------ */

static int cfg_int(json_t *cfg, const char *key, uint64_t *v, const char *src,
		   char *err)
{
	json_t *j = json_object_get(cfg, key);

	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return vmm_failx(err, EBADMSG,
				 "%s: vm-config blob lacks '%s'; not a VM "
				 "snapshot of this livesnap",
				 src, key);
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

/*
 * Checks the snapshot's config against the VM about to be built; where
 * cfg has 0 (not given on the command line), takes the snapshot's value.
 */
static int check_config(struct vm_restore *r, const void *data, size_t len,
			struct vm_config *cfg, char *err)
{
	uint64_t format, vcpus, mem;
	json_error_t jerr;
	json_t *j = json_loadb(data, len, 0, &jerr);
	int ret;

	if (!j)
		return vmm_failx(err, EBADMSG,
				 "%s: vm-config blob is not valid JSON (%s)",
				 r->src, jerr.text);
	ret = cfg_int(j, "format", &format, r->src, err);
	if (!ret)
		ret = cfg_int(j, "vcpus", &vcpus, r->src, err);
	if (!ret)
		ret = cfg_int(j, "mem-bytes", &mem, r->src, err);
	json_decref(r->slots);
	r->slots = json_incref(json_object_get(j, "slots"));
	json_decref(j);
	if (ret)
		return ret;
	if (format == 1)
		return vmm_failx(err, EPROTO,
				 "%s: VM snapshot format 1 holds KVM-only vCPU "
				 "state from an older livesnap; this livesnap "
				 "reads format %d (take the snapshot again)",
				 r->src, VM_SNAP_FORMAT);
	if (format != VM_SNAP_FORMAT)
		return vmm_failx(err, EPROTO,
				 "%s: VM snapshot format %" PRIu64
				 " (this livesnap reads %d)",
				 r->src, format, VM_SNAP_FORMAT);
	if (!vcpus || vcpus > MAX_VCPUS || mem < MIN_MEM_BYTES ||
	    mem > MAX_MEM_BYTES || mem % 4096 || !json_is_array(r->slots))
		return vmm_failx(err, EBADMSG,
				 "%s: vm-config blob is out of range (%" PRIu64
				 " vCPUs, %" PRIu64 " bytes of RAM)",
				 r->src, vcpus, mem);
	if (!cfg->mem_bytes)
		cfg->mem_bytes = mem;
	if (!cfg->ncpus)
		cfg->ncpus = (unsigned)vcpus;
	if (cfg->mem_bytes != mem)
		return vmm_failx(err, EINVAL,
				 "%s: snapshot of a VM with %" PRIu64
				 " MiB of RAM, this VM has %" PRIu64
				 " MiB (--mem must match)",
				 r->src, mem >> 20,
				 (uint64_t)(cfg->mem_bytes >> 20));
	if (cfg->ncpus != vcpus)
		return vmm_failx(err, EINVAL,
				 "%s: snapshot of a VM with %" PRIu64
				 " vCPUs, this VM has %u (--cpus must match)",
				 r->src, vcpus, cfg->ncpus);
	return 0;
}

/* Finds the config blob and the RAM region, and checks both. */
static int check_snapshot(struct vm_restore *r, struct vm_config *cfg,
			  char *err)
{
	struct ls_reader_region info;
	const void *data;
	size_t len;
	int ret;

	if (ls_reader_find_blob(r->reader, VM_SNAP_BLOB_CONFIG, &data, &len))
		return vmm_failx(err, EBADMSG,
				 "%s: no vm-config blob: not a VM snapshot",
				 r->src);
	ret = check_config(r, data, len, cfg, err);
	if (ret)
		return ret;
	r->src_region = ls_reader_find_region(r->reader, VM_SNAP_RAM_REGION);
	if (r->src_region < 0 ||
	    ls_reader_region(r->reader, (uint32_t)r->src_region, &info))
		return vmm_failx(err, EBADMSG, "%s: no memory region '%s'",
				 r->src, VM_SNAP_RAM_REGION);
	if (info.len != cfg->mem_bytes)
		return vmm_failx(err, EBADMSG,
				 "%s: memory region of %" PRIu64
				 " bytes, vm-config says %" PRIu64,
				 r->src, info.len, (uint64_t)cfg->mem_bytes);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Open                                                                */
/* ------------------------------------------------------------------ */

/*
 * The reader's messages name a file ("snapshot 'PATH': ..."); a stream
 * from a command is only "fd N" to it, so the command is named first.
 */
static const char *src_prefix(const struct vm_restore *r)
{
	return strncmp(r->src, "exec:", 5) ? "" : r->src;
}

static int reader_fail(struct vm_restore *r, char *err, int ret,
		       const char *msg)
{
	const char *pre = src_prefix(r);

	return vmm_failx(err, -ret, "%s%s%s", pre, pre[0] ? ": " : "", msg);
}

/*
 * A delta restores through its chain (every link checked here); its
 * blobs (vm-config, vCPU and device state) are its own, whole.
 */
static int open_chain(struct vm_restore *r, char *err)
{
	struct ls_reader_info in;
	char lerr[LS_ERRMSG_MAX];
	int ret;

	ls_reader_get_info(r->reader, &in);
	if (in.stream || !in.delta)
		return 0;
	ret = ls_chain_open(r->src, &r->chain, lerr, sizeof(lerr));
	return ret ? vmm_failx(err, -ret, "%s", lerr) : 0;
}

/* The reader's or the chain's last message. */
static const char *src_error(const struct vm_restore *r)
{
	return r->chain ? ls_chain_error(r->chain) : ls_reader_error(r->reader);
}

static int open_reader(struct vm_restore *r, char *err)
{
	char lerr[LS_ERRMSG_MAX];
	int ret;

	if (!strncmp(r->src, "exec:", 5)) {
		ret = vm_snap_spawn_exec(r->src + 5, false, &r->fd, &r->child,
					 err);
		if (ret)
			return ret;
		ret = ls_reader_open_fd(r->fd, &r->reader, lerr, sizeof(lerr));
	} else {
		ret = ls_reader_open(r->src, &r->reader, lerr, sizeof(lerr));
	}
	if (ret)
		return reader_fail(r, err, ret, lerr);
	return open_chain(r, err);
}

int vm_restore_open(struct vm_restore **rp, const char *src,
		    enum vm_restore_mode mode, struct vm_config *cfg, char *err)
{
	struct vm_restore *r = calloc(1, sizeof(*r));
	int ret;

	*rp = NULL;
	if (!r)
		return vmm_fail(err, ENOMEM, "restore");
	r->t_open = vmm_now_ns();
	r->mode = mode;
	r->child = -1;
	r->fd = -1;
	r->src_region = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->src = strdup(src);
	if (!r->src) {
		ret = vmm_fail(err, ENOMEM, "restore");
		goto fail;
	}
	ret = open_reader(r, err);
	if (ret)
		goto fail;
	if (ls_reader_is_stream(r->reader)) {
		if (mode == VM_RESTORE_LAZY) {
			ret = vmm_failx(err, EINVAL,
					"%s: a stream can only be restored "
					"eagerly (--restore-mode eager)",
					src);
			goto fail;
		}
		if (!cfg->mem_bytes || !cfg->ncpus) {
			ret = vmm_failx(err, EINVAL,
					"%s: a stream carries its VM config at "
					"its end: give --mem and --cpus",
					src);
			goto fail;
		}
	} else {
		ret = check_snapshot(r, cfg, err);
		if (ret)
			goto fail;
	}
	*rp = r;
	return 0;
fail:
	vm_restore_destroy(r);
	return ret;
}

void vm_restore_detach(struct vm_restore *r)
{
	if (!r)
		return;
	if (r->lazy) /* held if the VM never ran: the watcher waits for it */
		ls_restore_prefetch(r->lazy);
	if (r->watcher_live)
		pthread_join(r->watcher, NULL);
	r->watcher_live = false;
	if (r->lazy)
		ls_restore_destroy(r->lazy);
	r->lazy = NULL;
	ls_source_destroy(r->source); /* after the restore that used it */
	r->source = NULL;
}

void vm_restore_destroy(struct vm_restore *r)
{
	char err[VMM_ERR_MAX];

	if (!r)
		return;
	vm_restore_detach(r);
	ls_chain_close(r->chain);
	if (r->reader)
		ls_reader_close(r->reader);
	if (r->fd >= 0)
		close(r->fd);
	if (r->child > 0) {
		kill(-r->child, SIGKILL);
		vm_snap_reap_exec(r->child, r->src + 5, err);
	}
	json_decref(r->slots);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r->src);
	free(r);
}

/* ------------------------------------------------------------------ */
/* Load                                                                */
/* ------------------------------------------------------------------ */

/* A stream: read it all, then check what its trailer brought. */
static int load_stream(struct vm_restore *r, struct vm *vm, char *err)
{
	struct vm_config cfg = {.ncpus = vm->ncpus, .mem_bytes = vm->mem.size};
	void *addr = vm->mem.host;
	size_t len = vm->mem.size;
	int ret;

	ret = ls_reader_restore_all(r->reader, &addr, &len, 1);
	if (ret)
		return reader_fail(r, err, ret, ls_reader_error(r->reader));
	ret = check_snapshot(r, &cfg, err);
	if (ret)
		return ret;
	if (r->child > 0) {
		close(r->fd);
		r->fd = -1;
		ret = vm_snap_reap_exec(r->child, r->src + 5, err);
		r->child = -1;
	}
	return ret;
}

/*
 * Lazy restore source: the reader's, plus a guard. A page that cannot be
 * read (a corrupt snapshot) must never reach the guest: on the first
 * failed read the VM is told to stop, before the engine ends the restore
 * (after which untouched memory would read as zeros), so every vCPU has a
 * kick pending and leaves guest code before running on.
 */
struct guard {
	struct ls_source base;
	struct ls_source *inner;
	struct vm_restore *r;
};

/*
 * Once the error is returned, liblivesnap ends the restore and memory not
 * yet filled reads as zeros. The vCPUs were told to stop; give their
 * threads a moment to leave guest code first (with a bound: one of them may be
 * waiting for this very read).
 */
static void wait_vcpus_out(struct vm *vm)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until); /* vm->cond's clock */
	until.tv_nsec += 500 * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&vm->lock);
	while (vm->live_threads > 0 &&
	       pthread_cond_timedwait(&vm->cond, &vm->lock, &until) == 0)
		;
	pthread_mutex_unlock(&vm->lock);
}

static int guard_read(struct ls_source *src, uint32_t region,
		      uint64_t first_page, void *buf, uint64_t npages)
{
	struct guard *g = (struct guard *)src;
	int ret = g->inner->ops->read_pages(g->inner, region, first_page, buf,
					    npages);

	if (ret) {
		vm_request_exit(g->r->vm, VM_EXIT_ERROR, 1, "lazy restore: %s",
				src_error(g->r));
		wait_vcpus_out(g->r->vm);
	}
	return ret;
}

static bool guard_is_zero(struct ls_source *src, uint32_t region, uint64_t page)
{
	struct guard *g = (struct guard *)src;

	return g->inner->ops->is_zero &&
	       g->inner->ops->is_zero(g->inner, region, page);
}

static void guard_destroy(struct ls_source *src)
{
	struct guard *g = (struct guard *)src;

	ls_source_destroy(g->inner);
	free(g);
}

static const struct ls_source_ops guard_ops = {
    .read_pages = guard_read,
    .is_zero = guard_is_zero,
    .destroy = guard_destroy,
};

static int guarded_source(struct vm_restore *r, struct ls_source **srcp)
{
	struct guard *g = calloc(1, sizeof(*g));
	int ret;

	if (!g)
		return -ENOMEM;
	ret = r->chain ? ls_chain_source(r->chain, &g->inner)
		       : ls_reader_source(r->reader, &g->inner);
	if (ret) {
		free(g);
		return ret;
	}
	g->base.ops = &guard_ops;
	g->r = r;
	*srcp = &g->base;
	return 0;
}

/*
 * After a restore from a file, the VM goes on tracking writes from the
 * restored instant, so that its next incremental snapshot continues the
 * chain (a delta of the file restored). After a lazy restore only with the
 * accelerator's dirty log (KVM's, TCG's): else pages installed as the guest
 * runs cannot be told from its writes, and the next incremental snapshot
 * there is a full one.
 */
static int track_from_here(struct vm_restore *r, struct vm_snap *s,
			   bool lazy, char *err)
{
	struct ls_reader_info in;
	char why[VMM_ERR_MAX];
	int ret;

	if (!r->chain || !vm_snap_ctx(s))
		return 0;
	ls_reader_get_info(r->reader, &in);
	/* The vCPUs do not run yet: the restored instant. */
	ret = vm_snap_track_restored(s, in.id, lazy, why);
	if (ret)
		vmm_failx(err, -ret, "tracking writes after the restore: %s",
			  why);
	return ret;
}

static int load_memory(struct vm_restore *r, struct vm *vm, struct vm_snap *s,
		       char *err)
{
	int ret;

	if (ls_reader_is_stream(r->reader))
		return load_stream(r, vm, err);
	if (r->mode == VM_RESTORE_EAGER) {
		ret = r->chain ? ls_chain_restore_region(
					 r->chain, (uint32_t)r->src_region,
					 vm->mem.host, vm->mem.size)
			       : ls_reader_restore_region(
					 r->reader, (uint32_t)r->src_region,
					 vm->mem.host, vm->mem.size);
		if (ret)
			return reader_fail(r, err, ret, src_error(r));
		return track_from_here(r, s, false, err);
	}
	if (!vm_snap_ctx(s))
		return vmm_failx(err, ENOTSUP, "lazy restore: %s",
				 vm_snap_unavailable(s));
	ret = guarded_source(r, &r->source);
	if (ret)
		return reader_fail(r, err, ret, src_error(r));
	r->ctx = vm_snap_ctx(s);
	/*
	 * The prefetch waits until the VM runs (vm_restore_running): until
	 * then the CPU goes to loading state and starting the vCPUs, whose
	 * touches of memory are served at once all the same.
	 */
	ret = ls_restore_start(r->ctx, vm_snap_ram_region(s), r->source,
			       (uint32_t)r->src_region, LS_RESTORE_LAZY_HOLD,
			       &r->lazy);
	if (ret)
		return vmm_failx(err, -ret, "lazy restore of %s: %s", r->src,
				 ls_ctx_error(r->ctx));
	return track_from_here(r, s, true, err);
}

/* The blob `name`, which must be exactly `size` bytes. */
static int get_blob(struct vm_restore *r, const char *name, size_t size,
		    const void **data, char *err)
{
	size_t len;

	if (ls_reader_find_blob(r->reader, name, data, &len))
		return vmm_failx(err, EBADMSG, "%s: blob '%s' is missing",
				 r->src, name);
	if (len != size)
		return vmm_failx(err, EBADMSG,
				 "%s: blob '%s' has %zu bytes, %zu expected "
				 "(another livesnap version?)",
				 r->src, name, len, size);
	return 0;
}

/* vCPUs, then the VM, then devices: later steps may inject interrupts. */
static int load_state(struct vm_restore *r, struct vm *vm, char *err)
{
	const void *data;
	char name[LS_NAME_MAX];
	int ret;

	for (unsigned i = 0; i < vm->ncpus; i++) {
		/* The blob is only byte-aligned in the reader's buffer. */
		struct x86_cpu_state *st = aligned_alloc(64, sizeof(*st));

		if (!st)
			return vmm_fail(err, ENOMEM, "vCPU state");
		snprintf(name, sizeof(name), VM_SNAP_BLOB_VCPU "%u", i);
		ret = get_blob(r, name, sizeof(*st), &data, err);
		if (!ret) {
			memcpy(st, data, sizeof(*st));
			ret = vm->accel->vcpu_set_state(&vm->vcpus[i], st,
							err);
		}
		free(st);
		if (ret)
			return ret;
	}
	ret = get_blob(r, VM_SNAP_BLOB_VM, sizeof(struct x86_vm_state), &data,
		       err);
	if (!ret) {
		struct x86_vm_state *mst = malloc(sizeof(*mst));

		if (!mst)
			return vmm_fail(err, ENOMEM, "VM state");
		memcpy(mst, data, sizeof(*mst));
		ret = vm->accel->vm_set_state(vm, mst, false, err);
		free(mst);
	}
	for (unsigned i = 0; i < vm_n_dev_blobs && !ret; i++) {
		const struct vm_dev_blob *d = &vm_dev_blobs[i];
		uint8_t st[512] __attribute__((aligned(8)));

		if (d->size > sizeof(st))
			return vmm_failx(err, EOVERFLOW,
					 "device state %s too large", d->name);
		ret = get_blob(r, d->name, d->size, &data, err);
		if (!ret) {
			memcpy(st, data, d->size);
			ret = d->restore(vm, st, err);
		}
	}
	return ret;
}

static void memory_done(struct vm_restore *r, int result)
{
	pthread_mutex_lock(&r->lock);
	r->memory_done = true;
	r->memory_result = result;
	if (result)
		snprintf(r->memory_err, sizeof(r->memory_err),
			 "lazy restore of %s failed: %s", r->src,
			 ls_ctx_error(r->ctx));
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/*
 * Lazy: a page that cannot be read (a corrupt snapshot) leaves the guest
 * without its memory; the VM is stopped with the reason.
 */
static void *watch_lazy(void *arg)
{
	struct vm_restore *r = arg;
	int ret = ls_restore_wait(r->lazy);

	memory_done(r, ret);
	if (ret)
		vm_request_exit(r->vm, VM_EXIT_ERROR, 1, "%s", r->memory_err);
	return NULL;
}

/*
 * The guest-physical layout this VM has must be the snapshot's: slots at
 * the same addresses with the same sizes, mapped onto the same offsets of
 * the RAM region.
 */
static int check_layout(struct vm_restore *r, struct vm *vm, char *err)
{
	json_t *mine = vm_snap_config_json(vm);
	bool same =
	    mine && json_equal(json_object_get(mine, "slots"), r->slots);

	json_decref(mine);
	if (!same)
		return vmm_failx(
		    err, EINVAL,
		    "%s: the snapshot's guest memory layout differs "
		    "from this VM's (a snapshot of another "
		    "livesnap version?)",
		    r->src);
	return 0;
}

int vm_restore_load(struct vm_restore *r, struct vm *vm, struct vm_snap *s,
		    char *err)
{
	int ret;

	r->vm = vm;
	/* A stream's vm-config is known only once its RAM has been read. */
	if (ls_reader_is_stream(r->reader)) {
		ret = load_memory(r, vm, s, err);
		if (!ret)
			ret = check_layout(r, vm, err);
	} else {
		ret = check_layout(r, vm, err);
		if (!ret)
			ret = load_memory(r, vm, s, err);
	}
	r->t_memory = vmm_now_ns();
	vm_snap_set_restore(s, r); /* a snapshot waits for lazy memory */
	if (!ret && !r->lazy)
		memory_done(r, 0);
	if (!ret && r->lazy) {
		ret = pthread_create(&r->watcher, NULL, watch_lazy, r);
		if (ret)
			return vmm_fail(err, ret, "lazy restore watcher");
		pthread_setname_np(r->watcher, "restore-watch");
		r->watcher_live = true;
	}
	if (!ret)
		ret = load_state(r, vm, err);
	r->t_state = vmm_now_ns();
	return ret;
}

void vm_restore_running(struct vm_restore *r)
{
	pthread_mutex_lock(&r->lock); /* query-livesnap-restore reads it */
	r->t_running = vmm_now_ns();
	pthread_mutex_unlock(&r->lock);
	if (r->lazy)
		ls_restore_prefetch(r->lazy);
	fprintf(stderr,
		"livesnap: restored %s (%s) in %.1f ms: memory %.1f ms, "
		"state %.1f ms\n",
		r->src, mode_name(r->mode), (r->t_running - r->t_open) / 1e6,
		(r->t_memory - r->t_open) / 1e6,
		(r->t_state - r->t_memory) / 1e6);
}

int vm_restore_wait_memory(struct vm_restore *r, char *err)
{
	int ret;

	pthread_mutex_lock(&r->lock);
	while (!r->memory_done)
		pthread_cond_wait(&r->cond, &r->lock);
	ret = r->memory_result;
	if (ret)
		snprintf(err, VMM_ERR_MAX, "%s", r->memory_err);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

json_t *vm_restore_query(struct vm_restore *r)
{
	struct ls_restore_stats st = {0};
	uint64_t running;
	bool complete;
	json_t *j;

	pthread_mutex_lock(&r->lock);
	complete = r->memory_done && !r->memory_result;
	running = r->t_running;
	pthread_mutex_unlock(&r->lock);
	j = json_pack("{s:b,s:s,s:s,s:I,s:I,s:I}", "restored", 1, "source",
		      r->src, "mode", mode_name(r->mode), "restore-time-ns",
		      (json_int_t)(running ? running - r->t_open : 0),
		      "memory-ns", (json_int_t)(r->t_memory - r->t_open),
		      "state-ns", (json_int_t)(r->t_state - r->t_memory));
	if (r->lazy && !ls_restore_stats(r->lazy, &st)) {
		complete = st.complete;
		json_object_update_new(
		    j, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "pages-total",
				 (json_int_t)st.pages_total, "pages-done",
				 (json_int_t)st.pages_done, "faults",
				 (json_int_t)st.faults, "fault-p50-ns",
				 (json_int_t)st.fault_p50_ns, "fault-p99-ns",
				 (json_int_t)st.fault_p99_ns, "fault-max-ns",
				 (json_int_t)st.fault_max_ns, "lazy-elapsed-ns",
				 (json_int_t)st.elapsed_ns));
	}
	json_object_set_new(j, "complete", json_boolean(complete));
	return j;
}
