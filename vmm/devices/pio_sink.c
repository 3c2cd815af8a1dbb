/* SPDX-License-Identifier: MIT */
/*
 * Every port no device claims: writes are dropped and reads return all
 * ones, which is what an empty ISA bus returns, so probes of absent
 * devices (other UARTs, LPT, PCI conf1 at 0xcf8) fail fast. The one port
 * with meaning is 0x92, "system control port A": bit 1 is the A20 gate
 * (always on) and a write with bit 0 set is a fast CPU reset.
 */
#include "devices.h"
#include "../util.h"

#define PORT_SYSCTL_A  0x92
#define SYSCTL_A_RESET 0x01
#define SYSCTL_A_A20   0x02

void pio_sink_init(struct pio_sink *s, dev_reset_fn reset, void *opaque)
{
	s->port92 = SYSCTL_A_A20;
	s->reset = reset;
	s->reset_opaque = opaque;
}

void pio_sink_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
		 bool is_write)
{
	struct pio_sink *s = opaque;

	if (!is_write) {
		memset(data, 0xff, size);
		if (port == PORT_SYSCTL_A)
			data[0] = __atomic_load_n(&s->port92, __ATOMIC_RELAXED);
		return;
	}
	if (port != PORT_SYSCTL_A)
		return;
	/* A single byte, written by one vCPU at a time in practice. */
	__atomic_store_n(&s->port92, (data[0] & ~SYSCTL_A_RESET) | SYSCTL_A_A20,
			 __ATOMIC_RELAXED);
	if ((data[0] & SYSCTL_A_RESET) && s->reset)
		s->reset(s->reset_opaque, "port 0x92 fast reset");
}

void pio_sink_save(struct pio_sink *s, struct pio_sink_state *st)
{
	*st = (struct pio_sink_state){0};
	dev_state_hdr_init(&st->hdr, PIO_SINK_STATE_MAGIC,
			   PIO_SINK_STATE_VERSION, sizeof(*st));
	st->port92 = __atomic_load_n(&s->port92, __ATOMIC_RELAXED);
}

int pio_sink_restore(struct pio_sink *s, const struct pio_sink_state *st,
		     char *err)
{
	int ret = dev_state_hdr_check(&st->hdr, PIO_SINK_STATE_MAGIC,
				      PIO_SINK_STATE_VERSION, sizeof(*st),
				      "pio sink", err);

	if (ret)
		return ret;
	__atomic_store_n(&s->port92, st->port92 | SYSCTL_A_A20,
			 __ATOMIC_RELAXED);
	return 0;
}
