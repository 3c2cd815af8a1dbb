/* SPDX-License-Identifier: MIT */
/* Choosing the accelerator: --accel kvm|tcg|auto, as QEMU's -accel. */
#include <stdio.h>
#include <string.h>

#include "../util.h"
#include "accel.h"

int accel_kvm_usable(char *why)
{
	char err[VMM_ERR_MAX] = "";
	int ret = accel_kvm_ops.probe(err);

	if (why)
		snprintf(why, VMM_ERR_MAX, "%s", err);
	return ret; /* probe's contract: 0 or -errno */
}

accel_dirty_log_fn *accel_dirty_log(const struct accel_ops *ops,
				    struct vm *vm)
{
	if (!ops->dirty_log ||
	    (ops->dirty_log_ready && !ops->dirty_log_ready(vm)))
		return NULL;
	return ops->dirty_log;
}

void accel_log_sum_all(uint64_t *words, uint64_t ram)
{
	uint64_t n = accel_log_words(ram), s = accel_log_sum_words(ram);

	memset(words, 0xff, s * 8);
	if (n % 64)
		words[s - 1] = (1ull << (n % 64)) - 1;
}

static int select_backend(const char *name, const struct accel_ops **ops,
			  char *why, char *err)
{
	char kvm_err[VMM_ERR_MAX];

	why[0] = 0;
	if (!strcmp(name, "kvm")) {
		*ops = &accel_kvm_ops;
		return 0;
	}
	if (!strcmp(name, "tcg")) {
		*ops = &accel_tcg_ops;
		return 0;
	}
	if (strcmp(name, "auto"))
		return vmm_failx(err, EINVAL,
				 "--accel %s: unknown accelerator (kvm, tcg "
				 "or auto)",
				 name);
	if (!accel_kvm_usable(kvm_err)) {
		*ops = &accel_kvm_ops;
		snprintf(why, VMM_ERR_MAX, "accelerator kvm (/dev/kvm usable)");
	} else {
		*ops = &accel_tcg_ops;
		snprintf(why, VMM_ERR_MAX,
			 "accelerator tcg (emulated vCPUs): KVM not usable: %.*s",
			 VMM_ERR_MAX - 64, kvm_err);
	}
	return 0;
}

int accel_select(const char *name, const struct accel_ops **ops, char *why,
		 char *err)
{
	int e = select_backend(name, ops, why, err);

	if (!e && (*ops)->preload)
		(*ops)->preload();
	return e;
}
