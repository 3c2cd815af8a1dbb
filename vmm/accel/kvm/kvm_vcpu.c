/* SPDX-License-Identifier: MIT */
/*
 * KVM vCPUs: the vCPU fd and its kvm_run mapping, KVM_RUN and its exits.
 *
 * Kick: kvm_run->immediate_exit = 1, then SIG_KICK to the thread. A thread
 * already inside KVM_RUN returns with EINTR; one about to enter returns at
 * once because of immediate_exit, so no kick is lost. The signal handler
 * does nothing.
 *
 * Before parking, a thread whose last KVM_RUN ended in an I/O or MMIO exit
 * re-enters KVM_RUN with immediate_exit = 1: the kernel completes the
 * instruction (an IN's data lands in RAX) and returns EINTR without running
 * guest code. Only then is the vCPU state consistent for saving (api.rst,
 * "KVM_RUN" / immediate_exit).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../vm.h"
#include "kvm.h"

static int sig_kick(void)
{
	return SIGRTMIN + 1;
}

static void kick_handler(int sig)
{
	(void)sig;
}

int kvm_kick_signal_init(char *err)
{
	struct sigaction sa = {.sa_handler = kick_handler};

	/* No SA_RESTART: KVM_RUN must return EINTR. */
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig_kick(), &sa, NULL) < 0)
		return vmm_fail(err, errno, "sigaction(SIGRTMIN+1)");
	return 0;
}

int kvm_vcpu_init(struct vcpu *vcpu, char *err)
{
	struct kvm_vm *k = KVM_VM(vcpu->vm);
	struct kvm_vcpu *v = calloc(1, sizeof(*v));
	void *run;
	int ret;

	if (!v)
		return vmm_fail(err, ENOMEM, "vCPU %u", vcpu->id);
	v->fd = -1;
	vcpu->accel_priv = v;
	ret = kvm_ioctl(k->fd, KVM_CREATE_VCPU, (void *)(uintptr_t)vcpu->id);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_CREATE_VCPU %u)",
				vcpu->id);
	v->fd = ret;
	run = mmap(NULL, (size_t)k->sys.vcpu_mmap_size, PROT_READ | PROT_WRITE,
		   MAP_SHARED, v->fd, 0);
	if (run == MAP_FAILED)
		return vmm_fail(err, errno, "mmap of vCPU %u's kvm_run",
				vcpu->id);
	v->run = run;
	if (vcpu->id == 0) {
		ret = kvm_ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
		if (ret <= 0)
			return vmm_fail(err, ret ? -ret : EINVAL,
					"ioctl(KVM_GET_TSC_KHZ)");
		vcpu->vm->tsc_khz = (uint32_t)ret;
	}
	return 0;
}

void kvm_vcpu_fini(struct vcpu *vcpu)
{
	struct kvm_vcpu *v = KVM_VCPU(vcpu);

	if (!v)
		return;
	if (v->run)
		munmap(v->run, (size_t)KVM_VM(vcpu->vm)->sys.vcpu_mmap_size);
	if (v->fd >= 0)
		close(v->fd);
	free(v);
	vcpu->accel_priv = NULL;
}

void kvm_vcpu_kick(struct vcpu *vcpu)
{
	struct kvm_vcpu *v = KVM_VCPU(vcpu);

	if (!v || !v->run)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&vcpu->thread_started, __ATOMIC_ACQUIRE))
		pthread_kill(vcpu->thread, sig_kick());
}

void kvm_vcpu_dump(struct vcpu *vcpu, const char *why)
{
	int fd = KVM_VCPU(vcpu)->fd;
	struct kvm_regs r;
	struct kvm_sregs s;

	fprintf(stderr, "livesnap: vCPU %u: %s\n", vcpu->id, why);
	if (ioctl(fd, KVM_GET_REGS, &r) < 0 ||
	    ioctl(fd, KVM_GET_SREGS, &s) < 0) {
		fprintf(stderr,
			"livesnap: vCPU %u: cannot read registers: %s\n",
			vcpu->id, strerror(errno));
		return;
	}
	fprintf(stderr,
		"  rip %016llx rsp %016llx rflags %016llx\n"
		"  rax %016llx rbx %016llx rcx %016llx rdx %016llx\n"
		"  rsi %016llx rdi %016llx rbp %016llx\n"
		"  cr0 %016llx cr2 %016llx cr3 %016llx cr4 %016llx efer %llx\n"
		"  cs %04x (base %llx, l %u) ss %04x\n",
		r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi,
		r.rdi, r.rbp, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector,
		s.cs.base, s.cs.l, s.ss.selector);
}

static void handle_io(struct vcpu *vcpu, struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	/* rep ins/outs: count transfers of size bytes each */
	for (uint32_t i = 0; i < run->io.count; i++) {
		pio_bus_dispatch(&vcpu->vm->bus, run->io.port, data,
				 run->io.size, is_write);
		data += run->io.size;
	}
}

/* No MMIO device exists: reads see all ones, writes vanish. */
static void handle_mmio(struct kvm_run *run)
{
	if (!run->mmio.is_write)
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
}

static void system_event(struct vcpu *vcpu, struct kvm_run *run)
{
	struct vm *vm = vcpu->vm;

	switch (run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_exit(vm, VM_EXIT_GUEST_SHUTDOWN, 0,
				"guest shut down (vCPU %u)", vcpu->id);
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_exit(vm, VM_EXIT_GUEST_RESET, 0,
				"guest reset (vCPU %u): powering off",
				vcpu->id);
		break;
	default:
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"guest system event %u (crash) on vCPU %u",
				run->system_event.type, vcpu->id);
		break;
	}
}

/* Handles one exit; returns false when the VM must end. */
static bool handle_exit(struct vcpu *vcpu, struct kvm_run *run)
{
	struct vm *vm = vcpu->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(vcpu, run);
		return true;
	case KVM_EXIT_MMIO:
		handle_mmio(run);
		return true;
	case KVM_EXIT_INTR:
	case KVM_EXIT_HLT: /* only without an in-kernel LAPIC; never here */
		return true;
	case KVM_EXIT_SYSTEM_EVENT:
		system_event(vcpu, run);
		return false;
	case KVM_EXIT_SHUTDOWN:
		kvm_vcpu_dump(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)");
		vm_request_exit(vm, VM_EXIT_TRIPLE_FAULT, 1,
				"guest triple fault on vCPU %u", vcpu->id);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		kvm_vcpu_dump(vcpu, "KVM_EXIT_FAIL_ENTRY");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: VM entry failed (hardware reason "
				"0x%llx)",
				vcpu->id,
				(unsigned long long)run->fail_entry
				    .hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		kvm_vcpu_dump(vcpu, "KVM_EXIT_INTERNAL_ERROR");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: KVM internal error, suberror %u",
				vcpu->id, run->internal.suberror);
		return false;
	default:
		kvm_vcpu_dump(vcpu, "unexpected exit");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: unexpected KVM exit reason %u",
				vcpu->id, run->exit_reason);
		return false;
	}
}

/* The kick signal is blocked everywhere but in vCPU threads. */
static void unblock_kick(struct kvm_vcpu *v)
{
	sigset_t set;

	if (v->sig_unblocked)
		return;
	sigemptyset(&set);
	sigaddset(&set, sig_kick());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	v->sig_unblocked = true;
}

enum accel_run kvm_vcpu_run(struct vcpu *vcpu)
{
	struct kvm_vcpu *v = KVM_VCPU(vcpu);

	unblock_kick(v);
	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		if (errno == EINTR || errno == EAGAIN) {
			/* a kick: the caller looks at the flags again */
			__atomic_store_n(&v->run->immediate_exit, 0,
					 __ATOMIC_SEQ_CST);
			v->exit_pending = false;
			return ACCEL_RUN_KICKED;
		}
		vm_request_exit(vcpu->vm, VM_EXIT_ERROR, 1,
				"vCPU %u: ioctl(KVM_RUN): %s", vcpu->id,
				strerror(errno));
		return ACCEL_RUN_END;
	}
	v->exit_pending = true;
	return handle_exit(vcpu, v->run) ? ACCEL_RUN_EXIT : ACCEL_RUN_END;
}

int kvm_vcpu_complete(struct vcpu *vcpu, char *err)
{
	struct kvm_vcpu *v = KVM_VCPU(vcpu);

	if (v->exit_pending) {
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (ioctl(v->fd, KVM_RUN, 0) == 0 ||
		    (errno != EINTR && errno != EAGAIN))
			return vmm_failx(err, EIO, "KVM_RUN with immediate_exit: %s",
					 errno ? strerror(errno) : "it ran");
		v->exit_pending = false;
	}
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	return 0;
}
