/* SPDX-License-Identifier: MIT */
/*
 * VM-wide KVM state: the in-kernel PIT, kvmclock and the irqchip (PIC
 * master, PIC slave, IOAPIC). It travels in x86_vm_state's private part,
 * tagged "kvm": the chips are KVM's own, in KVM's structs. Memory slots,
 * TSS and PIT flags are re-created by vm_init itself.
 */
#include "../../vm.h"
#include "kvm.h"

_Static_assert(sizeof(struct kvm_vm_chips) <= X86_VM_PRIV_MAX,
	       "KVM chip state does not fit x86_vm_state.priv");

static int get_chip(struct kvm_vm *k, struct kvm_irqchip *c, uint32_t id,
		    char *err)
{
	int ret;

	memset(c, 0, sizeof(*c));
	c->chip_id = id;
	ret = kvm_ioctl(k->fd, KVM_GET_IRQCHIP, c);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_IRQCHIP %u)", id);
	return 0;
}

static int set_chip(struct kvm_vm *k, const struct kvm_irqchip *c,
		    uint32_t id, char *err)
{
	int ret;

	if (c->chip_id != id)
		return vmm_failx(err, EINVAL,
				 "VM state: irqchip %u saved as chip %u", id,
				 c->chip_id);
	ret = kvm_ioctl(k->fd, KVM_SET_IRQCHIP, (void *)c);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_IRQCHIP %u)", id);
	return 0;
}

/* ISA IRQs the guest could receive: unmasked at the PICs or the IOAPIC. */
static uint32_t enabled_irqs(const struct kvm_vm_chips *c)
{
	uint8_t imr0 = c->pic_master.chip.pic.imr;
	uint8_t imr1 = c->pic_slave.chip.pic.imr;
	uint32_t m = 0;

	for (unsigned i = 0; i < 8; i++) {
		if (i != 2 && !(imr0 & (1u << i)))
			m |= 1u << i;
		if (!(imr0 & 4) && !(imr1 & (1u << i)))
			m |= 1u << (8 + i); /* the slave cascades on IRQ 2 */
	}
	for (unsigned pin = 0; pin < KVM_IOAPIC_NUM_PINS && pin < 32; pin++)
		if (!c->ioapic.chip.ioapic.redirtbl[pin].fields.mask)
			m |= 1u << pin;
	return m;
}

int kvm_vm_get_state(struct vm *vm, struct x86_vm_state *st, char *err)
{
	struct kvm_vm *k = KVM_VM(vm);
	struct kvm_vm_chips c;
	int ret;

	memset(&c, 0, sizeof(c));
	x86_vm_state_init(st, "kvm");
	ret = kvm_ioctl(k->fd, KVM_GET_PIT2, &c.pit);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_PIT2)");
	ret = kvm_ioctl(k->fd, KVM_GET_CLOCK, &c.clock);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_GET_CLOCK)");
	ret = get_chip(k, &c.pic_master, KVM_IRQCHIP_PIC_MASTER, err);
	ret = ret ?: get_chip(k, &c.pic_slave, KVM_IRQCHIP_PIC_SLAVE, err);
	ret = ret ?: get_chip(k, &c.ioapic, KVM_IRQCHIP_IOAPIC, err);
	if (ret)
		return ret;
	st->guest_ns = c.clock.clock;
	st->irq_enabled = enabled_irqs(&c);
	st->priv_size = sizeof(c);
	memcpy(st->priv, &c, sizeof(c));
	return 0;
}

/*
 * A state saved by another backend carries no KVM chips: the VM keeps the
 * chips KVM_CREATE_IRQCHIP/PIT2 made (reset state), with both PICs masked
 * as the emulated backend has no interrupt delivery to carry over.
 */
static int set_foreign_state(struct kvm_vm *k, const struct x86_vm_state *st,
			     char *err)
{
	struct kvm_irqchip c;
	int ret;

	for (uint32_t id = KVM_IRQCHIP_PIC_MASTER; id <= KVM_IRQCHIP_PIC_SLAVE;
	     id++) {
		ret = get_chip(k, &c, id, err);
		if (ret)
			return ret;
		c.chip.pic.imr = 0xff;
		ret = set_chip(k, &c, id, err);
		if (ret)
			return ret;
	}
	(void)st;
	return 0;
}

/*
 * PIT2, then the clock, then PIC master, PIC slave, IOAPIC. With
 * advance_clock, kvmclock moves on by the wall time elapsed since the save
 * (KVM_CLOCK_REALTIME); otherwise guest time resumes where it stopped.
 */
int kvm_vm_set_state(struct vm *vm, const struct x86_vm_state *st,
		     bool advance_clock, char *err)
{
	struct kvm_vm *k = KVM_VM(vm);
	struct kvm_vm_chips c;
	struct kvm_clock_data clock;
	int ret = x86_vm_state_check(st, err);

	if (ret)
		return ret;
	if (strcmp(st->backend, "kvm"))
		return set_foreign_state(k, st, err);
	if (st->priv_size != sizeof(c))
		return vmm_failx(err, EINVAL,
				 "VM state: KVM chip state of %u bytes, this "
				 "build has %zu",
				 st->priv_size, sizeof(c));
	memcpy(&c, st->priv, sizeof(c));
	ret = kvm_ioctl(k->fd, KVM_SET_PIT2, &c.pit);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_PIT2)");
	/*
	 * KVM_SET_CLOCK honours only KVM_CLOCK_REALTIME (with the saved
	 * realtime) among the flags GET_CLOCK reports.
	 */
	clock = c.clock;
	clock.flags = (advance_clock && (c.clock.flags & KVM_CLOCK_REALTIME))
			  ? KVM_CLOCK_REALTIME
			  : 0;
	ret = kvm_ioctl(k->fd, KVM_SET_CLOCK, &clock);
	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(KVM_SET_CLOCK)");
	ret = set_chip(k, &c.pic_master, KVM_IRQCHIP_PIC_MASTER, err);
	ret = ret ?: set_chip(k, &c.pic_slave, KVM_IRQCHIP_PIC_SLAVE, err);
	ret = ret ?: set_chip(k, &c.ioapic, KVM_IRQCHIP_IOAPIC, err);
	return ret;
}
