/* SPDX-License-Identifier: MIT */
/*
 * Guest-physical memory map and descriptor layout of the default guest.
 * Shared by the assembly (which builds the GDT, IDT and page tables at
 * BUILD time from these constants) and the C code. Everything is identity
 * mapped, so every address here is also a pointer.
 *
 *   0x008000  AP real-mode trampoline (copied there by the BSP)
 *   0x010000  setup code when entered in real mode (QEMU qboot/SeaBIOS)
 *   0x100000  kernel image: 32-bit entry, +0x200 64-bit entry, ISR stubs,
 *             code, data, prebuilt page tables (no BSS)
 *   0x180000  per-CPU areas, 8 KiB each: TSS, ring-0 stack, ring-3 stack
 *   0x400000  status area (abi.h, LSG_STATUS_GPA)
 *
 * The per-CPU areas share the image's 2 MiB page on purpose: the loader has
 * populated it, so ring 0 (emulated under PVM) never takes the first touch
 * of a fresh host page, which costs ~20 ms when the host backs guest RAM
 * with transparent huge pages.
 *   0x1000000 working sets (abi.h, LSG_WS_GPA)
 */
#ifndef LSG_LAYOUT_H
#define LSG_LAYOUT_H

#define LSG_KERNEL_GPA	0x100000
#define LSG_ENTRY64_OFF 0x200	 /* 64-bit entry: load address + 0x200 */
#define LSG_ISR_GPA	0x101000 /* 256 interrupt stubs, 16 bytes each */
#define LSG_ISR_STRIDE	16
#define LSG_TRAMP_GPA	0x8000 /* SIPI vector 0x08 */
#define LSG_SETUP_SECTS 1      /* real-mode setup: 1 sector after boot */
/* init_size: the kernel claims everything up to the working sets. */
#define LSG_INIT_SIZE 0xf00000 /* LSG_WS_GPA - LSG_KERNEL_GPA */

/* Per-CPU areas: the TSS at offset 0, stacks grow down from the tops. */
#define LSG_PERCPU_GPA	 0x180000
#define LSG_PERCPU_SHIFT 13 /* 8 KiB per CPU */
#define LSG_PERCPU_SIZE	 (1 << LSG_PERCPU_SHIFT)
#define LSG_R0_STACK_TOP 0x800 /* ring-0 stack: exceptions only */

/*
 * The TSS carries an I/O permission bitmap for ports 0-0x3ff, all allowed.
 * IOPL=3 already allows ring 3 every port on hardware and under TCG, but
 * PVM keeps the guest's ring 3 at IOPL 0 and emulates port I/O only if
 * the bitmap of the guest's TSS allows it. Ring 3 clears the bitmap.
 */
#define LSG_TSS_IOMAP_BASE_OFF 0x66
#define LSG_TSS_IOMAP	       0x68
#define LSG_TSS_IOMAP_PORTS    0x400
#define LSG_TSS_LIMIT	       (LSG_TSS_IOMAP + LSG_TSS_IOMAP_PORTS / 8) /* +0xff */
#define LSG_R3_STACK_TOP       LSG_PERCPU_SIZE
#define LSG_NCPUS_MAX	       63 /* == LSG_MAX_CPUS in abi.h */

/* GDT selectors. TSS descriptors of 16 bytes follow, one per CPU. */
#define LSG_KCODE64  0x08
#define LSG_KDATA    0x10
#define LSG_KCODE32  0x18
#define LSG_UDATA    0x20
#define LSG_UCODE64  0x28
#define LSG_TSS0     0x30
#define LSG_GDT_SIZE (LSG_TSS0 + 16 * LSG_NCPUS_MAX)

/* RFLAGS for ring 3: bit 1 (reserved, 1), IOPL=3 so `in`/`out` work. */
#define LSG_USER_RFLAGS 0x3002

/* Identity map: 64 GiB with 2 MiB pages, or with 1 GiB pages if the CPU
 * has them; 0xfe000000-0xffffffff (IOAPIC, LAPIC) uncached. */
#define LSG_MAP_GIB 64

#endif /* LSG_LAYOUT_H */
