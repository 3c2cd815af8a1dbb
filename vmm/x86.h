/* SPDX-License-Identifier: MIT */
/*
 * x86 pieces of a fresh boot, one file each: per-vCPU CPUID (cpuid.c),
 * boot and snapshot MSR lists (msr.c), entry CPU state, GDT and page
 * tables (regs.c), the MP table (mptable.c).
 */
#ifndef LS_VMM_X86_H
#define LS_VMM_X86_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;
struct vcpu;

/* cpuid.c: supported CPUID, edited for this vCPU, then KVM_SET_CPUID2. */
int cpuid_setup_vcpu(struct vcpu *vcpu, char *err);

/* msr.c */
int msr_setup_boot(struct vcpu *vcpu, char *err);
/* True if a vCPU snapshot should carry this MSR (the allow-list). */
bool msr_is_serializable(uint32_t index);
/* Serializable MSRs KVM supports without listing them. */
unsigned msr_unlisted(const uint32_t **list);

#define MSR_IA32_TSC	      0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

/* regs.c */
/* Writes the boot GDT, IDT and identity-mapping page tables into RAM. */
int regs_setup_memory(struct vm *vm, char *err);
/* 64-bit entry state for the boot vCPU: rip, rsi = zero page. */
int regs_setup_bsp(struct vcpu *vcpu, uint64_t entry, char *err);
/* FPU defaults and LAPIC LINT0/LINT1 wiring, every vCPU. */
int regs_setup_fpu(struct vcpu *vcpu, char *err);
int regs_setup_lint(struct vcpu *vcpu, char *err);

/* mptable.c: MP floating pointer + configuration table at GPA_EBDA. */
int mptable_setup(struct vm *vm, char *err);

#endif /* LS_VMM_X86_H */
