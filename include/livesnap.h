/* SPDX-License-Identifier: MIT */
/*
 * liblivesnap: point-in-time snapshots of the memory of a running process.
 *
 * The caller registers memory regions with a context, stops its writers for
 * an instant, calls ls_snapshot_begin() (which write-protects every region
 * with userfaultfd and returns), and lets its writers run again. A writer
 * thread then streams every page to a sink while the process keeps writing;
 * a write to a page not yet saved traps and the page is copied aside or
 * saved first. The result is the memory exactly as it was at begin.
 *
 * Nothing here knows about KVM: a VMM, an in-memory database or any other
 * program that would pause or fork() to snapshot can use it.
 *
 * Error contract: every function that can fail returns 0 (or a non-negative
 * value) on success and -errno on failure, and a one-line message naming
 * what failed and why is kept with the object the call was about:
 * ls_snapshot_error(), ls_reader_error(), ls_ctx_error() for the context's
 * own calls; functions that create an object take a caller's buffer.
 * ls_ctx_error() is the context's last failure from any thread: read it
 * right after the failing call when no other thread uses the context.
 * Which calls may run at the same time: docs/api.md, "Errors and threads".
 *
 * Layers (dependencies point one way):
 *   engine  (ls_ctx, ls_region, ls_snapshot, ls_restore: uffd mechanics)
 *   format  (ls_sink_file/ls_sink_stream writers, ls_reader, verify)
 */
#ifndef LIVESNAP_H
#define LIVESNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; ls_version() is the library's at run time. */
#define LS_VERSION_MAJOR 0
#define LS_VERSION_MINOR 1
#define LS_VERSION_PATCH 0

#define LS_ERRMSG_MAX 256 /* size of any error-message buffer */
#define LS_NAME_MAX 64    /* region and blob names, including the NUL */
#define LS_ID_BYTES 16    /* a snapshot's identity (random, see ls_layout) */

/* Limits: regions of one context; blobs of one snapshot, and their size. */
#define LS_MAX_REGIONS 64
#define LS_MAX_BLOBS 1024u
#define LS_MAX_BLOB_BYTES (1ull << 30)

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *ls_version(void);

/*
 * The snapshot format version this library writes; it reads every file and
 * stream of the same major version.
 */
void ls_format_version(unsigned *major, unsigned *minor);

struct ls_ctx;
struct ls_snapshot;
struct ls_sink;
struct ls_source;
struct ls_restore;

/* ------------------------------------------------------------------ */
/* Context                                                             */
/* ------------------------------------------------------------------ */

/* Kernel features probed at ls_ctx_create() (ls_ctx_features()). */
enum {
	LS_FEAT_WP = 1u << 0,             /* UFFD-WP on anonymous memory */
	LS_FEAT_WP_SHMEM_HUGETLB = 1u << 1, /* UFFD-WP on shmem and hugetlbfs */
	LS_FEAT_WP_UNPOPULATED = 1u << 2, /* arm without populating */
	LS_FEAT_WP_ASYNC = 1u << 3,
	LS_FEAT_PAGEMAP_SCAN = 1u << 4,
	LS_FEAT_MISSING_SHMEM = 1u << 5,  /* lazy restore into shmem */
	LS_FEAT_MISSING_HUGETLB = 1u << 6, /* lazy restore into hugetlbfs */
	/* discards (MADV_DONTNEED, MADV_FREE, MADV_REMOVE) reported: a delta
	 * needs no look for discarded anonymous pages in its pause */
	LS_FEAT_EVENT_REMOVE = 1u << 7,
};

/*
 * Creates a context: opens a userfaultfd, negotiates the API and probes the
 * kernel's features. A kernel without UFFD-WP gets -ENOTSUP and a message in
 * errbuf (LS_ERRMSG_MAX bytes; may be NULL).
 */
int ls_ctx_create(struct ls_ctx **ctxp, char *errbuf, size_t errlen);

/* ls_ctx_create_opts() flags. */
enum {
	/*
	 * No discard events: a madvise(MADV_DONTNEED, MADV_FREE,
	 * MADV_REMOVE) over a region does not wait for the context's fault
	 * thread (~1 us instead of a thread round trip), and a delta's begin
	 * finds anonymous discards by a walk of the page tables in the pause.
	 */
	LS_CTX_NO_DISCARD_EVENTS = 1u << 0,
};

struct ls_ctx_opts {
	uint32_t flags; /* LS_CTX_* */
	uint32_t reserved[7]; /* zero */
};

/* ls_ctx_create() with options (NULL: the defaults); -EINVAL for unknown
 * flags or non-zero reserved words. */
int ls_ctx_create_opts(struct ls_ctx **ctxp, const struct ls_ctx_opts *opts,
		       char *errbuf, size_t errlen);

/*
 * Destroys a context. A snapshot still running is cancelled and waited for;
 * protection is lifted and every region unregistered before the descriptor
 * is closed, so no thread of the process is left blocked.
 */
void ls_ctx_destroy(struct ls_ctx *ctx);

/* The last error's one-line message ("" when none). */
const char *ls_ctx_error(const struct ls_ctx *ctx);

/* LS_FEAT_* bits found on this kernel. */
unsigned ls_ctx_features(const struct ls_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Regions                                                             */
/* ------------------------------------------------------------------ */

enum ls_mem_type {
	LS_MEM_ANON,    /* MAP_PRIVATE|MAP_ANONYMOUS */
	LS_MEM_SHMEM,   /* memfd, /dev/shm or MAP_SHARED|MAP_ANONYMOUS */
	LS_MEM_HUGETLB, /* hugetlbfs or MAP_HUGETLB (2 MiB or 1 GiB pages) */
};

struct ls_region_info {
	char name[LS_NAME_MAX];
	void *addr;
	size_t len;
	size_t page_size; /* 4096, or the huge page size for hugetlbfs */
	enum ls_mem_type type;
};

/*
 * Registers [addr, addr+len) with the context under a unique name. The type
 * and page size are found from /proc/self/smaps; the range must be one or
 * more whole mappings of one type, page aligned. The range is registered
 * with userfaultfd (write-protect mode) at once, so what cannot be protected
 * (a private file mapping, say) is refused here, with a message that names
 * the region and the reason. Returns the region's index (>= 0) or -errno.
 */
int ls_region_add(struct ls_ctx *ctx, const char *name, void *addr,
		  size_t len);

/* Unregisters a region (-EBUSY while a snapshot or a lazy restore uses it). */
int ls_region_remove(struct ls_ctx *ctx, int region);

int ls_region_count(const struct ls_ctx *ctx);
int ls_region_get(const struct ls_ctx *ctx, int region,
		  struct ls_region_info *info);

/* ------------------------------------------------------------------ */
/* Sinks: where a snapshot's bytes go                                  */
/* ------------------------------------------------------------------ */

/* What a sink is told at start: the regions, in index order. */
struct ls_layout_region {
	char name[LS_NAME_MAX];
	uint64_t len;
	uint32_t page_size;
	uint32_t type; /* enum ls_mem_type */
};

struct ls_layout {
	uint32_t nregions;
	const struct ls_layout_region *regions;
	/* This snapshot's identity: random, drawn at ls_snapshot_create(). */
	uint8_t id[LS_ID_BYTES];
	/*
	 * A delta (ls_snapshot_opts.delta): the pages not passed to
	 * write_pages are those of the parent snapshot, named by its id; the
	 * pages passed include zero pages (a page written to all zeros since
	 * the parent must override the parent's).
	 */
	bool delta;
	uint8_t parent[LS_ID_BYTES];
};

/*
 * A sink receives every non-zero page of every region exactly once, in any
 * order, possibly from several threads at once (always for distinct pages);
 * zero pages are never passed (they are counted and left as holes). A delta
 * (layout->delta) receives exactly the pages written since its parent,
 * zero or not, each once. Each
 * callback returns 0 or -errno and may set a message with ls_sink_set_error().
 * A custom sink fills ops and embeds struct ls_sink at the start of its own
 * state.
 */
struct ls_sink_ops {
	int (*start)(struct ls_sink *sink, const struct ls_layout *layout);
	int (*write_pages)(struct ls_sink *sink, uint32_t region,
			   uint64_t first_page, const void *data,
			   uint64_t npages);
	int (*put_blob)(struct ls_sink *sink, const char *name,
			const void *data, size_t len);
	/* Everything written: make it durable and visible (rename). */
	int (*commit)(struct ls_sink *sink);
	/* Failed or cancelled: leave nothing that could pass as complete. */
	void (*abort)(struct ls_sink *sink);
	void (*destroy)(struct ls_sink *sink);
};

struct ls_sink {
	const struct ls_sink_ops *ops;
	char error[LS_ERRMSG_MAX];
};

void ls_sink_set_error(struct ls_sink *sink, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void ls_sink_destroy(struct ls_sink *sink);

/*
 * File sink: a seekable snapshot file. Written as PATH.tmp.<pid>, page-
 * aligned memory sections (zero pages are holes), a checksum per page and
 * over every table; fsync'd and renamed to PATH only by commit, after which
 * the directory is fsync'd too. Flags: LS_FILE_DIRECT (O_DIRECT data writes).
 */
#define LS_FILE_DIRECT 1u
int ls_sink_file_create(struct ls_sink **sinkp, const char *path,
			unsigned flags, char *errbuf, size_t errlen);

/*
 * Stream sink: a sequential record stream to any fd (pipe, socket, a
 * command's stdin), ending with a trailer record that carries the totals and
 * a checksum, so a truncated stream is always detected. The fd is not
 * closed by the sink.
 */
int ls_sink_stream_create(struct ls_sink **sinkp, int fd, char *errbuf,
			  size_t errlen);

/* ------------------------------------------------------------------ */
/* Snapshots                                                           */
/* ------------------------------------------------------------------ */

enum ls_strategy {
	LS_STRATEGY_AUTO,        /* copy while the buffer has room, then
				    write-first (default) */
	LS_STRATEGY_COPY,        /* copy the faulting page aside, release at
				    once; full buffer falls back to write-first */
	LS_STRATEGY_WRITE_FIRST, /* save the faulting page, then release */
};

struct ls_snapshot_opts {
	enum ls_strategy strategy;
	size_t copy_buffer_bytes; /* 0: default (64 MiB) */
	size_t batch_bytes;       /* writer batch, 0: default (2 MiB) */
	/*
	 * Fault thread: after each fault, busy-poll this many microseconds
	 * before blocking again (a blocked thread costs a cross-CPU wake-up
	 * per fault). 0: default (see docs/engine.md), < 0: never spin.
	 * With track, it applies to the tracking faults after the snapshot.
	 */
	int fault_spin_us;
	/*
	 * Anonymous THP memory: a write fault in a huge page captures the
	 * whole 2 MiB (into the copy buffer if it has room, else to the sink
	 * first) and releases it with one un-protect, instead of releasing
	 * 4 KiB, which splits the huge page until khugepaged collapses it
	 * again. Stalls grow to one 2 MiB memcpy (~0.3 ms; plus a 2 MiB sink
	 * write when write-first), but the next snapshot's arm stays at the
	 * THP rate (~0.1 ms/GiB instead of ~20 ms/GiB for the split part).
	 */
	bool keep_thp;
	/*
	 * Keep recording which pages are written after this snapshot's begin
	 * (every first write to a page takes one write fault, see
	 * docs/engine.md), so that the next snapshot can be a delta. keep_thp
	 * is ignored: tracking is per page.
	 */
	bool track;
	/*
	 * With track: tracked by the caller from this begin on, as after
	 * ls_track_by_caller(). The caller's own write log, running from
	 * before the begin, has every later write: pages are released as in
	 * an untracked snapshot, and nothing stays protected after it.
	 */
	bool track_by_caller;
	/*
	 * A delta against the previous tracked snapshot of this context (or
	 * the instant given to ls_track_start()): holds exactly the pages
	 * written since that snapshot's begin. Needs tracking on (-ENOENT).
	 * Usually combined with track, to continue the chain.
	 */
	bool delta;
	/*
	 * track: between snapshots, a first write releases (and records) the
	 * whole aligned block of this many bytes around it, a power of two
	 * (0: one page, exact). Fewer faults (and no split of a THP with
	 * 2 MiB), but a delta then holds every page of each written block.
	 * Kept by the context for ls_track_start() too.
	 */
	size_t track_granule;
	/*
	 * Run the writer thread SCHED_IDLE: any other thread made runnable on
	 * its CPU (an application thread, a vCPU back from a write fault)
	 * preempts it at once, instead of waiting out the writer's scheduler
	 * slice (up to ~10 ms measured with a vCPU sharing the writer's CPU).
	 * The price: on CPUs kept busy by other threads the writer gets
	 * little time and the snapshot lasts longer. Without it the writer
	 * runs SCHED_BATCH (it never preempts the caller that begin wakes it
	 * from, inside the caller's pause).
	 */
	bool writer_idle;
};

enum ls_snapshot_state {
	LS_SNAP_SETUP,     /* created, not begun */
	LS_SNAP_ACTIVE,    /* protected, pages being written */
	LS_SNAP_COMPLETED, /* committed */
	LS_SNAP_FAILED,    /* error; see ls_ctx_error() / ls_snapshot_error() */
	LS_SNAP_CANCELLED,
};

struct ls_progress {
	enum ls_snapshot_state state;
	uint64_t pages_total;
	uint64_t pages_done;   /* saved or found zero */
	uint64_t bytes_written;
	double rate_bps;       /* bytes per second since begin */
	uint64_t elapsed_ns;
};

#define LS_HIST_BUCKETS 64 /* log2 buckets: bucket i counts [2^i, 2^(i+1)) ns */

struct ls_stats {
	uint64_t pages_total;    /* a delta: the pages in the delta */
	uint64_t pages_written;  /* non-zero pages handed to the sink */
	uint64_t pages_zero;     /* zero pages skipped */
	uint64_t pages_copied;   /* saved through the copy buffer */
	uint64_t faults;         /* write faults taken */
	uint64_t faults_write_first; /* faults resolved by saving first */
	uint64_t copy_buffer_hwm;    /* bytes, high-water mark */
	uint64_t bytes_written;
	uint64_t arm_ns;   /* write-protect in ls_snapshot_begin() */
	uint64_t total_ns; /* begin to commit */
	/* write-fault stall: fault read to writer released */
	uint64_t stall_hist[LS_HIST_BUCKETS];
	uint64_t stall_p50_ns, stall_p99_ns, stall_p999_ns, stall_max_ns;
};

/*
 * Creates a snapshot of every region of ctx into sink (ownership of the
 * sink passes to the snapshot). One snapshot per context at a time (-EBUSY).
 */
int ls_snapshot_create(struct ls_ctx *ctx, struct ls_sink *sink,
		       const struct ls_snapshot_opts *opts,
		       struct ls_snapshot **snapp);

/* Attaches a named opaque blob (copied); allowed until the snapshot ends. */
int ls_snapshot_add_blob(struct ls_snapshot *snap, const char *name,
			 const void *data, size_t len);

/*
 * Optional, before ls_snapshot_begin() and outside the pause (writers
 * running): write-protects the shmem/memfd and hugetlbfs regions now, so
 * that begin re-protects only the 2 MiB blocks written in between instead
 * of walking every page table entry (a memfd of 4 GiB in 4 KiB pages: the
 * pause goes from ~15 ms to well under one). Until begin, the first write
 * to each 2 MiB block takes one write fault. Anonymous regions are armed
 * by begin as without it; a delta, or settled tracking, needs no prepare
 * (0, nothing done). A snapshot cancelled or destroyed before its begin
 * gives the protection back. 0 or -errno.
 */
int ls_snapshot_prepare(struct ls_snapshot *snap);

/*
 * Arms write protection on every region and starts the writer and fault
 * threads. Call it while the writers are quiesced; it returns as soon as
 * protection is armed (it never touches every page).
 */
int ls_snapshot_begin(struct ls_snapshot *snap);

int ls_snapshot_progress(struct ls_snapshot *snap, struct ls_progress *p);

/* Requests cancellation; ls_snapshot_wait() then returns -ECANCELED. */
void ls_snapshot_cancel(struct ls_snapshot *snap);

/*
 * Waits for the end: 0 when committed, -errno on failure or cancel. On any
 * end, protection is lifted and the writers are running unhindered.
 */
int ls_snapshot_wait(struct ls_snapshot *snap);

/* Like wait, but returns -EAGAIN at once if the snapshot is still active. */
int ls_snapshot_poll(struct ls_snapshot *snap);

int ls_snapshot_stats(struct ls_snapshot *snap, struct ls_stats *stats);
const char *ls_snapshot_error(const struct ls_snapshot *snap);

/*
 * The snapshot's id (the one its sink was given) and, for a delta, its
 * parent's id (zeros for a full snapshot). Returns 1 for a delta, 0 for a
 * full snapshot.
 */
int ls_snapshot_id(const struct ls_snapshot *snap, uint8_t id[LS_ID_BYTES],
		   uint8_t parent[LS_ID_BYTES]);

/* Cancels and waits if still active, then frees. */
void ls_snapshot_destroy(struct ls_snapshot *snap);

/* ------------------------------------------------------------------ */
/* Write tracking between snapshots                                    */
/* ------------------------------------------------------------------ */

/*
 * A snapshot taken with opts.track leaves tracking on when it succeeds:
 * the regions stay write-protected and the context records the first
 * write to each page, so that the next snapshot can be a delta. These
 * start and stop tracking outside a snapshot.
 *
 * ls_track_start: the regions' memory now equals the snapshot `parent`
 * (say, just restored from it; NULL: no parent, so no delta until the next
 * tracked full snapshot). Call it with the writers quiesced, as for begin.
 * -EBUSY while a snapshot exists or a lazy restore runs.
 */
int ls_track_start(struct ls_ctx *ctx, const uint8_t parent[LS_ID_BYTES]);

/* Stops tracking: protection lifted (no-op when not tracking). -EBUSY
 * while a snapshot exists. */
int ls_track_stop(struct ls_ctx *ctx);

/*
 * Marks [addr, addr + len) (within one region, whole pages) as changed
 * since the last tracked begin, so that the next delta holds it: for
 * changes the engine cannot see, such as writes through the memfd's own
 * descriptor or another process, or a shmem/hugetlb page discarded and
 * then read back (docs/api.md). -ENOENT when not tracking, -EINVAL for a
 * range outside the regions.
 */
int ls_track_dirty(struct ls_ctx *ctx, const void *addr, size_t len);

/*
 * With the writers quiesced, and no snapshot active: hands tracking to the
 * kernel's asynchronous write protection (UFFD_FEATURE_WP_ASYNC), so that
 * a first write after this costs a minor fault (~1 us) instead of a round
 * trip through the fault thread (~30-120 us). The next snapshot's begin
 * collects those writes with PAGEMAP_SCAN and takes tracking back (call
 * settle again after each tracked snapshot ends). Why the writers must be
 * stopped: the memory moves to another userfaultfd, and a write during the
 * move would not be recorded. -ENOENT when not tracking, -EBUSY during a
 * snapshot, -EOPNOTSUPP without WP_ASYNC or PAGEMAP_SCAN (Linux < 6.7):
 * tracking then stays on write faults.
 */
int ls_track_settle(struct ls_ctx *ctx);

/*
 * Hands tracking to the caller: protection is lifted from every region
 * and, from now on, the context records only what the caller reports with
 * ls_track_dirty() or ls_track_dirty_bitmap() before each delta's begin,
 * which must then be every change since the last tracked begin (writes
 * and discards). For a caller that keeps an exact write log of its own,
 * such as a VMM with KVM's dirty log: writes between snapshots then cost
 * nothing here, and a delta's begin protects only the chunks its pages
 * are in. The caller's log must already run (writes after the last
 * tracked begin and before this call are recorded here as well), so the
 * writers may run. It holds across snapshots (each tracked snapshot lifts
 * protection again at its end) until tracking stops or restarts
 * (ls_track_start, a snapshot without track, a full one without
 * track_by_caller). A snapshot can start it too (track_by_caller).
 * -ENOENT when not tracking, -EBUSY during a snapshot.
 */
int ls_track_by_caller(struct ls_ctx *ctx);

/*
 * ls_track_start() with the caller's tracking from the start
 * (ls_track_by_caller): nothing is protected, so it may be called while a
 * lazy restore of the regions from `parent` runs (the pages that restore
 * installs hold what the parent holds; what the application writes, the
 * caller's log has). The next snapshot still waits for the restore's end.
 */
int ls_track_start_by_caller(struct ls_ctx *ctx,
			     const uint8_t parent[LS_ID_BYTES]);

/*
 * ls_track_dirty() for many pages at once: bit i of bitmap (bit i % 64 of
 * word i / 64) marks the 4 KiB page at addr + i * 4096, for i < n4k; the
 * range is 4 KiB aligned and inside one region. A huge page is marked when
 * any of its 4 KiB bits is set. -ENOENT when not tracking, -EINVAL for a
 * range outside the regions.
 */
int ls_track_dirty_bitmap(struct ls_ctx *ctx, const void *addr, uint64_t n4k,
			  const uint64_t *bitmap);

/*
 * True when the next snapshot can be a delta; parent (may be NULL) gets
 * the id it would be a delta of.
 */
bool ls_track_active(const struct ls_ctx *ctx, uint8_t parent[LS_ID_BYTES]);

/* Percentile (0 < q < 1) of a stall histogram, in ns. */
uint64_t ls_hist_percentile(const uint64_t hist[LS_HIST_BUCKETS], double q);

/* ------------------------------------------------------------------ */
/* Reading snapshots (format layer)                                    */
/* ------------------------------------------------------------------ */

struct ls_reader;

struct ls_reader_region {
	char name[LS_NAME_MAX];
	uint64_t len;
	uint32_t page_size;
	uint32_t type;
	uint64_t pages_nonzero;
};

/*
 * Opens a snapshot file or stream ("-" or a path to a FIFO/pipe reads a
 * stream). Headers, tables and their checksums are checked here; a corrupt
 * or truncated file is refused with a one-line message in errbuf. Stream
 * readers are sequential: they support info, verify and eager restore.
 */
int ls_reader_open(const char *path, struct ls_reader **rp, char *errbuf,
		   size_t errlen);
int ls_reader_open_fd(int fd, struct ls_reader **rp, char *errbuf,
		      size_t errlen);
void ls_reader_close(struct ls_reader *r);
const char *ls_reader_error(const struct ls_reader *r);
bool ls_reader_is_stream(const struct ls_reader *r);

/* What a snapshot says about itself (ls_reader_get_info). */
struct ls_reader_info {
	bool stream;   /* read from a stream */
	bool complete; /* file: always; stream: consumed up to its trailer */
	uint16_t version_major, version_minor; /* of the format */
	uint32_t host_page_size;
	uint32_t compat_flags;
	uint64_t created_ns;    /* CLOCK_REALTIME at start, ns since 1970 */
	uint64_t pages_total;   /* of every region */
	uint64_t pages_nonzero; /* stream: those consumed so far */
	uint64_t size;          /* file size, or stream bytes consumed */
	uint64_t disk_bytes;    /* file: blocks allocated; stream: size */
	/*
	 * Format 1.1: the snapshot's id (zeros in older files). A delta holds
	 * only the pages written since its parent (pages_nonzero counts them,
	 * zero ones included); read alone, the other pages read as zero: use
	 * a chain (ls_chain_open) to read or restore it.
	 */
	bool delta;
	uint8_t id[LS_ID_BYTES];
	uint8_t parent[LS_ID_BYTES];
};
int ls_reader_get_info(const struct ls_reader *r, struct ls_reader_info *info);

uint32_t ls_reader_region_count(const struct ls_reader *r);
int ls_reader_region(const struct ls_reader *r, uint32_t idx,
		     struct ls_reader_region *info);
/* Region index by name, or -ENOENT. */
int ls_reader_find_region(const struct ls_reader *r, const char *name);

/* Blobs: the data stays owned by the reader. -ENOENT if absent. */
uint32_t ls_reader_blob_count(const struct ls_reader *r);
int ls_reader_blob(const struct ls_reader *r, uint32_t idx, const char **name,
		   const void **data, size_t *len);
int ls_reader_find_blob(const struct ls_reader *r, const char *name,
			const void **data, size_t *len);

/*
 * Reads npages pages of a region into buf (file readers only; zero pages
 * read as zeros). Every page read is checked against its checksum.
 */
int ls_reader_read_pages(struct ls_reader *r, uint32_t region,
			 uint64_t first_page, void *buf, uint64_t npages);

/* Checks every page and table; 0 if the snapshot is whole and intact. */
typedef void (*ls_progress_fn)(void *arg, uint64_t done, uint64_t total);
int ls_reader_verify(struct ls_reader *r, ls_progress_fn fn, void *arg);

/*
 * Like ls_reader_verify, but a file's damaged page does not stop it: every
 * page is checked and bad[i] (ls_reader_region_count() entries) counts
 * region i's damaged pages. -EBADMSG if any, with the first one's message
 * in ls_reader_error(); other errors (a read error) stop it. A stream
 * cannot go on past damage (its checksums chain): it stops at the first,
 * as ls_reader_verify does, and bad[] stays zero.
 */
int ls_reader_verify_all(struct ls_reader *r, ls_progress_fn fn, void *arg,
			 uint64_t *bad);

/*
 * Eager restore: fills [addr, addr+len) (len must equal the region's size)
 * with the region's content; zero pages are left untouched, so the target
 * must be zero (fresh) memory. For a stream reader call ls_reader_restore_all
 * instead: it consumes the stream and fills every region at once.
 */
int ls_reader_restore_region(struct ls_reader *r, uint32_t region, void *addr,
			     size_t len);
int ls_reader_restore_all(struct ls_reader *r, void *const *addrs,
			  const size_t *lens, uint32_t n);

/* ------------------------------------------------------------------ */
/* Chains: a full snapshot file and the deltas after it (format layer) */
/* ------------------------------------------------------------------ */

struct ls_chain;

/*
 * Opens the chain that ends with the snapshot file `path`: while the file
 * is a delta, its parent is the file in the same directory whose id is the
 * delta's parent id (names do not matter). Every file is opened and checked
 * as by ls_reader_open, and every link: a missing parent, a parent that
 * cannot be read, regions unlike the parent's are refused with one line
 * naming the files. A full snapshot alone is a chain of one.
 */
int ls_chain_open(const char *path, struct ls_chain **cp, char *errbuf,
		  size_t errlen);
/*
 * The same from an explicit list, oldest (a full snapshot) first; each
 * next file must be a delta of the one before.
 */
int ls_chain_open_list(const char *const *paths, unsigned n,
		       struct ls_chain **cp, char *errbuf, size_t errlen);
void ls_chain_close(struct ls_chain *c);
const char *ls_chain_error(const struct ls_chain *c);
/* Files in the chain; file i (0: the full snapshot) and its path. */
unsigned ls_chain_length(const struct ls_chain *c);
struct ls_reader *ls_chain_reader(const struct ls_chain *c, unsigned i);
const char *ls_chain_path(const struct ls_chain *c, unsigned i);
/* Checks every file whole (ls_reader_verify), oldest first. */
int ls_chain_verify(struct ls_chain *c, ls_progress_fn fn, void *arg);
/*
 * Eager restore of region `region` (as in the full snapshot) into fresh,
 * zero memory of its size: the full snapshot, then each delta over it.
 */
int ls_chain_restore_region(struct ls_chain *c, uint32_t region, void *addr,
			    size_t len);
/*
 * A source for ls_restore_start() that serves each page from the newest
 * file holding it. The chain must outlive the source.
 */
int ls_chain_source(struct ls_chain *c, struct ls_source **srcp);
/*
 * Writes the chain's last state as one full snapshot into sink (start,
 * pages, the newest file's blobs, commit; abort on failure). The result
 * takes the newest file's id, so deltas taken after it apply to it too.
 * The caller still destroys the sink.
 */
int ls_chain_flatten(struct ls_chain *c, struct ls_sink *sink);

/* ------------------------------------------------------------------ */
/* Lazy restore (engine)                                               */
/* ------------------------------------------------------------------ */

/*
 * A source of pages for lazy restore. ls_reader_source() wraps a file
 * reader; custom sources fill the ops.
 */
struct ls_source_ops {
	/* Reads npages pages of source region `region` into buf; returns 0. */
	int (*read_pages)(struct ls_source *src, uint32_t region,
			  uint64_t first_page, void *buf, uint64_t npages);
	/* True if the page is known zero without reading it (may be NULL). */
	bool (*is_zero)(struct ls_source *src, uint32_t region, uint64_t page);
	void (*destroy)(struct ls_source *src);
};

struct ls_source {
	const struct ls_source_ops *ops;
};

/*
 * read_pages and is_zero may be called from two threads at once (the fault
 * thread and the prefetch thread), always for distinct pages. A restore does
 * not own its source: destroy it after ls_restore_destroy().
 */
void ls_source_destroy(struct ls_source *src);

/* A source over a file reader (which must outlive the source). */
int ls_reader_source(struct ls_reader *r, struct ls_source **srcp);

enum ls_restore_mode {
	LS_RESTORE_EAGER, /* fill everything now, then return */
	LS_RESTORE_LAZY,  /* serve pages on first touch, prefetch behind */
	LS_RESTORE_LAZY_HOLD, /* LAZY; the prefetch waits for
				 ls_restore_prefetch() */
};

struct ls_restore_stats {
	uint64_t pages_total;
	uint64_t pages_done;
	uint64_t faults;        /* missing faults served on demand */
	uint64_t fault_p50_ns, fault_p99_ns, fault_max_ns;
	uint64_t elapsed_ns;
	bool complete;
};

/*
 * Restores source region src_region into registered (fresh, untouched)
 * context region `region` of the same size. LAZY registers the region for
 * missing faults and starts a prefetch thread, and returns at once; touches
 * of pages not yet present are served first. Once every page is in, the
 * region is an ordinary region again. A snapshot cannot begin while a lazy
 * restore of one of its regions runs (-EBUSY): ls_restore_wait() first.
 * LAZY_HOLD serves touches from the start but holds the prefetch until
 * ls_restore_prefetch() (wait blocks until then; destroy lets it go).
 */
int ls_restore_start(struct ls_ctx *ctx, int region, struct ls_source *src,
		     uint32_t src_region, enum ls_restore_mode mode,
		     struct ls_restore **rp);
int ls_restore_prefetch(struct ls_restore *r);
int ls_restore_wait(struct ls_restore *r);
int ls_restore_stats(struct ls_restore *r, struct ls_restore_stats *st);
void ls_restore_destroy(struct ls_restore *r); /* waits for completion */

#ifdef __cplusplus
}
#endif
#endif /* LIVESNAP_H */
