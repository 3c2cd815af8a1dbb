/* SPDX-License-Identifier: MIT */
/*
 * The complete KVM state of one x86 vCPU, in a fixed-layout versioned
 * struct (the kernel's uapi structs, which are ABI, plus counts), so that a
 * snapshot can store it as one blob.
 *
 * Save and restore happen while the VM is paused (vm_pause(): no vCPU is
 * inside KVM_RUN and no I/O exit is pending). Restore targets a vCPU that
 * has never run (a fresh VM from vm_create()).
 */
#ifndef LS_VMM_VCPU_STATE_H
#define LS_VMM_VCPU_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

struct vcpu;

#define VCPU_STATE_MAGIC     0x55504356u /* "VCPU" */
#define VCPU_STATE_VERSION   1
#define VCPU_STATE_MAX_MSRS  128
#define VCPU_STATE_MAX_CPUID 256
#define VCPU_STATE_MAX_XSAVE 16384 /* AMX needs ~11 KiB */

struct vcpu_state {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint32_t size; /* sizeof(struct vcpu_state) */
	uint32_t id;   /* vCPU id / APIC id */
	uint32_t tsc_khz;
	uint32_t nmsrs;
	uint32_t ncpuid;
	uint32_t xsave_size; /* bytes of xsave[] in use */
	struct kvm_mp_state mp_state;
	uint32_t pad;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_msr_entry msrs[VCPU_STATE_MAX_MSRS];
	struct kvm_cpuid_entry2 cpuid[VCPU_STATE_MAX_CPUID];
	uint8_t xsave[VCPU_STATE_MAX_XSAVE] __attribute__((aligned(64)));
};

/*
 * Order (kvm-notes 2.4, Firecracker's): MP_STATE first (it makes KVM
 * accept pending INIT/SIPI, which can change the rest), REGS, SREGS,
 * XSAVE, XCRS, DEBUGREGS, LAPIC, TSC_KHZ, CPUID, MSRs, VCPU_EVENTS last.
 */
int vcpu_state_save(struct vcpu *vcpu, struct vcpu_state *st, char *err);

/*
 * Order: TSC_KHZ (if the host differs by more than 250 ppm), CPUID,
 * MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, MSRs with the TSC
 * before TSC_DEADLINE, VCPU_EVENTS, then KVM_KVMCLOCK_CTRL.
 */
int vcpu_state_restore(struct vcpu *vcpu, const struct vcpu_state *st,
		       char *err);

/* Value of an MSR in a saved state; -ENOENT if it is not there. */
int vcpu_state_msr(const struct vcpu_state *st, uint32_t index,
		   uint64_t *value);

#endif /* LS_VMM_VCPU_STATE_H */
