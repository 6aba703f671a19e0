/*
 * revoke.pml - SPIN model of a biased handle's revocation (shm/segment.c,
 * lib/pool.h; docs/PROTOCOL.md "Biased handles").
 *
 * The owner thread updates its holder entry with a plain load and store
 * (two steps) inside a busy section; another thread's first call revokes
 * the bias, after which both use atomic RMWs (one step). x86 is TSO: the
 * owner's store of busy = 1 may sit in its store buffer while its load of
 * revoking runs, which the model shows as a pending store that drains at
 * any later step. membarrier() drains it (a full barrier on every CPU
 * running one of our threads).
 *
 * Switches: NOWAIT 1: the revoker does not wait for busy == 0;
 *           NOCHECK 1: the owner does not look at revoking;
 *           NOBARRIER 1: no membarrier (the owner's busy store may stay
 *           in its buffer past its load of revoking).
 * Property: no update is lost: the count ends where it began (each thread
 * takes a hold and drops it, K times), and never falls to 0 on the way.
 */
#ifndef K
#define K 2
#endif
#ifndef NOWAIT
#define NOWAIT 0
#endif
#ifndef NOCHECK
#define NOCHECK 0
#endif
#ifndef NOBARRIER
#define NOBARRIER 0
#endif

#define SHARED 0
#define BIASED 2

byte cnt = 1;       /* our holder entry: one base hold */
byte mode = BIASED;
bool busy;          /* as other threads see it */
bool sb_busy;       /* the owner's store buffer: busy = 1 not yet visible */
bool revoking;
byte done;

/* the owner's buffered store becomes visible (when there is one) */
#define DRAIN atomic { sb_busy -> busy = 1; sb_busy = 0 }
#define MEMBARRIER atomic { if :: sb_busy -> busy = 1; sb_busy = 0 :: else -> skip fi }

/* one hold operation of the owner: +1 or -1 */
inline owner_op(d)
{
  if
  :: mode == SHARED -> atomic { cnt = cnt + d; assert(cnt > 0) }   /* CAS */
  :: else ->
     sb_busy = 1;                         /* busy = 1, buffered */
     /* compiler barrier only: the load may pass the buffered store */
     if
     :: DRAIN
     :: skip
     fi;
#if NOCHECK
     if :: 1 -> st = 1 fi;
#else
     if
     :: revoking -> st = 0
     :: else -> st = 1
     fi;
#endif
     if
     :: st ->
        v = cnt;                          /* plain load ... */
        if :: DRAIN :: skip fi;
        cnt = v + d;                      /* ... and store */
        assert(cnt > 0);
        /* release store of busy = 0: after the buffered busy = 1 */
        atomic { sb_busy = 0; busy = 0 }
     :: else ->
        atomic { sb_busy = 0; busy = 0 };
        atomic { cnt = cnt + d; assert(cnt > 0) }
     fi
  fi
}

proctype owner()
{
  byte i, v;
  bool st;

  for (i : 1 .. K) {
    owner_op(1);
    owner_op(255)        /* -1 in a byte */
  };
  done++
}

proctype other()
{
  byte i;

  /* the first call revokes */
  revoking = 1;
#if !NOBARRIER
  MEMBARRIER;            /* every running thread's store buffer drains */
#endif
#if !NOWAIT
  (busy == 0) -> skip;   /* acquire: the owner's release of busy */
#endif
  mode = SHARED;
  for (i : 1 .. K) {
    atomic { cnt = cnt + 1; assert(cnt > 0) };
    atomic { cnt = cnt - 1; assert(cnt > 0) }
  };
  done++
}

init
{
  atomic { run owner(); run other() };
  done == 2;
  assert(cnt == 1)
}
