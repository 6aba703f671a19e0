/* SPDX-License-Identifier: Apache-2.0 */
/*
 * expo.c - merging Prometheus text expositions. The library writes one
 * pool's exposition at a time, each family with its own HELP and TYPE; a
 * scrape of several pools concatenated would repeat them, which the text
 * format forbids (Prometheus rejects the scrape, promtool reports it). The
 * merge regroups every sample under its family, each family once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvbmd.h"

static void reserve(struct kvbmd_buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 4096;
	char *p;

	if (b->oom || b->len + more + 1 <= b->cap)
		return;
	while (cap < b->len + more + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return;
	}
	b->p = p;
	b->cap = cap;
}

void kvbmd_buf_put(struct kvbmd_buf *b, const char *s, size_t n)
{
	reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void kvbmd_buf_printf(struct kvbmd_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	reserve(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void kvbmd_buf_free(struct kvbmd_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

struct family {
	char name[128];
	struct kvbmd_buf help, type, samples;
};

struct families {
	struct family *f;
	size_t n, cap;
};

static struct family *family_get(struct families *fs, const char *name, size_t len)
{
	struct family *f;

	if (len >= sizeof(fs->f->name))
		len = sizeof(fs->f->name) - 1;
	for (size_t i = 0; i < fs->n; i++)
		if (strlen(fs->f[i].name) == len && !memcmp(fs->f[i].name, name, len))
			return &fs->f[i];
	if (fs->n == fs->cap) {
		size_t cap = fs->cap ? fs->cap * 2 : 64;
		struct family *nf = realloc(fs->f, cap * sizeof(*nf));
		if (!nf)
			return NULL;
		fs->f = nf;
		fs->cap = cap;
	}
	f = &fs->f[fs->n++];
	memset(f, 0, sizeof(*f));
	memcpy(f->name, name, len);
	return f;
}

/* Whether sample @name (of @len) belongs to family @f: the family's own
 * name, or it with a summary or histogram suffix. */
static int belongs(const struct family *f, const char *name, size_t len)
{
	static const char *const sfx[] = {"", "_sum", "_count", "_bucket", "_total", "_created"};
	size_t fl = strlen(f->name);

	if (len < fl || memcmp(name, f->name, fl))
		return 0;
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++)
		if (len - fl == strlen(sfx[i]) && !memcmp(name + fl, sfx[i], len - fl))
			return 1;
	return 0;
}

/* One line (without its newline) of an exposition. */
static int take_line(struct families *fs, struct family **cur, const char *l, size_t n)
{
	struct family *f;

	if (n == 0)
		return 0;
	if (l[0] == '#') {
		/* "# HELP name text" / "# TYPE name type"; other comments go */
		int help = n > 7 && !memcmp(l, "# HELP ", 7);
		int type = n > 7 && !memcmp(l, "# TYPE ", 7);
		const char *name = l + 7, *end;

		if (!help && !type)
			return 0;
		end = memchr(name, ' ', n - 7);
		if (!end)
			end = l + n;
		f = family_get(fs, name, (size_t)(end - name));
		if (!f)
			return -ENOMEM;
		*cur = f;
		struct kvbmd_buf *dst = help ? &f->help : &f->type;
		if (dst->len == 0) /* the first text's wins */
			kvbmd_buf_put(dst, l, n);
		return dst->oom ? -ENOMEM : 0;
	}
	size_t len = strcspn(l, "{ ");
	if (len > n)
		len = n;
	f = *cur && belongs(*cur, l, len) ? *cur : family_get(fs, l, len);
	if (!f)
		return -ENOMEM;
	*cur = f;
	kvbmd_buf_put(&f->samples, l, n);
	kvbmd_buf_put(&f->samples, "\n", 1);
	return f->samples.oom ? -ENOMEM : 0;
}

int kvbmd_expo_merge(const char *const *texts, size_t n, struct kvbmd_buf *out)
{
	struct families fs = {NULL, 0, 0};
	int r = 0;

	for (size_t t = 0; t < n && r == 0; t++) {
		struct family *cur = NULL; /* a text's samples follow their header */
		const char *s = texts[t];

		while (s && *s && r == 0) {
			const char *nl = strchr(s, '\n');
			size_t len = nl ? (size_t)(nl - s) : strlen(s);

			r = take_line(&fs, &cur, s, len);
			s = nl ? nl + 1 : NULL;
		}
	}
	for (size_t i = 0; i < fs.n && r == 0; i++) {
		struct family *f = &fs.f[i];

		if (f->help.len)
			kvbmd_buf_printf(out, "%s\n", f->help.p);
		if (f->type.len)
			kvbmd_buf_printf(out, "%s\n", f->type.p);
		if (f->samples.len)
			kvbmd_buf_put(out, f->samples.p, f->samples.len);
	}
	if (out->oom)
		r = -ENOMEM;
	for (size_t i = 0; i < fs.n; i++) {
		kvbmd_buf_free(&fs.f[i].help);
		kvbmd_buf_free(&fs.f[i].type);
		kvbmd_buf_free(&fs.f[i].samples);
	}
	free(fs.f);
	return r;
}
