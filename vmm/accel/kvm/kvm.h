/* SPDX-License-Identifier: MIT */
/*
 * The KVM backend's private header: the system fd, the per-VM and
 * per-vCPU state hung off struct vm / struct vcpu, and the KVM view of a
 * vCPU's state (the kernel's uapi structs, which are ABI) with its
 * converters to and from the backend-neutral x86_cpu_state. Only files in
 * accel/kvm/ include it.
 */
#ifndef LS_VMM_ACCEL_KVM_H
#define LS_VMM_ACCEL_KVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../../x86/cpu_state.h"
#include "../accel.h"

struct vm;
struct vcpu;

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
/* kvm_sys_open and close: /dev/kvm with every capability the VMM needs. */
int kvm_sys_probe(char *err);
void kvm_sys_close(struct kvm_sys *kvm);

/* KVM_CHECK_EXTENSION on any KVM fd (system or VM). */
int kvm_check_cap(int fd, long cap);

/* ioctl() retried on EINTR; returns -errno on failure. */
int kvm_ioctl(int fd, unsigned long req, void *arg);

/* vm->accel_priv */
struct kvm_vm {
	struct kvm_sys sys;
	int fd;
	uint32_t xsave_size; /* KVM_CAP_XSAVE2 on the VM fd, >= 4096 */
	/* MSRs a vCPU snapshot carries (kvm_state.c builds it once). */
	pthread_mutex_t msr_lock;
	uint32_t *state_msrs;
	unsigned n_state_msrs;
	int irq_errno; /* first KVM_IRQ_LINE failure, reported once */
	bool dirty_logging; /* KVM_MEM_LOG_DIRTY_PAGES on the RAM slots */
};

/* vcpu->accel_priv */
struct kvm_vcpu {
	int fd;
	struct kvm_run *run;
	bool exit_pending; /* the last KVM_RUN exit is not completed yet */
	bool sig_unblocked;
};

#define KVM_VM(vm)	((struct kvm_vm *)(vm)->accel_priv)
#define KVM_VCPU(vcpu)	((struct kvm_vcpu *)(vcpu)->accel_priv)

/* The KVM view of one vCPU's state, in save/restore order. */
struct kvm_vcpu_snapshot {
	uint32_t tsc_khz;
	uint32_t nmsrs;
	uint32_t ncpuid;
	uint32_t xsave_size; /* bytes of xsave[] in use */
	struct kvm_mp_state mp_state;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_msr_entry msrs[X86_MAX_MSRS];
	struct kvm_cpuid_entry2 cpuid[X86_MAX_CPUID];
	uint8_t xsave[X86_XSAVE_MAX] __attribute__((aligned(64)));
};

/*
 * kvm_convert.c: pure functions, no /dev/kvm. to_x86 cannot fail;
 * from_x86 refuses what KVM cannot take (e.g. an XSAVE image larger than
 * the host's) with a message.
 */
void kvm_snapshot_to_x86(const struct kvm_vcpu_snapshot *k,
			 struct x86_cpu_state *st);
int kvm_snapshot_from_x86(const struct x86_cpu_state *st,
			  struct kvm_vcpu_snapshot *k, char *err);
void kvm_segment_to_x86(const struct kvm_segment *k, struct x86_segment *x);
void kvm_segment_from_x86(const struct x86_segment *x, struct kvm_segment *k);

/* kvm_state.c */
int kvm_vcpu_save(struct vcpu *vcpu, struct kvm_vcpu_snapshot *k, char *err);
int kvm_vcpu_load(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *k,
		  char *err);
int kvm_get_state(struct vcpu *vcpu, struct x86_cpu_state *st, char *err);
int kvm_set_state(struct vcpu *vcpu, const struct x86_cpu_state *st,
		  char *err);

/* kvm_vm_state.c: x86_vm_state.priv of a KVM VM */
struct kvm_vm_chips {
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct kvm_irqchip pic_master;
	struct kvm_irqchip pic_slave;
	struct kvm_irqchip ioapic;
};

int kvm_vm_get_state(struct vm *vm, struct x86_vm_state *st, char *err);
int kvm_vm_set_state(struct vm *vm, const struct x86_vm_state *st,
		     bool advance_clock, char *err);

/* kvm_vcpu.c */
int kvm_kick_signal_init(char *err);
int kvm_vcpu_init(struct vcpu *vcpu, char *err);
void kvm_vcpu_fini(struct vcpu *vcpu);
void kvm_vcpu_kick(struct vcpu *vcpu);
void kvm_vcpu_dump(struct vcpu *vcpu, const char *why);
enum accel_run kvm_vcpu_run(struct vcpu *vcpu);
int kvm_vcpu_complete(struct vcpu *vcpu, char *err);

/* kvm_cpuid.c, kvm_msr.c, kvm_boot.c: a fresh boot */
int kvm_vcpu_boot(struct vcpu *vcpu, const struct accel_boot_entry *e,
		  char *err);
int kvm_cpuid_setup_vcpu(struct vcpu *vcpu, char *err);
int kvm_msr_setup_boot(struct vcpu *vcpu, char *err);
bool kvm_msr_is_serializable(uint32_t index);
unsigned kvm_msr_unlisted(const uint32_t **list);

#endif /* LS_VMM_ACCEL_KVM_H */
