/* SPDX-License-Identifier: MIT */
/*
 * The README's library example, whole: a live snapshot of a heap that a
 * thread keeps writing, saved to a file, then read back and checked.
 *
 *	cc snapshot.c $(pkg-config --cflags --libs livesnap) -o snapshot
 *	./snapshot heap.snap
 *
 * Needs userfaultfd (root, or vm.unprivileged_userfaultfd=1 for this
 * anonymous memory). Exit status 0 when the file holds exactly the heap as
 * it was when the snapshot began.
 */
#include <err.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <livesnap.h>

#define HEAP_PAGES 1024
#define PAGE 4096

static uint64_t *heap;
static atomic_int paused, resume, stop;

/* The application: stamps its generation into every page, forever. */
static void *writer(void *unused)
{
	(void)unused;
	for (uint64_t gen = 1; !atomic_load(&stop); gen++) {
		if (atomic_load(&resume) == 0) { /* asked to pause */
			atomic_store(&paused, 1);
			while (atomic_load(&resume) == 0)
				;
		}
		for (size_t p = 0; p < HEAP_PAGES; p++)
			heap[p * PAGE / 8] = gen;
	}
	return NULL;
}

static void quiesce_writers(void)
{
	atomic_store(&resume, 0);
	while (!atomic_load(&paused))
		;
}

static void resume_writers(void)
{
	atomic_store(&paused, 0);
	atomic_store(&resume, 1);
}

/* Snapshots the heap into path; *frozen gets the heap as it was. */
static void take(const char *path, uint64_t *frozen)
{
	char msg[LS_ERRMSG_MAX];
	struct ls_snapshot_opts opts = {.strategy = LS_STRATEGY_AUTO};
	struct ls_snapshot *snap;
	struct ls_sink *sink;
	struct ls_stats st;
	struct ls_ctx *ctx;

	if (ls_ctx_create(&ctx, msg, sizeof(msg)) < 0)
		errx(1, "%s", msg);
	if (ls_region_add(ctx, "heap", heap, HEAP_PAGES * PAGE) < 0)
		errx(1, "%s", ls_ctx_error(ctx));
	if (ls_sink_file_create(&sink, path, 0, msg, sizeof(msg)) < 0)
		errx(1, "%s", msg);
	/* the snapshot owns the sink from here, also on failure */
	if (ls_snapshot_create(ctx, sink, &opts, &snap) < 0)
		errx(1, "%s", ls_ctx_error(ctx));

	quiesce_writers(); /* an instant */
	for (size_t p = 0; p < HEAP_PAGES; p++)
		frozen[p] = heap[p * PAGE / 8];
	if (ls_snapshot_begin(snap) < 0) /* arms write protection, returns */
		errx(1, "%s", ls_snapshot_error(snap));
	resume_writers();

	if (ls_snapshot_wait(snap) < 0) /* written while the writer ran */
		errx(1, "%s", ls_snapshot_error(snap));
	if (ls_snapshot_stats(snap, &st) < 0)
		errx(1, "snapshot statistics: %s", ls_snapshot_error(snap));
	printf("%llu pages written, %llu write faults, stall p99 %llu ns\n",
	       (unsigned long long)st.pages_written,
	       (unsigned long long)st.faults,
	       (unsigned long long)st.stall_p99_ns);
	ls_snapshot_destroy(snap);
	ls_ctx_destroy(ctx);
}

/* Reads the file back: every page must hold its frozen generation. */
static void check(const char *path, const uint64_t *frozen)
{
	char msg[LS_ERRMSG_MAX];
	struct ls_reader *r;
	uint64_t *page = malloc(PAGE);
	int region;

	if (!page)
		err(1, "malloc");
	if (ls_reader_open(path, &r, msg, sizeof(msg)) < 0)
		errx(1, "%s", msg);
	if (ls_reader_verify(r, NULL, NULL) < 0)
		errx(1, "%s", ls_reader_error(r));
	region = ls_reader_find_region(r, "heap");
	if (region < 0)
		errx(1, "%s: no region 'heap'", path);
	for (uint64_t p = 0; p < HEAP_PAGES; p++) {
		if (ls_reader_read_pages(r, (uint32_t)region, p, page, 1) < 0)
			errx(1, "%s", ls_reader_error(r));
		if (page[0] != frozen[p])
			errx(1, "page %llu: generation %llu, want %llu",
			     (unsigned long long)p,
			     (unsigned long long)page[0],
			     (unsigned long long)frozen[p]);
	}
	ls_reader_close(r);
	free(page);
	printf("%s: every page as it was at begin\n", path);
}

int main(int argc, char **argv)
{
	uint64_t *frozen = calloc(HEAP_PAGES, sizeof(*frozen));
	pthread_t t;
	int ret;

	if (argc != 2)
		errx(2, "usage: %s FILE", argv[0]);
	if (!frozen)
		err(1, "calloc");
	heap = mmap(NULL, HEAP_PAGES * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED)
		err(1, "mmap");
	atomic_store(&resume, 1);
	ret = pthread_create(&t, NULL, writer, NULL);
	if (ret)
		errx(1, "pthread_create: %s", strerror(ret));

	take(argv[1], frozen);

	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	check(argv[1], frozen);
	free(frozen);
	return 0;
}
