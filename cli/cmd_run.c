/* SPDX-License-Identifier: MIT */
/*
 * livesnap run: option parsing and wiring. Builds the VM (vmm/vm.c) on the
 * chosen accelerator, loads the kernel (vmm/boot.c), serves QMP (vmm/qmp.c,
 * vmm/qmp_vm.c), runs until the guest
 * powers off, QMP says quit or a signal arrives, and exits 0 for all three
 * (1 when the VM fails).
 */
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot.h"
#include "commands.h"
#include "guest_image.h"
#include "layout.h"
#include "qmp_vm.h"
#include "snapshot.h"
#include "vm.h"

#define DEFAULT_MEM    (512ull << 20)
#define MAX_FILE_BYTES (1ull << 30) /* kernel or initrd */

/* The base command line; ls.* are read by the default guest only. */
#define CMDLINE_DEFAULT_GUEST "console=ttyS0"
#define CMDLINE_LINUX                                                          \
	"console=ttyS0 earlyprintk=serial reboot=k panic=1 pci=off acpi=off "  \
	"i8042.noaux i8042.nomux i8042.dumbkbd"

struct run_opts {
	unsigned ncpus;
	uint64_t mem;
	enum mem_backend backend;
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	const char *qmp;
	const char *console;
	bool stdin_input;
	bool prealloc; /* --mem-prealloc */
	/* snapshot.h: restore instead of boot */
	const char *restore; /* --restore FILE or --incoming exec:CMD */
	enum vm_restore_mode restore_mode;
	bool cpus_given, mem_given;
	const char *accel; /* kvm, tcg or auto */
};

/* "512M", "2G", "65536": binary multiples; 0 on error. */
static uint64_t parse_size(const char *s)
{
	static const char units[] = "kmgt";
	const char *u;
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (*s < '0' || *s > '9')
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return 0;
	u = *end ? strchr(units, tolower((unsigned char)*end)) : NULL;
	if (u) {
		shift = 10 * (unsigned)(u - units + 1);
		end++;
	}
	if (shift && (*end == 'i' || *end == 'I'))
		end++;
	if (shift && (*end == 'b' || *end == 'B'))
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return 0;
	return (uint64_t)v << shift;
}

static int parse_cpus(const struct cli_cmd *cmd, const char *s, unsigned *n)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s)
		return cli_usage_error(cmd, "--cpus '%s': not a number", s);
	if (v < 1 || v > MAX_VCPUS)
		return cli_usage_error(cmd, "--cpus %ld: must be between 1 and %d", v,
				 MAX_VCPUS);
	*n = (unsigned)v;
	return 0;
}

static int parse_backend(const struct cli_cmd *cmd, const char *s,
			 enum mem_backend *b)
{
	if (!strcmp(s, "anon"))
		*b = MEM_ANON;
	else if (!strcmp(s, "memfd"))
		*b = MEM_MEMFD;
	else if (!strcmp(s, "hugetlb") || !strcmp(s, "hugetlbfs"))
		*b = MEM_HUGETLB;
	else
		return cli_usage_error(cmd, "--mem-backend '%s': use anon, memfd or "
				 "hugetlb",
				 s);
	return 0;
}

static int parse_mem(const struct cli_cmd *cmd, const char *s, uint64_t *mem)
{
	*mem = parse_size(s);
	if (!*mem)
		return cli_usage_error(cmd, "--mem '%s': not a size (e.g. 512M, 2G)", s);
	if (*mem < MIN_MEM_BYTES)
		return cli_usage_error(cmd, "--mem %s: below the minimum of %llu MiB", s,
				 MIN_MEM_BYTES >> 20);
	if (*mem > MAX_MEM_BYTES)
		return cli_usage_error(cmd, "--mem %s: above the maximum of %llu GiB", s,
				 MAX_MEM_BYTES >> 30);
	if (*mem % 4096)
		return cli_usage_error(cmd, "--mem %s: not a multiple of 4 KiB", s);
	return 0;
}

static int parse_restore(const struct cli_cmd *cmd, struct run_opts *o,
			 bool incoming, const char *s)
{
	if (o->restore)
		return cli_usage_error(cmd, "--restore/--incoming given twice");
	if (incoming && strncmp(s, "exec:", 5))
		return cli_usage_error(cmd, "--incoming '%s': only exec:CMD is supported",
				 s);
	o->restore = s;
	return 0;
}

static int parse_restore_mode(const struct cli_cmd *cmd, const char *s,
			      enum vm_restore_mode *m)
{
	if (!strcmp(s, "eager"))
		*m = VM_RESTORE_EAGER;
	else if (!strcmp(s, "lazy"))
		*m = VM_RESTORE_LAZY;
	else
		return cli_usage_error(cmd, "--restore-mode '%s': use eager or lazy", s);
	return 0;
}

enum {
	OPT_CPUS = CLI_LONG,
	OPT_MEM,
	OPT_BACKEND,
	OPT_KERNEL,
	OPT_INITRD,
	OPT_CMDLINE,
	OPT_QMP,
	OPT_CONSOLE,
	OPT_STDIN,
	OPT_RESTORE,
	OPT_RESTORE_MODE,
	OPT_INCOMING,
	OPT_ACCEL,
	OPT_PREALLOC
};

#define STR_(x) #x
#define STR(x)	STR_(x)

/* What `run` and `restore` share: the machine and its connections. */
#define VM_OPTS                                                                \
	{"accel", OPT_ACCEL, "A",                                              \
	 "kvm, tcg (emulated vCPUs) or auto (default: kvm\n"                   \
	 "when /dev/kvm is usable, else tcg)"},                                \
	    {"cpus", OPT_CPUS, "N",                                            \
	     "vCPUs (1.." STR(MAX_VCPUS) ", default 1; a restore: the "        \
	     "snapshot's)"},                                                   \
	    {"mem", OPT_MEM, "SIZE",                                           \
	     "guest RAM, e.g. 512M, 2G (>= 64M, default 512M;\n"               \
	     "a restore: the snapshot's)"},                                    \
	    {"mem-backend", OPT_BACKEND, "TYPE",                               \
	     "anon (default, THP), memfd or hugetlb (2 MiB pages)"},           \
	    {"qmp", OPT_QMP, "PATH", "QMP socket (created mode 0600)"},        \
	    {"console", OPT_CONSOLE, "FILE",                                   \
	     "guest console output (default: stdout)"},                        \
	    {"stdin", OPT_STDIN, NULL, "feed standard input to the guest "     \
				       "console"}

static const struct cli_opt run_opts[] = {
    VM_OPTS,
    {"mem-prealloc", OPT_PREALLOC, NULL,
     "allocate all guest RAM before the guest starts (QEMU's\n"
     "-mem-prealloc): no host page faults on first touch"},
    {"kernel", OPT_KERNEL, "FILE", "boot this bzImage instead of the built-in "
				   "guest"},
    {"initrd", OPT_INITRD, "FILE", "initial ramdisk"},
    {"cmdline", OPT_CMDLINE, "STRING", "appended to the kernel command line"},
    {"restore", OPT_RESTORE, "FILE",
     "restore a snapshot instead of booting (= livesnap\n"
     "restore FILE)"},
    {"restore-mode", OPT_RESTORE_MODE, "M",
     "eager (read all RAM first) or lazy (pages on first\n"
     "touch, the rest behind; default eager)"},
    {"incoming", OPT_INCOMING, "exec:CMD",
     "restore the snapshot stream CMD writes (eager)"},
    {0},
};

static const struct cli_opt restore_opts[] = {
    VM_OPTS,
    {"restore-mode", OPT_RESTORE_MODE, "M",
     "eager (read all RAM first) or lazy (pages on first\n"
     "touch, the rest behind; default eager)"},
    {0},
};

static int parse_opt(const struct cli_cmd *cmd, struct run_opts *o, int c,
		     const char *arg)
{
	switch (c) {
	case OPT_CPUS:
		o->cpus_given = true;
		return parse_cpus(cmd, arg, &o->ncpus);
	case OPT_MEM:
		o->mem_given = true;
		return parse_mem(cmd, arg, &o->mem);
	case OPT_RESTORE:
	case OPT_INCOMING:
		return parse_restore(cmd, o, c == OPT_INCOMING, arg);
	case OPT_RESTORE_MODE:
		return parse_restore_mode(cmd, arg, &o->restore_mode);
	case OPT_BACKEND:
		return parse_backend(cmd, arg, &o->backend);
	case OPT_KERNEL:
		o->kernel = arg;
		return 0;
	case OPT_INITRD:
		o->initrd = arg;
		return 0;
	case OPT_CMDLINE:
		o->cmdline = arg;
		return 0;
	case OPT_QMP:
		o->qmp = arg;
		return 0;
	case OPT_CONSOLE:
		o->console = arg;
		return 0;
	case OPT_STDIN:
		o->stdin_input = true;
		return 0;
	case OPT_PREALLOC:
		o->prealloc = true;
		return 0;
	case OPT_ACCEL:
		if (strcmp(arg, "kvm") && strcmp(arg, "tcg") &&
		    strcmp(arg, "auto"))
			return cli_usage_error(cmd, "--accel '%s': use kvm, "
					       "tcg or auto", arg);
		o->accel = arg;
		return 0;
	}
	return 0;
}

/*
 * Returns 0 to run, 2 for bad usage, -1 after --help or --version. The
 * restore command's operand is the snapshot to restore.
 */
static int parse_args(const struct cli_cmd *cmd, int argc, char **argv,
		      struct run_opts *o)
{
	struct cli_parser p;
	int c, ret = 0;

	*o = (struct run_opts){
	    .ncpus = 1, .mem = DEFAULT_MEM, .cmdline = "", .accel = "auto"};
	cli_begin(&p, cmd, argc, argv);
	while (!ret && (c = cli_next(&p)) > 0)
		ret = parse_opt(cmd, o, c, p.arg);
	if (ret)
		return ret;
	if (c == CLI_EXIT)
		return p.status ? p.status : -1;
	if (p.noperands)
		ret = parse_restore(cmd, o, false, p.operands[0]);
	if (!ret && o->restore && (o->kernel || o->initrd || o->cmdline[0]))
		ret = cli_usage_error(cmd, "--kernel, --initrd and --cmdline "
				      "do not go with a restore");
	if (!ret && o->restore && o->prealloc)
		ret = cli_usage_error(cmd, "--mem-prealloc does not go with a "
				      "restore (it fills guest RAM itself; a "
				      "lazy one must find it empty)");
	if (!ret && o->restore && !strncmp(o->restore, "exec:", 5))
		o->restore_mode = VM_RESTORE_EAGER; /* a stream: no choice */
	return ret;
}

/* Reads a whole regular file (at most MAX_FILE_BYTES). */
static int read_file(const char *what, const char *path, uint8_t **data,
		     size_t *size, char *err)
{
	struct stat st;
	size_t done = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return vmm_fail(err, errno, "%s %s", what, path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > MAX_FILE_BYTES) {
		close(fd);
		return vmm_failx(err, EINVAL,
				 "%s %s: not a regular file of at most 1 GiB",
				 what, path);
	}
	*size = (size_t)st.st_size;
	*data = malloc(*size ? *size : 1);
	if (!*data) {
		close(fd);
		return vmm_fail(err, ENOMEM, "%s %s", what, path);
	}
	while (done < *size) {
		ssize_t n = read(fd, *data + done, *size - done);

		if (n <= 0) {
			ret = vmm_fail(err, n ? errno : EIO, "reading %s %s",
				       what, path);
			free(*data);
			*data = NULL;
			break;
		}
		done += (size_t)n;
	}
	close(fd);
	return ret;
}

struct run_ctx {
	struct run_opts o;
	uint8_t *kernel, *initrd;
	size_t kernel_size, initrd_size;
	int console_fd;
	int sig_fd;
	const struct accel_ops *accel;
	struct vm *vm;
	struct qmp_server *qmp;
	struct qmp_vm qmp_vm;
	struct vm_snap *snap;
	struct vm_restore *restore;
	struct qmp_migrate qmp_migrate;
	char err[VMM_ERR_MAX];
};

static int load_files(struct run_ctx *r)
{
	int ret;

	if (r->o.kernel) {
		ret = read_file("--kernel", r->o.kernel, &r->kernel,
				&r->kernel_size, r->err);
		if (ret)
			return ret;
	} else if (guest_image_size()) {
		r->kernel_size = guest_image_size();
		r->kernel = malloc(r->kernel_size);
		if (!r->kernel)
			return vmm_fail(r->err, ENOMEM, "built-in guest");
		memcpy(r->kernel, guest_image_data(), r->kernel_size);
	} else {
		return vmm_failx(r->err, ENOENT,
				 "no built-in guest in this build: use "
				 "--kernel");
	}
	ret = boot_check_bzimage(r->kernel, r->kernel_size,
				 r->o.kernel ? r->o.kernel : "built-in guest",
				 r->err);
	if (ret || !r->o.initrd)
		return ret;
	return read_file("--initrd", r->o.initrd, &r->initrd, &r->initrd_size,
			 r->err);
}

/*
 * Opens the snapshot to restore; --cpus/--mem left out on the command line
 * are taken from it, given ones must match it.
 */
static int open_restore(struct run_ctx *r)
{
	struct vm_config cfg = {
	    .ncpus = r->o.cpus_given ? r->o.ncpus : 0,
	    .mem_bytes = r->o.mem_given ? r->o.mem : 0,
	};
	int ret;

	if (!strncmp(r->o.restore, "exec:", 5)) {
		cfg.ncpus = r->o.ncpus; /* a stream's config comes last */
		cfg.mem_bytes = r->o.mem;
	}
	ret = vm_restore_open(&r->restore, r->o.restore, r->o.restore_mode,
			      &cfg, r->err);
	if (ret)
		return ret;
	r->o.ncpus = cfg.ncpus;
	r->o.mem = cfg.mem_bytes;
	return 0;
}

static int open_console(struct run_ctx *r)
{
	if (!r->o.console) {
		r->console_fd = STDOUT_FILENO;
		return 0;
	}
	r->console_fd =
	    open(r->o.console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (r->console_fd < 0)
		return vmm_fail(r->err, errno, "--console %s", r->o.console);
	return 0;
}

static char *build_cmdline(struct run_ctx *r)
{
	char *s;

	if (asprintf(&s, "%s ls.tsc_khz=%u ls.cpus=%u%s%s",
		     r->o.kernel ? CMDLINE_LINUX : CMDLINE_DEFAULT_GUEST,
		     vm_boot_tsc_khz(r->vm), r->o.ncpus,
		     r->o.cmdline[0] ? " " : "",
		     r->o.cmdline) < 0)
		return NULL;
	return s;
}

static int boot(struct run_ctx *r)
{
	struct boot_image img = {
	    .kernel = r->kernel,
	    .kernel_size = r->kernel_size,
	    .kernel_name = r->o.kernel ? r->o.kernel : "built-in guest",
	    .initrd = r->initrd,
	    .initrd_size = r->initrd_size,
	};
	char *cmdline = build_cmdline(r);
	int ret;

	if (!cmdline)
		return vmm_fail(r->err, ENOMEM, "command line");
	img.cmdline = cmdline;
	ret = vm_setup_boot(r->vm, &img, r->err);
	free(cmdline);
	return ret;
}

/* SIGINT/SIGTERM/SIGHUP arrive through a signalfd, in every thread blocked. */
static int setup_signals(struct run_ctx *r)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		return vmm_fail(r->err, EINVAL, "pthread_sigmask");
	sigdelset(&set, SIGPIPE);
	r->sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
	if (r->sig_fd < 0)
		return vmm_fail(r->err, errno, "signalfd");
	return 0;
}

static void *stdin_thread(void *arg)
{
	struct vm *vm = arg;
	uint8_t buf[256];
	ssize_t n;

	while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0) {
		size_t done = 0;

		/* The FIFO holds 64 bytes: wait for the guest to drain it. */
		while (done < (size_t)n) {
			done += serial_rx_push(&vm->serial, buf + done,
					       (size_t)n - done);
			if (done < (size_t)n)
				usleep(1000);
		}
	}
	return NULL;
}

static int start_stdin(struct run_ctx *r)
{
	pthread_t t;
	int ret;

	if (!r->o.stdin_input)
		return 0;
	ret = pthread_create(&t, NULL, stdin_thread, r->vm);
	if (ret)
		return vmm_fail(r->err, ret, "pthread_create(stdin)");
	pthread_detach(t);
	return 0;
}

static int start_qmp(struct run_ctx *r)
{
	int ret;

	if (!r->o.qmp)
		return 0;
	ret = qmp_server_create(&r->qmp, r->o.qmp, r->err);
	if (ret)
		return ret;
	ret = qmp_vm_register(&r->qmp_vm, r->qmp, r->vm);
	if (!ret)
		ret = qmp_migrate_register(&r->qmp_migrate, r->qmp, r->snap,
					   r->restore);
	if (ret)
		return vmm_fail(r->err, -ret, "registering QMP commands");
	return qmp_server_start(r->qmp, r->err);
}

/* Waits for the guest, QMP or a signal to end the VM. */
static void wait_for_exit(struct run_ctx *r)
{
	struct pollfd p[2] = {
	    {.fd = vm_exit_fd(r->vm), .events = POLLIN},
	    {.fd = r->sig_fd, .events = POLLIN},
	};
	struct signalfd_siginfo si;

	while (vm_exit_reason(r->vm) == VM_EXIT_NONE) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if ((p[1].revents & POLLIN) &&
		    read(r->sig_fd, &si, sizeof(si)) == sizeof(si))
			vm_request_exit(r->vm, VM_EXIT_SIGNAL, 0,
					"signal %u received: stopping the VM",
					si.ssi_signo);
	}
}

static const char *shutdown_reason(enum vm_exit_reason why, bool *guest)
{
	*guest = true;
	switch (why) {
	case VM_EXIT_GUEST_RESET:
		return "guest-reset";
	case VM_EXIT_GUEST_SHUTDOWN:
		return "guest-shutdown";
	case VM_EXIT_TRIPLE_FAULT:
	case VM_EXIT_ERROR:
		return "guest-panic";
	case VM_EXIT_QMP_QUIT:
		*guest = false;
		return "host-qmp-quit";
	default:
		*guest = false;
		return "host-signal";
	}
}

static int finish(struct run_ctx *r)
{
	enum vm_exit_reason why = vm_exit_reason(r->vm);
	const char *reason;
	bool guest;

	vm_stop_threads(r->vm);
	fprintf(stderr, "livesnap: %s\n", r->vm->exit_msg);
	if (r->qmp) {
		reason = shutdown_reason(why, &guest);
		qmp_emit_event(
		    r->qmp, "SHUTDOWN",
		    json_pack("{s:b,s:s}", "guest", guest, "reason", reason));
	}
	return r->vm->exit_status;
}

static void cleanup(struct run_ctx *r)
{
	vm_snap_stop(r->snap); /* its last MIGRATION event still goes out */
	qmp_server_destroy(r->qmp);
	vm_snap_destroy(r->snap); /* before its RAM goes */
	vm_restore_destroy(r->restore);
	vm_destroy(r->vm);
	free(r->kernel);
	free(r->initrd);
	if (r->console_fd > STDERR_FILENO)
		close(r->console_fd);
	if (r->sig_fd >= 0)
		close(r->sig_fd);
}

/*
 * --accel: auto says on stderr what it took. The TCG backend boots only
 * the built-in guest (see docs/vmm.md): a --kernel there is refused here.
 */
static int pick_accel(struct run_ctx *r)
{
	char why[VMM_ERR_MAX];
	int ret = accel_select(r->o.accel, &r->accel, why, r->err);

	if (ret)
		return ret;
	if (why[0])
		fprintf(stderr, "livesnap: %s\n", why);
	return 0;
}

/* After the files are read: what is wrong with them is said first. */
static int check_accel_fits(struct run_ctx *r)
{
	if (r->o.kernel && !(r->accel->caps & ACCEL_CAP_LINUX))
		return vmm_failx(r->err, ENOTSUP,
				 "--kernel needs --accel kvm: the %s "
				 "accelerator runs only the built-in guest "
				 "(no guest page-table walks it can vouch "
				 "for, no interrupt delivery)",
				 r->accel->name);
	return 0;
}

static int run_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct run_ctx r = {.console_fd = -1, .sig_fd = -1};
	struct vm_config cfg;
	int ret;

	ret = parse_args(cmd, argc, argv, &r.o);
	if (ret)
		return ret < 0 ? 0 : ret;
	ret = pick_accel(&r);
	ret = ret ?: r.o.restore ? open_restore(&r) : load_files(&r);
	ret = ret ?: check_accel_fits(&r);
	ret = ret ?: open_console(&r);
	ret = ret ?: setup_signals(&r);
	if (!ret) {
		cfg = (struct vm_config){
		    .ncpus = r.o.ncpus,
		    .mem_bytes = r.o.mem,
		    .backend = r.o.backend,
		    .prealloc = r.o.prealloc,
		    .console_fd = r.console_fd,
		    .accel = r.accel,
		};
		ret = vm_create(&r.vm, &cfg, r.err);
	}
	ret = ret ?: vm_snap_create(&r.snap, r.vm, r.err);
	if (r.restore)
		ret = ret ?: vm_restore_load(r.restore, r.vm, r.snap, r.err);
	else
		ret = ret ?: boot(&r);
	ret = ret ?: start_qmp(&r);
	ret = ret ?: vm_start(r.vm, false, r.err);
	ret = ret ?: start_stdin(&r);
	if (!ret && r.restore)
		vm_restore_running(r.restore);
	if (ret) {
		fprintf(stderr, "livesnap %s: %s\n", cmd->name, r.err);
		cleanup(&r);
		return 1;
	}
	fprintf(stderr,
		"livesnap: VM running: %u vCPU(s), %" PRIu64
		" MiB %s RAM, accelerator %s%s%s\n",
		r.o.ncpus, r.o.mem >> 20, mem_backend_name(r.o.backend),
		r.accel->name,
		r.o.qmp ? ", QMP at " : "", r.o.qmp ? r.o.qmp : "");
	wait_for_exit(&r);
	ret = finish(&r);
	cleanup(&r);
	return ret;
}

#define RUN_EXIT_STATUS                                                        \
	"  0  the guest powered off, or QMP 'quit' or SIGINT/SIGTERM ended "   \
	"the VM\n"                                                             \
	"  1  the VM could not start or failed\n" CLI_EXIT_USAGE

const struct cli_cmd cmd_run = {
    .name = "run",
    .synopsis = "[options]",
    .summary = "boot a VM (or restore one) with a QMP control socket",
    .description = "Boots a VM (by default the built-in livesnap guest) with "
		   "an 8250 console and\n"
		   "an optional QMP control socket, and runs it until it "
		   "ends.\n",
    .opts = run_opts,
    .exit_status = RUN_EXIT_STATUS,
    .min_operands = 0,
    .max_operands = 0,
    .run = run_run,
};

const struct cli_cmd cmd_restore = {
    .name = "restore",
    .synopsis = "[options] FILE",
    .summary = "run the VM of a snapshot again (= run --restore FILE)",
    .description = "Runs the VM a snapshot file holds again, from the "
		   "snapshot's instant on:\n"
		   "'livesnap run --restore FILE'. --cpus and --mem default "
		   "to the snapshot's.\n",
    .opts = restore_opts,
    .exit_status = RUN_EXIT_STATUS,
    .min_operands = 1,
    .max_operands = 1,
    .run = run_run,
};
