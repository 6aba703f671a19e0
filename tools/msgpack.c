/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msgpack.c - see msgpack.h. Encodings from the msgpack specification:
 * the smallest form of each integer, str and bin.
 */
#include <stdlib.h>
#include <string.h>

#include "msgpack.h"

void mp_init(struct mp *m)
{
	memset(m, 0, sizeof(*m));
}

void mp_free(struct mp *m)
{
	free(m->buf);
	mp_init(m);
}

void mp_reset(struct mp *m)
{
	m->len = 0;
	m->failed = 0;
}

int mp_ok(const struct mp *m)
{
	return !m->failed;
}

static uint8_t *room(struct mp *m, size_t n)
{
	if (m->failed)
		return NULL;
	if (m->len + n > m->cap) {
		size_t cap = m->cap ? m->cap : 256;
		while (cap < m->len + n)
			cap *= 2;
		uint8_t *b = realloc(m->buf, cap);
		if (!b) {
			m->failed = 1;
			return NULL;
		}
		m->buf = b;
		m->cap = cap;
	}
	uint8_t *p = m->buf + m->len;
	m->len += n;
	return p;
}

/* @tag then @n big-endian bytes of @v */
static void put_be(struct mp *m, uint8_t tag, uint64_t v, int n)
{
	uint8_t *p = room(m, 1 + (size_t)n);

	if (!p)
		return;
	p[0] = tag;
	for (int i = 0; i < n; i++)
		p[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static void put_len(struct mp *m, uint32_t n, uint8_t fix, uint32_t fixmax, uint8_t t8,
		    uint8_t t16, uint8_t t32)
{
	if (n <= fixmax)
		put_be(m, (uint8_t)(fix | n), 0, 0);
	else if (t8 && n <= 0xff)
		put_be(m, t8, n, 1);
	else if (n <= 0xffff)
		put_be(m, t16, n, 2);
	else
		put_be(m, t32, n, 4);
}

void mp_array(struct mp *m, uint32_t n)
{
	put_len(m, n, 0x90, 15, 0, 0xdc, 0xdd);
}

void mp_map(struct mp *m, uint32_t n)
{
	put_len(m, n, 0x80, 15, 0, 0xde, 0xdf);
}

void mp_uint(struct mp *m, uint64_t v)
{
	if (v < 0x80)
		put_be(m, (uint8_t)v, 0, 0);
	else if (v <= 0xff)
		put_be(m, 0xcc, v, 1);
	else if (v <= 0xffff)
		put_be(m, 0xcd, v, 2);
	else if (v <= 0xffffffffu)
		put_be(m, 0xce, v, 4);
	else
		put_be(m, 0xcf, v, 8);
}

void mp_int(struct mp *m, int64_t v)
{
	if (v >= 0)
		mp_uint(m, (uint64_t)v);
	else if (v >= -32)
		put_be(m, (uint8_t)(0xe0 | (v + 32)), 0, 0);
	else if (v >= INT8_MIN)
		put_be(m, 0xd0, (uint8_t)v, 1);
	else if (v >= INT16_MIN)
		put_be(m, 0xd1, (uint16_t)v, 2);
	else if (v >= INT32_MIN)
		put_be(m, 0xd2, (uint32_t)v, 4);
	else
		put_be(m, 0xd3, (uint64_t)v, 8);
}

void mp_nil(struct mp *m)
{
	put_be(m, 0xc0, 0, 0);
}

void mp_bool(struct mp *m, int v)
{
	put_be(m, v ? 0xc3 : 0xc2, 0, 0);
}

void mp_f64(struct mp *m, double v)
{
	uint64_t bits;

	memcpy(&bits, &v, sizeof(bits));
	put_be(m, 0xcb, bits, 8);
}

static void put_bytes(struct mp *m, const void *s, size_t n)
{
	uint8_t *p = room(m, n);

	if (p && n)
		memcpy(p, s, n);
}

void mp_str(struct mp *m, const char *s)
{
	size_t n = strlen(s);

	put_len(m, (uint32_t)n, 0xa0, 31, 0xd9, 0xda, 0xdb);
	put_bytes(m, s, n);
}

void mp_bin(struct mp *m, const void *p, uint32_t n)
{
	if (n <= 0xff)
		put_be(m, 0xc4, n, 1);
	else if (n <= 0xffff)
		put_be(m, 0xc5, n, 2);
	else
		put_be(m, 0xc6, n, 4);
	put_bytes(m, p, n);
}
