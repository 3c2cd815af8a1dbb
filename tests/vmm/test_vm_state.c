/* SPDX-License-Identifier: MIT */
/*
 * Description: saves the whole state of a running VM (devices, vCPUs, VM),
 * restores it with a copy of its RAM into a fresh VM, saves that one again
 * before it runs and compares the two field by field; then runs the
 * restored VM and checks that its guest carries on from where the first
 * one stopped, without a single page-validation error.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "abi.h"
#include "boot.h"
#include "check.h"
#include "guest_image.h"
#include "machine_state.h"
#include "accel/kvm/kvm.h"
#include "vm.h"
#include "x86.h"

#define NCPUS	   2
#define MEM	   (128ull << 20)
#define TIMEOUT_S  120
#define APIC_TMCCT 0x390 /* timer current count: computed on read */

static void die(const char *what, const char *err)
{
	fprintf(stderr, "FAIL: %s: %s\n", what, err);
	exit(1);
}

static const struct accel_ops *accel;

static struct vm *new_vm(void)
{
	struct vm_config cfg = {
	    .ncpus = NCPUS,
	    .mem_bytes = MEM,
	    .backend = MEM_ANON,
	    .console_fd = open("/dev/null", O_WRONLY | O_CLOEXEC),
	    .accel = accel,
	};
	char err[VMM_ERR_MAX];
	struct vm *vm;

	if (vm_create(&vm, &cfg, err))
		die("vm_create", err);
	return vm;
}

static volatile struct lsg_vcpu_status *vcpu_status(struct vm *vm, unsigned i)
{
	return vm_gpa_to_hva(vm, LSG_STATUS_GPA + LSG_VCPU_STATUS_OFF(i),
			     sizeof(struct lsg_vcpu_status));
}

static uint64_t writes_of(struct vm *vm, unsigned i)
{
	return __atomic_load_n(&vcpu_status(vm, i)->writes, __ATOMIC_RELAXED);
}

/* Waits until every vCPU's write counter is above min[i]. */
static void wait_writes_above(struct vm *vm, const uint64_t *min,
			      const char *what)
{
	for (int t = 0; t < TIMEOUT_S * 100; t++) {
		unsigned ok = 0;

		for (unsigned i = 0; i < NCPUS; i++)
			ok += writes_of(vm, i) > min[i];
		if (ok == NCPUS)
			return;
		if (vm_exit_reason(vm) != VM_EXIT_NONE)
			die(what, vm->exit_msg);
		usleep(10000);
	}
	die(what, "timed out");
}

static void boot(struct vm *vm)
{
	char err[VMM_ERR_MAX], cmdline[256];
	struct boot_image img = {
	    .kernel = guest_image_data(),
	    .kernel_size = guest_image_size(),
	    .kernel_name = "built-in guest",
	    .cmdline = cmdline,
	};

	if (!img.kernel_size)
		die("boot", "this build has no built-in guest");
	snprintf(cmdline, sizeof(cmdline),
		 "console=ttyS0 ls.cpus=%d ls.print_s=0 ls.tsc_khz=%u", NCPUS,
		 vm->tsc_khz);
	if (vm_setup_boot(vm, &img, err))
		die("vm_setup_boot", err);
	if (vm_start(vm, false, err))
		die("vm_start", err);
}

static bool same_seg(const struct x86_segment *a, const struct x86_segment *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static void compare_vcpu(const struct x86_cpu_state *a,
			 const struct x86_cpu_state *b)
{
	struct x86_events ea = a->events, eb = b->events;
	uint8_t la[X86_LAPIC_SIZE], lb[X86_LAPIC_SIZE];
	unsigned id = a->id;

	CHECK(a->id == b->id, "vCPU ids %u %u", a->id, b->id);
	CHECK(a->mp_state == b->mp_state, "vCPU %u: MP state %u -> %u", id,
	      a->mp_state, b->mp_state);
	CHECK(!memcmp(a->gpr, b->gpr, sizeof(a->gpr)) && a->rip == b->rip &&
		  a->rflags == b->rflags,
	      "vCPU %u: registers differ (rip %llx -> %llx)", id,
	      (unsigned long long)a->rip, (unsigned long long)b->rip);
	CHECK(same_seg(&a->cs, &b->cs) && same_seg(&a->ds, &b->ds) &&
		  same_seg(&a->es, &b->es) && same_seg(&a->fs, &b->fs) &&
		  same_seg(&a->gs, &b->gs) && same_seg(&a->ss, &b->ss) &&
		  same_seg(&a->tr, &b->tr) && same_seg(&a->ldt, &b->ldt),
	      "vCPU %u: segments differ", id);
	CHECK(!memcmp(&a->gdt, &b->gdt, sizeof(a->gdt)) &&
		  !memcmp(&a->idt, &b->idt, sizeof(a->idt)),
	      "vCPU %u: descriptor tables differ", id);
	CHECK(a->cr0 == b->cr0 && a->cr2 == b->cr2 && a->cr3 == b->cr3 &&
		  a->cr4 == b->cr4 && a->cr8 == b->cr8 && a->efer == b->efer &&
		  a->apic_base == b->apic_base,
	      "vCPU %u: control registers differ", id);
	CHECK(!memcmp(a->dr, b->dr, sizeof(a->dr)) && a->dr6 == b->dr6 &&
		  a->dr7 == b->dr7 && a->xcr0 == b->xcr0,
	      "vCPU %u: debug registers or XCR0 differ", id);
	CHECK(a->xsave_size == b->xsave_size && a->xsave_size >= 576 &&
		  !memcmp(a->xsave, b->xsave, 512 + 64),
	      "vCPU %u: XSAVE legacy area or header differs", id);
	/* The timer's current count is computed from the host clock. */
	memcpy(la, a->lapic, sizeof(la));
	memcpy(lb, b->lapic, sizeof(lb));
	memset(&la[APIC_TMCCT], 0, 4);
	memset(&lb[APIC_TMCCT], 0, 4);
	CHECK(!memcmp(la, lb, sizeof(la)), "vCPU %u: LAPIC differs", id);
	ea.flags = eb.flags = 0;
	CHECK(!memcmp(&ea, &eb, sizeof(ea)), "vCPU %u: events differ", id);
	CHECK(a->ncpuid == b->ncpuid &&
		  !memcmp(a->cpuid, b->cpuid, a->ncpuid * sizeof(a->cpuid[0])),
	      "vCPU %u: CPUID differs (%u -> %u entries)", id, a->ncpuid,
	      b->ncpuid);
	CHECK(a->nmsrs == b->nmsrs && a->nmsrs > 5, "vCPU %u: %u -> %u MSRs",
	      id, a->nmsrs, b->nmsrs);
	for (unsigned i = 0; i < a->nmsrs && i < b->nmsrs; i++) {
		const struct x86_msr *x = &a->msrs[i], *y = &b->msrs[i];

		CHECK(x->index == y->index, "vCPU %u: MSR order", id);
		if (x->index == X86_MSR_TSC)
			/* the TSC runs on */
			CHECK(y->data >= x->data, "vCPU %u: TSC went back", id);
		else
			CHECK(x->data == y->data,
			      "vCPU %u: MSR 0x%x %llx -> %llx", id, x->index,
			      (unsigned long long)x->data,
			      (unsigned long long)y->data);
	}
	CHECK(a->tsc_khz == b->tsc_khz, "vCPU %u: TSC kHz", id);
	CHECK(!strcmp(a->priv_backend, b->priv_backend) &&
		  a->priv_size == b->priv_size &&
		  !memcmp(a->priv, b->priv, a->priv_size),
	      "vCPU %u: backend-private state differs", id);
}

/* The KVM chips, where the VM is a KVM one (compared as KVM structs). */
static void compare_kvm_chips(const struct x86_vm_state *a,
			      const struct x86_vm_state *b)
{
	struct kvm_vm_chips ca, cb;

	CHECK(a->priv_size == sizeof(ca) && b->priv_size == sizeof(cb),
	      "KVM chip state of %u and %u bytes", a->priv_size, b->priv_size);
	if (a->priv_size != sizeof(ca) || b->priv_size != sizeof(cb))
		return;
	memcpy(&ca, a->priv, sizeof(ca));
	memcpy(&cb, b->priv, sizeof(cb));
	CHECK(!memcmp(&ca.pic_master, &cb.pic_master, sizeof(ca.pic_master)),
	      "PIC master differs");
	CHECK(!memcmp(&ca.pic_slave, &cb.pic_slave, sizeof(ca.pic_slave)),
	      "PIC slave differs");
	CHECK(!memcmp(&ca.ioapic, &cb.ioapic, sizeof(ca.ioapic)),
	      "IOAPIC differs");
	/* count_load_time is a host timestamp */
	for (int i = 0; i < 3; i++)
		ca.pit.channels[i].count_load_time =
		    cb.pit.channels[i].count_load_time = 0;
	CHECK(!memcmp(&ca.pit, &cb.pit, sizeof(ca.pit)), "PIT differs");
	CHECK(cb.clock.clock >= ca.clock.clock, "kvmclock went back");
}

static void compare_vm(const struct x86_vm_state *a,
		       const struct x86_vm_state *b)
{
	CHECK(!strcmp(a->backend, b->backend), "VM state of %s, then %s",
	      a->backend, b->backend);
	CHECK(a->irq_enabled == b->irq_enabled, "enabled IRQs %#x -> %#x",
	      a->irq_enabled, b->irq_enabled);
	if (!strcmp(a->backend, "kvm"))
		compare_kvm_chips(a, b);
	else
		CHECK(a->priv_size == 0 && b->priv_size == 0,
		      "%s VM state carries %u private bytes", a->backend,
		      a->priv_size);
}

static void compare(const struct machine_state *a,
		    const struct machine_state *b)
{
	CHECK(!memcmp(&a->serial, &b->serial, sizeof(a->serial)),
	      "serial state differs");
	CHECK(!memcmp(&a->i8042, &b->i8042, sizeof(a->i8042)),
	      "i8042 state differs");
	CHECK(!memcmp(&a->rtc, &b->rtc, sizeof(a->rtc)), "RTC state differs");
	CHECK(!memcmp(&a->sink, &b->sink, sizeof(a->sink)),
	      "sink state differs");
	for (unsigned i = 0; i < NCPUS; i++)
		compare_vcpu(&a->vcpus[i], &b->vcpus[i]);
	compare_vm(&a->vm, &b->vm);
}

/*
 * State from the other backend: what carries over is taken, what cannot
 * is refused with a reason naming it. Run on a fresh, never-started VM.
 */
static void test_cross_backend(const struct machine_state *saved)
{
	struct vm *vm = new_vm();
	struct x86_vm_state *vs = malloc(sizeof(*vs));
	struct x86_cpu_state *cs = aligned_alloc(64, sizeof(*cs));
	char err[VMM_ERR_MAX];

	if (!vs || !cs)
		die("malloc", "out of memory");
	if (accel == &accel_tcg_ops) {
		/* a KVM VM whose guest unmasked IRQ 4 (the UART) */
		x86_vm_state_init(vs, "kvm");
		vs->irq_enabled = 1u << 4;
		CHECK(accel->vm_set_state(vm, vs, false, err) == -ENOTSUP &&
			  strstr(err, "taken on kvm with guest interrupts "
				      "enabled (ISA IRQ mask 0x10)"),
		      "KVM state with IRQs enabled on tcg: %s", err);
		vs->irq_enabled = 0;
		CHECK(accel->vm_set_state(vm, vs, false, err) == 0,
		      "KVM state with every IRQ masked on tcg: %s", err);
		/* a vCPU caught in real mode (an AP in its trampoline) */
		memcpy(cs, &saved->vcpus[0], sizeof(*cs));
		cs->cr0 &= ~1ull;
		cs->efer = 0;
		CHECK(accel->vcpu_set_state(&vm->vcpus[0], cs, err) == -ENOTSUP &&
			  strstr(err, "outside 64-bit long mode"),
		      "real-mode vCPU state on tcg: %s", err);
		/* what a KVM vCPU may hold and an emulated one cannot */
		memcpy(cs, &saved->vcpus[0], sizeof(*cs));
		cs->events.nmi_pending = 1;
		CHECK(accel->vcpu_set_state(&vm->vcpus[0], cs, err) == -ENOTSUP &&
			  strstr(err, "an event pending"),
		      "pending NMI on tcg: %s", err);
		memcpy(cs, &saved->vcpus[0], sizeof(*cs));
		cs->xsave[X86_XSAVE_XSTATE_BV] |= 4; /* AVX in use */
		CHECK(accel->vcpu_set_state(&vm->vcpus[0], cs, err) == -ENOTSUP &&
			  strstr(err, "XSTATE_BV 0x7"),
		      "AVX state on tcg: %s", err);
		memcpy(cs, &saved->vcpus[0], sizeof(*cs));
		x86_cpu_state_set_msr(cs, 0x4b564d01, 0x12345001); /* kvmclock */
		CHECK(accel->vcpu_set_state(&vm->vcpus[0], cs, err) == -ENOTSUP &&
			  strstr(err, "paravirtual MSR 0x4b564d01"),
		      "kvmclock in use on tcg: %s", err);
	} else {
		struct x86_vm_state now;

		/* the emulated backend's state: KVM's chips stay masked */
		x86_vm_state_init(vs, "tcg");
		CHECK(accel->vm_set_state(vm, vs, false, err) == 0,
		      "tcg VM state on kvm: %s", err);
		CHECK(accel->vm_get_state(vm, &now, err) == 0 &&
			  now.irq_enabled == 0,
		      "IRQs enabled after a tcg VM state: %#x",
		      now.irq_enabled);
	}
	/* A state of another size or version is refused, not read. */
	memcpy(cs, &saved->vcpus[0], sizeof(*cs));
	cs->version = X86_CPU_STATE_VERSION + 1;
	CHECK(accel->vcpu_set_state(&vm->vcpus[0], cs, err) == -EINVAL &&
		  strstr(err, "bad magic, version"),
	      "vCPU state of another version: %s", err);
	free(vs);
	free(cs);
	vm_destroy(vm);
}

int main(void)
{
	size_t size = machine_state_size(NCPUS);
	struct machine_state *s1 = aligned_alloc(64, size);
	struct machine_state *s2 = aligned_alloc(64, size);
	uint64_t zero[NCPUS] = {0}, saved[NCPUS];
	char err[VMM_ERR_MAX];
	struct vm *vm1, *vm2;
	uint8_t *ram = malloc(MEM);

	if (!s1 || !s2 || !ram)
		die("malloc", "out of memory");
	accel = test_accel();
	vm1 = new_vm();
	boot(vm1);
	wait_writes_above(vm1, zero, "first VM's workload");
	if (vm_pause(vm1))
		die("vm_pause", "failed");
	if (machine_state_save(vm1, s1, err))
		die("machine_state_save", err);
	memcpy(ram, vm1->mem.host, MEM);
	for (unsigned i = 0; i < NCPUS; i++)
		saved[i] = writes_of(vm1, i);
	vm_destroy(vm1);

	vm2 = new_vm();
	memcpy(vm2->mem.host, ram, MEM);
	if (machine_state_restore(vm2, s1, false, err))
		die("machine_state_restore", err);
	if (machine_state_save(vm2, s2, err))
		die("machine_state_save after restore", err);
	compare(s1, s2);
	for (unsigned i = 0; accel == &accel_kvm_ops && i < NCPUS; i++) {
		uint64_t v = 0;

		/* MTRRs are not in KVM's index list but must be carried */
		CHECK(x86_cpu_state_msr(&s2->vcpus[i], 0x2ff, &v) == 0 &&
			      v == 0x806,
		      "vCPU %u: MTRRdefType %#llx, want the boot's 0x806", i,
		      (unsigned long long)v);
		CHECK(s2->vcpus[i].ncpuid > 0, "vCPU %u: no CPUID saved", i);
	}

	/* The restored guest runs on from the saved counters. */
	if (vm_start(vm2, false, err))
		die("vm_start of the restored VM", err);
	wait_writes_above(vm2, saved, "restored VM's workload");
	for (unsigned i = 0; i < NCPUS; i++) {
		volatile struct lsg_vcpu_status *v = vcpu_status(vm2, i);

		CHECK(v->errors == 0, "vCPU %u: %llu page errors after restore",
		      i, (unsigned long long)v->errors);
		CHECK(v->running == 1, "vCPU %u: workload not running", i);
		printf("vCPU %u: %llu writes at save, %llu now\n", i,
		       (unsigned long long)saved[i],
		       (unsigned long long)writes_of(vm2, i));
	}
	test_cross_backend(s1);
	/* A state from another VM shape is refused. */
	s1->ncpus = NCPUS + 1;
	CHECK(machine_state_restore(vm2, s1, false, err) == -EINVAL,
	      "a 3-vCPU state restored into a 2-vCPU VM");
	vm_destroy(vm2);
	free(s1);
	free(s2);
	free(ram);
	return check_report(accel == &accel_kvm_ops
				? "state round trip of 2 vCPUs (kvm)"
				: "state round trip of 2 vCPUs (tcg)");
}
