/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd ioctl wrappers and the fault service: the thread that reads
 * the context's descriptor and hands each fault to whoever owns it.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/*
 * The context whose fault thread this is (NULL on any other thread): set
 * by svc_main, read by the wait for a discard event.
 */
static __thread struct ls_ctx *svc_self;

static void svc_read_nested(struct ls_ctx *ctx);

/*
 * COPY, ZEROPAGE and WRITEPROTECT fail with EAGAIN while the address space
 * changes: a discard event (UFFD_FEATURE_EVENT_REMOVE) not read yet, among
 * others. Only the fault thread reads events, so there it reads what is
 * queued (faults wait in its backlog); anywhere else it lets the fault
 * thread run.
 */
void ls_uffd_eagain(void)
{
	if (svc_self)
		svc_read_nested(svc_self);
	else
		sched_yield();
}

static int wp_ioctl(int uffd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = start, .len = len},
		.mode = mode,
	};

	while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		if (errno == EAGAIN)
			ls_uffd_eagain();
		else if (errno != EINTR)
			return -errno;
	}
	return 0;
}

int ls_uffd_wp(int uffd, uint64_t start, uint64_t len, bool protect)
{
	return wp_ioctl(uffd, start, len,
			protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0);
}

/*
 * Un-protecting leaves the entries of shmem and hugetlb mappings read-only,
 * dirty or not (anonymous ones get their write bit back): measured on
 * 6.18, every 4 KiB page of 64 MiB of written memfd memory, protected and
 * un-protected, took a minor fault on its next write, 14-17 us each in
 * this project's PVM guests (a VM's guest time lost after its snapshot:
 * 6 360 such faults in 0.4 s), and each huge page of hugetlbfs one.
 * MADV_POPULATE_WRITE takes those faults in the kernel from the calling
 * thread, ~0.2 us a page: the snapshot's thread pays them, not the
 * application's next write. Only for pages known to be there: on a hole
 * it would allocate one, and on a hole of a region restored lazily it
 * would wait for the caller's own missing fault. A failure only costs the
 * faults it saves.
 */
bool ls_uffd_keeps_readonly(enum ls_mem_type type)
{
	return type != LS_MEM_ANON;
}

void ls_prefault_write(uint64_t start, uint64_t len)
{
	(void)madvise((void *)(uintptr_t)start, len, MADV_POPULATE_WRITE);
}

/*
 * Takes write protection off [start, start + len) and wakes whoever waits
 * there; with prefault (a page that is there), writable before it wakes.
 * *what (what may be NULL) names the ioctl that failed.
 */
int ls_uffd_release(int uffd, uint64_t start, uint64_t len, bool prefault,
		    const char **what)
{
	const char *ignored;
	int ret;

	if (!what)
		what = &ignored;
	*what = "UFFDIO_WRITEPROTECT";
	if (!prefault)
		return ls_uffd_wp(uffd, start, len, false);
	ret = wp_ioctl(uffd, start, len, UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
	if (ret)
		return ret;
	ls_prefault_write(start, len);
	*what = "UFFDIO_WAKE";
	return ls_uffd_wake(uffd, start, len);
}

int ls_uffd_wake(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range range = {.start = start, .len = len};

	return ioctl(uffd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

/*
 * Takes write protection off [start, start + len) and wakes whoever is
 * blocked there. Where the one ioctl fails (ENOMEM splitting page tables),
 * it goes on by 2 MiB (or huge page), and where that fails page by page
 * (ps), so that all that can be lifted is: the first error is returned.
 * Every lift (a snapshot's end or failure, tracking stopped or handed to
 * the caller) goes through here: nothing must stay protected by mistake.
 */
int ls_uffd_lift(int uffd, uint64_t start, uint64_t len, uint64_t ps)
{
	uint64_t step = ps > LS_HUGE_2M ? ps : LS_HUGE_2M;
	int ret = ls_uffd_wp(uffd, start, len, false);

	for (uint64_t off = 0; ret && off < len; off += step) {
		uint64_t n = len - off < step ? len - off : step;

		if (!ls_uffd_wp(uffd, start + off, n, false))
			continue;
		for (uint64_t p = off; p < off + n; p += ps)
			(void)ls_uffd_wp(uffd, start + p, ps, false);
	}
	(void)ls_uffd_wake(uffd, start, len);
	return ret;
}

int ls_uffd_register(int uffd, uint64_t start, uint64_t len, uint64_t mode,
		     uint64_t *ioctls)
{
	struct uffdio_register reg = {
		.range = {.start = start, .len = len},
		.mode = mode,
	};

	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (ioctls)
		*ioctls = reg.ioctls;
	return 0;
}

int ls_uffd_unregister(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range range = {.start = start, .len = len};

	return ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

int ls_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
		 uint64_t *done)
{
	struct uffdio_copy copy = {
		.dst = dst,
		.src = (uint64_t)(uintptr_t)src,
		.len = len,
	};
	int err;

	*done = 0;
	if (ioctl(uffd, UFFDIO_COPY, &copy) == 0) {
		*done = len;
		return 0;
	}
	err = errno;
	/* A partial copy reports -EAGAIN and the bytes done in .copy. */
	if (copy.copy > 0)
		*done = (uint64_t)copy.copy;
	else if (err == EAGAIN)
		ls_uffd_eagain(); /* nothing done: the caller tries again */
	return -err;
}

int ls_uffd_zeropage(int uffd, uint64_t dst, uint64_t len)
{
	struct uffdio_zeropage zp = {.range = {.start = dst, .len = len}};

	while (ioctl(uffd, UFFDIO_ZEROPAGE, &zp) < 0) {
		if (errno != EAGAIN)
			return -errno;
		ls_uffd_eagain();
	}
	return 0;
}

int ls_region_find(const struct ls_ctx *ctx, uint64_t addr)
{
	for (int i = 0; i < ctx->nregions; i++) {
		uint64_t base = (uint64_t)(uintptr_t)ctx->regions[i].info.addr;

		if (addr >= base && addr - base < ctx->regions[i].info.len)
			return i;
	}
	return -1;
}

/*
 * A write fault in region idx that neither a snapshot nor tracking owns.
 * Mostly one read just before its owner let go, and released since: a
 * wake is all it needs. Still protected, it is protection left behind by
 * mistake, and a wake alone would only fault again, for ever: lifted,
 * with its whole 2 MiB block (a 4 KiB lift would split a huge page).
 */
static void lift_stray(struct ls_ctx *ctx, int idx, uint64_t addr)
{
	const struct ls_region_info *info = &ctx->regions[idx].info;
	uint64_t base = (uint64_t)(uintptr_t)info->addr, ps = info->page_size;
	uint64_t start = addr & ~(LS_HUGE_2M - 1), end = start + LS_HUGE_2M;

	if (!ls_page_protected(ctx, idx, (addr - base) / ps)) {
		ls_uffd_wake(ctx->uffd, addr & ~(ps - 1), ps);
		return;
	}
	start = start > base ? start : base;
	end = end < base + info->len ? end : base + info->len;
	if (ls_uffd_wp(ctx->uffd, start, end - start, false))
		ls_uffd_wake(ctx->uffd, addr & ~(ps - 1), ps);
}

/*
 * Hands one fault to its owner; a fault nobody owns is just woken (a write
 * fault still protected is lifted: lift_stray()). The
 * region is looked up under regions_rw: the fault thread runs while
 * regions are added and removed (a stray fault on a page protected
 * before). An owner keeps regions as they are (adding and removing are
 * refused) and waits for inflight before it lets go.
 */
static void svc_dispatch(struct ls_ctx *ctx, const struct uffd_msg *msg,
			 uint64_t t_read)
{
	uint64_t addr = msg->arg.pagefault.address, ps = LS_SMALL_PAGE;
	struct ls_snapshot *snap = NULL;
	struct ls_restore *r = NULL;
	bool wp = msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
	bool track = false;
	int idx;

	if (msg->event != UFFD_EVENT_PAGEFAULT)
		return;
	pthread_rwlock_rdlock(&ctx->regions_rw);
	idx = ls_region_find(ctx, addr);
	if (idx >= 0) {
		ps = ctx->regions[idx].info.page_size;
		atomic_fetch_add(&ctx->svc.inflight, 1);
		if (wp) {
			snap = atomic_load(&ctx->armed);
			track = !snap && atomic_load(&ctx->track.on);
			/* nobody keeps the region: only under the lock */
			if (!snap && !track)
				lift_stray(ctx, idx, addr);
		} else {
			r = atomic_load(&ctx->regions[idx].restore);
		}
	}
	pthread_rwlock_unlock(&ctx->regions_rw);
	if (snap)
		ls_snap_wp_fault(snap, idx, addr, t_read);
	else if (track)
		ls_track_fault(ctx, idx, addr);
	else if (r)
		ls_restore_fault(r, addr);
	else if (idx < 0 || !wp)
		ls_uffd_wake(ctx->uffd, addr & ~(ps - 1), ps);
	if (idx >= 0)
		atomic_fetch_sub(&ctx->svc.inflight, 1);
}

/*
 * Reads up to max messages into msgs; returns how many are faults (moved
 * to the front), 0 if none was there, -1 if the descriptor is broken.
 * Discard events are handled here, into the tracking sets loaded *before*
 * the read: the kernel zaps the pages only once the event is read, so a
 * discard read before a begin took the sets is in them (the begin's
 * quiesce waits for inflight, which covers the read and the marks), and
 * one read after it is zapped after that begin, in the next sets.
 */
static ssize_t svc_read(struct ls_ctx *ctx, struct uffd_msg *msgs,
			size_t max)
{
	_Atomic uint64_t *sets[LS_MAX_REGIONS];
	size_t faults = 0;
	ssize_t n;
	int nsets;

	atomic_fetch_add(&ctx->svc.inflight, 1);
	nsets = ls_track_sets_now(ctx, sets);
	n = read(ctx->uffd, msgs, max * sizeof(*msgs));
	for (size_t i = 0; n > 0 && i < (size_t)n / sizeof(*msgs); i++) {
		if (msgs[i].event == UFFD_EVENT_REMOVE)
			ls_track_discarded(ctx, sets, nsets,
					   msgs[i].arg.remove.start,
					   msgs[i].arg.remove.end);
		else if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
			msgs[faults++] = msgs[i];
	}
	atomic_fetch_sub(&ctx->svc.inflight, 1);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	return (ssize_t)faults;
}

/*
 * On the fault thread, inside a handler whose ioctl met EAGAIN: reads
 * what is queued, so that a discard event waiting there is read; faults
 * go to the backlog, served after this one. Out of memory, they stay in
 * the kernel's queue. The EAGAIN lasts until the discarding thread has
 * run again after the read: with nothing to read, let it.
 */
static void svc_read_nested(struct ls_ctx *ctx)
{
	struct ls_fault_svc *s = &ctx->svc;
	ssize_t n;

	if (s->nbacklog + 16 > s->backlog_cap) {
		size_t cap = s->backlog_cap ? 2 * s->backlog_cap : 64;
		struct uffd_msg *b = realloc(s->backlog, cap * sizeof(*b));

		if (!b) {
			sched_yield();
			return;
		}
		s->backlog = b;
		s->backlog_cap = cap;
	}
	n = svc_read(ctx, s->backlog + s->nbacklog, 16);
	if (n > 0)
		s->nbacklog += (size_t)n;
	else
		sched_yield();
}

/* Serves the faults that waited in the backlog. */
static void svc_backlog(struct ls_ctx *ctx, uint64_t now)
{
	struct uffd_msg msg;

	while (ctx->svc.nbacklog) {
		msg = ctx->svc.backlog[0];
		memmove(ctx->svc.backlog, ctx->svc.backlog + 1,
			--ctx->svc.nbacklog * sizeof(msg));
		svc_dispatch(ctx, &msg, now);
	}
}

/* A kick (ls_svc_kick) or the stop: read, so that poll() blocks again. */
static void drain_kick(struct ls_ctx *ctx)
{
	uint64_t n;

	if (read(ctx->svc.stop_fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: a racing reader took it; nothing else can fail */
	}
}

/* Wakes the fault thread to look again at how long it may block. */
void ls_svc_kick(struct ls_ctx *ctx)
{
	uint64_t one = 1;

	if (write(ctx->svc.stop_fd, &one, sizeof(one)) < 0) {
		/* cannot fail on an eventfd below its maximum count */
	}
}

/*
 * Faults come in bursts, and waking a thread blocked in poll() costs a
 * cross-CPU wake-up (60-90 us on small VMs). After each fault the thread
 * busy-polls for spin_ns before it blocks again.
 */
static void *svc_main(void *arg)
{
	struct ls_ctx *ctx = arg;
	struct uffd_msg msgs[16];
	uint64_t last = 0, now;
	struct pollfd pfd[2] = {
		{.fd = ctx->uffd, .events = POLLIN},
		{.fd = ctx->svc.stop_fd, .events = POLLIN},
	};
	uint64_t next_guard = 0;
	ssize_t n;

	svc_self = ctx;
	while (!atomic_load(&ctx->svc.stop)) {
		n = svc_read(ctx, msgs, sizeof(msgs) / sizeof(msgs[0]));
		now = ls_now_ns();
		if (now >= next_guard) { /* not every turn of a busy loop */
			(void)ls_snap_writer_guard(ctx);
			next_guard = now + LS_WRITER_GUARD_MS * 1000000ull;
		}
		if (n > 0) {
			for (ssize_t i = 0; i < n; i++) {
				svc_dispatch(ctx, &msgs[i], now);
				svc_backlog(ctx, now);
			}
			last = now;
			continue;
		}
		if (n < 0)
			break; /* the descriptor is broken: nothing to serve */
		if (now - last < (uint64_t)atomic_load(&ctx->svc.spin_ns)) {
			ls_cpu_relax();
			continue;
		}
		if (poll(pfd, 2, ls_snap_writer_guard(ctx)) > 0 &&
		    (pfd[1].revents & POLLIN))
			drain_kick(ctx);
	}
	return NULL;
}

int ls_svc_get(struct ls_ctx *ctx)
{
	int ret;

	if (ctx->svc.users++)
		return 0;
	ctx->svc.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->svc.stop_fd < 0) {
		ctx->svc.users = 0;
		return ls_err(ctx, errno, "eventfd for the fault thread: %s",
			      strerror(errno));
	}
	atomic_store(&ctx->svc.stop, false);
	ret = pthread_create(&ctx->svc.thread, NULL, svc_main, ctx);
	if (ret) {
		close(ctx->svc.stop_fd);
		ctx->svc.stop_fd = -1;
		ctx->svc.users = 0;
		return ls_err(ctx, ret, "starting the fault thread: %s",
			      strerror(ret));
	}
	pthread_setname_np(ctx->svc.thread, "ls-faults");
	return 0;
}

void ls_svc_put(struct ls_ctx *ctx)
{
	uint64_t one = 1;

	if (--ctx->svc.users)
		return;
	atomic_store(&ctx->svc.stop, true);
	if (write(ctx->svc.stop_fd, &one, sizeof(one)) < 0) {
		/* cannot fail on a fresh eventfd; the spin loop sees stop */
	}
	pthread_join(ctx->svc.thread, NULL);
	close(ctx->svc.stop_fd);
	ctx->svc.stop_fd = -1;
	free(ctx->svc.backlog); /* left over: their threads were woken */
	ctx->svc.backlog = NULL;
	ctx->svc.nbacklog = ctx->svc.backlog_cap = 0;
}

/* Waits until no fault handler runs (after its owner pointer was cleared). */
void ls_svc_quiesce(struct ls_ctx *ctx)
{
	while (atomic_load(&ctx->svc.inflight))
		sched_yield();
}
