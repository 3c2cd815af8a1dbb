/* SPDX-License-Identifier: MIT */
/*
 * livesnap: one command, several subcommands (git style). Each subcommand
 * parses its own flags; this file only dispatches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "livesnap.h"

/*
 * `livesnap restore FILE [run options]` is `livesnap run --restore FILE
 * [run options]`: restoring a snapshot means running its VM again.
 */
static int cmd_restore(int argc, char **argv)
{
	char **args;
	int ret;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: livesnap restore FILE [--restore-mode "
				"eager|lazy] [run options]\n"
				"(see 'livesnap run --help')\n");
		return (argc >= 2 && (!strcmp(argv[1], "--help") ||
				      !strcmp(argv[1], "-h")))
			       ? 0
			       : 2;
	}
	args = calloc((size_t)argc + 2, sizeof(*args));
	if (!args) {
		fprintf(stderr, "livesnap restore: out of memory\n");
		return 1;
	}
	args[0] = "run";
	args[1] = "--restore";
	for (int i = 1; i < argc; i++)
		args[i + 1] = argv[i];
	ret = cmd_run(argc + 1, args);
	free(args);
	return ret;
}

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct command commands[] = {
	{"run", cmd_run, "boot a VM (or restore one) with a QMP control socket"},
	{"snapshot", cmd_snapshot,
	 "take a live snapshot of a running VM through its control socket"},
	{"restore", cmd_restore,
	 "run the VM of a snapshot again (= run --restore FILE)"},
	{"info", cmd_info, "describe a snapshot file or stream"},
	{"verify", cmd_verify, "check every checksum of a snapshot"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: livesnap <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'livesnap <command> --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("livesnap %d.%d\n", LS_VERSION_MAJOR, LS_VERSION_MINOR);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "livesnap: unknown command '%s' (try --help)\n",
		argv[1]);
	return 2;
}
