/* SPDX-License-Identifier: MIT */
/*
 * Per-vCPU CPUID. Starts from KVM_GET_SUPPORTED_CPUID and edits only what
 * must differ per vCPU or what the VMM does not emulate:
 *   - leaf 1: initial APIC id, logical processor count, hypervisor bit;
 *   - leaves 0xB/0x1F: x2APIC id and a flat topology (one thread per core,
 *     ncpus cores);
 *   - VMX/SVM hidden, so a snapshot never needs nested state;
 *   - leaf 6 energy-performance bias hidden (its MSR is not emulated).
 * KVM derives which MSRs exist from the guest CPUID, so this runs before
 * any MSR is set.
 */
#include <stdlib.h>

#include "../../vm.h"
#include "kvm.h"

#define CPUID_1_ECX_VMX	       (1u << 5)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_1_EDX_HTT	       (1u << 28)
#define CPUID_6_ECX_EPB	       (1u << 3)
#define CPUID_80000001_ECX_SVM (1u << 2)

static unsigned order_of(unsigned n)
{
	unsigned shift = 0;

	while ((1u << shift) < n)
		shift++;
	return shift;
}

static void edit_topology_leaf(struct kvm_cpuid_entry2 *e, unsigned apic_id,
			       unsigned ncpus)
{
	e->edx = apic_id;
	switch (e->index) {
	case 0: /* SMT level: one thread per core */
		e->eax = 0;
		e->ebx = 1;
		e->ecx = (1u << 8) | e->index;
		break;
	case 1: /* core level: every vCPU */
		e->eax = order_of(ncpus);
		e->ebx = ncpus;
		e->ecx = (2u << 8) | e->index;
		break;
	default: /* no further level */
		e->eax = 0;
		e->ebx = 0;
		e->ecx = e->index;
		break;
	}
}

static void edit_entry(struct kvm_cpuid_entry2 *e, unsigned apic_id,
		       unsigned ncpus)
{
	switch (e->function) {
	case 1:
		e->ebx = (e->ebx & 0x0000ffffu) | (apic_id << 24) |
			 ((ncpus & 0xff) << 16);
		if (ncpus > 1)
			e->edx |= CPUID_1_EDX_HTT;
		e->ecx |= CPUID_1_ECX_HYPERVISOR;
		e->ecx &= ~CPUID_1_ECX_VMX;
		break;
	case 6:
		e->ecx &= ~CPUID_6_ECX_EPB;
		break;
	case 0xb:
	case 0x1f:
		edit_topology_leaf(e, apic_id, ncpus);
		break;
	case 0x80000001:
		e->ecx &= ~CPUID_80000001_ECX_SVM;
		break;
	default:
		break;
	}
}

int kvm_cpuid_setup_vcpu(struct vcpu *vcpu, char *err)
{
	const struct kvm_cpuid2 *sup = KVM_VM(vcpu->vm)->sys.cpuid;
	size_t bytes = sizeof(*sup) + sup->nent * sizeof(sup->entries[0]);
	struct kvm_cpuid2 *c = malloc(bytes);
	int ret;

	if (!c)
		return vmm_fail(err, ENOMEM, "CPUID for vCPU %u", vcpu->id);
	memcpy(c, sup, bytes);
	for (unsigned i = 0; i < c->nent; i++)
		edit_entry(&c->entries[i], vcpu->id, vcpu->vm->ncpus);
	ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_SET_CPUID2, c);
	free(c);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_CPUID2) on vCPU %u",
				vcpu->id);
	return 0;
}
