/* SPDX-License-Identifier: MIT */
/*
 * Entry CPU state for the Linux 64-bit boot protocol (boot.rst, "64-bit
 * Boot Protocol"): long mode with paging on, an identity map covering the
 * kernel, zero page and command line, __BOOT_CS = 0x10 and __BOOT_DS =
 * 0x18 flat segments, rsi = the zero page, interrupts off.
 */
#include "layout.h"
#include "vm.h"
#include "x86.h"
#include "x86/cpu_state.h"

#define BOOT_CS	    0x10
#define BOOT_DS	    0x18
#define BOOT_TSS    0x20
#define GDT_ENTRIES 6 /* null, null, code, data, 16-byte TSS */

#define X86_CR0_PE  (1ull << 0)
#define X86_CR0_ET  (1ull << 4)
#define X86_CR0_NE  (1ull << 5)
#define X86_CR0_PG  (1ull << 31)
#define X86_CR4_PAE (1ull << 5)
#define EFER_LME    (1ull << 8)
#define EFER_LMA    (1ull << 10)

#define PTE_P  0x1ull
#define PTE_RW 0x2ull
#define PTE_PS 0x80ull

/* A GDT descriptor: access byte and the 4-bit flags nibble (G, D/B, L). */
static uint64_t gdt_entry(uint8_t access, uint8_t flags, uint32_t base,
			  uint32_t limit)
{
	return (uint64_t)(limit & 0xffff) |
	       ((uint64_t)(base & 0xffffff) << 16) | ((uint64_t)access << 40) |
	       ((uint64_t)((limit >> 16) & 0xf) << 48) |
	       ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

/* The segment register (with its hidden part) a descriptor loads. */
static struct x86_segment segment_of(uint64_t d, uint16_t selector)
{
	uint8_t access = (uint8_t)(d >> 40);
	uint8_t flags = (uint8_t)((d >> 52) & 0xf);
	uint32_t limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));

	return (struct x86_segment){
	    .base = (d >> 16 & 0xffffff) | ((d >> 56) << 24),
	    .limit = (flags & 0x8) ? (limit << 12) | 0xfff : limit,
	    .selector = selector,
	    .type = access & 0xf,
	    .present = (access >> 7) & 1,
	    .dpl = (access >> 5) & 3,
	    .s = (access >> 4) & 1,
	    .l = (flags >> 1) & 1,
	    .db = (flags >> 2) & 1,
	    .g = (flags >> 3) & 1,
	};
}

static void boot_gdt(uint64_t gdt[GDT_ENTRIES])
{
	memset(gdt, 0, GDT_ENTRIES * 8);
	gdt[BOOT_CS / 8] = gdt_entry(0x9b, 0xa, 0, 0xfffff); /* code, L=1 */
	gdt[BOOT_DS / 8] = gdt_entry(0x93, 0xc, 0, 0xfffff); /* data, D=1 */
	gdt[BOOT_TSS / 8] = gdt_entry(0x89, 0x0, 0, 0x67);   /* 64-bit TSS */
}

int regs_setup_memory(struct vm *vm, char *err)
{
	uint64_t *gdt = vm_gpa_to_hva(vm, GPA_BOOT_GDT, GDT_ENTRIES * 8);
	uint64_t *idt = vm_gpa_to_hva(vm, GPA_BOOT_IDT, 8);
	uint64_t *pml4 = vm_gpa_to_hva(vm, GPA_PML4, 4096);
	uint64_t *pdpt = vm_gpa_to_hva(vm, GPA_PDPT, 4096);
	uint64_t *pd = vm_gpa_to_hva(vm, GPA_PD, BOOT_IDMAP_GIB * 4096);

	if (!gdt || !idt || !pml4 || !pdpt || !pd)
		return vmm_failx(err, EINVAL, "boot page tables outside RAM");
	boot_gdt(gdt);
	*idt = 0;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = GPA_PDPT | PTE_P | PTE_RW;
	for (uint64_t g = 0; g < BOOT_IDMAP_GIB; g++) {
		pdpt[g] = (GPA_PD + g * 4096) | PTE_P | PTE_RW;
		for (uint64_t i = 0; i < 512; i++)
			pd[g * 512 + i] =
			    ((g << 30) | (i << 21)) | PTE_P | PTE_RW | PTE_PS;
	}
	return 0;
}

void regs_boot_entry(struct x86_cpu_state *st, uint64_t entry)
{
	uint64_t gdt[GDT_ENTRIES];

	boot_gdt(gdt);
	x86_cpu_state_init(st, 0);
	st->rflags = 0x2;
	st->rip = entry;
	st->gpr[X86_RSP] = GPA_BOOT_STACK;
	st->gpr[X86_RBP] = GPA_BOOT_STACK;
	st->gpr[X86_RSI] = GPA_ZERO_PAGE;
	st->cs = segment_of(gdt[BOOT_CS / 8], BOOT_CS);
	st->ds = segment_of(gdt[BOOT_DS / 8], BOOT_DS);
	st->es = st->fs = st->gs = st->ss = st->ds;
	st->tr = segment_of(gdt[BOOT_TSS / 8], BOOT_TSS);
	st->tr.type = 11; /* TR holds a busy 64-bit TSS */
	st->ldt = (struct x86_segment){.type = 2, .present = 1,
				       .unusable = 1};
	st->gdt.base = GPA_BOOT_GDT;
	st->gdt.limit = GDT_ENTRIES * 8 - 1;
	st->idt.base = GPA_BOOT_IDT;
	st->idt.limit = 7;
	st->cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
	st->cr3 = GPA_PML4;
	st->cr4 = X86_CR4_PAE;
	st->efer = EFER_LME | EFER_LMA;
	st->mp_state = X86_MP_RUNNABLE;
}
