/* SPDX-License-Identifier: MIT */
/*
 * The TCG backend's VM: the execution token and its ticker, the emulated
 * CPU's CPUID, the guest TSC rate, VM-wide state, and the ops table
 * (accel/accel.h). What it does not model, it says: no interrupt delivery
 * (devices' lines are recorded, not delivered), no settable TSC (guest
 * rdtsc reads the host's), no Linux guests.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "../../vm.h"
#include "tcg.h"

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/*
 * The host TSC's rate against CLOCK_MONOTONIC since (t0_ns, tsc0), taken
 * back to back: over at least min_ns, sleeping only for what is missing.
 */
uint32_t tcg_host_tsc_khz_since(uint64_t t0_ns, uint64_t tsc0, long min_ns)
{
	uint64_t t1 = vmm_now_ns(), c1;

	if (t1 - t0_ns < (uint64_t)min_ns) {
		struct timespec d = {0, min_ns - (long)(t1 - t0_ns)};

		nanosleep(&d, NULL);
	}
	c1 = rdtsc();
	t1 = vmm_now_ns();
	return (uint32_t)((c1 - tsc0) * 1000000ull / (t1 - t0_ns));
}

/* The host TSC's rate against CLOCK_MONOTONIC over `ns`. */
uint32_t tcg_host_tsc_khz(long ns)
{
	uint64_t t0 = vmm_now_ns(), c0 = rdtsc();

	return tcg_host_tsc_khz_since(t0, c0, ns);
}

/*
 * Guest rdtsc reads the host TSC: its rate, measured over 5 ms (to
 * ~0.05%: a microsecond of jitter on either clock). A restore takes the
 * rate the snapshot's guest was told instead (tcg_set_state()).
 */
static uint32_t tcg_measure_tsc_khz(struct vm *vm)
{
	return tcg_host_tsc_khz(5 * 1000 * 1000);
}

static void tcg_vm_fini(struct vm *vm)
{
	struct tcg_vm *t = TCG_VM(vm);

	if (!t)
		return;
	tcg_ticker_stop(vm);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->cpuid_lock);
	free(t);
	vm->accel_priv = NULL;
}

static int tcg_vm_init(struct vm *vm, char *err)
{
	struct tcg_vm *t;
	pthread_condattr_t ca;

	/*
	 * Unicorn is still loading (tcg_uc_preload); the first engine
	 * waits for it, so the VM's RAM and a restore's memory are set up
	 * meanwhile. A backend chosen without accel_select starts it here.
	 */
	tcg_uc_preload();
	t = calloc(1, sizeof(*t));
	if (!t)
		return vmm_fail(err, ENOMEM, "TCG VM");
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->cpuid_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the ticker's */
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	t->holder = TCG_NO_HOLDER;
	t->created_ns = vmm_now_ns();
	t->created_tsc = rdtsc();
	vm->accel_priv = t;
	vm->max_vcpus = 63;
	return tcg_ticker_start(vm, err);
}

static int tcg_vcpu_init(struct vcpu *vcpu, char *err)
{
	struct tcg_vcpu *v = calloc(1, sizeof(*v));

	if (!v)
		return vmm_fail(err, ENOMEM, "vCPU %u", vcpu->id);
	vcpu->accel_priv = v;
	v->exception = -1;
	v->mp_state = X86_MP_UNINITIALIZED;
	v->stub = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (v->stub == MAP_FAILED) {
		v->stub = NULL;
		return vmm_fail(err, errno, "mmap of vCPU %u's stub page",
				vcpu->id);
	}
	lapic_reset(&v->lapic, vcpu->id, vcpu->id == 0);
	v->apic_base = X86_APIC_BASE_DEFAULT | X86_APIC_BASE_ENABLE |
		       (vcpu->id == 0 ? X86_APIC_BASE_BSP : 0);
	return 0;
}

static void tcg_vcpu_fini(struct vcpu *vcpu)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);

	if (!v)
		return;
	tcg_engine_destroy(vcpu);
	if (v->stub)
		munmap(v->stub, 4096);
	free(v);
	vcpu->accel_priv = NULL;
}

static int tcg_vcpu_boot(struct vcpu *vcpu, const struct accel_boot_entry *e,
			 char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	struct x86_cpu_state *st;
	int ret;

	lapic_reset(&v->lapic, vcpu->id, vcpu->id == 0);
	if (!e)
		return 0; /* an AP: waits for INIT/SIPI */
	st = aligned_alloc(64, sizeof(*st));
	if (!st)
		return vmm_fail(err, ENOMEM, "boot state");
	memcpy(st, e->st, sizeof(*st));
	memcpy(st->lapic, v->lapic.regs, X86_LAPIC_SIZE);
	st->apic_base = v->apic_base;
	ret = tcg_set_state(vcpu, st, err);
	free(st);
	return ret;
}

/* The interrupt sources a KVM snapshot's guest had enabled (bit per ISA
 * IRQ), 0 for a snapshot of ours: what cannot be carried over here. */
static int tcg_vm_get_state(struct vm *vm, struct x86_vm_state *st, char *err)
{
	x86_vm_state_init(st, "tcg");
	st->guest_ns = vmm_now_ns() - TCG_VM(vm)->created_ns;
	return 0;
}

static int tcg_vm_set_state(struct vm *vm, const struct x86_vm_state *st,
			    bool advance_clock, char *err)
{
	int ret = x86_vm_state_check(st, err);

	if (ret)
		return ret;
	if (st->irq_enabled)
		return vmm_failx(err, ENOTSUP,
				 "the snapshot was taken on %s with guest "
				 "interrupts enabled (ISA IRQ mask 0x%x); the "
				 "tcg accelerator delivers no interrupts",
				 st->backend, st->irq_enabled);
	return 0;
}

static void tcg_irq_line(struct vm *vm, unsigned irq, int level)
{
	struct tcg_vm *t = TCG_VM(vm);
	uint32_t bit = irq < 32 ? 1u << irq : 0;

	/* Recorded for the state, not delivered: see the file comment. */
	pthread_mutex_lock(&t->lock);
	t->irq_levels = level ? t->irq_levels | bit : t->irq_levels & ~bit;
	pthread_mutex_unlock(&t->lock);
}

static bool tcg_cpuid(struct vm *vm, uint32_t function, uint32_t index,
		      uint32_t regs[4])
{
	if (function != 1)
		return false;
	memcpy(regs, tcg_cpuid_native(TCG_VM(vm))[1], 4 * sizeof(regs[0]));
	return true;
}

const struct accel_ops accel_tcg_ops = {
    .name = "tcg",
    .caps = 0,
    .vm_init = tcg_vm_init,
    .preload = tcg_uc_preload,
    .probe = tcg_uc_ready,
    .vm_fini = tcg_vm_fini,
    .vcpu_init = tcg_vcpu_init,
    .vcpu_fini = tcg_vcpu_fini,
    .vcpu_boot = tcg_vcpu_boot,
    .vcpu_run = tcg_vcpu_run,
    .vcpu_kick = tcg_vcpu_kick,
    .vcpu_complete = tcg_vcpu_complete,
    .vcpu_dump = tcg_vcpu_dump,
    .vcpu_get_state = tcg_get_state,
    .vcpu_set_state = tcg_set_state,
    .vm_get_state = tcg_vm_get_state,
    .vm_set_state = tcg_vm_set_state,
    .cpuid = tcg_cpuid,
    .irq_line = tcg_irq_line,
    .measure_tsc_khz = tcg_measure_tsc_khz,
    .dirty_log = tcg_dirty_log,
    .dirty_log_ready = tcg_dirty_log_ready,
};
