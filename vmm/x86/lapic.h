/* SPDX-License-Identifier: MIT */
/*
 * A local APIC in user space, for accelerators without one in the kernel
 * (TCG). It holds the xAPIC register page (the same 1 KiB layout as the
 * snapshot's x86_cpu_state.lapic) and decodes what the guest writes; the
 * backend delivers the IPIs it asks for. What it models: ID, version, TPR,
 * LDR/DFR, SPIV, ESR, the LVTs and timer registers (stored, no timer
 * runs), and the ICR: INIT and start-up IPIs (how a guest starts its APs).
 * Fixed, NMI and other IPIs are reported as undeliverable.
 */
#ifndef LS_VMM_X86_LAPIC_H
#define LS_VMM_X86_LAPIC_H

#include <stdbool.h>
#include <stdint.h>

#include "cpu_state.h"

enum lapic_ipi_kind {
	LAPIC_IPI_NONE,
	LAPIC_IPI_INIT,
	LAPIC_IPI_SIPI,
	LAPIC_IPI_OTHER, /* fixed, lowest priority, NMI, SMI: not modelled */
};

/* Destination shorthands (ICR bits 18-19). */
enum lapic_dest {
	LAPIC_DEST_FIELD = 0, /* ICR_HI[31:24], physical */
	LAPIC_DEST_SELF = 1,
	LAPIC_DEST_ALL = 2,
	LAPIC_DEST_OTHERS = 3,
};

struct lapic_ipi {
	enum lapic_ipi_kind kind;
	enum lapic_dest shorthand;
	uint32_t dest;	 /* APIC id, with LAPIC_DEST_FIELD */
	uint8_t vector;	 /* SIPI: start at vector << 12 */
	uint32_t icr_lo; /* as written, for messages */
};

struct lapic {
	uint8_t regs[X86_LAPIC_SIZE];
};

void lapic_reset(struct lapic *l, unsigned id, bool bsp);
/* An MMIO read of `size` bytes at offset `off` of the APIC page. */
uint32_t lapic_mmio_read(struct lapic *l, unsigned off, unsigned size);
/*
 * An MMIO write; fills *ipi when the write sends one (ICR_LO), else sets
 * ipi->kind to LAPIC_IPI_NONE.
 */
void lapic_mmio_write(struct lapic *l, unsigned off, unsigned size,
		      uint32_t value, struct lapic_ipi *ipi);
/* Whether an IPI sent by `src` reaches APIC id `id`. */
bool lapic_ipi_targets(const struct lapic_ipi *ipi, unsigned src,
		       unsigned id);

#endif /* LS_VMM_X86_LAPIC_H */
