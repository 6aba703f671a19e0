/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json.h - a tiny streaming JSON writer for the tools' --json output.
 * Keys are ignored inside arrays; commas and escaping are handled here.
 */
#ifndef KVBM_TOOLS_JSON_H
#define KVBM_TOOLS_JSON_H

#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

struct json {
	FILE *f;
	int depth;
	int count[JSON_MAX_DEPTH]; /* members written at each depth */
	int is_array[JSON_MAX_DEPTH];
};

void json_init(struct json *j, FILE *f);
void json_obj_begin(struct json *j, const char *key);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j, const char *key);
void json_arr_end(struct json *j);
void json_str(struct json *j, const char *key, const char *v);
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_dbl(struct json *j, const char *key, double v);
void json_bool(struct json *j, const char *key, int v);
void json_null(struct json *j, const char *key);
/* u64 as a "0x%016x" string: JSON numbers lose precision above 2^53 */
void json_hex(struct json *j, const char *key, uint64_t v);
/* Ends the document with a newline. */
void json_finish(struct json *j);

#endif /* KVBM_TOOLS_JSON_H */
