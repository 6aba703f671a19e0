/* SPDX-License-Identifier: Apache-2.0 */
/*
 * failpoint.h - named crash points for the crash tests. PRIVATE.
 *
 * In test builds (-DKVBM_FAILPOINTS) KVBM_FAILPOINT("name") SIGKILLs the
 * process at the Nth hit of an armed point, or (action "yield") gives up
 * the CPU at every Nth hit, which widens that race window for the stress
 * tests ("delay": sleeps 20 us, wider still), or (action "stop") stops the
 * process with SIGSTOP at the Nth hit. Points are armed by the environment
 * variable KVBM_FAILPOINTS="name[:N][=kill|yield|delay|stop][,...]"
 * (read at the first hit) or
 * by kvbm_fp_arm(). Release builds compile every point out.
 */
#ifndef KVBM_SHM_FAILPOINT_H
#define KVBM_SHM_FAILPOINT_H

#ifdef KVBM_FAILPOINTS
void kvbm_fp_hit(const char *name);
/* Replaces the armed set with @spec (NULL or "" disarms). Returns 0 or -EINVAL. */
int kvbm_fp_arm(const char *spec);
#define KVBM_FAILPOINT(name) kvbm_fp_hit(name)
#else
#define KVBM_FAILPOINT(name) ((void)0)
#endif

#endif /* KVBM_SHM_FAILPOINT_H */
