/* SPDX-License-Identifier: MIT */
/* The user-space local APIC (see lapic.h). */
#include <string.h>

#include "lapic.h"

#define ICR_VECTOR(v)	 ((v)&0xffu)
#define ICR_MODE(v)	 (((v) >> 8) & 7u)
#define ICR_LEVEL_ASSERT (1u << 14)
#define ICR_SHORTHAND(v) (((v) >> 18) & 3u)
#define ICR_RW_MASK	 0x000ccfffu /* what the guest may set in ICR_LO */
#define MODE_INIT	 5u
#define MODE_SIPI	 6u

void lapic_reset(struct lapic *l, unsigned id, bool bsp)
{
	x86_lapic_reset(l->regs, id, bsp);
}

uint32_t lapic_mmio_read(struct lapic *l, unsigned off, unsigned size)
{
	unsigned reg = off & ~0xfu;
	uint32_t v;

	/* Registers sit every 16 bytes; only the first dword is real. */
	if (reg >= X86_LAPIC_SIZE || (off & 0xf) >= 4)
		return 0;
	v = x86_lapic_reg(l->regs, reg);
	if (reg == APIC_REG_TMCCT)
		v = 0; /* no timer counts here */
	v >>= 8 * (off & 3);
	return size >= 4 ? v : v & ((1u << (8 * size)) - 1);
}

static void decode_icr(struct lapic *l, uint32_t lo, struct lapic_ipi *ipi)
{
	uint32_t mode = ICR_MODE(lo);

	*ipi = (struct lapic_ipi){
	    .shorthand = (enum lapic_dest)ICR_SHORTHAND(lo),
	    .dest = x86_lapic_reg(l->regs, APIC_REG_ICR_HI) >> 24,
	    .vector = (uint8_t)ICR_VECTOR(lo),
	    .icr_lo = lo,
	};
	if (mode == MODE_INIT)
		/* INIT level de-assert only resets arbitration ids */
		ipi->kind = (lo & ICR_LEVEL_ASSERT) ? LAPIC_IPI_INIT
						    : LAPIC_IPI_NONE;
	else if (mode == MODE_SIPI)
		ipi->kind = LAPIC_IPI_SIPI;
	else
		ipi->kind = LAPIC_IPI_OTHER;
}

void lapic_mmio_write(struct lapic *l, unsigned off, unsigned size,
		      uint32_t value, struct lapic_ipi *ipi)
{
	unsigned reg = off & ~0xfu;

	ipi->kind = LAPIC_IPI_NONE;
	if (reg >= X86_LAPIC_SIZE || (off & 0xf) || size != 4)
		return; /* the SDM requires aligned dword accesses */
	switch (reg) {
	case APIC_REG_VERSION:
	case APIC_REG_TMCCT:
		return; /* read-only */
	case APIC_REG_EOI:
		return; /* nothing is ever in service here */
	case APIC_REG_ESR:
		x86_lapic_set_reg(l->regs, reg, 0);
		return;
	case APIC_REG_ICR_LO:
		/* Delivery is instantaneous: the busy bit never shows. */
		x86_lapic_set_reg(l->regs, reg, value & ICR_RW_MASK);
		decode_icr(l, value, ipi);
		return;
	default:
		x86_lapic_set_reg(l->regs, reg, value);
		return;
	}
}

bool lapic_ipi_targets(const struct lapic_ipi *ipi, unsigned src, unsigned id)
{
	switch (ipi->shorthand) {
	case LAPIC_DEST_SELF:
		return id == src;
	case LAPIC_DEST_ALL:
		return true;
	case LAPIC_DEST_OTHERS:
		return id != src;
	default:
		return ipi->dest == 0xff || ipi->dest == id;
	}
}
