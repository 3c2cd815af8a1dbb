/* SPDX-License-Identifier: MIT */
/*
 * Boot in ring 3: every CPU arrives in lsg_user_entry from entry.S. The
 * BSP reads boot_params (Linux zero page), fills the status area, prints
 * the boot lines of abi.h, starts the APs and releases them into the
 * workload together with itself.
 */
#include "guest.h"

/* struct boot_params offsets (Linux Documentation/arch/x86/zero-page.rst) */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE	     0x21c
#define BP_CMD_LINE_PTR	     0x228
#define BP_E820_TABLE	     0x2d0
#define BP_E820_MAX	     128
#define E820_ENTRY_SIZE	     20
#define E820_RAM	     1

#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1

#define DEFAULT_WS_MIB	16
#define DEFAULT_PRINT_S 5
#define ASSUMED_TSC_KHZ 2000000 /* for intervals when the TSC is unknown */
#define MAX_WS_MIB	(1ull << 30)
#define MAX_TSC_KHZ	100000000ull /* 100 GHz */
#define MAX_SECONDS	1000000ull   /* 11.5 days */

struct lsg_config lsg_cfg;
static volatile uint32_t workload_go;

static uint32_t bp_u32(const uint8_t *bp, unsigned int off)
{
	uint32_t v;

	memcpy(&v, bp + off, sizeof(v));
	return v;
}

static struct lsg_status *status(void)
{
	return (struct lsg_status *)LSG_STATUS_GPA;
}

/* Boot parameters given on the command line (see abi.h). */
struct params {
	uint64_t ws_mib;
	uint32_t mode;
	uint64_t tsc_khz;
	uint64_t print_s;
	uint64_t runtime_s;
	uint32_t cpus;
};

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (!len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static int word_is(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len == n && !memcmp(s, word, n);
}

/* One "ls.key=value" word; other words belong to someone else. */
static void parse_param(struct params *p, const char *w, size_t len)
{
	const char *eq = memchr(w, '=', len);
	uint64_t v = 0;
	size_t klen, vlen;
	const char *val;

	if (len < 3 || memcmp(w, "ls.", 3))
		return;
	if (!eq) {
		lsg_say("warning: ignoring '%.*s' (no value)", (int)len, w);
		return;
	}
	klen = (size_t)(eq - w);
	val = eq + 1;
	vlen = len - klen - 1;
	if (word_is(w, klen, "ls.mode")) {
		if (word_is(val, vlen, "seq"))
			p->mode = 0;
		else if (word_is(val, vlen, "rand"))
			p->mode = 1;
		else
			lsg_say("warning: ls.mode must be seq or rand");
		return;
	}
	if (parse_u64(val, vlen, &v)) {
		lsg_say("warning: ignoring bad number in '%.*s'", (int)len, w);
		return;
	}
	/* The bounds keep every TSC computation below 2^64. */
	if (word_is(w, klen, "ls.ws_mib") && v > 0 && v <= MAX_WS_MIB)
		p->ws_mib = v;
	else if (word_is(w, klen, "ls.tsc_khz") && v <= MAX_TSC_KHZ)
		p->tsc_khz = v;
	else if (word_is(w, klen, "ls.print_s") && v <= MAX_SECONDS)
		p->print_s = v;
	else if (word_is(w, klen, "ls.runtime_s") && v <= MAX_SECONDS)
		p->runtime_s = v;
	else if (word_is(w, klen, "ls.cpus") && v > 0 && v <= LSG_MAX_CPUS)
		p->cpus = (uint32_t)v;
	else
		lsg_say("warning: ignoring '%.*s' (unknown or out of range)",
			(int)len, w);
}

/* Splits the command line into words and parses the ls.* ones. */
static void parse_cmdline(struct params *p, const char *cmdline)
{
	const char *s = cmdline;

	while (*s) {
		size_t len = 0;

		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		while (s[len] && s[len] != ' ' && s[len] != '\t' &&
		       s[len] != '\n')
			len++;
		if (len)
			parse_param(p, s, len);
		s += len;
	}
}

/* Copies the command line into the status area; returns it. */
static const char *read_cmdline(const uint8_t *bp)
{
	uint64_t addr = bp_u32(bp, BP_CMD_LINE_PTR) |
			(uint64_t)bp_u32(bp, BP_EXT_CMD_LINE_PTR) << 32;
	char *dst = status()->cmdline;
	const char *src = (const char *)addr;
	size_t n = 0;

	if (addr) {
		while (n < LSG_CMDLINE_MAX - 1 && src[n])
			n++;
		memcpy(dst, src, n);
		if (src[n])
			lsg_say("warning: command line cut at %u bytes",
				LSG_CMDLINE_MAX - 1);
	}
	dst[n] = '\0';
	return dst;
}

/* Copies the e820 map into the status area and prints it. */
static void read_e820(const uint8_t *bp)
{
	struct lsg_status *st = status();
	unsigned int n = bp[BP_E820_ENTRIES];

	if (n > BP_E820_MAX)
		n = BP_E820_MAX;
	for (unsigned int i = 0; i < n; i++) {
		const uint8_t *e = bp + BP_E820_TABLE + i * E820_ENTRY_SIZE;
		struct lsg_e820 ent = {0};

		memcpy(&ent.addr, e, 8);
		memcpy(&ent.size, e + 8, 8);
		memcpy(&ent.type, e + 16, 4);
		lsg_say("e820 %u 0x%lx 0x%lx %u", i, ent.addr, ent.size,
			ent.type);
		if (ent.type == E820_RAM)
			st->ram_bytes += ent.size;
		if (i < LSG_E820_MAX)
			st->e820[st->e820_entries++] = ent;
	}
	if (n > LSG_E820_MAX)
		lsg_say("warning: status keeps %u of %u e820 entries",
			LSG_E820_MAX, n);
}

static void read_initrd(const uint8_t *bp)
{
	struct lsg_status *st = status();

	st->initrd_addr = bp_u32(bp, BP_RAMDISK_IMAGE) |
			  (uint64_t)bp_u32(bp, BP_EXT_RAMDISK_IMAGE) << 32;
	st->initrd_size = bp_u32(bp, BP_RAMDISK_SIZE) |
			  (uint64_t)bp_u32(bp, BP_EXT_RAMDISK_SIZE) << 32;
	lsg_say("initrd 0x%lx 0x%lx", st->initrd_addr, st->initrd_size);
}

/* TSC frequency from CPUID (leaves 0x15, 0x16, hypervisor 0x40000010). */
static uint64_t cpuid_tsc_khz(void)
{
	uint32_t max = cpuid(0, 0).eax;
	struct cpuid_regs r;

	if (max >= 0x15) {
		r = cpuid(0x15, 0);
		if (r.eax && r.ebx && r.ecx)
			return (uint64_t)r.ecx * r.ebx / r.eax / 1000;
	}
	if (max >= 0x16) {
		r = cpuid(0x16, 0);
		if (r.eax & 0xffff)
			return (uint64_t)(r.eax & 0xffff) * 1000;
	}
	if (cpuid(1, 0).ecx & (1u << 31) &&
	    cpuid(0x40000000, 0).eax >= 0x40000010) {
		r = cpuid(0x40000010, 0);
		if (r.eax)
			return r.eax;
	}
	return 0;
}

/* End of the e820 RAM range holding [start, start + 1), or 0. */
static uint64_t ram_end_at(uint64_t start)
{
	const struct lsg_status *st = status();

	for (uint32_t i = 0; i < st->e820_entries; i++) {
		const struct lsg_e820 *e = &st->e820[i];

		if (e->type == E820_RAM && e->addr <= start &&
		    start < e->addr + e->size)
			return e->addr + e->size;
	}
	return 0;
}

/* Working-set pages per vCPU: as asked, or what fits in RAM. */
static uint64_t fit_working_sets(uint64_t ws_mib, uint32_t ncpus)
{
	const struct lsg_status *st = status();
	uint64_t want = ws_mib * (1024 * 1024 / LSG_PAGE_SIZE);
	uint64_t end = ram_end_at(LSG_WS_GPA);
	uint64_t fit;

	if (ram_end_at(LSG_KERNEL_GPA) < LSG_STATUS_GPA + LSG_STATUS_SIZE)
		lsg_say("warning: 0x%x-0x%llx is not all RAM in e820",
			LSG_KERNEL_GPA, LSG_STATUS_GPA + LSG_STATUS_SIZE);
	if (st->initrd_size && st->initrd_addr >= LSG_WS_GPA &&
	    st->initrd_addr < end)
		end = st->initrd_addr; /* keep the initrd intact */
	fit = end > LSG_WS_GPA ? (end - LSG_WS_GPA) / LSG_PAGE_SIZE / ncpus : 0;
	if (fit < want) {
		lsg_say("warning: ls.ws_mib=%lu does not fit in RAM for %u "
			"cpus: %lu pages per cpu",
			ws_mib, ncpus, fit);
		want = fit;
	}
	return want;
}

static void configure(const struct params *p, uint32_t ncpus)
{
	struct lsg_config *c = &lsg_cfg;

	c->mode = p->mode;
	c->print_s = p->print_s;
	c->runtime_s = p->runtime_s;
	c->tsc_khz = p->tsc_khz ? p->tsc_khz : cpuid_tsc_khz();
	c->tsc_per_ms = c->tsc_khz ? c->tsc_khz : ASSUMED_TSC_KHZ;
	if (!c->tsc_khz)
		lsg_say("warning: TSC frequency unknown (no ls.tsc_khz): "
			"latencies in cycles, 2 GHz assumed for intervals");
	c->ws_pages = fit_working_sets(p->ws_mib, ncpus);
}

static void publish_status(void)
{
	struct lsg_status *st = status();

	st->magic = LSG_STATUS_MAGIC;
	st->version = LSG_STATUS_VERSION;
	st->ws_gpa = LSG_WS_GPA;
	st->ws_pages = lsg_cfg.ws_pages;
	st->mode = lsg_cfg.mode;
	st->tsc_khz = lsg_cfg.tsc_khz;
	st->ncpus = lsg_cfg.ncpus;
	st->boot_tsc = lsg_cfg.boot_tsc;
	st->ready_tsc = rdtsc();
	__atomic_store_n(&st->ready, 1, __ATOMIC_RELEASE);
}

/*
 * No interrupt is expected, but under PVM ring 3 runs with interrupts
 * enabled whatever IF says, and a VMM may wire the 8259 to LINT0: mask it,
 * so that no device line can reach the exception handlers.
 */
static void mask_pic(void)
{
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
}

/*
 * Code written at run time runs as written. An emulator that keeps
 * translations of guest code (TCG) must drop one when a guest store
 * changes its bytes; the VMM's TCG backend replaces part of Unicorn's
 * store path (vmm/accel/tcg/tcg_uc_store.c), and this is the check that
 * it still does. The code has a page of its own, so that the translation
 * left behind slows no store to other data.
 */
static uint8_t rewritable_code[4096] __attribute__((aligned(4096)));

static uint32_t run_rewritten(uint32_t v)
{
	volatile uint8_t *c = rewritable_code;

	c[0] = 0xb8; /* mov eax, imm32 */
	for (int i = 0; i < 4; i++)
		c[1 + i] = (uint8_t)(v >> (8 * i));
	c[5] = 0xc3; /* ret */
	barrier();
	return ((uint32_t(*)(void))(uintptr_t)rewritable_code)();
}

static void check_code_rewrite(void)
{
	uint32_t first = run_rewritten(1), second = run_rewritten(2);

	if (first != 1 || second != 2) {
		lsg_say("error: rewritten code ran stale: returned %u then %u, "
			"want 1 then 2",
			first, second);
		lsg_power_off();
	}
	lsg_say("self-check: rewritten code ran as written");
}

static NORETURN void bsp_main(const uint8_t *bp, uint64_t tsc0,
			      uint64_t apic_base_msr)
{
	struct params p = {
	    .ws_mib = DEFAULT_WS_MIB, .mode = 1, .print_s = DEFAULT_PRINT_S};
	struct lsg_status *st = status();
	uint64_t user_tsc = rdtsc();
	struct lsg_cpus cpus;
	const char *cmdline;

	memset(st, 0, sizeof(*st));
	st->user_tsc = user_tsc;
	lsg_cfg.boot_tsc = tsc0;
	lsg_console_init();
	mask_pic();
	cmdline = read_cmdline(bp);
	lsg_say("boot cmdline='%s'", cmdline);
	parse_cmdline(&p, cmdline);
	check_code_rewrite();
	read_e820(bp);
	read_initrd(bp);
	lsg_find_cpus(&cpus, p.cpus, apic_base_msr);
	configure(&p, cpus.n);
	if (!lsg_cfg.ws_pages) {
		lsg_say("error: no RAM for the working sets at 0x%llx",
			LSG_WS_GPA);
		lsg_power_off();
	}
	lsg_cfg.ncpus = lsg_start_aps(&cpus, apic_base_msr);
	publish_status();
	lsg_say("boot ring0=%lu cycles, %u cpus up after %lu cycles",
		user_tsc - tsc0, lsg_cfg.ncpus, st->ready_tsc - tsc0);
	__atomic_store_n(&workload_go, 1, __ATOMIC_RELEASE);
	lsg_workload(0);
}

/* Opens ports 0-0x3ff in this CPU's TSS (see layout.h): before any I/O. */
static void permit_io(uint32_t cpu)
{
	uint8_t *tss =
	    (uint8_t *)(LSG_PERCPU_GPA + (uint64_t)cpu * LSG_PERCPU_SIZE);
	uint16_t base = LSG_TSS_IOMAP;

	memset(tss + LSG_TSS_IOMAP, 0, LSG_TSS_IOMAP_PORTS / 8);
	tss[LSG_TSS_LIMIT] = 0xff; /* the CPU reads 2 bytes of bitmap */
	barrier();
	memcpy(tss + LSG_TSS_IOMAP_BASE_OFF, &base, sizeof(base));
	barrier();
}

void lsg_user_entry(uint32_t cpu, const uint8_t *boot_params, uint64_t tsc0,
		    uint64_t apic_base_msr)
{
	permit_io(cpu);
	if (cpu == 0)
		bsp_main(boot_params, tsc0, apic_base_msr);
	lsg_ap_started(cpu);
	while (!__atomic_load_n(&workload_go, __ATOMIC_ACQUIRE))
		cpu_relax();
	lsg_workload(cpu);
}
