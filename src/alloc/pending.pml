/* The pending-free protocol of the caching allocator (src/alloc/pending.c, and the free path of
 * src/alloc/alloc.c: free_record, free_publish_pending), as a Promela model for spin.
 *
 * What is modelled: NB blocks, each used by work in flight on another stream (sp_record_stream)
 * and freed by its own thread. A free records an event on that stream, then publishes the block
 * on the pending list (pushed at the head under pending_mu). Every freeing thread then polls
 * (sp__pending_poll(wait = false)): whoever wins the pending_busy try-flag reads the head under
 * the lock, walks link_next without it, and moves each block whose events completed back to its
 * cache (unlinking it under the lock). A final thread (sp_empty_cache) waits for the device, then
 * polls with wait = true. The device finishes each use at any time; an event recorded after a use
 * completes at some time after it. One C statement is one Promela step, so every interleaving of
 * the real statements is explored.
 *
 * What spin proves, exhaustively for 2 and 3 freeing threads (plus the final poller and the
 * device): a block becomes CACHED (reusable by any stream) only when no other stream's work on it
 * is in flight; it is completed exactly once; at most one thread removes from the list at a time;
 * the unlocked walk never loses or revisits a block while frees push concurrently; after the
 * final poll the list is empty and every block is cached; no thread is left blocked.
 * Negative control: -DPUBLISH_FIRST publishes before recording the event (n_events still 0, so the
 * poller finds it done vacuously); spin must find the counterexample (reuse with work in flight).
 *
 * Runs (tests/spin/run.sh reads these lines):
 * run: ok -DNB=2
 * run: ok -DNB=3
 * run: violation -DNB=2 -DPUBLISH_FIRST
 */
#ifndef NB
#define NB 2
#endif
#define NIL 255
#define LIVE 1
#define PENDING 2
#define CACHED 3

byte state[NB];   /* LIVE, PENDING or CACHED                                   */
bit used[NB];     /* the other stream's work on the block is in flight         */
bit recorded[NB]; /* the free's event exists (blk->n_events == 1)              */
bit ev_done[NB];  /* that event completed                                      */
byte nxt[NB];     /* link_next                                                 */
byte prv[NB];     /* link_prev                                                 */
byte head = NIL;  /* a->pending                                                */
bit pending_mu;
bit busy;         /* a->pending_busy                                           */
byte removers;    /* threads between taking and dropping busy                  */
byte freed;       /* frees finished                                            */

inline lock(m) { atomic { m == 0 -> m = 1 } }
inline unlock(m) { m = 0 }

inline publish(b) {
  lock(pending_mu);
  nxt[b] = head;
  prv[b] = NIL;
  if
  :: head != NIL -> prv[head] = b
  :: else -> skip
  fi;
  head = b;
  state[b] = PENDING;
  unlock(pending_mu)
}

inline complete(b) {
  lock(pending_mu);
  if
  :: prv[b] != NIL -> nxt[prv[b]] = nxt[b]
  :: else -> head = nxt[b]
  fi;
  if
  :: nxt[b] != NIL -> prv[nxt[b]] = prv[b]
  :: else -> skip
  fi;
  unlock(pending_mu);
  assert(state[b] == PENDING);  /* completed once, and only a pending block */
  assert(!used[b]);             /* the safety property: no work of another stream in flight */
  state[b] = CACHED
}

/* sp__pending_poll; wait: spin on the busy flag instead of giving up. */
inline poll(wait) {
  got = 0;
  do
  :: atomic { busy == 0 -> busy = 1; got = 1 }; break
  :: atomic { busy == 1 && !wait -> skip }; break
  od;
  if
  :: got ->
    removers++;
    assert(removers == 1);
    lock(pending_mu);
    blk = head;
    unlock(pending_mu);
    do
    :: blk != NIL ->
      next = nxt[blk];
      if
      :: !recorded[blk] || ev_done[blk] -> complete(blk)  /* pending_done: every event done */
      :: else -> skip
      fi;
      blk = next
    :: else -> break
    od;
    removers--;
    busy = 0
  :: else -> skip
  fi
}

proctype freer(byte b) {
  byte blk, next;
  bit got;
#ifdef PUBLISH_FIRST
  publish(b);
  recorded[b] = 1;
#else
  recorded[b] = 1; /* free_record: the event on the other stream, before the block is visible */
  publish(b);
#endif
  freed++;
  poll(0)
}

proctype final_poller() {
  byte blk, next, i;
  bit got;
  freed == NB;
  i = 0;
  do
  :: i < NB -> ev_done[i] == 1; i++
  :: else -> break
  od;
  poll(1);
  assert(head == NIL);
  i = 0;
  do
  :: i < NB -> assert(state[i] == CACHED); i++
  :: else -> break
  od
}

/* The other stream of block b: its use ends at some time; the event the free recorded after it
 * completes at some time after both. */
proctype stream_work(byte b) {
  used[b] = 0;
  recorded[b] == 1;
  ev_done[b] = 1
}

init {
  byte i = 0;
  atomic {
    do
    :: i < NB -> state[i] = LIVE; used[i] = 1; nxt[i] = NIL; prv[i] = NIL; i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NB -> run freer(i); run stream_work(i); i++
    :: else -> break
    od;
    run final_poller()
  }
}
