/* SPDX-License-Identifier: MIT */
/*
 * x86 pieces of a fresh boot that no accelerator owns: entry CPU state,
 * GDT and page tables (regs.c), the MP table (mptable.c). CPUID and MSRs
 * are the accelerator's (accel/kvm/kvm_cpuid.c, kvm_msr.c).
 */
#ifndef LS_VMM_X86_H
#define LS_VMM_X86_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct x86_cpu_state;

/* regs.c */
/* Writes the boot GDT, IDT and identity-mapping page tables into RAM. */
int regs_setup_memory(struct vm *vm, char *err);
/*
 * 64-bit entry state for the boot vCPU (neutral; the accelerator applies
 * it): rip = entry, rsi = zero page, flat boot segments, paging on.
 */
void regs_boot_entry(struct x86_cpu_state *st, uint64_t entry);

/* mptable.c: MP floating pointer + configuration table at GPA_EBDA. */
int mptable_setup(struct vm *vm, char *err);

#endif /* LS_VMM_X86_H */
