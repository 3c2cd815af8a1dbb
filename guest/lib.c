/* SPDX-License-Identifier: MIT */
/*
 * The few C library functions the guest needs: those gcc may emit calls to
 * in freestanding code, and a small vsnprintf (%s %c %d %u %x with l/ll/z
 * length, optional field width and '0' flag, and %.*s).
 */
#include "guest.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	void *ret = dst;

	__asm__ volatile("rep movsb"
			 : "+D"(dst), "+S"(src), "+c"(n)
			 :
			 : "memory");
	return ret;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *ret = dst;

	__asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
	return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

void *memchr(const void *s, int c, size_t n)
{
	const unsigned char *p = s;

	for (size_t i = 0; i < n; i++)
		if (p[i] == (unsigned char)c)
			return (void *)(p + i);
	return NULL;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

struct out {
	char *buf;
	size_t size;
	size_t len; /* as if the buffer were unbounded */
};

static void out_char(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void out_number(struct out *o, uint64_t v, unsigned int base,
		       int negative, unsigned int width, char pad)
{
	char digits[24];
	unsigned int n = 0;

	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (negative)
		digits[n++] = '-';
	while (width > n) {
		out_char(o, pad);
		width--;
	}
	while (n)
		out_char(o, digits[--n]);
}

/* Reads one integer argument of the given length modifier (0, 1 l, 2 ll). */
static uint64_t arg_unsigned(va_list *ap, int lng)
{
	if (lng)
		return va_arg(*ap, unsigned long);
	return va_arg(*ap, unsigned int);
}

static int64_t arg_signed(va_list *ap, int lng)
{
	if (lng)
		return va_arg(*ap, long);
	return va_arg(*ap, int);
}

int lsg_vsnprintf(char *buf, size_t size, const char *fmt, va_list args)
{
	struct out o = {.buf = buf, .size = size};
	va_list ap;

	va_copy(ap, args);
	for (; *fmt; fmt++) {
		unsigned int width = 0;
		size_t prec = SIZE_MAX;
		char pad = ' ';
		int lng = 0;

		if (*fmt != '%') {
			out_char(&o, *fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0')
			pad = '0';
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned int)(*fmt++ - '0');
		if (fmt[0] == '.' && fmt[1] == '*') {
			prec = (size_t)va_arg(ap, int);
			fmt += 2;
		}
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);

			while (*s && prec--)
				out_char(&o, *s++);
			break;
		}
		case 'c':
			out_char(&o, (char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = arg_signed(&ap, lng);

			out_number(&o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10,
				   v < 0, width, pad);
			break;
		}
		case 'u':
			out_number(&o, arg_unsigned(&ap, lng), 10, 0, width,
				   pad);
			break;
		case 'x':
			out_number(&o, arg_unsigned(&ap, lng), 16, 0, width,
				   pad);
			break;
		case '\0':
			fmt--;
			break;
		default:
			out_char(&o, *fmt);
			break;
		}
	}
	va_end(ap);
	if (size)
		buf[o.len < size ? o.len : size - 1] = '\0';
	return (int)o.len;
}
