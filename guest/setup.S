/* SPDX-License-Identifier: MIT */
/*
 * The first (LSG_SETUP_SECTS + 1) sectors of the image: a boot sector that
 * only carries the Linux x86 boot protocol setup header at 0x1f1, and the
 * real-mode setup code. Linked at address 0 of its real-mode segment.
 *
 * Loaders that use the 32-bit or 64-bit entry (our VMM, Firecracker-style
 * loaders) only read the header. Firmware that boots a bzImage through the
 * real-mode entry (QEMU's qboot for -M microvm, SeaBIOS linuxboot for
 * -M pc) jumps to setup+0x200 with cs = seg+0x20, ds = es = ss = seg; the
 * stub below then plays the part of Linux's setup: it builds boot_params
 * (header copy + BIOS e820 map), enters protected mode and jumps to the
 * 32-bit entry at 0x100000 with esi = boot_params.
 */
#include "layout.h"

#define BP_OFF 0x1000             /* boot_params, in the setup segment */
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define E820_MAX 128
#define SMAP 0x534d4150

	.section .setup, "ax"
	.code16
	.globl lsg_setup_start
lsg_setup_start:
	.org 0x1f1
hdr_start:
	.byte LSG_SETUP_SECTS           /* setup_sects */
	.word 0                         /* root_flags */
	.long lsg_syssize               /* syssize, 16-byte units (ld) */
	.word 0                         /* ram_size (obsolete) */
	.word 0xffff                    /* vid_mode: normal */
	.word 0                         /* root_dev */
	.word 0xaa55                    /* boot_flag */
	/* 0x200: real-mode entry; its offset byte also tells loaders how
	 * long the header is (0x202 + offset). */
hdr_jump:
	.byte 0xeb, setup16 - hdr_magic
hdr_magic:
	.ascii "HdrS"                   /* header */
	.word 0x020c                    /* version */
	.long 0                         /* realmode_swtch */
	.word 0x1000                    /* start_sys_seg (obsolete) */
	.word kernel_version - hdr_jump  /* kernel_version */
	.byte 0                         /* type_of_loader */
	.byte 0x01                      /* loadflags: LOADED_HIGH */
	.word 0                         /* setup_move_size */
	.long LSG_KERNEL_GPA            /* code32_start */
	.long 0                         /* ramdisk_image */
	.long 0                         /* ramdisk_size */
	.long 0                         /* bootsect_kludge */
	.word 0                         /* heap_end_ptr */
	.byte 0                         /* ext_loader_ver */
	.byte 0                         /* ext_loader_type */
	.long 0                         /* cmd_line_ptr */
	.long 0x7fffffff                /* initrd_addr_max */
	.long LSG_KERNEL_GPA            /* kernel_alignment */
	.byte 0                         /* relocatable_kernel */
	.byte 20                        /* min_alignment: 1 MiB */
	.word 0x0001                    /* xloadflags: XLF_KERNEL_64 */
	.long 1023                      /* cmdline_size (abi.h keeps 1024) */
	.long 0                         /* hardware_subarch */
	.quad 0                         /* hardware_subarch_data */
	.long 0                         /* payload_offset */
	.long 0                         /* payload_length */
	.quad 0                         /* setup_data */
	.quad LSG_KERNEL_GPA            /* pref_address */
	.long lsg_init_size             /* init_size (ld) */
	.long 0                         /* handover_offset */
hdr_end:

setup16:
	cli
	cld
	/* ebp = linear address of the setup segment (ds = es = ss = seg) */
	xorl %ebp, %ebp
	movw %ds, %bp
	shll $4, %ebp

	/* boot_params := zero, then the header the loader filled in */
	movw $BP_OFF, %di
	xorw %ax, %ax
	movw $2048, %cx
	rep stosw
	movw $hdr_start, %si
	movw $BP_OFF + 0x1f1, %di
	movw $hdr_end - hdr_start, %cx
	rep movsb

	/* e820 from the BIOS (int 0x15, eax=0xe820) */
	xorl %ebx, %ebx
	movw $BP_OFF + BP_E820_TABLE, %di
1:	movl $0xe820, %eax
	movl $SMAP, %edx
	movl $20, %ecx
	int $0x15
	jc 2f
	cmpl $SMAP, %eax
	jne 2f
	movl 8(%di), %eax               /* skip empty entries (qboot) */
	orl 12(%di), %eax
	jz 3f
	incb BP_OFF + BP_E820_ENTRIES
	addw $20, %di
3:	testl %ebx, %ebx
	jz 2f
	cmpb $E820_MAX, BP_OFF + BP_E820_ENTRIES
	jb 1b
2:
	/* fast A20 gate (no-op where there is no gate) */
	inb $0x92, %al
	orb $0x02, %al
	andb $0xfe, %al
	outb %al, $0x92

	/* The GDT and the far pointer need linear addresses: patch them. */
	movl %ebp, %eax
	addl $setup_gdt, %eax
	movl %eax, setup_gdt_desc + 2
	movl %ebp, %eax
	addl $setup_pm32, %eax
	movl %eax, setup_farptr
	lgdtl setup_gdt_desc
	leal BP_OFF(%ebp), %esi
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl *setup_farptr

	.code32
setup_pm32:
	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl $LSG_KERNEL_GPA, %eax
	jmp *%eax

	.balign 8
setup_gdt:                              /* boot protocol: CS 0x10, DS 0x18 */
	.quad 0
	.quad 0
	.quad 0x00cf9a000000ffff        /* 0x10: code, flat 4 GiB, 32-bit */
	.quad 0x00cf92000000ffff        /* 0x18: data, flat 4 GiB */
setup_gdt_desc:
	.word 4 * 8 - 1
	.long 0                         /* patched: linear address */
setup_farptr:
	.long 0                         /* patched: linear setup_pm32 */
	.word 0x10
kernel_version:
	.asciz "livesnap-guest"
	.org (LSG_SETUP_SECTS + 1) * 512
