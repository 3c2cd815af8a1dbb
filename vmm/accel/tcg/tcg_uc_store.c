/* SPDX-License-Identifier: MIT */
/*
 * Unicorn 2.0.1's guest stores, made cheap.
 *
 * Unicorn 2.0.1 stubs out QEMU's dirty-memory bitmap: every RAM page
 * counts as holding translated code, so *every* guest store to RAM leaves
 * the generated code's fast path for notdirty_write(), which brackets a
 * check for code on the page (a radix lookup, nothing when the page has
 * none) with page_collection_lock()/page_collection_unlock(). Those two
 * allocate and free a GTree and its nodes on each store: measured with
 * perf on the default guest, malloc/free and g_tree_* were over half of
 * the vCPU thread's time, and the guest ran 20 000 page writes/s against
 * QEMU 7.2 TCG's 250 000. (Unicorn 2.0.2 fixed the store path upstream,
 * commit d0103576; Debian 12 ships 2.0.1.)
 *
 * In Unicorn's build the collection is bookkeeping only: the page locks
 * it would take are compiled out (`#if 0` around every lock and unlock in
 * its translate-all.c), so nothing reads the tree but its own destructor.
 * These two definitions, exported by the binary (vmm/meson.build), take
 * precedence over the library's for its calls through the PLT and make
 * the collection a constant, with no allocation. Translated code is still
 * invalidated exactly as before when a store hits it (the guest's boot
 * self-check rewrites code it ran and runs it again, tests/vmm/test_boot.py).
 *
 * Only for the version read above: with any other one the calls go to the
 * library's own functions, resolved by tcg_uc_store_init().
 */
#include <dlfcn.h>
#include <stdint.h>

#include "tcg.h"

/* Unicorn's internal types, opaque here. */
struct uc_struct;
struct page_collection;

typedef struct page_collection *collection_lock_fn(struct uc_struct *uc,
						   uint64_t start,
						   uint64_t end);
typedef void collection_unlock_fn(struct page_collection *set);

/* Process-wide like the library whose functions these stand in for. */
static struct {
	collection_lock_fn *lock;     /* NULL: the constant collection */
	collection_unlock_fn *unlock;
} store_fix;

static char inert_collection;

/* uc_version() of the one release whose collection we know is inert. */
#define UC_INERT_COLLECTION_VERSION 0x020001u /* 2.0.1, any .postN */

/* The symbols the library calls, x86 build (Unicorn suffixes per arch). */
struct page_collection *page_collection_lock_x86_64(struct uc_struct *uc,
						    uint64_t start,
						    uint64_t end);
void page_collection_unlock_x86_64(struct page_collection *set);

struct page_collection *page_collection_lock_x86_64(struct uc_struct *uc,
						    uint64_t start,
						    uint64_t end)
{
	tcg_dirty_mark_ram(start, end); /* every guest store to RAM */
	if (store_fix.lock)
		return store_fix.lock(uc, start, end);
	return (struct page_collection *)&inert_collection;
}

void page_collection_unlock_x86_64(struct page_collection *set)
{
	if (store_fix.unlock)
		store_fix.unlock(set);
}

/*
 * Called once the library is loaded, before any engine exists: any
 * version but the one checked keeps the library's own functions (a
 * library without them never calls these).
 */
void tcg_uc_store_init(void *lib, unsigned int version)
{
	bool inert = (version >> 8) == UC_INERT_COLLECTION_VERSION;

	/* Only there does every store come here: the dirty log needs it. */
	tcg_dirty_init(lib, inert);
	if (inert)
		return;
	store_fix.lock = (collection_lock_fn *)dlsym(
	    lib, "page_collection_lock_x86_64");
	store_fix.unlock = (collection_unlock_fn *)dlsym(
	    lib, "page_collection_unlock_x86_64");
}
