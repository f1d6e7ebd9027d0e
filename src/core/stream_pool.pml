/* Promela model of the exclusive-slot free list of stream_pool.c and idstack.h: the tagged-index
 * (Treiber) stack, the slow-path wait (waiters count, wait_mu, wait_cv) and the return of a slot
 * by sp_stream_release_current or by the thread-exit destructor.
 *
 * SLOTS slots, THREADS threads; each thread takes a slot ROUNDS times (pop; when empty, the slow
 * path: lock wait_mu, waiters++, pop again, sleep on the condition variable, woken by a releaser),
 * owns it, and gives it back, either explicitly or, nondeterministically, by exiting while it owns
 * it (the destructor does the same push and wake-up). The wait is modelled without its time-out,
 * so a lost wake-up leaves a thread asleep forever: an invalid end state.
 *
 * Checked (spin -a; cc -DSAFETY; ./pan): assertions and invalid end states.
 *  - No slot ever has two owners (the tag defeats ABA on the pop's CAS).
 *  - No wake-up is lost: every thread that waits gets a slot (no invalid end state).
 *  - At the end the stack holds every slot exactly once, and no thread waits.
 * -DNOTAG makes the CAS compare the index only: its counterexample is the ABA race the tag
 * prevents (a pop installs a stale link, and a slot gets two owners or the stack loses one).
 * Sequentially consistent: the C code's two RMWs on `waiters` give the same order (see
 * stream_pool.c).
 *
 * run: ok
 * run: violation -DNOTAG
 */
#define SLOTS 2
#define THREADS 3
#define ROUNDS 2
#define NONE 255

byte tag = 0;               /* head: tag ...                                           */
byte top = NONE;            /* ... and top index (NONE: empty)                         */
byte link[SLOTS];           /* idstack links                                           */
byte owner[SLOTS];          /* ghost: 0 free, else thread + 1                          */
byte waiters = 0;           /* threads in the slow path                                */
bit mu = 0;                 /* wait_mu                                                 */
bit sleeping[THREADS];      /* on wait_cv                                              */
byte done = 0;

#ifdef NOTAG
#define HEAD_IS(t, i) (top == i)
#else
#define HEAD_IS(t, i) (tag == t && top == i)
#endif

/* Pop: read the head and the top's link, CAS (tag, top) -> (tag + 1, link). (Reading the head
 * and the link in one step drops only interleavings whose CAS fails anyway; the ABA window is
 * between the link read and the CAS.) */
inline pop(got) {
  do
  :: atomic { otag = tag; otop = top; if :: otop != NONE -> below = link[otop] :: else fi };
    if
    :: otop == NONE -> got = NONE; break
    :: else ->
      if
      :: atomic { HEAD_IS(otag, otop) -> tag++; top = below; got = otop }; break
      :: else -> skip
      fi
    fi
  od
}

/* Push: read the head and link i to the old top (i is the pusher's until the CAS), CAS
 * (tag, top) -> (tag + 1, i). */
inline push(i) {
  do
  :: atomic { otag = tag; otop = top; link[i] = otop };
    if
    :: atomic { HEAD_IS(otag, otop) -> tag++; top = i }; break
    :: else -> skip
    fi
  od
}

/* sp__slot_release: push, then (an RMW read of waiters) signal under wait_mu if someone waits. */
inline give_back(i) {
  push(i);
  if
  :: waiters > 0 ->
    atomic { mu == 0 -> mu = 1 };
    if
    :: sleeping[0] -> sleeping[0] = 0
    :: sleeping[1] -> sleeping[1] = 0
    :: sleeping[2] -> sleeping[2] = 0
    :: else -> skip
    fi;
    mu = 0
  :: else -> skip
  fi
}

proctype thread(byte me) {
  byte otag, otop, below, got, r = 0;
  do
  :: r < ROUNDS ->
    pop(got);
    if
    :: got == NONE ->                                 /* slot_wait    */
      atomic { mu == 0 -> mu = 1 };
      waiters++;
      do
      :: pop(got);
        if
        :: got != NONE -> break
        :: else ->
          atomic { mu = 0; sleeping[me] = 1 };         /* pthread_cond_wait */
          sleeping[me] == 0;
          atomic { mu == 0 -> mu = 1 }
        fi
      od;
      waiters--;
      mu = 0
    :: else -> skip
    fi;
    atomic { assert(owner[got] == 0); owner[got] = me + 1 };
    atomic { owner[got] = 0; below = 0 };             /* the thread uses the slot, then ... */
    if
    :: give_back(got); r++                            /* sp_stream_release_current */
    :: give_back(got); break                          /* exit: the key destructor */
    fi
  :: else -> break
  od;
  done++
}

init {
  byte i, n = 0, seen = 0;
  atomic {
    /* sp__slot_pool_create pushes slots SLOTS-1 .. 0: the stack is 0, 1, ... */
    i = SLOTS;
    do
    :: i > 0 -> i--; link[i] = top; top = i
    :: else -> break
    od;
    run thread(0); run thread(1); run thread(2)
  };
  done == THREADS;
  assert(waiters == 0 && !sleeping[0] && !sleeping[1] && !sleeping[2]);
  i = top;
  do
  :: i == NONE -> break
  :: else -> assert(n < SLOTS && !(seen & (1 << i))); seen = seen | (1 << i); n++; i = link[i]
  od;
  assert(n == SLOTS)
}
