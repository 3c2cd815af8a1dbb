/* SPDX-License-Identifier: MIT */
/*
 * MSRs: the values a vCPU boots with, and which MSRs a snapshot carries.
 */
#include <stdlib.h>

#include "../../vm.h"
#include "kvm.h"

#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR	      0xc0000081
#define MSR_LSTAR	      0xc0000082
#define MSR_CSTAR	      0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102

#define MISC_ENABLE_FAST_STRING 1ull
#define MTRR_ENABLE		(1ull << 11)
#define MTRR_TYPE_WB		6ull

static const struct kvm_msr_entry boot_msrs[] = {
    {.index = MSR_IA32_SYSENTER_CS},
    {.index = MSR_IA32_SYSENTER_ESP},
    {.index = MSR_IA32_SYSENTER_EIP},
    {.index = MSR_STAR},
    {.index = MSR_CSTAR},
    {.index = MSR_KERNEL_GS_BASE},
    {.index = MSR_SYSCALL_MASK},
    {.index = MSR_LSTAR},
    {.index = X86_MSR_TSC},
    {.index = MSR_IA32_MISC_ENABLE, .data = MISC_ENABLE_FAST_STRING},
    /* MTRRs on, default type write-back: all RAM cacheable */
    {.index = MSR_MTRR_DEF_TYPE, .data = MTRR_ENABLE | MTRR_TYPE_WB},
};

int kvm_msr_setup_boot(struct vcpu *vcpu, char *err)
{
	const unsigned n = ARRAY_SIZE(boot_msrs);
	struct kvm_msrs *m = calloc(1, sizeof(*m) + sizeof(boot_msrs));
	int ret;

	if (!m)
		return vmm_fail(err, ENOMEM, "boot MSRs");
	m->nmsrs = n;
	memcpy(m->entries, boot_msrs, sizeof(boot_msrs));
	ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_SET_MSRS, m);
	free(m);
	/* KVM_SET_MSRS returns how many it wrote and stops at a failure. */
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_MSRS) on vCPU %u",
				vcpu->id);
	if ((unsigned)ret != n)
		return vmm_failx(err, EINVAL,
				 "vCPU %u: KVM refused boot MSR 0x%x (%d of "
				 "%u written)",
				 vcpu->id, boot_msrs[ret].index, ret, n);
	return 0;
}

struct msr_range {
	uint32_t first, last;
};

/*
 * What a vCPU snapshot carries: architectural state a guest relies on and
 * that KVM lets userspace read back and write again. Feature and
 * capability MSRs (ARCH_CAPABILITIES, VMX_*, PMU counters, MCE banks) are
 * host facts or unsupported here and are left out.
 */
static const struct msr_range serializable[] = {
    {0x10, 0x10},	      /* TSC */
    {0x11, 0x12},	      /* KVM kvmclock, old numbers */
    {0x1b, 0x1b},	      /* APIC_BASE */
    {0x3b, 0x3b},	      /* TSC_ADJUST */
    {0x48, 0x48},	      /* SPEC_CTRL */
    {0x174, 0x176},	      /* SYSENTER_CS/ESP/EIP */
    {0x1a0, 0x1a0},	      /* MISC_ENABLE */
    {0x200, 0x2ff},	      /* MTRRs, PAT, MTRRdefType */
    {0x6e0, 0x6e0},	      /* TSC_DEADLINE */
    {0xda0, 0xda0},	      /* XSS */
    {0xc0000080, 0xc0000084}, /* EFER, STAR, LSTAR, CSTAR, SFMASK */
    {0xc0000100, 0xc0000103}, /* FS/GS/KERNEL_GS base, TSC_AUX */
    {0x4b564d00, 0x4b564dff}, /* KVM paravirtual MSRs */
};

bool kvm_msr_is_serializable(uint32_t index)
{
	for (size_t i = 0; i < ARRAY_SIZE(serializable); i++)
		if (index >= serializable[i].first &&
		    index <= serializable[i].last)
			return true;
	return false;
}

/*
 * MSRs KVM emulates but leaves out of KVM_GET_MSR_INDEX_LIST (seen here:
 * the MTRRs, which the boot sets): variable ranges, fixed ranges and the
 * default type. Tried like the listed ones; unreadable ones are dropped.
 */
static const uint32_t unlisted[] = {
    0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207, /* var */
    0x208, 0x209, 0x20a, 0x20b, 0x20c, 0x20d, 0x20e, 0x20f, 0x250,
    0x258, 0x259,						   /* fixed */
    0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, 0x2ff, /* default */
};

unsigned kvm_msr_unlisted(const uint32_t **list)
{
	*list = unlisted;
	return ARRAY_SIZE(unlisted);
}
