/* SPDX-License-Identifier: MIT */
/*
 * Live snapshot of a running VM: the pause (vCPUs parked, device and vCPU
 * state captured as blobs, write protection armed through liblivesnap,
 * vCPUs resumed), then RAM streamed in the background while the guest
 * runs, with QEMU-style migration status for QMP.
 *
 * Threads: vm_snap_start() runs on the QMP thread and only opens the
 * destination; the pause, the wait for the end and the status changes run
 * on a snapshot thread of their own, so QMP answers query-migrate and
 * migrate_cancel throughout.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snapshot.h"
#include "abi.h"
#include "layout.h"
#include "util.h"
#include "vm.h"
#include "x86/cpu_state.h"

#define URI_MAX 4096

/*
 * What the default guest (guest/abi.h) saw of the snapshot: each vCPU's
 * worst single page write between the pause and the end, from its status
 * block (its all-time maximum, and its ring of per-millisecond maxima).
 * Other guests have no status page; then nothing is reported.
 */
struct guest_watch {
	bool valid;
	unsigned ncpus;
	uint64_t head[LSG_MAX_CPUS];	/* timeline_head at the pause */
	uint64_t max_lat[LSG_MAX_CPUS]; /* max_lat_ns at the pause */
	bool done;
	bool covered; /* every interval still in the rings */
	uint64_t max_stall_ns;
};

struct vm_snap {
	struct vm *vm;
	struct ls_ctx *ctx;
	int region;
	struct vm_restore *restore; /* lazy memory to wait for, or NULL */
	vm_snap_event_fn event_fn;
	void *event_opaque;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;  /* status changes */
	enum vm_snap_status status;
	bool thread_live; /* a snapshot thread exists (join it) */
	pthread_t thread;
	struct ls_snapshot *snap;
	struct vm_snap_params params;
	char *test_copy_ram;
	char uri[URI_MAX];
	pid_t child;   /* exec: the command's process group */
	int stream_fd; /* exec: the pipe into the command */
	bool cancel_req;
	bool reaping; /* exec: the command is being waited for */
	bool closed;  /* vm_snap_stop(): no new snapshots */
	uint64_t t_start, t_paused, t_end; /* monotonic ns */
	uint64_t downtime_ns;
	uint64_t stop_ns, capture_ns, begin_ns; /* parts of the pause */
	uint64_t prepare_ns; /* before it: ls_snapshot_prepare() */
	bool have_stats;
	struct ls_stats stats;
	struct guest_watch gw;
	bool delta; /* the last snapshot: a delta of parent */
	/* incremental: the second stop that settled tracking (settle_tracking) */
	uint64_t settle_ns;
	int settle_ret; /* 0, or why tracking stays on write faults */
	/* How writes are tracked after the last snapshot: "dirty-log",
	 * "async" (settled), "faults" or "none". */
	const char *track_how;
	/*
	 * The chain tracks by the accelerator's dirty log (track_dirty_log):
	 * each delta's pause hands the log to ls_track_dirty_bitmap().
	 */
	bool log_tracking;
	bool log_next; /* the snapshot being taken: log_tracking after it */
	uint64_t *log_bits; /* one bit per 4 KiB of guest RAM; zero between
			     * harvests but for the words log_sum marks */
	uint64_t *log_sum;  /* one bit per log_bits word (accel.h) */
	uint64_t *log_early; /* taken before a delta's pause, not yet given */
	bool log_early_any;  /* log_early has a bit set */
	struct x86_cpu_state *cpu_buf; /* a vCPU's state in the pause */
	uint8_t id[LS_ID_BYTES], parent[LS_ID_BYTES];
	char error[VMM_ERR_MAX];
	char unavailable[2 * VMM_ERR_MAX]; /* why there is no ctx, or "" */
};

const char *vm_snap_status_name(enum vm_snap_status st)
{
	static const char *const names[] = {
	    [VM_SNAP_NONE] = "none",	 [VM_SNAP_SETUP] = "setup",
	    [VM_SNAP_ACTIVE] = "active", [VM_SNAP_COMPLETED] = "completed",
	    [VM_SNAP_FAILED] = "failed", [VM_SNAP_CANCELLED] = "cancelled",
	};

	return st < ARRAY_SIZE(names) ? names[st] : "?";
}

static const char *strategy_name(enum ls_strategy s)
{
	switch (s) {
	case LS_STRATEGY_COPY:
		return "copy";
	case LS_STRATEGY_WRITE_FIRST:
		return "write-first";
	default:
		return "auto";
	}
}

int vm_snap_create(struct vm_snap **sp, struct vm *vm, char *err)
{
	char lerr[LS_ERRMSG_MAX];
	struct vm_snap *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return vmm_fail(err, ENOMEM, "snapshot controller");
	s->vm = vm;
	s->child = -1;
	s->stream_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	/* An exec: command that exits early must fail the write, not us. */
	signal(SIGPIPE, SIG_IGN);
	*sp = s;
	/*
	 * A kernel without UFFD-WP (or memory it cannot protect) still runs
	 * VMs: snapshots and lazy restores are then refused with the reason.
	 */
	ret = ls_ctx_create(&s->ctx, lerr, sizeof(lerr));
	if (ret) {
		snprintf(s->unavailable, sizeof(s->unavailable),
			 "live snapshots are unavailable here: %s", lerr);
		return 0;
	}
	ret = ls_region_add(s->ctx, VM_SNAP_RAM_REGION, vm->mem.host,
			    vm->mem.size);
	if (ret < 0) {
		snprintf(s->unavailable, sizeof(s->unavailable),
			 "live snapshots are unavailable for this VM's RAM: %s",
			 ls_ctx_error(s->ctx));
		ls_ctx_destroy(s->ctx);
		s->ctx = NULL;
		return 0;
	}
	s->region = ret;
	return 0;
}

const char *vm_snap_unavailable(struct vm_snap *s)
{
	return s->unavailable[0] ? s->unavailable : NULL;
}

void vm_snap_stop(struct vm_snap *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->closed = true;
	pthread_mutex_unlock(&s->lock);
	vm_snap_cancel(s);
	vm_snap_wait(s);
	/* The thread takes the lock no more once the status is final. */
	pthread_mutex_lock(&s->lock);
	if (s->thread_live)
		pthread_join(s->thread, NULL);
	s->thread_live = false;
	pthread_mutex_unlock(&s->lock);
}

void vm_snap_destroy(struct vm_snap *s)
{
	if (!s)
		return;
	vm_snap_stop(s);
	vm_restore_detach(s->restore);
	if (s->ctx)
		ls_ctx_destroy(s->ctx);
	free(s->test_copy_ram);
	free(s->log_bits);
	free(s->log_sum);
	free(s->log_early);
	free(s->cpu_buf);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

struct ls_ctx *vm_snap_ctx(struct vm_snap *s)
{
	return s->ctx;
}

int vm_snap_ram_region(struct vm_snap *s)
{
	return s->region;
}

void vm_snap_set_event_fn(struct vm_snap *s, vm_snap_event_fn fn, void *opaque)
{
	s->event_fn = fn;
	s->event_opaque = opaque;
}

void vm_snap_set_restore(struct vm_snap *s, struct vm_restore *r)
{
	s->restore = r;
}

/* Under s->lock. The event goes out after the unlock (see set_status). */
static void set_status_locked(struct vm_snap *s, enum vm_snap_status st)
{
	s->status = st;
	pthread_cond_broadcast(&s->cond);
}

static void set_status(struct vm_snap *s, enum vm_snap_status st)
{
	pthread_mutex_lock(&s->lock);
	set_status_locked(s, st);
	pthread_mutex_unlock(&s->lock);
	if (s->event_fn)
		s->event_fn(s->event_opaque, st);
}

/* ------------------------------------------------------------------ */
/* Destinations                                                        */
/* ------------------------------------------------------------------ */

/*
 * Runs /bin/sh -c cmd with its stdin on a new pipe, in a process group of
 * its own (a cancel kills the whole pipeline). posix_spawn, not fork: a
 * fork would copy the page tables of all guest RAM and mark it COW.
 */
static int spawn_exec(const char *cmd, bool to_cmd, int *fdp, pid_t *pidp,
		      char *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char *argv[] = {"sh", "-c", (char *)cmd, NULL};
	extern char **environ;
	int pfd[2], ret;
	int child_end, our_end;
	sigset_t mask;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return vmm_fail(err, errno, "pipe for exec:%s", cmd);
	child_end = to_cmd ? pfd[0] : pfd[1];
	our_end = to_cmd ? pfd[1] : pfd[0];
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, child_end, to_cmd ? 0 : 1);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_setpgroup(&attr, 0);
	/* The VMM blocks and ignores signals the command must not inherit. */
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
					    POSIX_SPAWN_SETSIGDEF |
					    POSIX_SPAWN_SETSIGMASK);
	sigemptyset(&mask);
	posix_spawnattr_setsigmask(&attr, &mask);
	sigaddset(&mask, SIGPIPE);
	posix_spawnattr_setsigdefault(&attr, &mask);
	ret = posix_spawn(pidp, "/bin/sh", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(child_end);
	if (ret) {
		close(our_end);
		return vmm_fail(err, ret, "spawning /bin/sh -c '%s'", cmd);
	}
	*fdp = our_end;
	return 0;
}

int vm_snap_spawn_exec(const char *cmd, bool to_cmd, int *fdp, pid_t *pidp,
		       char *err)
{
	return spawn_exec(cmd, to_cmd, fdp, pidp, err);
}

/* Reaps an exec: command; 0 if it exited with status 0. */
int vm_snap_reap_exec(pid_t pid, const char *cmd, char *err)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return vmm_fail(err, errno, "waitpid for exec:%s", cmd);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return vmm_failx(err, EPIPE, "exec:%s exited with status %d",
				 cmd, WEXITSTATUS(status));
	return vmm_failx(err, EPIPE, "exec:%s was killed by signal %d", cmd,
			 WTERMSIG(status));
}

/* Opens the sink for uri; for exec:, the command is running after. */
static int open_sink(struct vm_snap *s, const char *uri, struct ls_sink **sk,
		     char *err)
{
	char lerr[LS_ERRMSG_MAX];
	int ret;

	if (!strncmp(uri, "file:", 5)) {
		if (!uri[5])
			return vmm_failx(err, EINVAL, "file: needs a path");
		ret = ls_sink_file_create(sk, uri + 5, 0, lerr, sizeof(lerr));
		if (ret)
			return vmm_failx(err, -ret, "%s", lerr);
		return 0;
	}
	if (!strncmp(uri, "exec:", 5)) {
		ret = spawn_exec(uri + 5, true, &s->stream_fd, &s->child, err);
		if (ret)
			return ret;
		ret =
		    ls_sink_stream_create(sk, s->stream_fd, lerr, sizeof(lerr));
		if (ret) {
			vmm_failx(err, -ret, "%s", lerr);
			kill(-s->child, SIGKILL);
			close(s->stream_fd);
			s->stream_fd = -1;
			vm_snap_reap_exec(s->child, uri + 5, lerr);
			s->child = -1;
		}
		return ret;
	}
	return vmm_failx(err, EINVAL,
			 "unsupported migration URI '%s' (use file:PATH or "
			 "exec:CMD)",
			 uri);
}

/* ------------------------------------------------------------------ */
/* Blobs                                                               */
/* ------------------------------------------------------------------ */

json_t *vm_snap_config_json(struct vm *vm)
{
	const struct vm_mem *m = &vm->mem;
	json_t *slots = json_array();

	json_array_append_new(
	    slots,
	    json_pack("{s:i,s:I,s:I,s:s,s:I}", "slot", SLOT_RAM_LOW, "gpa",
		      (json_int_t)0, "size", (json_int_t)m->low_size, "region",
		      VM_SNAP_RAM_REGION, "offset", (json_int_t)0));
	if (m->high_size)
		json_array_append_new(
		    slots, json_pack("{s:i,s:I,s:I,s:s,s:I}", "slot",
				     SLOT_RAM_HIGH, "gpa", (json_int_t)GPA_4G,
				     "size", (json_int_t)m->high_size, "region",
				     VM_SNAP_RAM_REGION, "offset",
				     (json_int_t)m->low_size));
	return json_pack(
	    "{s:i,s:s,s:i,s:I,s:s,s:I,s:i,s:s,s:o}", "format", VM_SNAP_FORMAT,
	    "vmm", "livesnap", "vcpus", (int)vm->ncpus, "mem-bytes",
	    (json_int_t)m->size, "mem-backend", mem_backend_name(m->backend),
	    "page-size", (json_int_t)m->page_size, "tsc-khz", (int)vm->tsc_khz,
	    "accel", vm->accel->name, "slots", slots);
}

/*
 * A device's blob: its state struct, saved and restored by the device's
 * own pair (devices/devices.h, dev_save/dev_restore) on vm->member.
 */
#define DEV_BLOB_FNS(dev, member)                                              \
	static void save_##dev(struct vm *vm, void *st)                        \
	{                                                                      \
		dev##_save(&vm->member, st);                                   \
	}                                                                      \
	static int restore_##dev(struct vm *vm, const void *st, char *err)     \
	{                                                                      \
		return dev##_restore(&vm->member, st, err);                    \
	}

#define DEV_BLOB(name, dev)                                                    \
	{                                                                      \
		name, sizeof(struct dev##_state), save_##dev, restore_##dev    \
	}

DEV_BLOB_FNS(serial, serial)
DEV_BLOB_FNS(i8042, i8042)
DEV_BLOB_FNS(rtc, rtc)
DEV_BLOB_FNS(pio_sink, sink)

const struct vm_dev_blob vm_dev_blobs[] = {
    DEV_BLOB("dev.serial", serial),
    DEV_BLOB("dev.i8042", i8042),
    DEV_BLOB("dev.rtc", rtc),
    DEV_BLOB("dev.pio-sink", pio_sink),
};
const unsigned vm_n_dev_blobs = ARRAY_SIZE(vm_dev_blobs);

static int add_blob(struct ls_snapshot *snap, const char *name,
		    const void *data, size_t len, char *err)
{
	int ret = ls_snapshot_add_blob(snap, name, data, len);

	if (ret)
		return vmm_failx(err, -ret, "adding blob %s: %s", name,
				 ls_snapshot_error(snap));
	return 0;
}

int vm_snap_save_devices(struct vm *vm, struct ls_snapshot *snap, char *err)
{
	union {
		struct serial_state serial;
		struct i8042_state i8042;
		struct rtc_state rtc;
		struct pio_sink_state sink;
	} st;
	int ret = 0;

	for (unsigned i = 0; i < vm_n_dev_blobs && !ret; i++) {
		memset(&st, 0, sizeof(st));
		vm_dev_blobs[i].save(vm, &st);
		ret = add_blob(snap, vm_dev_blobs[i].name, &st,
			       vm_dev_blobs[i].size, err);
	}
	return ret;
}

/* Every vCPU, then the VM (kvm-notes 2.3), in one pause; vst: a buffer. */
int vm_snap_save_cpus(struct vm *vm, struct ls_snapshot *snap,
		      struct x86_cpu_state *vst, char *err)
{
	struct x86_vm_state mst;
	char name[LS_NAME_MAX];
	int ret = 0;

	for (unsigned i = 0; i < vm->ncpus && !ret; i++) {
		memset(vst, 0, sizeof(*vst));
		ret = vm->accel->vcpu_get_state(&vm->vcpus[i], vst, err);
		snprintf(name, sizeof(name), VM_SNAP_BLOB_VCPU "%u", i);
		if (!ret)
			ret = add_blob(snap, name, vst, sizeof(*vst), err);
	}
	if (ret)
		return ret;
	memset(&mst, 0, sizeof(mst));
	ret = vm->accel->vm_get_state(vm, &mst, err);
	if (!ret)
		ret = add_blob(snap, VM_SNAP_BLOB_VM, &mst, sizeof(mst), err);
	return ret;
}

/* ------------------------------------------------------------------ */
/* The pause                                                           */
/* ------------------------------------------------------------------ */

static volatile struct lsg_vcpu_status *guest_vcpu(struct vm *vm, unsigned i)
{
	volatile struct lsg_status *st =
	    vm_gpa_to_hva(vm, LSG_STATUS_GPA, sizeof(*st));
	volatile struct lsg_vcpu_status *v;

	if (!st || st->magic != LSG_STATUS_MAGIC || !st->ready ||
	    i >= st->ncpus || i >= LSG_MAX_CPUS)
		return NULL;
	v = vm_gpa_to_hva(vm, LSG_STATUS_GPA + LSG_VCPU_STATUS_OFF(i),
			  sizeof(*v));
	return v && v->magic == LSG_STATUS_MAGIC ? v : NULL;
}

/* While paused: where each vCPU's counters stand. */
static void guest_watch_begin(struct vm *vm, struct guest_watch *gw)
{
	*gw = (struct guest_watch){.valid = true};
	for (unsigned i = 0; i < vm->ncpus && gw->valid; i++) {
		volatile struct lsg_vcpu_status *v = guest_vcpu(vm, i);

		gw->valid = v != NULL;
		if (v) {
			gw->head[i] = v->timeline_head;
			gw->max_lat[i] = v->max_lat_ns;
		}
	}
	gw->ncpus = vm->ncpus;
}

/*
 * At the end: the worst write since the pause. If a vCPU's all-time
 * maximum grew, the new maximum happened during the snapshot; otherwise
 * the intervals since the pause still in its ring hold the answer.
 */
static void guest_watch_end(struct vm *vm, struct guest_watch *gw)
{
	gw->covered = true;
	for (unsigned i = 0; i < gw->ncpus && gw->valid; i++) {
		volatile struct lsg_vcpu_status *v = guest_vcpu(vm, i);
		uint64_t head, from;

		if (!v) {
			gw->valid = false;
			break;
		}
		head = v->timeline_head;
		if (v->max_lat_ns > gw->max_lat[i]) {
			if (v->max_lat_ns > gw->max_stall_ns)
				gw->max_stall_ns = v->max_lat_ns;
			continue;
		}
		from = gw->head[i];
		if (head - from > LSG_TIMELINE_LEN) {
			gw->covered = false;
			from = head - LSG_TIMELINE_LEN;
		}
		for (uint64_t k = from; k < head; k++) {
			uint64_t ns = v->timeline[k % LSG_TIMELINE_LEN].max_ns;

			if (ns > gw->max_stall_ns)
				gw->max_stall_ns = ns;
		}
	}
	gw->done = gw->valid;
}

/* Test only: all guest RAM, as it is while paused, into a file. */
static int copy_ram(struct vm *vm, const char *path, char *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	uint64_t off = 0;

	if (fd < 0)
		return vmm_fail(err, errno, "x-test-copy-ram: open %s", path);
	while (off < vm->mem.size) {
		ssize_t n = write(fd, vm->mem.host + off, vm->mem.size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : ENOSPC;

			close(fd);
			return vmm_fail(err, e, "x-test-copy-ram: write %s",
					path);
		}
		off += (uint64_t)n;
	}
	if (close(fd) < 0)
		return vmm_fail(err, errno, "x-test-copy-ram: close %s", path);
	return 0;
}

/* The VM's configuration: fixed while it runs, so added before the pause. */
static int add_config_blob(struct vm_snap *s, struct ls_snapshot *snap,
			   char *err)
{
	json_t *cfg = vm_snap_config_json(s->vm);
	char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
	int ret;

	json_decref(cfg);
	if (!text)
		return vmm_fail(err, ENOMEM, "vm-config blob");
	ret =
	    ls_snapshot_add_blob(snap, VM_SNAP_BLOB_CONFIG, text, strlen(text));
	free(text);
	if (ret)
		return vmm_failx(err, -ret, "adding blob %s: %s",
				 VM_SNAP_BLOB_CONFIG, ls_ctx_error(s->ctx));
	return 0;
}

/*
 * Before the pause, the memory the capture writes is faulted in: the vCPU
 * state buffer (kept from one snapshot to the next), and this thread's
 * heap, which the blob copies come from. A VM's first capture took
 * 0.25-0.32 ms against 0.05-0.08 ms on later ones, mostly in first
 * touches of that memory (~10 us each on this project's PVM hosts): the
 * snapshot thread is new each time, and glibc gives the first one a fresh
 * arena. Kept under glibc's 128 KiB trim threshold, which would hand the
 * pages back at free(); a VM of more vCPUs warms part of what it uses.
 */
#define CAPTURE_WARM_MAX (96u << 10)

static int warm_capture(struct vm_snap *s, char *err)
{
	size_t warm = (s->vm->ncpus + 1) * (sizeof(*s->cpu_buf) + 512);
	unsigned char *heap;

	if (warm > CAPTURE_WARM_MAX)
		warm = CAPTURE_WARM_MAX;
	if (!s->cpu_buf) {
		s->cpu_buf = aligned_alloc(64, sizeof(*s->cpu_buf));
		if (!s->cpu_buf)
			return vmm_fail(err, ENOMEM, "vCPU state buffer");
		memset(s->cpu_buf, 0, sizeof(*s->cpu_buf));
	}
	heap = malloc(warm);
	for (size_t i = 0; heap && i < warm; i += 4096)
		((volatile unsigned char *)heap)[i] = 0; /* not a dead store */
	free(heap);
	return 0;
}

/* Devices and vCPUs, as blobs; the vCPUs are parked. */
static int capture_state(struct vm_snap *s, struct ls_snapshot *snap, char *err)
{
	/* Devices first: saving one may raise an interrupt (kvm-notes 2.3). */
	int ret = vm_snap_save_devices(s->vm, snap, err);

	if (!ret)
		ret = vm_snap_save_cpus(s->vm, snap, s->cpu_buf, err);
	return ret;
}

static uint64_t log_words(const struct vm_snap *s)
{
	return accel_log_words(s->vm->mem.size);
}

static int log_bits_alloc(struct vm_snap *s, char *err)
{
	if (!s->log_bits)
		s->log_bits = calloc(log_words(s), 8);
	if (!s->log_sum)
		s->log_sum = calloc(accel_log_sum_words(s->vm->mem.size), 8);
	return s->log_bits && s->log_sum
		   ? 0
		   : vmm_fail(err, ENOMEM, "dirty log bitmap");
}

/* A harvest of the log into log_bits: 1, 0 (just started) or -errno. */
static int log_take(struct vm_snap *s, accel_dirty_log_fn *log, char *err)
{
	return log_bits_alloc(s, err) ?: log(s->vm, s->log_bits, s->log_sum,
					     err);
}

/* The bitmap words of 16 MiB of guest RAM: one log_sum word's. */
#define SUM_PAGES (64 * 64)

/*
 * log_bits to liblivesnap, a call per run of 16 MiB parts with a word
 * written: a delta's pause hands over what the guest wrote in the last
 * milliseconds, not 128 KiB of bitmap per 4 GiB.
 */
static int log_hand_over(struct vm_snap *s)
{
	uint64_t npages = s->vm->mem.size / 4096;
	uint64_t nsum = accel_log_sum_words(s->vm->mem.size);
	int ret = 0;

	for (uint64_t a = 0, b; !ret && a < nsum; a = b) {
		if (!s->log_sum[a]) {
			b = a + 1;
			continue;
		}
		for (b = a + 1; b < nsum && s->log_sum[b]; b++)
			;
		ret = ls_track_dirty_bitmap(
		    s->ctx, s->vm->mem.host + a * SUM_PAGES * 4096,
		    (b * SUM_PAGES < npages ? b * SUM_PAGES : npages) -
			a * SUM_PAGES,
		    s->log_bits + a * 64);
	}
	return ret;
}

/* Calls fn(s, w) for each bitmap word log_sum marks. */
static void log_each_word(struct vm_snap *s,
			  void (*fn)(struct vm_snap *s, uint64_t w))
{
	for (uint64_t i = 0; i < accel_log_sum_words(s->vm->mem.size); i++)
		for (uint64_t m = s->log_sum[i]; m; m &= m - 1)
			fn(s, i * 64 + (uint64_t)__builtin_ctzll(m));
}

static void word_clear(struct vm_snap *s, uint64_t w)
{
	s->log_bits[w] = 0;
}

static void word_to_early(struct vm_snap *s, uint64_t w)
{
	s->log_early[w] |= s->log_bits[w];
}

/* log_bits back to zero after a harvest. */
static void log_clear(struct vm_snap *s)
{
	log_each_word(s, word_clear);
}

/*
 * Before a delta's pause and its prepare, with the vCPUs running: the log
 * so far, so that the pause takes only what was written since.
 * KVM_GET_DIRTY_LOG costs per dirty page (it write-protects each again):
 * 0.7-0.9 ms of the pause of a 4 GiB guest with a 256 MiB working set on
 * a nested host. Handed to liblivesnap now: the prepare makes those pages
 * pending, outside the pause. Should it refuse them, they wait here for
 * the pause (dirty_log_at_pause), also across a snapshot cancelled before
 * its pause. A failure here is the pause's to report.
 */
static void dirty_log_early(struct vm_snap *s)
{
	accel_dirty_log_fn *log = s->vm->accel->dirty_log;
	char err[VMM_ERR_MAX];

	if (!log || !s->delta || !s->log_tracking)
		return;
	if (!s->log_early)
		s->log_early = calloc(log_words(s), 8);
	if (!s->log_early || log_take(s, log, err) != 1)
		return;
	if (log_hand_over(s)) {
		log_each_word(s, word_to_early);
		s->log_early_any = true;
	}
	log_clear(s);
}

/*
 * Before the pause, with the vCPUs running: RAM is write-protected now
 * (ls_snapshot_prepare), so that the pause re-protects only the pages the
 * guest writes meanwhile. Arming 4 GiB of memfd RAM, 4 KiB page table
 * entries, took 15-21 ms of the pause; 8 GiB of anonymous RAM 1.6-1.7 ms
 * (prepared where the kernel reports discards). A delta marks its pages
 * so far (tracked by faults it protects them again; by the dirty log,
 * all of RAM is protected, as for a full one). A failure only costs that
 * time: begin then arms what the delta needs.
 */
static void prepare_early(struct vm_snap *s, struct ls_snapshot *snap)
{
	uint64_t t0 = vmm_now_ns();

	if (ls_snapshot_prepare(snap))
		fprintf(stderr, "livesnap: preparing the snapshot (arming in the pause instead): %s\n",
			ls_ctx_error(s->ctx));
	pthread_mutex_lock(&s->lock);
	s->prepare_ns = vmm_now_ns() - t0;
	pthread_mutex_unlock(&s->lock);
	if (s->params.test_prepare_wait_ms)
		usleep(s->params.test_prepare_wait_ms * 1000u);
}

/*
 * A log (re)started where a chain starts (its first snapshot, a restore):
 * what it held before, handed over or taken early, is moot.
 */
static int log_restart(struct vm_snap *s, accel_dirty_log_fn *log, char *err)
{
	int ret = log_take(s, log, err);

	if (ret == 1)
		log_clear(s);
	if (ret >= 0 && s->log_early_any)
		memset(s->log_early, 0, log_words(s) * 8);
	if (ret >= 0)
		s->log_early_any = false;
	return ret < 0 ? ret : 0;
}

/* A delta's pause: the bits taken early (a refused hand-over, rare) go
 * with its own, every word. */
static void log_early_merge(struct vm_snap *s)
{
	if (!s->log_early_any)
		return;
	for (uint64_t w = 0; w < log_words(s); w++)
		s->log_bits[w] |= s->log_early[w];
	accel_log_sum_all(s->log_sum, s->vm->mem.size);
	memset(s->log_early, 0, log_words(s) * 8);
	s->log_early_any = false;
}

/*
 * The accelerator's dirty log, in the pause before the begin. A delta of
 * a chain tracked by it gets what the guest wrote since the last pause; a
 * snapshot that starts a chain decides how the chain is tracked (and
 * starts the log afresh); without tracking the log stops.
 */
static int dirty_log_at_pause(struct vm_snap *s, bool delta, char *err)
{
	accel_dirty_log_fn *log = s->vm->accel->dirty_log;
	int ret;

	if (!log)
		return 0;
	if (!delta)
		s->log_tracking = s->log_next;
	if (!s->log_tracking)
		return 0; /* a running log stops after the pause (log_stop) */
	if (!delta)
		return log_restart(s, log, err);
	ret = log_take(s, log, err);
	if (ret <= 0)
		return ret;
	log_early_merge(s);
	ret = log_hand_over(s);
	log_clear(s);
	if (ret)
		return vmm_failx(err, -ret, "handing over the dirty log: %s",
				 ls_ctx_error(s->ctx));
	return 0;
}

/*
 * After the pause: a log the chain no longer uses stops. Not inside it:
 * KVM then rebuilds its huge mappings of guest RAM (10 ms for 4 GiB on
 * a nested host), and the vCPUs need not wait for that.
 */
static void log_stop(struct vm_snap *s)
{
	char err[VMM_ERR_MAX];

	if (s->vm->accel->dirty_log && !s->log_tracking &&
	    s->vm->accel->dirty_log(s->vm, NULL, NULL, err))
		fprintf(stderr, "livesnap: stopping the dirty log: %s\n", err);
}

/*
 * Pauses, captures, arms, resumes. The VM runs again on every path out.
 */
static int pause_and_arm(struct vm_snap *s, struct ls_snapshot *snap, char *err)
{
	struct vm_pause_stats before, after;
	uint64_t t0 = vmm_now_ns(), t_cap, t_begin = 0;
	int ret, rret;

	vm_pause_stats(s->vm, &before);
	ret = vm_pause(s->vm);
	if (ret)
		return vmm_fail(err, -ret, "pausing the VM");
	pthread_mutex_lock(&s->lock);
	s->t_paused = vmm_now_ns();
	guest_watch_begin(s->vm, &s->gw); /* query-migrate reads it */
	pthread_mutex_unlock(&s->lock);
	t_cap = vmm_now_ns();
	ret = capture_state(s, snap, err);
	t_cap = vmm_now_ns() - t_cap;
	if (!ret && s->test_copy_ram)
		ret = copy_ram(s->vm, s->test_copy_ram, err);
	if (!ret) {
		t_begin = vmm_now_ns();
		ret = dirty_log_at_pause(s, s->delta, err);
	}
	if (!ret) {
		ret = ls_snapshot_begin(snap);
		if (ret)
			vmm_failx(err, -ret, "arming write protection: %s",
				  ls_snapshot_error(snap));
	}
	t_begin = t_begin ? vmm_now_ns() - t_begin : 0;
	rret = vm_resume(s->vm);
	log_stop(s);
	vm_pause_stats(s->vm, &after);
	pthread_mutex_lock(&s->lock);
	/*
	 * vm.c times the pause from the stop request to the resume. A VM
	 * stopped over QMP stays paused: then our own part is the downtime.
	 */
	s->downtime_ns = after.pauses > before.pauses ? after.last_total_ns
						      : vmm_now_ns() - t0;
	s->stop_ns = after.pauses > before.pauses ? after.last_stop_ns : 0;
	s->capture_ns = t_cap;
	s->begin_ns = t_begin;
	pthread_mutex_unlock(&s->lock);
	if (!ret && rret)
		ret = vmm_fail(err, -rret, "resuming the VM");
	return ret;
}

/* ------------------------------------------------------------------ */
/* The snapshot thread                                                 */
/* ------------------------------------------------------------------ */

/*
 * Ends an exec: command: EOF on its stdin, then its exit status. A command
 * that does not end by itself (it may wait for something else) is killed
 * when the snapshot is cancelled meanwhile.
 */
static int finish_exec(struct vm_snap *s, bool kill_it, char *err)
{
	siginfo_t si;
	pid_t child;
	int fd, ret;

	pthread_mutex_lock(&s->lock);
	child = s->child;
	fd = s->stream_fd;
	s->stream_fd = -1;
	s->reaping = true;
	pthread_mutex_unlock(&s->lock);
	if (fd >= 0)
		close(fd);
	if (child < 0)
		return 0;
	for (;;) {
		pthread_mutex_lock(&s->lock);
		kill_it = kill_it || s->cancel_req;
		pthread_mutex_unlock(&s->lock);
		if (kill_it)
			kill(-child, SIGKILL);
		si.si_pid = 0; /* peek: vm_snap_reap_exec() reaps */
		ret = waitid(P_PID, (id_t)child, &si,
			     WEXITED | WNOHANG | WNOWAIT);
		if ((!ret && si.si_pid == child) || (ret && errno != EINTR))
			break;
		usleep(10000);
	}
	ret = vm_snap_reap_exec(child, s->uri + 5, err);
	pthread_mutex_lock(&s->lock);
	s->child = -1;
	s->reaping = false;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/*
 * Incremental: between snapshots, writes are tracked by the kernel's
 * asynchronous write protection instead of write faults (a first write
 * costs a minor fault, not a round trip through the fault thread). Moving
 * the memory there needs the vCPUs stopped once more, briefly: the arm's
 * cost again (ls_track_settle). Not an error when the kernel cannot:
 * tracking then stays on write faults (settle_ret says why).
 */
static void settle_tracking(struct vm_snap *s)
{
	uint64_t t0 = vmm_now_ns();
	int ret;

	s->settle_ns = 0;
	s->settle_ret = -ENOENT;
	s->track_how = !s->params.incremental		? "none"
		       : !ls_track_active(s->ctx, NULL) ? "none"
							: "faults";
	/* The dirty log runs, and the snapshot handed tracking to it
	 * (track_by_caller): nothing to stop the vCPUs for. */
	if (s->log_tracking && ls_track_active(s->ctx, NULL)) {
		s->track_how = "dirty-log";
		return;
	}
	/*
	 * Not with a track granule: the kernel resolves page by page (and
	 * splits huge pages), where a block's one write fault serves 2 MiB.
	 * On a nested KVM host, 4 GiB guest, 256 MiB working set: guest writes
	 * between snapshots -98 % settled, -99.6 % by page faults, -9.8 % by
	 * 2 MiB blocks (bench/engine/report-track.md).
	 */
	if (!s->params.incremental || !s->params.track_async ||
	    s->params.track_granule || !ls_track_active(s->ctx, NULL))
		return;
	ret = vm_pause(s->vm);
	if (!ret) {
		ret = ls_track_settle(s->ctx);
		vm_resume(s->vm);
	}
	s->settle_ns = vmm_now_ns() - t0;
	s->settle_ret = ret;
	if (!ret)
		s->track_how = "async";
	if (ret && ret != -EOPNOTSUPP)
		fprintf(stderr, "livesnap: tracking stays on write faults: %s\n",
			ls_ctx_error(s->ctx));
}

int vm_snap_track_restored(struct vm_snap *s, const uint8_t *parent,
			   bool lazy, char *err)
{
	accel_dirty_log_fn *log = accel_dirty_log(s->vm->accel, s->vm);
	int ret;

	if (log) {
		ret = log_restart(s, log, err);
		if (ret)
			return ret;
		ret = ls_track_start_by_caller(s->ctx, parent);
		if (ret)
			return vmm_failx(err, -ret, "%s", ls_ctx_error(s->ctx));
		s->log_tracking = true;
		return 0;
	}
	if (lazy) /* pages installed as the guest runs: not trackable */
		return 0;
	ret = ls_track_start(s->ctx, parent);
	if (!ret)
		ret = ls_track_settle(s->ctx);
	if (ret && ret != -EOPNOTSUPP)
		return vmm_failx(err, -ret, "%s", ls_ctx_error(s->ctx));
	return 0;
}

static void *snap_thread(void *arg)
{
	struct vm_snap *s = arg;
	struct ls_snapshot *snap = s->snap;
	char err[VMM_ERR_MAX] = "";
	char xerr[VMM_ERR_MAX];
	enum vm_snap_status end;
	int ret = 0, xret;

	/*
	 * The 'setup' event comes from here, before this thread can reach
	 * 'active': sent by the starting thread, it raced the two.
	 */
	if (s->event_fn)
		s->event_fn(s->event_opaque, VM_SNAP_SETUP);
	if (s->restore)
		ret = vm_restore_wait_memory(s->restore, err);
	pthread_mutex_lock(&s->lock);
	if (!ret && s->cancel_req)
		ret = -ECANCELED;
	pthread_mutex_unlock(&s->lock);
	if (!ret) {
		dirty_log_early(s);
		ret = add_config_blob(s, snap, err) ?: warm_capture(s, err);
		if (!ret) {
			prepare_early(s, snap);
			ret = pause_and_arm(s, snap, err);
		}
		if (!ret)
			set_status(s, VM_SNAP_ACTIVE);
	}
	if (ret)
		ls_snapshot_cancel(snap);
	xret = ls_snapshot_wait(snap);
	if (!ret && xret) {
		ret = xret;
		snprintf(err, sizeof(err), "%s", ls_snapshot_error(snap));
	}
	xret = finish_exec(s, ret != 0, xerr);
	if (!ret && xret) {
		ret = xret;
		snprintf(err, sizeof(err), "%s", xerr);
	}
	if (!ret)
		settle_tracking(s);

	pthread_mutex_lock(&s->lock);
	s->have_stats = !ls_snapshot_stats(snap, &s->stats);
	if (s->gw.valid)
		guest_watch_end(s->vm, &s->gw);
	s->snap = NULL;
	s->t_end = vmm_now_ns();
	if (ret == -ECANCELED || (ret && s->cancel_req)) {
		end = VM_SNAP_CANCELLED;
		snprintf(s->error, sizeof(s->error), "cancelled");
	} else if (ret) {
		end = VM_SNAP_FAILED;
		snprintf(s->error, sizeof(s->error), "%s",
			 err[0] ? err : strerror(-ret));
	} else {
		end = VM_SNAP_COMPLETED;
	}
	pthread_mutex_unlock(&s->lock);
	ls_snapshot_destroy(snap);
	if (end == VM_SNAP_FAILED)
		fprintf(stderr, "livesnap: snapshot to %s failed: %s\n", s->uri,
			s->error);
	set_status(s, end);
	return NULL;
}

int vm_snap_start(struct vm_snap *s, const char *uri,
		  const struct vm_snap_params *p, char *err)
{
	struct ls_snapshot_opts opts = {
	    .strategy = p->strategy,
	    .keep_thp = p->keep_thp,
	    .fault_spin_us = p->fault_spin_us,
	    .writer_idle = p->writer_idle,
	    .copy_buffer_bytes = p->copy_buffer_bytes,
	    .track = p->incremental,
	    .track_granule = p->track_granule,
	};
	struct ls_snapshot *snap;
	struct ls_sink *sink;
	int ret;

	pthread_mutex_lock(&s->lock);
	if (s->closed) {
		pthread_mutex_unlock(&s->lock);
		return vmm_failx(err, ESHUTDOWN, "the VM is shutting down");
	}
	if (!s->ctx) {
		pthread_mutex_unlock(&s->lock);
		return vmm_failx(err, ENOTSUP, "%s", s->unavailable);
	}
	if (s->status == VM_SNAP_SETUP || s->status == VM_SNAP_ACTIVE) {
		pthread_mutex_unlock(&s->lock);
		return vmm_failx(err, EBUSY,
				 "a snapshot is already running (%s); "
				 "migrate_cancel it or wait",
				 vm_snap_status_name(s->status));
	}
	if (s->thread_live) {
		pthread_join(s->thread, NULL);
		s->thread_live = false;
	}
	if (strlen(uri) >= sizeof(s->uri)) {
		pthread_mutex_unlock(&s->lock);
		return vmm_failx(err, EINVAL, "migration URI too long");
	}
	if (p->incremental && strncmp(uri, "file:", 5)) {
		pthread_mutex_unlock(&s->lock);
		return vmm_failx(err, EINVAL,
				 "an incremental snapshot is a chain of files: "
				 "file:PATH, not %.16s...",
				 uri);
	}
	/* A delta of the last snapshot when writes were tracked since. */
	opts.delta = p->incremental && ls_track_active(s->ctx, NULL);
	/* The accelerator's dirty log tracks the chain this starts or goes on */
	s->log_next = accel_dirty_log(s->vm->accel, s->vm) && p->incremental &&
		      (opts.delta ? s->log_tracking
				  : p->track_dirty_log && !p->track_granule);
	opts.track_by_caller = s->log_next;
	snprintf(s->uri, sizeof(s->uri), "%s", uri);
	free(s->test_copy_ram);
	s->test_copy_ram = p->test_copy_ram ? strdup(p->test_copy_ram) : NULL;
	s->params = *p;
	s->params.test_copy_ram = NULL;
	s->cancel_req = false;
	s->have_stats = false;
	s->gw = (struct guest_watch){0};
	s->error[0] = 0;
	s->downtime_ns = s->stop_ns = s->capture_ns = s->begin_ns = 0;
	s->prepare_ns = 0;
	s->track_how = NULL;
	s->t_start = vmm_now_ns();
	s->t_paused = s->t_end = 0;
	ret = open_sink(s, uri, &sink, err);
	if (ret) {
		pthread_mutex_unlock(&s->lock);
		return ret;
	}
	/* The snapshot owns the sink from here, even when this fails. */
	ret = ls_snapshot_create(s->ctx, sink, &opts, &snap);
	if (ret) {
		vmm_failx(err, -ret, "%s", ls_ctx_error(s->ctx));
		goto fail;
	}
	s->delta = ls_snapshot_id(snap, s->id, s->parent) == 1;
	s->snap = snap;
	set_status_locked(s, VM_SNAP_SETUP);
	ret = pthread_create(&s->thread, NULL, snap_thread, s);
	if (ret) {
		s->snap = NULL;
		s->status = VM_SNAP_NONE;
		ls_snapshot_destroy(snap);
		ret = vmm_fail(err, ret, "starting the snapshot thread");
		goto fail;
	}
	pthread_setname_np(s->thread, "snapshot");
	s->thread_live = true;
	pthread_mutex_unlock(&s->lock);
	return 0;
fail:
	pthread_mutex_unlock(&s->lock);
	{
		char xerr[VMM_ERR_MAX];

		finish_exec(s, true, xerr);
	}
	return ret;
}

int vm_snap_cancel(struct vm_snap *s)
{
	pthread_mutex_lock(&s->lock);
	if (s->status != VM_SNAP_SETUP && s->status != VM_SNAP_ACTIVE) {
		pthread_mutex_unlock(&s->lock);
		return -EINVAL;
	}
	s->cancel_req = true;
	if (s->snap)
		ls_snapshot_cancel(s->snap);
	/*
	 * A writer blocked on a pipe nobody reads must see EPIPE. Until it is
	 * reaped the group's id cannot be reused; once finish_exec() reaps,
	 * it does the killing itself.
	 */
	if (s->child > 0 && !s->reaping)
		kill(-s->child, SIGKILL);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void vm_snap_wait(struct vm_snap *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->status == VM_SNAP_SETUP || s->status == VM_SNAP_ACTIVE)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

enum vm_snap_status vm_snap_status(struct vm_snap *s)
{
	enum vm_snap_status st;

	pthread_mutex_lock(&s->lock);
	st = s->status;
	pthread_mutex_unlock(&s->lock);
	return st;
}

/* ------------------------------------------------------------------ */
/* query-migrate                                                       */
/* ------------------------------------------------------------------ */

static json_t *ram_json(const struct ls_progress *pr, const struct ls_stats *st,
			uint64_t elapsed_ns)
{
	uint64_t page = 4096, total = pr->pages_total;
	uint64_t done = pr->pages_done, bytes = pr->bytes_written;
	json_t *ram;

	if (st) {
		total = st->pages_total;
		bytes = st->bytes_written;
		done = st->pages_written + st->pages_zero;
	}
	ram = json_pack(
	    "{s:I,s:I,s:I,s:I,s:f}", "total", (json_int_t)(total * page),
	    "transferred", (json_int_t)bytes, "remaining",
	    (json_int_t)((total > done ? total - done : 0) * page), "page-size",
	    (json_int_t)page, "mbps",
	    elapsed_ns ? bytes * 8.0 / (elapsed_ns / 1e9) / 1e6 : 0.0);
	if (st) {
		json_object_set_new(ram, "duplicate",
				    json_integer((json_int_t)st->pages_zero));
		json_object_set_new(
		    ram, "normal", json_integer((json_int_t)st->pages_written));
		json_object_set_new(
		    ram, "normal-bytes",
		    json_integer((json_int_t)(st->pages_written * page)));
	}
	return ram;
}

static json_t *x_livesnap_json(struct vm_snap *s, const struct ls_stats *st,
			       uint64_t elapsed_ns)
{
	json_t *x = json_pack(
	    "{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "strategy",
	    strategy_name(s->params.strategy), "uri", s->uri, "downtime-ns",
	    (json_int_t)s->downtime_ns, "stop-ns", (json_int_t)s->stop_ns,
	    "capture-ns", (json_int_t)s->capture_ns, "begin-ns",
	    (json_int_t)s->begin_ns, "setup-ns",
	    (json_int_t)(s->t_paused ? s->t_paused - s->t_start : 0),
	    "total-ns", (json_int_t)elapsed_ns);

	json_object_set_new(x, "prepare-ns",
			    json_integer((json_int_t)s->prepare_ns));
	json_object_set_new(x, "keep-thp", json_boolean(s->params.keep_thp));
	json_object_set_new(x, "writer-idle",
			    json_boolean(s->params.writer_idle));
	json_object_set_new(x, "incremental",
			    json_boolean(s->params.incremental));
	if (s->params.incremental) {
		char hex[2 * LS_ID_BYTES + 1];

		json_object_set_new(x, "track-async",
				    json_boolean(s->settle_ret == 0));
		json_object_set_new(x, "track",
				    json_string(s->track_how ? s->track_how
							     : "none"));
		json_object_set_new(x, "settle-ns",
				    json_integer((json_int_t)s->settle_ns));

		for (int i = 0; i < LS_ID_BYTES; i++)
			snprintf(hex + 2 * i, 3, "%02x", s->id[i]);
		json_object_set_new(x, "id", json_string(hex));
		json_object_set_new(x, "delta", json_boolean(s->delta));
		for (int i = 0; s->delta && i < LS_ID_BYTES; i++)
			snprintf(hex + 2 * i, 3, "%02x", s->parent[i]);
		if (s->delta)
			json_object_set_new(x, "parent", json_string(hex));
	}
	if (s->gw.done)
		json_object_set_new(x, "guest",
				    json_pack("{s:I,s:b}", "max-write-ns",
					      (json_int_t)s->gw.max_stall_ns,
					      "all-intervals-seen",
					      s->gw.covered));

	if (!st)
		return x;
	json_object_update_new(
	    x, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "faults",
			 (json_int_t)st->faults, "faults-write-first",
			 (json_int_t)st->faults_write_first, "copied-pages",
			 (json_int_t)st->pages_copied, "copy-buffer-hwm",
			 (json_int_t)st->copy_buffer_hwm, "arm-ns",
			 (json_int_t)st->arm_ns, "stall-p50-ns",
			 (json_int_t)st->stall_p50_ns, "stall-p99-ns",
			 (json_int_t)st->stall_p99_ns, "stall-p999-ns",
			 (json_int_t)st->stall_p999_ns, "stall-max-ns",
			 (json_int_t)st->stall_max_ns, "zero-pages",
			 (json_int_t)st->pages_zero));
	return x;
}

json_t *vm_snap_query(struct vm_snap *s)
{
	struct ls_progress pr = {0};
	struct ls_stats live, *st = NULL;
	uint64_t now = vmm_now_ns(), elapsed;
	json_t *r, *x;

	pthread_mutex_lock(&s->lock);
	if (s->status == VM_SNAP_NONE) {
		pthread_mutex_unlock(&s->lock);
		return json_object(); /* QEMU: {} before any migration */
	}
	elapsed = (s->t_end ? s->t_end : now) - s->t_start;
	/* Not during setup: the snapshot thread may be inside begin. */
	if (s->snap && s->status == VM_SNAP_ACTIVE) {
		ls_snapshot_progress(s->snap, &pr);
		if (!ls_snapshot_stats(s->snap, &live))
			st = &live;
	} else if (s->have_stats) {
		st = &s->stats;
	}
	r = json_pack(
	    "{s:s,s:I,s:I}", "status", vm_snap_status_name(s->status),
	    "total-time", (json_int_t)(elapsed / 1000000), "setup-time",
	    (json_int_t)(s->t_paused ? (s->t_paused - s->t_start) / 1000000
				     : elapsed / 1000000));
	if (s->status != VM_SNAP_SETUP) {
		json_object_set_new(
		    r, "downtime",
		    json_integer((json_int_t)(s->downtime_ns / 1000000)));
		json_object_set_new(r, "ram", ram_json(&pr, st, elapsed));
	}
	x = x_livesnap_json(s, st, elapsed);
	json_object_set_new(r, "x-livesnap", x);
	if (s->error[0] && s->status != VM_SNAP_COMPLETED)
		json_object_set_new(r, "error-desc", json_string(s->error));
	pthread_mutex_unlock(&s->lock);
	return r;
}
