/* SPDX-License-Identifier: MIT */
/*
 * The architectural state of one x86-64 vCPU and of the VM-wide chips, in
 * fixed-layout versioned structs that name no accelerator: every backend
 * (vmm/accel/) converts its own view to and from these, so a snapshot
 * holds the same bytes whichever backend took it.
 *
 * What is architecture is here: registers, segments with their hidden
 * parts, control and debug registers, MSRs, the XSAVE image in the
 * standard (non-compacted) layout, the xAPIC register page, pending
 * events, the multiprocessor state and CPUID. What only one backend can
 * make sense of goes in `priv`, tagged with the backend's name.
 */
#ifndef LS_VMM_X86_CPU_STATE_H
#define LS_VMM_X86_CPU_STATE_H

#include <stdbool.h>
#include <stdint.h>

#define X86_CPU_STATE_MAGIC   0x55504378u /* "xCPU" */
#define X86_CPU_STATE_VERSION 1
#define X86_MAX_MSRS	      128
#define X86_MAX_CPUID	      256
#define X86_XSAVE_MAX	      16384 /* AMX needs ~11 KiB */
#define X86_LAPIC_SIZE	      1024
#define X86_PRIV_MAX	      256
#define X86_BACKEND_NAME_MAX  8

/* Multiprocessor state (the SDM's wait-for-SIPI etc.; KVM's numbers). */
enum x86_mp_state {
	X86_MP_RUNNABLE = 0,
	X86_MP_UNINITIALIZED = 1, /* wait-for-SIPI after reset */
	X86_MP_INIT_RECEIVED = 2,
	X86_MP_HALTED = 3,
	X86_MP_SIPI_RECEIVED = 4,
};

/* A segment register with its hidden (descriptor cache) part. */
struct x86_segment {
	uint64_t base;
	uint32_t limit; /* byte granular, as the CPU uses it */
	uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl, unusable;
	uint8_t pad[3];
};

struct x86_dtable {
	uint64_t base;
	uint16_t limit;
	uint16_t pad[3];
};

/* Events the CPU holds between instructions (KVM's vcpu_events fields). */
struct x86_events {
	uint8_t exception_injected, exception_nr, exception_has_error;
	uint8_t exception_pending, exception_has_payload;
	uint8_t interrupt_injected, interrupt_nr, interrupt_soft;
	uint8_t interrupt_shadow;
	uint8_t nmi_injected, nmi_pending, nmi_masked;
	uint8_t smi_smm, smi_pending, smi_inside_nmi, smi_latched_init;
	uint32_t exception_error_code;
	uint32_t sipi_vector;
	uint64_t exception_payload;
	uint32_t flags; /* which optional parts are valid (KVM_VCPUEVENT_*) */
	uint32_t triple_fault_pending;
};

struct x86_msr {
	uint32_t index;
	uint32_t reserved;
	uint64_t data;
};

struct x86_cpuid {
	uint32_t function, index, flags;
	uint32_t eax, ebx, ecx, edx;
	uint32_t pad;
};

struct x86_cpu_state {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint32_t size; /* sizeof(struct x86_cpu_state) */
	uint32_t id;   /* vCPU index == APIC id */
	uint32_t mp_state; /* enum x86_mp_state */
	uint32_t tsc_khz;  /* the guest TSC's rate when saved */
	uint32_t nmsrs;
	uint32_t ncpuid;   /* 0: the backend's own CPUID applies */
	uint32_t xsave_size; /* bytes of xsave[] in use (>= 576 when set) */
	uint32_t pad0;

	uint64_t gpr[16]; /* rax rcx rdx rbx rsp rbp rsi rdi r8..r15 */
	uint64_t rip, rflags;
	struct x86_segment cs, ds, es, fs, gs, ss, tr, ldt;
	struct x86_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
	uint64_t dr[4], dr6, dr7;
	uint64_t xcr0;
	/* pending external interrupts (KVM sregs.interrupt_bitmap) */
	uint64_t interrupt_bitmap[4];
	struct x86_events events;
	struct x86_msr msrs[X86_MAX_MSRS];
	struct x86_cpuid cpuid[X86_MAX_CPUID];
	uint8_t lapic[X86_LAPIC_SIZE]; /* xAPIC register page */

	/* What only the named backend understands (may be empty). */
	char priv_backend[X86_BACKEND_NAME_MAX];
	uint32_t priv_size;
	uint32_t pad1;
	uint8_t priv[X86_PRIV_MAX];

	/* Standard-layout XSAVE image; legacy FXSAVE region first. */
	uint8_t xsave[X86_XSAVE_MAX] __attribute__((aligned(64)));
};

/* GPR indexes, in the encoding order of the instruction set. */
enum x86_gpr {
	X86_RAX, X86_RCX, X86_RDX, X86_RBX, X86_RSP, X86_RBP, X86_RSI, X86_RDI,
	X86_R8, X86_R9, X86_R10, X86_R11, X86_R12, X86_R13, X86_R14, X86_R15,
};

/* The VM-wide part: guest time, plus the chips of the backend that saved. */
#define X86_VM_STATE_MAGIC   0x4d565878u /* "xVM" */
#define X86_VM_STATE_VERSION 1
#define X86_VM_PRIV_MAX	     2048

struct x86_vm_state {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint32_t size;
	uint32_t pad;
	uint64_t guest_ns; /* guest clock when saved */
	/*
	 * ISA IRQs the guest could receive (unmasked at the PIC or the
	 * IOAPIC): a backend without interrupt delivery refuses a state
	 * with any.
	 */
	uint32_t irq_enabled;
	uint32_t pad2;
	char backend[X86_BACKEND_NAME_MAX];
	uint32_t priv_size;
	uint32_t pad1;
	uint8_t priv[X86_VM_PRIV_MAX];
};

/* Legacy FXSAVE region offsets inside xsave[]. */
#define X86_FXSAVE_FCW	   0
#define X86_FXSAVE_FSW	   2
#define X86_FXSAVE_FTW	   4 /* abridged: one bit per register */
#define X86_FXSAVE_FOP	   6
#define X86_FXSAVE_FIP	   8
#define X86_FXSAVE_FDP	   16
#define X86_FXSAVE_MXCSR   24
#define X86_FXSAVE_ST0	   32  /* 8 x 16 bytes */
#define X86_FXSAVE_XMM0	   160 /* 16 x 16 bytes */
#define X86_XSAVE_XSTATE_BV 512
#define X86_XSAVE_YMMH	   576 /* 16 x 16 bytes, component 2 */
#define X86_XSAVE_MIN_SIZE 832

/* Fresh state header (magic, version, size, id), everything else zero. */
void x86_cpu_state_init(struct x86_cpu_state *st, unsigned id);
/* Checks header and counts; -EINVAL with a message naming what. */
int x86_cpu_state_check(const struct x86_cpu_state *st, unsigned id,
			char *err);
int x86_cpu_state_msr(const struct x86_cpu_state *st, uint32_t index,
		      uint64_t *value);
/* Sets (adds if missing) an MSR; -E2BIG when the table is full. */
int x86_cpu_state_set_msr(struct x86_cpu_state *st, uint32_t index,
			  uint64_t value);
void x86_vm_state_init(struct x86_vm_state *st, const char *backend);
int x86_vm_state_check(const struct x86_vm_state *st, char *err);

/* Reset values of the xAPIC page (SDM 10.12.5.1) for APIC id `id`. */
void x86_lapic_reset(uint8_t page[X86_LAPIC_SIZE], unsigned id,
		     bool bsp);
uint32_t x86_lapic_reg(const uint8_t page[X86_LAPIC_SIZE], unsigned off);
void x86_lapic_set_reg(uint8_t page[X86_LAPIC_SIZE], unsigned off,
		       uint32_t v);

#define X86_MSR_TSC	     0x10
#define X86_MSR_APIC_BASE    0x1b
#define X86_MSR_TSC_DEADLINE 0x6e0
#define X86_MSR_EFER	     0xc0000080
#define X86_MSR_STAR	     0xc0000081
#define X86_MSR_LSTAR	     0xc0000082
#define X86_MSR_CSTAR	     0xc0000083
#define X86_MSR_FMASK	     0xc0000084
#define X86_MSR_FS_BASE	     0xc0000100
#define X86_MSR_GS_BASE	     0xc0000101
#define X86_MSR_KERNEL_GS    0xc0000102
#define X86_MSR_SYSENTER_CS  0x174
#define X86_MSR_SYSENTER_ESP 0x175
#define X86_MSR_SYSENTER_EIP 0x176

#define X86_APIC_BASE_DEFAULT 0xfee00000ull
#define X86_APIC_BASE_BSP     (1ull << 8)
#define X86_APIC_BASE_ENABLE  (1ull << 11)

/* xAPIC register offsets */
#define APIC_REG_ID	 0x20
#define APIC_REG_VERSION 0x30
#define APIC_REG_TPR	 0x80
#define APIC_REG_EOI	 0xb0
#define APIC_REG_LDR	 0xd0
#define APIC_REG_DFR	 0xe0
#define APIC_REG_SPIV	 0xf0
#define APIC_REG_ESR	 0x280
#define APIC_REG_ICR_LO	 0x300
#define APIC_REG_ICR_HI	 0x310
#define APIC_REG_LVTT	 0x320
#define APIC_REG_LVTTHMR 0x330
#define APIC_REG_LVTPC	 0x340
#define APIC_REG_LINT0	 0x350
#define APIC_REG_LINT1	 0x360
#define APIC_REG_LVTERR	 0x370
#define APIC_REG_TMICT	 0x380
#define APIC_REG_TMCCT	 0x390
#define APIC_REG_TDCR	 0x3e0

#endif /* LS_VMM_X86_CPU_STATE_H */
