/* SPDX-License-Identifier: MIT */
/*
 * Linker script of the default guest (preprocessed with cpp). Produces one
 * ELF whose flat binary (objcopy -O binary, by load address) is the
 * bzImage-compatible image: the setup sectors at file offset 0, the
 * protected-mode kernel at file offset (setup_sects + 1) * 512, linked at
 * LSG_KERNEL_GPA. There is no BSS: zero-initialised data lives in .data,
 * so a loader that copies the file has nothing left to clear.
 */
#include "layout.h"

#define SETUP_BYTES ((LSG_SETUP_SECTS + 1) * 512)
#define LMA(sec) AT(ADDR(sec) - LSG_KERNEL_GPA + SETUP_BYTES)

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(lsg_entry64)

SECTIONS
{
	.setup 0 : AT(0) {
		KEEP(*(.setup))
	}
	ASSERT(SIZEOF(.setup) == SETUP_BYTES, "setup must fill setup_sects")

	. = LSG_KERNEL_GPA;
	lsg_kernel_start = .;
	.entry : LMA(.entry) {
		KEEP(*(.entry))
	}
	. = LSG_ISR_GPA;
	.isr : LMA(.isr) {
		KEEP(*(.isr))
	}
	ASSERT(ADDR(.isr) == LSG_ISR_GPA, "ISR stubs moved: the IDT is wrong")
	.text : LMA(.text) {
		*(.text .text.*)
	}
	.rodata : LMA(.rodata) {
		*(.rodata .rodata.*)
	}
	.data : LMA(.data) {
		*(.data .data.*)
		*(.bss .bss.* COMMON)
	}
	. = ALIGN(16);
	lsg_kernel_end = .;
	ASSERT(lsg_kernel_end <= LSG_PERCPU_GPA, "kernel overlaps per-CPU areas")

	lsg_syssize = (lsg_kernel_end - lsg_kernel_start + 15) / 16;
	lsg_init_size = LSG_INIT_SIZE;

	/DISCARD/ : {
		*(.comment)
		*(.note .note.*)
		*(.eh_frame .eh_frame_hdr)
	}
}
