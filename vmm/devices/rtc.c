/* SPDX-License-Identifier: MIT */
/*
 * MC146818 CMOS RTC at ports 0x70 (index) and 0x71 (data). The time
 * registers read the host's UTC clock at each access, in BCD or binary as
 * register B asks; register A never shows an update in progress, and
 * register D reports a valid battery. Without this Linux spends about a
 * second deciding that rtc_cmos is broken. The other bytes are plain CMOS
 * memory, with the classic memory-size bytes filled in.
 */
#include <time.h>

#include "devices.h"
#include "../util.h"

#define RTC_SECONDS	 0x00
#define RTC_MINUTES	 0x02
#define RTC_HOURS	 0x04
#define RTC_DAY_OF_WEEK	 0x06
#define RTC_DAY_OF_MONTH 0x07
#define RTC_MONTH	 0x08
#define RTC_YEAR	 0x09
#define RTC_REG_A	 0x0a
#define RTC_REG_B	 0x0b
#define RTC_REG_C	 0x0c
#define RTC_REG_D	 0x0d
#define RTC_CENTURY	 0x32

#define REG_B_24H    0x02
#define REG_B_BINARY 0x04
#define REG_D_VRT    0x80

static void put16(uint8_t *cmos, unsigned lo, uint64_t v)
{
	if (v > 0xffff)
		v = 0xffff;
	cmos[lo] = (uint8_t)v;
	cmos[lo + 1] = (uint8_t)(v >> 8);
}

void rtc_init(struct rtc *r, uint64_t low_ram, uint64_t high_ram)
{
	uint64_t above_1m = low_ram > (1ull << 20) ? low_ram - (1ull << 20) : 0;
	uint64_t above_16m =
	    low_ram > (16ull << 20) ? low_ram - (16ull << 20) : 0;

	pthread_mutex_init(&r->lock, NULL);
	r->index = 0;
	memset(r->cmos, 0, sizeof(r->cmos));
	r->cmos[RTC_REG_A] = 0x26; /* 32.768 kHz base, 1024 Hz rate */
	r->cmos[RTC_REG_B] = REG_B_24H;
	r->cmos[RTC_REG_D] = REG_D_VRT;
	put16(r->cmos, 0x15, 640);	      /* base memory, KiB */
	put16(r->cmos, 0x17, above_1m >> 10); /* extended, KiB */
	put16(r->cmos, 0x30, above_1m >> 10);
	put16(r->cmos, 0x34, above_16m >> 16);	   /* > 16 MiB, 64 KiB */
	r->cmos[0x5b] = (uint8_t)(high_ram >> 16); /* above 4 GiB, 64 KiB */
	r->cmos[0x5c] = (uint8_t)(high_ram >> 24);
	r->cmos[0x5d] = (uint8_t)(high_ram >> 32);
}

void rtc_destroy(struct rtc *r)
{
	pthread_mutex_destroy(&r->lock);
}

static uint8_t rtc_encode(const struct rtc *r, int v)
{
	if (r->cmos[RTC_REG_B] & REG_B_BINARY)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_read_time(const struct rtc *r, uint8_t idx)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	switch (idx) {
	case RTC_SECONDS:
		return rtc_encode(r, tm.tm_sec);
	case RTC_MINUTES:
		return rtc_encode(r, tm.tm_min);
	case RTC_HOURS:
		if (r->cmos[RTC_REG_B] & REG_B_24H)
			return rtc_encode(r, tm.tm_hour);
		/* 12-hour mode: bit 7 is PM */
		return rtc_encode(r, (tm.tm_hour + 11) % 12 + 1) |
		       (tm.tm_hour >= 12 ? 0x80 : 0);
	case RTC_DAY_OF_WEEK:
		return rtc_encode(r, tm.tm_wday + 1);
	case RTC_DAY_OF_MONTH:
		return rtc_encode(r, tm.tm_mday);
	case RTC_MONTH:
		return rtc_encode(r, tm.tm_mon + 1);
	case RTC_YEAR:
		return rtc_encode(r, tm.tm_year % 100);
	default: /* RTC_CENTURY */
		return rtc_encode(r, (tm.tm_year + 1900) / 100);
	}
}

static bool is_time_reg(uint8_t idx)
{
	return idx == RTC_SECONDS || idx == RTC_MINUTES || idx == RTC_HOURS ||
	       (idx >= RTC_DAY_OF_WEEK && idx <= RTC_YEAR) ||
	       idx == RTC_CENTURY;
}

void rtc_io(void *opaque, uint16_t port, uint8_t *data, uint32_t size,
	    bool is_write)
{
	struct rtc *r = opaque;

	pthread_mutex_lock(&r->lock);
	if (port == 0x70) {
		if (is_write)
			r->index = data[0] & 0x7f; /* bit 7: NMI mask */
		else
			data[0] = 0xff;
	} else if (is_write) {
		/* C and D are read-only; time writes are ignored (host time) */
		if (r->index != RTC_REG_C && r->index != RTC_REG_D &&
		    !is_time_reg(r->index))
			r->cmos[r->index] = data[0];
	} else if (is_time_reg(r->index)) {
		data[0] = rtc_read_time(r, r->index);
	} else {
		data[0] = r->cmos[r->index];
		if (r->index == RTC_REG_C)
			r->cmos[RTC_REG_C] = 0; /* read clears flags */
	}
	for (uint32_t i = 1; i < size && !is_write; i++)
		data[i] = 0xff;
	pthread_mutex_unlock(&r->lock);
}

void rtc_save(struct rtc *r, struct rtc_state *st)
{
	*st = (struct rtc_state){0};
	dev_state_hdr_init(&st->hdr, RTC_STATE_MAGIC, RTC_STATE_VERSION,
			   sizeof(*st));
	pthread_mutex_lock(&r->lock);
	st->index = r->index;
	memcpy(st->cmos, r->cmos, sizeof(st->cmos));
	pthread_mutex_unlock(&r->lock);
}

int rtc_restore(struct rtc *r, const struct rtc_state *st, char *err)
{
	int ret =
	    dev_state_hdr_check(&st->hdr, RTC_STATE_MAGIC, RTC_STATE_VERSION,
				sizeof(*st), "rtc", err);

	if (ret)
		return ret;
	if (st->index > 0x7f)
		return vmm_failx(err, EINVAL, "rtc state: index 0x%x > 0x7f",
				 st->index);
	pthread_mutex_lock(&r->lock);
	r->index = st->index;
	memcpy(r->cmos, st->cmos, sizeof(r->cmos));
	pthread_mutex_unlock(&r->lock);
	return 0;
}
