/* SPDX-License-Identifier: MIT */
/*
 * A virtual machine: guest RAM, the vCPUs and their threads, the legacy
 * devices, and the run control (pause/resume/exit). The accelerator that
 * runs the vCPUs (KVM or TCG) sits behind vm->accel (accel/accel.h).
 *
 * Life cycle, kept apart as Firecracker does:
 *   vm_create()      VM shell: accelerator, RAM, vCPUs, devices
 *   vm_setup_boot()  fresh boot: kernel, zero page, MP table, vCPU state
 *   (or restore vCPU/VM/device state from a snapshot instead)
 *   vm_start()       one thread per vCPU, running or paused
 *   vm_pause()/vm_resume()   nestable, quiesce every vCPU outside guest code
 *   vm_request_exit()        first caller wins; vm_exit_fd() turns readable
 *   vm_destroy()     stops and joins the threads, frees everything
 */
#ifndef LS_VMM_VM_H
#define LS_VMM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "accel/accel.h"
#include "devices/devices.h"
#include "util.h"

enum mem_backend {
	MEM_ANON,    /* MAP_PRIVATE|MAP_ANONYMOUS + MADV_HUGEPAGE */
	MEM_MEMFD,   /* memfd (shmem), MAP_SHARED */
	MEM_HUGETLB, /* memfd on hugetlbfs (2 MiB pages), MAP_SHARED */
};

const char *mem_backend_name(enum mem_backend b);

struct vm_config {
	unsigned ncpus;
	uint64_t mem_bytes;
	enum mem_backend backend;
	bool prealloc;  /* all of RAM allocated now (MADV_POPULATE_WRITE) */
	int console_fd; /* serial output; -1 discards it */
	const struct accel_ops *accel; /* NULL: TCG */
};

/* Guest RAM: one host mapping, split into two slots around the hole. */
struct vm_mem {
	uint8_t *host;	    /* GPA 0 .. low_size, then 4 GiB .. */
	uint64_t size;	    /* low_size + high_size */
	uint64_t low_size;  /* below GPA_HOLE_START */
	uint64_t high_size; /* from GPA_4G */
	int fd;		    /* memfd/hugetlb backing, -1 for anon */
	enum mem_backend backend;
	size_t page_size; /* 4096 or the huge page size */
};

enum vm_exit_reason {
	VM_EXIT_NONE = 0,
	VM_EXIT_GUEST_RESET,	/* i8042/0x92 reset: power-off, 0 */
	VM_EXIT_GUEST_SHUTDOWN, /* guest shutdown event, status 0 */
	VM_EXIT_TRIPLE_FAULT,	/* triple fault / unhandled exception, 1 */
	VM_EXIT_QMP_QUIT,	/* status 0 */
	VM_EXIT_SIGNAL,		/* SIGINT/SIGTERM, status 0 */
	VM_EXIT_ERROR,		/* internal or accelerator error, status 1 */
};

struct vcpu {
	struct vm *vm;
	unsigned id; /* vCPU id == APIC id == index */
	void *accel_priv; /* the backend's per-vCPU state */
	pthread_t thread;
	pid_t tid; /* for query-cpus-fast */
	bool thread_started;
};

struct vm_pause_stats {
	uint64_t pauses;	/* completed pause/resume cycles */
	uint64_t last_stop_ns;	/* pause request -> every vCPU parked */
	uint64_t last_total_ns; /* pause request -> resume (downtime) */
	uint64_t max_total_ns;
};

struct vm {
	const struct accel_ops *accel;
	void *accel_priv; /* the backend's per-VM state */
	unsigned max_vcpus; /* set by accel->vm_init */
	unsigned ncpus;
	struct vm_mem mem;
	struct vcpu *vcpus;
	uint32_t tsc_khz; /* the rate guest rdtsc ticks at */

	struct pio_bus bus;
	struct serial serial;
	struct i8042 i8042;
	struct rtc rtc;
	struct pio_sink sink;

	/* Run control; lock protects everything below. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_mutex_t pause_lock; /* serialises vm_pause/vm_resume */
	int pause_req;		    /* atomic: vCPUs must park */
	unsigned pause_depth;	    /* under pause_lock */
	unsigned parked;	    /* vCPU threads parked */
	unsigned live_threads;	    /* vCPU threads not finished */
	int stopping;		    /* atomic: threads must end */
	uint64_t pause_begin_ns;
	struct vm_pause_stats pstats;

	int exit_reason; /* atomic, enum vm_exit_reason */
	int exit_status;
	char exit_msg[VMM_ERR_MAX];
	int exit_efd; /* eventfd, readable once exit requested */
};

int vm_create(struct vm **vmp, const struct vm_config *cfg, char *err);
void vm_destroy(struct vm *vm);

/* Host address of [gpa, gpa+len) if it lies in one RAM slot, else NULL. */
void *vm_gpa_to_hva(struct vm *vm, uint64_t gpa, uint64_t len);

/* Starts the vCPU threads; with paused, they park before the first run. */
int vm_start(struct vm *vm, bool paused, char *err);

/*
 * Brings every vCPU out of guest code (completing any pending I/O exit) and
 * parks it; returns once all are parked. Nestable: only the outermost
 * vm_resume() lets the vCPUs run again. Both return 0 or -errno.
 */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
bool vm_is_paused(struct vm *vm);
/*
 * Tells a paravirtual-clock guest (KVM's kvmclock) at its next entry that
 * it was stopped, so its soft-lockup watchdog ignores the gap. For pauses
 * a user can see (QMP stop), not for millisecond ones.
 */
void vm_notify_clock_paused(struct vm *vm);
void vm_pause_stats(struct vm *vm, struct vm_pause_stats *st);

/* First caller wins; kicks every vCPU out and makes vm_exit_fd() ready. */
void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, int status,
		     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int vm_exit_fd(struct vm *vm);
enum vm_exit_reason vm_exit_reason(struct vm *vm);

/* Stops and joins every vCPU thread (idempotent). */
void vm_stop_threads(struct vm *vm);

/* The guest TSC rate for a fresh boot's command line (measured if need be). */
uint32_t vm_boot_tsc_khz(struct vm *vm);

/* The devices' interrupt lines, routed to the accelerator. */
void vm_set_irq(void *vm, unsigned irq, int level);

/* vcpu.c */
void *vcpu_thread(void *arg);
void vcpu_kick(struct vcpu *vcpu);

#endif /* LS_VMM_VM_H */
