/* SPDX-License-Identifier: MIT */
/* Fresh boot of a bzImage: loader, zero page, e820, cmdline, initrd. */
#ifndef LS_VMM_BOOT_H
#define LS_VMM_BOOT_H

#include <stddef.h>
#include <stdint.h>

struct vm;

struct boot_image {
	const uint8_t *kernel; /* a bzImage, the whole file */
	size_t kernel_size;
	const char *kernel_name; /* for messages */
	const uint8_t *initrd;	 /* NULL: none */
	size_t initrd_size;
	const char *cmdline;
};

struct boot_e820 {
	uint64_t addr, size;
	uint32_t type; /* 1 RAM, 2 reserved */
};

#define BOOT_E820_MAX 8

/* The guest's memory map; returns the number of entries. */
unsigned boot_e820_map(struct vm *vm, struct boot_e820 *map);

/*
 * Checks that image is a bzImage this loader can start (boot protocol
 * >= 2.12 with a 64-bit entry). 0, or -EINVAL with a one-line message.
 */
int boot_check_bzimage(const uint8_t *image, size_t size, const char *name,
		       char *err);

/*
 * Loads the kernel, command line and initrd, writes the zero page, page
 * tables and MP table, and gives every vCPU its boot state (CPUID, MSRs,
 * FPU, LINT; the entry registers on vCPU 0, SIPI starts the others).
 */
int vm_setup_boot(struct vm *vm, const struct boot_image *img, char *err);

#endif /* LS_VMM_BOOT_H */
