/* SPDX-License-Identifier: MIT */
/*
 * Intel MultiProcessor Specification 1.4 table, so that a guest without
 * ACPI finds every vCPU, the IOAPIC and the ISA interrupt wiring. The
 * floating pointer sits at the start of the last KiB of base memory
 * (0x9fc00), where Linux scans; the configuration table follows it. The
 * region is reserved in the e820 map.
 *
 * Interrupt wiring matches KVM's default GSI routing: ISA IRQ i goes to
 * IOAPIC pin i (i < 16); LINT0 is ExtINT (the PIC), LINT1 is NMI.
 */
#include "layout.h"
#include "vm.h"
#include "x86.h"

#define MPC_SPEC       4
#define APIC_VERSION   0x14
#define IOAPIC_VERSION 0x11
#define ISA_IRQS       16

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_INT_INT = 0, MP_INT_NMI = 1, MP_INT_EXTINT = 3 };

struct mpf_intel {
	char signature[4]; /* "_MP_" */
	uint32_t physptr;
	uint8_t length; /* in 16-byte units */
	uint8_t specification;
	uint8_t checksum;
	uint8_t feature1;
	uint8_t feature2;
	uint8_t feature3, feature4, feature5;
} __attribute__((packed));

struct mpc_table {
	char signature[4]; /* "PCMP" */
	uint16_t length;
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char productid[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount;
	uint32_t lapic;
	uint32_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t cpuflag; /* 1: enabled, 2: boot processor */
	uint32_t cpufeature;
	uint32_t featureflag;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type;
	uint8_t busid;
	char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t flags; /* 1: usable */
	uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc { /* also the local-interrupt entry */
	uint8_t type;
	uint8_t irqtype;
	uint16_t irqflag;
	uint8_t srcbus;
	uint8_t srcbusirq;
	uint8_t dstapic;
	uint8_t dstirq;
} __attribute__((packed));

static uint8_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return (uint8_t)-sum;
}

static size_t mptable_size(unsigned ncpus)
{
	return sizeof(struct mpf_intel) + sizeof(struct mpc_table) +
	       ncpus * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
	       sizeof(struct mpc_ioapic) +
	       (ISA_IRQS + 2) * sizeof(struct mpc_intsrc);
}

/* CPUID leaf 1 signature and features, as real firmware reports them. */
static void cpu_signature(struct vm *vm, uint32_t *sig, uint32_t *features)
{
	uint32_t r[4];

	*sig = 0x600;
	*features = 0x201; /* FPU, APIC */
	if (vm->accel->cpuid(vm, 1, 0, r)) {
		*sig = r[0];
		*features = r[3];
	}
}

static uint8_t *put_intsrc(uint8_t *p, uint8_t type, uint8_t irqtype,
			   uint8_t srcirq, uint8_t dstapic, uint8_t dstirq)
{
	struct mpc_intsrc e = {
	    .type = type,
	    .irqtype = irqtype,
	    .srcbus = 0,
	    .srcbusirq = srcirq,
	    .dstapic = dstapic,
	    .dstirq = dstirq,
	};

	memcpy(p, &e, sizeof(e));
	return p + sizeof(e);
}

int mptable_setup(struct vm *vm, char *err)
{
	size_t size = mptable_size(vm->ncpus);
	uint8_t *base = vm_gpa_to_hva(vm, GPA_EBDA, size);
	struct mpf_intel *mpf = (struct mpf_intel *)base;
	struct mpc_table *mpc = (struct mpc_table *)(mpf + 1);
	uint8_t ioapic_id = (uint8_t)vm->ncpus; /* right after the CPUs */
	uint32_t sig, features;
	uint8_t *p;

	if (!base || GPA_EBDA + size > GPA_BIOS_END || vm->ncpus > 254)
		return vmm_failx(err, E2BIG, "MP table for %u vCPUs too big",
				 vm->ncpus);
	memset(base, 0, size);
	cpu_signature(vm, &sig, &features);
	p = (uint8_t *)(mpc + 1);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct mpc_cpu c = {
		    .type = MP_PROCESSOR,
		    .apicid = (uint8_t)i,
		    .apicver = APIC_VERSION,
		    .cpuflag = 1 | (i == 0 ? 2 : 0),
		    .cpufeature = sig,
		    .featureflag = features,
		};
		memcpy(p, &c, sizeof(c));
		p += sizeof(c);
	}
	struct mpc_bus bus = {.type = MP_BUS, .bustype = "ISA   "};
	struct mpc_ioapic io = {
	    .type = MP_IOAPIC,
	    .apicid = ioapic_id,
	    .apicver = IOAPIC_VERSION,
	    .flags = 1,
	    .apicaddr = (uint32_t)GPA_IOAPIC,
	};
	memcpy(p, &bus, sizeof(bus));
	p += sizeof(bus);
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	for (uint8_t irq = 0; irq < ISA_IRQS; irq++)
		p = put_intsrc(p, MP_INTSRC, MP_INT_INT, irq, ioapic_id, irq);
	p = put_intsrc(p, MP_LINTSRC, MP_INT_EXTINT, 0, 0xff, 0);
	p = put_intsrc(p, MP_LINTSRC, MP_INT_NMI, 0, 0xff, 1);

	memcpy(mpc->signature, "PCMP", 4);
	mpc->length = (uint16_t)(p - (uint8_t *)mpc);
	mpc->spec = MPC_SPEC;
	memcpy(mpc->oem, "LIVESNAP", 8);
	memcpy(mpc->productid, "MICROVM     ", 12);
	mpc->oemcount = (uint16_t)(vm->ncpus + 2 + ISA_IRQS + 2);
	mpc->lapic = (uint32_t)GPA_LAPIC;
	mpc->checksum = checksum(mpc, mpc->length);

	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(GPA_EBDA + sizeof(*mpf));
	mpf->length = 1;
	mpf->specification = MPC_SPEC;
	mpf->checksum = checksum(mpf, sizeof(*mpf));
	return 0;
}
