/* SPDX-License-Identifier: MIT */
/*
 * Legacy port-I/O devices and the bus that dispatches port I/O exits to them.
 *
 * Every device keeps its registers in its own struct behind a mutex (vCPU
 * threads, the console input thread and the snapshot code all touch them)
 * and has a save/restore pair over a fixed-layout, versioned state struct
 * that starts with struct dev_state_hdr. A restore refuses a state with a
 * wrong magic, version or size.
 */
#ifndef LS_VMM_DEVICES_H
#define LS_VMM_DEVICES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dev_state_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t size; /* sizeof the whole state struct */
};

/* Fills hdr; checks one against expectations (0 or -EINVAL + message). */
void dev_state_hdr_init(struct dev_state_hdr *h, uint32_t magic,
			uint16_t version, size_t size);
int dev_state_hdr_check(const struct dev_state_hdr *h, uint32_t magic,
			uint16_t version, size_t size, const char *dev,
			char *err);

/* ---- port I/O bus ---- */

typedef void (*pio_fn)(void *opaque, uint16_t port, uint8_t *data,
		       uint32_t size, bool is_write);

struct pio_dev {
	const char *name;
	uint16_t base;
	uint16_t len;
	pio_fn io;
	void *opaque;
};

#define PIO_BUS_MAX 16

struct pio_bus {
	unsigned n;
	struct pio_dev devs[PIO_BUS_MAX];
	pio_fn fallback; /* the sink: every port nobody claims */
	void *fallback_opaque;
};

int pio_bus_add(struct pio_bus *bus, const char *name, uint16_t base,
		uint16_t len, pio_fn io, void *opaque);
void pio_bus_dispatch(struct pio_bus *bus, uint16_t port, uint8_t *data,
		      uint32_t size, bool is_write);

/* Called by a device that wants the VM to end (guest reset/power-off). */
typedef void (*dev_reset_fn)(void *opaque, const char *why);
/* Drives an ISA interrupt line (the accelerator routes it). */
typedef void (*dev_irq_fn)(void *opaque, unsigned irq, int level);

/* ---- 8250/16550A UART ---- */

#define SERIAL_FIFO_LEN	     64		 /* 64: Linux detects a 16550A */
#define SERIAL_STATE_MAGIC   0x4c524553u /* "SERL" */
#define SERIAL_STATE_VERSION 1

struct serial_state {
	struct dev_state_hdr hdr;
	uint8_t dll, dlm, ier, iir, fcr, lcr, mcr, lsr, msr, scr;
	uint8_t irq_level;
	uint8_t rx_count;
	uint8_t rx[SERIAL_FIFO_LEN]; /* oldest first */
};

struct serial {
	pthread_mutex_t lock;
	dev_irq_fn set_irq;
	void *irq_opaque;
	int irq;
	int out_fd; /* guest output goes here */
	uint8_t dll, dlm, ier, iir, fcr, lcr, mcr, lsr, msr, scr;
	uint8_t rx[SERIAL_FIFO_LEN];
	unsigned rx_head, rx_count;
	int irq_level;
};

void serial_init(struct serial *s, dev_irq_fn set_irq, void *irq_opaque,
		 int irq, int out_fd);
void serial_destroy(struct serial *s);
void serial_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	       bool is_write);
/* Console input: queues up to n bytes; returns how many fitted. */
size_t serial_rx_push(struct serial *s, const uint8_t *buf, size_t n);
void serial_save(struct serial *s, struct serial_state *st);
int serial_restore(struct serial *s, const struct serial_state *st, char *err);

/* ---- i8042 keyboard controller (reset line only) ---- */

#define I8042_STATE_MAGIC   0x32343869u /* "i842" */
#define I8042_STATE_VERSION 1

struct i8042_state {
	struct dev_state_hdr hdr;
	uint8_t status, cmd_byte, outbuf, pending_cmd, outport;
	uint8_t pad[3];
};

struct i8042 {
	pthread_mutex_t lock;
	uint8_t status, cmd_byte, outbuf, pending_cmd, outport;
	dev_reset_fn reset;
	void *reset_opaque;
};

void i8042_init(struct i8042 *k, dev_reset_fn reset, void *opaque);
void i8042_destroy(struct i8042 *k);
void i8042_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	      bool is_write);
void i8042_save(struct i8042 *k, struct i8042_state *st);
int i8042_restore(struct i8042 *k, const struct i8042_state *st, char *err);

/* ---- CMOS / RTC (MC146818) ---- */

#define RTC_STATE_MAGIC	  0x534f4d43u /* "CMOS" */
#define RTC_STATE_VERSION 1

struct rtc_state {
	struct dev_state_hdr hdr;
	uint8_t index;
	uint8_t pad[7];
	uint8_t cmos[128];
};

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[128];
};

/* low/high: RAM below 4 GiB and above, for the CMOS memory-size bytes. */
void rtc_init(struct rtc *r, uint64_t low_ram, uint64_t high_ram);
void rtc_destroy(struct rtc *r);
void rtc_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	    bool is_write);
void rtc_save(struct rtc *r, struct rtc_state *st);
int rtc_restore(struct rtc *r, const struct rtc_state *st, char *err);

/* ---- sink for every other port ---- */

#define PIO_SINK_STATE_MAGIC   0x4b4e4953u /* "SINK" */
#define PIO_SINK_STATE_VERSION 1

struct pio_sink_state {
	struct dev_state_hdr hdr;
	uint8_t port92; /* "system control port A": A20 gate, fast reset */
	uint8_t pad[7];
};

struct pio_sink {
	uint8_t port92;
	dev_reset_fn reset;
	void *reset_opaque;
};

void pio_sink_init(struct pio_sink *s, dev_reset_fn reset, void *opaque);
void pio_sink_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
		 bool is_write);
void pio_sink_save(struct pio_sink *s, struct pio_sink_state *st);
int pio_sink_restore(struct pio_sink *s, const struct pio_sink_state *st,
		     char *err);

#endif /* LS_VMM_DEVICES_H */
