/* SPDX-License-Identifier: MIT */
/*
 * 8250/16550A UART. Transmission is instantaneous (a write to THR goes
 * straight to the output fd), so THR and the shift register are always
 * empty and a THR-empty interrupt is pending whenever the guest enables it;
 * Linux's driver disables THRI itself once it has nothing left to send.
 * The interrupt is a level on an ISA line, raised and lowered with
 * the accelerator (through set_irq) only when it changes.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "devices.h"
#include "../util.h"

/* Register offsets from the base port. */
enum {
	UART_RX = 0,  /* RBR (read), THR (write); DLL when DLAB */
	UART_IER = 1, /* DLM when DLAB */
	UART_IIR = 2, /* IIR (read), FCR (write) */
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

#define IER_RDI		0x01
#define IER_THRI	0x02
#define IIR_NO_INT	0x01
#define IIR_THRI	0x02
#define IIR_RDI		0x04
#define IIR_FIFO_BITS	0xc0 /* "FIFOs enabled": a 16550A */
#define FCR_ENABLE_FIFO 0x01
#define FCR_CLEAR_RCVR	0x02
#define LCR_DLAB	0x80
#define MCR_DTR		0x01
#define MCR_RTS		0x02
#define MCR_OUT1	0x04
#define MCR_OUT2	0x08
#define MCR_LOOP	0x10
#define LSR_DR		0x01
#define LSR_OE		0x02
#define LSR_THRE	0x20
#define LSR_TEMT	0x40
#define MSR_CTS		0x10
#define MSR_DSR		0x20
#define MSR_RI		0x40
#define MSR_DCD		0x80

static void serial_reset_regs(struct serial *s)
{
	s->dll = 0x0c; /* 9600 baud */
	s->dlm = 0;
	s->ier = 0;
	s->iir = IIR_NO_INT;
	s->fcr = 0;
	s->lcr = 0x03; /* 8N1 */
	s->mcr = MCR_OUT2;
	s->lsr = LSR_TEMT | LSR_THRE;
	s->msr = MSR_DCD | MSR_DSR | MSR_CTS;
	s->scr = 0;
	s->rx_head = 0;
	s->rx_count = 0;
}

void serial_init(struct serial *s, dev_irq_fn set_irq, void *irq_opaque,
		 int irq, int out_fd)
{
	pthread_mutex_init(&s->lock, NULL);
	s->set_irq = set_irq;
	s->irq_opaque = irq_opaque;
	s->irq = irq;
	s->out_fd = out_fd;
	s->irq_level = 0;
	serial_reset_regs(s);
}

void serial_destroy(struct serial *s)
{
	pthread_mutex_destroy(&s->lock);
}

/* Recomputes IIR and drives the IRQ line; called with the lock held. */
static void serial_update_irq(struct serial *s)
{
	int level;

	if ((s->ier & IER_RDI) && (s->lsr & LSR_DR))
		s->iir = IIR_RDI;
	else if ((s->ier & IER_THRI) && (s->lsr & LSR_TEMT))
		s->iir = IIR_THRI;
	else
		s->iir = IIR_NO_INT;
	level = !(s->iir & IIR_NO_INT);
	if (level == s->irq_level)
		return;
	s->set_irq(s->irq_opaque, (unsigned)s->irq, level);
	s->irq_level = level;
}

/* Appends to the RX FIFO; returns false when it is full. */
static bool rx_put(struct serial *s, uint8_t c)
{
	if (s->rx_count == SERIAL_FIFO_LEN) {
		s->lsr |= LSR_OE;
		return false;
	}
	s->rx[(s->rx_head + s->rx_count) % SERIAL_FIFO_LEN] = c;
	s->rx_count++;
	s->lsr |= LSR_DR;
	return true;
}

static uint8_t rx_get(struct serial *s)
{
	uint8_t c;

	if (!s->rx_count)
		return 0;
	c = s->rx[s->rx_head];
	s->rx_head = (s->rx_head + 1) % SERIAL_FIFO_LEN;
	if (!--s->rx_count)
		s->lsr &= ~LSR_DR;
	return c;
}

static void serial_transmit(struct serial *s, uint8_t c)
{
	if (s->mcr & MCR_LOOP) {
		rx_put(s, c);
		return;
	}
	/* A closed console must not stop the guest: drop what fails. */
	if (s->out_fd >= 0 && write(s->out_fd, &c, 1) < 0 && errno == EPIPE)
		s->out_fd = -1;
}

/* In loopback mode the modem inputs are wired to the modem outputs. */
static uint8_t serial_msr(const struct serial *s)
{
	uint8_t m = 0;

	if (!(s->mcr & MCR_LOOP))
		return s->msr;
	if (s->mcr & MCR_RTS)
		m |= MSR_CTS;
	if (s->mcr & MCR_DTR)
		m |= MSR_DSR;
	if (s->mcr & MCR_OUT1)
		m |= MSR_RI;
	if (s->mcr & MCR_OUT2)
		m |= MSR_DCD;
	return m;
}

static uint8_t serial_read(struct serial *s, unsigned off)
{
	uint8_t v;

	switch (off) {
	case UART_RX:
		return (s->lcr & LCR_DLAB) ? s->dll : rx_get(s);
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR:
		v = s->iir;
		if (s->fcr & FCR_ENABLE_FIFO)
			v |= IIR_FIFO_BITS;
		return v;
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = s->lsr;
		s->lsr &= ~LSR_OE; /* error bits clear on read */
		return v;
	case UART_MSR:
		return serial_msr(s);
	default:
		return s->scr;
	}
}

static void serial_write(struct serial *s, unsigned off, uint8_t v)
{
	switch (off) {
	case UART_RX:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			serial_transmit(s, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = v;
		else
			s->ier = v & 0x0f;
		break;
	case UART_IIR:		   /* FCR */
		s->fcr = v & 0xc9; /* DMA-mode, trigger and enable bits */
		if (v & FCR_CLEAR_RCVR) {
			s->rx_head = 0;
			s->rx_count = 0;
			s->lsr &= ~LSR_DR;
		}
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		s->mcr = v & 0x1f;
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* read-only */
	default:
		s->scr = v;
		break;
	}
}

void serial_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	       bool is_write)
{
	struct serial *s = opaque;
	unsigned off = port & 7;

	pthread_mutex_lock(&s->lock);
	/* Wider accesses (never done by Linux) act on the first byte. */
	if (is_write) {
		serial_write(s, off, data[0]);
	} else {
		data[0] = serial_read(s, off);
		for (uint32_t i = 1; i < size; i++)
			data[i] = 0xff;
	}
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

size_t serial_rx_push(struct serial *s, const uint8_t *buf, size_t n)
{
	size_t done = 0;

	pthread_mutex_lock(&s->lock);
	while (done < n && s->rx_count < SERIAL_FIFO_LEN)
		rx_put(s, buf[done++]);
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return done;
}

void serial_save(struct serial *s, struct serial_state *st)
{
	*st = (struct serial_state){0};
	dev_state_hdr_init(&st->hdr, SERIAL_STATE_MAGIC, SERIAL_STATE_VERSION,
			   sizeof(*st));
	pthread_mutex_lock(&s->lock);
	st->dll = s->dll;
	st->dlm = s->dlm;
	st->ier = s->ier;
	st->iir = s->iir;
	st->fcr = s->fcr;
	st->lcr = s->lcr;
	st->mcr = s->mcr;
	st->lsr = s->lsr;
	st->msr = s->msr;
	st->scr = s->scr;
	st->irq_level = (uint8_t)s->irq_level;
	st->rx_count = (uint8_t)s->rx_count;
	for (unsigned i = 0; i < s->rx_count; i++)
		st->rx[i] = s->rx[(s->rx_head + i) % SERIAL_FIFO_LEN];
	pthread_mutex_unlock(&s->lock);
}

int serial_restore(struct serial *s, const struct serial_state *st, char *err)
{
	int ret = dev_state_hdr_check(&st->hdr, SERIAL_STATE_MAGIC,
				      SERIAL_STATE_VERSION, sizeof(*st),
				      "serial", err);

	if (ret)
		return ret;
	if (st->rx_count > SERIAL_FIFO_LEN || st->irq_level > 1)
		return vmm_failx(err, EINVAL,
				 "serial state: rx_count %u or irq level %u "
				 "out of range",
				 st->rx_count, st->irq_level);
	pthread_mutex_lock(&s->lock);
	s->dll = st->dll;
	s->dlm = st->dlm;
	s->ier = st->ier;
	s->fcr = st->fcr;
	s->lcr = st->lcr;
	s->mcr = st->mcr;
	s->lsr = st->lsr;
	s->msr = st->msr;
	s->scr = st->scr;
	s->rx_head = 0;
	s->rx_count = st->rx_count;
	for (unsigned i = 0; i < st->rx_count; i++)
		s->rx[i] = st->rx[i];
	/*
	 * Restores target a fresh VM, whose line is low: recomputing the
	 * level from the registers raises it again if the saved UART had an
	 * interrupt pending (the irqchip state, restored before the devices,
	 * keeps what was already latched).
	 */
	s->irq_level = 0;
	serial_update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}
