/* SPDX-License-Identifier: MIT */
/*
 * TCG scheduling: vCPUs run one at a time (Unicorn engines are not atomic
 * against each other), holding an execution token handed round robin. A
 * ticker thread ends a turn TCG_SLICE_NS after it began when another vCPU
 * waits; kicks (pause, exit) set a sticky flag and a stop request that
 * the vCPU's block hook obeys (tcg_engine.c).
 */
#include "../../vm.h"
#include "tcg.h"

/* Hands the token to the next waiting vCPU after `id`, round robin. */
void tcg_token_release(struct vm *vm, unsigned id)
{
	struct tcg_vm *t = TCG_VM(vm);

	for (unsigned k = 1; k <= vm->ncpus; k++) {
		unsigned j = (id + k) % vm->ncpus;

		if (TCG_VCPU(&vm->vcpus[j])->want_token) {
			t->holder = j;
			t->turn_start_ns = vmm_now_ns();
			pthread_cond_broadcast(&t->cond);
			return;
		}
	}
	t->holder = TCG_NO_HOLDER;
}

/* With t->lock held: false if kicked while waiting (token not held). */
bool tcg_token_acquire(struct vcpu *vcpu)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	struct tcg_vcpu *v = TCG_VCPU(vcpu);

	if (t->holder == TCG_NO_HOLDER) {
		t->holder = vcpu->id;
		t->turn_start_ns = vmm_now_ns();
	} else {
		v->want_token = true;
		t->waiting++;
		pthread_cond_broadcast(&t->cond); /* the ticker times the turn */
		while (t->holder != vcpu->id && !v->kick)
			pthread_cond_wait(&t->cond, &t->lock);
		v->want_token = false;
		t->waiting--;
	}
	if (t->holder != vcpu->id)
		return false;
	if (v->kick) {
		tcg_token_release(vcpu->vm, vcpu->id);
		return false;
	}
	return true;
}

void tcg_vcpu_kick(struct vcpu *vcpu)
{
	struct tcg_vm *t = TCG_VM(vcpu->vm);
	struct tcg_vcpu *v = TCG_VCPU(vcpu);

	if (!t || !v)
		return;
	pthread_mutex_lock(&t->lock);
	v->kick = true;
	__atomic_store_n(&v->stop_req, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

/* Waits on t->cond (t->lock held) until `ns` on CLOCK_MONOTONIC. */
static void wait_until_ns(struct tcg_vm *t, uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
			      .tv_nsec = (long)(ns % 1000000000ull)};

	pthread_cond_timedwait(&t->cond, &t->lock, &ts);
}

/*
 * Ends the holder's turn TCG_SLICE_NS after it began when another vCPU
 * waits for one. Sleeps on t->cond otherwise (token_acquire() wakes it),
 * so a lone vCPU is never disturbed.
 */
static void *ticker(void *arg)
{
	struct vm *vm = arg;
	struct tcg_vm *t = TCG_VM(vm);

	pthread_mutex_lock(&t->lock);
	while (!t->ticker_stop) {
		uint64_t end = t->turn_start_ns + TCG_SLICE_NS;

		if (t->holder == TCG_NO_HOLDER || !t->waiting) {
			pthread_cond_wait(&t->cond, &t->lock);
		} else if (vmm_now_ns() < end) {
			wait_until_ns(t, end);
		} else {
			__atomic_store_n(&TCG_VCPU(&vm->vcpus[t->holder])->stop_req,
					 true, __ATOMIC_RELEASE);
			/* until the turn passes (or a tick, if it is slow) */
			wait_until_ns(t, vmm_now_ns() + TCG_TICK_NS);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int tcg_ticker_start(struct vm *vm, char *err)
{
	struct tcg_vm *t = TCG_VM(vm);
	int ret = pthread_create(&t->ticker, NULL, ticker, vm);

	if (ret)
		return vmm_fail(err, ret, "pthread_create(tcg ticker)");
	pthread_setname_np(t->ticker, "tcg-ticker");
	t->ticker_started = true;
	return 0;
}

void tcg_ticker_stop(struct vm *vm)
{
	struct tcg_vm *t = TCG_VM(vm);

	if (!t->ticker_started)
		return;
	pthread_mutex_lock(&t->lock);
	t->ticker_stop = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->ticker, NULL);
	t->ticker_started = false;
}

