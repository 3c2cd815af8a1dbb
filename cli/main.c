/* SPDX-License-Identifier: MIT */
/*
 * livesnap: one command, several subcommands (git style). Each subcommand
 * is a struct cli_cmd (cli/cli.h) and parses its options through cli.c;
 * this file only lists them, dispatches and answers `livesnap help`.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const struct cli_cmd *const commands[] = {
#ifdef LS_HAVE_VMM
    &cmd_run, &cmd_snapshot, &cmd_restore,
#endif
    &cmd_info, &cmd_verify, &cmd_merge, &cmd_extract, &cmd_blob, &cmd_check,
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct cli_cmd *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(name, commands[i]->name))
			return commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: livesnap COMMAND [options] [operands]\n"
		   "       livesnap help [COMMAND]\n"
		   "       livesnap --version\n\n"
		   "Live, exact snapshots of running VMs (userfaultfd "
		   "write-protect).\n\nCommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i]->name,
			commands[i]->summary);
	fprintf(f, "  %-10s %s\n", "help", "describe livesnap or a command");
	fprintf(f, "\nOptions go anywhere after the command; '--' ends them.\n"
		   "'livesnap help COMMAND' or 'livesnap COMMAND --help' "
		   "describes a command.\n\n"
		   "Exit status:\n"
		   "  0  success\n  1  the command failed (see its help)\n"
		   CLI_EXIT_USAGE);
}

/* livesnap help [COMMAND] */
static int help(int argc, char **argv)
{
	const struct cli_cmd *cmd;

	if (argc < 2) {
		usage(stdout);
		return 0;
	}
	if (argc > 2) {
		fprintf(stderr, "livesnap help: one command at a time, not "
				"'%s' too\n", argv[2]);
		return 2;
	}
	cmd = find_command(argv[1]);
	if (!cmd && strcmp(argv[1], "help")) {
		fprintf(stderr, "livesnap help: unknown command '%s' (try "
				"'livesnap help')\n", argv[1]);
		return 2;
	}
	if (cmd)
		cli_help(cmd, stdout);
	else
		usage(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	const struct cli_cmd *cmd;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return help(1, argv + 1);
	if (!strcmp(argv[1], "--version")) {
		cli_version(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "help"))
		return help(argc - 1, argv + 1);
	cmd = find_command(argv[1]);
	if (!cmd) {
		fprintf(stderr, "livesnap: unknown command '%s' (try --help)\n",
			argv[1]);
		return 2;
	}
	return cmd->run(cmd, argc - 1, argv + 1);
}
