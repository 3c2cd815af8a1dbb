/* SPDX-License-Identifier: MIT */
/*
 * The KVM system fd. Everything the VMM requires of the host kernel is
 * checked here once, so a missing feature fails at start with a message
 * naming it rather than later with an odd ioctl error.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../../util.h"
#include "kvm.h"

struct required_cap {
	long cap;
	const char *name;
};

/*
 * The in-kernel irqchip and PIT (booting), and every piece of vCPU and VM
 * state a snapshot carries (saving and restoring).
 */
static const struct required_cap required_caps[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_PIT_STATE2, "KVM_CAP_PIT_STATE2"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
    {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
    {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
    {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
    {KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK"},
    {KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

int kvm_ioctl(int fd, unsigned long req, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret < 0 && errno == EINTR);
	return ret < 0 ? -errno : ret;
}

int kvm_check_cap(int fd, long cap)
{
	int ret = ioctl(fd, KVM_CHECK_EXTENSION, cap);

	return ret < 0 ? 0 : ret;
}

/* KVM_GET_SUPPORTED_CPUID: E2BIG means "more entries", so grow and retry. */
static int read_supported_cpuid(struct kvm_sys *kvm, char *err)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c;
		int ret;

		c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return vmm_fail(err, ENOMEM, "supported CPUID");
		c->nent = n;
		ret = kvm_ioctl(kvm->fd, KVM_GET_SUPPORTED_CPUID, c);
		if (ret == 0) {
			kvm->cpuid = c;
			return 0;
		}
		free(c);
		if (ret != -E2BIG)
			return vmm_fail(err, -ret,
					"ioctl(KVM_GET_SUPPORTED_CPUID)");
	}
	return vmm_failx(err, E2BIG,
			 "ioctl(KVM_GET_SUPPORTED_CPUID): more than 4096 "
			 "entries");
}

static int read_msr_index_list(struct kvm_sys *kvm, char *err)
{
	struct kvm_msr_list probe = {.nmsrs = 0};
	struct kvm_msr_list *l;
	int ret;

	/* The first call fails with E2BIG and tells the count. */
	ret = kvm_ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, &probe);
	if (ret < 0 && ret != -E2BIG)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_MSR_INDEX_LIST)");
	l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(l->indices[0]));
	if (!l)
		return vmm_fail(err, ENOMEM, "MSR index list");
	l->nmsrs = probe.nmsrs;
	ret = kvm_ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, l);
	if (ret < 0) {
		free(l);
		return vmm_fail(err, -ret, "ioctl(KVM_GET_MSR_INDEX_LIST)");
	}
	kvm->msrs = l;
	return 0;
}

int kvm_sys_open(struct kvm_sys *kvm, char *err)
{
	int ret;

	*kvm = (struct kvm_sys){.fd = -1};
	kvm->fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm->fd < 0)
		return vmm_fail(err, errno, "open /dev/kvm");
	ret = ioctl(kvm->fd, KVM_GET_API_VERSION, 0);
	if (ret != KVM_API_VERSION) {
		kvm_sys_close(kvm);
		return vmm_failx(err, ENOTSUP,
				 "/dev/kvm: API version %d, need %d", ret,
				 KVM_API_VERSION);
	}
	for (size_t i = 0; i < ARRAY_SIZE(required_caps); i++) {
		if (!kvm_check_cap(kvm->fd, required_caps[i].cap)) {
			kvm_sys_close(kvm);
			return vmm_failx(err, ENOTSUP,
					 "/dev/kvm lacks %s, which the VMM "
					 "needs",
					 required_caps[i].name);
		}
	}
	kvm->vcpu_mmap_size = ioctl(kvm->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (kvm->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
		ret = vmm_fail(err, errno ? errno : EINVAL,
			       "ioctl(KVM_GET_VCPU_MMAP_SIZE)");
		kvm_sys_close(kvm);
		return ret;
	}
	kvm->max_vcpus = kvm_check_cap(kvm->fd, KVM_CAP_MAX_VCPUS);
	if (kvm->max_vcpus <= 0)
		kvm->max_vcpus = kvm_check_cap(kvm->fd, KVM_CAP_NR_VCPUS);
	ret = read_supported_cpuid(kvm, err);
	if (!ret)
		ret = read_msr_index_list(kvm, err);
	if (ret)
		kvm_sys_close(kvm);
	return ret;
}

/*
 * KVM works here: /dev/kvm as kvm_sys_open() wants it, and a VM can be
 * created (a /dev/kvm without virtualization under it fails there).
 */
int kvm_sys_probe(char *err)
{
	struct kvm_sys kvm;
	int ret = kvm_sys_open(&kvm, err), vm;

	if (ret)
		return ret;
	vm = kvm_ioctl(kvm.fd, KVM_CREATE_VM, 0);
	if (vm < 0)
		ret = vmm_fail(err, -vm, "ioctl(KVM_CREATE_VM)");
	else
		close(vm);
	kvm_sys_close(&kvm);
	return ret;
}

void kvm_sys_close(struct kvm_sys *kvm)
{
	if (kvm->fd >= 0)
		close(kvm->fd);
	free(kvm->cpuid);
	free(kvm->msrs);
	*kvm = (struct kvm_sys){.fd = -1};
}
