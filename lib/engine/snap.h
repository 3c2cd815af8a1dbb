/* SPDX-License-Identifier: MIT */
/*
 * Snapshot internals shared by snapshot.c (the API and lifecycle),
 * writer.c (the writer thread and the fault path) and ring.c (the copy
 * buffer).
 *
 * Every page of every region has one state byte:
 *   PENDING  -> not captured yet; still write-protected
 *   CLAIMED  -> someone (the writer or the fault thread) is capturing it
 *   SAVED    -> its content at begin is captured (in the sink, the copy
 *               buffer or the writer's bounce buffer); may still be protected
 *   RELEASED -> captured and un-protected
 * Only a successful PENDING->CLAIMED compare-and-swap captures a page, so
 * every page is captured exactly once, and always while still protected,
 * so with its content at begin. Nobody un-protects a page that is CLAIMED.
 *
 * A delta starts every page outside its set as CLEAN: never captured.
 * A tracked snapshot (opts.track) never un-protects a page from the
 * writer: a page stays protected until it is written, and the fault path
 * records that write for the next delta before releasing it. Not under
 * the caller's tracking (track_faults false): the caller's log has the
 * writes, so pages are released as in an untracked snapshot, and a write
 * to a CLEAN page (one the arm protected with its chunk) releases it.
 */
#ifndef LS_ENGINE_SNAP_H
#define LS_ENGINE_SNAP_H

#include "internal.h"

enum {
	PG_PENDING,
	PG_CLAIMED,
	PG_SAVED,
	PG_RELEASED,
	PG_CLEAN, /* a delta: not written since the parent, not captured */
};

struct snap_region {
	uint32_t idx; /* = context region index = sink region index */
	uint64_t base, len, npages;
	size_t ps;
	enum ls_mem_type type;
	uint64_t batch; /* bytes per writer batch, a multiple of ps */
	bool scan;      /* PAGEMAP_SCAN tells never-populated pages */
	int seek_fd;    /* shmem: SEEK_DATA tells holes (-1: read all) */
	uint64_t file_off;
	/* Shared file-backed: the file, its blocks at begin (-1: unknown). */
	int file_fd;
	int64_t blocks0;
	/*
	 * Hugetlb: one bit per page mapped at begin; shmem: per page that was
	 * data (not a hole) in the file. A discard keeps the write-protect
	 * marker and a read after it maps a fresh zero page, so the writer
	 * and the fault path check before they read (check_held() in
	 * writer.c). NULL: anonymous, or a shmem file too fragmented to map
	 * in the pause (its block count still tells).
	 */
	uint64_t *held;
	int64_t held_blocks; /* shmem: the file's blocks when held was mapped */
	bool zero_unheld; /* private anonymous hugetlb: unmapped = zero */
	_Atomic uint8_t *state;
	/* track: the dirty set that begin installs in the context */
	_Atomic uint64_t *fresh;
	/* the context's dirty set taken at begin (a delta: its pages) */
	_Atomic uint64_t *prev;
	/*
	 * A delta: the bitmap its begin looks for discarded anonymous pages
	 * in (prefaulted at create, so the pause allocates nothing: the
	 * first mmap and faults of a 128 KiB bitmap took 2 ms there), and
	 * the set of writes after a prepare (freed after the pause).
	 */
	uint64_t *rescan;
	_Atomic uint64_t *later;
	_Atomic uint64_t *late; /* the caller's reports after a prepare */
};

/*
 * The copy buffer: a ring of 4 KiB slots. The fault thread reserves the
 * slots of one page, copies into them and publishes; the writer consumes in
 * order and frees. Entries that would wrap are preceded by padding.
 */
struct ring_ent {
	uint32_t region; /* UINT32_MAX: padding */
	uint32_t nslots;
	uint64_t page;
	atomic_bool ready;
};

struct copy_ring {
	pthread_mutex_t lock;
	unsigned char *data;
	struct ring_ent *ent;
	uint64_t nslots;
	uint64_t head, tail; /* slot counters, never wrapped */
	uint64_t hwm_slots;
};

struct blob {
	struct blob *next;
	char name[LS_NAME_MAX];
	size_t len;
	unsigned char data[];
};

struct ls_snapshot {
	struct ls_ctx *ctx;
	struct ls_sink *sink;
	bool sink_started;
	enum ls_strategy strategy;
	bool keep_thp;
	bool writer_idle;
	/*
	 * writer_idle's guard (ls_snap_writer_guard, on the fault thread):
	 * the writer bumps beats as it goes; one that has not for
	 * LS_WRITER_STARVED_NS while it is SCHED_IDLE is starved and goes
	 * back to SCHED_OTHER. guard_* belong to the fault thread.
	 */
	pthread_t writer;
	struct ls_ctx *guard_ctx; /* counted in its guard_users, or NULL */
	atomic_bool writer_is_idle;
	_Atomic uint64_t writer_beats;
	uint64_t guard_beats, guard_ns;
	bool track, delta;
	/*
	 * track, and the context records writes itself (not the caller's
	 * tracking): saved pages stay protected, so that their next write is
	 * recorded. Set at begin.
	 */
	bool track_faults;
	bool by_caller; /* opts.track_by_caller (with track) */
	size_t granule; /* opts.track_granule */
	bool tracker_ref; /* begin took the fault service for tracking */
	/*
	 * Threads are started by create, not inside begin's pause: the
	 * writer waits for begin (or a cancel before it), and the fault
	 * service is held from create until begin took its own reference.
	 */
	bool svc_warm;	  /* create's reference on the fault service */
	bool setup_cancel; /* under lock: cancelled before begin */
	uint8_t id[LS_ID_BYTES], parent[LS_ID_BYTES];
	int64_t spin_ns;
	uint32_t nregions;
	struct snap_region *regions;
	struct ls_layout_region *layout;
	uint64_t pages_total;
	size_t max_ps;
	int pid; /* ours, for process_vm_readv of live memory */
	bool no_vm_readv; /* refused (seccomp): the writer memcpys */

	atomic_int state; /* enum ls_snapshot_state */
	atomic_bool stop; /* failed or cancelled: stop capturing */
	atomic_bool failed;
	atomic_bool begin_failed; /* err holds why begin refused */
	atomic_bool sink_failed; /* a sink callback failed (maybe not first) */
	int fail_code; /* the first failure: written once, under lock */
	char err[LS_ERRMSG_MAX];

	struct ls_done end; /* the writer thread's end */
	pthread_mutex_t lock; /* blobs, err, fail_code; with cond: */
	pthread_cond_t cond;  /* the writer waiting for the fault thread */
	atomic_bool writer_waiting;
	/*
	 * The writer's parts: bumped (a futex word) each time a part of its
	 * batch is SAVED; the fault thread sleeps on it while the writer has
	 * the faulting page claimed (ls_snap_wait_part in writer.c).
	 */
	_Atomic uint32_t part_seq;
	atomic_int part_waiters;

	struct copy_ring ring;
	unsigned char *bounce; /* one batch of the writer */
	uint8_t *batch_flags;  /* per page of a batch: what the writer did */
	unsigned char *fpage;  /* the fault thread's page buffer */
	unsigned char *thp_buf; /* keep_thp: the fault thread's huge page */
	uint8_t *thp_flags;

	struct blob *blobs;
	bool blobs_closed;

	_Atomic uint64_t pages_done, pages_written, pages_zero, pages_copied;
	_Atomic uint64_t faults, faults_write_first, bytes_written;
	_Atomic uint64_t hist[LS_HIST_BUCKETS], stall_max;
	/* written by begin while faults may already be handled: atomics */
	_Atomic uint64_t begin_ns, arm_ns;
	_Atomic uint64_t end_ns;
};

/* snapshot.c */
void snap_fail(struct ls_snapshot *snap, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void snap_fail_sink(struct ls_snapshot *snap, int code, const char *what);
void snap_wake_writer(struct ls_snapshot *snap);
/* The end, on the writer thread: lift, detach, commit or abort. */
void snap_finish(struct ls_snapshot *snap);

/* writer.c */
void *snap_writer_main(void *arg);

/* ring.c */
int ring_init(struct copy_ring *ring, size_t bytes, struct ls_ctx *ctx);
void ring_free(struct copy_ring *ring);
/* Free slots now (only the consumer can change it upwards). */
uint64_t ring_free_slots(struct copy_ring *ring);
/* Reserves slots for one page; returns the first slot or -1 if full. */
int64_t ring_reserve(struct copy_ring *ring, uint32_t region, uint64_t page,
		     uint32_t nslots);
void ring_publish(struct copy_ring *ring, int64_t slot);
/*
 * The oldest published entry (slot) or -1; *count gets how many entries
 * from there hold the following pages of the same region, contiguously.
 * They stay reserved until ring_release().
 */
int64_t ring_peek(struct copy_ring *ring, uint32_t *count);
void ring_release(struct copy_ring *ring, int64_t slot, uint32_t count);
static inline unsigned char *ring_slot_data(struct copy_ring *ring,
					    int64_t slot)
{
	return ring->data + (uint64_t)slot * LS_SMALL_PAGE;
}

#endif /* LS_ENGINE_SNAP_H */
