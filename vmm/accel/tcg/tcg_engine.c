/* SPDX-License-Identifier: MIT */
/*
 * TCG engines: one Unicorn engine per vCPU, its memory map and its hooks.
 *
 * Memory map of an engine: guest RAM (the VM's host mapping, shared by
 * every engine), the resume stub page, the LAPIC page (MMIO to this
 * vCPU's user-space LAPIC), and the rest of the 32-bit hole as MMIO that
 * reads all ones and drops writes, as KVM's MMIO exits do here.
 *
 * Hooks run on the vCPU's thread inside uc_emu_start(): port I/O to the
 * device bus, the CPUID leaves we own, exceptions (Unicorn does not
 * deliver them through the guest IDT), and the block hook through which
 * every stop requested by another thread takes effect.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "../../layout.h"
#include "../../vm.h"
#include "tcg.h"
#include "tcg_stub.h"

static void cpuid_probe_engine(struct vcpu *vcpu, uc_engine *uc);

static int uc_fail(char *err, uc_err e, const char *what, unsigned id)
{
	return vmm_failx(err, EIO, "vCPU %u: %s: %s", id, what, uc_strerror(e));
}

/* ---- hooks, on the vCPU thread inside uc_emu_start ---- */

static uint32_t hook_in(uc_engine *uc, uint32_t port, int size, void *opaque)
{
	struct vcpu *vcpu = opaque;
	uint32_t v = 0;

	pio_bus_dispatch(&vcpu->vm->bus, (uint16_t)port, (uint8_t *)&v,
			 (uint32_t)size, false);
	return v;
}

static void hook_out(uc_engine *uc, uint32_t port, int size, uint32_t value,
		     void *opaque)
{
	struct vcpu *vcpu = opaque;

	pio_bus_dispatch(&vcpu->vm->bus, (uint16_t)port, (uint8_t *)&value,
			 (uint32_t)size, true);
}

/* The hypervisor leaves: a signature and, at 0x40000010, the TSC rate. */
#define CPUID_HV_BASE 0x40000000u
#define CPUID_HV_TSC  0x40000010u

static void cpuid_leaf(struct vcpu *vcpu, uint32_t fn, uint32_t r[4])
{
	const uint32_t(*native)[4] = tcg_cpuid_native(TCG_VM(vcpu->vm));
	unsigned n = vcpu->vm->ncpus;

	memset(r, 0, 4 * sizeof(r[0]));
	switch (fn) {
	case 0:
		memcpy(r, native[0], 4 * sizeof(r[0]));
		return;
	case 1:
		memcpy(r, native[1], 4 * sizeof(r[0]));
		r[1] = (r[1] & 0xffffu) | (vcpu->id << 24) | ((n & 0xff) << 16);
		r[2] |= 1u << 31; /* hypervisor */
		r[3] |= 1u << 9;  /* APIC */
		if (n > 1)
			r[3] |= 1u << 28; /* HTT: count in EBX[23:16] */
		return;
	case CPUID_HV_BASE:
		r[0] = CPUID_HV_TSC;
		memcpy(&r[1], "LiveSnapTCG ", 12);
		return;
	case CPUID_HV_TSC:
		r[0] = vcpu->vm->tsc_khz;
		return;
	case 0x80000000u:
		memcpy(r, native[2], 4 * sizeof(r[0]));
		return;
	case 0x80000001u:
		memcpy(r, native[3], 4 * sizeof(r[0]));
		return;
	}
}

/* Leaves we own are answered here; the rest are the emulated CPU's. */
static int hook_cpuid(uc_engine *uc, void *opaque)
{
	struct vcpu *vcpu = opaque;
	uint64_t rax = 0;
	uint32_t r[4];
	uint64_t v;

	uc_reg_read(uc, UC_X86_REG_RAX, &rax);
	if ((uint32_t)rax != 1 && (uint32_t)rax != CPUID_HV_BASE &&
	    (uint32_t)rax != CPUID_HV_TSC)
		return 0;
	cpuid_leaf(vcpu, (uint32_t)rax, r);
	v = r[0], uc_reg_write(uc, UC_X86_REG_RAX, &v);
	v = r[1], uc_reg_write(uc, UC_X86_REG_RBX, &v);
	v = r[2], uc_reg_write(uc, UC_X86_REG_RCX, &v);
	v = r[3], uc_reg_write(uc, UC_X86_REG_RDX, &v);
	return 1;
}

/*
 * Stops requested from other threads (kicks, the end of a turn) take
 * effect here, at the start of a block, before any of its instructions:
 * Unicorn 2.0.1 checks for a stop after every memory access too, and a
 * stop seen there resumes the block from its start, running again the
 * instructions before the access (a guest `inc` done twice). So no other
 * thread ever calls uc_emu_stop(); it sets stop_req and this hook, run by
 * the vCPU itself at each block start, obeys it.
 */
static void hook_block(uc_engine *uc, uint64_t addr, uint32_t size,
		       void *opaque)
{
	struct tcg_vcpu *v = TCG_VCPU((struct vcpu *)opaque);

	if (__atomic_load_n(&v->stop_req, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&v->stop_req, false, __ATOMIC_RELAXED);
		v->stopped = true;
		uc_emu_stop(uc);
	}
}

static void hook_intr(uc_engine *uc, uint32_t intno, void *opaque)
{
	struct vcpu *vcpu = opaque;

	TCG_VCPU(vcpu)->exception = (int)intno;
	uc_emu_stop(uc);
}

static bool hook_invalid(uc_engine *uc, void *opaque)
{
	struct vcpu *vcpu = opaque;

	TCG_VCPU(vcpu)->exception = 6; /* #UD */
	return false;
}

static uint64_t mmio_none_read(uc_engine *uc, uint64_t off, unsigned size,
			       void *opaque)
{
	return ~0ull;
}

static void mmio_none_write(uc_engine *uc, uint64_t off, unsigned size,
			    uint64_t value, void *opaque)
{
}

static void deliver_ipi(struct vcpu *src, const struct lapic_ipi *ipi);

static uint64_t mmio_lapic_read(uc_engine *uc, uint64_t off, unsigned size,
				void *opaque)
{
	struct vcpu *vcpu = opaque;

	return lapic_mmio_read(&TCG_VCPU(vcpu)->lapic, (unsigned)off, size);
}

static void mmio_lapic_write(uc_engine *uc, uint64_t off, unsigned size,
			     uint64_t value, void *opaque)
{
	struct vcpu *vcpu = opaque;
	struct lapic_ipi ipi;

	lapic_mmio_write(&TCG_VCPU(vcpu)->lapic, (unsigned)off, size,
			 (uint32_t)value, &ipi);
	if (ipi.kind != LAPIC_IPI_NONE)
		deliver_ipi(vcpu, &ipi);
}

/*
 * INIT puts the target in wait-for-SIPI; a start-up IPI to a vCPU
 * waiting for one makes its own thread start it in real mode at vector
 * << 12 (engines are made and destroyed on their vCPU's thread only).
 */
static void deliver_ipi(struct vcpu *src, const struct lapic_ipi *ipi)
{
	struct vm *vm = src->vm;
	struct tcg_vm *t = TCG_VM(vm);

	if (ipi->kind == LAPIC_IPI_OTHER) {
		fprintf(stderr,
			"livesnap: vCPU %u: IPI 0x%08x not delivered (the tcg "
			"accelerator delivers INIT and start-up IPIs only)\n",
			src->id, ipi->icr_lo);
		return;
	}
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct tcg_vcpu *v = TCG_VCPU(&vm->vcpus[i]);

		if (!lapic_ipi_targets(ipi, src->id, i))
			continue;
		if (ipi->kind == LAPIC_IPI_INIT && i != src->id) {
			v->mp_state = X86_MP_INIT_RECEIVED;
		} else if (ipi->kind == LAPIC_IPI_SIPI &&
			   (v->mp_state == X86_MP_INIT_RECEIVED ||
			    v->mp_state == X86_MP_UNINITIALIZED)) {
			v->mp_state = X86_MP_SIPI_RECEIVED;
			v->sipi_vector = ipi->vector;
		}
	}
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

/* ---- engines ---- */

static int map_ram(struct vcpu *vcpu, uc_engine *uc, char *err)
{
	struct vm_mem *m = &vcpu->vm->mem;
	uc_err e;

	e = uc_mem_map_ptr(uc, 0, m->low_size, UC_PROT_ALL, m->host);
	if (!e && m->high_size)
		e = uc_mem_map_ptr(uc, GPA_4G, m->high_size, UC_PROT_ALL,
				   m->host + m->low_size);
	if (e)
		return uc_fail(err, e, "uc_mem_map_ptr(guest RAM)", vcpu->id);
	tcg_dirty_check_engine(vcpu->vm, uc);
	return 0;
}

/* The hole: stub page, LAPIC page, and all-ones MMIO around them. */
static int map_hole(struct vcpu *vcpu, uc_engine *uc, char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	uint64_t low = vcpu->vm->mem.low_size;
	struct {
		uint64_t start, end;
	} none[] = {
	    {low, GPA_TCG_STUB},
	    {GPA_TCG_STUB + 4096, GPA_LAPIC},
	    {GPA_LAPIC + 4096, GPA_4G},
	};
	uc_err e;

	for (size_t i = 0; i < ARRAY_SIZE(none); i++) {
		if (none[i].end <= none[i].start)
			continue;
		e = uc_mmio_map(uc, none[i].start, none[i].end - none[i].start,
				mmio_none_read, NULL, mmio_none_write, NULL);
		if (e)
			return uc_fail(err, e, "uc_mmio_map(hole)", vcpu->id);
	}
	e = uc_mem_map_ptr(uc, GPA_TCG_STUB, 4096, UC_PROT_ALL, v->stub);
	if (e)
		return uc_fail(err, e, "uc_mem_map_ptr(stub)", vcpu->id);
	e = uc_mmio_map(uc, GPA_LAPIC, 4096, mmio_lapic_read, vcpu,
			mmio_lapic_write, vcpu);
	if (e)
		return uc_fail(err, e, "uc_mmio_map(LAPIC)", vcpu->id);
	return 0;
}

static int add_hooks(struct vcpu *vcpu, uc_engine *uc, char *err)
{
	uc_hook h;
	uc_err e;

	e = uc_hook_add(uc, &h, UC_HOOK_INSN, hook_in, vcpu, 1, 0,
			UC_X86_INS_IN);
	e = e ?: uc_hook_add(uc, &h, UC_HOOK_INSN, hook_out, vcpu, 1, 0,
			     UC_X86_INS_OUT);
	e = e ?: uc_hook_add(uc, &h, UC_HOOK_INSN, hook_cpuid, vcpu, 1, 0,
			     UC_X86_INS_CPUID);
	e = e ?: uc_hook_add(uc, &h, UC_HOOK_INTR, hook_intr, vcpu, 1, 0);
	e = e ?: uc_hook_add(uc, &h, UC_HOOK_BLOCK, hook_block, vcpu, 1, 0);
	e = e ?: uc_hook_add(uc, &h, UC_HOOK_INSN_INVALID, hook_invalid, vcpu,
			     1, 0);
	if (e)
		return uc_fail(err, e, "uc_hook_add", vcpu->id);
	return 0;
}

/* A new engine in 64-bit mode at CPL 0, paging off; replaces any old one. */
int tcg_engine_create(struct vcpu *vcpu, char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	uc_engine *uc;
	uc_err e;
	int ret;

	/* Unicorn loads while the VMM maps RAM and restores memory. */
	ret = tcg_uc_ready(err);
	if (ret)
		return ret;
	tcg_engine_destroy(vcpu);
	e = uc_open(UC_ARCH_X86, UC_MODE_64, &uc);
	if (e)
		return uc_fail(err, e, "uc_open", vcpu->id);
	ret = map_ram(vcpu, uc, err);
	ret = ret ?: map_hole(vcpu, uc, err);
	if (!ret)
		cpuid_probe_engine(vcpu, uc); /* before the cpuid hook */
	ret = ret ?: add_hooks(vcpu, uc, err);
	if (ret) {
		uc_close(uc);
		return ret;
	}
	v->exception = -1;
	pthread_mutex_lock(&TCG_VM(vcpu->vm)->lock);
	v->uc = uc;
	pthread_mutex_unlock(&TCG_VM(vcpu->vm)->lock);
	return 0;
}

void tcg_engine_destroy(struct vcpu *vcpu)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	uc_engine *uc;

	pthread_mutex_lock(&TCG_VM(vcpu->vm)->lock);
	uc = v->uc;
	v->uc = NULL;
	pthread_mutex_unlock(&TCG_VM(vcpu->vm)->lock);
	if (uc)
		uc_close(uc);
}

/*
 * The CPUID of Unicorn's emulated CPU, read by running `cpuid` in an
 * engine: leaf 1 and the extended leaves are passed through, edited per
 * vCPU (cpuid_leaf()). Probed once per VM, not at VM creation: a restored
 * guest may never ask, and a restore should not wait for it.
 */
static const uint32_t probe_leaves[4] = {0, 1, 0x80000000u, 0x80000001u};
static const uint8_t probe_code[] = {0x0f, 0xa2}; /* cpuid */

/* Runs probe_code, at gpa in uc, for each leaf; false if a run failed. */
static bool cpuid_run(uc_engine *uc, uint64_t gpa, uint32_t out[4][4])
{
	static const int regs[4] = {UC_X86_REG_RAX, UC_X86_REG_RBX,
				    UC_X86_REG_RCX, UC_X86_REG_RDX};
	bool ok = true;

	for (int i = 0; i < 4; i++) {
		uint64_t v = probe_leaves[i], zero = 0;

		uc_reg_write(uc, UC_X86_REG_RAX, &v);
		uc_reg_write(uc, UC_X86_REG_RCX, &zero);
		if (uc_emu_start(uc, gpa, gpa + sizeof(probe_code), 0, 0)) {
			ok = false;
			continue;
		}
		for (int r = 0; r < 4; r++) {
			uc_reg_read(uc, regs[r], &v);
			out[i][r] = (uint32_t)v;
		}
	}
	return ok;
}

static void cpuid_set(struct tcg_vm *t, uint32_t out[4][4])
{
	memcpy(t->cpuid_native, out, sizeof(t->cpuid_native));
	__atomic_store_n(&t->cpuid_probed, true, __ATOMIC_RELEASE);
}

/*
 * In a vCPU's new engine, before its hooks (the cpuid hook would ask for
 * the very leaves probed): its state is about to be overwritten by the
 * resume stub or a context, and starting an engine costs milliseconds,
 * so probing here spares a restore's vCPU a scratch engine on its way to
 * running the guest. The code goes at TCG_STUB_PROBE in the stub page,
 * which the stub never reaches (a block translated there stays unused).
 */
static void cpuid_probe_engine(struct vcpu *vcpu, uc_engine *uc)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	uint32_t out[4][4] = {{0}};
	bool ok;

	if (__atomic_load_n(&t->cpuid_probed, __ATOMIC_ACQUIRE))
		return;
	memcpy(TCG_VCPU(vcpu)->stub + TCG_STUB_PROBE, probe_code,
	       sizeof(probe_code));
	ok = cpuid_run(uc, GPA_TCG_STUB + TCG_STUB_PROBE, out);
	pthread_mutex_lock(&t->cpuid_lock);
	if (ok && !t->cpuid_probed) /* else the scratch engine, later */
		cpuid_set(t, out);
	pthread_mutex_unlock(&t->cpuid_lock);
}

/* Before any engine exists (a fresh boot's MP table): a scratch one. */
static void cpuid_probe(struct tcg_vm *t)
{
	uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t out[4][4] = {{0}};
	uc_engine *uc;

	if (page == MAP_FAILED) {
		cpuid_set(t, out);
		return;
	}
	memcpy(page, probe_code, sizeof(probe_code));
	if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) == UC_ERR_OK) {
		if (uc_mem_map_ptr(uc, 0, 4096, UC_PROT_ALL, page) ==
		    UC_ERR_OK)
			cpuid_run(uc, 0, out);
		uc_close(uc);
	}
	munmap(page, 4096);
	cpuid_set(t, out);
}

const uint32_t (*tcg_cpuid_native(struct tcg_vm *t))[4]
{
	/* every vcpu_run asks: no lock once the probe is done */
	if (__atomic_load_n(&t->cpuid_probed, __ATOMIC_ACQUIRE))
		return (const uint32_t(*)[4])t->cpuid_native;
	pthread_mutex_lock(&t->cpuid_lock);
	if (!t->cpuid_probed)
		cpuid_probe(t);
	pthread_mutex_unlock(&t->cpuid_lock);
	return (const uint32_t(*)[4])t->cpuid_native;
}

