/* SPDX-License-Identifier: MIT */
/*
 * vCPU threads and the KVM_RUN loop.
 *
 * Kick protocol (pause, exit): the requester sets the flag the thread
 * checks (pause_req or stopping), then kvm_run->immediate_exit = 1, then
 * sends SIG_KICK to the thread. A thread already inside KVM_RUN returns
 * with EINTR; one about to enter returns at once because of
 * immediate_exit, so no kick is lost. The signal handler does nothing.
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
#include <sys/syscall.h>
#include <unistd.h>

#include "vm.h"

static int sig_kick(void)
{
	return SIGRTMIN + 1;
}

static void kick_handler(int sig)
{
	(void)sig;
}

int vcpu_kick_signal_init(char *err)
{
	struct sigaction sa = {.sa_handler = kick_handler};

	/* No SA_RESTART: KVM_RUN must return EINTR. */
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig_kick(), &sa, NULL) < 0)
		return vmm_fail(err, errno, "sigaction(SIGRTMIN+1)");
	return 0;
}

int vcpu_create(struct vm *vm, struct vcpu *vcpu, unsigned id, char *err)
{
	int ret;
	void *run;

	vcpu->vm = vm;
	vcpu->id = id;
	ret = kvm_ioctl(vm->fd, KVM_CREATE_VCPU, (void *)(uintptr_t)id);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_CREATE_VCPU %u)", id);
	vcpu->fd = ret;
	run = mmap(NULL, (size_t)vm->kvm.vcpu_mmap_size, PROT_READ | PROT_WRITE,
		   MAP_SHARED, vcpu->fd, 0);
	if (run == MAP_FAILED)
		return vmm_fail(err, errno, "mmap of vCPU %u's kvm_run", id);
	vcpu->run = run;
	return 0;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, (size_t)vcpu->vm->kvm.vcpu_mmap_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->run = NULL;
	vcpu->fd = -1;
}

void vcpu_kick(struct vcpu *vcpu)
{
	if (!vcpu->run)
		return;
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&vcpu->thread_started, __ATOMIC_ACQUIRE))
		pthread_kill(vcpu->thread, sig_kick());
}

void vcpu_dump(struct vcpu *vcpu, const char *why)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	fprintf(stderr, "livesnap: vCPU %u: %s\n", vcpu->id, why);
	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 ||
	    ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0) {
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

static void vcpu_handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
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
static void vcpu_handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;

	if (!run->mmio.is_write)
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
}

static void vcpu_system_event(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	switch (vcpu->run->system_event.type) {
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
				vcpu->run->system_event.type, vcpu->id);
		break;
	}
}

/* Handles one exit; returns false when the thread must end. */
static bool vcpu_handle_exit(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct vm *vm = vcpu->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		vcpu_handle_io(vcpu);
		return true;
	case KVM_EXIT_MMIO:
		vcpu_handle_mmio(vcpu);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; never here. */
		return true;
	case KVM_EXIT_SYSTEM_EVENT:
		vcpu_system_event(vcpu);
		return false;
	case KVM_EXIT_SHUTDOWN:
		vcpu_dump(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)");
		vm_request_exit(vm, VM_EXIT_TRIPLE_FAULT, 1,
				"guest triple fault on vCPU %u", vcpu->id);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vcpu_dump(vcpu, "KVM_EXIT_FAIL_ENTRY");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: VM entry failed (hardware reason "
				"0x%llx)",
				vcpu->id,
				(unsigned long long)run->fail_entry
				    .hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vcpu_dump(vcpu, "KVM_EXIT_INTERNAL_ERROR");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: KVM internal error, suberror %u",
				vcpu->id, run->internal.suberror);
		return false;
	default:
		vcpu_dump(vcpu, "unexpected exit");
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: unexpected KVM exit reason %u",
				vcpu->id, run->exit_reason);
		return false;
	}
}

/*
 * Completes a pending I/O exit, then waits while a pause is requested.
 * Returns false if the thread must end instead.
 */
static bool vcpu_park(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	if (vcpu->exit_pending) {
		__atomic_store_n(&vcpu->run->immediate_exit, 1,
				 __ATOMIC_SEQ_CST);
		if (ioctl(vcpu->fd, KVM_RUN, 0) == 0 ||
		    (errno != EINTR && errno != EAGAIN)) {
			vm_request_exit(vm, VM_EXIT_ERROR, 1,
					"vCPU %u: completing an I/O exit "
					"before pausing failed: %s",
					vcpu->id,
					errno ? strerror(errno) : "it ran");
			return false;
		}
		vcpu->exit_pending = false;
	}
	__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&vm->lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->cond);
	while (__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) &&
	       !__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST))
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->lock);
	return true;
}

static bool vcpu_must_end(struct vm *vm)
{
	return __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST) ||
	       vm_exit_reason(vm) != VM_EXIT_NONE;
}

static void vcpu_loop(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	while (!vcpu_must_end(vm)) {
		if (__atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST)) {
			if (!vcpu_park(vcpu))
				return;
			continue;
		}
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				/* a kick: look at the flags again */
				__atomic_store_n(&vcpu->run->immediate_exit, 0,
						 __ATOMIC_SEQ_CST);
				vcpu->exit_pending = false;
				continue;
			}
			vm_request_exit(vm, VM_EXIT_ERROR, 1,
					"vCPU %u: ioctl(KVM_RUN): %s", vcpu->id,
					strerror(errno));
			return;
		}
		vcpu->exit_pending = true;
		if (!vcpu_handle_exit(vcpu))
			return;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	sigset_t set;

	__atomic_store_n(&vcpu->tid, (pid_t)syscall(SYS_gettid),
			 __ATOMIC_RELAXED);
	sigemptyset(&set);
	sigaddset(&set, sig_kick());
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	vcpu_loop(vcpu);
	pthread_mutex_lock(&vm->lock);
	vm->live_threads--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}
