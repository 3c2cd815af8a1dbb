/* SPDX-License-Identifier: MIT */
/* The KVM system fd: API version, capabilities, supported CPUID, MSR list. */
#ifndef LS_VMM_KVM_H
#define LS_VMM_KVM_H

#include <linux/kvm.h>
#include <stdint.h>

struct kvm_sys {
	int fd;			   /* /dev/kvm */
	int vcpu_mmap_size;	   /* size of struct kvm_run's mapping */
	struct kvm_cpuid2 *cpuid;  /* KVM_GET_SUPPORTED_CPUID */
	struct kvm_msr_list *msrs; /* KVM_GET_MSR_INDEX_LIST */
	int max_vcpus;		   /* KVM_CAP_MAX_VCPUS */
};

/*
 * Opens /dev/kvm, checks the API version and every capability the VMM
 * needs, and reads the supported CPUID and the MSR index list.
 */
int kvm_sys_open(struct kvm_sys *kvm, char *err);
void kvm_sys_close(struct kvm_sys *kvm);

/* KVM_CHECK_EXTENSION on any KVM fd (system or VM). */
int kvm_check_cap(int fd, long cap);

/* ioctl() retried on EINTR; returns -errno on failure. */
int kvm_ioctl(int fd, unsigned long req, void *arg);

#endif /* LS_VMM_KVM_H */
