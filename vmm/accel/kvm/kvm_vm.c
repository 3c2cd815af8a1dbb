/* SPDX-License-Identifier: MIT */
/*
 * The KVM backend's VM: the VM fd, TSS and identity map, in-kernel
 * irqchip and PIT, guest RAM as two memory slots around the 32-bit hole,
 * interrupt lines; and the ops table (accel/accel.h).
 */
#include <stdlib.h>
#include <unistd.h>

#include "../../layout.h"
#include "../../vm.h"
#include "kvm.h"

static int set_slot(struct kvm_vm *k, uint32_t slot, uint64_t gpa,
		    uint64_t size, void *host, char *err)
{
	struct kvm_userspace_memory_region r = {
	    .slot = slot,
	    .flags = k->dirty_logging ? KVM_MEM_LOG_DIRTY_PAGES : 0,
	    .guest_phys_addr = gpa,
	    .memory_size = size,
	    .userspace_addr = (uint64_t)(uintptr_t)host,
	};
	int ret = kvm_ioctl(k->fd, KVM_SET_USER_MEMORY_REGION, &r);

	if (ret < 0)
		return vmm_fail(err, -ret,
				"ioctl(KVM_SET_USER_MEMORY_REGION) slot %u "
				"[0x%llx, +0x%llx)",
				slot, (unsigned long long)gpa,
				(unsigned long long)size);
	return 0;
}

/*
 * The parts of the VM that exist before any vCPU: TSS and identity map in
 * the hole, then the irqchip and PIT (both must precede KVM_CREATE_VCPU).
 */
static int create_shell(struct kvm_vm *k, char *err)
{
	uint64_t idmap = GPA_KVM_IDENTITY_MAP;
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	int ret;

	ret = kvm_ioctl(k->sys.fd, KVM_CREATE_VM, 0);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_CREATE_VM)");
	k->fd = ret;
	ret = kvm_ioctl(k->fd, KVM_SET_TSS_ADDR, (void *)GPA_KVM_TSS);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_TSS_ADDR)");
	if (kvm_check_cap(k->sys.fd, KVM_CAP_SET_IDENTITY_MAP_ADDR)) {
		ret = kvm_ioctl(k->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
		if (ret < 0)
			return vmm_fail(err, -ret,
					"ioctl(KVM_SET_IDENTITY_MAP_ADDR)");
	}
	ret = kvm_ioctl(k->fd, KVM_CREATE_IRQCHIP, 0);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_CREATE_IRQCHIP)");
	/* Speaker dummy: port 0x61 is handled in the kernel, never exits. */
	ret = kvm_ioctl(k->fd, KVM_CREATE_PIT2, &pit);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_CREATE_PIT2)");
	ret = kvm_check_cap(k->fd, KVM_CAP_XSAVE2);
	k->xsave_size = ret > (int)sizeof(struct kvm_xsave)
			    ? (uint32_t)ret
			    : (uint32_t)sizeof(struct kvm_xsave);
	return 0;
}

static void kvm_vm_fini(struct vm *vm)
{
	struct kvm_vm *k = KVM_VM(vm);

	if (!k)
		return;
	if (k->fd >= 0)
		close(k->fd);
	kvm_sys_close(&k->sys);
	free(k->state_msrs);
	pthread_mutex_destroy(&k->msr_lock);
	free(k);
	vm->accel_priv = NULL;
}

/* Guest RAM's slots, as they are now (logging or not). */
static int set_ram_slots(struct kvm_vm *k, const struct vm_mem *m, char *err)
{
	int ret = set_slot(k, SLOT_RAM_LOW, 0, m->low_size, m->host, err);

	if (!ret && m->high_size)
		ret = set_slot(k, SLOT_RAM_HIGH, GPA_4G, m->high_size,
			       m->host + m->low_size, err);
	return ret;
}

static int get_dirty_log(struct kvm_vm *k, uint32_t slot, uint64_t *bits,
			 char *err)
{
	struct kvm_dirty_log log = {.slot = slot, .dirty_bitmap = bits};
	int ret = kvm_ioctl(k->fd, KVM_GET_DIRTY_LOG, &log);

	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_DIRTY_LOG) slot %u",
				slot);
	return 0;
}

/*
 * KVM's dirty log of guest RAM. Without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
 * KVM_GET_DIRTY_LOG hands over the bits and write-protects those pages
 * again, so each call starts the next interval. The high slot's bits
 * follow the low slot's in host order (low_size is whole MiB: whole
 * 64-bit words).
 */
static int kvm_dirty_log(struct vm *vm, uint64_t *bits, uint64_t *words,
			 char *err)
{
	struct kvm_vm *k = KVM_VM(vm);
	const struct vm_mem *m = &vm->mem;
	int ret;

	if (!bits || !k->dirty_logging) {
		if (!bits == !k->dirty_logging)
			return 0;
		k->dirty_logging = bits != NULL;
		ret = set_ram_slots(k, m, err);
		if (ret)
			k->dirty_logging = !k->dirty_logging;
		return ret;
	}
	if (m->low_size % (64 * 4096))
		return vmm_failx(err, EINVAL,
				 "dirty log: RAM below the hole (%llu bytes) is not whole 256 KiB",
				 (unsigned long long)m->low_size);
	ret = get_dirty_log(k, SLOT_RAM_LOW, bits, err);
	if (!ret && m->high_size)
		ret = get_dirty_log(k, SLOT_RAM_HIGH,
				    bits + m->low_size / 4096 / 64, err);
	if (ret)
		return ret;
	accel_log_sum_all(words, m->size); /* KVM wrote every word */
	return 1;
}

static int kvm_vm_init(struct vm *vm, char *err)
{
	struct vm_mem *m = &vm->mem;
	struct kvm_vm *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return vmm_fail(err, ENOMEM, "KVM VM");
	k->fd = -1;
	k->sys.fd = -1;
	pthread_mutex_init(&k->msr_lock, NULL);
	vm->accel_priv = k;
	ret = kvm_sys_open(&k->sys, err);
	ret = ret ?: create_shell(k, err);
	ret = ret ?: set_ram_slots(k, m, err);
	ret = ret ?: kvm_kick_signal_init(err);
	vm->max_vcpus = k->sys.max_vcpus > 0 ? (unsigned)k->sys.max_vcpus : 1;
	if (vm->max_vcpus > MAX_VCPUS)
		vm->max_vcpus = MAX_VCPUS;
	return ret;
}

static void kvm_irq_line(struct vm *vm, unsigned irq, int level)
{
	struct kvm_vm *k = KVM_VM(vm);
	struct kvm_irq_level line = {.irq = irq, .level = (uint32_t)level};
	int ret = kvm_ioctl(k->fd, KVM_IRQ_LINE, &line);

	/* Reported once: a device cannot fail the guest's port write. */
	if (ret < 0 && !__atomic_exchange_n(&k->irq_errno, -ret,
					     __ATOMIC_RELAXED))
		fprintf(stderr, "livesnap: ioctl(KVM_IRQ_LINE %u): %s\n", irq,
			strerror(-ret));
}

static void kvm_notify_clock_paused(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		/* EINVAL: the guest has not enabled kvmclock; nothing to do */
		(void)kvm_ioctl(KVM_VCPU(&vm->vcpus[i])->fd, KVM_KVMCLOCK_CTRL,
				0);
}

static bool kvm_cpuid(struct vm *vm, uint32_t function, uint32_t index,
		      uint32_t regs[4])
{
	const struct kvm_cpuid2 *c = KVM_VM(vm)->sys.cpuid;

	for (unsigned i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == function &&
		    (e->index == index ||
		     !(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX))) {
			regs[0] = e->eax, regs[1] = e->ebx;
			regs[2] = e->ecx, regs[3] = e->edx;
			return true;
		}
	}
	return false;
}

const struct accel_ops accel_kvm_ops = {
    .name = "kvm",
    .caps = ACCEL_CAP_PARALLEL_VCPUS | ACCEL_CAP_SET_TSC | ACCEL_CAP_IRQCHIP |
	    ACCEL_CAP_LINUX,
    .vm_init = kvm_vm_init,
    .probe = kvm_sys_probe,
    .vm_fini = kvm_vm_fini,
    .vcpu_init = kvm_vcpu_init,
    .vcpu_fini = kvm_vcpu_fini,
    .vcpu_boot = kvm_vcpu_boot,
    .vcpu_run = kvm_vcpu_run,
    .vcpu_kick = kvm_vcpu_kick,
    .vcpu_complete = kvm_vcpu_complete,
    .vcpu_dump = kvm_vcpu_dump,
    .vcpu_get_state = kvm_get_state,
    .vcpu_set_state = kvm_set_state,
    .vm_get_state = kvm_vm_get_state,
    .vm_set_state = kvm_vm_set_state,
    .cpuid = kvm_cpuid,
    .irq_line = kvm_irq_line,
    .notify_clock_paused = kvm_notify_clock_paused,
    .dirty_log = kvm_dirty_log,
};
