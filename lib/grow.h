/* SPDX-License-Identifier: Apache-2.0 */
/*
 * grow.h - the growable arrays of the process-local objects (token
 * sequences, block sequences, request buffers): never the segment, which
 * never allocates.
 */
#ifndef KVBM_GROW_H
#define KVBM_GROW_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Makes room for @need elements of @elem bytes in *@p (capacity *@cap),
 * doubling from 16. Returns 0, or -ENOMEM with *@p and *@cap unchanged
 * (also when the size would overflow). */
static inline int kvbm_grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return -ENOMEM;
		ncap *= 2;
	}
	if (elem && ncap > SIZE_MAX / elem)
		return -ENOMEM;
	void *np = realloc(*p, ncap * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

#endif
