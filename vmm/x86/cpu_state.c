/* SPDX-License-Identifier: MIT */
/* Helpers over the backend-neutral vCPU and VM state (cpu_state.h). */
#include <errno.h>
#include <string.h>

#include "../util.h"
#include "cpu_state.h"

void x86_cpu_state_init(struct x86_cpu_state *st, unsigned id)
{
	memset(st, 0, sizeof(*st));
	st->magic = X86_CPU_STATE_MAGIC;
	st->version = X86_CPU_STATE_VERSION;
	st->size = sizeof(*st);
	st->id = id;
}

int x86_cpu_state_check(const struct x86_cpu_state *st, unsigned id,
			char *err)
{
	if (st->magic != X86_CPU_STATE_MAGIC ||
	    st->version != X86_CPU_STATE_VERSION || st->size != sizeof(*st))
		return vmm_failx(err, EINVAL,
				 "vCPU state: bad magic, version %u or size %u "
				 "(this build reads version %d, %zu bytes)",
				 st->version, st->size, X86_CPU_STATE_VERSION,
				 sizeof(*st));
	if (st->id != id)
		return vmm_failx(err, EINVAL,
				 "vCPU state of vCPU %u restored into vCPU %u",
				 st->id, id);
	if (st->nmsrs > X86_MAX_MSRS || st->ncpuid > X86_MAX_CPUID ||
	    st->xsave_size > X86_XSAVE_MAX || st->priv_size > X86_PRIV_MAX ||
	    st->mp_state > X86_MP_SIPI_RECEIVED)
		return vmm_failx(err, EINVAL,
				 "vCPU %u state: %u MSRs, %u CPUID entries, %u "
				 "XSAVE bytes, %u private bytes or MP state %u "
				 "out of range",
				 st->id, st->nmsrs, st->ncpuid, st->xsave_size,
				 st->priv_size, st->mp_state);
	return 0;
}

int x86_cpu_state_msr(const struct x86_cpu_state *st, uint32_t index,
		      uint64_t *value)
{
	for (uint32_t i = 0; i < st->nmsrs && i < X86_MAX_MSRS; i++) {
		if (st->msrs[i].index == index) {
			*value = st->msrs[i].data;
			return 0;
		}
	}
	return -ENOENT;
}

int x86_cpu_state_set_msr(struct x86_cpu_state *st, uint32_t index,
			  uint64_t value)
{
	for (uint32_t i = 0; i < st->nmsrs; i++) {
		if (st->msrs[i].index == index) {
			st->msrs[i].data = value;
			return 0;
		}
	}
	if (st->nmsrs >= X86_MAX_MSRS)
		return -E2BIG;
	st->msrs[st->nmsrs++] = (struct x86_msr){.index = index, .data = value};
	return 0;
}

void x86_vm_state_init(struct x86_vm_state *st, const char *backend)
{
	memset(st, 0, sizeof(*st));
	st->magic = X86_VM_STATE_MAGIC;
	st->version = X86_VM_STATE_VERSION;
	st->size = sizeof(*st);
	snprintf(st->backend, sizeof(st->backend), "%s", backend);
}

int x86_vm_state_check(const struct x86_vm_state *st, char *err)
{
	if (st->magic != X86_VM_STATE_MAGIC ||
	    st->version != X86_VM_STATE_VERSION || st->size != sizeof(*st) ||
	    st->priv_size > X86_VM_PRIV_MAX ||
	    !memchr(st->backend, 0, sizeof(st->backend)))
		return vmm_failx(err, EINVAL,
				 "VM state: bad magic, version %u, size %u or "
				 "private size %u",
				 st->version, st->size, st->priv_size);
	return 0;
}

uint32_t x86_lapic_reg(const uint8_t page[X86_LAPIC_SIZE], unsigned off)
{
	uint32_t v;

	memcpy(&v, page + off, sizeof(v));
	return v;
}

void x86_lapic_set_reg(uint8_t page[X86_LAPIC_SIZE], unsigned off, uint32_t v)
{
	memcpy(page + off, &v, sizeof(v));
}

#define APIC_LVT_MASKED	 (1u << 16)
#define APIC_MODE_NMI	 (4u << 8)
#define APIC_MODE_EXTINT (7u << 8)
#define APIC_VERSION_VAL 0x50014 /* version 0x14, 6 LVT entries */

/*
 * Power-on values, with LINT0 = ExtINT (the PIC's virtual wire) and LINT1
 * = NMI, as the VMM wires them on every backend (and firmware would).
 */
void x86_lapic_reset(uint8_t page[X86_LAPIC_SIZE], unsigned id, bool bsp)
{
	(void)bsp;
	memset(page, 0, X86_LAPIC_SIZE);
	x86_lapic_set_reg(page, APIC_REG_ID, id << 24);
	x86_lapic_set_reg(page, APIC_REG_VERSION, APIC_VERSION_VAL);
	x86_lapic_set_reg(page, APIC_REG_DFR, 0xffffffffu);
	x86_lapic_set_reg(page, APIC_REG_SPIV, 0xff);
	x86_lapic_set_reg(page, APIC_REG_LVTT, APIC_LVT_MASKED);
	x86_lapic_set_reg(page, APIC_REG_LVTTHMR, APIC_LVT_MASKED);
	x86_lapic_set_reg(page, APIC_REG_LVTPC, APIC_LVT_MASKED);
	x86_lapic_set_reg(page, APIC_REG_LINT0, APIC_MODE_EXTINT);
	x86_lapic_set_reg(page, APIC_REG_LINT1, APIC_MODE_NMI);
	x86_lapic_set_reg(page, APIC_REG_LVTERR, APIC_LVT_MASKED);
}
