/* Promela model of the event handle protocol of event_pool.c (issue 14 C1): acquire, release,
 * calls through a (possibly stale) copy of a handle, the per-thread caches with their (index,
 * generation) claim and the steal of another thread's cached slot.
 *
 * One slot (the race needs only one). Two owner threads acquire and release it ROUNDS times each
 * and publish every handle they get; a user thread makes USES calls through whatever handle was
 * published last, so its copy may go stale at any point. Ghost variables: `inc` counts acquires
 * (the event's incarnation); every handle carries the incarnation it was acquired as.
 *
 * Checked (spin -a; cc -DSAFETY; ./pan): assertions and invalid end states.
 *  - A call that acts, acts on the incarnation its handle names (the C1 property).
 *  - The slot never has two owners.
 *  - No slot is lost: every owner that wants the slot eventually gets it (no invalid end state),
 *    and at the end it is on the shared stack or in a cache.
 *
 * -DOLD models the former protocol: a call checks (generation, live) with one load and acts in a
 * later step; release bumps the generation and frees the slot at once. Its counterexample is the
 * C1 race: the check passes, the owner releases and acquires again, the call acts on the new
 * event. The default (the current protocol): the check and a pin are one CAS; release bumps the
 * generation but a pinned slot is recycled only by its last unpin.
 *
 * Claims of cached slots are asymmetric: the owner announces its claim in its hazard word, loads
 * the state and, if still (gen, cached), stores (gen, free), or (gen, live) when the claim is
 * the acquire itself (the slot's event exists), then clears the hazard (no read-modify-write);
 * a stealer marks the slot (CAS to cached | steal), waits until no hazard names it, and CASes
 * the mark to free; if its membarrier fails it removes the mark instead. An owner that finds
 * the mark waits until it is gone and tries again (keeping its pair). Checked: the slot never has
 * two owners, and at the end it is on the shared stack or in a cache whose pair matches it. (The
 * C code runs membarrier between the stealer's mark and its hazard scan, which makes this
 * sequentially consistent model's order hold on the machine: event_pool.c.) -DNO_HAZARD_SCAN
 * skips the wait (its counterexample: the owner and the stealer both take the slot).
 *
 * A query pins nothing: it checks (generation, live) with one load, reads the backend event (which
 * may meanwhile belong to the slot's next incarnation), and keeps the answer only if a second load
 * still finds (generation, live); else it is SP_ERR_INVALID_HANDLE. Checked: a kept answer was
 * read from the handle's own incarnation. -DNO_RECHECK keeps every answer (its counterexample:
 * the read sees the next incarnation).
 * Sequentially consistent (each Promela statement is atomic); the C code's orders are argued in
 * event_pool.c.
 *
 * run: ok
 * run: violation:(inc==hi) -DOLD
 * run: violation:(seen==hi) -DNO_RECHECK
 * run: violation:(owners==1) -DNO_HAZARD_SCAN
 */
#define ROUNDS 2
#define USES 3
#define NONE 255

byte gen = 1;             /* slot state: generation                                 */
bit live = 0;             /* slot state: acquired                                   */
bit cached = 0;           /* slot state: in a thread cache                          */
bit steal = 0;            /* slot state: a stealer's mark on a cached slot          */
bit hz[2];                /* owner i is claiming a pair of its cache (hazard word)  */
byte pins = 0;            /* slot state: calls in progress                          */
bit on_shared = 1;        /* the slot is on the shared free stack                   */
bit has[2];               /* owner i's cache holds the slot ...                     */
byte cgen[2];             /* ... cached at this generation                          */
byte inc = 0;             /* ghost: acquires so far                                 */
byte owners = 0;          /* ghost: threads owning the slot                         */
byte pub_gen = NONE;      /* the last published handle: generation ...              */
byte pub_inc = 0;         /* ... and the incarnation it was acquired as (ghost)     */
byte done = 0;            /* threads finished                                        */

proctype owner(byte me) {
  byte k = 0, hg, hi, cg, sg;
  bit got, ok, mk, fused;
  do
  :: k < ROUNDS ->
    got = 0;
    do
    :: got -> break
    :: else ->
      if
      :: has[me] ->                       /* own cache: claim (gen, cached) -> free or live */
        hz[me] = 1;                                          /* announce */
        atomic {                                             /* load */
          ok = (cached && !steal && !live && gen == cgen[me]);
          mk = (cached && steal && gen == cgen[me])
        };
        if
        :: ok ->
          if
          :: atomic { cached = 0; steal = 0; got = 1 }       /* store (gen, free) */
          :: atomic { cached = 0; steal = 0; got = 1;        /* store (gen, live): the acquire */
                      owners++; assert(owners == 1); live = 1; inc++; hg = gen; hi = inc;
                      fused = 1 }
          fi
        :: else
        fi;
        hz[me] = 0;
        if
        :: mk -> !(cached && steal && gen == cgen[me])       /* marked: wait, then try again */
        :: else -> has[me] = 0                               /* taken, or stolen */
        fi
      :: atomic { on_shared -> on_shared = 0; got = 1 }   /* pop the shared stack */
#ifndef OLD
      :: atomic { (cached && !live && !steal) -> steal = 1; sg = gen } ->  /* steal: mark */
        if
        :: skip ->                                          /* membarrier ran */
#ifndef NO_HAZARD_SCAN
          (hz[1 - me] == 0);                                /* no claim under way */
#endif
          atomic { if :: (cached && steal && gen == sg) -> cached = 0; steal = 0; got = 1 :: else fi }
        :: atomic { (cached && steal && gen == sg) -> steal = 0 }  /* it failed: give it back */
        fi
#endif
      fi
    od;
    if
    :: !fused ->
      atomic { owners++; assert(owners == 1) };
      atomic { live = 1; inc++; hg = gen; hi = inc }      /* acquire */
    :: else -> fused = 0                                  /* acquired inside the claim */
    fi;
    atomic { pub_gen = hg; pub_inc = hi };                 /* a copy escapes */
    atomic {                                               /* release: CAS (hg, live) */
      owners--;
      assert(live && gen == hg);
      gen++;
      live = 0;
#ifdef OLD
      on_shared = 1;
#else
      if
      :: pins == 0 -> if :: cached = 1; cg = gen :: on_shared = 1; cg = NONE fi
      :: else -> cg = NONE                                 /* the last unpin recycles it */
      fi
#endif
    };
#ifndef OLD
    if :: cg != NONE -> cgen[me] = cg; has[me] = 1 :: else fi;
#endif
    k++
  :: else -> break
  od;
  done++
}

proctype user() {
  byte j = 0, hg, hi, seen;
  bit ok;
  do
  :: j < USES ->
    atomic { hg = pub_gen; hi = pub_inc };
    if
    :: hg == NONE -> skip
    :: else ->
#ifdef OLD
      if
      :: (live && gen == hg) -> assert(inc == hi)         /* check, then act: two steps */
      :: else -> skip                                      /* SP_ERR_INVALID_HANDLE */
      fi
#else
      if
      :: atomic { if :: (live && gen == hg) -> pins++; ok = 1 :: else -> ok = 0 fi };  /* pin CAS */
        if
        :: ok ->
          assert(inc == hi);                               /* act */
          atomic { pins--; if :: (pins == 0 && !live) -> on_shared = 1 :: else fi }  /* unpin */
        :: else -> skip                                    /* SP_ERR_INVALID_HANDLE */
        fi
      :: ok = (live && gen == hg);                         /* query: the first load */
        if
        :: ok ->
          seen = inc;                                      /* reads the backend event */
#ifdef NO_RECHECK
          assert(seen == hi)
#else
          if
          :: (live && gen == hg) -> assert(seen == hi)     /* the second load: answer kept */
          :: else -> skip                                  /* SP_ERR_INVALID_HANDLE */
          fi
#endif
        :: else -> skip
        fi
      fi
#endif
    fi;
    j++
  :: else -> break
  od;
  done++
}

init {
  atomic { run owner(0); run owner(1); run user() };
  done == 3;
  /* every slot is where an owner finds it: the shared stack, or a cache whose pair matches */
  assert(!live && pins == 0 && owners == 0 && !steal &&
         (on_shared || (cached && ((has[0] && cgen[0] == gen) || (has[1] && cgen[1] == gen)))))
}
