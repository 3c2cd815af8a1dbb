/* SPDX-License-Identifier: MIT */
/*
 * The contract between the default guest (guest/) and the host side (the
 * VMM, its tests and checkers). Header only, freestanding: the guest builds
 * it with -ffreestanding, the host with libc. Guest-physical addresses are
 * identity mapped in the guest, so a GPA is also the guest's pointer.
 *
 * Guest command line parameters (all optional):
 *   ls.ws_mib=N      working set per vCPU in MiB (default 16)
 *   ls.mode=seq|rand page order of the writer (default rand)
 *   ls.tsc_khz=N     TSC frequency, for latency in ns (the VMM passes it)
 *   ls.print_s=N     seconds between console summaries (default 5; 0: never)
 *   ls.runtime_s=N   power off (i8042 reset) after N seconds (default 0:
 *                    run forever)
 *   ls.cpus=N        vCPUs expected (the guest also counts the MP table)
 *
 * Console lines the host may rely on (each line starts with "livesnap-guest"):
 *   "livesnap-guest: boot cmdline='...'"
 *   "livesnap-guest: e820 <idx> <start-hex> <len-hex> <type>"
 *   "livesnap-guest: initrd <addr-hex> <size-hex>"
 *   "livesnap-guest: boot ring0=<cycles> cycles, <n> cpus up after <cycles>
 *    cycles" (TSC cycles from the first ring-0 instruction)
 *   "livesnap-guest: cpu <n> workload running mode=<seq|rand> ws_pages=<n>"
 *   "livesnap-guest: cpu <n> writes=<n> gen=<n> max_ns=<n> errors=<n>"
 *   "livesnap-guest: power off"
 */
#ifndef LS_GUEST_ABI_H
#define LS_GUEST_ABI_H

#include <stdint.h>

/* Where the status area lives in guest-physical memory (4 MiB). */
#define LSG_STATUS_GPA 0x400000ull
#define LSG_STATUS_SIZE 0x400000ull
#define LSG_STATUS_MAGIC 0x3154415453474c4cull /* "LLGSTAT1" */
#define LSG_STATUS_VERSION 1
#define LSG_MAX_CPUS 63
#define LSG_VCPU_STATUS_OFF(i) (0x1000ull + (uint64_t)(i) * 0x10000ull)

/* Working sets start here; vCPU i owns [ws_gpa + i*ws_pages*4096, ...). */
#define LSG_WS_GPA 0x1000000ull /* 16 MiB */
#define LSG_PAGE_SIZE 4096ull

#define LSG_CMDLINE_MAX 1024
#define LSG_E820_MAX 32
#define LSG_HIST_BUCKETS 64 /* bucket i: latency in [2^i, 2^(i+1)) ns */
#define LSG_TIMELINE_LEN 2048

struct lsg_e820 {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t pad;
};

/*
 * At LSG_STATUS_GPA. Written by the guest once at boot (by the BSP, in
 * ring 3) before any vCPU starts its workload; `ready` is written last.
 * Hex numbers on the console are printed with a 0x prefix.
 */
struct lsg_status {
	uint64_t magic;          /* LSG_STATUS_MAGIC */
	uint32_t version;        /* LSG_STATUS_VERSION */
	uint32_t ncpus;          /* vCPUs running the workload */
	uint64_t ws_gpa;         /* LSG_WS_GPA */
	uint64_t ws_pages;       /* per vCPU */
	uint32_t mode;           /* 0 seq, 1 rand */
	uint32_t ready;          /* 1 once every field above is final */
	uint64_t tsc_khz;        /* 0 if unknown: latencies then in cycles */
	uint64_t ram_bytes;      /* usable RAM from e820 */
	uint64_t initrd_addr;
	uint64_t initrd_size;
	uint32_t e820_entries;
	uint32_t pad;
	struct lsg_e820 e820[LSG_E820_MAX];
	char cmdline[LSG_CMDLINE_MAX];
	/* Boot timing, BSP's rdtsc (0 from guests that predate them). */
	uint64_t boot_tsc;       /* first ring-0 instruction */
	uint64_t user_tsc;       /* first ring-3 instruction */
	uint64_t ready_tsc;      /* every vCPU up, just before `ready` */
};

/*
 * Timeline: one entry per ~1 ms of guest time (per vCPU ring buffer, index
 * timeline_head % LSG_TIMELINE_LEN is the next to write), for latency-over-
 * time plots: the worst write latency seen in that interval.
 */
struct lsg_timeline_entry {
	uint64_t tsc;        /* start of interval */
	uint32_t writes;     /* writes in the interval */
	uint32_t max_ns;     /* worst write latency in the interval */
};

/*
 * At LSG_STATUS_GPA + LSG_VCPU_STATUS_OFF(i). Written by vCPU i's ring-3
 * workload only; the host reads it without exits (values are monotonic
 * 64-bit stores, so a torn read is impossible on x86-64).
 */
struct lsg_vcpu_status {
	uint64_t magic;          /* LSG_STATUS_MAGIC */
	uint32_t cpu;
	uint32_t running;        /* 1 while the workload runs */
	uint64_t writes;         /* pages written since boot */
	uint64_t generation;     /* last generation written (== writes) */
	uint64_t max_lat_ns;     /* worst single write latency */
	uint64_t errors;         /* pages that failed validation */
	uint64_t validated;      /* pages validated before overwrite */
	uint64_t heartbeat_tsc;  /* rdtsc at the last update */
	/*
	 * Index of the page being written, +1 (0: none). A snapshot taken
	 * mid-write holds that one page half written; checkers excuse it.
	 */
	uint64_t inflight;
	uint64_t hist[LSG_HIST_BUCKETS];
	uint64_t timeline_head;
	struct lsg_timeline_entry timeline[LSG_TIMELINE_LEN];
};

/*
 * Workload page format: every page of a working set is either all zero
 * (never written) or holds this header followed by a body that is a pure
 * function of (index, generation). A page written by vCPU c with sequence
 * number g (1, 2, ...) has generation g; the index is the page's global
 * number (GPA - LSG_WS_GPA) / 4096. Before overwriting a page the guest
 * validates it (lsg_page_valid) and counts failures in `errors`.
 */
struct lsg_page_hdr {
	uint64_t magic;      /* LSG_PAGE_MAGIC */
	uint64_t index;
	uint64_t generation;
	uint32_t cpu;
	uint32_t check;      /* lsg_page_check(index, generation, cpu) */
};

#define LSG_PAGE_MAGIC 0x45474150474c4cull /* "LLGPAGE" */

static inline uint64_t lsg_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint32_t lsg_page_check(uint64_t index, uint64_t gen,
				      uint32_t cpu)
{
	return (uint32_t)lsg_mix(index * 0x9e3779b97f4a7c15ull ^ gen ^
				 ((uint64_t)cpu << 48));
}

/* Word w (w >= 4) of the body of a page. */
static inline uint64_t lsg_body_word(uint64_t index, uint64_t gen, uint64_t w)
{
	return lsg_mix(index ^ (gen << 20)) + w * 0x9e3779b97f4a7c15ull;
}

static inline void lsg_page_fill(void *page, uint64_t index, uint64_t gen,
				 uint32_t cpu)
{
	uint64_t *p = (uint64_t *)page;
	struct lsg_page_hdr *h = (struct lsg_page_hdr *)page;

	for (uint64_t w = 4; w < LSG_PAGE_SIZE / 8; w++)
		p[w] = lsg_body_word(index, gen, w);
	h->index = index;
	h->generation = gen;
	h->cpu = cpu;
	h->check = lsg_page_check(index, gen, cpu);
	h->magic = LSG_PAGE_MAGIC;
}

/* 1 if the page is all zero or a whole, consistent page of `index`. */
static inline int lsg_page_valid(const void *page, uint64_t index)
{
	const uint64_t *p = (const uint64_t *)page;
	const struct lsg_page_hdr *h = (const struct lsg_page_hdr *)page;

	if (h->magic == 0) {
		for (uint64_t w = 0; w < LSG_PAGE_SIZE / 8; w++)
			if (p[w])
				return 0;
		return 1;
	}
	/* cpu < LSG_MAX_CPUS: the check does not cover cpu bits 16-31 */
	if (h->magic != LSG_PAGE_MAGIC || h->index != index ||
	    h->cpu >= LSG_MAX_CPUS ||
	    h->check != lsg_page_check(index, h->generation, h->cpu))
		return 0;
	for (uint64_t w = 4; w < LSG_PAGE_SIZE / 8; w++)
		if (p[w] != lsg_body_word(index, h->generation, w))
			return 0;
	return 1;
}

/* What a host-side checker makes of one working-set page. */
enum lsg_verdict {
	LSG_PAGE_ZERO,     /* never written */
	LSG_PAGE_WRITTEN,  /* whole, by its owner, not from the future */
	LSG_PAGE_INFLIGHT, /* its owner was writing it: excused */
	LSG_PAGE_BAD,
};

/*
 * Checks page `index` of a RAM image taken at one instant, against the
 * status of its owner (vCPU index / ws_pages) from the same image. The
 * owner's in-flight page is excused first: it may be half written, and its
 * generation may already be ahead of the status.
 */
static inline enum lsg_verdict lsg_page_verdict(
	const void *page, uint64_t index, const struct lsg_vcpu_status *owner,
	uint32_t owner_cpu)
{
	const struct lsg_page_hdr *h = (const struct lsg_page_hdr *)page;

	if (owner->inflight == index + 1)
		return LSG_PAGE_INFLIGHT;
	if (!lsg_page_valid(page, index))
		return LSG_PAGE_BAD;
	if (h->magic == 0)
		return LSG_PAGE_ZERO;
	if (h->cpu != owner_cpu || !h->generation ||
	    h->generation > owner->generation)
		return LSG_PAGE_BAD;
	return LSG_PAGE_WRITTEN;
}

#endif /* LS_GUEST_ABI_H */
