/* SPDX-License-Identifier: MIT */
/*
 * Internal interfaces of the default guest. Everything declared here runs
 * in ring 3 (natively under PVM) unless it says otherwise.
 */
#ifndef LSG_GUEST_H
#define LSG_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "abi.h"
#include "layout.h"

#define NORETURN      __attribute__((noreturn))
#define PRINTF(f, a)  __attribute__((format(printf, f, a)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(LSG_NCPUS_MAX == LSG_MAX_CPUS, "layout.h and abi.h disagree");
_Static_assert(LSG_INIT_SIZE == LSG_WS_GPA - LSG_KERNEL_GPA,
	       "init_size must reach the working sets");
_Static_assert(LSG_PERCPU_GPA + LSG_NCPUS_MAX * LSG_PERCPU_SIZE <= 0x200000,
	       "per-CPU areas leave the image's 2 MiB page");
_Static_assert(LSG_TSS_LIMIT < LSG_R0_STACK_TOP - 0x600,
	       "the ring-0 stack is too small");
_Static_assert(LSG_VCPU_STATUS_OFF(LSG_MAX_CPUS) <= LSG_STATUS_SIZE,
	       "status area too small");
_Static_assert(sizeof(struct lsg_vcpu_status) <= 0x10000,
	       "vCPU status overlaps the next");
_Static_assert(sizeof(struct lsg_status) <= LSG_VCPU_STATUS_OFF(0),
	       "status header overlaps vCPU 0");

/* Everything the workload needs to know, fixed by the BSP at boot. */
struct lsg_config {
	uint64_t ws_pages;   /* per vCPU */
	uint32_t mode;	     /* 0 seq, 1 rand */
	uint32_t ncpus;	     /* vCPUs running the workload */
	uint64_t tsc_khz;    /* 0: unknown, latencies in cycles */
	uint64_t tsc_per_ms; /* tsc_khz, or an assumed 2 GHz if unknown */
	uint64_t print_s;
	uint64_t runtime_s;
	uint64_t boot_tsc; /* TSC at the first ring-0 instruction */
};

extern struct lsg_config lsg_cfg;

/* Port I/O (allowed in ring 3 by IOPL=3 and the TSC I/O bitmap) and TSC.
 * Note: under PVM, CPUID in ring 3 may return the host's values. */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline void barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

struct cpuid_regs {
	uint32_t eax, ebx, ecx, edx;
};

static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t sub)
{
	struct cpuid_regs r;

	__asm__ volatile("cpuid"
			 : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
			 : "a"(leaf), "c"(sub));
	return r;
}

static inline void delay_cycles(uint64_t cycles)
{
	uint64_t end = rdtsc() + cycles;

	while (rdtsc() < end)
		cpu_relax();
}

/* lib.c: what gcc may call even in freestanding code, and a few helpers */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
void *memchr(const void *s, int c, size_t n);
size_t strlen(const char *s);
int lsg_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* console.c: COM1. lsg_say prints "livesnap-guest: <text>\n" atomically
 * with respect to other vCPUs. */
void lsg_console_init(void);
void lsg_say(const char *fmt, ...) PRINTF(1, 2);
NORETURN void lsg_power_off(void);

/* smp.c: CPU discovery (MP table) and AP start-up. */
struct lsg_cpus {
	uint32_t n;
	uint32_t apic_id[LSG_MAX_CPUS]; /* [0] is the BSP */
};
void lsg_find_cpus(struct lsg_cpus *cpus, uint32_t wanted,
		   uint64_t apic_base_msr);
uint32_t lsg_start_aps(struct lsg_cpus *cpus, uint64_t apic_base_msr);
void lsg_ap_started(uint32_t cpu);

/* workload.c */
NORETURN void lsg_workload(uint32_t cpu);

/* Entry of every CPU into ring 3 (from entry.S). */
NORETURN void lsg_user_entry(uint32_t cpu, const uint8_t *boot_params,
			     uint64_t tsc0, uint64_t apic_base_msr);
/* Ring 0: exception report (from entry.S). */
struct lsg_trap_frame {
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};
NORETURN void lsg_fault(const struct lsg_trap_frame *f, uint64_t cr2);

#endif /* LSG_GUEST_H */
