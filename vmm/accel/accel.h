/* SPDX-License-Identifier: MIT */
/*
 * The accelerator layer: what runs the vCPUs. One ops table per backend,
 * as liblivesnap's sinks have one: KVM (accel/kvm/) and an emulated vCPU
 * through Unicorn's TCG (accel/tcg/). Everything above it (devices, run
 * control, pause, state capture, snapshot, restore, QMP) is the same code
 * on both; nothing outside accel/kvm/ includes <linux/kvm.h>.
 *
 * Guest RAM stays one host mapping owned by vm.c (liblivesnap registers
 * it); a backend maps it into its guest-physical space (KVM memory slots,
 * Unicorn uc_mem_map_ptr), so a guest write is a host write that UFFD-WP
 * sees on both.
 *
 * Threads: vcpu_run/vcpu_complete/vcpu_get_state/vcpu_set_state run on
 * the vCPU's own thread or while it is parked (vm_pause()); vcpu_kick and
 * irq_line may be called from any thread.
 */
#ifndef LS_VMM_ACCEL_H
#define LS_VMM_ACCEL_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct vcpu;
struct x86_cpu_state;
struct x86_vm_state;

/* What a backend can do (accel_ops.caps). */
#define ACCEL_CAP_PARALLEL_VCPUS (1u << 0) /* vCPUs run at the same time */
#define ACCEL_CAP_SET_TSC	 (1u << 1) /* guest TSC can be set/scaled */
#define ACCEL_CAP_IRQCHIP	 (1u << 2) /* interrupts reach the guest */
#define ACCEL_CAP_LINUX		 (1u << 3) /* boots Linux guests */

/* Why vcpu_run returned. */
enum accel_run {
	ACCEL_RUN_EXIT,	  /* an exit was handled: run again */
	ACCEL_RUN_KICKED, /* vcpu_kick(), or a signal: look at the flags */
	ACCEL_RUN_END,	  /* the VM must end: vm_request_exit() was called */
};

/* Entry state of the boot vCPU (the Linux 64-bit boot protocol). */
struct accel_boot_entry {
	const struct x86_cpu_state *st; /* regs, segments, CRs, EFER */
};

struct accel_ops {
	const char *name; /* "kvm", "tcg": QEMU's words */
	unsigned caps;

	/*
	 * After vm->mem exists; sets vm->max_vcpus, and vm->tsc_khz where
	 * the backend knows it at once (else measure_tsc_khz does).
	 */
	int (*vm_init)(struct vm *vm, char *err);
	/*
	 * Optional: called as soon as the backend is chosen, to start
	 * slow one-time work (TCG loads Unicorn) while the VMM prepares.
	 */
	void (*preload)(void);
	/*
	 * Whether the backend can run on this host, without a VM: 0, or
	 * -errno and a message naming what is missing (`livesnap check`).
	 */
	int (*probe)(char *err);
	void (*vm_fini)(struct vm *vm);
	int (*vcpu_init)(struct vcpu *vcpu, char *err);
	void (*vcpu_fini)(struct vcpu *vcpu);

	/*
	 * Fresh boot: CPUID, boot MSRs, FPU and LAPIC defaults; with an
	 * entry, this is the boot vCPU and starts there; without one it
	 * waits for INIT/SIPI.
	 */
	int (*vcpu_boot)(struct vcpu *vcpu, const struct accel_boot_entry *e,
			 char *err);

	/*
	 * Runs guest code until an exit the backend handled (port I/O goes
	 * to vm->bus from here), a kick, or the end. A vCPU with nothing to
	 * run (halted, waiting for SIPI) blocks inside until kicked or woken.
	 */
	enum accel_run (*vcpu_run)(struct vcpu *vcpu);
	/* Makes vcpu_run return soon (sticky until it did). */
	void (*vcpu_kick)(struct vcpu *vcpu);
	/*
	 * Before parking: completes an exit half done (KVM's pending I/O),
	 * so that the state is consistent for saving. 0 or -errno.
	 */
	int (*vcpu_complete)(struct vcpu *vcpu, char *err);
	void (*vcpu_dump)(struct vcpu *vcpu, const char *why);

	int (*vcpu_get_state)(struct vcpu *vcpu, struct x86_cpu_state *st,
			      char *err);
	/* Into a vCPU that never ran. */
	int (*vcpu_set_state)(struct vcpu *vcpu,
			      const struct x86_cpu_state *st, char *err);
	int (*vm_get_state)(struct vm *vm, struct x86_vm_state *st, char *err);
	int (*vm_set_state)(struct vm *vm, const struct x86_vm_state *st,
			    bool advance_clock, char *err);

	/*
	 * The CPUID leaf the guest sees on vCPU 0 (eax, ebx, ecx, edx);
	 * false if the backend has no such leaf.
	 */
	bool (*cpuid)(struct vm *vm, uint32_t function, uint32_t index,
		      uint32_t regs[4]);
	/* A device's interrupt line (ISA IRQ number) changed level. */
	void (*irq_line)(struct vm *vm, unsigned irq, int level);
	/*
	 * The rate guest rdtsc ticks at, measured (optional; for backends
	 * whose guest TSC is the host's). Only a fresh boot needs it: a
	 * restore takes the rate the snapshot's guest was told.
	 */
	uint32_t (*measure_tsc_khz)(struct vm *vm);
	/* Tells the guest's paravirtual clock it was stopped (optional). */
	void (*notify_clock_paused)(struct vm *vm);
	/*
	 * Optional: the backend's own log of what the guest wrote to RAM
	 * (KVM's dirty log), one bit per 4 KiB of vm->mem.host. Bitmap NULL
	 * stops logging (the vCPUs paused or running); else the first call,
	 * the vCPUs paused, starts it and returns 0 (nothing written). Each
	 * later call, which may also run while the vCPUs run, returns 1 with
	 * what was written since the call before (a write meanwhile is in
	 * this harvest or the next): bitmap has accel_log_words() words, all
	 * zero on entry, and `words` (accel_log_sum_words() of them) gets one
	 * bit per bitmap word the call wrote; the others stay zero. So a
	 * harvest in the pause costs what was written, not the size of RAM
	 * (a backend that cannot tell writes all and marks all). -errno with
	 * err set.
	 */
	int (*dirty_log)(struct vm *vm, uint64_t *bitmap, uint64_t *words,
			 char *err);
	/* Optional: false where dirty_log exists but cannot run here. */
	bool (*dirty_log_ready)(struct vm *vm);
};

extern const struct accel_ops accel_kvm_ops;
extern const struct accel_ops accel_tcg_ops;

/*
 * "kvm", "tcg" or "auto" (KVM when it works here, accel_kvm_usable(),
 * else TCG).
 * With auto, *why says what was chosen and why (for stderr).
 */
int accel_select(const char *name, const struct accel_ops **ops,
		 char *why, char *err);

/*
 * 0 if KVM works here (the KVM backend's probe: /dev/kvm opens, speaks API
 * 12 with the capabilities the VMM needs, and creates a VM), else -errno
 * and, if why is not NULL, why (VMM_ERR_MAX bytes).
 */
int accel_kvm_usable(char *why);

/* The backend's dirty log (accel_ops.dirty_log) if it runs here, or NULL. */
typedef int accel_dirty_log_fn(struct vm *vm, uint64_t *bitmap,
			       uint64_t *words, char *err);
accel_dirty_log_fn *accel_dirty_log(const struct accel_ops *ops,
				    struct vm *vm);

/* A dirty log's bitmap words for `ram` bytes, and its summary's words. */
static inline uint64_t accel_log_words(uint64_t ram)
{
	return (ram / 4096 + 63) / 64;
}

static inline uint64_t accel_log_sum_words(uint64_t ram)
{
	return (accel_log_words(ram) + 63) / 64;
}

/* A summary marking every bitmap word (a backend that writes them all). */
void accel_log_sum_all(uint64_t *words, uint64_t ram);

#endif /* LS_VMM_ACCEL_H */
