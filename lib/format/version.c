/* SPDX-License-Identifier: MIT */
/* The library's version and the snapshot format version it writes. */
#include "format.h"

const char *ls_version(void)
{
	return LS_BUILD_VERSION; /* meson's project version */
}

void ls_format_version(unsigned *major, unsigned *minor)
{
	*major = LSF_VERSION_MAJOR;
	*minor = LSF_VERSION_MINOR;
}
