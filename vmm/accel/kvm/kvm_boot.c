/* SPDX-License-Identifier: MIT */
/*
 * A fresh boot on KVM: CPUID, boot MSRs, FPU defaults and the LAPIC's
 * LINT0/LINT1 wiring on every vCPU; the boot vCPU also gets the entry
 * state of the Linux 64-bit boot protocol (built by regs.c, neutral).
 */
#include <stdlib.h>

#include "../../vm.h"
#include "kvm.h"

static int setup_fpu(struct vcpu *vcpu, char *err)
{
	struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
	int ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_SET_FPU, &fpu);

	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_FPU) on vCPU %u",
				vcpu->id);
	return 0;
}

#define APIC_MODE_MASK 0x700u

static void lapic_set_mode(struct kvm_lapic_state *l, unsigned reg,
			   uint32_t mode_bits)
{
	uint32_t v;

	memcpy(&v, &l->regs[reg], 4);
	v = (v & ~APIC_MODE_MASK) | mode_bits;
	memcpy(&l->regs[reg], &v, 4);
}

/* LINT0 = ExtINT (the PIC's virtual wire), LINT1 = NMI. */
static int setup_lint(struct vcpu *vcpu, char *err)
{
	int fd = KVM_VCPU(vcpu)->fd;
	uint8_t reset[X86_LAPIC_SIZE];
	struct kvm_lapic_state l;
	int ret = kvm_ioctl(fd, KVM_GET_LAPIC, &l);

	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_LAPIC) on vCPU %u",
				vcpu->id);
	x86_lapic_reset(reset, vcpu->id, vcpu->id == 0);
	lapic_set_mode(&l, APIC_REG_LINT0,
		       x86_lapic_reg(reset, APIC_REG_LINT0) & APIC_MODE_MASK);
	lapic_set_mode(&l, APIC_REG_LINT1,
		       x86_lapic_reg(reset, APIC_REG_LINT1) & APIC_MODE_MASK);
	ret = kvm_ioctl(fd, KVM_SET_LAPIC, &l);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_LAPIC) on vCPU %u",
				vcpu->id);
	return 0;
}

/* The entry's registers, segments, tables, CRs and EFER over KVM's own. */
static int setup_entry(struct vcpu *vcpu, const struct x86_cpu_state *e,
		       char *err)
{
	int fd = KVM_VCPU(vcpu)->fd;
	struct kvm_vcpu_snapshot *k = calloc(1, sizeof(*k));
	struct kvm_sregs s;
	int ret;

	if (!k)
		return vmm_fail(err, ENOMEM, "boot state");
	ret = kvm_ioctl(fd, KVM_GET_SREGS, &s);
	if (ret < 0) {
		free(k);
		return vmm_fail(err, -ret, "ioctl(KVM_GET_SREGS)");
	}
	kvm_snapshot_from_x86(e, k, err);
	s.cs = k->sregs.cs, s.ds = k->sregs.ds, s.es = k->sregs.es;
	s.fs = k->sregs.fs, s.gs = k->sregs.gs, s.ss = k->sregs.ss;
	s.tr = k->sregs.tr, s.gdt = k->sregs.gdt, s.idt = k->sregs.idt;
	s.cr0 = e->cr0, s.cr3 = e->cr3, s.cr4 = e->cr4, s.efer = e->efer;
	ret = kvm_ioctl(fd, KVM_SET_SREGS, &s);
	if (ret < 0) {
		free(k);
		return vmm_fail(err, -ret, "ioctl(KVM_SET_SREGS)");
	}
	ret = kvm_ioctl(fd, KVM_SET_REGS, &k->regs);
	free(k);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_REGS)");
	return 0;
}

int kvm_vcpu_boot(struct vcpu *vcpu, const struct accel_boot_entry *e,
		  char *err)
{
	int ret;

	/* CPUID first: KVM decides from it which MSRs exist. */
	ret = kvm_cpuid_setup_vcpu(vcpu, err);
	ret = ret ?: kvm_msr_setup_boot(vcpu, err);
	ret = ret ?: setup_fpu(vcpu, err);
	ret = ret ?: setup_lint(vcpu, err);
	if (!ret && e)
		ret = setup_entry(vcpu, e->st, err);
	return ret;
}
