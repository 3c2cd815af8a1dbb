/* SPDX-License-Identifier: MIT */
/*
 * Ring-0 code of the default guest: the 32-bit and 64-bit entries, the
 * per-CPU switch to ring 3, the interrupt stubs and the AP trampoline.
 *
 * Under PVM every ring-0 instruction is emulated (5-10 us each), so ring 0
 * does only what ring 3 cannot: load CR3/GDTR/IDTR/TR, enable long mode,
 * and iretq to ring 3 with IOPL=3. Descriptors and page tables are built at
 * build time (tables.S); there are no loops here. Everything else (boot
 * parameters, status area, console, starting the APs) runs in ring 3.
 *
 * Register convention on the way to ring 3 (lsg_enter_user):
 *   ebx = CPU index, r12 = boot_params (BSP) or 0, r13 = TSC at entry,
 *   r14 = IA32_APIC_BASE (BSP) or 0.
 * They become the arguments of lsg_user_entry(cpu, bp, tsc0, apic_base).
 */
#include "layout.h"

#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define MSR_APIC_BASE 0x1b
#define APIC_BASE_EXTD 10
#define APIC_BASE_X2APIC (1 << APIC_BASE_EXTD)
#define APIC_BASE_EN (1 << 11)
#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR0_CD_NW 0x60000000
#define CR4_PAE 0x20
#define CR4_SMEP_SMAP 0x300000 /* all pages are user pages: must be off */
#define CPUID_EXT_PDPE1GB 26

/*
 * eax := the PML4 to use: 1 GiB pages if CPUID 0x80000001 EDX[26] says
 * so, 2 MiB pages otherwise. Clobbers eax, ebx, ecx, edx.
 */
.macro pick_pml4
	movl $0x80000000, %eax
	cpuid
	cmpl $0x80000001, %eax
	jb 81f
	movl $0x80000001, %eax
	cpuid
	btl $CPUID_EXT_PDPE1GB, %edx
	jnc 81f
	movl $lsg_pml4_1g, %eax
	jmp 82f
81:	movl $lsg_pml4_2m, %eax
82:
.endm

/* From 32-bit protected mode (paging off, CR3 loaded) to 64-bit code. */
.macro enter_long_mode target
	movl %cr4, %eax
	andl $~CR4_SMEP_SMAP, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	andl $~CR0_CD_NW, %eax
	orl $(CR0_PG | CR0_PE), %eax
	movl %eax, %cr0
	ljmp $LSG_KCODE64, $\target
.endm

	.section .entry, "ax"
	.code32
	/* 32-bit entry (code32_start): esi = boot_params, paging off. */
	.globl lsg_entry32
lsg_entry32:
	cli
	rdtsc
	movl %eax, %edi
	movl %edx, %ebp
	lgdt lsg_gdt_desc
	pick_pml4
	movl %eax, lsg_boot_cr3
	movl %eax, %cr3
	enter_long_mode bsp_from32

	.code64
bsp_from32:
	movl %esi, %r12d        /* upper halves are undefined after the */
	movl %edi, %r13d        /* mode switch: the 32-bit moves clear them */
	shlq $32, %rbp
	orq %rbp, %r13
	jmp bsp_common

	/* 64-bit entry (load address + 0x200): rsi = boot_params, paging on
	 * with the loader's identity map. */
	.org LSG_ENTRY64_OFF
	.globl lsg_entry64
lsg_entry64:
	cli
	rdtsc
	movq %rsi, %r12
	movl %eax, %r13d
	shlq $32, %rdx
	orq %rdx, %r13
	lgdt lsg_gdt_desc(%rip)
	movq %cr4, %rax         /* before our user-accessible page tables */
	andl $~CR4_SMEP_SMAP, %eax
	movq %rax, %cr4
	pick_pml4
	movq %rax, lsg_boot_cr3(%rip)
	movq %rax, %cr3
	jmp bsp_common

bsp_common:
	movl $MSR_APIC_BASE, %ecx
	rdmsr
	btl $APIC_BASE_EXTD, %eax
	jnc 1f
	/* x2APIC: back to xAPIC (through disabled, as the SDM requires),
	 * so that ring 3 reaches the LAPIC through its MMIO page */
	andl $~(APIC_BASE_EN | APIC_BASE_X2APIC), %eax
	wrmsr
	orl $APIC_BASE_EN, %eax
	wrmsr
1:	movl %eax, %r14d
	shlq $32, %rdx
	orq %rdx, %r14
	xorl %ebx, %ebx
	jmp lsg_enter_user

	/* APs arrive here from the trampoline, in 64-bit mode. */
	.globl lsg_ap_entry64
lsg_ap_entry64:
	movl lsg_ap_boot_cpu(%rip), %ebx
	cmpl $LSG_NCPUS_MAX, %ebx
	jae park                /* late AP the BSP gave up on */
	xorl %r12d, %r12d
	xorl %r13d, %r13d
	xorl %r14d, %r14d
	/* fall through */

lsg_enter_user:
	lidt lsg_idt_desc(%rip)
	movl %ebx, %eax
	shlq $LSG_PERCPU_SHIFT, %rax
	addq $LSG_PERCPU_GPA, %rax
	leaq LSG_R0_STACK_TOP(%rax), %rsp
	movq %rsp, 4(%rax)              /* TSS.rsp0 */
	movl %ebx, %ecx
	shll $4, %ecx
	addl $LSG_TSS0, %ecx
	ltr %cx
	pushq $(LSG_UDATA | 3)
	leaq (LSG_R3_STACK_TOP - 8)(%rax), %rcx
	pushq %rcx
	pushq $LSG_USER_RFLAGS
	pushq $(LSG_UCODE64 | 3)
	pushq $lsg_user_entry
	movl %ebx, %edi
	movq %r12, %rsi
	movq %r13, %rdx
	movq %r14, %rcx
	iretq

park:
	cli
	hlt
	jmp park

/*
 * 256 interrupt stubs at fixed addresses (LSG_ISR_GPA + vector * 16), so
 * that tables.S can build the IDT at build time. Each pushes a dummy error
 * code where the CPU pushes none, then the vector.
 */
	.section .isr, "ax"
.macro isr_stub vec
	.org \vec * LSG_ISR_STRIDE
	.if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || \
		(\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq $0
	.endif
	pushq $\vec
	jmp isr_common
.endm
	.altmacro
	.set vec, 0
	.rept 256
	isr_stub %vec
	.set vec, vec + 1
	.endr
	.noaltmacro
	.org 256 * LSG_ISR_STRIDE

	.text
isr_common:
	movq %rsp, %rdi
	movq %cr2, %rsi
	subq $8, %rsp           /* 16-byte alignment for the call */
	call lsg_fault          /* prints and halts */
	jmp park

/*
 * AP trampoline, copied to LSG_TRAMP_GPA by the BSP. SIPI starts the AP
 * in real mode at LSG_TRAMP_GPA; it goes to 32-bit protected mode, then
 * to long mode with the BSP's page tables, then to lsg_ap_entry64.
 */
	.section .rodata.tramp, "a"
	.code16
	.globl lsg_tramp_start, lsg_tramp_end
lsg_tramp_start:
	cli
	movw %cs, %ax
	movw %ax, %ds
	lgdtl tramp_gdt_desc - lsg_tramp_start
	movl %cr0, %eax
	orl $CR0_PE, %eax
	movl %eax, %cr0
	ljmpl $LSG_KCODE32, $(LSG_TRAMP_GPA + tramp32 - lsg_tramp_start)
	.code32
tramp32:
	movl $LSG_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl lsg_boot_cr3, %eax
	movl %eax, %cr3
	enter_long_mode lsg_ap_entry64
	.balign 8
tramp_gdt_desc:
	.word LSG_GDT_SIZE - 1
	.long lsg_gdt
lsg_tramp_end:
