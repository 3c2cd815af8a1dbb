/* SPDX-License-Identifier: MIT */
/*
 * SMP, from ring 3: find the CPUs in the MP table (Intel MultiProcessor
 * Specification 1.4), then start the APs with INIT-SIPI-SIPI. The LAPIC
 * page is mapped user-accessible, so ring 3 writes the ICR directly (ring
 * 0 has switched an x2APIC back to xAPIC mode at boot).
 *
 * APs are started one at a time: the BSP publishes the index the next AP
 * takes (lsg_ap_boot_cpu, read by entry.S), sends the SIPI, and waits
 * until that AP reports from ring 3. Indices stay dense if an AP fails.
 */
#include "guest.h"

#define MP_FLOAT_SIG   0x5f504d5f /* "_MP_" */
#define MP_TABLE_SIG   0x504d4350 /* "PCMP" */
#define MP_ENTRY_CPU   0
#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP     0x02
#define BDA_EBDA_SEG   0x40e

#define APIC_BASE_ADDR_MASK 0xfffff000u
#define APIC_BASE_EN	    (1u << 11)
#define APIC_DEFAULT_BASE   0xfee00000u
#define MPC_LAPIC_OFF	    0x24 /* MP table header: LAPIC address */
#define APIC_ICR_LOW	    0x300
#define APIC_ICR_HIGH	    0x310
#define APIC_ICR_BUSY	    (1u << 12)
#define APIC_INIT	    0x00004500 /* INIT, level assert */
#define APIC_SIPI	    0x00004600 /* start-up, level assert | vector */
#define APIC_ID		    0x20
#define NO_CPU		    0xffffffffu
#define CPUID_HYPERVISOR    (1u << 31)

/* Read by lsg_ap_entry64 in ring 0: the index the next AP takes. */
volatile uint32_t lsg_ap_boot_cpu = NO_CPU;
static volatile uint32_t ap_ack = NO_CPU;

extern const char lsg_tramp_start[], lsg_tramp_end[];

static const uint8_t *find_mp_table(void);

/*
 * The LAPIC's MMIO page: IA32_APIC_BASE when it names one; otherwise (a
 * CPU model whose MSR reads 0, as Unicorn's TCG) the MP table's "address
 * of local APIC" field, as firmware-described hardware allows, and the
 * architectural default when there is no table either.
 */
static volatile uint32_t *lapic_mmio(uint64_t apic_base_msr)
{
	const uint8_t *mpc;
	uint32_t addr;

	if ((apic_base_msr & APIC_BASE_EN) &&
	    (apic_base_msr & APIC_BASE_ADDR_MASK))
		return (volatile uint32_t *)(apic_base_msr &
					     APIC_BASE_ADDR_MASK);
	mpc = find_mp_table();
	addr = mpc ? *(const uint32_t *)(mpc + MPC_LAPIC_OFF) : 0;
	return (volatile uint32_t *)(uint64_t)(addr ? addr : APIC_DEFAULT_BASE);
}

static int checksum_ok(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum += b[i];
	return sum == 0;
}

/* The MP floating pointer structure in [start, start + len), or 0. */
static const uint8_t *find_mp_float(uint64_t start, uint64_t len)
{
	for (uint64_t a = start; a + 16 <= start + len; a += 16) {
		const uint8_t *p = (const uint8_t *)a;

		if (*(const uint32_t *)p == MP_FLOAT_SIG && p[8] == 1 &&
		    checksum_ok(p, 16))
			return p;
	}
	return 0;
}

static const uint8_t *find_mp_table(void)
{
	uint64_t ebda = (uint64_t) * (const uint16_t *)BDA_EBDA_SEG << 4;
	const uint8_t *fp = 0;
	const uint8_t *mpc;
	uint32_t addr;

	if (ebda >= 0x80000 && ebda < 0xa0000)
		fp = find_mp_float(ebda, 1024);
	if (!fp)
		fp = find_mp_float(0x9fc00, 1024);
	if (!fp)
		fp = find_mp_float(0xf0000, 0x10000);
	if (!fp)
		return 0;
	addr = *(const uint32_t *)(fp + 4);
	if (!addr || fp[11]) {
		lsg_say("warning: MP default configuration %u not supported",
			fp[11]);
		return 0;
	}
	mpc = (const uint8_t *)(uint64_t)addr;
	if (*(const uint32_t *)mpc != MP_TABLE_SIG ||
	    !checksum_ok(mpc, *(const uint16_t *)(mpc + 4))) {
		lsg_say("warning: MP table at 0x%x is corrupt", addr);
		return 0;
	}
	return mpc;
}

static void add_cpu(struct lsg_cpus *cpus, uint32_t apic_id)
{
	for (uint32_t i = 0; i < cpus->n; i++)
		if (cpus->apic_id[i] == apic_id)
			return; /* the BSP, or listed twice */
	if (cpus->n < LSG_MAX_CPUS)
		cpus->apic_id[cpus->n++] = apic_id;
}

/* Adds the enabled processors of the MP table; 0 if there is none. */
static int parse_mp_table(struct lsg_cpus *cpus)
{
	const uint8_t *mpc = find_mp_table();
	const uint8_t *p, *end;

	if (!mpc)
		return 0;
	/* Walk by the table length, as Linux does: some firmware (qboot)
	 * leaves the entry count at 0. */
	p = mpc + 0x2c;
	end = mpc + *(const uint16_t *)(mpc + 4);
	while (p < end) {
		if (p[0] == MP_ENTRY_CPU) {
			if (p[3] & MP_CPU_ENABLED)
				add_cpu(cpus, p[1]);
			p += 20;
		} else if (p[0] <= 4) {
			p += 8;
		} else {
			break; /* unknown entry: its size is unknown too */
		}
	}
	return 1;
}

/*
 * CPUs from the MP table. `wanted` (ls.cpus, 0 if absent) wins over it:
 * fewer CPUs are started, or missing ones are tried with APIC ids from 0
 * up (the MP table may be missing, or list fewer CPUs than exist: SeaBIOS
 * under TCG).
 */
void lsg_find_cpus(struct lsg_cpus *cpus, uint32_t wanted,
		   uint64_t apic_base_msr)
{
	int found;

	/* From the LAPIC: under PVM, ring-3 CPUID may be the host's. */
	cpus->apic_id[0] = lapic_mmio(apic_base_msr)[APIC_ID / 4] >> 24;
	cpus->n = 1;
	found = parse_mp_table(cpus);
	if (wanted > LSG_MAX_CPUS)
		wanted = LSG_MAX_CPUS;
	if (wanted && wanted < cpus->n) {
		cpus->n = wanted;
	} else if (wanted > cpus->n) {
		if (found)
			lsg_say("warning: ls.cpus=%u but the MP table lists "
				"%u: trying APIC ids from 0",
				wanted, cpus->n);
		else
			lsg_say("warning: no MP table: trying APIC ids from 0");
		for (uint32_t id = 0; cpus->n < wanted; id++)
			add_cpu(cpus, id);
	}
}

static void apic_send(volatile uint32_t *lapic, uint32_t dest, uint32_t cmd)
{
	lapic[APIC_ICR_HIGH / 4] = dest << 24;
	lapic[APIC_ICR_LOW / 4] = cmd;
	for (int i = 0; i < 1000 && (lapic[APIC_ICR_LOW / 4] & APIC_ICR_BUSY);
	     i++)
		cpu_relax();
}

static int wait_ack(uint32_t cpu, uint64_t ms)
{
	uint64_t end = rdtsc() + ms * lsg_cfg.tsc_per_ms;

	while (rdtsc() < end)
		if (__atomic_load_n(&ap_ack, __ATOMIC_ACQUIRE) == cpu)
			return 1;
		else
			cpu_relax();
	return 0;
}

/* Called by each AP once in ring 3. */
void lsg_ap_started(uint32_t cpu)
{
	__atomic_store_n(&ap_ack, cpu, __ATOMIC_RELEASE);
}

/*
 * Starts cpus->apic_id[1..n-1]; returns how many CPUs run (BSP included)
 * and compacts cpus->apic_id to the started ones.
 */
uint32_t lsg_start_aps(struct lsg_cpus *cpus, uint64_t apic_base_msr)
{
	volatile uint32_t *lapic = lapic_mmio(apic_base_msr);
	uint32_t started = 1;
	uint8_t vector = LSG_TRAMP_GPA >> 12;

	if (cpus->n < 2)
		return 1;
	memcpy((void *)LSG_TRAMP_GPA, lsg_tramp_start,
	       (size_t)(lsg_tramp_end - lsg_tramp_start));
	for (uint32_t i = 1; i < cpus->n; i++)
		apic_send(lapic, cpus->apic_id[i], APIC_INIT);
	/* The 10 ms INIT wait of the MP spec is for real hardware; Linux
	 * skips it under a hypervisor too. */
	if (!(cpuid(1, 0).ecx & CPUID_HYPERVISOR))
		delay_cycles(10 * lsg_cfg.tsc_per_ms);
	for (uint32_t i = 1; i < cpus->n; i++) {
		uint32_t id = cpus->apic_id[i];

		__atomic_store_n(&lsg_ap_boot_cpu, started, __ATOMIC_RELEASE);
		apic_send(lapic, id, APIC_SIPI | vector);
		if (!wait_ack(started, 10)) {
			apic_send(lapic, id, APIC_SIPI | vector);
			if (!wait_ack(started, 1000)) {
				lsg_say("warning: cpu with APIC id %u did not "
					"start",
					id);
				continue;
			}
		}
		cpus->apic_id[started++] = id;
	}
	__atomic_store_n(&lsg_ap_boot_cpu, NO_CPU, __ATOMIC_RELEASE);
	cpus->n = started;
	return started;
}
