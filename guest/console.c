/* SPDX-License-Identifier: MIT */
/*
 * Console on the 8250 UART at COM1, driven by polling. Every port access
 * is a VM exit (~40 us under PVM), so lines are short, the FIFO is enabled
 * and the transmitter is polled once per 16 characters, not per character.
 * Also the two ways out: power off (i8042 reset) and the ring-0 exception
 * report.
 */
#include "guest.h"

#define COM1		 0x3f8
#define UART_FCR	 2
#define UART_LSR	 5
#define UART_LSR_THRE	 0x20
#define UART_FIFO	 16
#define FCR_ENABLE_CLEAR 0x07	/* enable FIFOs, clear RX and TX */
#define LSR_POLLS	 100000 /* a UART that never drains is ignored */
#define I8042_CMD	 0x64
#define I8042_RESET	 0xfe
#define LINE_MAX	 320

static volatile uint32_t console_lock;

void lsg_console_init(void)
{
	outb(COM1 + UART_FCR, FCR_ENABLE_CLEAR);
}

static void uart_write(const char *s, size_t n)
{
	size_t room = 0;

	while (n) {
		if (!room) {
			for (int i = 0; i < LSR_POLLS; i++)
				if (inb(COM1 + UART_LSR) & UART_LSR_THRE)
					break;
			room = UART_FIFO;
		}
		outb(COM1, (uint8_t)*s++);
		room--;
		n--;
	}
}

static size_t format_line(char *line, size_t size, const char *fmt, va_list ap)
{
	static const char prefix[] = "livesnap-guest: ";
	size_t len = sizeof(prefix) - 1;
	int n;

	memcpy(line, prefix, len);
	n = lsg_vsnprintf(line + len, size - len - 1, fmt, ap);
	len += (size_t)n < size - len - 1 ? (size_t)n : size - len - 2;
	line[len++] = '\n';
	return len;
}

/* One whole line; `locked`: under the console lock (not in ring 0, where
 * the faulting CPU may hold it). */
static void say_va(int locked, const char *fmt, va_list ap)
{
	char line[LINE_MAX];
	size_t len = format_line(line, sizeof(line), fmt, ap);

	while (locked &&
	       __atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
	uart_write(line, len);
	if (locked)
		__atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE);
}

void lsg_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say_va(1, fmt, ap);
	va_end(ap);
}

/*
 * i8042 reset, which VMMs (ours, Firecracker, QEMU -no-reboot) treat as
 * the end of the VM. Machines without an i8042 (QEMU microvm) get a triple
 * fault instead: ring 3 can write the IDT (it is user-accessible memory),
 * so it empties it and raises #UD, which then cannot be delivered.
 */
void lsg_power_off(void)
{
	extern uint8_t lsg_idt[];

	lsg_say("power off");
	outb(I8042_CMD, I8042_RESET);
	delay_cycles(10 * lsg_cfg.tsc_per_ms);
	memset(lsg_idt, 0, 256 * 16);
	barrier();
	for (;;)
		__asm__ volatile("ud2");
}

/* Ring 0 (emulated under PVM; rare). */
static void PRINTF(1, 2) say_unlocked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say_va(0, fmt, ap);
	va_end(ap);
}

void lsg_fault(const struct lsg_trap_frame *f, uint64_t cr2)
{
	/* The ring-0 stack sits inside the CPU's per-CPU area. */
	uint64_t cpu = ((uint64_t)f - LSG_PERCPU_GPA) >> LSG_PERCPU_SHIFT;

	say_unlocked("cpu %lu exception %lu err=0x%lx rip=0x%lx cr2=0x%lx "
		     "rsp=0x%lx cs=0x%lx rflags=0x%lx",
		     cpu, f->vector, f->error, f->rip, cr2, f->rsp, f->cs,
		     f->rflags);
	for (;;)
		__asm__ volatile("cli; hlt");
}
