/* SPDX-License-Identifier: MIT */
/*
 * The TCG backend's private header: vCPUs emulated by Unicorn (QEMU's TCG
 * as a library). Only files in accel/tcg/ include <unicorn/unicorn.h>.
 *
 * One Unicorn engine per vCPU, all mapping the same host RAM with
 * uc_mem_map_ptr(), so a guest store is a host store that UFFD-WP traps.
 * Engines are not atomic against each other (a guest `lock cmpxchg` is a
 * load and a store), so vCPUs run one at a time, as QEMU's single-threaded
 * TCG does: an execution token handed round robin, and a ticker thread
 * that ends a turn after TCG_SLICE_NS when another vCPU waits.
 */
#ifndef LS_VMM_ACCEL_TCG_H
#define LS_VMM_ACCEL_TCG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <unicorn/unicorn.h>

#include "../../x86/cpu_state.h"
#include "../../x86/lapic.h"
#include "../accel.h"

struct vm;
struct vcpu;

#define TCG_SLICE_NS  2000000ull /* a vCPU's turn when others wait */
#define TCG_TICK_NS   1000000ull /* ticker re-check while a turn ends */
#define TCG_NO_HOLDER (~0u)

/* vm->accel_priv */
struct tcg_vm {
	pthread_mutex_t lock; /* everything below, and tcg_vcpu's marked */
	pthread_cond_t cond;
	unsigned holder; /* of the execution token: vCPU id or TCG_NO_HOLDER */
	unsigned waiting;
	uint64_t turn_start_ns;
	pthread_t ticker;
	bool ticker_started, ticker_stop;
	uint32_t irq_levels;  /* ISA lines raised by devices (not delivered) */
	uint64_t created_ns;  /* guest clock origin */
	uint64_t created_tsc; /* host TSC then: a rate without a sleep */
	bool tsc_checked;     /* a restore's TSC rate was compared */
	/* CPUID as the emulated CPU reports it (leaves 0, 1, 0x80000000,
	 * 0x80000001), probed on first use: tcg_cpuid_native(). */
	pthread_mutex_t cpuid_lock;
	bool cpuid_probed;
	uint32_t cpuid_native[4][4];
};

/* vcpu->accel_priv */
struct tcg_vcpu {
	uc_engine *uc; /* NULL while there is nothing to run */
	/* under tcg_vm.lock */
	bool kick;	/* sticky: vcpu_run returns before/after running */
	bool stop_req;	/* atomic: the block hook stops the engine */
	bool stopped;	/* vCPU thread: the block hook stopped this run */
	bool want_token;
	uint32_t mp_state; /* enum x86_mp_state */
	uint8_t sipi_vector;
	/* vCPU thread only */
	int exception;	  /* vector from the INTR hook, -1: none */
	uint64_t apic_base;
	struct lapic lapic;
	uint8_t *stub;	  /* the resume stub page (host memory) */
};

#define TCG_VM(vm)     ((struct tcg_vm *)(vm)->accel_priv)
#define TCG_VCPU(vcpu) ((struct tcg_vcpu *)(vcpu)->accel_priv)

/* tcg_uc.c: Unicorn loaded at run time (see there) */
void tcg_uc_preload(void);
int tcg_uc_ready(char *err);
/* tcg_uc_store.c: Unicorn 2.0.1's store path (lib: the dlopen handle). */
void tcg_uc_store_init(void *lib, unsigned int version);
/* tcg_dirty.c: the dirty log (accel_ops.dirty_log) */
void tcg_dirty_init(void *lib, bool store_path_known);
void tcg_dirty_mark_ram(uint64_t start, uint64_t end);
void tcg_dirty_check_engine(struct vm *vm, uc_engine *uc);
bool tcg_dirty_log_ready(struct vm *vm);
int tcg_dirty_log(struct vm *vm, uint64_t *bitmap, uint64_t *words,
		  char *err);

/* tcg_engine.c */
int tcg_engine_create(struct vcpu *vcpu, char *err);
void tcg_engine_destroy(struct vcpu *vcpu);
const uint32_t (*tcg_cpuid_native(struct tcg_vm *t))[4];

/* tcg_sched.c; the token functions with t->lock held */
bool tcg_token_acquire(struct vcpu *vcpu); /* false: kicked, not held */
void tcg_token_release(struct vm *vm, unsigned id);
void tcg_vcpu_kick(struct vcpu *vcpu);
int tcg_ticker_start(struct vm *vm, char *err);
void tcg_ticker_stop(struct vm *vm);

/* tcg_vcpu.c */
enum accel_run tcg_vcpu_run(struct vcpu *vcpu);
int tcg_vcpu_complete(struct vcpu *vcpu, char *err);
void tcg_vcpu_dump(struct vcpu *vcpu, const char *why);

/* tcg_vm.c */
uint32_t tcg_host_tsc_khz(long ns);
uint32_t tcg_host_tsc_khz_since(uint64_t t0_ns, uint64_t tsc0, long min_ns);

/* tcg_state.c */
int tcg_get_state(struct vcpu *vcpu, struct x86_cpu_state *st, char *err);
int tcg_set_state(struct vcpu *vcpu, const struct x86_cpu_state *st,
		  char *err);
/* Starts an AP at SIPI: real mode, CS = vector << 8, IP = 0. */
int tcg_start_real_mode(struct vcpu *vcpu, uint8_t vector, char *err);

#include "tcg_stub.h"

#endif /* LS_VMM_ACCEL_TCG_H */
