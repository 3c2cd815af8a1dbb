/* SPDX-License-Identifier: MIT */
/*
 * Everything but RAM that a VM snapshot carries: the devices, every vCPU
 * and the VM-wide state, as one fixed-layout versioned blob (the per-part
 * structs in devices.h and x86/cpu_state.h, then one struct
 * x86_cpu_state per vCPU), whichever accelerator runs the VM.
 *
 * Orders (kvm-notes 2.3/2.4): save devices first (saving one may raise an
 * interrupt that the KVM state must then include), then the vCPUs, then
 * the VM; restore the vCPUs, then the VM, then the devices (so what they
 * inject is not overwritten).
 */
#ifndef LS_VMM_MACHINE_STATE_H
#define LS_VMM_MACHINE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/devices.h"
#include "x86/cpu_state.h"

struct vm;

#define MACHINE_STATE_MAGIC   0x4843414du /* "MACH" */
#define MACHINE_STATE_VERSION 2

struct machine_state {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint64_t size; /* machine_state_size(ncpus) */
	uint32_t ncpus;
	uint32_t pad;
	uint64_t mem_bytes;
	struct serial_state serial;
	struct i8042_state i8042;
	struct rtc_state rtc;
	struct pio_sink_state sink;
	struct x86_vm_state vm;
	struct x86_cpu_state vcpus[]; /* ncpus of them */
};

size_t machine_state_size(unsigned ncpus);

/* The VM must be paused (vm_pause()) or never started. */
int machine_state_save(struct vm *vm, struct machine_state *st, char *err);

/*
 * Into a fresh VM from vm_create() with the same vCPU count and RAM size
 * (RAM contents are the caller's business), before vm_start().
 * advance_clock: see accel_ops.vm_set_state.
 */
int machine_state_restore(struct vm *vm, const struct machine_state *st,
			  bool advance_clock, char *err);

#endif /* LS_VMM_MACHINE_STATE_H */
