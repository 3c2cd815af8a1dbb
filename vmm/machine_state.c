/* SPDX-License-Identifier: MIT */
/* The whole non-RAM state of a VM (see machine_state.h for the orders). */
#include "machine_state.h"
#include "vm.h"

size_t machine_state_size(unsigned ncpus)
{
	return sizeof(struct machine_state) +
	       (size_t)ncpus * sizeof(struct x86_cpu_state);
}

int machine_state_save(struct vm *vm, struct machine_state *st, char *err)
{
	int ret = 0;

	memset(st, 0, sizeof(*st));
	st->magic = MACHINE_STATE_MAGIC;
	st->version = MACHINE_STATE_VERSION;
	st->size = machine_state_size(vm->ncpus);
	st->ncpus = vm->ncpus;
	st->mem_bytes = vm->mem.size;
	serial_save(&vm->serial, &st->serial);
	i8042_save(&vm->i8042, &st->i8042);
	rtc_save(&vm->rtc, &st->rtc);
	pio_sink_save(&vm->sink, &st->sink);
	for (unsigned i = 0; !ret && i < vm->ncpus; i++)
		ret = vm->accel->vcpu_get_state(&vm->vcpus[i], &st->vcpus[i],
						err);
	return ret ?: vm->accel->vm_get_state(vm, &st->vm, err);
}

int machine_state_restore(struct vm *vm, const struct machine_state *st,
			  bool advance_clock, char *err)
{
	int ret = 0;

	if (st->magic != MACHINE_STATE_MAGIC ||
	    st->version != MACHINE_STATE_VERSION)
		return vmm_failx(err, EINVAL,
				 "machine state: bad magic or version %u",
				 st->version);
	if (st->ncpus != vm->ncpus || st->mem_bytes != vm->mem.size ||
	    st->size != machine_state_size(st->ncpus))
		return vmm_failx(err, EINVAL,
				 "machine state of %u vCPUs and %llu bytes of "
				 "RAM, this VM has %u and %llu",
				 st->ncpus, (unsigned long long)st->mem_bytes,
				 vm->ncpus, (unsigned long long)vm->mem.size);
	for (unsigned i = 0; !ret && i < vm->ncpus; i++)
		ret = vm->accel->vcpu_set_state(&vm->vcpus[i], &st->vcpus[i],
						err);
	ret = ret ?: vm->accel->vm_set_state(vm, &st->vm, advance_clock, err);
	ret = ret ?: serial_restore(&vm->serial, &st->serial, err);
	ret = ret ?: i8042_restore(&vm->i8042, &st->i8042, err);
	ret = ret ?: rtc_restore(&vm->rtc, &st->rtc, err);
	ret = ret ?: pio_sink_restore(&vm->sink, &st->sink, err);
	return ret;
}
