/* SPDX-License-Identifier: MIT */
/*
 * i8042 keyboard controller: enough for Linux's probe (status, command
 * byte, self tests) and for its reset paths. There is no keyboard behind
 * it, so the output buffer only ever holds command responses and no IRQ 1
 * is raised. A pulse of the CPU reset line (command 0xFE, or bit 0 cleared
 * in the output port) ends the VM: the VMM treats a guest reboot as
 * power-off.
 */
#include "devices.h"
#include "../util.h"

#define I8042_DATA 0x60
#define I8042_CMD  0x64

#define STS_OBF	       0x01 /* output buffer full */
#define STS_SYS	       0x04 /* system flag: passed self test */
#define STS_CMD	       0x08 /* last write was to the command port */
#define STS_KBD_UNLOCK 0x10

#define CMD_READ_CTR	  0x20
#define CMD_WRITE_CTR	  0x60
#define CMD_AUX_DISABLE	  0xa7
#define CMD_AUX_ENABLE	  0xa8
#define CMD_AUX_TEST	  0xa9
#define CMD_SELF_TEST	  0xaa
#define CMD_KBD_TEST	  0xab
#define CMD_KBD_DISABLE	  0xad
#define CMD_KBD_ENABLE	  0xae
#define CMD_READ_OUTPORT  0xd0
#define CMD_WRITE_OUTPORT 0xd1
#define CMD_RESET_CPU	  0xfe

void i8042_init(struct i8042 *k, dev_reset_fn reset, void *opaque)
{
	pthread_mutex_init(&k->lock, NULL);
	k->status = STS_SYS | STS_KBD_UNLOCK;
	k->cmd_byte = 0x61; /* kbd IRQ on, system flag, XLATE */
	k->outbuf = 0;
	k->pending_cmd = 0;
	k->outport = 0x01; /* reset line high: the CPU runs */
	k->reset = reset;
	k->reset_opaque = opaque;
}

void i8042_destroy(struct i8042 *k)
{
	pthread_mutex_destroy(&k->lock);
}

static void put_output(struct i8042 *k, uint8_t v)
{
	k->outbuf = v;
	k->status |= STS_OBF;
}

/* Returns a reason when the write pulls the CPU reset line, else NULL. */
static const char *i8042_command(struct i8042 *k, uint8_t cmd)
{
	k->status |= STS_CMD;
	switch (cmd) {
	case CMD_READ_CTR:
		put_output(k, k->cmd_byte);
		break;
	case CMD_WRITE_CTR:
	case CMD_WRITE_OUTPORT:
		k->pending_cmd = cmd;
		break;
	case CMD_SELF_TEST:
		put_output(k, 0x55);
		break;
	case CMD_KBD_TEST:
	case CMD_AUX_TEST:
		put_output(k, 0x00);
		break;
	case CMD_READ_OUTPORT:
		put_output(k, k->outport);
		break;
	case CMD_KBD_DISABLE:
		k->cmd_byte |= 0x10;
		break;
	case CMD_KBD_ENABLE:
		k->cmd_byte &= ~0x10;
		break;
	case CMD_AUX_DISABLE:
		k->cmd_byte |= 0x20;
		break;
	case CMD_AUX_ENABLE:
		k->cmd_byte &= ~0x20;
		break;
	case CMD_RESET_CPU:
		return "i8042 command 0xfe (CPU reset)";
	default:
		break; /* unknown commands are ignored, as by real parts */
	}
	return NULL;
}

static const char *i8042_data(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending_cmd;

	k->status &= ~STS_CMD;
	k->pending_cmd = 0;
	if (cmd == CMD_WRITE_CTR) {
		k->cmd_byte = v;
	} else if (cmd == CMD_WRITE_OUTPORT) {
		k->outport = v;
		if (!(v & 0x01))
			return "i8042 output port write (CPU reset)";
	}
	/* A byte meant for the keyboard itself: nothing answers. */
	return NULL;
}

void i8042_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	      bool is_write)
{
	struct i8042 *k = opaque;
	const char *reset = NULL;

	pthread_mutex_lock(&k->lock);
	if (!is_write) {
		if (port == I8042_CMD) {
			data[0] = k->status;
		} else {
			data[0] = k->outbuf;
			k->status &= ~STS_OBF;
		}
		for (uint32_t i = 1; i < size; i++)
			data[i] = 0xff;
	} else if (port == I8042_CMD) {
		reset = i8042_command(k, data[0]);
	} else {
		reset = i8042_data(k, data[0]);
	}
	pthread_mutex_unlock(&k->lock);
	if (reset && k->reset)
		k->reset(k->reset_opaque, reset);
}

void i8042_save(struct i8042 *k, struct i8042_state *st)
{
	*st = (struct i8042_state){0};
	dev_state_hdr_init(&st->hdr, I8042_STATE_MAGIC, I8042_STATE_VERSION,
			   sizeof(*st));
	pthread_mutex_lock(&k->lock);
	st->status = k->status;
	st->cmd_byte = k->cmd_byte;
	st->outbuf = k->outbuf;
	st->pending_cmd = k->pending_cmd;
	st->outport = k->outport;
	pthread_mutex_unlock(&k->lock);
}

int i8042_restore(struct i8042 *k, const struct i8042_state *st, char *err)
{
	int ret =
	    dev_state_hdr_check(&st->hdr, I8042_STATE_MAGIC,
				I8042_STATE_VERSION, sizeof(*st), "i8042", err);

	if (ret)
		return ret;
	pthread_mutex_lock(&k->lock);
	k->status = st->status;
	k->cmd_byte = st->cmd_byte;
	k->outbuf = st->outbuf;
	k->pending_cmd = st->pending_cmd;
	k->outport = st->outport;
	pthread_mutex_unlock(&k->lock);
	return 0;
}
