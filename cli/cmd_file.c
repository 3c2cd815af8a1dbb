/* SPDX-License-Identifier: MIT */
/* Placeholder until its owner lands it. */
#include <stdio.h>
#include "commands.h"
int cmd_info(int argc, char **argv)
{
	fprintf(stderr, "livesnap: %s: not implemented yet\n", argv[0]);
	return 1;
}
int cmd_verify(int argc, char **argv)
{
	fprintf(stderr, "livesnap: %s: not implemented yet\n", argv[0]);
	return 1;
}
