/* SPDX-License-Identifier: MIT */
/*
 * The livesnap subcommands (struct cli_cmd: cli/cli.h). A new one is a
 * struct cli_cmd in its own file, declared here and listed in cli/main.c.
 */
#ifndef LS_CLI_COMMANDS_H
#define LS_CLI_COMMANDS_H

#include "cli.h"

extern const struct cli_cmd cmd_run;      /* cli/cmd_run.c */
extern const struct cli_cmd cmd_restore;  /* cli/cmd_run.c */
extern const struct cli_cmd cmd_snapshot; /* cli/cmd_snapshot.c */
extern const struct cli_cmd cmd_info;     /* cli/cmd_file.c */
extern const struct cli_cmd cmd_verify;   /* cli/cmd_file.c */
extern const struct cli_cmd cmd_check;    /* cli/cmd_check.c */
extern const struct cli_cmd cmd_extract;  /* cli/cmd_extract.c */
extern const struct cli_cmd cmd_blob;     /* cli/cmd_extract.c */
extern const struct cli_cmd cmd_merge;    /* cli/cmd_file.c */

#endif
