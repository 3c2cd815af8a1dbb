/* SPDX-License-Identifier: MIT */
/* VM-wide KVM state (see vm_state.h). */
#include "vm.h"
#include "vm_state.h"

static int get_chip(struct vm *vm, struct kvm_irqchip *c, uint32_t id,
		    char *err)
{
	int ret;

	memset(c, 0, sizeof(*c));
	c->chip_id = id;
	ret = kvm_ioctl(vm->fd, KVM_GET_IRQCHIP, c);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_IRQCHIP %u)", id);
	return 0;
}

static int set_chip(struct vm *vm, const struct kvm_irqchip *c, uint32_t id,
		    char *err)
{
	int ret;

	if (c->chip_id != id)
		return vmm_failx(err, EINVAL,
				 "VM state: irqchip %u saved as chip %u", id,
				 c->chip_id);
	ret = kvm_ioctl(vm->fd, KVM_SET_IRQCHIP, (void *)c);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_IRQCHIP %u)", id);
	return 0;
}

int vm_state_save(struct vm *vm, struct vm_state *st, char *err)
{
	int ret;

	memset(st, 0, sizeof(*st));
	st->magic = VM_STATE_MAGIC;
	st->version = VM_STATE_VERSION;
	st->size = sizeof(*st);
	ret = kvm_ioctl(vm->fd, KVM_GET_PIT2, &st->pit);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_PIT2)");
	ret = kvm_ioctl(vm->fd, KVM_GET_CLOCK, &st->clock);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_CLOCK)");
	ret = get_chip(vm, &st->pic_master, KVM_IRQCHIP_PIC_MASTER, err);
	ret = ret ?: get_chip(vm, &st->pic_slave, KVM_IRQCHIP_PIC_SLAVE, err);
	ret = ret ?: get_chip(vm, &st->ioapic, KVM_IRQCHIP_IOAPIC, err);
	return ret;
}

int vm_state_restore(struct vm *vm, const struct vm_state *st,
		     bool advance_clock, char *err)
{
	struct kvm_clock_data clock;
	int ret;

	if (st->magic != VM_STATE_MAGIC || st->version != VM_STATE_VERSION ||
	    st->size != sizeof(*st))
		return vmm_failx(err, EINVAL,
				 "VM state: bad magic, version %u or size %u",
				 st->version, st->size);
	ret = kvm_ioctl(vm->fd, KVM_SET_PIT2, (void *)&st->pit);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_PIT2)");
	/*
	 * KVM_SET_CLOCK honours only KVM_CLOCK_REALTIME (with the saved
	 * realtime) among the flags GET_CLOCK reports.
	 */
	clock = st->clock;
	clock.flags = (advance_clock && (st->clock.flags & KVM_CLOCK_REALTIME))
			  ? KVM_CLOCK_REALTIME
			  : 0;
	ret = kvm_ioctl(vm->fd, KVM_SET_CLOCK, &clock);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_CLOCK)");
	ret = set_chip(vm, &st->pic_master, KVM_IRQCHIP_PIC_MASTER, err);
	ret = ret ?: set_chip(vm, &st->pic_slave, KVM_IRQCHIP_PIC_SLAVE, err);
	ret = ret ?: set_chip(vm, &st->ioapic, KVM_IRQCHIP_IOAPIC, err);
	return ret;
}
