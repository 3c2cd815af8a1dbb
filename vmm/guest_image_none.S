/* SPDX-License-Identifier: MIT */
/* No built-in guest: an empty image (guest_image_size() == 0). */
	.section .rodata
	.globl ls_guest_image_start, ls_guest_image_end
ls_guest_image_start:
ls_guest_image_end:
	.section .note.GNU-stack, "", @progbits
