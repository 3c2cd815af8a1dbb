/* SPDX-License-Identifier: MIT */
/*
 * Descriptor tables and page tables, built at BUILD time so that ring 0
 * (emulated instruction by instruction under PVM) never loops to fill
 * them: the GDT with one TSS descriptor per CPU, the IDT pointing at the
 * fixed-address stubs of entry.S, and two identity maps of the first
 * LSG_MAP_GIB GiB, user-accessible everywhere (U=1) so that ring-3 code
 * reaches RAM, the status area and the LAPIC.
 */
#include "layout.h"

#define PTE_P 0x01
#define PTE_RW 0x02
#define PTE_US 0x04
#define PTE_PWT 0x08
#define PTE_PCD 0x10
#define PTE_A 0x20
#define PTE_D 0x40
#define PTE_PS 0x80
/* Accessed/dirty preset: nobody has to write them back (shadow paging). */
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US | PTE_A)
#define PTE_LEAF (PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_PS)
#define UC_START 0xfe000000 /* IOAPIC 0xfec00000, LAPIC 0xfee00000 */
#define UC_END 0x100000000

	.section .data.tables, "aw"
	.balign 16
	.globl lsg_gdt
lsg_gdt:
	.quad 0
	.quad 0x00af9a000000ffff        /* LSG_KCODE64 */
	.quad 0x00cf92000000ffff        /* LSG_KDATA */
	.quad 0x00cf9a000000ffff        /* LSG_KCODE32 (AP trampoline) */
	.quad 0x00cff2000000ffff        /* LSG_UDATA, DPL 3 */
	.quad 0x00affa000000ffff        /* LSG_UCODE64, DPL 3 */
	/* LSG_TSS0 + 16 * cpu: 64-bit available TSS at the per-CPU area */
	.set cpu, 0
	.rept LSG_NCPUS_MAX
	.set base, LSG_PERCPU_GPA + cpu * LSG_PERCPU_SIZE
	.word LSG_TSS_LIMIT
	.word base & 0xffff
	.byte (base >> 16) & 0xff
	.byte 0x89
	.byte 0
	.byte (base >> 24) & 0xff
	.long base >> 32
	.long 0
	.set cpu, cpu + 1
	.endr
lsg_gdt_end:
	.if lsg_gdt_end - lsg_gdt - LSG_GDT_SIZE
	.error "GDT size does not match LSG_GDT_SIZE"
	.endif

	.balign 16
	.globl lsg_idt
lsg_idt:
	.set vec, 0
	.rept 256
	.set isr, LSG_ISR_GPA + vec * LSG_ISR_STRIDE
	.word isr & 0xffff
	.word LSG_KCODE64
	.byte 0
	.byte 0x8e                      /* present, DPL 0, interrupt gate */
	.word (isr >> 16) & 0xffff
	.long isr >> 32
	.long 0
	.set vec, vec + 1
	.endr

	.balign 8
	.globl lsg_gdt_desc, lsg_idt_desc, lsg_boot_cr3
lsg_gdt_desc:
	.word LSG_GDT_SIZE - 1
	.quad lsg_gdt
	.balign 8
lsg_idt_desc:
	.word 256 * 16 - 1
	.quad lsg_idt
	.balign 8
lsg_boot_cr3:                           /* chosen by the BSP, used by APs */
	.quad 0

	.section .data.pgtables, "aw"
	.balign 4096
	.globl lsg_pml4_2m, lsg_pml4_1g
lsg_pml4_2m:
	.quad lsg_pdpt_2m + PTE_TABLE
	.fill 511, 8, 0
lsg_pml4_1g:
	.quad lsg_pdpt_1g + PTE_TABLE
	.fill 511, 8, 0
lsg_pdpt_2m:
	.set gib, 0
	.rept LSG_MAP_GIB
	.quad lsg_pd + gib * 4096 + PTE_TABLE
	.set gib, gib + 1
	.endr
	.fill 512 - LSG_MAP_GIB, 8, 0
lsg_pdpt_1g:
	/* 1 GiB pages, except GiB 3, which holds the uncached 2 MiB pages */
	.set gib, 0
	.rept LSG_MAP_GIB
	.if gib == 3
	.quad lsg_pd + gib * 4096 + PTE_TABLE
	.else
	.quad (gib << 30) + PTE_LEAF
	.endif
	.set gib, gib + 1
	.endr
	.fill 512 - LSG_MAP_GIB, 8, 0
lsg_pd:
	.set addr, 0
	.rept LSG_MAP_GIB * 512
	.if (addr >= UC_START) && (addr < UC_END)
	.quad addr + PTE_LEAF + PTE_PCD + PTE_PWT
	.else
	.quad addr + PTE_LEAF
	.endif
	.set addr, addr + 0x200000
	.endr
