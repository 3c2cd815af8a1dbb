/* SPDX-License-Identifier: MIT */
/*
 * The command-line convention shared by every subcommand (see cli.h): the
 * getopt_long tables built from a command's option list, --help, --version,
 * one-line usage errors and operand counts.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "livesnap.h"

static const struct cli_opt common_opts[] = {
    {"help", 'h', NULL, "print this help and exit"},
    {"version", CLI_KEY_VERSION, NULL,
     "print the program's and the snapshot format's\n"
     "versions and exit"},
    {0},
};

void cli_version(FILE *f)
{
	unsigned major, minor;

	ls_format_version(&major, &minor);
	fprintf(f, "livesnap %s (snapshot format %u.%u)\n", ls_version(),
		major, minor);
}

int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "livesnap %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try 'livesnap help %s')\n", cmd->name);
	return 2;
}

static void add_opt(struct cli_parser *p, int *n, const struct cli_opt *o)
{
	char *s = p->shorts + strlen(p->shorts);

	if (*n == CLI_OPTS_MAX)
		abort(); /* a programming error: raise CLI_OPTS_MAX */
	p->longs[(*n)++] = (struct option){
	    o->name, o->arg ? required_argument : no_argument, NULL, o->key};
	if (o->key < CLI_LONG) {
		*s++ = (char)o->key;
		if (o->arg)
			*s++ = ':';
		*s = 0;
	}
}

void cli_begin(struct cli_parser *p, const struct cli_cmd *cmd, int argc,
	       char **argv)
{
	int n = 0;

	memset(p, 0, sizeof(*p));
	p->cmd = cmd;
	p->argc = argc;
	p->argv = argv;
	/* '-': operands come back in order as key 1, so options may come
	 * anywhere even under POSIXLY_CORRECT; ':': a missing argument is
	 * told apart from an unknown option. */
	strcpy(p->shorts, "-:");
	for (const struct cli_opt *o = cmd->opts; o && o->name; o++)
		add_opt(p, &n, o);
	for (const struct cli_opt *o = common_opts; o->name; o++)
		add_opt(p, &n, o);
	opterr = 0;
	optind = 0; /* 0: glibc starts a new scan */
}

/* An operand too many is told once the options end: --help still wins. */
static void take_operand(struct cli_parser *p, char *arg)
{
	if (p->noperands == p->cmd->max_operands ||
	    p->noperands == CLI_OPERANDS_MAX) {
		if (!p->extra)
			p->extra = arg;
		return;
	}
	p->operands[p->noperands++] = arg;
}

/* Whether "--NAME[=...]" (or a prefix of a name) is an option of key. */
static bool long_is(const struct cli_parser *p, const char *w, int key)
{
	size_t n = strcspn(w + 2, "=");

	for (const struct option *o = p->longs; o->name; o++)
		if (o->val == key && !strncmp(o->name, w + 2, n))
			return true;
	return false;
}

/*
 * The option getopt stopped at, as the user wrote it: "--name" without
 * "=value", or "-x" (optopt; also inside a cluster such as "-qx").
 */
static const char *written(struct cli_parser *p, char *buf, size_t len)
{
	const char *w = optind > 0 && optind <= p->argc ? p->argv[optind - 1]
							: "";

	if (!strncmp(w, "--", 2) && (!optopt || long_is(p, w, optopt)))
		snprintf(buf, len, "%.*s", (int)strcspn(w, "="), w);
	else if (optopt > 0 && optopt < CLI_LONG)
		snprintf(buf, len, "-%c", optopt);
	else
		snprintf(buf, len, "%s", w);
	return buf;
}

static int end_of_options(struct cli_parser *p)
{
	while (optind < p->argc)
		take_operand(p, p->argv[optind++]);
	if (p->extra) {
		p->status = cli_usage_error(p->cmd, "unexpected argument '%s'",
					    p->extra);
		return CLI_EXIT;
	}
	if (p->noperands < p->cmd->min_operands) {
		p->status = cli_usage_error(p->cmd, "missing operand: usage: "
					    "livesnap %s %s",
					    p->cmd->name, p->cmd->synopsis);
		return CLI_EXIT;
	}
	return CLI_DONE;
}

int cli_next(struct cli_parser *p)
{
	char buf[64];
	int c;

	for (;;) {
		c = getopt_long(p->argc, p->argv, p->shorts, p->longs, NULL);
		if (c == -1)
			return end_of_options(p);
		if (c != 1)
			break;
		take_operand(p, optarg);
	}
	p->arg = optarg;
	p->opt = optind > 0 ? p->argv[optind - 1] : "";
	switch (c) {
	case 'h':
		cli_help(p->cmd, stdout);
		p->status = 0;
		return CLI_EXIT;
	case CLI_KEY_VERSION:
		cli_version(stdout);
		p->status = 0;
		return CLI_EXIT;
	case ':':
		p->status = cli_usage_error(p->cmd, "option '%s' needs an "
					    "argument",
					    written(p, buf, sizeof(buf)));
		return CLI_EXIT;
	case '?':
		p->status = cli_usage_error(p->cmd, "unknown option '%s'",
					    written(p, buf, sizeof(buf)));
		return CLI_EXIT;
	}
	return c;
}

/* Prints text with every line indented by ind spaces. */
static void indent(FILE *f, const char *text, int ind)
{
	while (*text) {
		size_t n = strcspn(text, "\n");

		fprintf(f, "%*s%.*s\n", n ? ind : 0, "", (int)n, text);
		text += n + (text[n] == '\n');
	}
}

#define HELP_LEFT 24 /* the width of "-x, --name ARG" */

static void help_opt(FILE *f, const struct cli_opt *o)
{
	char left[64];
	int n;

	n = snprintf(left, sizeof(left), "%s%c%s--%s%s%s",
		     o->key < CLI_LONG ? "-" : " ",
		     o->key < CLI_LONG ? o->key : ' ',
		     o->key < CLI_LONG ? ", " : "  ", o->name,
		     o->arg ? " " : "", o->arg ? o->arg : "");
	if (n > HELP_LEFT) {
		fprintf(f, "  %s\n", left);
		indent(f, o->help, HELP_LEFT + 4);
		return;
	}
	fprintf(f, "  %-*s  %.*s\n", HELP_LEFT, left,
		(int)strcspn(o->help, "\n"), o->help);
	if (strchr(o->help, '\n'))
		indent(f, strchr(o->help, '\n') + 1, HELP_LEFT + 4);
}

void cli_help(const struct cli_cmd *cmd, FILE *f)
{
	fprintf(f, "usage: livesnap %s %s\n\n", cmd->name, cmd->synopsis);
	indent(f, cmd->description, 0);
	fprintf(f, "\nOptions:\n");
	for (const struct cli_opt *o = cmd->opts; o && o->name; o++)
		help_opt(f, o);
	for (const struct cli_opt *o = common_opts; o->name; o++)
		help_opt(f, o);
	fprintf(f, "\nExit status:\n%s", cmd->exit_status);
}
