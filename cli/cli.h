/* SPDX-License-Identifier: MIT */
/*
 * The one command-line convention of every livesnap subcommand:
 *
 *  - options anywhere among the operands (getopt_long, whatever
 *    POSIXLY_CORRECT says); `--` ends them;
 *  - -h/--help prints the command's help on stdout and exits 0, and so does
 *    `livesnap help CMD`; --version prints the program's and the snapshot
 *    format's versions;
 *  - a bad option or operand is one line on stderr, `livesnap CMD: ...`
 *    naming it, and exit status 2;
 *  - every help ends with an "Exit status" section.
 *
 * A subcommand is a struct cli_cmd (its name, synopsis, text, option table,
 * operand counts and run function) listed in cli/main.c. Adding an option is
 * one line in its table and one case in its switch:
 *
 *	struct cli_parser p;
 *	int c;
 *
 *	cli_begin(&p, cmd, argc, argv);
 *	while ((c = cli_next(&p)) > 0)
 *		switch (c) {
 *		case 'q': quiet = true; break;
 *		}
 *	if (c == CLI_EXIT)
 *		return p.status;
 *	... p.operands[0 .. p.noperands) ...
 */
#ifndef LS_CLI_CLI_H
#define LS_CLI_CLI_H

#include <getopt.h>
#include <stdio.h>

#define CLI_OPTS_MAX	 40 /* options of one subcommand, help included */
#define CLI_OPERANDS_MAX 8

/* Keys of long-only options start here (short ones are their letter). */
#define CLI_LONG 256
#define CLI_KEY_VERSION (CLI_LONG + 255) /* --version, in every command */

enum {
	CLI_DONE = 0,  /* options ended, operands counted and fine */
	CLI_EXIT = -1, /* the command ends now with p->status (help, error) */
};

struct cli_opt {
	const char *name; /* long name, without the -- */
	int key;	  /* its short letter, or CLI_LONG + n for none */
	const char *arg;  /* the argument's name in the help; NULL: a flag */
	const char *help; /* may hold '\n' for more lines */
};

struct cli_cmd {
	const char *name;
	const char *synopsis;	 /* what follows "livesnap NAME " */
	const char *summary;	 /* one line, for `livesnap help` */
	const char *description; /* paragraphs of the help */
	const struct cli_opt *opts; /* ends with {0}; help/version are added */
	const char *exit_status; /* "Exit status" lines; CLI_EXIT_USAGE in them */
	int min_operands, max_operands;
	int (*run)(const struct cli_cmd *cmd, int argc, char **argv);
};

struct cli_parser {
	const struct cli_cmd *cmd;
	int argc;
	char **argv;
	int status; /* after CLI_EXIT: the exit status */
	char *operands[CLI_OPERANDS_MAX];
	int noperands;
	const char *extra; /* the first operand too many */
	const char *arg; /* the current option's argument */
	const char *opt; /* the current option as written, e.g. "--mem" */
	struct option longs[CLI_OPTS_MAX + 1];
	char shorts[2 * CLI_OPTS_MAX + 3];
};

void cli_begin(struct cli_parser *p, const struct cli_cmd *cmd, int argc,
	       char **argv);

/*
 * The next option's key (> 0; its argument in p->arg), CLI_DONE once the
 * options end and the operands are counted, or CLI_EXIT after --help,
 * --version or a usage error (printed; p->status says how to exit).
 */
int cli_next(struct cli_parser *p);

/* Prints "livesnap CMD: <fmt> (try 'livesnap help CMD')" and returns 2. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The whole help of a command. */
void cli_help(const struct cli_cmd *cmd, FILE *f);

/* "livesnap 0.1.0 (snapshot format 1.0)" */
void cli_version(FILE *f);

/* The exit status every command shares, a line of each "Exit status". */
#define CLI_EXIT_USAGE                                                         \
	"  2  bad usage: an unknown option, a bad value, a missing operand\n"

#endif
