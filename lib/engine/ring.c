/* SPDX-License-Identifier: MIT */
/*
 * The copy buffer: a bounded ring of page copies made by the fault thread
 * and written out by the writer thread. Its size is the most memory a
 * snapshot in copy mode ever takes beyond the process's own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "snap.h"

#define RING_PAD UINT32_MAX

int ring_init(struct copy_ring *ring, size_t bytes, struct ls_ctx *ctx)
{
	memset(ring, 0, sizeof(*ring));
	pthread_mutex_init(&ring->lock, NULL);
	ring->nslots = bytes / LS_SMALL_PAGE;
	if (!ring->nslots)
		return 0;
	/* page aligned (O_DIRECT sinks), faulted in before begin */
	ring->data = ls_buf_take(ctx, ring->nslots * LS_SMALL_PAGE);
	if (!ring->data) {
		ring->nslots = 0;
		return -ENOMEM;
	}
	ring->ent = calloc(ring->nslots, sizeof(*ring->ent));
	if (!ring->ent) {
		ls_buf_give(ctx, ring->data, ring->nslots * LS_SMALL_PAGE);
		ring->data = NULL;
		ring->nslots = 0;
		return -ENOMEM;
	}
	return 0;
}

void ring_free(struct copy_ring *ring)
{
	ls_free_prefaulted(ring->data, ring->nslots * LS_SMALL_PAGE);
	free(ring->ent);
	pthread_mutex_destroy(&ring->lock);
	ring->data = NULL;
	ring->ent = NULL;
}

uint64_t ring_free_slots(struct copy_ring *ring)
{
	uint64_t free_slots;

	pthread_mutex_lock(&ring->lock);
	free_slots = ring->nslots - (ring->head - ring->tail);
	pthread_mutex_unlock(&ring->lock);
	return free_slots;
}

int64_t ring_reserve(struct copy_ring *ring, uint32_t region, uint64_t page,
		     uint32_t nslots)
{
	uint64_t pos, pad, used;
	struct ring_ent *e;
	int64_t slot = -1;

	if (nslots > ring->nslots)
		return -1;
	pthread_mutex_lock(&ring->lock);
	pos = ring->head % ring->nslots;
	pad = pos + nslots > ring->nslots ? ring->nslots - pos : 0;
	used = ring->head - ring->tail;
	if (used + pad + nslots > ring->nslots)
		goto out;
	if (pad) {
		e = &ring->ent[pos];
		e->region = RING_PAD;
		e->nslots = (uint32_t)pad;
		atomic_store_explicit(&e->ready, true, memory_order_relaxed);
		ring->head += pad;
		pos = 0;
	}
	e = &ring->ent[pos];
	e->region = region;
	e->page = page;
	e->nslots = nslots;
	atomic_store_explicit(&e->ready, false, memory_order_relaxed);
	ring->head += nslots;
	if (ring->head - ring->tail > ring->hwm_slots)
		ring->hwm_slots = ring->head - ring->tail;
	slot = (int64_t)pos;
out:
	pthread_mutex_unlock(&ring->lock);
	return slot;
}

void ring_publish(struct copy_ring *ring, int64_t slot)
{
	atomic_store_explicit(&ring->ent[slot].ready, true,
			      memory_order_release);
}

int64_t ring_peek(struct copy_ring *ring, uint32_t *count)
{
	struct ring_ent *e, *next;
	int64_t slot = -1;
	uint64_t pos, at, end;

	*count = 0;
	pthread_mutex_lock(&ring->lock);
	while (ring->tail != ring->head) {
		pos = ring->tail % ring->nslots;
		e = &ring->ent[pos];
		if (!atomic_load_explicit(&e->ready, memory_order_acquire))
			break;
		if (e->region != RING_PAD) {
			slot = (int64_t)pos;
			break;
		}
		ring->tail += e->nslots;
	}
	if (slot < 0)
		goto out;
	/* Extend over the following entries of the next pages, unwrapped. */
	end = pos + (ring->head - ring->tail);
	if (end > ring->nslots)
		end = ring->nslots;
	*count = 1;
	for (at = pos + e->nslots; at + e->nslots <= end; at += e->nslots) {
		next = &ring->ent[at];
		if (!atomic_load_explicit(&next->ready, memory_order_acquire) ||
		    next->region != e->region || next->nslots != e->nslots ||
		    next->page != e->page + *count)
			break;
		++*count;
	}
out:
	pthread_mutex_unlock(&ring->lock);
	return slot;
}

void ring_release(struct copy_ring *ring, int64_t slot, uint32_t count)
{
	pthread_mutex_lock(&ring->lock);
	ring->tail += (uint64_t)ring->ent[slot].nslots * count;
	pthread_mutex_unlock(&ring->lock);
}
