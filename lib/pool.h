/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pool.h - the per-process attach handle behind struct kvbm_pool. PRIVATE.
 */
#ifndef KVBM_LIB_POOL_H
#define KVBM_LIB_POOL_H

#include "kvbm.h"
#include "../shm/segment.h"

struct kvbm_pool {
	struct kvbm_seg seg;
};

/* Checks @cfg and converts it to the stored form. Returns 0 or -EINVAL. */
int kvbm_config_to_shm(const struct kvbm_config *cfg, struct kvbm_shm_config *out);

#endif /* KVBM_LIB_POOL_H */
