/* SPDX-License-Identifier: MIT */
/*
 * Description: KVM's view of a vCPU (the uapi structs) goes to the
 * backend-neutral x86_cpu_state and back without losing a field KVM
 * defines; no /dev/kvm needed. Every field is filled with a distinct
 * pattern, so a field dropped or swapped (rbx for rcx, ds for es) shows.
 */
#include <stdlib.h>
#include <string.h>

#include "accel/kvm/kvm.h"
#include "check.h"
#include "util.h"

static uint64_t pattern = 0x0123456789abcdefull;

static uint64_t next(void)
{
	/* xorshift64: distinct, non-zero values for every field */
	pattern ^= pattern << 13;
	pattern ^= pattern >> 7;
	pattern ^= pattern << 17;
	return pattern;
}

static void fill_segment(struct kvm_segment *s)
{
	s->base = next();
	s->limit = (uint32_t)next();
	s->selector = (uint16_t)next();
	s->type = next() & 0xf;
	s->present = 1;
	s->dpl = next() & 3;
	s->db = next() & 1;
	s->s = 1;
	s->l = next() & 1;
	s->g = 1;
	s->avl = next() & 1;
	s->unusable = next() & 1;
}

static void fill(struct kvm_vcpu_snapshot *k)
{
	struct kvm_segment *segs[] = {&k->sregs.cs, &k->sregs.ds, &k->sregs.es,
				      &k->sregs.fs, &k->sregs.gs, &k->sregs.ss,
				      &k->sregs.tr, &k->sregs.ldt};
	uint64_t *regs = (uint64_t *)&k->regs;

	memset(k, 0, sizeof(*k));
	k->tsc_khz = 2100000;
	k->mp_state.mp_state = KVM_MP_STATE_HALTED;
	for (size_t i = 0; i < sizeof(k->regs) / 8; i++)
		regs[i] = next();
	for (size_t i = 0; i < ARRAY_SIZE(segs); i++)
		fill_segment(segs[i]);
	k->sregs.gdt.base = next(), k->sregs.gdt.limit = (uint16_t)next();
	k->sregs.idt.base = next(), k->sregs.idt.limit = (uint16_t)next();
	k->sregs.cr0 = next(), k->sregs.cr2 = next(), k->sregs.cr3 = next();
	k->sregs.cr4 = next(), k->sregs.cr8 = next(), k->sregs.efer = next();
	k->sregs.apic_base = next();
	for (int i = 0; i < 4; i++)
		k->sregs.interrupt_bitmap[i] = next();
	k->xcrs.nr_xcrs = 1;
	k->xcrs.xcrs[0].value = next() | 1;
	for (int i = 0; i < 4; i++)
		k->debugregs.db[i] = next();
	k->debugregs.dr6 = next(), k->debugregs.dr7 = next();
	for (size_t i = 0; i < sizeof(k->lapic.regs); i++)
		k->lapic.regs[i] = (char)next();
	k->events.exception.injected = 1, k->events.exception.nr = 13;
	k->events.exception.has_error_code = 1;
	k->events.exception.pending = 1;
	k->events.exception.error_code = (uint32_t)next();
	k->events.exception_has_payload = 1;
	k->events.exception_payload = next();
	k->events.interrupt.injected = 1, k->events.interrupt.nr = 0x31;
	k->events.interrupt.soft = 1, k->events.interrupt.shadow = 3;
	k->events.nmi.injected = 1, k->events.nmi.pending = 1;
	k->events.nmi.masked = 1;
	k->events.sipi_vector = 0x9a;
	k->events.flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
	k->events.smi.smm = 1, k->events.smi.pending = 1;
	k->events.smi.smm_inside_nmi = 1, k->events.smi.latched_init = 1;
	k->events.triple_fault.pending = 1;
	k->nmsrs = 40;
	for (uint32_t i = 0; i < k->nmsrs; i++)
		k->msrs[i] = (struct kvm_msr_entry){.index = 0xc0000000u + i,
						    .data = next()};
	k->ncpuid = 30;
	for (uint32_t i = 0; i < k->ncpuid; i++)
		k->cpuid[i] = (struct kvm_cpuid_entry2){
		    .function = i,
		    .index = (uint32_t)next() & 7,
		    .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
		    .eax = (uint32_t)next(),
		    .ebx = (uint32_t)next(),
		    .ecx = (uint32_t)next(),
		    .edx = (uint32_t)next()};
	k->xsave_size = 4096;
	for (uint32_t i = 0; i < k->xsave_size; i++)
		k->xsave[i] = (uint8_t)next();
}

static void compare(const struct kvm_vcpu_snapshot *a,
		    const struct kvm_vcpu_snapshot *b)
{
	CHECK(a->mp_state.mp_state == b->mp_state.mp_state, "MP state");
	CHECK(a->tsc_khz == b->tsc_khz, "TSC kHz");
	CHECK(!memcmp(&a->regs, &b->regs, sizeof(a->regs)), "kvm_regs");
	CHECK(!memcmp(&a->sregs, &b->sregs, sizeof(a->sregs)), "kvm_sregs");
	CHECK(a->xcrs.nr_xcrs == 1 && b->xcrs.nr_xcrs == 1 &&
		  a->xcrs.xcrs[0].xcr == b->xcrs.xcrs[0].xcr &&
		  a->xcrs.xcrs[0].value == b->xcrs.xcrs[0].value,
	      "XCR0");
	CHECK(!memcmp(&a->debugregs, &b->debugregs, sizeof(a->debugregs)),
	      "kvm_debugregs");
	CHECK(!memcmp(&a->lapic, &b->lapic, sizeof(a->lapic)), "LAPIC page");
	CHECK(!memcmp(&a->events, &b->events, sizeof(a->events)),
	      "kvm_vcpu_events");
	CHECK(a->nmsrs == b->nmsrs &&
		  !memcmp(a->msrs, b->msrs, a->nmsrs * sizeof(a->msrs[0])),
	      "MSRs");
	CHECK(a->ncpuid == b->ncpuid &&
		  !memcmp(a->cpuid, b->cpuid, a->ncpuid * sizeof(a->cpuid[0])),
	      "CPUID");
	CHECK(a->xsave_size == b->xsave_size &&
		  !memcmp(a->xsave, b->xsave, a->xsave_size),
	      "XSAVE image");
}

/* Neutral fields land where an architect would look for them. */
static void check_mapping(const struct kvm_vcpu_snapshot *k,
			  const struct x86_cpu_state *st)
{
	CHECK(st->gpr[X86_RAX] == k->regs.rax && st->gpr[X86_RBX] == k->regs.rbx &&
		  st->gpr[X86_RCX] == k->regs.rcx &&
		  st->gpr[X86_RSP] == k->regs.rsp &&
		  st->gpr[X86_R15] == k->regs.r15 && st->rip == k->regs.rip,
	      "GPRs in instruction-set order");
	CHECK(st->es.base == k->sregs.es.base &&
		  st->ss.selector == k->sregs.ss.selector &&
		  st->tr.type == k->sregs.tr.type,
	      "segments by name");
	CHECK(st->cr3 == k->sregs.cr3 && st->efer == k->sregs.efer,
	      "control registers");
	CHECK(st->events.exception_nr == 13 && st->events.sipi_vector == 0x9a &&
		  st->events.triple_fault_pending == 1,
	      "events");
	CHECK(st->mp_state == X86_MP_HALTED, "MP state numbering");
	CHECK(!strcmp(st->priv_backend, "kvm"), "backend tag");
}

int main(void)
{
	struct kvm_vcpu_snapshot *a = aligned_alloc(64, sizeof(*a));
	struct kvm_vcpu_snapshot *b = aligned_alloc(64, sizeof(*b));
	struct x86_cpu_state *st = aligned_alloc(64, sizeof(*st));
	char err[VMM_ERR_MAX];

	if (!a || !b || !st)
		return 1;
	for (int round = 0; round < 16; round++) {
		fill(a);
		x86_cpu_state_init(st, 3);
		kvm_snapshot_to_x86(a, st);
		check_mapping(a, st);
		CHECK(x86_cpu_state_check(st, 3, err) == 0, "check: %s", err);
		CHECK(kvm_snapshot_from_x86(st, b, err) == 0, "from_x86: %s",
		      err);
		compare(a, b);
	}
	/* Counts out of range are refused, not read past. */
	st->nmsrs = X86_MAX_MSRS + 1;
	CHECK(kvm_snapshot_from_x86(st, b, err) == -EINVAL, "MSR count");
	CHECK(x86_cpu_state_check(st, 3, err) == -EINVAL, "state check");
	free(a);
	free(b);
	free(st);
	return check_report("KVM state <-> neutral state round trip");
}
