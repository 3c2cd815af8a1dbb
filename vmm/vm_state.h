/* SPDX-License-Identifier: MIT */
/*
 * VM-wide KVM state: the in-kernel PIT, kvmclock and the irqchip (PIC
 * master, PIC slave, IOAPIC), in a fixed-layout versioned struct. Memory
 * slots, TSS and PIT flags are re-created by vm_create() itself.
 */
#ifndef LS_VMM_VM_STATE_H
#define LS_VMM_VM_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;

#define VM_STATE_MAGIC	 0x54534d56u /* "VMST" */
#define VM_STATE_VERSION 1

struct vm_state {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint32_t size; /* sizeof(struct vm_state) */
	uint32_t pad;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct kvm_irqchip pic_master;
	struct kvm_irqchip pic_slave;
	struct kvm_irqchip ioapic;
};

/* Save with every vCPU paused: the clock must not move under them. */
int vm_state_save(struct vm *vm, struct vm_state *st, char *err);

/*
 * Restores PIT2, then the clock, then PIC master, PIC slave, IOAPIC.
 * With advance_clock, kvmclock moves on by the wall time elapsed since
 * the save (KVM_CLOCK_REALTIME); otherwise guest time resumes where it
 * stopped.
 */
int vm_state_restore(struct vm *vm, const struct vm_state *st,
		     bool advance_clock, char *err);

#endif /* LS_VMM_VM_STATE_H */
