/* SPDX-License-Identifier: MIT */
/*
 * Engine internals: the context, its regions, the fault service thread that
 * reads the context's userfaultfd, and the helpers the snapshot and restore
 * code share. Nothing here is visible outside lib/engine/.
 */
#ifndef LS_ENGINE_INTERNAL_H
#define LS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "compat.h"
#include "livesnap.h"

#define LS_SMALL_PAGE 4096ul
#define LS_HUGE_2M (2ul << 20)

/* A registered region. */
struct ls_region {
	struct ls_region_info info;
	uint64_t npages;
	int seek_fd;       /* shmem: the backing file (SEEK_DATA), or -1 */
	/*
	 * Shared shmem or hugetlbfs: the backing file, or -1. A snapshot
	 * compares its allocated blocks at begin and at the end: a hole punch
	 * or truncation takes pages away without a write fault. For shmem
	 * this is seek_fd.
	 */
	int file_fd;
	uint64_t file_off; /* shmem: the file offset of the region's start */
	/* Shared file-backed (one file): which file, to find its aliases. */
	bool shared_file;
	/* Private anonymous hugetlb: a page not mapped here is zero. */
	bool anon_huge;
	char dev[16];
	unsigned long long inode;
	/*
	 * Anonymous, THP-eligible, and the kernel maps the huge zero page:
	 * ls_snapshot_create() pre-faults it (see prefault_huge_zero()).
	 */
	bool thp_zero;
	/*
	 * thp_zero regions: one bit per 2 MiB that a fault released page by
	 * page (splitting the huge page); the next snapshot's create collapses
	 * them back before its pause, so that arm stays at the THP rate.
	 */
	_Atomic uint8_t *split;
	/* Lazy restore filling this region; the fault service reads it. */
	_Atomic(struct ls_restore *) restore;
};

/*
 * The fault service: one thread that reads the context's userfaultfd while
 * anyone (an armed snapshot, a lazy restore) needs faults handled. It hands
 * write-protect faults to the armed snapshot and missing faults to the
 * region's restore. Users take and drop it with ls_svc_get()/ls_svc_put().
 */
struct ls_fault_svc {
	pthread_t thread;
	int stop_fd; /* eventfd: wakes the thread out of poll() to stop */
	int users;
	atomic_bool stop;
	/* Busy-poll this long after each fault before blocking (0: block). */
	_Atomic int64_t spin_ns;
	/* Handlers running now: a user that detaches waits for zero. */
	atomic_int inflight;
	/* writer_idle snapshots whose writer lives: poll() is bounded (the
	 * writer guard, writer.c) */
	atomic_int guard_users;
	/* Faults read by an ioctl's wait for a discard event (uffd.c), to
	 * be served next; the fault thread's own. */
	struct uffd_msg *backlog;
	size_t nbacklog, backlog_cap;
};

#define LS_DISC_LOG 64

enum ls_prep {
	LS_PREP_NONE,	 /* begin arms every region whole */
	LS_PREP_TRACKED, /* tracked by faults: protected but for the sets */
	LS_PREP_CALLER,	 /* the caller's tracking, by faults until begin */
	LS_PREP_OWN,	 /* tracking started by prepare, for its snapshot */
	LS_PREP_DELTA,	 /* a delta's pages until prepare are in prep_sets */
	LS_PREP_CALLER_DELTA, /* the caller's reports go to prep_sets, the
			       * faults since prepare to the dirty sets */
};

/*
 * Write tracking between snapshots (track.c): while on, every page not in
 * a region's dirty set is write-protected, and the fault service records a
 * page's first write in the set before it un-protects the page. The sets
 * are swapped for fresh ones at each tracked snapshot's begin.
 */
struct ls_track {
	atomic_bool on;
	bool has_parent; /* parent: the instant the dirty sets start from */
	atomic_bool broken; /* an un-protect failed: the sets cannot be trusted */
	uint8_t parent[LS_ID_BYTES];
	/* A write between snapshots releases this aligned block (0: page). */
	_Atomic uint64_t granule;
	/*
	 * Derived from `prep` (ls_track_prep_set()), for the fault thread,
	 * which reads it without the lock: from a prepare to its begin, where
	 * the faults only say what begin protects again and are never given
	 * back to a chain (LS_PREP_OWN, LS_PREP_CALLER_DELTA), a write in a
	 * thp_zero region releases its 2 MiB block whole (ls_track_fault()).
	 */
	atomic_bool prep_blocks;
	/* One bit per page of each region; written by the fault service. */
	_Atomic(_Atomic uint64_t *) dirty[LS_MAX_REGIONS];
	/*
	 * Shmem and hugetlbfs regions: one bit per page that held data at the
	 * last tracked begin (see ls_track_rescan()); NULL for anonymous ones.
	 */
	uint64_t *held[LS_MAX_REGIONS];
	/*
	 * ls_track_settle(): the regions are registered with `auffd` (opened
	 * with UFFD_FEATURE_WP_ASYNC) instead of the context's descriptor, so
	 * the kernel resolves a first write itself and PAGEMAP_SCAN finds it
	 * at the next begin (ls_track_unsettle()).
	 */
	bool async;
	int auffd; /* -1 until the first settle */
	/*
	 * ls_track_by_caller(): nothing is protected between snapshots; the
	 * caller reports every change, and each tracked snapshot lifts
	 * protection at its end.
	 */
	bool caller;
	/*
	 * ls_snapshot_prepare(): how the context's snapshot may arm at its
	 * begin (ls_track_prepare()); prep_granule: the granule to put back
	 * when prepare started tracking for itself.
	 */
	enum ls_prep prep;
	uint64_t prep_granule;
	/* LS_PREP_DELTA, or `refined`: the dirty sets as prepare found them
	 * (protected again); the sets in `dirty` take what is written after,
	 * page by page; refined: the granule to put back then.
	 * LS_PREP_CALLER_DELTA: what the caller reported before the prepare
	 * (the delta's pages so far); late_sets what it reports after, until
	 * begin; refine_granule as for `refined`. */
	_Atomic uint64_t *prep_sets[LS_MAX_REGIONS];
	_Atomic uint64_t *late_sets[LS_MAX_REGIONS];
	/*
	 * The discards read since the last begin, while tracking
	 * (ls_track_discarded on the fault thread appends, the begin reads
	 * with the writers quiesced). The kernel zaps an anonymous page only
	 * after its event was read, so a prepare may protect the page in
	 * between, and the zap then drops that protection: a prepared begin
	 * protects these ranges again, every zap done by then. Past
	 * LS_DISC_LOG ranges, `disc_over`: it protects the anonymous regions
	 * whole.
	 */
	atomic_bool disc_over;
	atomic_uint ndisc;
	struct {
		uint64_t start, end;
	} disc[LS_DISC_LOG];
	bool refined;
	uint64_t refine_granule;
};

/*
 * A snapshot's prefaulted buffers (copy ring, bounce, huge-page buffer)
 * go back to the context when it is destroyed, for the next snapshot:
 * faulting in a 64 MiB copy buffer took 214 ms on a nested-virtualization
 * host (fresh memory is slow to populate there) and 10 ms when the pages
 * had just been freed; a reused buffer costs nothing.
 */
#define LS_BUF_CACHE 4
struct ls_buf {
	void *p;
	size_t len;
};

struct ls_ctx {
	int uffd;
	int pagemap_fd; /* -1 without PAGEMAP_SCAN */
	unsigned features;      /* LS_FEAT_* */
	uint64_t uffd_features; /* what UFFDIO_API granted */
	pthread_mutex_t lock;   /* regions, snap, restores, svc users */
	/* Written under both: the fault thread reads regions[] under it,
	 * without lock (which a caller may hold while it waits for faults). */
	pthread_rwlock_t regions_rw;
	struct ls_region regions[LS_MAX_REGIONS];
	int nregions;
	struct ls_snapshot *snap; /* the one snapshot (created..destroyed) */
	/* The snapshot between arm and end: write faults go there. */
	_Atomic(struct ls_snapshot *) armed;
	struct ls_restore *restores[LS_MAX_REGIONS];
	int nrestores;
	struct ls_fault_svc svc;
	/* UFFD_FEATURE_EVENT_REMOVE: discards of anonymous pages are marked
	 * in the tracking sets as they happen (ls_track_discarded()); the
	 * fault thread runs from create to destroy. */
	bool events;
	struct ls_track track; /* under lock, but dirty[] and on: atomics */
	struct ls_buf bufs[LS_BUF_CACHE]; /* under lock: see ls_buf_take */
	pthread_mutex_t errlock;
	char err[LS_ERRMSG_MAX];
};

/*
 * The end of a piece of work done by a thread (a snapshot, a restore): any
 * number of callers wait for it, the thread is joined exactly once.
 */
struct ls_done {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, joined, done;
	int result;
};

void ls_done_init(struct ls_done *d);
void ls_done_destroy(struct ls_done *d);
void ls_done_started(struct ls_done *d, pthread_t thread);
void ls_done_set(struct ls_done *d, int result);
/* True once ended; *result (may be NULL) gets the result. */
bool ls_done_is(struct ls_done *d, int *result);
/* Waits for the end, joins the thread once, returns the result. */
int ls_done_wait(struct ls_done *d);

/* ctx.c */
int ls_err(struct ls_ctx *ctx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void ls_err_copy(struct ls_ctx *ctx, const char *msg);
uint64_t ls_now_ns(void);

/* uffd.c: ioctl wrappers; each returns 0 or -errno. */
int ls_uffd_wp(int uffd, uint64_t start, uint64_t len, bool protect);
int ls_uffd_wake(int uffd, uint64_t start, uint64_t len);
int ls_uffd_lift(int uffd, uint64_t start, uint64_t len, uint64_t ps);
/* Un-protected pages of this type stay read-only until written once. */
bool ls_uffd_keeps_readonly(enum ls_mem_type type);
/* Makes present pages writable now, not at their next write (no error). */
void ls_prefault_write(uint64_t start, uint64_t len);
/* Un-protects and wakes; with prefault, writable before the wake. */
int ls_uffd_release(int uffd, uint64_t start, uint64_t len, bool prefault,
		    const char **what);
int ls_uffd_register(int uffd, uint64_t start, uint64_t len, uint64_t mode,
		     uint64_t *ioctls);
int ls_uffd_unregister(int uffd, uint64_t start, uint64_t len);
/* ctx.c: a new userfaultfd, O_CLOEXEC | O_NONBLOCK (-errno, message) */
int ls_uffd_new(char *errbuf, size_t errlen);
/* UFFDIO_COPY of len bytes; *done gets the bytes copied (may be partial). */
int ls_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
		 uint64_t *done);
int ls_uffd_zeropage(int uffd, uint64_t dst, uint64_t len);
/* An ioctl met EAGAIN: lets a discard event be read (see uffd.c). */
void ls_uffd_eagain(void);

/* fault service (uffd.c) */
int ls_svc_get(struct ls_ctx *ctx); /* ctx->lock held */
void ls_svc_put(struct ls_ctx *ctx); /* ctx->lock held */
void ls_svc_quiesce(struct ls_ctx *ctx);
int ls_region_find(const struct ls_ctx *ctx, uint64_t addr);
/* -EBUSY (message set) if a region's pages are mapped writable elsewhere. */
int ls_regions_check_aliases(struct ls_ctx *ctx); /* ctx->lock held */
/* The index of a region under lazy restore, or -1. */
int ls_ctx_restoring(const struct ls_ctx *ctx);

/* The fault path released a page alone at off (see snapshot.c). */
void ls_note_split(struct ls_ctx *ctx, uint32_t region, uint64_t off);
/* writer.c, on the fault thread: the writer_idle guard, at least every
 * LS_WRITER_GUARD_MS; returns how long poll() may block (ms, -1: no
 * bound). */
#define LS_WRITER_GUARD_MS 25
int ls_snap_writer_guard(struct ls_ctx *ctx);
/* uffd.c: wakes the fault thread to look again at that bound. */
void ls_svc_kick(struct ls_ctx *ctx);
/* writer.c: called by the fault service for a write-protect fault. */
void ls_snap_wp_fault(struct ls_snapshot *snap, int region, uint64_t addr,
		      uint64_t t_read);
/* track.c */
/* Bytes of a dirty bitmap for npages pages (whole 64-bit words). */
static inline size_t ls_bitmap_bytes(uint64_t npages)
{
	return (size_t)((npages + 63) / 64 * 8);
}
static inline bool ls_bit_test(const uint64_t *bits, uint64_t i)
{
	return bits[i / 64] & (1ull << (i % 64));
}
/* Sets bits [a, b). */
static inline void ls_bits_set(uint64_t *bits, uint64_t a, uint64_t b)
{
	for (uint64_t i = a; i < b; i++)
		bits[i / 64] |= 1ull << (i % 64);
}
/*
 * Shmem: sets bit i of bits (zeroed by the caller) for each page i of the
 * npages pages of size ps at file offset start that is data, not a hole
 * (SEEK_DATA/SEEK_HOLE; swapped-out pages count as data). 0, -E2BIG after
 * max_runs runs of data (0: no limit), or -errno of lseek.
 */
int ls_seek_data(int fd, uint64_t start, uint64_t npages, uint64_t ps,
		 uint64_t max_runs, uint64_t *bits);
/*
 * A dirty set of npages pages: one bit per page in ls_set_words() words,
 * then a summary, one bit per word, set when the word gets its first bit
 * (ls_set_or(), the one way bits go in). Walks in a pause then read the
 * words written, not the whole set: a 4 GiB region's is 128 KiB, 10-13
 * us to read on this project's hosts. The summary may mark a word that
 * is zero again; a nonzero word is always marked once its writer is done.
 */
static inline uint64_t ls_set_words(uint64_t npages)
{
	return ls_bitmap_bytes(npages) / 8;
}

static inline void ls_set_or(_Atomic uint64_t *set, uint64_t npages,
			     uint64_t w, uint64_t bits)
{
	if (bits &&
	    !atomic_fetch_or_explicit(&set[w], bits, memory_order_relaxed))
		atomic_fetch_or_explicit(&set[ls_set_words(npages) + w / 64],
					 1ull << (w % 64), memory_order_relaxed);
}

/* An empty set, its pages touched (ls_bitmap_new); NULL if out of memory. */
_Atomic uint64_t *ls_set_new(uint64_t npages);
/* The first word at or after w the summary marks, or ls_set_words(). */
uint64_t ls_set_next(const _Atomic uint64_t *set, uint64_t npages,
		     uint64_t w);
/* Sets pages [first, end) of a set, a word at a time. */
void ls_set_mark_range(_Atomic uint64_t *set, uint64_t npages, uint64_t first,
		       uint64_t end);
/* a |= b over npages pages (the fault service may be marking a). */
void ls_set_merge(_Atomic uint64_t *a, const _Atomic uint64_t *b,
		  uint64_t npages);
/* Records the write of pages [first, end) (or `page`) of a region. */
void ls_track_mark_range(struct ls_ctx *ctx, uint32_t region, uint64_t first,
			 uint64_t end);
void ls_track_mark(struct ls_ctx *ctx, uint32_t region, uint64_t page);
/* A write fault while only tracking: record, un-protect (wakes). */
void ls_track_fault(struct ls_ctx *ctx, int region, uint64_t addr);
/* Discard events (fault thread): the sets now (their count), and a
 * discard's marks in them. */
int ls_track_sets_now(struct ls_ctx *ctx, _Atomic uint64_t **sets);
void ls_track_discarded(struct ls_ctx *ctx, _Atomic uint64_t *const *sets,
			int nsets, uint64_t start, uint64_t end);
/* Drops the tracker (ctx->lock held): sets freed, fault service put. */
void ls_track_off(struct ls_ctx *ctx);
/* Frees the shmem/hugetlbfs page maps of the last tracked begin. */
void ls_track_free_held(struct ls_ctx *ctx);
/* Turns tracking on with the given (fresh) sets (ctx->lock held). */
int ls_track_on(struct ls_ctx *ctx, _Atomic uint64_t **sets);
/*
 * At a delta's begin (ctx->lock held, writers quiesced), before its pages
 * are taken: adds to the dirty sets the pages that changed without a write
 * fault (discards) since the last tracked begin, and makes now the new
 * reference. Anonymous regions only if `anon` (ls_track_unsettle() has
 * just looked at them the same way). scan[r], if not NULL, is region r's
 * bitmap to work in (anonymous). 0, or -errno with the message set.
 */
int ls_track_rescan(struct ls_ctx *ctx, bool anon, uint64_t *const *scan);
/* Protection off every region, and anyone blocked there woken (ctx->lock
 * held); the first failure is the context's error. */
int ls_track_lift(struct ls_ctx *ctx);
/*
 * ls_snapshot_prepare() (ctx->lock held): protects the shmem and hugetlbfs
 * regions now, the writers running, and sets ctx->track.prep; what is
 * written until begin is recorded in the dirty sets. 0 or -errno with the
 * message set (then nothing changed).
 */
int ls_track_prepare(struct ls_ctx *ctx);
/* Whether a full snapshot's prepare protects region r (track.c). */
bool ls_track_preparable(const struct ls_ctx *ctx, int r);
/*
 * Protects again the pages of region r in `set` (a few runs of them), or
 * the 2 MiB blocks (huge pages) that hold one (ctx->lock held); 0 or
 * -errno with the message set.
 */
int ls_track_protect_set(struct ls_ctx *ctx, int r,
			    const _Atomic uint64_t *set);
/* Undoes a prepare whose snapshot never armed (ctx->lock held). */
void ls_track_unprepare(struct ls_ctx *ctx);
/* Sets track.prep, and prep_blocks with it (ctx->lock held). */
void ls_track_prep_set(struct ls_ctx *ctx, enum ls_prep prep);
/*
 * In every begin, after its arm (ctx->lock held, writers quiesced): if
 * `prepared`, the anonymous ranges discarded since the last begin are
 * protected again; 0 or -errno with the message set. Starts the record
 * afresh either way.
 */
int ls_track_discards_reprotect(struct ls_ctx *ctx, bool prepared);
/*
 * A delta's prepare (ctx->lock held). Tracked by faults: the dirty sets
 * move to ctx->track.prep_sets, fresh ones record what is written from now
 * on (LS_PREP_DELTA); the caller then protects the pages of prep_sets
 * again. By the caller: the regions ls_track_preparable() names are
 * protected whole (LS_PREP_CALLER_DELTA; see track.c). Otherwise nothing
 * (the begin does it all). 0 or -errno with the message set (then nothing
 * changed).
 */
int ls_track_prepare_delta(struct ls_ctx *ctx);
/*
 * At a prepared delta's begin (ctx->lock held, writers quiesced), after
 * ls_track_rescan(): the sets come together again in ctx->track.dirty;
 * news[r] (the caller frees it) gets the set of what was written (or
 * discarded) since the prepare: what the begin must still protect in the
 * regions the prepare protected. Without `merge`, news[r] is only handed
 * back (the caller merges it).
 */
void ls_track_prepared_merge(struct ls_ctx *ctx, _Atomic uint64_t **news,
			     bool merge);
/*
 * LS_PREP_CALLER_DELTA's begin, before the look for holes: the caller's
 * late reports become the dirty sets (the look adds to them; the begin
 * makes their pages pending), news[r] gets what was written since the
 * prepare; then ls_track_prepared_merge() hands the late reports back
 * for the begin to join.
 */
void ls_track_late_swap(struct ls_ctx *ctx, _Atomic uint64_t **news);
/*
 * After a full snapshot's prepared arm (success or not): the sets of a
 * refined prepare come together again (`news` as above), its granule is
 * put back.
 */
void ls_track_refine_end(struct ls_ctx *ctx, _Atomic uint64_t **news);
/* Back from asynchronous tracking (ls_track_settle); ctx->lock held. */
int ls_track_unsettle(struct ls_ctx *ctx, bool protect);
/* Whether page `page` of a region is write-protected now (pagemap). */
bool ls_page_protected(struct ls_ctx *ctx, int region, uint64_t page);
/* At a tracked full begin or ls_track_start: notes the reference only. */
int ls_track_note(struct ls_ctx *ctx);
/*
 * Sets bit i of out (zeroed by the caller) for each page first + i of
 * [first, first + n) mapped in this process now (pagemap). 0 or -errno.
 */
int ls_pages_present(struct ls_ctx *ctx, int region, uint64_t first,
		     uint64_t n, uint64_t *out);


/* restore.c: called by the fault service for a missing fault. */
void ls_restore_fault(struct ls_restore *r, uint64_t addr);
void ls_restore_detach(struct ls_restore *r);
void ls_snapshot_detach(struct ls_snapshot *snap);

/* hist.c */
void ls_hist_add(_Atomic uint64_t *hist, _Atomic uint64_t *max,
		 uint64_t ns);
void ls_hist_read(_Atomic uint64_t *hist, uint64_t out[LS_HIST_BUCKETS]);
/* A percentile, never above the exact maximum (buckets are coarse). */
uint64_t ls_hist_pct_capped(const uint64_t hist[LS_HIST_BUCKETS], double q,
			    uint64_t max);

/*
 * Private working memory (copy buffer, bounce buffer), faulted in at once
 * with THP where possible: the first touch of fresh memory costs several
 * microseconds per 4 KiB page (far more on a VM whose host reclaimed it),
 * and that must not land in a fault stall. NULL if out of memory.
 */
void *ls_alloc_prefaulted(size_t len);
void ls_free_prefaulted(void *p, size_t len);
/*
 * A zeroed bitmap for npages pages, from calloc() (free() it), with its
 * memory faulted in: for the bitmaps a pause reads or writes.
 */
void *ls_bitmap_new(uint64_t npages);
/* ctx->lock held (ctx may be NULL: no cache) */
void *ls_buf_take(struct ls_ctx *ctx, size_t len);
void ls_buf_give(struct ls_ctx *ctx, void *p, size_t len);
void ls_bufs_free(struct ls_ctx *ctx);

/* Pages of 4 KiB or larger: fast test for an all-zero page. */
bool ls_page_is_zero(const void *page, size_t len);

/*
 * Reads of live region memory race, as far as ThreadSanitizer can see, with
 * the application's later writes: the ordering comes from the kernel (the
 * page stays write-protected until the read is done). Those reads are
 * bracketed with these so TSan builds stay quiet without hiding real races
 * elsewhere.
 */
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define LS_LIVE_READ_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define LS_LIVE_READ_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define LS_LIVE_READ_BEGIN() ((void)0)
#define LS_LIVE_READ_END() ((void)0)
#endif

static inline void ls_cpu_relax(void)
{
	__builtin_ia32_pause();
}

#endif /* LS_ENGINE_INTERNAL_H */
