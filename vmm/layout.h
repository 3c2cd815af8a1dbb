/* SPDX-License-Identifier: MIT */
/*
 * Every guest-physical address the VMM uses, in one place.
 *
 *   0x000500  boot GDT (5 entries)          0x000520  empty boot IDT
 *   0x007000  zero page (struct boot_params)
 *   0x008ff0  boot stack top
 *   0x009000  PML4, 0x00a000 PDPT, 0x00b000-0x00efff four PDs: the first
 *             4 GiB identity mapped with 2 MiB pages
 *   0x020000  kernel command line (up to 64 KiB)
 *   0x09fc00  MP floating pointer + MP table (last KiB of base memory,
 *             reserved in e820 up to 1 MiB)
 *   0x100000  protected-mode kernel (bzImage payload)
 *   top of low RAM: initrd
 *   0xc0000000-4G: the 32-bit hole (no RAM): TCG stub, IOAPIC, LAPIC, TSS
 *   4G and up: RAM beyond 3 GiB
 */
#ifndef LS_VMM_LAYOUT_H
#define LS_VMM_LAYOUT_H

#define GPA_BOOT_GDT   0x500ull
#define GPA_BOOT_IDT   0x520ull
#define GPA_ZERO_PAGE  0x7000ull
#define GPA_BOOT_STACK 0x8ff0ull
#define GPA_PML4       0x9000ull
#define GPA_PDPT       0xa000ull
#define GPA_PD	       0xb000ull /* four consecutive pages */
#define BOOT_IDMAP_GIB 4	 /* identity map: first 4 GiB */
#define GPA_CMDLINE    0x20000ull
#define CMDLINE_MAX    0x10000ull

#define GPA_EBDA	   0x9fc00ull /* MP table lives here */
#define GPA_BIOS_END	   0x100000ull
#define GPA_KERNEL	   0x100000ull /* code32_start, 64-bit entry +0x200 */
#define KERNEL_ENTRY64_OFF 0x200ull

#define GPA_HOLE_START	  0xc0000000ull /* 32-bit MMIO hole, no RAM */
#define GPA_4G		  0x100000000ull
#define GPA_IOAPIC	  0xfec00000ull
#define GPA_LAPIC	  0xfee00000ull
#define GPA_RESERVED_HIGH 0xfec00000ull /* e820-reserved up to 4 GiB */
/* The TCG backend's resume stub page (accel/tcg/tcg_stub.S), in the hole. */
#define GPA_TCG_STUB 0xfebff000ull
/* KVM's three TSS pages and its one-page identity map, in the hole. */
#define GPA_KVM_IDENTITY_MAP 0xfffbc000ull
#define GPA_KVM_TSS	     0xfffbd000ull

/* Memory slots: low RAM below the hole, high RAM from 4 GiB. */
#define SLOT_RAM_LOW  0
#define SLOT_RAM_HIGH 1

#define MIN_MEM_BYTES (64ull << 20) /* the default guest needs this */
#define MAX_MEM_BYTES (1ull << 40)  /* 1 TiB: a sanity limit */
#define MAX_VCPUS     63	    /* one MP-table byte per APIC id, abi.h */

#endif /* LS_VMM_LAYOUT_H */
