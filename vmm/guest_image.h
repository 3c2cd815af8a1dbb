/* SPDX-License-Identifier: MIT */
/* The default guest kernel built into the binary (guest_image.S). */
#ifndef LS_VMM_GUEST_IMAGE_H
#define LS_VMM_GUEST_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* 0 when this build has no built-in guest. */
size_t guest_image_size(void);
const uint8_t *guest_image_data(void);

#endif
