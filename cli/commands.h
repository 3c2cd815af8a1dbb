/* SPDX-License-Identifier: MIT */
/* The livesnap subcommands. Each returns the process exit status. */
#ifndef LS_CLI_COMMANDS_H
#define LS_CLI_COMMANDS_H

int cmd_info(int argc, char **argv);     /* cli/cmd_file.c */
int cmd_verify(int argc, char **argv);   /* cli/cmd_file.c */
int cmd_run(int argc, char **argv);      /* cli/cmd_run.c */
int cmd_snapshot(int argc, char **argv); /* cli/cmd_snapshot.c */

#endif
