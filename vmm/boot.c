/* SPDX-License-Identifier: MIT */
/*
 * bzImage loader (Documentation/arch/x86/boot.rst). The image's setup
 * header is copied into a zeroed zero page, the protected-mode payload
 * goes to 1 MiB, and the vCPU enters the 64-bit entry point at 1 MiB +
 * 0x200 with the loader's fields filled in: type_of_loader, heap, command
 * line, initrd and the e820 map. No real-mode code runs and no BIOS is
 * needed.
 */
#include <asm/bootparam.h>
#include <stddef.h>
#include <stdlib.h>

#include "boot.h"
#include "layout.h"
#include "vm.h"
#include "x86.h"
#include "x86/cpu_state.h"

#define BOOT_FLAG	      0xaa55
#define HDRS_MAGIC	      0x53726448u /* "HdrS" */
#define MIN_BOOT_PROTOCOL     0x20c	  /* xloadflags, 64-bit entry */
#define SETUP_HDR_OFF	      0x1f1
#define LOADER_TYPE_UNDEFINED 0xff
#define E820_RAM	      1
#define E820_RESERVED	      2

static const struct setup_header *image_header(const uint8_t *image)
{
	return (const struct setup_header *)(image + SETUP_HDR_OFF);
}

/* Bytes of the setup header present in this image (boot.rst, 0x201). */
static size_t header_len(const uint8_t *image)
{
	size_t len = 0x202 + image[0x201] - SETUP_HDR_OFF;

	return len < sizeof(struct setup_header) ? len
						 : sizeof(struct setup_header);
}

static size_t setup_bytes(const struct setup_header *h)
{
	return ((size_t)(h->setup_sects ? h->setup_sects : 4) + 1) * 512;
}

int boot_check_bzimage(const uint8_t *image, size_t size, const char *name,
		       char *err)
{
	const struct setup_header *h;

	if (size < 1024)
		return vmm_failx(err, EINVAL,
				 "%s: not a bzImage (%zu bytes, too short)",
				 name, size);
	h = image_header(image);
	if (h->boot_flag != BOOT_FLAG || h->header != HDRS_MAGIC)
		return vmm_failx(err, EINVAL,
				 "%s: not a bzImage (no 0xAA55 boot flag and "
				 "\"HdrS\" setup header)",
				 name);
	if (h->version < MIN_BOOT_PROTOCOL)
		return vmm_failx(err, EINVAL,
				 "%s: boot protocol %u.%02u, need 2.12 or "
				 "later",
				 name, h->version >> 8, h->version & 0xff);
	if (!(h->xloadflags & XLF_KERNEL_64))
		return vmm_failx(err, EINVAL,
				 "%s: bzImage has no 64-bit entry point "
				 "(XLF_KERNEL_64 clear)",
				 name);
	if (!(h->loadflags & LOADED_HIGH))
		return vmm_failx(err, EINVAL,
				 "%s: a zImage (not loaded high); only "
				 "bzImages boot",
				 name);
	if (setup_bytes(h) >= size)
		return vmm_failx(err, EINVAL,
				 "%s: truncated bzImage (setup of %zu bytes, "
				 "file of %zu)",
				 name, setup_bytes(h), size);
	return 0;
}

unsigned boot_e820_map(struct vm *vm, struct boot_e820 *map)
{
	unsigned n = 0;

	/* Linux puts its real-mode and SMP trampolines below 640 KiB. */
	map[n++] = (struct boot_e820){0, GPA_EBDA, E820_RAM};
	map[n++] = (struct boot_e820){GPA_EBDA, GPA_BIOS_END - GPA_EBDA,
				      E820_RESERVED};
	map[n++] = (struct boot_e820){
	    GPA_BIOS_END, vm->mem.low_size - GPA_BIOS_END, E820_RAM};
	/* IOAPIC, LAPIC and KVM's TSS/identity-map pages */
	map[n++] = (struct boot_e820){
	    GPA_RESERVED_HIGH, GPA_4G - GPA_RESERVED_HIGH, E820_RESERVED};
	if (vm->mem.high_size)
		map[n++] =
		    (struct boot_e820){GPA_4G, vm->mem.high_size, E820_RAM};
	return n;
}

static int load_cmdline(struct vm *vm, struct boot_params *bp,
			const char *cmdline, char *err)
{
	size_t len = strlen(cmdline);
	/* cmdline_size excludes the NUL; protocol >= 2.06 reports it. */
	size_t max = bp->hdr.cmdline_size ? bp->hdr.cmdline_size : 255;
	char *dst;

	if (max > CMDLINE_MAX - 1)
		max = CMDLINE_MAX - 1;
	if (len > max)
		return vmm_failx(err, E2BIG,
				 "kernel command line of %zu bytes exceeds "
				 "the kernel's limit of %zu",
				 len, max);
	dst = vm_gpa_to_hva(vm, GPA_CMDLINE, len + 1);
	if (!dst)
		return vmm_failx(err, EINVAL, "command line outside RAM");
	memcpy(dst, cmdline, len + 1);
	bp->hdr.cmd_line_ptr = (uint32_t)GPA_CMDLINE;
	return 0;
}

/*
 * The initrd goes at the highest 1 MiB-aligned address where it still
 * fits below both initrd_addr_max and the end of low RAM, above the
 * kernel's init_size.
 */
static int load_initrd(struct vm *vm, struct boot_params *bp,
		       const struct boot_image *img, uint64_t kernel_end,
		       char *err)
{
	uint64_t limit = (uint64_t)bp->hdr.initrd_addr_max + 1;
	uint64_t size = img->initrd_size;
	uint64_t addr;
	void *dst;

	if (!img->initrd)
		return 0;
	if (limit > vm->mem.low_size || !bp->hdr.initrd_addr_max)
		limit = vm->mem.low_size;
	addr = size < limit ? (limit - size) & ~((1ull << 20) - 1) : 0;
	if (size >= limit || addr < kernel_end)
		return vmm_failx(err, ENOMEM,
				 "initrd of %llu bytes does not fit between "
				 "the kernel (ends at 0x%llx) and 0x%llx",
				 (unsigned long long)size,
				 (unsigned long long)kernel_end,
				 (unsigned long long)limit);
	dst = vm_gpa_to_hva(vm, addr, size);
	if (!dst)
		return vmm_failx(err, EINVAL, "initrd outside RAM");
	memcpy(dst, img->initrd, size);
	bp->hdr.ramdisk_image = (uint32_t)addr;
	bp->hdr.ramdisk_size = (uint32_t)size;
	return 0;
}

static int load_kernel(struct vm *vm, const struct boot_image *img,
		       struct boot_params *bp, uint64_t *kernel_end, char *err)
{
	const struct setup_header *h = image_header(img->kernel);
	size_t off = setup_bytes(h);
	size_t payload = img->kernel_size - off;
	uint64_t need = h->init_size > payload ? h->init_size : payload;
	void *dst;

	/* The kernel decompresses in place up to init_size bytes. */
	if (GPA_KERNEL + need > vm->mem.low_size)
		return vmm_failx(err, ENOMEM,
				 "%s needs %llu MiB at 1 MiB; the VM has %llu "
				 "MiB below 3 GiB",
				 img->kernel_name,
				 (unsigned long long)(need >> 20),
				 (unsigned long long)(vm->mem.low_size >> 20));
	dst = vm_gpa_to_hva(vm, GPA_KERNEL, payload);
	if (!dst)
		return vmm_failx(err, EINVAL, "kernel outside RAM");
	memcpy(dst, img->kernel + off, payload);
	memcpy(&bp->hdr, h, header_len(img->kernel));
	*kernel_end = GPA_KERNEL + need;
	return 0;
}

static void fill_e820(struct vm *vm, struct boot_params *bp)
{
	struct boot_e820 map[BOOT_E820_MAX];
	unsigned n = boot_e820_map(vm, map);

	for (unsigned i = 0; i < n; i++) {
		bp->e820_table[i].addr = map[i].addr;
		bp->e820_table[i].size = map[i].size;
		bp->e820_table[i].type = map[i].type;
	}
	bp->e820_entries = (uint8_t)n;
}

static int load_image(struct vm *vm, const struct boot_image *img, char *err)
{
	struct boot_params *bp = vm_gpa_to_hva(vm, GPA_ZERO_PAGE, sizeof(*bp));
	uint64_t kernel_end = 0;
	int ret;

	if (!bp)
		return vmm_failx(err, EINVAL, "zero page outside RAM");
	ret = boot_check_bzimage(img->kernel, img->kernel_size,
				 img->kernel_name, err);
	if (ret)
		return ret;
	memset(bp, 0, sizeof(*bp));
	ret = load_kernel(vm, img, bp, &kernel_end, err);
	ret = ret ?: load_cmdline(vm, bp, img->cmdline, err);
	ret = ret ?: load_initrd(vm, bp, img, kernel_end, err);
	if (ret)
		return ret;
	bp->hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
	bp->hdr.loadflags |= CAN_USE_HEAP;
	bp->hdr.heap_end_ptr = 0xfe00;
	bp->hdr.vid_mode = 0xffff; /* "normal" */
	fill_e820(vm, bp);
	return 0;
}

int vm_setup_boot(struct vm *vm, const struct boot_image *img, char *err)
{
	struct x86_cpu_state *entry = calloc(1, sizeof(*entry));
	struct accel_boot_entry e = {.st = entry};
	int ret;

	if (!entry)
		return vmm_fail(err, ENOMEM, "boot vCPU state");
	regs_boot_entry(entry, GPA_KERNEL + KERNEL_ENTRY64_OFF);
	ret = regs_setup_memory(vm, err);
	ret = ret ?: load_image(vm, img, err);
	ret = ret ?: mptable_setup(vm, err);
	/* The others wait in the LAPIC for INIT/SIPI from the guest. */
	for (unsigned i = 0; !ret && i < vm->ncpus; i++)
		ret = vm->accel->vcpu_boot(&vm->vcpus[i], i ? NULL : &e, err);
	free(entry);
	return ret;
}
