/* SPDX-License-Identifier: MIT */
/* Choosing the accelerator: --accel kvm|tcg|auto, as QEMU's -accel. */
#include <fcntl.h>
#include <unistd.h>

#include "../util.h"
#include "accel.h"

int accel_kvm_usable(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

accel_dirty_log_fn *accel_dirty_log(const struct accel_ops *ops,
				    struct vm *vm)
{
	if (!ops->dirty_log ||
	    (ops->dirty_log_ready && !ops->dirty_log_ready(vm)))
		return NULL;
	return ops->dirty_log;
}

static int select_backend(const char *name, const struct accel_ops **ops,
			  char *why, char *err)
{
	int kvm;

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
	kvm = accel_kvm_usable();
	if (!kvm) {
		*ops = &accel_kvm_ops;
		snprintf(why, VMM_ERR_MAX, "accelerator kvm (/dev/kvm usable)");
	} else {
		*ops = &accel_tcg_ops;
		snprintf(why, VMM_ERR_MAX,
			 "accelerator tcg (emulated vCPUs): /dev/kvm: %s",
			 strerror(-kvm));
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
