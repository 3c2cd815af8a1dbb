/* SPDX-License-Identifier: MIT */
/*
 * One vCPU's KVM state, read and written in the orders KVM needs
 * (kvm-notes 2.4, Firecracker's):
 *
 * Save: MP_STATE first (it makes KVM accept pending INIT/SIPI, which can
 * change the rest), REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, TSC_KHZ,
 * CPUID, MSRs, VCPU_EVENTS last.
 *
 * Restore: TSC_KHZ (if the host differs by more than 250 ppm), CPUID,
 * MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC, MSRs with the TSC
 * before TSC_DEADLINE, VCPU_EVENTS, then KVM_KVMCLOCK_CTRL.
 *
 * The state travels as the backend-neutral x86_cpu_state (kvm_convert.c).
 */
#include <stdlib.h>

#include "../../vm.h"
#include "kvm.h"

#define MSR_CHUNK		   64 /* KVM takes < 256 MSRs a call */
#define APIC_LVTT		   0x320
#define APIC_LVT_TIMER_TSCDEADLINE (2u << 17)
#define APIC_LVT_TIMER_MODE_MASK   (3u << 17)

static int vcpu_get(struct vcpu *vcpu, unsigned long req, void *arg,
		    const char *name, char *err)
{
	int ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, req, arg);

	if (ret < 0)
		return vmm_fail(err, -ret, "ioctl(%s) on vCPU %u", name,
				vcpu->id);
	return 0;
}

#define VCPU_IOCTL(v, req, arg, err) vcpu_get(v, req, arg, #req, err)

/*
 * The MSRs a snapshot carries: KVM's index list filtered by the
 * allow-list, minus those this vCPU refuses to read (KVM_GET_MSRS stops at
 * the first failure and returns how many it read). Built once per VM,
 * after CPUID is set, since KVM derives readable MSRs from it.
 */
static bool msr_listed(const uint32_t *list, unsigned n, uint32_t index)
{
	for (unsigned i = 0; i < n; i++)
		if (list[i] == index)
			return true;
	return false;
}

static int build_msr_list(struct vcpu *vcpu, char *err)
{
	struct kvm_vm *vm = KVM_VM(vcpu->vm);
	const struct kvm_msr_list *all = vm->sys.msrs;
	struct kvm_msrs *m;
	const uint32_t *extra;
	unsigned nextra = kvm_msr_unlisted(&extra);
	uint32_t *list;
	unsigned n = 0;
	int ret = 0;

	list = calloc(all->nmsrs + nextra, sizeof(*list));
	m = calloc(1, sizeof(*m) + sizeof(m->entries[0]));
	if (!list || !m) {
		free(list);
		free(m);
		return vmm_fail(err, ENOMEM, "MSR list");
	}
	for (unsigned i = 0; i < all->nmsrs; i++)
		if (kvm_msr_is_serializable(all->indices[i]))
			list[n++] = all->indices[i];
	for (unsigned i = 0; i < nextra; i++)
		if (!msr_listed(list, n, extra[i]))
			list[n++] = extra[i];
	for (unsigned i = 0; i < n;) {
		m->nmsrs = 1;
		m->entries[0] = (struct kvm_msr_entry){.index = list[i]};
		ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_GET_MSRS, m);
		if (ret < 0)
			break;
		if (ret == 1) {
			i++;
			continue;
		}
		/* unreadable here: drop it */
		memmove(&list[i], &list[i + 1], (n - i - 1) * sizeof(*list));
		n--;
	}
	free(m);
	if (ret < 0) {
		free(list);
		return vmm_fail(err, -ret, "ioctl(KVM_GET_MSRS) on vCPU %u",
				vcpu->id);
	}
	if (n > X86_MAX_MSRS) {
		free(list);
		return vmm_failx(err, E2BIG, "%u MSRs to save, room for %d", n,
				 X86_MAX_MSRS);
	}
	vm->state_msrs = list;
	vm->n_state_msrs = n;
	return 0;
}

static int state_msr_list(struct vcpu *vcpu, char *err)
{
	struct kvm_vm *vm = KVM_VM(vcpu->vm);
	int ret = 0;

	pthread_mutex_lock(&vm->msr_lock);
	if (!vm->state_msrs)
		ret = build_msr_list(vcpu, err);
	pthread_mutex_unlock(&vm->msr_lock);
	return ret;
}

/* GET or SET of entries[0..n), in chunks; every entry must go through. */
static int msrs_io(struct vcpu *vcpu, struct kvm_msr_entry *e, unsigned n,
		   bool set, char *err)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entries[MSR_CHUNK];
	} m;

	for (unsigned done = 0; done < n;) {
		unsigned k = n - done < MSR_CHUNK ? n - done : MSR_CHUNK;
		int ret;

		memset(&m.hdr, 0, sizeof(m.hdr));
		m.hdr.nmsrs = k;
		memcpy(m.entries, e + done, k * sizeof(*e));
		ret =
		    kvm_ioctl(KVM_VCPU(vcpu)->fd, set ? KVM_SET_MSRS : KVM_GET_MSRS, &m);
		if (ret < 0)
			return vmm_fail(err, -ret, "ioctl(%s) on vCPU %u",
					set ? "KVM_SET_MSRS" : "KVM_GET_MSRS",
					vcpu->id);
		if ((unsigned)ret != k)
			return vmm_failx(
			    err, EIO,
			    "vCPU %u: KVM %s MSR 0x%x (%u of %u "
			    "done)",
			    vcpu->id, set ? "refused to set" : "could not read",
			    m.entries[ret].index, done + ret, n);
		if (!set)
			memcpy(e + done, m.entries, k * sizeof(*e));
		done += k;
	}
	return 0;
}

static int snapshot_msr(const struct kvm_vcpu_snapshot *st, uint32_t index,
			uint64_t *value)
{
	for (uint32_t i = 0; i < st->nmsrs && i < X86_MAX_MSRS; i++) {
		if (st->msrs[i].index == index) {
			*value = st->msrs[i].data;
			return 0;
		}
	}
	return -ENOENT;
}

/*
 * A TSC deadline of 0 can be read while its timer interrupt was not yet
 * delivered; restored as 0 the timer never fires and the vCPU never ticks
 * again (Firecracker's finding). Any deadline already in the past fires at
 * once, so the current TSC stands in for the lost one.
 */
static void fix_zero_tsc_deadline(struct kvm_vcpu_snapshot *st)
{
	uint32_t lvtt;
	uint64_t tsc;

	memcpy(&lvtt, &st->lapic.regs[APIC_LVTT], sizeof(lvtt));
	if ((lvtt & APIC_LVT_TIMER_MODE_MASK) != APIC_LVT_TIMER_TSCDEADLINE ||
	    snapshot_msr(st, X86_MSR_TSC, &tsc))
		return;
	for (uint32_t i = 0; i < st->nmsrs; i++)
		if (st->msrs[i].index == X86_MSR_TSC_DEADLINE &&
		    st->msrs[i].data == 0)
			st->msrs[i].data = tsc;
}

static int save_xsave(struct vcpu *vcpu, struct kvm_vcpu_snapshot *st, char *err)
{
	uint32_t size = KVM_VM(vcpu->vm)->xsave_size;
	bool xsave2 = size > sizeof(struct kvm_xsave) ||
		      kvm_check_cap(KVM_VM(vcpu->vm)->fd, KVM_CAP_XSAVE2);

	if (size > X86_XSAVE_MAX)
		return vmm_failx(err, E2BIG,
				 "XSAVE area of %u bytes, room for %d", size,
				 X86_XSAVE_MAX);
	st->xsave_size = size;
	if (xsave2)
		return VCPU_IOCTL(vcpu, KVM_GET_XSAVE2, st->xsave, err);
	return VCPU_IOCTL(vcpu, KVM_GET_XSAVE, st->xsave, err);
}

static int save_cpuid(struct vcpu *vcpu, struct kvm_vcpu_snapshot *st, char *err)
{
	struct {
		struct kvm_cpuid2 hdr;
		struct kvm_cpuid_entry2 e[X86_MAX_CPUID];
	} *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return vmm_fail(err, ENOMEM, "CPUID buffer");
	c->hdr.nent = X86_MAX_CPUID;
	ret = VCPU_IOCTL(vcpu, KVM_GET_CPUID2, &c->hdr, err);
	if (!ret) {
		unsigned n = c->hdr.nent;

		/* Trailing all-zero entries are padding, not leaves. */
		while (n && !c->e[n - 1].function && !c->e[n - 1].eax &&
		       !c->e[n - 1].ebx && !c->e[n - 1].ecx && !c->e[n - 1].edx)
			n--;
		st->ncpuid = n;
		memcpy(st->cpuid, c->e, n * sizeof(c->e[0]));
	}
	free(c);
	return ret;
}

static int save_msrs(struct vcpu *vcpu, struct kvm_vcpu_snapshot *st, char *err)
{
	struct kvm_vm *vm = KVM_VM(vcpu->vm);
	int ret = state_msr_list(vcpu, err);

	if (ret)
		return ret;
	st->nmsrs = vm->n_state_msrs;
	for (unsigned i = 0; i < st->nmsrs; i++)
		st->msrs[i] =
		    (struct kvm_msr_entry){.index = vm->state_msrs[i]};
	ret = msrs_io(vcpu, st->msrs, st->nmsrs, false, err);
	if (!ret)
		fix_zero_tsc_deadline(st);
	return ret;
}

int kvm_vcpu_save(struct vcpu *vcpu, struct kvm_vcpu_snapshot *st, char *err)
{
	int ret;

	memset(st, 0, sizeof(*st));
	/* First: accepting pending INIT/SIPI may change everything else. */
	ret = VCPU_IOCTL(vcpu, KVM_GET_MP_STATE, &st->mp_state, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_REGS, &st->regs, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_SREGS, &st->sregs, err);
	ret = ret ?: save_xsave(vcpu, st, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_XCRS, &st->xcrs, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_DEBUGREGS, &st->debugregs, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_LAPIC, &st->lapic, err);
	if (ret)
		return ret;
	ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_GET_TSC_KHZ, 0);
	if (ret <= 0)
		return vmm_fail(err, ret ? -ret : EINVAL,
				"ioctl(KVM_GET_TSC_KHZ) on vCPU %u", vcpu->id);
	st->tsc_khz = (uint32_t)ret;
	ret = save_cpuid(vcpu, st, err);
	ret = ret ?: save_msrs(vcpu, st, err);
	/* Last: pending exceptions/interrupts/NMIs as of everything above. */
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_GET_VCPU_EVENTS, &st->events, err);
	return ret;
}

static int check_state(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
		       char *err)
{
	if (st->xsave_size > KVM_VM(vcpu->vm)->xsave_size)
		return vmm_failx(err, EINVAL,
				 "vCPU %u state: XSAVE area of %u bytes, this "
				 "host has %u",
				 vcpu->id, st->xsave_size,
				 KVM_VM(vcpu->vm)->xsave_size);
	return 0;
}

/* Scale the guest TSC only if the host's differs by more than 250 ppm. */
static int restore_tsc_khz(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
			   char *err)
{
	uint64_t host = vcpu->vm->tsc_khz;

	if (!st->tsc_khz)
		return 0; /* saved by a backend that does not know it */
	uint64_t diff =
	    host > st->tsc_khz ? host - st->tsc_khz : st->tsc_khz - host;
	int ret;

	if (diff * 1000000 <= host * 250)
		return 0;
	ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_SET_TSC_KHZ,
			(void *)(uintptr_t)st->tsc_khz);
	if (ret < 0)
		return vmm_fail(err, -ret,
				"vCPU %u: TSC of %u kHz saved, host runs at "
				"%llu kHz and KVM_SET_TSC_KHZ failed",
				vcpu->id, st->tsc_khz,
				(unsigned long long)host);
	return 0;
}

static int restore_cpuid(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
			 char *err)
{
	struct kvm_cpuid2 *c =
	    calloc(1, sizeof(*c) + st->ncpuid * sizeof(c->entries[0]));
	int ret;

	if (!c)
		return vmm_fail(err, ENOMEM, "CPUID buffer");
	c->nent = st->ncpuid;
	memcpy(c->entries, st->cpuid, st->ncpuid * sizeof(c->entries[0]));
	ret = VCPU_IOCTL(vcpu, KVM_SET_CPUID2, c, err);
	free(c);
	return ret;
}

/* Every MSR but the TSC deadline, then the deadline alone (after TSC). */
static int restore_msrs(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
			char *err)
{
	struct kvm_msr_entry e[X86_MAX_MSRS];
	struct kvm_msr_entry deadline;
	unsigned n = 0;
	bool have_deadline = false;
	int ret;

	for (uint32_t i = 0; i < st->nmsrs; i++) {
		if (st->msrs[i].index == X86_MSR_TSC_DEADLINE) {
			deadline = st->msrs[i];
			have_deadline = true;
		} else {
			e[n++] = st->msrs[i];
		}
	}
	ret = msrs_io(vcpu, e, n, true, err);
	if (!ret && have_deadline)
		ret = msrs_io(vcpu, &deadline, 1, true, err);
	return ret;
}

static int restore_xsave(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
			 char *err)
{
	uint8_t *buf = aligned_alloc(64, X86_XSAVE_MAX);
	int ret;

	if (!buf)
		return vmm_fail(err, ENOMEM, "XSAVE buffer");
	/* KVM_SET_XSAVE reads the host's full XSAVE size. */
	memset(buf, 0, X86_XSAVE_MAX);
	memcpy(buf, st->xsave, st->xsave_size);
	ret = VCPU_IOCTL(vcpu, KVM_SET_XSAVE, buf, err);
	free(buf);
	return ret;
}

static int restore_events(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
			  char *err)
{
	struct kvm_vcpu_events ev = st->events;

	/* GET does not flag these, but the saved values are the truth. */
	ev.flags |=
	    KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	return VCPU_IOCTL(vcpu, KVM_SET_VCPU_EVENTS, &ev, err);
}

int kvm_vcpu_load(struct vcpu *vcpu, const struct kvm_vcpu_snapshot *st,
		  char *err)
{
	int ret = check_state(vcpu, st, err);

	ret = ret ?: restore_tsc_khz(vcpu, st, err);
	/*
	 * CPUID first: it decides which MSRs and XSAVE features exist. A
	 * state without CPUID (saved by another backend) gets the boot one.
	 */
	if (st->ncpuid)
		ret = ret ?: restore_cpuid(vcpu, st, err);
	else
		ret = ret ?: kvm_cpuid_setup_vcpu(vcpu, err);
	ret = ret
		  ?: VCPU_IOCTL(vcpu, KVM_SET_MP_STATE, (void *)&st->mp_state,
				err);
	/* REGS before EVENTS: SET_REGS clears pending exceptions. */
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_SET_REGS, (void *)&st->regs, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_SET_SREGS, (void *)&st->sregs, err);
	ret = ret ?: restore_xsave(vcpu, st, err);
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_SET_XCRS, (void *)&st->xcrs, err);
	ret = ret
		  ?: VCPU_IOCTL(vcpu, KVM_SET_DEBUGREGS, (void *)&st->debugregs,
				err);
	/* LAPIC before MSRs, or the TSC deadline does not stick. */
	ret = ret ?: VCPU_IOCTL(vcpu, KVM_SET_LAPIC, (void *)&st->lapic, err);
	ret = ret ?: restore_msrs(vcpu, st, err);
	ret = ret ?: restore_events(vcpu, st, err);
	if (ret)
		return ret;
	/* Tell a kvmclock guest it was stopped (EINVAL: it has none). */
	ret = kvm_ioctl(KVM_VCPU(vcpu)->fd, KVM_KVMCLOCK_CTRL, 0);
	if (ret < 0 && ret != -EINVAL)
		return vmm_fail(
		    err, -ret, "ioctl(KVM_KVMCLOCK_CTRL) on vCPU %u", vcpu->id);
	return 0;
}

int kvm_get_state(struct vcpu *vcpu, struct x86_cpu_state *st, char *err)
{
	struct kvm_vcpu_snapshot *k = aligned_alloc(64, sizeof(*k));
	int ret;

	if (!k)
		return vmm_fail(err, ENOMEM, "vCPU state buffer");
	ret = kvm_vcpu_save(vcpu, k, err);
	if (!ret) {
		x86_cpu_state_init(st, vcpu->id);
		kvm_snapshot_to_x86(k, st);
	}
	free(k);
	return ret;
}

int kvm_set_state(struct vcpu *vcpu, const struct x86_cpu_state *st,
		  char *err)
{
	struct kvm_vcpu_snapshot *k = aligned_alloc(64, sizeof(*k));
	int ret;

	if (!k)
		return vmm_fail(err, ENOMEM, "vCPU state buffer");
	ret = x86_cpu_state_check(st, vcpu->id, err);
	ret = ret ?: kvm_snapshot_from_x86(st, k, err);
	ret = ret ?: kvm_vcpu_load(vcpu, k, err);
	free(k);
	return ret;
}
