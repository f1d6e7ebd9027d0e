/* Goal: cross-device event waits and peer copies order data correctly under load: with every
 * host-device command delayed by a seeded random amount (STREAMPOOL_HOST_JITTER_US), a block
 * written on one device and peer-copied by another device's stream after
 * sp_stream_wait_event_peer always arrives complete, in both directions and from several threads
 * at once, with no host sync between rounds; and the check is sharp enough to see corruption when
 * the wait is left out.
 * Method: two host devices. Each thread has its own current stream on both devices and a
 * direction (even threads 0 -> 1, odd 1 -> 0). Per round the producer first waits (device-side,
 * through sp_stream_wait_event_peer) on the consumer's `used` event, so it never overwrites the
 * source block while the previous copy still reads it; then memsets the block with a round byte,
 * patches a seeded head into it and records `made`. The consumer waits on `made` from the other
 * device and peer-copies the block into its own slot r of a rounds-long destination buffer, then
 * records `used`. Nothing is synced until all rounds are queued; then every slot is downloaded and
 * checked byte by byte. The negative control runs the rounds without the consumer's wait and
 * counts slots with wrong bytes (it fails only if none ever is wrong, so the data check is shown
 * to be able to fail). It is skipped under TSan, whose job is to flag exactly that race.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { THREADS = 4, BLOCK = 32 << 10, HEAD = 2048 };

typedef struct pipe_arg {
  sp_device *dev[2];
  unsigned id, rounds;
  int with_wait;
  uint64_t seed;
  unsigned long corrupted; /* slots whose check failed */
} pipe_arg;

static unsigned char round_byte(unsigned r) { return (unsigned char)(r * 37u + 11u); }

/* Byte i of round r's block, with head[] that round's seeded head. */
static unsigned char expected(const unsigned char *head, unsigned r, size_t i) {
  return i < HEAD ? head[i] : round_byte(r);
}

static void make_head(unsigned char *head, uint64_t seed, unsigned r) {
  tu_rng rng = {seed ^ ((uint64_t)r + 1) * 0xD1B54A32D192ED03ull};
  for (size_t i = 0; i < HEAD; i++) head[i] = (unsigned char)tu_rng_next(&rng);
}

typedef struct pipe_state {
  sp_device *pd, *cd;       /* producer and consumer devices      */
  sp_stream *ps, *cs;       /* this thread's streams on them      */
  unsigned char *src, *dst; /* BLOCK on pd; rounds * BLOCK on cd  */
  unsigned char *heads;     /* rounds * HEAD host bytes           */
  sp_event made, used;      /* made: pd's; used: cd's             */
} pipe_state;

static int pipe_open(pipe_arg *a, pipe_state *p) {
  p->pd = a->dev[a->id & 1u];
  p->cd = a->dev[!(a->id & 1u)];
  TU_EXPECT_OK(sp_stream_current(p->pd, &p->ps));
  TU_EXPECT_OK(sp_stream_current(p->cd, &p->cs));
  TU_EXPECT_OK(sp_alloc(p->pd, BLOCK, p->ps, (void **)&p->src));
  TU_EXPECT_OK(sp_alloc(p->cd, (size_t)a->rounds * BLOCK, p->cs, (void **)&p->dst));
  TU_EXPECT_OK(sp_event_acquire(p->pd, 0, &p->made));
  TU_EXPECT_OK(sp_event_acquire(p->cd, 0, &p->used));
  p->heads = malloc((size_t)a->rounds * HEAD);
  return p->ps && p->cs && p->src && p->dst && p->heads && p->made.id && p->used.id;
}

static void pipe_close(pipe_state *p) {
  if (p->made.id) TU_EXPECT_OK(sp_event_release(p->pd, p->made));
  if (p->used.id) TU_EXPECT_OK(sp_event_release(p->cd, p->used));
  TU_EXPECT_OK(sp_free(p->pd, p->src));
  TU_EXPECT_OK(sp_free(p->cd, p->dst));
  free(p->heads);
}

/* Queues round r on both devices; no host wait. */
static void pipe_round(pipe_arg *a, pipe_state *p, unsigned r) {
  unsigned char *head = p->heads + (size_t)r * HEAD;
  make_head(head, a->seed + a->id, r);
  TU_EXPECT_OK(sp_stream_wait_event_peer(p->ps, p->cd, p->used)); /* previous copy has read src */
  TU_EXPECT_OK(sp_memset_async(p->ps, p->src, round_byte(r), BLOCK));
  TU_EXPECT_OK(sp_memcpy_async(p->ps, p->src, head, HEAD));
  TU_EXPECT_OK(sp_event_record(p->made, p->ps));
  if (a->with_wait) TU_EXPECT_OK(sp_stream_wait_event_peer(p->cs, p->pd, p->made));
  TU_EXPECT_OK(sp_memcpy_peer_async(p->cs, p->dst + (size_t)r * BLOCK, p->pd, p->src, BLOCK));
  TU_EXPECT_OK(sp_event_record(p->used, p->cs));
}

/* Downloads every slot and counts the wrong ones (reported as failures only with the wait). */
static void pipe_check(pipe_arg *a, pipe_state *p, unsigned char *out) {
  TU_EXPECT_OK(sp_stream_sync(p->ps));
  for (unsigned r = 0; r < a->rounds; r++) {
    const unsigned char *head = p->heads + (size_t)r * HEAD;
    TU_EXPECT_OK(sp_memcpy_async(p->cs, out, p->dst + (size_t)r * BLOCK, BLOCK));
    TU_EXPECT_OK(sp_stream_sync(p->cs));
    for (size_t i = 0; i < BLOCK; i++) {
      if (out[i] == expected(head, r, i)) continue;
      a->corrupted++;
      if (a->with_wait)
        tu_fail(__FILE__, __LINE__, "thread %u round %u byte %zu: got 0x%02x, want 0x%02x", a->id,
                r, i, out[i], expected(head, r, i));
      break;
    }
  }
}

static void *pipe_worker(void *arg) {
  pipe_arg *a = arg;
  pipe_state p;
  memset(&p, 0, sizeof(p));
  unsigned char *out = malloc(BLOCK);
  TU_EXPECT(out != NULL, "no host memory");
  if (pipe_open(a, &p) && out) {
    for (unsigned r = 0; r < a->rounds; r++) pipe_round(a, &p, r);
    pipe_check(a, &p, out);
  }
  pipe_close(&p);
  free(out);
  return NULL;
}

/* Runs THREADS pipelines over two fresh devices; returns the corrupted slots in total. */
static unsigned long run_pipes(int with_wait, unsigned rounds) {
  sp_device *dev[2] = {NULL, NULL};
  for (int d = 0; d < 2; d++)
    dev[d] = tu_open_host_index(d, 2 * THREADS + 1, SP_STREAMS_ROUND_ROBIN);
  pthread_t th[THREADS];
  pipe_arg args[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    args[i] = (pipe_arg){{dev[0], dev[1]}, i, rounds, with_wait, tu_seed(), 0};
    assert_int_equal(pthread_create(&th[i], NULL, pipe_worker, &args[i]), 0);
  }
  unsigned long corrupted = 0;
  for (unsigned i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    corrupted += args[i].corrupted;
  }
  sp_device_close(dev[0]);
  sp_device_close(dev[1]);
  return corrupted;
}

static void peer_pipelines_checked(void **state) {
  (void)state;
  tu_failures_reset();
  unsigned rounds = (unsigned)tu_scale(300);
  unsigned long bad = run_pipes(1, rounds);
  assert_int_equal(tu_failures(), 0);
  assert_int_equal(bad, 0);
  printf("peer pipelines: %u threads x %u rounds, both directions, all slots correct\n", THREADS,
         rounds);
}

static void negative_control_without_wait(void **state) {
  (void)state;
  if (tu_under_tsan()) {
    printf("negative control not run under TSan (the race is the point of it)\n");
    return;
  }
  tu_failures_reset();
  unsigned rounds = 60;
  unsigned long bad = run_pipes(0, rounds);
  assert_int_equal(tu_failures(), 0);
  printf("negative control: %lu of %u slots corrupted without the peer wait\n", bad,
         THREADS * rounds);
  if (bad == 0) fail_msg("no slot was ever corrupted without the wait: the check cannot fail");
}

int main(void) {
  setenv("STREAMPOOL_HOST_DEVICES", "2", 1);
  setenv("STREAMPOOL_HOST_JITTER_US", "40", 0);
  (void)tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(peer_pipelines_checked),
      cmocka_unit_test(negative_control_without_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
