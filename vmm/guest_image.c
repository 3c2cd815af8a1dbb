/* SPDX-License-Identifier: MIT */
/*
 * Accessors for the built-in guest. guest_image.S (generated at build time
 * from guest/'s livesnap-guest.bin) defines the two symbols with .incbin;
 * a build without the guest links guest_image_none.S, where they coincide.
 */
#include "guest_image.h"

extern const uint8_t ls_guest_image_start[];
extern const uint8_t ls_guest_image_end[];

size_t guest_image_size(void)
{
	return (size_t)(ls_guest_image_end - ls_guest_image_start);
}

const uint8_t *guest_image_data(void)
{
	return ls_guest_image_start;
}
