/* SPDX-License-Identifier: MIT */
/*
 * The two sides that capture pages while the process runs: the writer
 * thread, which walks every region in batches, and the fault path, which
 * captures a page that is written before the writer got to it. See snap.h
 * for the page states that keep them from capturing a page twice.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "snap.h"

enum { BF_NONE, BF_ZERO, BF_DATA };

static inline uint8_t pg_load(const struct snap_region *sr, uint64_t page)
{
	return atomic_load_explicit(&sr->state[page], memory_order_acquire);
}

static inline void pg_store(struct snap_region *sr, uint64_t page, uint8_t s)
{
	atomic_store_explicit(&sr->state[page], s, memory_order_release);
}

static inline bool pg_claim(struct snap_region *sr, uint64_t page)
{
	uint8_t expect = PG_PENDING;

	return atomic_compare_exchange_strong_explicit(
		&sr->state[page], &expect, PG_CLAIMED, memory_order_acq_rel,
		memory_order_acquire);
}

/* Spins briefly, then yields: the other side holds a claim for a memcpy. */
static void backoff(unsigned *spins)
{
	if (++*spins < 64)
		ls_cpu_relax();
	else
		sched_yield();
}

/*
 * The writer has saved one more part of its batch: wake a fault thread
 * waiting for it.
 */
static void part_done(struct ls_snapshot *snap)
{
	atomic_fetch_add(&snap->part_seq, 1);
	if (atomic_load(&snap->part_waiters))
		syscall(SYS_futex, &snap->part_seq, FUTEX_WAKE_PRIVATE,
			INT_MAX, NULL, NULL, 0);
}

/*
 * The fault thread, on a page the writer has claimed: it is saved within
 * one part (SAVE_PART), tens of microseconds. Spin a little, then sleep
 * until the writer's next part (at most PART_WAIT_NS, then look again).
 * Not sched_yield(): a yield hands the CPU to the writer until the next
 * scheduler tick, up to 4 ms measured with a SCHED_IDLE writer, while the
 * part was done long before; a futex wake-up preempts the writer at once.
 * seq: part_seq read before the page's state was.
 */
#define PART_WAIT_NS 1000000l

static void wait_part(struct ls_snapshot *snap, uint32_t seq,
		      unsigned *spins)
{
	struct timespec ts = {.tv_nsec = PART_WAIT_NS};

	if (++*spins < 64) {
		ls_cpu_relax();
		return;
	}
	atomic_fetch_add(&snap->part_waiters, 1);
	/* returns at once (EAGAIN) if a part ended since seq was read */
	syscall(SYS_futex, &snap->part_seq, FUTEX_WAIT_PRIVATE, seq, &ts,
		NULL, 0);
	atomic_fetch_sub(&snap->part_waiters, 1);
}

/* ------------------------------------------------------------------ */
/* Writer thread                                                       */
/* ------------------------------------------------------------------ */

/*
 * A uffd-wp marker in /proc/self/pagemap: "swapped" (bit 62), write-protected
 * (bit 57), swap type 31 (the marker type, the last one) and marker bits 1
 * (PTE_MARKER_UFFD_WP). WP_UNPOPULATED leaves one where nothing was mapped at
 * begin, so the page was zero then. Anything else that is not present (real
 * swap, a migration entry) may hold data.
 */
#define PM_ENTRY_WP_MARKER ((1ull << 62) | (1ull << 57) | 0x3full)

/* Marks the pages of [a, b) that are only uffd-wp markers as zero. */
static void find_markers(struct ls_snapshot *snap, struct snap_region *sr,
			 uint64_t first, uint64_t a, uint64_t b, uint8_t *flags)
{
	uint64_t ent[512];

	while (a < b) {
		uint64_t n = b - a > 512 ? 512 : b - a;
		uint64_t vpn = (sr->base + (first + a) * sr->ps) / LS_SMALL_PAGE;
		ssize_t got = pread(snap->ctx->pagemap_fd, ent, n * 8,
				    (off_t)(vpn * 8));

		for (uint64_t i = 0; i < n; i++)
			flags[a + i] = got == (ssize_t)(n * 8) &&
						       ent[i] == PM_ENTRY_WP_MARKER
					       ? BF_ZERO
					       : BF_DATA;
		a += n;
	}
}

/*
 * Pages [first + i, ...) of a shmem region from page i on, the first not
 * resident in the file's page cache: a hole (zero) or data (swapped out)?
 * lseek(SEEK_DATA) from it says, and skips the whole hole. Returns the page
 * after what it marked. SEEK_HOLE is not used: it walks on to the end of
 * the data, the whole file when it is full, and this runs per batch and
 * per fault (that made a 4 GiB memfd snapshot 45 s long).
 */
static uint64_t seek_hole_run(struct snap_region *sr, uint64_t first,
			      uint64_t i, uint64_t n, uint8_t *flags)
{
	off_t at = (off_t)(sr->file_off + (first + i) * sr->ps);
	off_t data = lseek(sr->seek_fd, at, SEEK_DATA);
	uint64_t end;

	/* data at `at`, or unknown (read it) */
	if (data == at || (data < 0 && errno != ENXIO) ||
	    (data > at && (uint64_t)(data - at) < sr->ps)) {
		flags[i] = BF_DATA;
		return i + 1;
	}
	/* ENXIO: holes to the end of the file */
	end = data < 0 ? n : i + (uint64_t)(data - at) / sr->ps;
	end = end > n ? n : end;
	memset(flags + i, BF_ZERO, end - i);
	return end;
}

/*
 * Holes of a shmem file are zero, and reading one would allocate it. A
 * page in the page cache is data (mincore(), one call per 4096 pages,
 * bounded by the range: markers and unmapped pages are looked up in the
 * file); only the others ask the file (seek_hole_run). What neither can
 * tell is read.
 */
static void scan_holes(struct snap_region *sr, uint64_t first, uint64_t n,
		       uint8_t *flags)
{
	uint64_t per = sr->ps / LS_SMALL_PAGE;
	unsigned char vec[4096];

	for (uint64_t lo = 0; lo < n;) {
		uint64_t k = n - lo < 4096 / per ? n - lo : 4096 / per, i = 0;

		if (mincore((void *)(uintptr_t)(sr->base + (first + lo) * sr->ps),
			    k * sr->ps, vec)) {
			memset(flags + lo, BF_DATA, n - lo);
			return;
		}
		while (i < k) {
			if (vec[i * per] & 1) {
				flags[lo + i++] = BF_DATA;
				continue;
			}
			i = seek_hole_run(sr, first + lo, i, k, flags + lo);
		}
		lo += k;
	}
}

/*
 * Private anonymous pages that were never populated are zero: PAGEMAP_SCAN
 * finds them without touching them. flags[i] becomes BF_DATA for pages that
 * may hold data, BF_ZERO for known-zero ones.
 */
static void scan_populated(struct ls_snapshot *snap, struct snap_region *sr,
			   uint64_t first, uint64_t n, uint8_t *flags)
{
	struct page_region vec[64];
	struct pm_scan_arg arg = {0};
	uint64_t start = sr->base + first * sr->ps;
	uint64_t end = start + n * sr->ps;
	long got;

	if (sr->seek_fd >= 0) {
		scan_holes(sr, first, n, flags);
		return;
	}
	if (!sr->scan) {
		memset(flags, BF_DATA, n);
		return;
	}
	memset(flags, BF_ZERO, n);
	arg.size = sizeof(arg);
	arg.vec = (uint64_t)(uintptr_t)vec;
	arg.vec_len = 64;
	arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
	arg.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO;
	while (start < end) {
		arg.start = start;
		arg.end = end;
		got = ioctl(snap->ctx->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (got < 0) {
			memset(flags, BF_DATA, n); /* unknown: read them all */
			return;
		}
		for (long i = 0; i < got; i++) {
			uint64_t a = (vec[i].start - sr->base) / sr->ps - first;
			uint64_t b = (vec[i].end - sr->base) / sr->ps - first;
			uint64_t cat = vec[i].categories;

			if (!(cat & PAGE_IS_PRESENT))
				find_markers(snap, sr, first, a, b, flags);
			else if (!(cat & PAGE_IS_PFNZERO))
				memset(flags + a, BF_DATA, b - a);
		}
		if (arg.walk_end <= start)
			break;
		start = arg.walk_end;
	}
}

/*
 * Copies live region memory with process_vm_readv() on ourselves, not
 * memcpy: a range the application unmapped (or moved, or made PROT_NONE)
 * during the snapshot then reads short instead of killing the process.
 * Returns the bytes copied; *err gets -errno when short.
 */
static size_t read_live(struct ls_snapshot *snap, void *dst, uint64_t src,
			size_t len, int *err)
{
	size_t done = 0;
	ssize_t n;

	*err = 0;
	if (snap->no_vm_readv) {
		LS_LIVE_READ_BEGIN();
		memcpy(dst, (const void *)(uintptr_t)src, len);
		LS_LIVE_READ_END();
		return len;
	}
	while (done < len) {
		struct iovec l = {(char *)dst + done, len - done};
		struct iovec r = {(void *)(uintptr_t)(src + done), len - done};

		n = process_vm_readv(snap->pid, &l, 1, &r, 1, 0);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		*err = n < 0 ? -errno : -EFAULT;
		break;
	}
	return done;
}

/* Reads the runs of BF_DATA pages of a batch into the bounce buffer. */
/* Reads pages [i, n) of the batch at first (page i to bounce + i * ps). */
static void batch_read(struct ls_snapshot *snap, struct snap_region *sr,
		       uint64_t first, uint64_t i, uint64_t n,
		       const uint8_t *flags)
{
	uint64_t run;
	size_t got;
	int err;

	while (i < n && !atomic_load(&snap->stop)) {
		if (flags[i] != BF_DATA) {
			i++;
			continue;
		}
		for (run = 1; i + run < n && flags[i + run] == BF_DATA; run++)
			;
		got = read_live(snap, snap->bounce + i * sr->ps,
				sr->base + (first + i) * sr->ps, run * sr->ps,
				&err);
		if (err)
			snap_fail(snap, err,
				  "region '%s': +0x%llx cannot be read: %s (unmapped, moved or made inaccessible during the snapshot)",
				  snap->layout[sr->idx].name,
				  (unsigned long long)((first + i) * sr->ps + got),
				  strerror(-err));
		i += run;
	}
}

/* pagemap: the page is write-protected by userfaultfd (also as swap). */
#define PM_UFFD_WP (1ull << 57)

/*
 * Private anonymous memory keeps its uffd-wp bit until we lift it. A page
 * that lost it before its content was captured was discarded
 * (MADV_DONTNEED, MADV_FREE and reclaimed), unmapped or moved: what it held
 * at begin is gone, and the copy may be zeros. Called after the copy: a bit
 * still set then proves nothing happened to the page up to the copy.
 * flags (may be NULL: all): the pages to check, those not BF_NONE.
 */
static void check_protected(struct ls_snapshot *snap, struct snap_region *sr,
			    uint64_t first, uint64_t n, const uint8_t *flags)
{
	uint64_t ent[512];

	if (sr->type != LS_MEM_ANON || snap->ctx->pagemap_fd < 0)
		return;
	for (uint64_t a = 0; a < n; a += 512) {
		uint64_t k = n - a > 512 ? 512 : n - a;
		uint64_t vpn = (sr->base + (first + a) * sr->ps) / LS_SMALL_PAGE;

		if (pread(snap->ctx->pagemap_fd, ent, k * 8, (off_t)(vpn * 8)) !=
		    (ssize_t)(k * 8))
			return; /* cannot tell */
		for (uint64_t i = 0; i < k; i++) {
			if ((flags && flags[a + i] == BF_NONE) ||
			    (ent[i] & PM_UFFD_WP))
				continue;
			snap_fail(snap, -ESTALE,
				  "region '%s': page +0x%llx lost its write protection before it was saved: discarded (MADV_DONTNEED, MADV_FREE), unmapped or moved during the snapshot",
				  snap->layout[sr->idx].name,
				  (unsigned long long)((first + a + i) * sr->ps));
			return;
		}
	}
}

/*
 * A shared file's pages can leave this mapping (MADV_DONTNEED) and stay in
 * the file; its allocated blocks tell whether pages left the file too.
 * Always true for private memory.
 */
static bool file_lost_pages(const struct snap_region *sr)
{
	struct stat st;

	if (sr->file_fd < 0 || sr->blocks0 < 0)
		return true;
	return fstat(sr->file_fd, &st) || (int64_t)st.st_blocks < sr->blocks0;
}

/*
 * Hugetlb keeps the write-protect marker where a page is discarded
 * (MADV_DONTNEED, MADV_REMOVE, a hole punched in its file), and a read
 * there maps a fresh zero page: so before pages [first, first + n) are
 * read, each one mapped at begin must still be mapped. False (the snapshot
 * failed) if one is not. With flags (the writer's batch, not a delta),
 * private anonymous pages not mapped at begin become BF_ZERO: they were
 * zero, and reading them would allocate huge pages. A discard and a read
 * by another thread between this check and the copy stay unseen.
 */
static bool check_mapped(struct ls_snapshot *snap, struct snap_region *sr,
			 uint64_t first, uint64_t n, uint8_t *flags)
{
	uint64_t words = (n + 63) / 64, stack[8], *now = stack;
	bool ok = true;
	int ret;

	if (words > 8 && !(now = calloc(words, 8))) {
		snap_fail(snap, -ENOMEM, "out of memory");
		return false;
	}
	memset(now, 0, words * 8);
	ret = ls_pages_present(snap->ctx, (int)sr->idx, first, n, now);
	if (ret) {
		snap_fail(snap, ret, "region '%s': reading /proc/self/pagemap: %s",
			  snap->layout[sr->idx].name, strerror(-ret));
		ok = false;
	}
	for (uint64_t i = 0; ok && i < n; i++) {
		bool held = ls_bit_test(sr->held, first + i), mapped = ls_bit_test(now, i);

		if (flags && flags[i] == BF_NONE)
			continue;
		if (held && !mapped && !file_lost_pages(sr))
			continue; /* shared: unmapped here, still in the file */
		if (held && !mapped) {
			snap_fail(snap, -ESTALE,
				  "region '%s': page +0x%llx was discarded during the snapshot before it was saved (MADV_DONTNEED, MADV_REMOVE or a hole punched in its hugetlbfs file): what it held at begin is gone",
				  snap->layout[sr->idx].name,
				  (unsigned long long)((first + i) * sr->ps));
			ok = false;
		} else if (!held && flags && sr->zero_unheld && !snap->delta) {
			flags[i] = BF_ZERO;
		}
	}
	if (now != stack)
		free(now);
	return ok;
}

/*
 * Shmem keeps the marker where a hole is punched (fallocate, MADV_REMOVE)
 * and a hole reads zero: a page that held data at begin and is a hole now
 * lost what it held. The writer's batch just found its holes (BF_ZERO, by
 * scan_holes(); not in a delta); otherwise one walk of the file asks.
 */
static bool check_not_punched(struct ls_snapshot *snap, struct snap_region *sr,
			      uint64_t first, uint64_t n, const uint8_t *flags)
{
	uint8_t holes[512];

	for (uint64_t lo = 0; lo < n; lo += sizeof(holes)) {
		uint64_t k = n - lo < sizeof(holes) ? n - lo : sizeof(holes);
		const uint8_t *now = flags && !snap->delta ? flags + lo : holes;

		if (now == holes)
			scan_holes(sr, first + lo, k, holes);
		for (uint64_t i = 0; i < k; i++) {
			uint64_t p = first + lo + i;

			if (!ls_bit_test(sr->held, p) ||
			    (flags && flags[lo + i] == BF_NONE) ||
			    now[i] != BF_ZERO)
				continue;
			snap_fail(snap, -ESTALE,
				  "region '%s': page +0x%llx was discarded during the snapshot before it was saved (hole punched with fallocate(PUNCH_HOLE) or MADV_REMOVE): what it held at begin is gone",
				  snap->layout[sr->idx].name,
				  (unsigned long long)(p * sr->ps));
			return false;
		}
	}
	return true;
}

/* Pages that held data at begin still do (see the two checks above). */
static bool check_held(struct ls_snapshot *snap, struct snap_region *sr,
		       uint64_t first, uint64_t n, uint8_t *flags)
{
	if (sr->seek_fd >= 0)
		return check_not_punched(snap, sr, first, n, flags);
	return check_mapped(snap, sr, first, n, flags);
}

/* The writer marks its batch SAVED in parts of this size (see below). */
#define SAVE_PART (256ul << 10)

/*
 * Captures the batch's pending pages into the bounce buffer (or finds them
 * zero). Returns how many it claimed; flags[i] says what it did.
 */
static uint64_t batch_capture(struct ls_snapshot *snap, struct snap_region *sr,
			      uint64_t first, uint64_t n, uint8_t *flags)
{
	uint64_t claimed = 0;

	/* A delta's pages were written: data, even if zero now. */
	if (snap->delta)
		memset(flags, BF_DATA, n);
	else
		scan_populated(snap, sr, first, n, flags);
	/*
	 * In parts of SAVE_PART bytes, each claimed, read, checked and SAVED
	 * in turn: a fault on a page of a later part finds it still pending
	 * and captures it itself, one on the current part waits for that
	 * part only (the fault path releases a SAVED page itself).
	 */
	for (uint64_t lo = 0, per = SAVE_PART > sr->ps ? SAVE_PART / sr->ps : 1;
	     lo < n; lo += per) {
		uint64_t hi = lo + per < n ? lo + per : n, part = 0;

		for (uint64_t i = lo; i < hi; i++) {
			uint8_t maybe = flags[i];

			flags[i] = BF_NONE;
			if (!pg_claim(sr, first + i))
				continue;
			part++;
			flags[i] = maybe == BF_ZERO ? BF_ZERO : BF_DATA;
		}
		if (!part)
			continue;
		claimed += part;
		if (sr->held)
			check_held(snap, sr, first + lo, hi - lo, flags + lo);
		batch_read(snap, sr, first, lo, hi, flags);
		check_protected(snap, sr, first + lo, hi - lo, flags + lo);
		for (uint64_t i = lo; !snap->delta && i < hi; i++)
			if (flags[i] == BF_DATA &&
			    ls_page_is_zero(snap->bounce + i * sr->ps, sr->ps))
				flags[i] = BF_ZERO;
		for (uint64_t i = lo; i < hi; i++)
			if (flags[i] != BF_NONE)
				pg_store(sr, first + i, PG_SAVED);
		part_done(snap);
	}
	return claimed;
}

/* Hands runs of data pages from buf (page i at i * ps) to the sink. */
static void batch_write(struct ls_snapshot *snap, struct snap_region *sr,
			uint64_t first, uint64_t n, const uint8_t *flags,
			const unsigned char *buf)
{
	struct ls_sink *sink = snap->sink;
	uint64_t i = 0, run, data = 0, zero = 0;
	int ret;

	while (i < n) {
		if (flags[i] != BF_DATA) {
			zero += flags[i] == BF_ZERO;
			i++;
			continue;
		}
		for (run = 1; i + run < n && flags[i + run] == BF_DATA; run++)
			;
		if (!atomic_load(&snap->stop)) {
			ret = sink->ops->write_pages(sink, sr->idx, first + i,
						     buf + i * sr->ps, run);
			if (ret)
				snap_fail_sink(snap, ret, "write_pages");
		}
		data += run;
		i += run;
	}
	atomic_fetch_add(&snap->pages_zero, zero);
	atomic_fetch_add(&snap->pages_written, data);
	atomic_fetch_add(&snap->bytes_written, data * sr->ps);
	atomic_fetch_add(&snap->pages_done, data + zero);
}

/*
 * A page of a batch that is there for sure: data, or released by the fault
 * path (written). The batch's one ioctl made those read-only again.
 */
static bool batch_page_there(const struct snap_region *sr, uint64_t page,
			     uint8_t flag)
{
	return flag == BF_DATA ||
	       (flag == BF_NONE && pg_load(sr, page) != PG_CLEAN);
}

/* Makes the batch's pages that are there (not holes) writable. */
static void prefault_batch(const struct snap_region *sr, uint64_t first,
			   uint64_t n, const uint8_t *flags)
{
	for (uint64_t i = 0, run; i < n; i += run) {
		for (run = 0; i + run < n &&
			      batch_page_there(sr, first + i + run,
					       flags[i + run]);
		     run++)
			;
		if (run)
			ls_prefault_write(sr->base + (first + i) * sr->ps,
					  run * sr->ps);
		else
			run = 1;
	}
}

/*
 * One batch: capture what is still pending, wait for pages the fault thread
 * is capturing, un-protect the whole batch with one ioctl (it wakes any
 * writer blocked in it), then write the captured pages out.
 */
static void save_batch(struct ls_snapshot *snap, struct snap_region *sr,
		       uint64_t first, uint64_t n)
{
	uint8_t *flags = snap->batch_flags;
	unsigned spins = 0;
	int ret;

	batch_capture(snap, sr, first, n, flags);
	if (snap->track_faults) {
		/* Stays protected: its next write is recorded, then released. */
		batch_write(snap, sr, first, n, flags, snap->bounce);
		return;
	}
	for (uint64_t i = 0; i < n; i++)
		while (pg_load(sr, first + i) == PG_CLAIMED)
			backoff(&spins);
	ret = ls_uffd_wp(snap->ctx->uffd, sr->base + first * sr->ps,
			 n * sr->ps, false);
	if (ret)
		snap_fail(snap, ret,
			  "ioctl(UFFDIO_WRITEPROTECT) releasing region '%s' at +0x%llx: %s",
			  snap->layout[sr->idx].name,
			  (unsigned long long)(first * sr->ps), strerror(-ret));
	for (uint64_t i = 0; i < n; i++)
		pg_store(sr, first + i, PG_RELEASED);
	if (ls_uffd_keeps_readonly(sr->type))
		prefault_batch(sr, first, n, flags);
	batch_write(snap, sr, first, n, flags, snap->bounce);
}

/*
 * Writes out every page the fault thread has copied aside; true if any.
 * Consecutive pages (a captured huge page) go to the sink in runs.
 */
static bool drain_ring(struct ls_snapshot *snap)
{
	struct ls_sink *sink = snap->sink;
	uint32_t count, i, run;
	struct ring_ent *e;
	bool any = false;
	int64_t slot;
	int ret;

	while ((slot = ring_peek(&snap->ring, &count)) >= 0) {
		const unsigned char *data = ring_slot_data(&snap->ring, slot);
		size_t len;

		e = &snap->ring.ent[slot];
		len = (size_t)e->nslots * LS_SMALL_PAGE;
		for (i = 0; i < count && !atomic_load(&snap->stop); i += run) {
			if (!snap->delta && ls_page_is_zero(data + i * len, len)) {
				atomic_fetch_add(&snap->pages_zero, 1);
				run = 1;
				continue;
			}
			for (run = 1; i + run < count &&
				      (snap->delta ||
				       !ls_page_is_zero(data + (i + run) * len, len));
			     run++)
				;
			ret = sink->ops->write_pages(sink, e->region,
						     e->page + i, data + i * len,
						     run);
			if (ret)
				snap_fail_sink(snap, ret, "write_pages");
			atomic_fetch_add(&snap->pages_written, run);
			atomic_fetch_add(&snap->bytes_written, run * len);
		}
		atomic_fetch_add(&snap->pages_copied, count);
		atomic_fetch_add(&snap->pages_done, count);
		ring_release(&snap->ring, slot, count);
		any = true;
	}
	return any;
}

/* The batch that holds `page`, ending at a batch-aligned address. */
static uint64_t batch_pages(const struct snap_region *sr, uint64_t page)
{
	uint64_t addr = sr->base + page * sr->ps;
	uint64_t end = (addr / sr->batch + 1) * sr->batch;

	if (end > sr->base + sr->len)
		end = sr->base + sr->len;
	return (end - addr) / sr->ps;
}

/* A delta: does the batch hold any of its pages? */
static bool batch_in_delta(const struct snap_region *sr, uint64_t first,
			   uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		if (p % 64 == 0 && first + n - p >= 64) {
			if (atomic_load_explicit(&sr->prev[p / 64],
						 memory_order_relaxed))
				return true;
			p += 63;
		} else if (atomic_load_explicit(&sr->prev[p / 64],
						memory_order_relaxed) &
			   (1ull << (p % 64))) {
			return true;
		}
	}
	return false;
}

/* Waits for the fault thread's last pages (copy buffer, write-first). */
static void wait_for_stragglers(struct ls_snapshot *snap)
{
	struct timespec ts;

	while (!atomic_load(&snap->stop) &&
	       atomic_load(&snap->pages_done) < snap->pages_total) {
		atomic_fetch_add_explicit(&snap->writer_beats, 1,
					  memory_order_relaxed);
		if (drain_ring(snap))
			continue;
		pthread_mutex_lock(&snap->lock);
		atomic_store(&snap->writer_waiting, true);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&snap->cond, &snap->lock, &ts);
		atomic_store(&snap->writer_waiting, false);
		pthread_mutex_unlock(&snap->lock);
	}
}


/*
 * writer_idle's guarantee. A SCHED_IDLE writer runs only when nothing
 * else wants its CPUs: where the caller's threads are confined to the
 * CPU the writer has (a VMM pinned to one CPU, a busy vCPU), it would
 * never run and the snapshot never end. The fault thread checks the
 * writer's beats each time round its loop and, while such a snapshot's
 * writer lives, blocks at most LS_WRITER_GUARD_MS (the return value:
 * poll()'s bound, -1 for none); silent for LS_WRITER_STARVED_NS once the
 * snapshot is armed, the writer goes back to SCHED_OTHER for the rest of
 * the snapshot.
 */
#define LS_WRITER_STARVED_NS (100 * 1000000ull)

int ls_snap_writer_guard(struct ls_ctx *ctx)
{
	struct sched_param sp = {.sched_priority = 0};
	struct ls_snapshot *snap;
	uint64_t beats, now;
	int bound = -1;

	atomic_fetch_add(&ctx->svc.inflight, 1); /* snap_disarm waits */
	snap = atomic_load(&ctx->armed);
	if (snap && atomic_load(&snap->writer_is_idle)) {
		beats = atomic_load_explicit(&snap->writer_beats,
					     memory_order_relaxed);
		now = ls_now_ns();
		if (beats != snap->guard_beats) {
			snap->guard_beats = beats;
			snap->guard_ns = now;
		} else if (now - snap->guard_ns >= LS_WRITER_STARVED_NS &&
			   !pthread_setschedparam(snap->writer, SCHED_OTHER,
						  &sp)) {
			atomic_store(&snap->writer_is_idle, false);
		}
	}
	atomic_fetch_sub(&ctx->svc.inflight, 1);
	if (atomic_load(&ctx->svc.guard_users) > 0)
		bound = LS_WRITER_GUARD_MS;
	return bound;
}

void *snap_writer_main(void *arg)
{
	struct ls_snapshot *snap = arg;

	for (uint32_t r = 0; r < snap->nregions; r++) {
		struct snap_region *sr = &snap->regions[r];
		uint64_t page = 0, n;

		while (page < sr->npages && !atomic_load(&snap->stop)) {
			atomic_fetch_add_explicit(&snap->writer_beats, 1,
						  memory_order_relaxed);
			drain_ring(snap);
			n = batch_pages(sr, page);
			if (!snap->delta || batch_in_delta(sr, page, n))
				save_batch(snap, sr, page, n);
			page += n;
		}
	}
	wait_for_stragglers(snap);
	snap_finish(snap);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Fault path (runs on the context's fault thread)                     */
/* ------------------------------------------------------------------ */

static void fault_release(struct ls_snapshot *snap, struct snap_region *sr,
			  uint64_t page)
{
	const char *what;
	int ret;

	if (pg_load(sr, page) == PG_CLAIMED)
		pg_store(sr, page, PG_SAVED);
	if (snap->track_faults)
		ls_track_mark(snap->ctx, sr->idx, page);
	ls_note_split(snap->ctx, sr->idx, page * sr->ps);
	ret = ls_uffd_release(snap->ctx->uffd, sr->base + page * sr->ps,
			      sr->ps, ls_uffd_keeps_readonly(sr->type), &what);
	if (ret && snap->track_faults)
		atomic_store(&snap->ctx->track.broken, true);
	if (ret)
		snap_fail(snap, ret,
			  "ioctl(%s) releasing a faulting page of region '%s': %s",
			  what, snap->layout[sr->idx].name, strerror(-ret));
	pg_store(sr, page, PG_RELEASED);
}

/* Copy strategy: the page goes to the copy buffer; false if it is full. */
static bool fault_copy(struct ls_snapshot *snap, struct snap_region *sr,
		       uint64_t page)
{
	int64_t slot;

	slot = ring_reserve(&snap->ring, sr->idx, page,
			    (uint32_t)(sr->ps / LS_SMALL_PAGE));
	if (slot < 0)
		return false;
	LS_LIVE_READ_BEGIN();
	memcpy(ring_slot_data(&snap->ring, slot),
	       (const void *)(uintptr_t)(sr->base + page * sr->ps), sr->ps);
	LS_LIVE_READ_END();
	check_protected(snap, sr, page, 1, NULL);
	ring_publish(&snap->ring, slot);
	fault_release(snap, sr, page);
	snap_wake_writer(snap);
	return true;
}

/* Write-first: the page goes to the sink before the writer is released. */
static void fault_write_first(struct ls_snapshot *snap,
			      struct snap_region *sr, uint64_t page)
{
	struct ls_sink *sink = snap->sink;
	int ret;

	atomic_fetch_add(&snap->faults_write_first, 1);
	LS_LIVE_READ_BEGIN();
	memcpy(snap->fpage, (const void *)(uintptr_t)(sr->base + page * sr->ps),
	       sr->ps);
	LS_LIVE_READ_END();
	check_protected(snap, sr, page, 1, NULL);
	if (!snap->delta && ls_page_is_zero(snap->fpage, sr->ps)) {
		atomic_fetch_add(&snap->pages_zero, 1);
	} else {
		ret = sink->ops->write_pages(sink, sr->idx, page, snap->fpage,
					     1);
		if (ret)
			snap_fail_sink(snap, ret, "write_pages");
		atomic_fetch_add(&snap->pages_written, 1);
		atomic_fetch_add(&snap->bytes_written, sr->ps);
	}
	fault_release(snap, sr, page);
	atomic_fetch_add(&snap->pages_done, 1);
	snap_wake_writer(snap);
}

#define THP_PAGES (LS_HUGE_2M / LS_SMALL_PAGE)

/* Is the 4 KiB page at addr mapped by a huge PMD right now? */
static bool mapped_huge(struct ls_snapshot *snap, uint64_t addr)
{
	struct page_region vec[1];
	struct pm_scan_arg arg = {0};

	arg.size = sizeof(arg);
	arg.start = addr;
	arg.end = addr + LS_SMALL_PAGE;
	arg.vec = (uint64_t)(uintptr_t)vec;
	arg.vec_len = 1;
	arg.category_mask = PAGE_IS_HUGE;
	arg.return_mask = PAGE_IS_HUGE;
	return ioctl(snap->ctx->pagemap_fd, PAGEMAP_SCAN, &arg) == 1;
}

/*
 * Captures one pending page of a huge page: into the copy buffer, or
 * (buffer full) into the fault thread's huge-page buffer for write-first.
 */
static void thp_capture_page(struct ls_snapshot *snap, struct snap_region *sr,
			     uint64_t p, uint64_t i, bool to_ring)
{
	const void *src = (const void *)(uintptr_t)(sr->base + p * sr->ps);
	int64_t slot;

	if (to_ring) {
		slot = ring_reserve(&snap->ring, sr->idx, p, 1);
		memcpy(ring_slot_data(&snap->ring, slot), src, sr->ps);
		ring_publish(&snap->ring, slot);
	} else if (ls_page_is_zero(src, sr->ps)) {
		snap->thp_flags[i] = BF_ZERO;
	} else {
		memcpy(snap->thp_buf + i * sr->ps, src, sr->ps);
		snap->thp_flags[i] = BF_DATA;
	}
}

/*
 * keep_thp: captures every pending page of the faulting page's 2 MiB huge
 * page and releases the huge page with one un-protect, so it stays one PMD.
 * The pages go to the copy buffer when it has room for all of them, else
 * to the sink before the release (write-first). False (nothing done) where
 * that does not apply.
 */
static bool fault_capture_thp(struct ls_snapshot *snap, struct snap_region *sr,
			      uint64_t page)
{
	uint64_t first = page & ~(THP_PAGES - 1), addr;
	unsigned spins = 0;
	bool to_ring;
	int ret;

	addr = sr->base + first * sr->ps;
	if (!snap->keep_thp || sr->type != LS_MEM_ANON ||
	    sr->ps != LS_SMALL_PAGE || addr % LS_HUGE_2M ||
	    first + THP_PAGES > sr->npages || snap->ctx->pagemap_fd < 0 ||
	    !mapped_huge(snap, sr->base + page * sr->ps))
		return false;
	/* Only this thread reserves: the room seen here stays. */
	to_ring = ring_free_slots(&snap->ring) >= THP_PAGES;
	LS_LIVE_READ_BEGIN();
	for (uint64_t i = 0; i < THP_PAGES; i++) {
		snap->thp_flags[i] = BF_NONE;
		if (!pg_claim(sr, first + i))
			continue;
		thp_capture_page(snap, sr, first + i, i, to_ring);
		if (to_ring)
			snap->thp_flags[i] = BF_DATA; /* claimed here */
	}
	LS_LIVE_READ_END();
	check_protected(snap, sr, first, THP_PAGES, snap->thp_flags);
	for (uint64_t i = 0; i < THP_PAGES; i++)
		if (snap->thp_flags[i] != BF_NONE)
			pg_store(sr, first + i, PG_SAVED);
	if (!to_ring) {
		atomic_fetch_add(&snap->faults_write_first, 1);
		batch_write(snap, sr, first, THP_PAGES, snap->thp_flags,
			    snap->thp_buf);
	}
	/* The writer may hold claims in this huge page: its memcpy. */
	for (uint64_t p = first; p < first + THP_PAGES; p++)
		while (pg_load(sr, p) == PG_CLAIMED)
			backoff(&spins);
	ret = ls_uffd_wp(snap->ctx->uffd, addr, LS_HUGE_2M, false);
	if (ret)
		snap_fail(snap, ret,
			  "ioctl(UFFDIO_WRITEPROTECT) releasing a huge page of region '%s': %s",
			  snap->layout[sr->idx].name, strerror(-ret));
	for (uint64_t p = first; p < first + THP_PAGES; p++)
		pg_store(sr, p, PG_RELEASED);
	snap_wake_writer(snap);
	return true;
}

/*
 * A tracked snapshot: a pending page is captured as usual; any other page
 * (captured by the writer and left protected, or not in this delta) was
 * not written since begin: record the write and release it. Even after a
 * failure nothing is left to a final lift: tracking goes on.
 */
static bool pg_busy(const struct snap_region *sr, uint64_t page)
{
	uint8_t st = pg_load(sr, page);

	return st == PG_PENDING || st == PG_CLAIMED;
}

/*
 * track_granule: a write to a page that needs no capture releases (and
 * records) every page of its block that needs none either, in runs; pages
 * still to be captured stay protected. States never go back to PENDING,
 * so a page seen captured or clean here stays releasable.
 */
static void fault_release_block(struct ls_snapshot *snap,
				struct snap_region *sr, uint64_t page)
{
	uint64_t per = snap->granule / sr->ps;
	uint64_t first = page - page % per, end = first + per, run;
	int ret;

	if (end > sr->npages)
		end = sr->npages;
	for (uint64_t p = first; p < end; p = run) {
		if (pg_busy(sr, p)) {
			run = p + 1;
			continue;
		}
		for (run = p + 1; run < end && !pg_busy(sr, run); run++)
			;
		ls_track_mark_range(snap->ctx, sr->idx, p, run);
		ret = ls_uffd_wp(snap->ctx->uffd, sr->base + p * sr->ps,
				 (run - p) * sr->ps, false);
		if (ret) {
			atomic_store(&snap->ctx->track.broken, true);
			snap_fail(snap, ret,
				  "ioctl(UFFDIO_WRITEPROTECT) releasing a block of region '%s': %s",
				  snap->layout[sr->idx].name, strerror(-ret));
			ls_uffd_wake(snap->ctx->uffd, sr->base + page * sr->ps,
				     sr->ps);
		}
		for (uint64_t q = p; q < run; q++)
			pg_store(sr, q, PG_RELEASED);
	}
}

static void fault_tracked(struct ls_snapshot *snap, struct snap_region *sr,
			  uint64_t page)
{
	unsigned spins = 0;

	for (;;) {
		uint32_t seq = atomic_load(&snap->part_seq);
		uint8_t st = pg_load(sr, page);

		if (st == PG_CLAIMED) {
			/* the writer's part */
			wait_part(snap, seq, &spins);
			continue;
		}
		if (st != PG_PENDING) {
			if (snap->granule > sr->ps)
				fault_release_block(snap, sr, page);
			else
				fault_release(snap, sr, page);
			return;
		}
		if (!pg_claim(sr, page))
			continue;
		if (atomic_load(&snap->stop))
			fault_release(snap, sr, page);
		else if (snap->strategy == LS_STRATEGY_WRITE_FIRST ||
			 !fault_copy(snap, sr, page))
			fault_write_first(snap, sr, page);
		return;
	}
}

void ls_snap_wp_fault(struct ls_snapshot *snap, int region, uint64_t addr,
		      uint64_t t_read)
{
	struct snap_region *sr = &snap->regions[region];
	uint64_t page = (addr - sr->base) / sr->ps;
	unsigned spins = 0;

	atomic_fetch_add_explicit(&snap->faults, 1, memory_order_relaxed);
	if (snap->track_faults) {
		fault_tracked(snap, sr, page);
		goto out;
	}
	for (;;) {
		uint32_t seq = atomic_load(&snap->part_seq);
		uint8_t st = pg_load(sr, page);

		if (st == PG_PENDING) {
			if (!atomic_load(&snap->stop) &&
			    fault_capture_thp(snap, sr, page))
				break;
			if (!pg_claim(sr, page))
				continue;
			if (atomic_load(&snap->stop) ||
			    (sr->held && !check_held(snap, sr, page, 1, NULL))) {
				/* Over: the final lift releases everyone. */
				fault_release(snap, sr, page);
				break;
			}
			if (snap->strategy == LS_STRATEGY_WRITE_FIRST ||
			    !fault_copy(snap, sr, page))
				fault_write_first(snap, sr, page);
			break;
		}
		if (st == PG_CLEAN) {
			/* Not in this delta (protected by tracking, or in a
			 * chunk the arm protected): nothing to save. */
			fault_release(snap, sr, page);
			break;
		}
		if (st == PG_RELEASED) {
			/* The writer's batch un-protect woke it already. */
			ls_uffd_wake(snap->ctx->uffd, sr->base + page * sr->ps,
				     sr->ps);
			break;
		}
		if (st == PG_SAVED && !snap->keep_thp &&
		    !atomic_load(&snap->stop)) {
			/*
			 * The writer has its content (checked) but releases
			 * the batch only after its last part: release this
			 * page now (the batch's un-protect then finds it
			 * done). Not with keep_thp: that would split the
			 * huge page.
			 */
			fault_release(snap, sr, page);
			break;
		}
		/* CLAIMED by the writer: saved within one part. */
		if (atomic_load(&snap->stop))
			return;
		wait_part(snap, seq, &spins);
	}
out:
	ls_hist_add(snap->hist, &snap->stall_max, ls_now_ns() - t_read);
}
