/* SPDX-License-Identifier: Apache-2.0 */
/*
 * seqint.h - what lib/request.c shares with lib/sequence.c (not installed).
 */
#ifndef KVBM_SEQINT_H
#define KVBM_SEQINT_H

#include "grow.h"
#include "kvbm_sequence.h"

/* Fills *@e (may be NULL) with @code and its details. */
void seq_err(struct kvbm_seq_error *e, int code, uint64_t a, uint64_t b, uint64_t c, uint64_t d);
/* Undoes the staging of the last @k staged blocks (after a failed
 * register): back to the front of the unassigned queue, MUTABLE. */
int seq_lassign_unstage_last(struct kvbm_lassign *l, size_t k);

/* Adds blocks fresh from kvbm_allocate_blocks() as unassigned, without
 * the duplicate check they cannot fail. */
int seq_lassign_add_allocated(struct kvbm_lassign *l, const struct kvbm_block *blks, size_t n);
/* Makes room for @n blocks in every collection of @l. */
int seq_lassign_reserve(struct kvbm_lassign *l, size_t n);

#endif /* KVBM_SEQINT_H */
