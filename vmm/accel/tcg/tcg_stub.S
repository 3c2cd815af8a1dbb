/* SPDX-License-Identifier: MIT */
/*
 * The TCG backend's resume stub: loads a vCPU's control registers, EFER,
 * descriptor tables and segments the way the CPU itself would, because
 * Unicorn's register API sets only selectors (no hidden parts, no CPL) in
 * 64-bit mode. It runs at CPL 0 from a page of its own in the 32-bit hole
 * (GPA_TCG_STUB, mapped identity by the guest) and ends with an iretq into
 * the guest's CS:RIP, RFLAGS and SS:RSP, which loads CS and SS, with the
 * CPL, from the guest's GDT. The caller writes the data slots (offsets in
 * tcg.h) and stops the engine when it reaches the guest's RIP.
 */
#define TCG_STUB_ASM
#include "tcg_stub.h"

	.section .rodata.tcg_stub, "a"
	.globl tcg_stub_code, tcg_stub_code_end
	.code64
tcg_stub_code:
.Lstub:
	movq .Lstub+TCG_STUB_CR3(%rip), %rax
	movq %rax, %cr3
	movq .Lstub+TCG_STUB_CR4(%rip), %rax
	movq %rax, %cr4
	movl $0xc0000080, %ecx
	movl .Lstub+TCG_STUB_EFER(%rip), %eax
	movl .Lstub+TCG_STUB_EFER+4(%rip), %edx
	wrmsr
	movq .Lstub+TCG_STUB_CR0(%rip), %rax
	movq %rax, %cr0
	lgdt .Lstub+TCG_STUB_GDTR(%rip)
	lidt .Lstub+TCG_STUB_IDTR(%rip)
	movw .Lstub+TCG_STUB_DS(%rip), %ds
	movw .Lstub+TCG_STUB_ES(%rip), %es
	movw .Lstub+TCG_STUB_FS(%rip), %fs
	movw .Lstub+TCG_STUB_GS(%rip), %gs
	leaq .Lstub+TCG_STUB_FRAME(%rip), %rsp
	iretq
tcg_stub_code_end:
	.section .note.GNU-stack, "", @progbits
