/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM, vCPUs, devices and run control; the accelerator behind
 * vm->accel does the rest.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layout.h"
#include "vm.h"

#define HUGE_2M (2ull << 20)

const char *mem_backend_name(enum mem_backend b)
{
	switch (b) {
	case MEM_ANON:
		return "anon";
	case MEM_MEMFD:
		return "memfd";
	default:
		return "hugetlb";
	}
}

/*
 * Reserves len bytes of address space aligned to 2 MiB, so that THP (anon)
 * and huge pages line up with guest-physical 2 MiB boundaries.
 */
static void *reserve_aligned(size_t len)
{
	size_t span = len + HUGE_2M;
	uint8_t *p = mmap(NULL, span, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + HUGE_2M - 1) & ~(HUGE_2M - 1));
	if (a > p)
		munmap(p, a - p);
	if (p + span > a + len)
		munmap(a + len, p + span - (a + len));
	return a;
}

static int mem_map_anon(struct vm_mem *m, void *at, char *err)
{
	void *p = mmap(at, m->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
		       -1, 0);

	if (p == MAP_FAILED)
		return vmm_fail(err, errno, "mmap of %llu bytes of guest RAM",
				(unsigned long long)m->size);
	m->host = p;
	/* Best effort: THP may be disabled system-wide ("never"). */
	if (madvise(p, m->size, MADV_HUGEPAGE) < 0 && errno != EINVAL)
		return vmm_fail(err, errno, "madvise(MADV_HUGEPAGE) on RAM");
	return 0;
}

static int mem_map_memfd(struct vm_mem *m, void *at, bool huge, char *err)
{
	unsigned flags = MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0);
	void *p;

	m->fd = memfd_create("livesnap-ram", flags);
	if (m->fd < 0)
		return vmm_fail(err, errno, "memfd_create(%s)",
				huge ? "MFD_HUGETLB" : "0");
	if (ftruncate(m->fd, (off_t)m->size) < 0)
		return vmm_fail(err, errno,
				"ftruncate of the RAM memfd to %llu",
				(unsigned long long)m->size);
	p = mmap(at, m->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 m->fd, 0);
	if (p == MAP_FAILED) {
		if (huge && errno == ENOMEM)
			return vmm_failx(err, ENOMEM,
					 "mmap of %llu MiB of hugetlb RAM: not "
					 "enough free 2 MiB huge pages (see "
					 "/proc/sys/vm/nr_hugepages)",
					 (unsigned long long)(m->size >> 20));
		return vmm_fail(err, errno, "mmap of the RAM memfd");
	}
	m->host = p;
	return 0;
}

static int mem_alloc(struct vm_mem *m, uint64_t size, enum mem_backend b,
		     char *err)
{
	void *at;
	int ret;

	*m = (struct vm_mem){
	    .fd = -1, .backend = b, .size = size, .page_size = 4096};
	if (b == MEM_HUGETLB) {
		if (size % HUGE_2M)
			return vmm_failx(err, EINVAL,
					 "--mem-backend hugetlb needs a size "
					 "that is a multiple of 2 MiB");
		m->page_size = HUGE_2M;
	}
	m->low_size = size < GPA_HOLE_START ? size : GPA_HOLE_START;
	m->high_size = size - m->low_size;
	at = reserve_aligned(size);
	if (!at)
		return vmm_fail(err, errno,
				"reserving %llu bytes for guest RAM",
				(unsigned long long)size);
	if (b == MEM_ANON)
		ret = mem_map_anon(m, at, err);
	else
		ret = mem_map_memfd(m, at, b == MEM_HUGETLB, err);
	if (ret) {
		munmap(at, size);
		m->host = NULL;
		if (m->fd >= 0)
			close(m->fd);
		m->fd = -1;
	}
	return ret;
}

/*
 * --mem-prealloc: every page of guest RAM allocated (and zeroed) now, so
 * that the guest's first touch of a page costs no host page fault: on a
 * nested host that is milliseconds per 2 MiB, a vCPU that cannot stop
 * meanwhile.
 */
static int mem_prealloc(struct vm_mem *m, char *err)
{
	if (madvise(m->host, m->size, MADV_POPULATE_WRITE) < 0)
		return vmm_fail(err, errno,
				"--mem-prealloc: madvise(MADV_POPULATE_WRITE) "
				"of %llu MiB of guest RAM",
				(unsigned long long)(m->size >> 20));
	return 0;
}

static void mem_free(struct vm_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->fd >= 0)
		close(m->fd);
	m->host = NULL;
	m->fd = -1;
}

void *vm_gpa_to_hva(struct vm *vm, uint64_t gpa, uint64_t len)
{
	struct vm_mem *m = &vm->mem;

	if (gpa + len < gpa)
		return NULL;
	if (gpa + len <= m->low_size)
		return m->host + gpa;
	if (gpa >= GPA_4G && gpa - GPA_4G + len <= m->high_size)
		return m->host + m->low_size + (gpa - GPA_4G);
	return NULL;
}

static void vm_device_reset(void *opaque, const char *why)
{
	vm_request_exit(opaque, VM_EXIT_GUEST_RESET, 0,
			"guest reset via %s: powering off", why);
}

static int vm_create_devices(struct vm *vm, const struct vm_config *cfg,
			     char *err)
{
	struct pio_bus *b = &vm->bus;
	int ret;

	serial_init(&vm->serial, vm_set_irq, vm, 4, cfg->console_fd);
	i8042_init(&vm->i8042, vm_device_reset, vm);
	rtc_init(&vm->rtc, vm->mem.low_size, vm->mem.high_size);
	pio_sink_init(&vm->sink, vm_device_reset, vm);
	b->fallback = pio_sink_io;
	b->fallback_opaque = &vm->sink;
	ret = pio_bus_add(b, "serial", 0x3f8, 8, serial_io, &vm->serial);
	ret = ret ?: pio_bus_add(b, "i8042", 0x60, 1, i8042_io, &vm->i8042);
	ret = ret ?: pio_bus_add(b, "i8042", 0x64, 1, i8042_io, &vm->i8042);
	ret = ret ?: pio_bus_add(b, "rtc", 0x70, 2, rtc_io, &vm->rtc);
	if (ret)
		return vmm_failx(err, -ret, "port I/O bus full");
	return 0;
}

static int vm_init_sync(struct vm *vm, char *err)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&vm->lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	/* Timed waits on it (restore.c) use CLOCK_MONOTONIC deadlines. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->exit_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->exit_efd < 0)
		return vmm_fail(err, errno, "eventfd");
	return 0;
}

static int vm_create_vcpus(struct vm *vm, char *err)
{
	int ret;

	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return vmm_fail(err, ENOMEM, "vCPU array");
	for (unsigned i = 0; i < vm->ncpus; i++) {
		vm->vcpus[i].vm = vm;
		vm->vcpus[i].id = i;
		ret = vm->accel->vcpu_init(&vm->vcpus[i], err);
		if (ret)
			return ret;
	}
	return 0;
}

uint32_t vm_boot_tsc_khz(struct vm *vm)
{
	if (!vm->tsc_khz && vm->accel->measure_tsc_khz)
		vm->tsc_khz = vm->accel->measure_tsc_khz(vm);
	return vm->tsc_khz;
}

void vm_set_irq(void *opaque, unsigned irq, int level)
{
	struct vm *vm = opaque;

	vm->accel->irq_line(vm, irq, level);
}

int vm_create(struct vm **vmp, const struct vm_config *cfg, char *err)
{
	struct vm *vm;
	int ret;

	*vmp = NULL;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return vmm_fail(err, ENOMEM, "struct vm");
	vm->exit_efd = -1;
	vm->mem.fd = -1;
	vm->ncpus = cfg->ncpus;
	vm->accel = cfg->accel ? cfg->accel : &accel_tcg_ops;
	ret = vm_init_sync(vm, err);
	ret = ret ?: mem_alloc(&vm->mem, cfg->mem_bytes, cfg->backend, err);
	if (!ret && cfg->prealloc)
		ret = mem_prealloc(&vm->mem, err);
	ret = ret ?: vm->accel->vm_init(vm, err);
	if (!ret && cfg->ncpus > vm->max_vcpus)
		ret = vmm_failx(err, EINVAL,
				"%u vCPUs requested, the %s accelerator "
				"allows at most %u",
				cfg->ncpus, vm->accel->name, vm->max_vcpus);
	ret = ret ?: vm_create_vcpus(vm, err);
	ret = ret ?: vm_create_devices(vm, cfg, err);
	if (ret) {
		vm_destroy(vm);
		return ret;
	}
	*vmp = vm;
	return 0;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	vm_stop_threads(vm);
	for (unsigned i = 0; vm->vcpus && i < vm->ncpus; i++)
		if (vm->vcpus[i].vm)
			vm->accel->vcpu_fini(&vm->vcpus[i]);
	free(vm->vcpus);
	if (vm->bus.fallback) {
		serial_destroy(&vm->serial);
		i8042_destroy(&vm->i8042);
		rtc_destroy(&vm->rtc);
	}
	if (vm->accel_priv)
		vm->accel->vm_fini(vm);
	mem_free(&vm->mem);
	if (vm->exit_efd >= 0)
		close(vm->exit_efd);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->pause_lock);
	free(vm);
}

/* QEMU's thread names ("CPU 0/KVM", "CPU 1/TCG"), which tools look for. */
static void vcpu_name_thread(struct vcpu *v)
{
	char name[16];
	size_t i;

	snprintf(name, sizeof(name), "CPU %u/%s", v->id, v->vm->accel->name);
	for (i = 0; name[i]; i++)
		if (name[i] >= 'a' && name[i] <= 'z')
			name[i] = (char)(name[i] - 'a' + 'A');
	pthread_setname_np(v->thread, name);
}

int vm_start(struct vm *vm, bool paused, char *err)
{
	int ret;

	if (paused) {
		pthread_mutex_lock(&vm->pause_lock);
		vm->pause_depth = 1;
		vm->pause_begin_ns = vmm_now_ns();
		__atomic_store_n(&vm->pause_req, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&vm->pause_lock);
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		pthread_mutex_lock(&vm->lock);
		vm->live_threads++;
		pthread_mutex_unlock(&vm->lock);
		ret = pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (ret) {
			pthread_mutex_lock(&vm->lock);
			vm->live_threads--;
			pthread_mutex_unlock(&vm->lock);
			return vmm_fail(err, ret, "pthread_create(vCPU %u)", i);
		}
		vcpu_name_thread(v);
		__atomic_store_n(&v->thread_started, true, __ATOMIC_RELEASE);
	}
	if (paused) {
		pthread_mutex_lock(&vm->lock);
		while (vm->parked < vm->live_threads)
			pthread_cond_wait(&vm->cond, &vm->lock);
		pthread_mutex_unlock(&vm->lock);
	}
	return 0;
}

static void kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
}

int vm_pause(struct vm *vm)
{
	uint64_t t0 = vmm_now_ns();

	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_depth++) {
		pthread_mutex_unlock(&vm->pause_lock);
		return 0;
	}
	vm->pause_begin_ns = t0;
	__atomic_store_n(&vm->pause_req, 1, __ATOMIC_SEQ_CST);
	kick_all(vm);
	pthread_mutex_lock(&vm->lock);
	while (vm->parked < vm->live_threads)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->pstats.last_stop_ns = vmm_now_ns() - t0;
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

int vm_resume(struct vm *vm)
{
	uint64_t total;

	pthread_mutex_lock(&vm->pause_lock);
	if (!vm->pause_depth) {
		pthread_mutex_unlock(&vm->pause_lock);
		return -EINVAL;
	}
	if (--vm->pause_depth) {
		pthread_mutex_unlock(&vm->pause_lock);
		return 0;
	}
	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&vm->pause_req, 0, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&vm->cond);
	total = vmm_now_ns() - vm->pause_begin_ns;
	vm->pstats.pauses++;
	vm->pstats.last_total_ns = total;
	if (total > vm->pstats.max_total_ns)
		vm->pstats.max_total_ns = total;
	pthread_mutex_unlock(&vm->lock);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

void vm_notify_clock_paused(struct vm *vm)
{
	if (vm->accel->notify_clock_paused)
		vm->accel->notify_clock_paused(vm);
}

bool vm_is_paused(struct vm *vm)
{
	bool p;

	pthread_mutex_lock(&vm->pause_lock);
	p = vm->pause_depth > 0;
	pthread_mutex_unlock(&vm->pause_lock);
	return p;
}

void vm_pause_stats(struct vm *vm, struct vm_pause_stats *st)
{
	pthread_mutex_lock(&vm->lock);
	*st = vm->pstats;
	pthread_mutex_unlock(&vm->lock);
}

void vm_request_exit(struct vm *vm, enum vm_exit_reason reason, int status,
		     const char *fmt, ...)
{
	int none = VM_EXIT_NONE;
	uint64_t one = 1;
	va_list ap;

	pthread_mutex_lock(&vm->lock);
	if (!__atomic_compare_exchange_n(&vm->exit_reason, &none, (int)reason,
					 false, __ATOMIC_SEQ_CST,
					 __ATOMIC_SEQ_CST)) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	vm->exit_status = status;
	va_start(ap, fmt);
	vsnprintf(vm->exit_msg, sizeof(vm->exit_msg), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
	if (write(vm->exit_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		fprintf(stderr, "livesnap: eventfd write: %s\n",
			strerror(errno));
}

int vm_exit_fd(struct vm *vm)
{
	return vm->exit_efd;
}

enum vm_exit_reason vm_exit_reason(struct vm *vm)
{
	return __atomic_load_n(&vm->exit_reason, __ATOMIC_SEQ_CST);
}

void vm_stop_threads(struct vm *vm)
{
	if (!vm->vcpus)
		return;
	__atomic_store_n(&vm->stopping, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&vm->lock);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		if (!__atomic_load_n(&v->thread_started, __ATOMIC_ACQUIRE))
			continue;
		pthread_join(v->thread, NULL);
		__atomic_store_n(&v->thread_started, false, __ATOMIC_RELEASE);
	}
}
