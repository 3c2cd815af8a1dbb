/* SPDX-License-Identifier: MIT */
/*
 * vCPU threads and the run loop, the same on every accelerator.
 *
 * Kick protocol (pause, exit): the requester sets the flag the thread
 * checks (pause_req or stopping), then asks the backend to kick the vCPU
 * out of guest code (accel->vcpu_kick: KVM's immediate_exit plus a signal;
 * TCG's sticky flag plus a stop request its block hook obeys). Neither
 * loses a kick that comes before the vCPU enters guest code.
 *
 * Before parking, the backend completes any exit it left half done
 * (accel->vcpu_complete: KVM re-enters with immediate_exit so an IN's data
 * lands in RAX), so the vCPU state is consistent for saving.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "vm.h"

void vcpu_kick(struct vcpu *vcpu)
{
	vcpu->vm->accel->vcpu_kick(vcpu);
}

/*
 * Completes a pending exit, then waits while a pause is requested.
 * Returns false if the thread must end instead.
 */
static bool vcpu_park(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	char err[VMM_ERR_MAX];

	if (vm->accel->vcpu_complete(vcpu, err) < 0) {
		vm_request_exit(vm, VM_EXIT_ERROR, 1,
				"vCPU %u: completing an exit before pausing "
				"failed: %s",
				vcpu->id, err);
		return false;
	}
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
		if (vm->accel->vcpu_run(vcpu) == ACCEL_RUN_END)
			return;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;

	__atomic_store_n(&vcpu->tid, (pid_t)syscall(SYS_gettid),
			 __ATOMIC_RELAXED);
	vcpu_loop(vcpu);
	pthread_mutex_lock(&vm->lock);
	vm->live_threads--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}
