/* SPDX-License-Identifier: MIT */
/*
 * TCG vCPUs: the run loop over an engine (tcg_engine.c) with the
 * execution token (tcg_sched.c).
 *
 * Stops: uc_emu_start() returns when the block hook obeyed a stop request
 * (a kick or the end of a turn), on an exception, on an error, and on HLT.
 * HLT is told apart from a stop by who stopped (see check_halted()).
 */
#include "../../vm.h"
#include "tcg.h"

/* An address guest code never reaches (non-canonical): uc_emu_start's
 * `until` when we want no stop there. */
#define UNTIL_NEVER 0xfff0000000000000ull
#define HLT_OPCODE  0xf4

/* ---- running ---- */

static uint64_t read_rip(uc_engine *uc)
{
	uint64_t rip = 0;

	uc_reg_read(uc, UC_X86_REG_RIP, &rip);
	return rip;
}

static uint64_t linear_pc(uc_engine *uc)
{
	uint64_t rip = read_rip(uc), cr0 = 0;
	uint16_t cs = 0;

	uc_reg_read(uc, UC_X86_REG_CR0, &cr0);
	uc_reg_read(uc, UC_X86_REG_CS, &cs);
	/* real mode: CS base is selector << 4; otherwise flat here */
	return (cr0 & 1) ? rip : ((uint64_t)cs << 4) + rip;
}

static bool prev_byte_is_hlt(struct vcpu *vcpu, uc_engine *uc)
{
	uint64_t pc = linear_pc(uc);
	const uint8_t *b = pc ? vm_gpa_to_hva(vcpu->vm, pc - 1, 1) : NULL;

	return b && *b == HLT_OPCODE;
}

/*
 * uc_emu_start() returns by itself (no uc_emu_stop() of ours) only on HLT
 * (exceptions and errors are handled before). When our stop and a HLT
 * coincide, the vCPU resumes after the HLT, as on a spurious wake-up;
 * guests halt in a loop, so the next HLT parks it.
 */
static bool check_halted(struct vcpu *vcpu, uc_engine *uc, bool stopped)
{
	return !stopped && prev_byte_is_hlt(vcpu, uc);
}

static enum accel_run guest_stopped(struct vcpu *vcpu, uc_engine *uc,
				    uc_err e)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	struct vm *vm = vcpu->vm;
	uint64_t rip = read_rip(uc);

	tcg_vcpu_dump(vcpu, v->exception >= 0 ? "guest exception"
					       : "emulation error");
	if (v->exception >= 0) {
		vm_request_exit(vm, VM_EXIT_TRIPLE_FAULT, 1,
				"vCPU %u: guest exception %d at rip 0x%llx (the "
				"tcg accelerator does not deliver exceptions "
				"to the guest)",
				vcpu->id, v->exception, (unsigned long long)rip);
		return ACCEL_RUN_END;
	}
	vm_request_exit(vm, VM_EXIT_ERROR, 1,
			"vCPU %u: emulation stopped at rip 0x%llx: %s", vcpu->id,
			(unsigned long long)rip, uc_strerror(e));
	return ACCEL_RUN_END;
}

/* Waits (t->lock held) while there is nothing to run; false if kicked. */
static bool wait_runnable(struct vcpu *vcpu, char *err, int *ret)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	struct tcg_vcpu *v = TCG_VCPU(vcpu);

	*ret = 0;
	for (;;) {
		if (v->kick)
			return false;
		if (v->mp_state == X86_MP_SIPI_RECEIVED) {
			uint8_t vector = v->sipi_vector;

			pthread_mutex_unlock(&t->lock);
			*ret = tcg_start_real_mode(vcpu, vector, err);
			pthread_mutex_lock(&t->lock);
			if (*ret)
				return false;
			v->mp_state = X86_MP_RUNNABLE;
		}
		if (v->mp_state == X86_MP_RUNNABLE && v->uc)
			return true;
		pthread_cond_wait(&t->cond, &t->lock);
	}
}

enum accel_run tcg_vcpu_run(struct vcpu *vcpu)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	char err[VMM_ERR_MAX];
	bool stopped;
	uc_engine *uc;
	uc_err e;
	int ret;

	/*
	 * The CPUID probe runs a scratch engine: here, outside any engine's
	 * hook, before the guest can ask (hook_cpuid() then only reads).
	 */
	tcg_cpuid_native(t);
	pthread_mutex_lock(&t->lock);
	if (!wait_runnable(vcpu, err, &ret) || !tcg_token_acquire(vcpu)) {
		/* the kick is served by returning: its stop is moot */
		v->kick = false;
		__atomic_store_n(&v->stop_req, false, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&t->lock);
		if (ret) {
			vm_request_exit(vcpu->vm, VM_EXIT_ERROR, 1, "%s", err);
			return ACCEL_RUN_END;
		}
		return ACCEL_RUN_KICKED;
	}
	uc = v->uc;
	v->stopped = false;
	v->exception = -1;
	pthread_mutex_unlock(&t->lock);

	e = uc_emu_start(uc, read_rip(uc), UNTIL_NEVER, 0, 0);

	stopped = v->stopped;
	if (e || v->exception >= 0) {
		pthread_mutex_lock(&t->lock);
		tcg_token_release(vcpu->vm, vcpu->id);
		pthread_mutex_unlock(&t->lock);
		return guest_stopped(vcpu, uc, e);
	}
	if (check_halted(vcpu, uc, stopped)) {
		pthread_mutex_lock(&t->lock);
		v->mp_state = X86_MP_HALTED;
		pthread_mutex_unlock(&t->lock);
	}
	pthread_mutex_lock(&t->lock);
	tcg_token_release(vcpu->vm, vcpu->id);
	pthread_mutex_unlock(&t->lock);
	return ACCEL_RUN_EXIT;
}

int tcg_vcpu_complete(struct vcpu *vcpu, char *err)
{
	/* Port I/O and MMIO complete inside their hooks. */
	return 0;
}

void tcg_vcpu_dump(struct vcpu *vcpu, const char *why)
{
	uc_engine *uc = TCG_VCPU(vcpu)->uc;
	uint64_t rip = 0, rsp = 0, cr3 = 0;

	fprintf(stderr, "livesnap: vCPU %u: %s\n", vcpu->id, why);
	if (!uc)
		return;
	uc_reg_read(uc, UC_X86_REG_RIP, &rip);
	uc_reg_read(uc, UC_X86_REG_RSP, &rsp);
	uc_reg_read(uc, UC_X86_REG_CR3, &cr3);
	fprintf(stderr, "  rip %016llx rsp %016llx cr3 %016llx\n",
		(unsigned long long)rip, (unsigned long long)rsp,
		(unsigned long long)cr3);
}
