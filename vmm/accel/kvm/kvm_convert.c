/* SPDX-License-Identifier: MIT */
/*
 * KVM's uapi structs <-> the backend-neutral x86_cpu_state. Pure
 * functions: tested without /dev/kvm (tests/vmm/test_kvm_convert.c) by a
 * round trip that must give back every field KVM defines.
 */
#include <string.h>

#include "../../util.h"
#include "kvm.h"

void kvm_segment_to_x86(const struct kvm_segment *k, struct x86_segment *x)
{
	*x = (struct x86_segment){
	    .base = k->base,
	    .limit = k->limit,
	    .selector = k->selector,
	    .type = k->type,
	    .present = k->present,
	    .dpl = k->dpl,
	    .db = k->db,
	    .s = k->s,
	    .l = k->l,
	    .g = k->g,
	    .avl = k->avl,
	    .unusable = k->unusable,
	};
}

void kvm_segment_from_x86(const struct x86_segment *x, struct kvm_segment *k)
{
	*k = (struct kvm_segment){
	    .base = x->base,
	    .limit = x->limit,
	    .selector = x->selector,
	    .type = x->type,
	    .present = x->present,
	    .dpl = x->dpl,
	    .db = x->db,
	    .s = x->s,
	    .l = x->l,
	    .g = x->g,
	    .avl = x->avl,
	    .unusable = x->unusable,
	};
}

/* kvm_regs order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 */
static void regs_to_x86(const struct kvm_regs *r, struct x86_cpu_state *st)
{
	uint64_t *g = st->gpr;

	g[X86_RAX] = r->rax, g[X86_RBX] = r->rbx, g[X86_RCX] = r->rcx;
	g[X86_RDX] = r->rdx, g[X86_RSI] = r->rsi, g[X86_RDI] = r->rdi;
	g[X86_RSP] = r->rsp, g[X86_RBP] = r->rbp, g[X86_R8] = r->r8;
	g[X86_R9] = r->r9, g[X86_R10] = r->r10, g[X86_R11] = r->r11;
	g[X86_R12] = r->r12, g[X86_R13] = r->r13, g[X86_R14] = r->r14;
	g[X86_R15] = r->r15;
	st->rip = r->rip;
	st->rflags = r->rflags;
}

static void regs_from_x86(const struct x86_cpu_state *st, struct kvm_regs *r)
{
	const uint64_t *g = st->gpr;

	*r = (struct kvm_regs){
	    .rax = g[X86_RAX], .rbx = g[X86_RBX], .rcx = g[X86_RCX],
	    .rdx = g[X86_RDX], .rsi = g[X86_RSI], .rdi = g[X86_RDI],
	    .rsp = g[X86_RSP], .rbp = g[X86_RBP], .r8 = g[X86_R8],
	    .r9 = g[X86_R9],   .r10 = g[X86_R10], .r11 = g[X86_R11],
	    .r12 = g[X86_R12], .r13 = g[X86_R13], .r14 = g[X86_R14],
	    .r15 = g[X86_R15], .rip = st->rip,	  .rflags = st->rflags,
	};
}

static void sregs_to_x86(const struct kvm_sregs *s, struct x86_cpu_state *st)
{
	kvm_segment_to_x86(&s->cs, &st->cs);
	kvm_segment_to_x86(&s->ds, &st->ds);
	kvm_segment_to_x86(&s->es, &st->es);
	kvm_segment_to_x86(&s->fs, &st->fs);
	kvm_segment_to_x86(&s->gs, &st->gs);
	kvm_segment_to_x86(&s->ss, &st->ss);
	kvm_segment_to_x86(&s->tr, &st->tr);
	kvm_segment_to_x86(&s->ldt, &st->ldt);
	st->gdt = (struct x86_dtable){.base = s->gdt.base, .limit = s->gdt.limit};
	st->idt = (struct x86_dtable){.base = s->idt.base, .limit = s->idt.limit};
	st->cr0 = s->cr0, st->cr2 = s->cr2, st->cr3 = s->cr3;
	st->cr4 = s->cr4, st->cr8 = s->cr8, st->efer = s->efer;
	st->apic_base = s->apic_base;
	memcpy(st->interrupt_bitmap, s->interrupt_bitmap,
	       sizeof(st->interrupt_bitmap));
}

static void sregs_from_x86(const struct x86_cpu_state *st, struct kvm_sregs *s)
{
	memset(s, 0, sizeof(*s));
	kvm_segment_from_x86(&st->cs, &s->cs);
	kvm_segment_from_x86(&st->ds, &s->ds);
	kvm_segment_from_x86(&st->es, &s->es);
	kvm_segment_from_x86(&st->fs, &s->fs);
	kvm_segment_from_x86(&st->gs, &s->gs);
	kvm_segment_from_x86(&st->ss, &s->ss);
	kvm_segment_from_x86(&st->tr, &s->tr);
	kvm_segment_from_x86(&st->ldt, &s->ldt);
	s->gdt.base = st->gdt.base, s->gdt.limit = st->gdt.limit;
	s->idt.base = st->idt.base, s->idt.limit = st->idt.limit;
	s->cr0 = st->cr0, s->cr2 = st->cr2, s->cr3 = st->cr3;
	s->cr4 = st->cr4, s->cr8 = st->cr8, s->efer = st->efer;
	s->apic_base = st->apic_base;
	memcpy(s->interrupt_bitmap, st->interrupt_bitmap,
	       sizeof(s->interrupt_bitmap));
}

static void events_to_x86(const struct kvm_vcpu_events *e,
			  struct x86_events *x)
{
	*x = (struct x86_events){
	    .exception_injected = e->exception.injected,
	    .exception_nr = e->exception.nr,
	    .exception_has_error = e->exception.has_error_code,
	    .exception_pending = e->exception.pending,
	    .exception_has_payload = e->exception_has_payload,
	    .exception_error_code = e->exception.error_code,
	    .exception_payload = e->exception_payload,
	    .interrupt_injected = e->interrupt.injected,
	    .interrupt_nr = e->interrupt.nr,
	    .interrupt_soft = e->interrupt.soft,
	    .interrupt_shadow = e->interrupt.shadow,
	    .nmi_injected = e->nmi.injected,
	    .nmi_pending = e->nmi.pending,
	    .nmi_masked = e->nmi.masked,
	    .smi_smm = e->smi.smm,
	    .smi_pending = e->smi.pending,
	    .smi_inside_nmi = e->smi.smm_inside_nmi,
	    .smi_latched_init = e->smi.latched_init,
	    .sipi_vector = e->sipi_vector,
	    .flags = e->flags,
	    .triple_fault_pending = e->triple_fault.pending,
	};
}

static void events_from_x86(const struct x86_events *x,
			    struct kvm_vcpu_events *e)
{
	memset(e, 0, sizeof(*e));
	e->exception.injected = x->exception_injected;
	e->exception.nr = x->exception_nr;
	e->exception.has_error_code = x->exception_has_error;
	e->exception.pending = x->exception_pending;
	e->exception.error_code = x->exception_error_code;
	e->exception_has_payload = x->exception_has_payload;
	e->exception_payload = x->exception_payload;
	e->interrupt.injected = x->interrupt_injected;
	e->interrupt.nr = x->interrupt_nr;
	e->interrupt.soft = x->interrupt_soft;
	e->interrupt.shadow = x->interrupt_shadow;
	e->nmi.injected = x->nmi_injected;
	e->nmi.pending = x->nmi_pending;
	e->nmi.masked = x->nmi_masked;
	e->smi.smm = x->smi_smm;
	e->smi.pending = x->smi_pending;
	e->smi.smm_inside_nmi = x->smi_inside_nmi;
	e->smi.latched_init = x->smi_latched_init;
	e->sipi_vector = x->sipi_vector;
	e->flags = x->flags;
	e->triple_fault.pending = (uint8_t)x->triple_fault_pending;
}

void kvm_snapshot_to_x86(const struct kvm_vcpu_snapshot *k,
			 struct x86_cpu_state *st)
{
	st->mp_state = k->mp_state.mp_state;
	st->tsc_khz = k->tsc_khz;
	regs_to_x86(&k->regs, st);
	sregs_to_x86(&k->sregs, st);
	st->xcr0 = 0;
	for (uint32_t i = 0; i < k->xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++)
		if (k->xcrs.xcrs[i].xcr == 0)
			st->xcr0 = k->xcrs.xcrs[i].value;
	memcpy(st->dr, k->debugregs.db, sizeof(st->dr));
	st->dr6 = k->debugregs.dr6;
	st->dr7 = k->debugregs.dr7;
	memcpy(st->lapic, k->lapic.regs, X86_LAPIC_SIZE);
	events_to_x86(&k->events, &st->events);
	st->nmsrs = k->nmsrs;
	for (uint32_t i = 0; i < k->nmsrs; i++)
		st->msrs[i] = (struct x86_msr){.index = k->msrs[i].index,
					       .data = k->msrs[i].data};
	st->ncpuid = k->ncpuid;
	for (uint32_t i = 0; i < k->ncpuid; i++) {
		const struct kvm_cpuid_entry2 *c = &k->cpuid[i];

		st->cpuid[i] = (struct x86_cpuid){
		    .function = c->function, .index = c->index,
		    .flags = c->flags, .eax = c->eax, .ebx = c->ebx,
		    .ecx = c->ecx, .edx = c->edx};
	}
	st->xsave_size = k->xsave_size;
	memcpy(st->xsave, k->xsave, k->xsave_size);
	snprintf(st->priv_backend, sizeof(st->priv_backend), "kvm");
}

int kvm_snapshot_from_x86(const struct x86_cpu_state *st,
			  struct kvm_vcpu_snapshot *k, char *err)
{
	if (st->nmsrs > X86_MAX_MSRS || st->ncpuid > X86_MAX_CPUID ||
	    st->xsave_size > X86_XSAVE_MAX)
		return vmm_failx(err, EINVAL,
				 "vCPU %u state: counts out of range", st->id);
	memset(k, 0, sizeof(*k));
	k->mp_state.mp_state = st->mp_state;
	k->tsc_khz = st->tsc_khz;
	regs_from_x86(st, &k->regs);
	sregs_from_x86(st, &k->sregs);
	k->xcrs.nr_xcrs = 1;
	k->xcrs.xcrs[0].xcr = 0;
	/* XCR0 bit 0 (x87) is always set; 0 means "not saved". */
	k->xcrs.xcrs[0].value = st->xcr0 ? st->xcr0 : 1;
	memcpy(k->debugregs.db, st->dr, sizeof(st->dr));
	k->debugregs.dr6 = st->dr6;
	k->debugregs.dr7 = st->dr7;
	memcpy(k->lapic.regs, st->lapic, X86_LAPIC_SIZE);
	events_from_x86(&st->events, &k->events);
	k->nmsrs = st->nmsrs;
	for (uint32_t i = 0; i < st->nmsrs; i++)
		k->msrs[i] = (struct kvm_msr_entry){.index = st->msrs[i].index,
						    .data = st->msrs[i].data};
	k->ncpuid = st->ncpuid;
	for (uint32_t i = 0; i < st->ncpuid; i++) {
		const struct x86_cpuid *c = &st->cpuid[i];

		k->cpuid[i] = (struct kvm_cpuid_entry2){
		    .function = c->function, .index = c->index,
		    .flags = c->flags, .eax = c->eax, .ebx = c->ebx,
		    .ecx = c->ecx, .edx = c->edx};
	}
	k->xsave_size = st->xsave_size;
	memcpy(k->xsave, st->xsave, st->xsave_size);
	return 0;
}
