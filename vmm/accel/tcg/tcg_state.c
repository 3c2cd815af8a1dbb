/* SPDX-License-Identifier: MIT */
/*
 * TCG vCPU state <-> the neutral x86_cpu_state.
 *
 * Unicorn's register API gives the general, control, debug, FPU/SSE
 * registers, MSRs, GDTR/IDTR and TR/LDTR in full, but only the selectors of
 * CS, DS, ES, SS (no hidden part, no CPL). So:
 *   - saving reads the hidden parts from the guest's GDT, which is what
 *     the CPU loaded them from (FS/GS bases from their MSRs);
 *   - loading runs the resume stub (tcg_stub.S), which loads control
 *     registers, tables and segments as the CPU does, and enters the
 *     guest with iretq; a saved hidden part that differs from the guest's
 *     GDT entry is refused, as is a vCPU outside 64-bit long mode (the
 *     default guest's APs leave real mode within microseconds of boot).
 * Descriptor tables are read at their base as a guest-physical address:
 * the guests this backend runs identity-map their memory.
 */
#include <stdlib.h>

#include "../../layout.h"
#include "../../vm.h"
#include "tcg.h"

#define CR0_PE	   1ull
#define EFER_LMA   (1ull << 10)
#define RFLAGS_RSV (1ull << 1)

/* QEMU's segment cache flags: the descriptor's high dword layout. */
#define DF_TYPE_SHIFT 8
#define DF_S	      (1u << 12)
#define DF_DPL_SHIFT  13
#define DF_P	      (1u << 15)
#define DF_AVL	      (1u << 20)
#define DF_L	      (1u << 21)
#define DF_DB	      (1u << 22)
#define DF_G	      (1u << 23)

static const struct {
	int reg;
	size_t off; /* in x86_cpu_state.gpr */
} gprs[16] = {
    {UC_X86_REG_RAX, X86_RAX}, {UC_X86_REG_RCX, X86_RCX},
    {UC_X86_REG_RDX, X86_RDX}, {UC_X86_REG_RBX, X86_RBX},
    {UC_X86_REG_RSP, X86_RSP}, {UC_X86_REG_RBP, X86_RBP},
    {UC_X86_REG_RSI, X86_RSI}, {UC_X86_REG_RDI, X86_RDI},
    {UC_X86_REG_R8, X86_R8},   {UC_X86_REG_R9, X86_R9},
    {UC_X86_REG_R10, X86_R10}, {UC_X86_REG_R11, X86_R11},
    {UC_X86_REG_R12, X86_R12}, {UC_X86_REG_R13, X86_R13},
    {UC_X86_REG_R14, X86_R14}, {UC_X86_REG_R15, X86_R15},
};

/* MSRs carried besides EFER, APIC_BASE and the FS/GS bases. */
static const uint32_t tcg_msrs[] = {
    X86_MSR_STAR,	  X86_MSR_LSTAR,	X86_MSR_CSTAR,
    X86_MSR_FMASK,	  X86_MSR_KERNEL_GS,	X86_MSR_SYSENTER_CS,
    X86_MSR_SYSENTER_ESP, X86_MSR_SYSENTER_EIP, 0x277 /* PAT */,
    X86_MSR_TSC,
};

static uint32_t seg_flags(const struct x86_segment *s)
{
	return ((uint32_t)s->type << DF_TYPE_SHIFT) | (s->s ? DF_S : 0) |
	       ((uint32_t)s->dpl << DF_DPL_SHIFT) | (s->present ? DF_P : 0) |
	       (s->avl ? DF_AVL : 0) | (s->l ? DF_L : 0) | (s->db ? DF_DB : 0) |
	       (s->g ? DF_G : 0);
}

static void seg_from_flags(struct x86_segment *s, uint32_t f)
{
	s->type = (f >> DF_TYPE_SHIFT) & 0xf;
	s->s = !!(f & DF_S);
	s->dpl = (f >> DF_DPL_SHIFT) & 3;
	s->present = !!(f & DF_P);
	s->avl = !!(f & DF_AVL);
	s->l = !!(f & DF_L);
	s->db = !!(f & DF_DB);
	s->g = !!(f & DF_G);
}

/* The segment a (code or data) descriptor loads, or false if unreadable. */
static bool gdt_segment(struct vm *vm, const struct x86_dtable *gdt,
			uint16_t sel, struct x86_segment *s)
{
	const uint8_t *p;
	uint64_t d;
	uint32_t limit;

	*s = (struct x86_segment){.selector = sel};
	if (!(sel & ~3u)) {
		s->unusable = 1;
		return true;
	}
	if ((sel & 4) || (uint32_t)(sel & ~7u) + 7 > gdt->limit)
		return false;
	p = vm_gpa_to_hva(vm, gdt->base + (sel & ~7u), 8);
	if (!p)
		return false;
	memcpy(&d, p, 8);
	limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
	seg_from_flags(s, (uint32_t)(d >> 32));
	s->base = ((d >> 16) & 0xffffff) | ((d >> 56) << 24);
	s->limit = s->g ? (limit << 12) | 0xfff : limit;
	s->unusable = !s->present;
	return true;
}

static void real_mode_segment(uint16_t sel, bool code,
			      struct x86_segment *s)
{
	*s = (struct x86_segment){.base = (uint64_t)sel << 4,
				  .limit = 0xffff,
				  .selector = sel,
				  .type = code ? 0xb : 0x3,
				  .present = 1,
				  .s = 1};
}

static uint64_t rd(uc_engine *uc, int reg)
{
	uint64_t v = 0;

	uc_reg_read(uc, reg, &v);
	return v;
}

static uint64_t rd_msr(uc_engine *uc, uint32_t index)
{
	uc_x86_msr m = {.rid = index};

	uc_reg_read(uc, UC_X86_REG_MSR, &m);
	return m.value;
}

static void wr_msr(uc_engine *uc, uint32_t index, uint64_t value)
{
	uc_x86_msr m = {.rid = index, .value = value};

	uc_reg_write(uc, UC_X86_REG_MSR, &m);
}

static void save_mmr(uc_engine *uc, int reg, struct x86_segment *s)
{
	uc_x86_mmr m = {0};

	uc_reg_read(uc, reg, &m);
	*s = (struct x86_segment){
	    .base = m.base, .limit = m.limit, .selector = m.selector};
	seg_from_flags(s, m.flags);
	s->unusable = !s->present;
}

static void save_segments(struct vcpu *vcpu, uc_engine *uc,
			  struct x86_cpu_state *st)
{
	static const int regs[6] = {UC_X86_REG_CS, UC_X86_REG_DS,
				    UC_X86_REG_ES, UC_X86_REG_FS,
				    UC_X86_REG_GS, UC_X86_REG_SS};
	struct x86_segment *segs[6] = {&st->cs, &st->ds, &st->es,
				       &st->fs, &st->gs, &st->ss};
	uc_x86_mmr m = {0};

	uc_reg_read(uc, UC_X86_REG_GDTR, &m);
	st->gdt = (struct x86_dtable){.base = m.base, .limit = (uint16_t)m.limit};
	uc_reg_read(uc, UC_X86_REG_IDTR, &m);
	st->idt = (struct x86_dtable){.base = m.base, .limit = (uint16_t)m.limit};
	for (int i = 0; i < 6; i++) {
		uint16_t sel = (uint16_t)rd(uc, regs[i]);

		if (!(st->cr0 & CR0_PE))
			real_mode_segment(sel, i == 0, segs[i]);
		else if (!gdt_segment(vcpu->vm, &st->gdt, sel, segs[i]))
			*segs[i] = (struct x86_segment){.selector = sel,
							.unusable = 1};
	}
	st->fs.base = rd(uc, UC_X86_REG_FS_BASE);
	st->gs.base = rd(uc, UC_X86_REG_GS_BASE);
	save_mmr(uc, UC_X86_REG_TR, &st->tr);
	if (st->tr.type == 9)
		st->tr.type = 11; /* the TSS in TR is busy (QEMU caches it
				     as loaded, before marking it) */
	save_mmr(uc, UC_X86_REG_LDTR, &st->ldt);
}

/* FPU and SSE into the legacy FXSAVE region, plus the XSAVE header. */
static void save_fpu(uc_engine *uc, struct x86_cpu_state *st)
{
	uint8_t *x = st->xsave;
	uint16_t ftw = (uint16_t)rd(uc, UC_X86_REG_FPTAG);
	uint8_t abridged = 0;
	uint16_t w;
	uint32_t mxcsr;
	uint64_t q;

	memset(x, 0, X86_XSAVE_MIN_SIZE);
	w = (uint16_t)rd(uc, UC_X86_REG_FPCW), memcpy(x + X86_FXSAVE_FCW, &w, 2);
	w = (uint16_t)rd(uc, UC_X86_REG_FPSW), memcpy(x + X86_FXSAVE_FSW, &w, 2);
	for (int i = 0; i < 8; i++)
		if (((ftw >> (2 * i)) & 3) != 3)
			abridged |= (uint8_t)(1u << i);
	x[X86_FXSAVE_FTW] = abridged;
	w = (uint16_t)rd(uc, UC_X86_REG_FOP), memcpy(x + X86_FXSAVE_FOP, &w, 2);
	q = rd(uc, UC_X86_REG_FIP), memcpy(x + X86_FXSAVE_FIP, &q, 8);
	q = rd(uc, UC_X86_REG_FDP), memcpy(x + X86_FXSAVE_FDP, &q, 8);
	mxcsr = (uint32_t)rd(uc, UC_X86_REG_MXCSR);
	memcpy(x + X86_FXSAVE_MXCSR, &mxcsr, 4);
	for (int i = 0; i < 8; i++)
		uc_reg_read(uc, UC_X86_REG_ST0 + i, x + X86_FXSAVE_ST0 + 16 * i);
	for (int i = 0; i < 16; i++) {
		int reg = i < 8 ? UC_X86_REG_XMM0 + i : UC_X86_REG_XMM8 + i - 8;

		uc_reg_read(uc, reg, x + X86_FXSAVE_XMM0 + 16 * i);
	}
	q = 3; /* x87 and SSE state present */
	memcpy(x + X86_XSAVE_XSTATE_BV, &q, 8);
	st->xsave_size = X86_XSAVE_MIN_SIZE;
	st->xcr0 = 1; /* the guest cannot enable XSAVE features here */
}

static void load_fpu(uc_engine *uc, const struct x86_cpu_state *st)
{
	const uint8_t *x = st->xsave;
	uint16_t w, ftw = 0;
	uint32_t mxcsr;
	uint64_t q;

	if (st->xsave_size < 512) {
		/* no FPU state: the power-on values */
		w = 0x37f, uc_reg_write(uc, UC_X86_REG_FPCW, &w);
		mxcsr = 0x1f80, uc_reg_write(uc, UC_X86_REG_MXCSR, &mxcsr);
		return;
	}
	memcpy(&w, x + X86_FXSAVE_FCW, 2), uc_reg_write(uc, UC_X86_REG_FPCW, &w);
	memcpy(&w, x + X86_FXSAVE_FSW, 2), uc_reg_write(uc, UC_X86_REG_FPSW, &w);
	for (int i = 0; i < 8; i++)
		if (!(x[X86_FXSAVE_FTW] & (1u << i)))
			ftw |= (uint16_t)(3u << (2 * i));
	uc_reg_write(uc, UC_X86_REG_FPTAG, &ftw);
	memcpy(&w, x + X86_FXSAVE_FOP, 2), uc_reg_write(uc, UC_X86_REG_FOP, &w);
	memcpy(&q, x + X86_FXSAVE_FIP, 8), uc_reg_write(uc, UC_X86_REG_FIP, &q);
	memcpy(&q, x + X86_FXSAVE_FDP, 8), uc_reg_write(uc, UC_X86_REG_FDP, &q);
	memcpy(&mxcsr, x + X86_FXSAVE_MXCSR, 4);
	uc_reg_write(uc, UC_X86_REG_MXCSR, &mxcsr);
	for (int i = 0; i < 8; i++)
		uc_reg_write(uc, UC_X86_REG_ST0 + i, x + X86_FXSAVE_ST0 + 16 * i);
	for (int i = 0; i < 16; i++) {
		int reg = i < 8 ? UC_X86_REG_XMM0 + i : UC_X86_REG_XMM8 + i - 8;

		uc_reg_write(uc, reg, x + X86_FXSAVE_XMM0 + 16 * i);
	}
}

static void save_regs(uc_engine *uc, struct x86_cpu_state *st)
{
	static const int drs[4] = {UC_X86_REG_DR0, UC_X86_REG_DR1,
				   UC_X86_REG_DR2, UC_X86_REG_DR3};

	for (int i = 0; i < 16; i++)
		st->gpr[gprs[i].off] = rd(uc, gprs[i].reg);
	st->rip = rd(uc, UC_X86_REG_RIP);
	st->rflags = rd(uc, UC_X86_REG_RFLAGS);
	st->cr0 = rd(uc, UC_X86_REG_CR0);
	st->cr2 = rd(uc, UC_X86_REG_CR2);
	st->cr3 = rd(uc, UC_X86_REG_CR3);
	st->cr4 = rd(uc, UC_X86_REG_CR4);
	st->efer = rd_msr(uc, X86_MSR_EFER);
	for (int i = 0; i < 4; i++)
		st->dr[i] = rd(uc, drs[i]);
	st->dr6 = rd(uc, UC_X86_REG_DR6);
	st->dr7 = rd(uc, UC_X86_REG_DR7);
	for (size_t i = 0; i < ARRAY_SIZE(tcg_msrs); i++)
		x86_cpu_state_set_msr(st, tcg_msrs[i], rd_msr(uc, tcg_msrs[i]));
}

int tcg_get_state(struct vcpu *vcpu, struct x86_cpu_state *st, char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	uc_engine *uc;

	x86_cpu_state_init(st, vcpu->id);
	pthread_mutex_lock(&t->lock);
	st->mp_state = v->mp_state;
	st->events.sipi_vector = v->sipi_vector;
	uc = v->uc;
	pthread_mutex_unlock(&t->lock);
	st->tsc_khz = vcpu->vm->tsc_khz;
	st->apic_base = v->apic_base;
	memcpy(st->lapic, v->lapic.regs, X86_LAPIC_SIZE);
	st->cr8 = x86_lapic_reg(st->lapic, APIC_REG_TPR) >> 4;
	snprintf(st->priv_backend, sizeof(st->priv_backend), "tcg");
	if (!uc)
		return 0; /* waiting for SIPI: nothing else is defined */
	save_regs(uc, st);
	save_segments(vcpu, uc, st);
	save_fpu(uc, st);
	return 0;
}

/* ---- loading ---- */

static const char *seg_name(int i)
{
	static const char *const names[] = {"CS", "DS", "ES", "FS", "GS", "SS"};

	return names[i];
}

static bool same_cache(const struct x86_segment *a, const struct x86_segment *b,
		       bool check_base)
{
	if (a->unusable && b->unusable)
		return true;
	/* the accessed bit (type bit 0) is set by the load itself */
	return (a->type | 1) == (b->type | 1) && a->s == b->s &&
	       a->dpl == b->dpl &&
	       a->present == b->present && a->l == b->l && a->db == b->db &&
	       (!check_base || (a->base == b->base && a->limit == b->limit));
}

/*
 * The stub loads segments through the GDT: refuse a state whose hidden
 * parts differ from it, rather than resume a different CPU.
 */
static int check_segments(struct vcpu *vcpu, const struct x86_cpu_state *st,
			  char *err)
{
	const struct x86_segment *segs[6] = {&st->cs, &st->ds, &st->es,
					     &st->fs, &st->gs, &st->ss};

	if (!(st->efer & EFER_LMA) || !st->cs.l || !(st->cr0 & CR0_PE))
		return vmm_failx(err, ENOTSUP,
				 "vCPU %u was saved outside 64-bit long mode "
				 "(CR0 0x%llx, EFER 0x%llx, CS.L %u); the tcg "
				 "accelerator resumes 64-bit vCPUs only",
				 vcpu->id, (unsigned long long)st->cr0,
				 (unsigned long long)st->efer, st->cs.l);
	for (int i = 0; i < 6; i++) {
		struct x86_segment g;
		/* FS/GS bases come from MSRs; 64-bit ignores the others */
		bool base = false;

		if (!(segs[i]->selector & ~3u))
			continue; /* null: nothing to load */
		if (!gdt_segment(vcpu->vm, &st->gdt, segs[i]->selector, &g) ||
		    !same_cache(&g, segs[i], base))
			return vmm_failx(err, ENOTSUP,
					 "vCPU %u: %s (selector 0x%x) was saved "
					 "with a descriptor the guest's GDT does "
					 "not hold; the tcg accelerator loads "
					 "segments through the GDT",
					 vcpu->id, seg_name(i),
					 segs[i]->selector);
	}
	return 0;
}

static void put64(uint8_t *page, unsigned off, uint64_t v)
{
	memcpy(page + off, &v, 8);
}

static void put_dtable(uint8_t *page, unsigned off, const struct x86_dtable *d)
{
	memcpy(page + off, &d->limit, 2);
	memcpy(page + off + 2, &d->base, 8);
}

static void fill_stub(uint8_t *page, const struct x86_cpu_state *st)
{
	uint64_t frame[5] = {st->rip, st->cs.selector, st->rflags | RFLAGS_RSV,
			     st->gpr[X86_RSP], st->ss.selector};

	memset(page, 0, 4096);
	memcpy(page, tcg_stub_code, (size_t)(tcg_stub_code_end - tcg_stub_code));
	put64(page, TCG_STUB_CR4, st->cr4);
	put64(page, TCG_STUB_CR3, st->cr3);
	put64(page, TCG_STUB_CR0, st->cr0);
	put64(page, TCG_STUB_EFER, st->efer);
	put_dtable(page, TCG_STUB_GDTR, &st->gdt);
	put_dtable(page, TCG_STUB_IDTR, &st->idt);
	memcpy(page + TCG_STUB_DS, &st->ds.selector, 2);
	memcpy(page + TCG_STUB_ES, &st->es.selector, 2);
	memcpy(page + TCG_STUB_FS, &st->fs.selector, 2);
	memcpy(page + TCG_STUB_GS, &st->gs.selector, 2);
	memcpy(page + TCG_STUB_FRAME, frame, sizeof(frame));
}

static void load_mmr(uc_engine *uc, int reg, const struct x86_segment *s)
{
	uc_x86_mmr m = {.selector = s->selector,
			.base = s->base,
			.limit = s->limit,
			.flags = seg_flags(s)};

	uc_reg_write(uc, reg, &m);
}

/* Runs the stub up to the guest's RIP, then sets what it could not. */
static int run_stub(struct vcpu *vcpu, const struct x86_cpu_state *st,
		    char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	uc_engine *uc = v->uc;
	uc_err e;

	fill_stub(v->stub, st);
	load_mmr(uc, UC_X86_REG_TR, &st->tr);
	load_mmr(uc, UC_X86_REG_LDTR, &st->ldt);
	v->exception = -1;
	/* Unicorn drops the block it translated as the stop at `until`. */
	e = uc_emu_start(uc, GPA_TCG_STUB, st->rip, 0, 0);
	if (vm_exit_reason(vcpu->vm) != VM_EXIT_NONE) {
		/* the VM is going down (a lazy restore's bad page): say why */
		pthread_mutex_lock(&vcpu->vm->lock);
		vmm_failx(err, EIO, "%s", vcpu->vm->exit_msg);
		pthread_mutex_unlock(&vcpu->vm->lock);
		return -EIO;
	}
	if (e || v->exception >= 0 || rd(uc, UC_X86_REG_RIP) != st->rip)
		return vmm_failx(err, EIO,
				 "vCPU %u: loading its state failed (%s, "
				 "exception %d, rip 0x%llx)",
				 vcpu->id, e ? uc_strerror(e) : "no error",
				 v->exception,
				 (unsigned long long)rd(uc, UC_X86_REG_RIP));
	return 0;
}

static void load_rest(uc_engine *uc, const struct x86_cpu_state *st)
{
	static const int drs[4] = {UC_X86_REG_DR0, UC_X86_REG_DR1,
				   UC_X86_REG_DR2, UC_X86_REG_DR3};
	uint64_t v;

	for (int i = 0; i < 16; i++)
		uc_reg_write(uc, gprs[i].reg, &st->gpr[gprs[i].off]);
	uc_reg_write(uc, UC_X86_REG_CR2, &st->cr2);
	for (int i = 0; i < 4; i++)
		uc_reg_write(uc, drs[i], &st->dr[i]);
	uc_reg_write(uc, UC_X86_REG_DR6, &st->dr6);
	uc_reg_write(uc, UC_X86_REG_DR7, &st->dr7);
	for (size_t i = 0; i < ARRAY_SIZE(tcg_msrs); i++)
		/* the TSC is the host's here: not settable */
		if (tcg_msrs[i] != X86_MSR_TSC &&
		    !x86_cpu_state_msr(st, tcg_msrs[i], &v))
			wr_msr(uc, tcg_msrs[i], v);
	wr_msr(uc, X86_MSR_FS_BASE, st->fs.base);
	wr_msr(uc, X86_MSR_GS_BASE, st->gs.base);
	load_fpu(uc, st);
}

#define MSR_KVM_FIRST_OLD 0x11
#define MSR_KVM_LAST_OLD  0x12
#define MSR_KVM_FIRST	  0x4b564d00u
#define MSR_KVM_LAST	  0x4b564dffu

/*
 * What a state from another backend may hold that this one cannot carry
 * on with: refused, naming it, rather than resumed without it.
 */
static int check_carryover(struct vcpu *vcpu, const struct x86_cpu_state *st,
			   char *err)
{
	const struct x86_events *e = &st->events;
	uint64_t bv = 0;

	if (e->exception_injected || e->exception_pending ||
	    e->interrupt_injected || e->nmi_injected || e->nmi_pending ||
	    e->smi_smm || e->smi_pending || e->triple_fault_pending)
		return vmm_failx(err, ENOTSUP,
				 "vCPU %u was saved with an event pending "
				 "(exception %u, interrupt %u, NMI or SMI); "
				 "the tcg accelerator delivers none",
				 vcpu->id, e->exception_nr, e->interrupt_nr);
	if (st->xsave_size >= X86_XSAVE_XSTATE_BV + 8)
		memcpy(&bv, st->xsave + X86_XSAVE_XSTATE_BV, 8);
	if (bv & ~3ull)
		return vmm_failx(err, ENOTSUP,
				 "vCPU %u has extended register state in use "
				 "(XSTATE_BV 0x%llx); the tcg accelerator "
				 "carries x87 and SSE only",
				 vcpu->id, (unsigned long long)bv);
	for (uint32_t i = 0; i < st->nmsrs; i++) {
		const struct x86_msr *m = &st->msrs[i];
		bool pv = (m->index >= MSR_KVM_FIRST_OLD &&
			   m->index <= MSR_KVM_LAST_OLD) ||
			  (m->index >= MSR_KVM_FIRST &&
			   m->index <= MSR_KVM_LAST);

		if (pv && m->data)
			return vmm_failx(err, ENOTSUP,
					 "vCPU %u uses KVM paravirtual MSR "
					 "0x%x (0x%llx); the tcg accelerator "
					 "has no KVM paravirtual features",
					 vcpu->id, m->index,
					 (unsigned long long)m->data);
	}
	return 0;
}

/*
 * The guest keeps the TSC rate it was told; here its TSC is the host's.
 * Said once per VM when they differ by more than 1% (measured over at
 * least 1 ms, to ~0.2%): the guest's sense of time then runs off by as
 * much. Measured from the VM's creation: on a restore the RAM and engine
 * set-up since then are the interval, so nothing sleeps on the way to a
 * running guest.
 */
static void check_tsc_rate(struct vcpu *vcpu, uint32_t saved_khz)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	uint32_t host;

	if (!saved_khz || __atomic_exchange_n(&t->tsc_checked, true,
					      __ATOMIC_RELAXED))
		return;
	host = tcg_host_tsc_khz_since(t->created_ns, t->created_tsc, 1000000);
	if ((uint64_t)(host > saved_khz ? host - saved_khz : saved_khz - host) *
		100 >
	    saved_khz)
		fprintf(stderr,
			"livesnap: warning: the snapshot's guest was told its "
			"TSC runs at %u kHz; this host's runs at %u kHz (the "
			"tcg accelerator cannot scale it)\n",
			saved_khz, host);
}

static int load_running(struct vcpu *vcpu, const struct x86_cpu_state *st,
			char *err)
{
	int ret = check_carryover(vcpu, st, err);

	ret = ret ?: check_segments(vcpu, st, err);
	ret = ret ?: tcg_engine_create(vcpu, err);
	ret = ret ?: run_stub(vcpu, st, err);
	if (!ret)
		load_rest(TCG_VCPU(vcpu)->uc, st);
	return ret;
}

int tcg_set_state(struct vcpu *vcpu, const struct x86_cpu_state *st,
		  char *err)
{
	struct tcg_vcpu *v = TCG_VCPU(vcpu);
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	int ret = x86_cpu_state_check(st, vcpu->id, err);

	if (ret)
		return ret;
	memcpy(v->lapic.regs, st->lapic, X86_LAPIC_SIZE);
	v->apic_base = st->apic_base;
	/*
	 * The rate the guest was told (its TSC is the host's: the same
	 * clock, measured again here to within ~0.01%).
	 */
	if (st->tsc_khz) {
		check_tsc_rate(vcpu, st->tsc_khz);
		vcpu->vm->tsc_khz = st->tsc_khz;
	}
	switch (st->mp_state) {
	case X86_MP_RUNNABLE:
	case X86_MP_HALTED:
		ret = load_running(vcpu, st, err);
		break;
	default: /* waiting for INIT/SIPI: no registers to load */
		tcg_engine_destroy(vcpu);
		break;
	}
	if (ret)
		return ret;
	pthread_mutex_lock(&t->lock);
	v->mp_state = st->mp_state;
	v->sipi_vector = (uint8_t)st->events.sipi_vector;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/*
 * A start-up IPI: a new engine whose CPU state is a real-mode reset with
 * CS = vector << 8, IP = 0. The register API cannot leave 64-bit mode, so
 * the state is made in a 16-bit scratch engine and copied over as a
 * Unicorn context (the same engine build, so the same layout).
 */
int tcg_start_real_mode(struct vcpu *vcpu, uint8_t vector, char *err)
{
	uint16_t cs = (uint16_t)(vector << 8), ip = 0;
	uc_context *ctx = NULL;
	uc_engine *tmp;
	uc_err e;
	int ret = tcg_engine_create(vcpu, err);

	if (ret)
		return ret;
	e = uc_open(UC_ARCH_X86, UC_MODE_16, &tmp);
	if (e)
		return vmm_failx(err, EIO, "vCPU %u: uc_open(16-bit): %s",
				 vcpu->id, uc_strerror(e));
	e = uc_reg_write(tmp, UC_X86_REG_CS, &cs);
	e = e ?: uc_reg_write(tmp, UC_X86_REG_IP, &ip);
	e = e ?: uc_context_alloc(tmp, &ctx);
	e = e ?: uc_context_save(tmp, ctx);
	e = e ?: uc_context_restore(TCG_VCPU(vcpu)->uc, ctx);
	if (ctx)
		uc_context_free(ctx);
	uc_close(tmp);
	if (e)
		return vmm_failx(err, EIO,
				 "vCPU %u: starting it in real mode: %s",
				 vcpu->id, uc_strerror(e));
	return 0;
}
