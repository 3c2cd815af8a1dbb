/* SPDX-License-Identifier: MIT */
/* The port-I/O bus: a short table searched linearly (a handful of devices). */
#include <errno.h>

#include "devices.h"
#include "../util.h"

void dev_state_hdr_init(struct dev_state_hdr *h, uint32_t magic,
			uint16_t version, size_t size)
{
	h->magic = magic;
	h->version = version;
	h->size = (uint16_t)size;
}

int dev_state_hdr_check(const struct dev_state_hdr *h, uint32_t magic,
			uint16_t version, size_t size, const char *dev,
			char *err)
{
	if (h->magic != magic)
		return vmm_failx(err, EINVAL,
				 "%s state: bad magic 0x%08x (want 0x%08x)",
				 dev, h->magic, magic);
	if (h->version != version)
		return vmm_failx(err, EINVAL,
				 "%s state: version %u, this VMM reads %u", dev,
				 h->version, version);
	if (h->size != size)
		return vmm_failx(err, EINVAL, "%s state: size %u, want %zu",
				 dev, h->size, size);
	return 0;
}

int pio_bus_add(struct pio_bus *bus, const char *name, uint16_t base,
		uint16_t len, pio_fn io, void *opaque)
{
	if (bus->n == PIO_BUS_MAX)
		return -ENOSPC;
	bus->devs[bus->n++] = (struct pio_dev){
	    .name = name,
	    .base = base,
	    .len = len,
	    .io = io,
	    .opaque = opaque,
	};
	return 0;
}

void pio_bus_dispatch(struct pio_bus *bus, uint16_t port, uint8_t *data,
		      uint32_t size, bool is_write)
{
	for (unsigned i = 0; i < bus->n; i++) {
		struct pio_dev *d = &bus->devs[i];

		if (port >= d->base && port - d->base < d->len) {
			d->io(d->opaque, port, data, size, is_write);
			return;
		}
	}
	bus->fallback(bus->fallback_opaque, port, data, size, is_write);
}
