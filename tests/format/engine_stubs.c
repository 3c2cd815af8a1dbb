/* SPDX-License-Identifier: MIT */
/*
 * TEMPORARY: weak stand-ins for the two engine helpers the sinks use,
 * until lib/engine/ lists its sources in meson. The engine's (strong)
 * definitions win as soon as they are linked.
 */
#include <stdarg.h>
#include <stdio.h>

#include "livesnap.h"

__attribute__((weak)) void ls_sink_set_error(struct ls_sink *sink,
					     const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sink->error, sizeof(sink->error), fmt, ap);
	va_end(ap);
}

__attribute__((weak)) void ls_sink_destroy(struct ls_sink *sink)
{
	if (sink)
		sink->ops->destroy(sink);
}
