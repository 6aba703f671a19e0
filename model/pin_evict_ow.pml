/*
 * pin_evict_ow.pml - shared/model/pin_evict.pml, extended with what
 * kvbm-shm's match path adds (docs/PROTOCOL.md, "The match path with one
 * writer"): switches NOSEQ, HOLD2 and ONEWRITER below, property P6.
 * Everything else is the shared model unchanged.
 *
 * pin_evict.pml - SPIN model of the kvbm-shm slot protocol:
 * lock-free lookup + PIN / UNPIN against EVICT, REGISTER and REAP under the
 * pool mutex, with process crashes at any step and owner-death recovery.
 * Design: shared/ARCHITECTURE.md sections 3-5 and
 * shared/spec/design-anchors.md sections 8.3-8.9.
 *
 * Compile-time switches (spin -a -DNAME=VALUE pin_evict.pml); defaults are
 * the intended design in topology 1.
 *
 *  CFG        topology (threads t0, t1 readers, A (and B) allocators)
 *               1: t0 = process 0, t1 = process 1, A = process 2
 *               2: t0 and t1 are two threads of process 0 (one holder bit),
 *                  A = process 1
 *               3: t0 and A are threads of process 0, t1 is process 1 (the
 *                  usual engine: it allocates AND matches)
 *               4: t0 = process 0, A = process 1, B = process 2 (two
 *                  allocators: B goes on evicting and allocating after A's
 *                  death and the recovery; only A may crash, with ACRASH)
 *  NS         slots (1 or 2); keys are 1..NS+1, slot s starts REGISTERED
 *             with key s+1, generation 1
 *  ITER       lookup+pin+unpin rounds per reader thread
 *  CYCLES     allocate(+evict)+fill+register rounds of the allocator
 *  MAXCRASH   how many process crashes one run may contain
 *  ACRASH     1: the allocator's process may crash as well (also while it
 *             holds the pool mutex -> EOWNERDEAD recovery by the reaper)
 *  SER        1: a process's 0<->1 count transitions on a slot are serialised
 *             by a process-local per-slot lock (0: not serialised)
 *  FASTGEN    FIX A (1): the count>0 fast path of PIN checks the handle's
 *             generation against the slot's (after incrementing the count)
 *  REGLOCK    FIX B (1): REGISTER sets the owner's bit under the same
 *             process-local per-slot lock as PIN/UNPIN
 *  EVFIX      FIX C (1): the evictor leaves EVICTING (commits RESET/MUTABLE
 *             gen+1) BEFORE deleting the index entry and clearing the key
 *  GMOD       generations count modulo GMOD (0 = no wrap)
 *  KEYRECHECK FIX D (1): after committing a pin the reader re-reads the key
 *             (stable while pinned) and drops the hit if it differs
 *  RELAXED    1: the pinner's state load may overtake its fetch_or (what
 *             happens without seq_cst / a full fence on the pin side)
 *  TENTLATE   1: the pinner records its tentative holder-table entry AFTER
 *             the fetch_or instead of before it
 *  CHECK_P1B  0: do not watch P1b (to let a run go on to the P1/P3 failure
 *             that a cleared bit leads to)
 *  NOSEQ      1: the lookup does not re-read the state word after the key
 *             (no seqlock check); the pin and the checks after it must
 *             prove the hit
 *  HOLD2      1: a reader that holds its hit looks the same key up again
 *             and pins it a second time (ghost T+6) before letting both go:
 *             the case of a match on blocks this process already holds
 *  ONEWRITER  1: a pin whose first, lock-free increment finds the count
 *             above 0 is trusted at once: no generation check (FIX A) and
 *             no key re-read (FIX D). Sound only with one thread per
 *             process (CFG 1, 4), where that count is our own hold, taken
 *             before the lookup
 *  INACT      1: bit 63 of the holder mask ("counted inactive") and the
 *             inactive count (docs/PROTOCOL.md): the UNPIN that empties a
 *             mask settles the slot under the mutex (needs LISTLOCK 1): count
 *             first, then CAS 0 -> INACTIVE; a pin whose fetch_or saw the mark
 *             takes it (fetch_and) after committing, inside a resurrection
 *             window held open until the end of its round (as a match call
 *             does), lowering the count when the window closes; an eviction
 *             clears the mark and lowers the count; the reaper settles every
 *             slot and recounts once no live process is inside a window.
 *             Checks P7 (at the end the count equals the marks) and P8 (a
 *             marked slot is REGISTERED or EVICTING)
 *  NOWIN      1 (with INACT): no windows; the recount does not wait
 *  LISTLOCK   the UNPIN that empties a mask inserts into the eviction list
 *             under the pool mutex: 0 not modelled, 1 after dropping the
 *             process-local lock, 2 while still holding it (lock inversion
 *             with REGISTER's mutex -> per-slot lock order)
 *
 * Properties (asserts; pan reports which one fails):
 *  P1   a committed pin (t) is on a slot whose generation is the pinned one
 *       and whose state is REGISTERED (or transiently EVICTING)
 *  P1b  a committed pin's holder bit is set (what keeps the evictor off)
 *  P3   when the evictor (or recovery) commits an eviction of (s,g) no
 *       committed pin on (s,g) exists
 *  P4   a hit returned to a reader is on a slot whose key is the key it
 *       looked up (checked continuously while the hit is held)
 *  P6   (HOLD2) a lookup whose index entry names the slot the reader
 *       holds for that key is a hit, unless an evictor is in the middle
 *       of trying that slot (EVICTING until it sees the holder bit and
 *       rolls back); an entry not yet published may miss
 *  P2   at the end (every process finished or crashed and reaped) every
 *       holders mask is 0, no holder-table entry is left, no slot is
 *       EVICTING, every index entry validates, the mutex is free
 *  P5   no deadlock: pan's invalid-end-state check (every process must
 *       terminate; the final checker waits for all of them)
 */

#ifndef CFG
#define CFG 1
#endif
#ifndef NS
#define NS 1
#endif
#define NK (NS+1)
#ifndef ITER
#define ITER 1
#endif
#ifndef CYCLES
#define CYCLES 2
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifndef ACRASH
#define ACRASH 0
#endif
#ifndef SER
#define SER 1
#endif
#ifndef FASTGEN
#define FASTGEN 0
#endif
#ifndef REGLOCK
#define REGLOCK 0
#endif
#ifndef EVFIX
#define EVFIX 0
#endif
#ifndef GMOD
#define GMOD 0
#endif
#ifndef KEYRECHECK
#define KEYRECHECK 0
#endif
#ifndef RELAXED
#define RELAXED 0
#endif
#ifndef TENTLATE
#define TENTLATE 0
#endif
#ifndef LISTLOCK
#define LISTLOCK 0
#endif
#ifndef CHECK_P1B
#define CHECK_P1B 1
#endif
#ifndef NOSEQ
#define NOSEQ 0
#endif
#ifndef HOLD2
#define HOLD2 0
#endif
#ifndef ONEWRITER
#define ONEWRITER 0
#endif
#ifndef INACT
#define INACT 0
#endif
#ifndef NOWIN
#define NOWIN 0
#endif

#if CFG == 1
#define NP 3
#define PROC_T0 0
#define PROC_T1 1
#define PROC_A  2
#elif CFG == 2
#define NP 2
#define PROC_T0 0
#define PROC_T1 0
#define PROC_A  1
#elif CFG == 3
#define NP 2
#define PROC_T0 0
#define PROC_T1 1
#define PROC_A  0
#else
#define NP 3
#define PROC_T0 0
#define PROC_T1 0
#define PROC_A  1
#define PROC_B  2
#endif

/* ghost pins: 0 t0, 1 t1, 2/3 allocator A (registration / held across the
   next cycle), 4/5 allocator B, 6/7 the second pins of t0 and t1 (HOLD2) */
#define NG 8

/* slot states */
#define RESET      0
#define MUTABLE    1
#define STAGED     2
#define REGISTERED 3
#define EVICTING   4

#define BIT(p) (1 << (p))

#if GMOD > 0
#define NEXTGEN(x) (((x) + 1) % GMOD)
#else
#define NEXTGEN(x) ((x) + 1)
#endif

/* one-step nondeterministic choices */
#if NS == 1
#define PICK_KEY(v)  if :: v = 1 :: v = 2 fi
#define PICK_SLOT(v) v = 0
#else
#define PICK_KEY(v)  if :: v = 1 :: v = 2 :: v = 3 fi
#define PICK_SLOT(v) if :: v = 0 :: v = 1 fi
#endif

/* ---- shared memory ------------------------------------------------------ */
/* slot state word {generation, owner, PRIMARY, state}: one 64-bit word in
   the design, so it is always read or written as a whole in one step */
byte st[NS];
byte gen[NS];
byte own[NS];
bool prim[NS];
byte key[NS];          /* the 128-bit sequence hash, as a small id; 0 = none */
byte holders[NS];      /* bit p: attacher p holds the slot at least once */
bool inact[NS];        /* bit 63 of the same word: counted inactive */
short ninact;          /* the inactive count */
byte win[NP];          /* resurrection windows a process has open (res_begin - res_end) */

/* registry index: one entry per key (the tag IS the key), entries never move */
byte idx_slot[NK+1];   /* 0 empty, else slot+1 */
byte idx_gen[NK+1];    /* generation (low bits) at registration */

/* per-process holder tables: the entry of process p for slot s is p*NS+s */
bool ht_used[NP*NS];   /* the entry exists (slot field written) */
bool ht_tent[NP*NS];   /* TENTATIVE flag */
byte ht_cnt[NP*NS];    /* count of holds by this process */
bool ht_own[NP*NS];    /* OWNED (allocated, MUTABLE/STAGED) */
bool stripe[NP*NS];    /* process-local per-slot lock (dies with the process) */

byte mtx;              /* robust pool mutex: 0 free, p+1 held by process p, NP+1 reaper */
bool dead[NP+1];       /* dead[NP] is the reaper's: never */
bool crashable[NP];
byte ncrash;
byte nthr[NP];
byte ndone[NP];
byte nreaped;

/* ---- ghost state (observation only) ------------------------------------- */
bool gp_on[NG];        /* committed pin / registration hold */
bool gp_hit[NG];       /* hit returned to the caller */
byte gp_slot[NG];
byte gp_gen[NG];
byte gp_key[NG];
byte gproc[NG];

/* ---- crash model ----------------------------------------------------------
   Every shared-memory access of a thread of process P is one STEP.  Before
   each step the process may crash (budget permitting): it stops forever,
   all its threads with it (a thread of a dead process takes no further step).
   The guard of STEPG blocks (lock acquisition); a blocked thread may crash
   too. */
#define STEP(...) \
  if \
  :: dead[P] -> goto die \
  :: atomic { !dead[P] && crashable[P] && ncrash < MAXCRASH -> ncrash++; dead[P] = 1; goto die } \
  :: atomic { !dead[P] -> __VA_ARGS__ } \
  fi

#define STEPG(G, ...) \
  if \
  :: dead[P] -> goto die \
  :: atomic { !dead[P] && crashable[P] && ncrash < MAXCRASH -> ncrash++; dead[P] = 1; goto die } \
  :: atomic { !dead[P] && (G) -> __VA_ARGS__ } \
  fi

/* ---- properties ---------------------------------------------------------- */
#define P1_OK(t) (!gp_on[t] || (gen[gp_slot[t]] == gp_gen[t] && \
                  (st[gp_slot[t]] == REGISTERED || st[gp_slot[t]] == EVICTING)))
#define P1B_OK(t) (!gp_on[t] || (holders[gp_slot[t]] & BIT(gproc[t])) != 0)
#define P4_OK(t) (!gp_hit[t] || key[gp_slot[t]] == gp_key[t])
#define NOPIN1(t, S, G) (!(gp_on[t] && gp_slot[t] == (S) && gp_gen[t] == (G)))
#define P3_OK(S, G) (NOPIN1(0, S, G) && NOPIN1(1, S, G) && NOPIN1(2, S, G) && NOPIN1(3, S, G) && \
                     NOPIN1(4, S, G) && NOPIN1(5, S, G) && NOPIN1(6, S, G) && NOPIN1(7, S, G))

#define P1_ALL  (P1_OK(0) && P1_OK(1) && P1_OK(2) && P1_OK(3) && P1_OK(4) && P1_OK(5) && \
                 P1_OK(6) && P1_OK(7))
#define P1B_ALL (P1B_OK(0) && P1B_OK(1) && P1B_OK(2) && P1B_OK(3) && P1B_OK(4) && P1B_OK(5) && \
                 P1B_OK(6) && P1B_OK(7))
#define P4_ALL  (P4_OK(0) && P4_OK(1) && P4_OK(6) && P4_OK(7))

/* P8: a marked slot is REGISTERED, or EVICTING while an evictor tries it */
#define P8_OK(S) (!inact[S] || st[S] == REGISTERED || st[S] == EVICTING)
#if NS == 1
#define P8_ALL P8_OK(0)
#else
#define P8_ALL (P8_OK(0) && P8_OK(1))
#endif

/* ghost bookkeeping of the reader's pin */
#define GHOST_ON(G) gp_on[G] = 1; gp_slot[G] = s; gp_gen[G] = g; gp_key[G] = k; \
                    gp_hit[G] = (KEYRECHECK == 0)
/* intended design: the fast path's pin is returned at once; with FIX A only
   after the generation check */
#if FASTGEN
#define FAST_GHOST(G) skip
#else
#define FAST_GHOST(G) GHOST_ON(G)
#endif
/* ONEWRITER: a hold on top of our own, trusted as a hit at once */
#define TRUST_GHOST(G) gp_on[G] = 1; gp_slot[G] = s; gp_gen[G] = g; gp_key[G] = k; gp_hit[G] = 1
#define GHOST_OFF(G) gp_on[G] = 0; gp_hit[G] = 0; gp_slot[G] = 0; gp_gen[G] = 0; gp_key[G] = 0

/* remove the holder-table entry unless something else still lives in it */
#define CLEAR_ENTRY(H) if :: (ht_cnt[H] == 0 && !ht_tent[H] && !ht_own[H]) -> ht_used[H] = 0 \
                          :: else -> skip fi

/* ---- UNPIN of slot s, ghost G, by a thread of process P ------------------
   uses the caller's locals H, fast */
inline UNPIN(s, G)
{
  H = P * NS + s;
#if SER
  /* fast path: count > 1, just decrement (CAS on the entry) */
  STEP( GHOST_OFF(G);
        if :: ht_cnt[H] > 1 -> ht_cnt[H]--; fast = 1
           :: else -> fast = 0 fi );
  if
  :: !fast ->
     /* 1 -> 0 transition: under the process-local per-slot lock */
     STEPG( !stripe[H], stripe[H] = 1 );
     STEP( if :: ht_cnt[H] > 1 -> ht_cnt[H]--; fast = 1
              :: else -> ht_cnt[H] = 0; fast = 0 fi );
     if
     :: !fast ->
        STEP( lz = ((holders[s] & ~BIT(P)) == 0);
              holders[s] = holders[s] & ~BIT(P) );      /* fetch_and(~bit) */
        STEP( CLEAR_ENTRY(H) )
     :: else -> lz = 0
     fi;
#if LISTLOCK == 2
     /* mask became 0: insert into the eviction list under the pool mutex,
        still holding the per-slot lock */
     if
     :: lz -> STEPG( mtx == 0, mtx = P + 1 ); STEP( mtx = 0 )
     :: else -> skip
     fi;
#endif
     STEP( stripe[H] = 0 );
#if LISTLOCK == 1
     if
     :: lz -> STEPG( mtx == 0, mtx = P + 1 );
#if INACT
        /* settle: count first, then CAS 0 -> INACTIVE (store.c) */
        STEP( if :: st[s] == REGISTERED && prim[s] && holders[s] == 0 && !inact[s] ->
                    ninact++; lz = 1
                 :: else -> lz = 0 fi );
        if
        :: lz -> STEP( if :: holders[s] == 0 && !inact[s] -> inact[s] = 1
                          :: else -> ninact-- fi )
        :: else -> skip
        fi;
#endif
        STEP( mtx = 0 )
     :: else -> skip
     fi;
#endif
     lz = 0
  :: else -> skip
  fi
#else
  /* no serialisation: atomic decrement, and the thread that brought the
     count to 0 clears the bit */
  STEP( GHOST_OFF(G); ht_cnt[H]--; fast = (ht_cnt[H] == 0) );
  if
  :: fast ->
     STEP( holders[s] = holders[s] & ~BIT(P) );
     STEP( CLEAR_ENTRY(H) )
  :: else -> skip
  fi
#endif
}

/* the round's resurrection window ends before anything that may wait for
   the mutex (kvbm_resw_close): the count goes down once, then res_end */
#if INACT && !NOWIN
#define WCLOSE if \
               :: wopen -> STEP( ninact = ninact - taken; taken = 0 ); \
                           STEP( win[P]--; wopen = 0 ) \
               :: else -> skip \
               fi
#else
#define WCLOSE skip
#endif

/* ---- reader thread: lookup, pin, (use), unpin ----------------------------- */
proctype reader(byte P; byte T)
{
  byte it, k, s, s1, g, gl, ws, wg, wk, old, H, G, s0, taken;
  bool fast, ok, wp, lz, r2, mine, oi, wopen;

  it = 0;
  do
  :: it < ITER ->
     it++;
     PICK_KEY(k);
     G = T;
     r2 = 0;

lookup:
     /* -- lock-free lookup and validation (design-anchors 8.4) -- */
     STEP( s1 = idx_slot[k];                         /* load_acquire(slot[i]) */
           if :: s1 == 0 -> goto next
              :: else -> s = s1 - 1; s1 = 0; mine = (r2 && s == s0) fi );
     STEP( gl = idx_gen[k] );                        /* gen_lo */
     STEP( ws = st[s]; wg = gen[s]; wp = prim[s];    /* w1 */
           if :: !(ws == REGISTERED && wp && wg == gl) -> assert(!mine || ws == EVICTING); goto next
              :: else -> gl = 0 fi );
#if NOSEQ
     STEP( wk = key[s];                              /* the key; no w2 */
           if :: wk != k -> assert(!mine); goto next
              :: else -> g = wg; H = P * NS + s;
                         ws = 0; wg = 0; wp = 0; wk = 0; ok = 0 fi );
#else
     STEP( wk = key[s] );                            /* the key */
     STEP( ok = (st[s] == ws && gen[s] == wg && prim[s] == wp); /* w2 == w1 */
           if :: !(ok && wk == k) -> assert(!mine); goto next
              :: else -> g = wg; H = P * NS + s;      /* handle (s, g) */
                         ws = 0; wg = 0; wp = 0; wk = 0; ok = 0 fi );
#endif

     /* -- PIN (s, g) (design-anchors 8.5) -- */
     /* fast path: this process already holds s: count++ (CAS, count > 0) */
#if ONEWRITER
     STEP( if :: ht_cnt[H] > 0 -> ht_cnt[H]++; fast = 1; TRUST_GHOST(G)
              :: else -> fast = 0 fi );
     if :: fast -> goto held :: else -> skip fi;
#else
     STEP( if :: ht_cnt[H] > 0 -> ht_cnt[H]++; fast = 1; FAST_GHOST(G)
              :: else -> fast = 0 fi );
#endif
#if SER
     if
     :: !fast ->
        STEPG( !stripe[H], stripe[H] = 1 );
        STEP( if :: ht_cnt[H] > 0 -> ht_cnt[H]++; fast = 1; FAST_GHOST(G)
                 :: else -> fast = 0 fi );
        if :: fast -> STEP( stripe[H] = 0 ) :: else -> skip fi
     :: else -> skip
     fi;
#endif
     if
     :: fast ->
#if FASTGEN
        /* FIX A: the entry has no generation; the slot's cannot change while
           this process's count is > 0, so compare after the increment */
        STEP( ws = st[s]; wg = gen[s];
              if :: wg == g -> GHOST_ON(G) :: else -> skip fi );
        if :: wg != g -> goto unpin :: else -> skip fi;
#endif
        goto pinned
     :: else -> skip
     fi;

     /* slow path, count 0 -> 1 */
#if !TENTLATE
     STEP( ht_used[H] = 1; ht_tent[H] = 1 );          /* record intent */
#endif
#if RELAXED
     STEP( ws = st[s]; wg = gen[s] );                 /* load overtakes the RMW */
     STEP( old = holders[s]; holders[s] = holders[s] | BIT(P) );
#else
     STEP( old = holders[s]; oi = inact[s]; holders[s] = holders[s] | BIT(P) );  /* fetch_or, seq_cst */
#if TENTLATE
     STEP( ht_used[H] = 1; ht_tent[H] = 1 );
#endif
     STEP( ws = st[s]; wg = gen[s] );                 /* load(state), seq_cst */
#endif
     if
     :: (ws != REGISTERED || wg != g) ->
        /* lost the race: undo, clean miss */
        if
        :: (old & BIT(P)) == 0 -> STEP( holders[s] = holders[s] & ~BIT(P) )
        :: else -> skip
        fi;
        STEP( ht_tent[H] = 0; CLEAR_ENTRY(H) );
#if SER
        STEP( stripe[H] = 0 );
#endif
        assert(!mine);                               /* P6 */
        goto next
     :: else -> skip
     fi;
     /* commit: count = 1, clear TENTATIVE */
#if SER
     STEP( ht_tent[H] = 0; ht_cnt[H] = 1; GHOST_ON(G) );
     STEP( stripe[H] = 0 );
#if INACT
     /* our committed pin takes the slot out of the inactive pool if the
        fetch_or saw the mark: whoever clears it lowers the count */
     if
     :: oi ->
#if !NOWIN
        if :: !wopen -> STEP( win[P]++; wopen = 1 ) :: else -> skip fi;   /* res_begin */
#endif
        STEP( if :: inact[s] -> inact[s] = 0; taken++ :: else -> skip fi );  /* fetch_and */
#if NOWIN
        STEP( ninact = ninact - taken; taken = 0 );
#endif
        oi = 0
     :: else -> skip
     fi;
#endif
#else
     STEP( ht_tent[H] = 0; ht_cnt[H]++; GHOST_ON(G) );
#endif

pinned:
#if KEYRECHECK
     /* FIX D: the key cannot change while pinned; re-check it */
     STEP( wk = key[s]; if :: wk == k -> gp_hit[G] = 1 :: else -> skip fi );
     if :: wk != k -> assert(!mine); goto unpin :: else -> skip fi;
#endif
held:
     /* ... the caller uses the block; P1/P1b/P4 are watched by monitor ... */
#if HOLD2
     if
     :: !r2 ->
        /* keep this hit and look the same key up again (ghost T+6) */
        d_step { s0 = s; r2 = 1; G = T + 6; s = 0; g = 0; H = 0; fast = 0; old = 0 };
        goto lookup
     :: else -> skip
     fi;
#endif

unpin:
     WCLOSE;
     UNPIN(s, G);

next:
     WCLOSE;
#if HOLD2
     if
     :: r2 -> UNPIN(s0, T)                           /* the first hit */
     :: else -> skip
     fi;
#endif
     d_step { s = 0; s1 = 0; g = 0; gl = 0; ws = 0; wg = 0; wk = 0; old = 0;
              H = 0; fast = 0; ok = 0; wp = 0; k = 0; G = 0; s0 = 0; r2 = 0; mine = 0;
              oi = 0; wopen = 0; taken = 0 }
  :: else -> break
  od;
  STEP( ndone[P]++ );
die:
  skip
}

/* ---- allocator: allocate (reset slot or evict), fill, stage, register ---- */
proctype allocator(byte P; byte T)
{
  byte c, s, g, h, k, H, hs, hc;
  bool fast, dup, hold, pw, lz, wi;

  c = 0;
  hold = 0;
  do
  :: c < CYCLES ->
     c++;
     PICK_SLOT(s);
     STEPG( mtx == 0, mtx = P + 1; h = st[s] );         /* pool mutex; candidate */
     if
     :: h == RESET ->
        STEP( st[s] = MUTABLE; own[s] = P )
     :: h == REGISTERED ->
        /* EVICT (design-anchors 8.5): Dekker handshake with PIN */
        STEP( g = gen[s]; st[s] = EVICTING );          /* CAS REGISTERED(g) -> EVICTING(g) */
        STEP( h = holders[s];                          /* load(holders), seq_cst */
              if :: h == 0 -> assert(P3_OK(s, g))      /* P3 at the decision */
                 :: else -> skip fi );
        if
        :: h != 0 ->
           STEP( st[s] = REGISTERED );                 /* CAS back; skip */
           STEP( mtx = 0 );
           goto cycle_end
        :: else -> skip
        fi;
#if INACT
        STEP( wi = inact[s]; inact[s] = 0 );           /* fetch_and(~INACTIVE) */
        STEP( if :: wi -> ninact-- :: else -> skip fi; wi = 0 );
#endif
#if EVFIX
        STEP( assert(P3_OK(s, g)); pw = prim[s];
              st[s] = MUTABLE; gen[s] = NEXTGEN(g); own[s] = P; prim[s] = 0 );
        STEP( if :: pw && idx_slot[key[s]] == s + 1 -> idx_slot[key[s]] = 0
                 :: else -> skip fi );                 /* delete index entry */
        STEP( key[s] = 0 );                            /* clear the key */
#else
        STEP( if :: prim[s] && idx_slot[key[s]] == s + 1 -> idx_slot[key[s]] = 0
                 :: else -> skip fi );                 /* delete index entry */
        STEP( key[s] = 0 );                            /* clear the key */
        STEP( assert(P3_OK(s, g));
              st[s] = MUTABLE; gen[s] = NEXTGEN(g); own[s] = P; prim[s] = 0 );
#endif
     :: else ->
        STEP( mtx = 0 );
        goto cycle_end
     fi;
     H = P * NS + s;
     STEP( ht_used[H] = 1; ht_own[H] = 1 );           /* record OWNED */
     STEP( mtx = 0 );

     /* fill and stage: exclusive owner, no mutex */
     PICK_KEY(k);
     STEP( key[s] = k );
     STEP( st[s] = STAGED );

     /* REGISTER (mutex) */
     STEPG( mtx == 0, mtx = P + 1 );
#if REGLOCK
     STEPG( !stripe[H], stripe[H] = 1 );               /* FIX B: lock order mutex -> stripe */
#endif
     STEP( dup = (idx_slot[k] != 0) );                 /* duplication policy: Allow */
     STEP( holders[s] = holders[s] | BIT(P) );         /* owner's bit while STAGED */
     STEP( ht_own[H] = 0; ht_cnt[H] = 1 );             /* OWNED entry -> pin, count 1 */
     STEP( st[s] = REGISTERED; prim[s] = !dup;
           gp_on[T] = 1; gp_hit[T] = 1; gp_slot[T] = s; gp_gen[T] = gen[s];
           gp_key[T] = k );
     if
     :: !dup ->
        STEP( idx_gen[k] = gen[s] );                   /* writer order: gen_lo, tag, */
        STEP( idx_slot[k] = s + 1 )                    /* then release-store slot */
     :: else -> skip
     fi;
#if REGLOCK
     STEP( stripe[H] = 0 );
#endif
     STEP( mtx = 0 );
     /* release the registration hold now, or keep it across the next cycle */
     if
     :: UNPIN(s, T)
     :: (!hold && c < CYCLES) ->
        STEP( hold = 1; hs = s; hc = c;
                 gp_on[T + 1] = gp_on[T]; gp_hit[T + 1] = gp_hit[T];
                 gp_slot[T + 1] = gp_slot[T]; gp_gen[T + 1] = gp_gen[T];
                 gp_key[T + 1] = gp_key[T];
                 gp_on[T] = 0; gp_hit[T] = 0; gp_slot[T] = 0; gp_gen[T] = 0;
                 gp_key[T] = 0 )
     fi;

cycle_end:
     if
     :: hold && hc < c -> UNPIN(hs, T + 1); d_step { hold = 0; hs = 0; hc = 0 }
     :: else -> skip
     fi;
     skip;
     d_step { s = 0; g = 0; h = 0; k = 0; H = 0; fast = 0; dup = 0; pw = 0 }
  :: else -> break
  od;
  if
  :: hold -> UNPIN(hs, T + 1); d_step { hold = 0; hs = 0; hc = 0 }
  :: else -> skip
  fi;
  STEP( ndone[P]++ );
die:
  skip
}

/* no live process other than d is inside a resurrection window */
#define WQ1(q, d) ((q) >= NP || (q) == (d) || dead[q] || win[q] == 0)
#define WQUIET(d) (WQ1(0, d) && WQ1(1, d) && WQ1(2, d))

/* ---- reaper of process d (any live attacher or kvbmd, under the mutex) --- */
proctype reaper(byte d)
{
  byte s, k, h, H;
  bool eod;

  (dead[d] || ndone[d] == nthr[d]);
  if
  :: dead[d] ->
     /* robust mutex: free, or held by a dead process (EOWNERDEAD) */
     atomic { (mtx == 0 || (mtx <= NP && dead[mtx - 1])) -> eod = (mtx != 0); mtx = NP + 1 };
     if
     :: eod ->
        /* design-anchors 8.8 step 2.1: resolve transient states */
        for (s : 0 .. NS-1) {
          if
          :: st[s] == EVICTING ->
             h = holders[s];
             if
             :: h != 0 -> st[s] = REGISTERED
             :: else ->
                atomic { assert(P3_OK(s, gen[s]));
                         st[s] = RESET; gen[s] = NEXTGEN(gen[s]); key[s] = 0; prim[s] = 0;
                         inact[s] = 0 }
             fi
          :: (st[s] == MUTABLE || st[s] == STAGED) && dead[own[s]] ->
             atomic { st[s] = RESET; gen[s] = NEXTGEN(gen[s]); key[s] = 0; prim[s] = 0; own[s] = 0 }
          :: else -> skip
          fi
        };
        /* 2.3: registry repair: drop entries that do not validate ... */
        for (k : 1 .. NK) {
          if
          :: idx_slot[k] != 0 &&
             !(st[idx_slot[k] - 1] == REGISTERED && prim[idx_slot[k] - 1] &&
               gen[idx_slot[k] - 1] == idx_gen[k] && key[idx_slot[k] - 1] == k) ->
             idx_slot[k] = 0
          :: else -> skip
          fi
        };
        /* ... and re-insert PRIMARY slots that are missing */
        for (s : 0 .. NS-1) {
          if
          :: st[s] == REGISTERED && prim[s] && key[s] != 0 && idx_slot[key[s]] == 0 ->
             idx_gen[key[s]] = gen[s];
             idx_slot[key[s]] = s + 1
          :: else -> skip
          fi
        }
     :: else -> skip
     fi;
     /* REAP (design-anchors 8.9): the dead process's pins are void */
     skip;
     d_step {
       for (k : 0 .. NG-1) {
         if
         :: gproc[k] == d -> gp_on[k] = 0; gp_hit[k] = 0; gp_slot[k] = 0; gp_gen[k] = 0; gp_key[k] = 0
         :: else -> skip
         fi
       };
       k = 0
     };
     for (s : 0 .. NS-1) {
       H = d * NS + s;
       if
       :: ht_used[H] -> holders[s] = holders[s] & ~BIT(d)   /* committed or tentative */
       :: else -> skip
       fi;
       if
       :: (st[s] == MUTABLE || st[s] == STAGED) && own[s] == d ->
          atomic { st[s] = RESET; gen[s] = NEXTGEN(gen[s]); key[s] = 0; prim[s] = 0; own[s] = 0 }
       :: else -> skip
       fi;
       skip;
       d_step { ht_used[H] = 0; ht_tent[H] = 0; ht_cnt[H] = 0; ht_own[H] = 0; stripe[H] = 0 }
     };
#if INACT
     /* settle every slot (a live process may be between its unpin and its
        settle), then recount once no live process is inside a window */
     for (s : 0 .. NS-1) {
       if
       :: st[s] == REGISTERED && prim[s] && holders[s] == 0 && !inact[s] ->
          atomic { inact[s] = 1; ninact++ }
       :: else -> skip
       fi
     };
#if NOWIN
     atomic {
#else
     atomic { WQUIET(d) ->
#endif
       h = 0;
       for (s : 0 .. NS-1) { if :: inact[s] -> h++ :: else -> skip fi };
       ninact = h; h = 0; s = 0 };
#endif
     mtx = 0
  :: else -> skip
  fi;
  skip;
  d_step { s = 0; k = 0; h = 0; H = 0; eod = 0 };
  nreaped++
}

/* ---- continuous invariants: fire in any reachable state that breaks them - */
active proctype monitor()
{
end:
  if
  :: !P1_ALL  -> assert(P1_ALL)
#if CHECK_P1B
  :: !P1B_ALL -> assert(P1B_ALL)
#endif
  :: !P4_ALL  -> assert(P4_ALL)
#if INACT
  :: !P8_ALL  -> assert(P8_ALL)
#endif
  fi
}

/* ---- final state: P2 and structural invariants ---------------------------- */
active proctype checker()
{
  byte s, k;
  nreaped == NP;
  atomic {
    for (s : 0 .. NS-1) {
      assert(holders[s] == 0);                          /* P2 */
      assert(st[s] != EVICTING)
    };
    for (s : 0 .. NP*NS-1) {
      assert(!ht_used[s] && !ht_tent[s] && ht_cnt[s] == 0)
    };
    for (k : 1 .. NK) {
      assert(idx_slot[k] == 0 ||
             (st[idx_slot[k] - 1] == REGISTERED && gen[idx_slot[k] - 1] == idx_gen[k] &&
              key[idx_slot[k] - 1] == k))
    };
    assert(mtx == 0);
#if INACT
    k = 0;
    for (s : 0 .. NS-1) {
      if :: inact[s] -> k++; assert(st[s] == REGISTERED && holders[s] == 0)
         :: else -> skip fi
    };
    assert(ninact == k)                                 /* P7 */
#endif
  }
}

init
{
  byte s;
  atomic {
    for (s : 0 .. NS-1) {
      st[s] = REGISTERED; gen[s] = 1; key[s] = s + 1; prim[s] = 1;
      inact[s] = INACT; ninact = ninact + INACT;
      idx_slot[s + 1] = s + 1; idx_gen[s + 1] = 1
    };
    s = 0;
    gproc[0] = PROC_T0; gproc[1] = PROC_T1; gproc[2] = PROC_A; gproc[3] = PROC_A;
    gproc[6] = PROC_T0; gproc[7] = PROC_T1;
#if CFG == 4
    gproc[4] = PROC_B; gproc[5] = PROC_B;
    nthr[PROC_T0]++; nthr[PROC_A]++; nthr[PROC_B]++;
    crashable[PROC_A] = ACRASH;
    crashable[PROC_B] = 0;
    crashable[PROC_T0] = 1;
    run reader(PROC_T0, 0);
    run allocator(PROC_A, 2);
    run allocator(PROC_B, 4);
#else
    gproc[4] = PROC_A; gproc[5] = PROC_A;     /* unused */
    nthr[PROC_T0]++; nthr[PROC_T1]++; nthr[PROC_A]++;
    crashable[PROC_A] = ACRASH;
    crashable[PROC_T0] = 1;
    crashable[PROC_T1] = 1;
    run reader(PROC_T0, 0);
    run reader(PROC_T1, 1);
    run allocator(PROC_A, 2);
#endif
    for (s : 0 .. NP-1) { run reaper(s) };
    s = 0
  }
}
