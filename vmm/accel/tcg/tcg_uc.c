/* SPDX-License-Identifier: MIT */
/*
 * Unicorn, loaded at run time.
 *
 * libunicorn exports some 22 000 symbols; linked at build time, the
 * dynamic loader relocates all of them at every start of the binary,
 * about 10 ms, which every command paid (`livesnap --version`, `info`,
 * and a lazy restore's time to a running guest) whether it ran TCG or
 * not. So the binary does not link it: the TCG backend dlopen()s it on
 * a thread of its own as soon as TCG is chosen (tcg_uc_preload), while
 * the VMM maps RAM and reads the snapshot (a lazy restore's memory is
 * set up by then too), and waits for it only when it builds its first
 * engine (tcg_uc_ready).
 *
 * The functions below carry Unicorn's own names and prototypes (from
 * <unicorn/unicorn.h>), so the backend calls them as it would the
 * library; each forwards to the symbol resolved at load.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../../util.h"
#include "tcg.h"

/* Debian's libunicorn2 (2.0.x); the -dev package's soname. */
#define TCG_UC_SONAME "libunicorn.so.2"

/* Every Unicorn function the backend calls. */
#define TCG_UC_FUNCS(X)                                                      \
	X(uc_version)                                                        \
	X(uc_open)                                                           \
	X(uc_close)                                                          \
	X(uc_strerror)                                                       \
	X(uc_reg_read)                                                       \
	X(uc_reg_write)                                                      \
	X(uc_emu_start)                                                      \
	X(uc_emu_stop)                                                       \
	X(uc_hook_add)                                                       \
	X(uc_mem_map_ptr)                                                    \
	X(uc_mmio_map)                                                       \
	X(uc_context_alloc)                                                  \
	X(uc_context_save)                                                   \
	X(uc_context_restore)                                                \
	X(uc_context_free)

/* Process-wide like the library it stands for: one load per process. */
static struct {
	pthread_once_t start_once;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started, done;
	pthread_t thread;
	char err[VMM_ERR_MAX]; /* "" when loaded */
#define TCG_UC_PTR(f) __typeof__(f) *f;
	TCG_UC_FUNCS(TCG_UC_PTR)
#undef TCG_UC_PTR
} uc_lib = {
    .start_once = PTHREAD_ONCE_INIT,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

/* dlopen + dlsym of every function; the message on failure. */
static void uc_load(char *err)
{
	void *h = dlopen(TCG_UC_SONAME, RTLD_NOW | RTLD_LOCAL);
	const char *miss = NULL;

	if (!h) {
		snprintf(err, VMM_ERR_MAX,
			 "the tcg accelerator needs %s (Debian: apt-get "
			 "install libunicorn2): %s",
			 TCG_UC_SONAME, dlerror());
		return;
	}
#define TCG_UC_SYM(f)                                                        \
	if (!miss && !(uc_lib.f = (__typeof__(f) *)dlsym(h, #f)))            \
		miss = #f;
	TCG_UC_FUNCS(TCG_UC_SYM)
#undef TCG_UC_SYM
	if (miss) {
		snprintf(err, VMM_ERR_MAX, "%s has no %s: not Unicorn 2",
			 TCG_UC_SONAME, miss);
		return;
	}
	tcg_uc_store_init(h, uc_lib.uc_version(NULL, NULL));
	/* never dlclose(): engines may live until exit */
}

static void *uc_load_thread(void *arg)
{
	char err[VMM_ERR_MAX] = "";

	(void)arg;
	uc_load(err);
	pthread_mutex_lock(&uc_lib.lock);
	memcpy(uc_lib.err, err, sizeof(err));
	uc_lib.done = true;
	pthread_cond_broadcast(&uc_lib.cond);
	pthread_mutex_unlock(&uc_lib.lock);
	return NULL;
}

static void uc_start_load(void)
{
	int e = pthread_create(&uc_lib.thread, NULL, uc_load_thread, NULL);

	pthread_mutex_lock(&uc_lib.lock);
	if (e) { /* load on the caller's thread in tcg_uc_ready() */
		uc_lib.started = false;
	} else {
		uc_lib.started = true;
		pthread_detach(uc_lib.thread);
	}
	pthread_mutex_unlock(&uc_lib.lock);
}

void tcg_uc_preload(void)
{
	pthread_once(&uc_lib.start_once, uc_start_load);
}

int tcg_uc_ready(char *err)
{
	tcg_uc_preload();
	pthread_mutex_lock(&uc_lib.lock);
	if (!uc_lib.started && !uc_lib.done) {
		uc_load(uc_lib.err);
		uc_lib.done = true;
	}
	while (!uc_lib.done)
		pthread_cond_wait(&uc_lib.cond, &uc_lib.lock);
	pthread_mutex_unlock(&uc_lib.lock);
	if (uc_lib.err[0])
		return vmm_failx(err, ENOENT, "%s", uc_lib.err);
	return 0;
}

/*
 * The forwarders. uc_open waits for the load; the others need an engine
 * and so come after it.
 */
/* Every engine starts here: wait for the load (cheap once done). */
uc_err uc_open(uc_arch arch, uc_mode mode, uc_engine **uc)
{
	char err[VMM_ERR_MAX];

	if (tcg_uc_ready(err))
		return UC_ERR_HANDLE; /* tcg_engine_create said why */
	return uc_lib.uc_open(arch, mode, uc);
}

uc_err uc_close(uc_engine *uc)
{
	return uc_lib.uc_close(uc);
}

const char *uc_strerror(uc_err code)
{
	return uc_lib.uc_strerror ? uc_lib.uc_strerror(code)
				  : "Unicorn is not loaded";
}

uc_err uc_reg_read(uc_engine *uc, int regid, void *value)
{
	return uc_lib.uc_reg_read(uc, regid, value);
}

uc_err uc_reg_write(uc_engine *uc, int regid, const void *value)
{
	return uc_lib.uc_reg_write(uc, regid, value);
}

uc_err uc_emu_start(uc_engine *uc, uint64_t begin, uint64_t until,
		    uint64_t timeout, size_t count)
{
	return uc_lib.uc_emu_start(uc, begin, until, timeout, count);
}

uc_err uc_emu_stop(uc_engine *uc)
{
	return uc_lib.uc_emu_stop(uc);
}

/*
 * Unicorn reads one variadic int, the instruction, for UC_HOOK_INSN and
 * nothing for the hook types the backend uses otherwise
 * (UC_HOOK_TCG_OPCODE, which takes two more, is not used: refused).
 */
uc_err uc_hook_add(uc_engine *uc, uc_hook *hh, int type, void *callback,
		   void *user_data, uint64_t begin, uint64_t end, ...)
{
	va_list ap;
	int insn;

	if (type & UC_HOOK_TCG_OPCODE)
		return UC_ERR_ARG;
	if (!(type & UC_HOOK_INSN))
		return uc_lib.uc_hook_add(uc, hh, type, callback, user_data,
					  begin, end);
	va_start(ap, end);
	insn = va_arg(ap, int);
	va_end(ap);
	return uc_lib.uc_hook_add(uc, hh, type, callback, user_data, begin,
				  end, insn);
}

uc_err uc_mem_map_ptr(uc_engine *uc, uint64_t address, size_t size,
		      uint32_t perms, void *ptr)
{
	return uc_lib.uc_mem_map_ptr(uc, address, size, perms, ptr);
}

uc_err uc_mmio_map(uc_engine *uc, uint64_t address, size_t size,
		   uc_cb_mmio_read_t read_cb, void *user_data_read,
		   uc_cb_mmio_write_t write_cb, void *user_data_write)
{
	return uc_lib.uc_mmio_map(uc, address, size, read_cb, user_data_read,
				  write_cb, user_data_write);
}

uc_err uc_context_alloc(uc_engine *uc, uc_context **context)
{
	return uc_lib.uc_context_alloc(uc, context);
}

uc_err uc_context_save(uc_engine *uc, uc_context *context)
{
	return uc_lib.uc_context_save(uc, context);
}

uc_err uc_context_restore(uc_engine *uc, uc_context *context)
{
	return uc_lib.uc_context_restore(uc, context);
}

uc_err uc_context_free(uc_context *context)
{
	return uc_lib.uc_context_free(context);
}
