/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msgpack.h - a small msgpack writer for the tools' KV event encoders
 * (tools/kvevents.c): the forms the wire formats need, nothing more.
 * Every writer grows the buffer; on allocation failure the buffer is
 * marked failed and later writes do nothing (check mp_ok() at the end).
 */
#ifndef KVBM_TOOLS_MSGPACK_H
#define KVBM_TOOLS_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

struct mp {
	uint8_t *buf;
	size_t len, cap;
	int failed;
};

void mp_init(struct mp *m);
void mp_free(struct mp *m);
void mp_reset(struct mp *m); /* len = 0, buffer kept */
int mp_ok(const struct mp *m);

void mp_array(struct mp *m, uint32_t n);
void mp_map(struct mp *m, uint32_t n);
void mp_uint(struct mp *m, uint64_t v);
void mp_int(struct mp *m, int64_t v);
void mp_nil(struct mp *m);
void mp_bool(struct mp *m, int v);
void mp_f64(struct mp *m, double v);
void mp_str(struct mp *m, const char *s);
void mp_bin(struct mp *m, const void *p, uint32_t n);

#endif /* KVBM_TOOLS_MSGPACK_H */
