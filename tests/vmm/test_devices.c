/* SPDX-License-Identifier: MIT */
/*
 * Description: the legacy devices register by register, through the same
 * port bus the vCPUs use (a real VM supplies the irqchip for the UART's
 * interrupt line): 8250 reset values, DLAB, FIFO bits, loopback, RX FIFO,
 * interrupt identification, output; i8042 probe answers and the reset
 * line; CMOS time and registers; the sink; state save/restore with bad
 * headers refused; the e820 map and the bzImage checks.
 */
#include <asm/bootparam.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "boot.h"
#include "check.h"
#include "vm.h"

static struct vm *vm;

static uint8_t in8(uint16_t port)
{
	uint8_t v = 0;

	pio_bus_dispatch(&vm->bus, port, &v, 1, false);
	return v;
}

static void out8(uint16_t port, uint8_t v)
{
	pio_bus_dispatch(&vm->bus, port, &v, 1, true);
}

#define COM1 0x3f8

static void test_serial_registers(void)
{
	CHECK(in8(COM1 + 2) == 0x01, "IIR after reset: %#x", in8(COM1 + 2));
	CHECK(in8(COM1 + 5) == 0x60, "LSR after reset: %#x", in8(COM1 + 5));
	CHECK(in8(COM1 + 6) == 0xb0, "MSR after reset: %#x", in8(COM1 + 6));
	CHECK(in8(COM1 + 4) == 0x08, "MCR after reset");
	CHECK(in8(COM1 + 3) == 0x03, "LCR after reset");
	/* DLAB switches offsets 0 and 1 to the divisor latch */
	out8(COM1 + 1, 0x05);
	out8(COM1 + 3, 0x83);
	out8(COM1 + 0, 0x01);
	out8(COM1 + 1, 0x02);
	CHECK(in8(COM1 + 0) == 0x01 && in8(COM1 + 1) == 0x02, "DLL/DLM");
	out8(COM1 + 3, 0x03);
	CHECK(in8(COM1 + 1) == 0x05, "IER kept under DLAB: %#x", in8(COM1 + 1));
	out8(COM1 + 1, 0xff);
	CHECK(in8(COM1 + 1) == 0x0f, "IER masked to 0x0f");
	out8(COM1 + 1, 0);
	/* a 16550A: IIR shows FIFO bits once FCR enables the FIFO */
	out8(COM1 + 2, 0x01);
	CHECK((in8(COM1 + 2) & 0xc0) == 0xc0, "IIR FIFO bits");
	out8(COM1 + 7, 0x5a);
	CHECK(in8(COM1 + 7) == 0x5a, "scratch register");
}

static void test_serial_loopback_and_irq(void)
{
	/* loopback: modem outputs read back as inputs (Linux's probe) */
	out8(COM1 + 4, 0x10 | 0x0a); /* LOOP | OUT2 | RTS */
	CHECK((in8(COM1 + 6) & 0xf0) == 0x90, "loopback MSR: %#x",
	      in8(COM1 + 6));
	out8(COM1 + 0, 'x');
	out8(COM1 + 0, 'y');
	CHECK(in8(COM1 + 5) & 0x01, "DR after a looped-back byte");
	out8(COM1 + 1, 0x01); /* RDI */
	CHECK((in8(COM1 + 2) & 0x0f) == 0x04, "IIR RDI: %#x", in8(COM1 + 2));
	CHECK(vm->serial.irq_level == 1, "IRQ raised for RDI");
	CHECK(in8(COM1 + 0) == 'x' && in8(COM1 + 0) == 'y', "RX FIFO order");
	CHECK(!(in8(COM1 + 5) & 0x01), "DR clear once drained");
	CHECK((in8(COM1 + 2) & 0x0f) == 0x01, "no interrupt when drained");
	CHECK(vm->serial.irq_level == 0, "IRQ lowered");
	out8(COM1 + 1, 0x02); /* THRI: THR is always empty */
	CHECK((in8(COM1 + 2) & 0x0f) == 0x02, "IIR THRI");
	out8(COM1 + 1, 0);
	out8(COM1 + 4, 0x08);
	/* FIFO: 64 bytes, then overrun */
	uint8_t buf[80];

	memset(buf, 'a', sizeof(buf));
	CHECK(serial_rx_push(&vm->serial, buf, sizeof(buf)) == 64,
	      "RX FIFO takes 64 bytes");
	out8(COM1 + 2, 0x03); /* clear RX */
	CHECK(!(in8(COM1 + 5) & 0x01), "FCR clears the RX FIFO");
}

static void test_serial_output_and_state(int rd)
{
	struct serial_state st, bad;
	char err[VMM_ERR_MAX], got[8] = {0};

	out8(COM1 + 0, 'o');
	out8(COM1 + 0, 'k');
	CHECK(read(rd, got, sizeof(got)) == 2 && !strcmp(got, "ok"),
	      "console output '%s'", got);
	serial_rx_push(&vm->serial, (const uint8_t *)"hi", 2);
	out8(COM1 + 1, 0x01);
	serial_save(&vm->serial, &st);
	CHECK(st.rx_count == 2 && st.rx[0] == 'h' && st.irq_level == 1,
	      "saved FIFO and level");
	out8(COM1 + 2, 0x03);
	out8(COM1 + 1, 0);
	CHECK(serial_restore(&vm->serial, &st, err) == 0, "restore: %s", err);
	CHECK(in8(COM1 + 1) == 0x01 && vm->serial.irq_level == 1,
	      "IER and IRQ restored");
	CHECK(in8(COM1 + 0) == 'h' && in8(COM1 + 0) == 'i', "FIFO restored");
	out8(COM1 + 1, 0);
	bad = st;
	bad.hdr.version = 2;
	CHECK(serial_restore(&vm->serial, &bad, err) == -EINVAL &&
		  strstr(err, "version 2"),
	      "wrong version refused: %s", err);
	bad = st;
	bad.rx_count = 65;
	CHECK(serial_restore(&vm->serial, &bad, err) == -EINVAL,
	      "rx_count 65 refused");
}

static void test_rtc(void)
{
	uint8_t sec, a, b;

	out8(0x70, 0x0a);
	a = in8(0x71);
	CHECK(!(a & 0x80), "register A shows no update in progress");
	out8(0x70, 0x8d); /* NMI-mask bit ignored */
	CHECK(in8(0x71) == 0x80, "register D: valid RAM and time");
	out8(0x70, 0x00);
	sec = in8(0x71);
	CHECK((sec & 0x0f) <= 9 && (sec >> 4) <= 5, "BCD seconds %#x", sec);
	out8(0x70, 0x0b);
	b = in8(0x71);
	out8(0x71, b | 0x04); /* binary */
	out8(0x70, 0x04);
	CHECK(in8(0x71) < 24, "binary hours");
	out8(0x70, 0x0b);
	out8(0x71, b);
	out8(0x70, 0x15);
	CHECK(in8(0x71) == (640 & 0xff), "base memory KiB");
	out8(0x70, 0x40);
	out8(0x71, 0x77);
	CHECK(in8(0x71) == 0x77, "CMOS memory");
}

static bool exit_ready(void)
{
	struct pollfd p = {.fd = vm_exit_fd(vm), .events = POLLIN};

	return poll(&p, 1, 0) == 1;
}

static void test_i8042_and_sink(void)
{
	CHECK((in8(0x64) & 0x01) == 0, "i8042 output buffer empty");
	out8(0x64, 0xaa);
	CHECK((in8(0x64) & 0x01) && in8(0x60) == 0x55, "self test 0x55");
	CHECK(!(in8(0x64) & 0x01), "data read empties the buffer");
	out8(0x64, 0x20);
	CHECK(in8(0x60) == 0x61, "command byte");
	CHECK(in8(0x2f8) == 0xff && in8(0x378) == 0xff,
	      "absent ports read 0xff");
	uint8_t d[4];

	pio_bus_dispatch(&vm->bus, 0xcfc, d, 4, false);
	CHECK(!memcmp(d, "\xff\xff\xff\xff", 4), "PCI conf1 absent");
	CHECK(in8(0x92) == 0x02, "port 0x92: A20 on");
	CHECK(!exit_ready() && vm_exit_reason(vm) == VM_EXIT_NONE,
	      "nothing asked the VM to end yet");
	out8(0x64, 0xfe);
	CHECK(exit_ready() && vm_exit_reason(vm) == VM_EXIT_GUEST_RESET &&
		  vm->exit_status == 0 && strstr(vm->exit_msg, "0xfe"),
	      "0xfe on port 0x64 powers off: %s", vm->exit_msg);
}

static void test_e820(void)
{
	struct boot_e820 m[BOOT_E820_MAX];
	unsigned n = boot_e820_map(vm, m);

	CHECK(n == 4, "4 entries below 3 GiB");
	CHECK(m[0].addr == 0 && m[0].size == 0x9fc00 && m[0].type == 1,
	      "low RAM");
	CHECK(m[1].addr == 0x9fc00 && m[1].addr + m[1].size == 0x100000 &&
		  m[1].type == 2,
	      "EBDA/BIOS reserved");
	CHECK(m[2].addr == 0x100000 && m[2].addr + m[2].size == 64 << 20,
	      "RAM from 1 MiB");
	CHECK(m[3].addr == 0xfec00000 && m[3].addr + m[3].size == 1ull << 32,
	      "hole reserved");
}

static void test_bzimage_checks(void)
{
	uint8_t *img = calloc(1, 8192);
	struct setup_header *h = (struct setup_header *)(img + 0x1f1);
	char err[VMM_ERR_MAX];

	h->setup_sects = 1;
	h->boot_flag = 0xaa55;
	h->header = 0x53726448;
	h->version = 0x20c;
	h->loadflags = LOADED_HIGH;
	h->xloadflags = XLF_KERNEL_64;
	CHECK(boot_check_bzimage(img, 8192, "k", err) == 0, "valid: %s", err);
	h->version = 0x20b;
	CHECK(boot_check_bzimage(img, 8192, "k", err) == -EINVAL &&
		  strstr(err, "2.11"),
	      "old protocol: %s", err);
	h->version = 0x20c;
	h->xloadflags = 0;
	CHECK(boot_check_bzimage(img, 8192, "k", err) == -EINVAL &&
		  strstr(err, "XLF_KERNEL_64"),
	      "no 64-bit entry: %s", err);
	h->xloadflags = XLF_KERNEL_64;
	h->setup_sects = 200;
	CHECK(boot_check_bzimage(img, 8192, "k", err) == -EINVAL &&
		  strstr(err, "truncated"),
	      "setup beyond the file: %s", err);
	h->setup_sects = 1;
	h->boot_flag = 0;
	CHECK(boot_check_bzimage(img, 8192, "k", err) == -EINVAL &&
		  strstr(err, "not a bzImage"),
	      "no boot flag: %s", err);
	CHECK(boot_check_bzimage(img, 100, "k", err) == -EINVAL, "too short");
	free(img);
}

int main(void)
{
	int pipefd[2];
	char err[VMM_ERR_MAX];
	struct vm_config cfg = {.ncpus = 1, .mem_bytes = 64 << 20};

	if (pipe2(pipefd, O_NONBLOCK) < 0)
		return 1;
	cfg.console_fd = pipefd[1];
	cfg.accel = test_accel();
	if (vm_create(&vm, &cfg, err)) {
		fprintf(stderr, "FAIL: vm_create: %s\n", err);
		return 1;
	}
	test_serial_registers();
	test_serial_loopback_and_irq();
	test_serial_output_and_state(pipefd[0]);
	test_rtc();
	test_e820();
	test_bzimage_checks();
	test_i8042_and_sink(); /* last: ends the VM */
	vm_destroy(vm);
	return check_report("devices");
}
