/* The batcher's hand-off (src/infer/batcher.c) as a Promela model for spin: request states,
 * the lock-free inbox, the collector's sleep on qword with the want/inbox_n handshake, the
 * callers' sleeps (own state word while QUEUED/QSLEEP, the worker's gen once TAKEN, with the
 * sleepers count), completion and the pass wake, and sp_batcher_destroy (stopping, the pushing
 * drain, closed, join, the callers drain, free) racing requests in flight.
 *
 * Futexes are modelled exactly: futex_wait compares the word and goes to sleep in one step (or
 * returns at once), futex_wake wakes the sleepers of that word; the collector's wait with a
 * deadline may also time out at any moment. The caller's spin phase is left out (it only
 * returns early when the state is DONE, which the sleeping path checks too). max_batch is MB.
 *
 * What spin proves, exhaustively for NC callers and NW workers (the runs below: 2 callers with 1
 * worker, 1 caller with 2 workers competing for the collector role, each plus the destroyer, so 4
 * threads; larger configurations are not run: 2 callers with 1 worker already has 4.3 million
 * states): every accepted request is answered exactly once, and its
 * caller returns with it; a request refused by a stopping batcher is never queued; no wake-up
 * is lost (no thread is left blocked: callers, workers and destroy all finish, which spin checks
 * as "no invalid end state"); a worker never touches a request after its caller has returned;
 * no caller touches the batcher after destroy freed it.
 * Negative controls (each must give a counterexample): NO_QSLEEP_WAKE (req_complete does not wake
 * a caller asleep on its state word: a lost wake-up), NO_PUSHING_DRAIN (destroy closes without
 * waiting for pushes under way: an accepted request nobody answers), NO_CALLERS_DRAIN (destroy
 * frees while callers are still leaving: a use after free).
 *
 * run: ok -DNC=1 -DNW=2
 * run: ok -DNC=2 -DNW=1
 * run: violation -DNC=2 -DNW=1 -DNO_QSLEEP_WAKE
 * run: violation -DNC=2 -DNW=1 -DNO_PUSHING_DRAIN
 * run: violation -DNC=2 -DNW=1 -DNO_CALLERS_DRAIN
 */
#ifndef NC
#define NC 2
#endif
#ifndef NW
#define NW 1
#endif
#define MB 2
#define NIL 255
#define WANT_NONE 255
/* request states */
#define QUEUED 0
#define QSLEEP 1
#define TAKEN 2
#define DONE 3
/* futex words a thread can sleep on: STATE(c), GEN(w), QWORD */
#define AWAKE 0
#define STATE_W(c) (1 + (c))
#define GEN_W(w) (1 + NC + (w))
#define QWORD_W (1 + NC + NW)
#define NT (NC + NW)

byte state[NC];          /* r->state                                      */
byte taker[NC];          /* r->w                                          */
byte rnext[NC];          /* r->next (inbox, then queue)                   */
bit gone[NC];            /* the caller returned: its request is gone      */
bit accepted[NC];
byte inbox = NIL;        /* b->inbox (stack top)                          */
short inbox_n;
byte want = WANT_NONE;
byte qword;              /* futex word of the collector                   */
byte pushing;
bit stopping, closed;
bit mu;                  /* the collector role                            */
byte head = NIL, tail = NIL, count; /* mu                                 */
byte gen[NW];            /* futex word of TAKEN sleepers                  */
byte sleepers[NW];
byte callers;
byte entered;            /* callers that entered sp_batcher_infer         */
bit freed;               /* destroy freed the batcher                     */
byte workers_done;
byte asleep[NT];         /* which futex word thread t sleeps on           */

inline lock(m) { atomic { m == 0 -> m = 1 } }
inline unlock(m) { m = 0 }

/* futex_wait(word, val) by thread me; the caller passes the word's current-value expression. */
#define FUTEX_WAIT(me, wordid, cur, val) \
  atomic { if :: (cur) == (val) -> asleep[me] = wordid :: else -> skip fi }; \
  asleep[me] == AWAKE

inline futex_wake(wordid) {
  atomic {
    t = 0;
    do
    :: t < NT -> if :: asleep[t] == wordid -> asleep[t] = AWAKE :: else -> skip fi; t++
    :: else -> break
    od;
    t = 0
  }
}

inline wake_collector() {
  qword++;
  futex_wake(QWORD_W)
}

proctype caller(byte c) {
  byte t, st, g, w, n, wv;
  atomic { callers++; entered++ };  /* sp_batcher_infer starts before destroy does (contract) */
  /* batch_push */
  pushing++;
  if
  :: stopping -> pushing--
  :: else ->
     atomic { rnext[c] = inbox; inbox = c };  /* the CAS loop, as its successful step */
     accepted[c] = 1;
     inbox_n++;
     n = inbox_n;
     wv = want;
     if
     :: atomic { n > 0 && n >= wv && want == wv -> want = WANT_NONE }; wake_collector()
     :: else -> skip
     fi;
     atomic { n = 0; wv = 0; pushing-- }
  fi;
  if
  :: accepted[c] ->
     /* req_wait, sleeping phase */
     do
     :: st = state[c];
        if
        :: st == DONE -> st = 0; break
        :: st == QUEUED -> atomic { if :: state[c] == QUEUED -> state[c] = QSLEEP :: else -> skip fi }
        :: st == QSLEEP -> FUTEX_WAIT(c, STATE_W(c), state[c], QSLEEP)
        :: st == TAKEN ->
           w = taker[c];
           assert(!freed);
           sleepers[w]++;
           g = gen[w];
           if
           :: state[c] != DONE -> FUTEX_WAIT(c, GEN_W(w), gen[w], g)
           :: else -> skip
           fi;
           assert(!freed);
           atomic { sleepers[w]--; w = 0; g = 0 }
        fi
     od
  :: else -> skip
  fi;
  assert(!freed);
  callers--;
  gone[c] = 1
}

/* batch_drain: the inbox, reversed, onto the queue (mu held). */
inline drain() {
  atomic { r = inbox; inbox = NIL };
  first = NIL; k = 0;
  do
  :: r != NIL -> nx = rnext[r]; rnext[r] = first; first = r; r = nx; k++
  :: else -> break
  od;
  if
  :: k > 0 ->
     inbox_n = inbox_n - k;
     last = first;
     do :: rnext[last] != NIL -> last = rnext[last] :: else -> break od;
     if :: tail != NIL -> rnext[tail] = first :: else -> head = first fi;
     tail = last;
     count = count + k
  :: else -> skip
  fi;
  atomic { r = NIL; nx = 0; first = 0; last = 0; k = 0 }
}

/* batch_wait_rows(target, deadline): timed: the wait may also time out. */
inline wait_rows(target, timed) {
  g = qword;
  want = target;
  if
  :: (inbox_n < target) && !closed ->
     atomic { if :: qword == g -> asleep[me] = QWORD_W :: else -> skip fi };
     if
     :: asleep[me] == AWAKE
     :: timed -> atomic { asleep[me] = AWAKE }   /* the deadline passed */
     fi
  :: else -> skip
  fi;
  atomic { want = WANT_NONE; g = 0 }
}

proctype worker(byte wi) {
  byte me = NC + wi;
  byte r, nx, first, last, k, g, t, n, j;
  byte reqs[MB];
  do
  :: /* batch_collect */
     lock(mu);
     drain();
     do
     :: count > 0 -> break
     :: else ->
        if
        :: closed && inbox == NIL -> unlock(mu); goto exit
        :: else -> wait_rows(1, 0); drain()
        fi
     od;
     do /* gather more until max_batch, closed, or the deadline (any time) */
     :: count < MB && !closed -> wait_rows(MB - count, 1); drain()
     :: true -> break
     od;
     n = 0;
     do
     :: n < MB && head != NIL ->
        r = head;
        assert(!gone[r]);
        taker[r] = wi;
        atomic { if :: state[r] == QUEUED -> state[r] = TAKEN :: else -> skip fi };
        reqs[n] = r; n++;
        head = rnext[r];
        rnext[r] = NIL
     :: else -> break
     od;
     if :: head == NIL -> tail = NIL :: else -> skip fi;
     count = count - n;
     unlock(mu);
     /* batch_run: answer each row, then one wake for the pass */
     j = 0;
     do
     :: j < n ->
        r = reqs[j];
        assert(!gone[r]);
        atomic { k = state[r]; state[r] = DONE };  /* exchange */
        assert(k != DONE);                        /* answered once */
#ifndef NO_QSLEEP_WAKE
        if :: k == QSLEEP -> futex_wake(STATE_W(r)) :: else -> skip fi;
#endif
        j++
     :: else -> break
     od;
     atomic { j = 0; n = 0; r = NIL; k = 0; reqs[0] = 0; reqs[1] = 0 };
     gen[wi]++;
     if :: sleepers[wi] > 0 -> futex_wake(GEN_W(wi)) :: else -> skip fi
  od;
exit:
  workers_done++
}

proctype destroyer() {
  byte t, c;
  entered == NC;           /* destroy is called while these requests are in flight */
  stopping = 1;
#ifndef NO_PUSHING_DRAIN
  pushing == 0;
#endif
  closed = 1;
  wake_collector();
  workers_done == NW;      /* pthread_join */
#ifndef NO_CALLERS_DRAIN
  callers == 0;            /* batch_wait_callers */
#endif
  freed = 1;
  /* every accepted request was answered */
  c = 0;
  do
  :: c < NC -> assert(!accepted[c] || state[c] == DONE); c++
  :: else -> break
  od
}

init {
  byte i;
  atomic {
    i = 0;
    do :: i < NC -> rnext[i] = NIL; run caller(i); i++ :: else -> break od;
    i = 0;
    do :: i < NW -> run worker(i); i++ :: else -> break od;
    run destroyer()
  }
}
