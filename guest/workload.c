/* SPDX-License-Identifier: MIT */
/*
 * The per-vCPU workload (ring 3): rewrite the pages of the vCPU's working
 * set forever, in the page format of abi.h, validating each page before
 * overwriting it, and account every write in the vCPU's status block.
 *
 * Snapshot consistency: `inflight` names the page being written before its
 * first byte changes and is cleared after its last byte is written. The
 * compiler barriers keep that order in the code; x86 keeps stores in
 * program order. Every other page of the working set is whole at any
 * instant.
 */
#include "guest.h"

#define TIMELINE_INTERVAL_MS 1

struct writer {
	struct lsg_vcpu_status *vs;
	uint32_t cpu;
	uint64_t first; /* global index of the vCPU's first page */
	uint64_t npages;
	uint64_t cursor;   /* seq mode: last page written */
	uint64_t rng;	   /* rand mode: xorshift64 state, never 0 */
	uint64_t tl_start; /* timeline: current interval */
	uint64_t tl_writes;
	uint64_t tl_max;
	uint64_t next_print;
	uint64_t power_off_at; /* BSP only; 0: never */
	uint64_t last;	       /* TSC of the previous report() */
};

/*
 * A gap this long between two writes means the VM was not running (paused,
 * or restored from a snapshot: under PVM ring-3 rdtsc reads the host's TSC,
 * which a restore cannot rewind). It does not count towards ls.print_s and
 * ls.runtime_s.
 */
#define PAUSE_GAP_MS 1000

static uint64_t next_page(struct writer *w)
{
	if (lsg_cfg.mode == 0) {
		if (++w->cursor >= w->npages)
			w->cursor = 0;
		return w->cursor;
	}
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	/* multiply-shift: uniform in [0, npages) without a division */
	return (uint64_t)(((unsigned __int128)w->rng * w->npages) >> 64);
}

static uint64_t cycles_to_ns(uint64_t cycles)
{
	if (!lsg_cfg.tsc_khz)
		return cycles;
	if (cycles > UINT64_MAX / 1000000) /* hours: a VM paused mid-write */
		return cycles / lsg_cfg.tsc_khz * 1000000;
	return cycles * 1000000 / lsg_cfg.tsc_khz;
}

static unsigned int hist_bucket(uint64_t ns)
{
	return ns ? 63 - (unsigned int)__builtin_clzll(ns) : 0;
}

/* Closes the timeline interval once it is TIMELINE_INTERVAL_MS long. */
static void timeline_account(struct writer *w, uint64_t now, uint64_t ns)
{
	struct lsg_vcpu_status *vs = w->vs;
	struct lsg_timeline_entry *e;

	w->tl_writes++;
	if (ns > w->tl_max)
		w->tl_max = ns;
	if (now - w->tl_start < TIMELINE_INTERVAL_MS * lsg_cfg.tsc_per_ms)
		return;
	e = &vs->timeline[vs->timeline_head % LSG_TIMELINE_LEN];
	e->tsc = w->tl_start;
	e->writes =
	    w->tl_writes > UINT32_MAX ? UINT32_MAX : (uint32_t)w->tl_writes;
	e->max_ns = w->tl_max > UINT32_MAX ? UINT32_MAX : (uint32_t)w->tl_max;
	barrier(); /* the entry is whole before the head moves past it */
	vs->timeline_head++;
	w->tl_start = now;
	w->tl_writes = 0;
	w->tl_max = 0;
}

/* The first invalid page of a vCPU, named on the console. */
static void report_error(struct writer *w, const void *page, uint64_t index)
{
	const struct lsg_page_hdr *h = page;
	const uint64_t *p = page;
	uint64_t bad = 0;

	for (uint64_t i = 4; i < LSG_PAGE_SIZE / 8 && h->magic; i++)
		if (p[i] != lsg_body_word(index, h->generation, i)) {
			bad = i;
			break;
		}
	lsg_say("warning: cpu %u page %llu invalid: index %llu gen %llu "
		"cpu %u first bad word %llu",
		w->cpu, (unsigned long long)index,
		(unsigned long long)h->index,
		(unsigned long long)h->generation, (unsigned)h->cpu,
		(unsigned long long)bad);
}

static void write_one(struct writer *w)
{
	struct lsg_vcpu_status *vs = w->vs;
	uint64_t index = w->first + next_page(w);
	void *page = (void *)(LSG_WS_GPA + index * LSG_PAGE_SIZE);
	uint64_t gen = vs->generation + 1;
	uint64_t t0, t1, ns;

	vs->inflight = index + 1;
	barrier();
	if (lsg_page_valid(page, index))
		vs->validated++;
	else if (!vs->errors++)
		report_error(w, page, index);
	t0 = rdtsc();
	lsg_page_fill(page, index, gen, w->cpu);
	t1 = rdtsc();
	barrier();
	vs->generation = gen;
	vs->writes = gen;
	ns = cycles_to_ns(t1 - t0);
	if (ns > vs->max_lat_ns)
		vs->max_lat_ns = ns;
	vs->hist[hist_bucket(ns)]++;
	vs->heartbeat_tsc = t1;
	timeline_account(w, t1, ns);
	barrier();
	vs->inflight = 0;
}

/* Moves the deadlines past a pause, or back if the TSC went backwards. */
static void skip_pause(struct writer *w, uint64_t now)
{
	int64_t gap = (int64_t)(now - w->last);

	w->last = now;
	if (gap >= 0 && (uint64_t)gap < PAUSE_GAP_MS * lsg_cfg.tsc_per_ms)
		return;
	w->next_print += (uint64_t)gap;
	if (w->power_off_at)
		w->power_off_at += (uint64_t)gap;
}

static void report(struct writer *w, uint64_t now)
{
	const struct lsg_vcpu_status *vs = w->vs;

	skip_pause(w, now);

	if (lsg_cfg.print_s && now >= w->next_print) {
		lsg_say("cpu %u writes=%lu gen=%lu max_ns=%lu errors=%lu",
			w->cpu, vs->writes, vs->generation, vs->max_lat_ns,
			vs->errors);
		w->next_print =
		    rdtsc() + lsg_cfg.print_s * 1000 * lsg_cfg.tsc_per_ms;
	}
	if (w->power_off_at && now >= w->power_off_at)
		lsg_power_off();
}

void lsg_workload(uint32_t cpu)
{
	struct writer w = {
	    .vs = (struct lsg_vcpu_status *)(LSG_STATUS_GPA +
					     LSG_VCPU_STATUS_OFF(cpu)),
	    .cpu = cpu,
	    .first = (uint64_t)cpu * lsg_cfg.ws_pages,
	    .npages = lsg_cfg.ws_pages,
	    .cursor = lsg_cfg.ws_pages - 1, /* seq starts at page 0 */
	    .rng = 0x9e3779b97f4a7c15ull * (cpu + 1),
	};
	uint64_t ms = lsg_cfg.tsc_per_ms;
	uint64_t now;

	memset(w.vs, 0, sizeof(*w.vs));
	w.vs->magic = LSG_STATUS_MAGIC;
	w.vs->cpu = cpu;
	lsg_say("cpu %u workload running mode=%s ws_pages=%lu", cpu,
		lsg_cfg.mode ? "rand" : "seq", lsg_cfg.ws_pages);
	now = rdtsc();
	w.last = now;
	w.tl_start = now;
	w.next_print = now + lsg_cfg.print_s * 1000 * ms;
	if (cpu == 0 && lsg_cfg.runtime_s)
		w.power_off_at =
		    lsg_cfg.boot_tsc + lsg_cfg.runtime_s * 1000 * ms;
	barrier();
	w.vs->heartbeat_tsc = now;
	w.vs->running = 1;
	for (;;) {
		write_one(&w);
		report(&w, w.vs->heartbeat_tsc);
	}
}
