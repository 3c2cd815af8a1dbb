/* SPDX-License-Identifier: MIT */
/*
 * A dirty log for TCG, as KVM's: one bit per 4 KiB of guest RAM that the
 * guest wrote since the last harvest (accel_ops.dirty_log). An incremental
 * snapshot chain then needs nothing write-protected between snapshots,
 * no second stop and no fault per first write.
 *
 * Unicorn 2.0.1 stubs out QEMU's dirty bitmap, but every guest store to
 * RAM still passes page_collection_lock() with its ram_addr (see
 * tcg_uc_store.c, where the binary defines that function): that is where
 * a store is logged. The CPU's own page-table walker sets accessed and
 * dirty bits through x86_stl_phys_notdirty(), and a few helpers store
 * through x86_st[bwlq]_phys(), both by guest-physical address and
 * outside that path: the binary defines those too, logs, and calls the
 * library's. Each is a call through the library's PLT (checked with
 * objdump on 2.0.1), so the definitions here take precedence.
 *
 * ram_addr is the offset in Unicorn's RAM blocks. Guest RAM is mapped
 * first in every engine (low RAM, then high RAM), so the blocks sit at
 * 0 and low_size: the offset in vm->mem.host, checked for each engine
 * with qemu_ram_addr_from_host() when its RAM is mapped. Any other
 * Unicorn version, or an engine whose offsets differ, and the log is not
 * offered: tracking falls back to write protection.
 *
 * Process-wide, like the library functions it stands in for (one VM per
 * process). The bits are set with atomics, only on a page's first store
 * of an interval, as the harvest may run with the vCPUs running. A
 * summary after the bitmap, one bit per bitmap word, is set when a
 * word's first bit is: a harvest reads 256 summary words for 4 GiB, then
 * only the words written (a snapshot's pause takes the log, and reading
 * 128 KiB of it cost 7-14 us of a 4 GiB delta's pause). A store sets its
 * word's summary bit after the word and the harvest clears the summary
 * bit before the word, so a word a harvest misses keeps its summary bit
 * for the next; with the vCPUs paused it misses none.
 */
#include <dlfcn.h>
#include <stdlib.h>

#include "../../layout.h"
#include "../../vm.h"
#include "tcg.h"

struct CPUState; /* Unicorn's, opaque here */

static struct {
	bool supported;		/* the version read at load */
	bool mismatch;		/* __atomic: an engine's RAM is elsewhere */
	uint64_t *bits;		/* NULL: not logging (__atomic); the summary
				 * follows the bitmap's nwords words */
	uint64_t *spare;	/* the bitmap of a stopped log, for the next */
	uint64_t npages, nwords, low_size, high_size;
	uint64_t (*ram_addr_from_host)(void *uc, void *ptr);
	void (*stl_notdirty)(struct CPUState *cs, uint64_t a, uint32_t v);
	void (*stb)(struct CPUState *cs, uint64_t a, uint8_t v);
	void (*stw)(struct CPUState *cs, uint64_t a, uint32_t v);
	void (*stl)(struct CPUState *cs, uint64_t a, uint32_t v);
	void (*stq)(struct CPUState *cs, uint64_t a, uint64_t v);
} dlog;

static inline void mark_page(uint64_t *bits, uint64_t page)
{
	uint64_t w = page / 64, bit = 1ull << (page % 64);
	uint64_t *sum = bits + dlog.nwords;

	if (__atomic_load_n(&bits[w], __ATOMIC_RELAXED) & bit)
		return;
	if (!__atomic_fetch_or(&bits[w], bit, __ATOMIC_RELAXED))
		__atomic_fetch_or(&sum[w / 64], 1ull << (w % 64),
				  __ATOMIC_RELAXED);
}

void tcg_dirty_mark_ram(uint64_t start, uint64_t end)
{
	uint64_t *bits = __atomic_load_n(&dlog.bits, __ATOMIC_ACQUIRE);

	if (!bits || start >= end)
		return;
	for (uint64_t p = start / 4096; p <= (end - 1) / 4096; p++)
		if (p < dlog.npages) /* the stub page lies after RAM */
			mark_page(bits, p);
}

static void mark_gpa(uint64_t gpa, unsigned size)
{
	uint64_t off;

	if (gpa < dlog.low_size)
		off = gpa;
	else if (gpa >= GPA_4G && gpa - GPA_4G < dlog.high_size)
		off = dlog.low_size + (gpa - GPA_4G);
	else
		return;
	tcg_dirty_mark_ram(off, off + size);
}

/* The library's stores by guest-physical address: logged, then done. */
#define PHYS_STORE(sym, field, type, size)                                    \
	void sym(struct CPUState *cs, uint64_t addr, type val);               \
	void sym(struct CPUState *cs, uint64_t addr, type val)                \
	{                                                                     \
		dlog.field(cs, addr, val);                                    \
		mark_gpa(addr, size);                                         \
	}
PHYS_STORE(x86_stl_phys_notdirty_x86_64, stl_notdirty, uint32_t, 4)
PHYS_STORE(x86_stb_phys_x86_64, stb, uint8_t, 1)
PHYS_STORE(x86_stw_phys_x86_64, stw, uint32_t, 2)
PHYS_STORE(x86_stl_phys_x86_64, stl, uint32_t, 4)
PHYS_STORE(x86_stq_phys_x86_64, stq, uint64_t, 8)
#undef PHYS_STORE

/*
 * At load (tcg_uc.c), before any engine: the library's own functions,
 * which the definitions above call, and whether the log can be offered.
 * The stores must resolve whatever the version: the library calls ours.
 */
void tcg_dirty_init(void *lib, bool store_path_known)
{
#define SYM(field, name) *(void **)&dlog.field = dlsym(lib, name)
	SYM(stl_notdirty, "x86_stl_phys_notdirty_x86_64");
	SYM(stb, "x86_stb_phys_x86_64");
	SYM(stw, "x86_stw_phys_x86_64");
	SYM(stl, "x86_stl_phys_x86_64");
	SYM(stq, "x86_stq_phys_x86_64");
	SYM(ram_addr_from_host, "qemu_ram_addr_from_host_x86_64");
#undef SYM
	dlog.supported = store_path_known && dlog.ram_addr_from_host &&
			 dlog.stl_notdirty && dlog.stb && dlog.stw &&
			 dlog.stl && dlog.stq;
}

/*
 * The bitmap and its summary, allocated and touched before any pause:
 * the first touches of a fresh 130 KiB there took 0.45 ms of a 4 GiB
 * guest's pause on this project's hosts. Not a fatal failure: the start
 * allocates it then.
 */
static void log_alloc(const struct vm *vm)
{
	uint64_t len = (accel_log_words(vm->mem.size) +
			accel_log_sum_words(vm->mem.size)) * 8;
	volatile char *p;

	if (dlog.spare || __atomic_load_n(&dlog.bits, __ATOMIC_ACQUIRE))
		return;
	p = calloc(1, len);
	for (uint64_t i = 0; p && i < len; i += 4096)
		p[i] = 0;
	dlog.spare = (uint64_t *)p;
}

/* Each engine, once guest RAM is mapped: are its blocks where assumed? */
void tcg_dirty_check_engine(struct vm *vm, uc_engine *uc)
{
	const struct vm_mem *m = &vm->mem;

	if (!dlog.supported)
		return;
	log_alloc(vm);
	if (dlog.ram_addr_from_host(uc, m->host) != 0 ||
	    (m->high_size &&
	     dlog.ram_addr_from_host(uc, m->host + m->low_size) !=
		 m->low_size))
		__atomic_store_n(&dlog.mismatch, true, __ATOMIC_RELAXED);
}

bool tcg_dirty_log_ready(struct vm *vm)
{
	char err[VMM_ERR_MAX];

	return !tcg_uc_ready(err) && dlog.supported &&
	       !__atomic_load_n(&dlog.mismatch, __ATOMIC_RELAXED);
}

/* The words a harvest finds in the summary, taken into bitmap. */
static void harvest(uint64_t *bits, uint64_t *bitmap, uint64_t *words)
{
	uint64_t *sum = bits + dlog.nwords;

	for (uint64_t s = 0; s < (dlog.nwords + 63) / 64; s++) {
		uint64_t m = 0;

		if (__atomic_load_n(&sum[s], __ATOMIC_RELAXED))
			m = __atomic_exchange_n(&sum[s], 0, __ATOMIC_RELAXED);
		words[s] = m;
		for (; m; m &= m - 1) {
			uint64_t w = s * 64 + (uint64_t)__builtin_ctzll(m);

			bitmap[w] = __atomic_exchange_n(&bits[w], 0,
							__ATOMIC_RELAXED);
		}
	}
}

/* A stopped log's bits cleared, by its summary (the vCPUs paused). */
static void log_clear(uint64_t *bits)
{
	uint64_t *sum = bits + dlog.nwords;

	for (uint64_t s = 0; s < (dlog.nwords + 63) / 64; s++) {
		for (uint64_t m = sum[s]; m; m &= m - 1)
			bits[s * 64 + (uint64_t)__builtin_ctzll(m)] = 0;
		sum[s] = 0;
	}
}

/*
 * The accel op: see accel.h. A stop may come while the vCPUs run (after
 * a snapshot's pause): one may still hold the bitmap it loaded, so it is
 * kept, and cleared when the next log starts, with the vCPUs paused.
 */
int tcg_dirty_log(struct vm *vm, uint64_t *bitmap, uint64_t *words,
		  char *err)
{
	uint64_t *bits = __atomic_load_n(&dlog.bits, __ATOMIC_ACQUIRE);
	uint64_t n = accel_log_words(vm->mem.size);
	uint64_t all = n + accel_log_sum_words(vm->mem.size);

	if (!bitmap) {
		__atomic_store_n(&dlog.bits, NULL, __ATOMIC_RELEASE);
		if (bits)
			dlog.spare = bits;
		return 0;
	}
	if (!tcg_dirty_log_ready(vm))
		return vmm_failx(err, EOPNOTSUPP,
				 "the tcg accelerator keeps no dirty log with "
				 "this Unicorn");
	if (bits) {
		harvest(bits, bitmap, words);
		return 1;
	}
	bits = dlog.spare ? dlog.spare : calloc(all, 8);
	if (!bits)
		return vmm_fail(err, ENOMEM, "tcg dirty log");
	dlog.spare = NULL;
	dlog.npages = vm->mem.size / 4096;
	dlog.nwords = n; /* one VM per process: the spare's size */
	log_clear(bits);
	dlog.low_size = vm->mem.low_size;
	dlog.high_size = vm->mem.high_size;
	__atomic_store_n(&dlog.bits, bits, __ATOMIC_RELEASE);
	return 0;
}
