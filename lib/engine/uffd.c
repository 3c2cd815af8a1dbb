/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd ioctl wrappers and the fault service: the thread that reads
 * the context's descriptor and hands each fault to whoever owns it.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

int ls_uffd_wp(int uffd, uint64_t start, uint64_t len, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = start, .len = len},
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	/* EAGAIN: the address space was changing under us; try again. */
	while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return 0;
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

	*done = 0;
	if (ioctl(uffd, UFFDIO_COPY, &copy) == 0) {
		*done = len;
		return 0;
	}
	/* A partial copy reports -EAGAIN and the bytes done in .copy. */
	if (copy.copy > 0)
		*done = (uint64_t)copy.copy;
	return -errno;
}

int ls_uffd_zeropage(int uffd, uint64_t dst, uint64_t len)
{
	struct uffdio_zeropage zp = {.range = {.start = dst, .len = len}};

	return ioctl(uffd, UFFDIO_ZEROPAGE, &zp) < 0 ? -errno : 0;
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

/* Hands one fault to its owner; a fault nobody owns is just woken. */
static void svc_dispatch(struct ls_ctx *ctx, const struct uffd_msg *msg,
			 uint64_t t_read)
{
	uint64_t addr = msg->arg.pagefault.address;
	struct ls_snapshot *snap;
	struct ls_restore *r;
	int idx;

	if (msg->event != UFFD_EVENT_PAGEFAULT)
		return;
	idx = ls_region_find(ctx, addr);
	if (idx < 0) {
		ls_uffd_wake(ctx->uffd, addr & ~(LS_SMALL_PAGE - 1),
			     LS_SMALL_PAGE);
		return;
	}
	atomic_fetch_add(&ctx->svc.inflight, 1);
	if (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		snap = atomic_load(&ctx->armed);
		if (snap)
			ls_snap_wp_fault(snap, idx, addr, t_read);
		else if (atomic_load(&ctx->track.on))
			ls_track_fault(ctx, idx, addr);
		else
			ls_uffd_wake(ctx->uffd,
				     addr & ~(ctx->regions[idx].info.page_size -
					      1),
				     ctx->regions[idx].info.page_size);
	} else {
		r = atomic_load(&ctx->regions[idx].restore);
		if (r)
			ls_restore_fault(r, addr);
		else
			ls_uffd_wake(ctx->uffd,
				     addr & ~(ctx->regions[idx].info.page_size -
					      1),
				     ctx->regions[idx].info.page_size);
	}
	atomic_fetch_sub(&ctx->svc.inflight, 1);
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

	while (!atomic_load(&ctx->svc.stop)) {
		n = read(ctx->uffd, msgs, sizeof(msgs));
		now = ls_now_ns();
		if (now >= next_guard) { /* not every turn of a busy loop */
			(void)ls_snap_writer_guard(ctx);
			next_guard = now + LS_WRITER_GUARD_MS * 1000000ull;
		}
		if (n > 0) {
			for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
				svc_dispatch(ctx, &msgs[i], now);
			last = now;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
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
}

/* Waits until no fault handler runs (after its owner pointer was cleared). */
void ls_svc_quiesce(struct ls_ctx *ctx)
{
	while (atomic_load(&ctx->svc.inflight))
		sched_yield();
}
