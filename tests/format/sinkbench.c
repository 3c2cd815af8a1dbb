/* SPDX-License-Identifier: MIT */
/*
 * sinkbench PATH SIZE_MIB [BATCH_KIB] [direct|stream]: the file sink's raw
 * write bandwidth, start to durable commit, as the engine's writer thread
 * drives it (one thread, batches of BATCH_KIB, default 2048, every page
 * non-zero). Compare with: dd if=/dev/zero of=PATH bs=2M count=N
 * oflag=direct conv=fdatasync. "stream" writes the stream sink to stdout
 * instead (PATH unused): sinkbench - 2048 2048 stream | cat >/dev/null.
 * Not a test: timings belong in benchmarks.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "livesnap.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t mib, batch, pool = 64 << 20;
	struct ls_layout_region lr = {"ram", 0, 4096, LS_MEM_ANON};
	struct ls_layout layout = {1, &lr};
	char err[LS_ERRMSG_MAX];
	struct ls_sink *sink;
	unsigned flags = 0;
	bool stream = false;
	uint64_t *buf;
	double t0, t1, t2;

	if (argc < 3) {
		fprintf(stderr, "usage: sinkbench PATH SIZE_MIB [BATCH_KIB] "
				"[direct]\n");
		return 2;
	}
	mib = strtoul(argv[2], NULL, 0);
	batch = (argc > 3 ? strtoul(argv[3], NULL, 0) : 2048) << 10;
	if (argc > 4 && !strcmp(argv[4], "direct"))
		flags = LS_FILE_DIRECT;
	stream = argc > 4 && !strcmp(argv[4], "stream");
	lr.len = (uint64_t)mib << 20;
	if (!batch || batch % 4096 || pool % batch || lr.len % batch) {
		fprintf(stderr, "sinkbench: bad sizes\n");
		return 2;
	}
	buf = aligned_alloc(4096, pool);
	for (size_t i = 0; i < pool / 8; i++)
		buf[i] = i * 0x9e3779b97f4a7c15ull + 1;
	if (stream
		? ls_sink_stream_create(&sink, STDOUT_FILENO, err, sizeof(err))
		: ls_sink_file_create(&sink, argv[1], flags, err,
				      sizeof(err))) {
		fprintf(stderr, "sinkbench: %s\n", err);
		return 1;
	}
	t0 = now();
	if (sink->ops->start(sink, &layout))
		goto fail;
	for (uint64_t off = 0; off < lr.len; off += batch)
		if (sink->ops->write_pages(sink, 0, off / 4096,
					   (char *)buf + off % pool,
					   batch / 4096))
			goto fail;
	t1 = now();
	if (sink->ops->commit(sink))
		goto fail;
	t2 = now();
	fprintf(stderr,
		"%zu MiB, batch %zu KiB%s: writes %.2f s, commit %.2f s, "
		"%.0f MB/s\n",
		mib, batch >> 10,
		stream	? ", stream"
		: flags ? ", O_DIRECT"
			: "",
		t1 - t0, t2 - t1, (double)lr.len / (t2 - t0) / 1e6);
	ls_sink_destroy(sink);
	free(buf);
	return 0;
fail:
	fprintf(stderr, "sinkbench: %s\n", sink->error);
	ls_sink_destroy(sink);
	return 1;
}
