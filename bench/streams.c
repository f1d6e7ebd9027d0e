/* bench/streams: the cost of the stream pool's and the event pool's hot paths (a table, not a
 * test). For 1, 2 and 4 threads on one host device: ns per operation on each thread and the
 * aggregate rate, for
 *   current        sp_stream_current on a bound thread (the lookup every operation does)
 *   event acq+rel  sp_event_acquire + sp_event_release
 *   record+query   sp_event_record on the thread's stream + sp_event_query (host device)
 *   slot acq+rel   exclusive mode: sp_stream_release_current + sp_stream_current, every thread
 *                  churning its slot through the shared lock-free free list
 *   memset start   sp_memset_async of 64 B at the start of a 4 KiB block on the thread's stream
 *   memset inside  the same at an offset of 1 KiB into the block (the range check's slower path)
 *   copy h2d       sp_memcpy_async of 64 B from host memory to the block's start
 *                  (these three sync the stream every 1024 calls; they measure the enqueue path,
 *                  range checks included, and the host worker draining it concurrently)
 * Usage: streams [--scale F]  (F multiplies the iteration counts; default 1).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streampool.h"
#include "bench_thread.h"

typedef enum bench_op {
  OP_CURRENT,
  OP_EVENT,
  OP_RECORD,
  OP_SLOT,
  OP_MEMSET,
  OP_MEMSET_IN,
  OP_COPY,
  OP_COUNT
} bench_op;
static const char *const bench_names[OP_COUNT] = {"current",      "event acq+rel", "record+query",
                                                  "slot acq+rel", "memset start",  "memset inside",
                                                  "copy h2d"};
static const unsigned long bench_iters[OP_COUNT] = {20000000, 2000000, 100000, 2000000,
                                                    300000,   300000,  300000};

typedef struct bench_arg { /* one cache line each: threads write their own only */
  _Alignas(64) sp_device *dev;
  bench_op op;
  unsigned long iters;
  pthread_barrier_t *start;
  double ns;         /* wall time of this thread's loop */
  unsigned long bad; /* failed calls */
} bench_arg;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Failed calls are counted in a local and stored once at the end: a shared or neighbouring
 * counter written in the loop would measure cache-line ping-pong, not the library. */
static void loop(bench_arg *arg, sp_stream *s) {
  unsigned long bad = 0;
  sp_device *dev = arg->dev;
  unsigned long iters = arg->iters;
  sp_stream *out = NULL;
  sp_event ev = {0};
  switch (arg->op) {
  case OP_CURRENT:
    for (unsigned long i = 0; i < iters; i++) {
      bad += sp_stream_current(dev, &out) != SP_OK;
      __asm__ volatile("" : : "r"(out) : "memory");
    }
    break;
  case OP_EVENT:
    for (unsigned long i = 0; i < iters; i++) {
      bad += sp_event_acquire(dev, 0, &ev) != SP_OK;
      bad += sp_event_release(dev, ev) != SP_OK;
    }
    break;
  case OP_RECORD:
    bad += sp_event_acquire(dev, 0, &ev) != SP_OK;
    for (unsigned long i = 0; i < iters; i++) {
      bad += sp_event_record(ev, s) != SP_OK;
      sp_status st = sp_event_query(dev, ev);
      bad += st != SP_OK && st != SP_ERR_NOT_READY;
    }
    (void)sp_stream_sync(s);
    bad += sp_event_release(dev, ev) != SP_OK;
    break;
  case OP_SLOT:
    for (unsigned long i = 0; i < iters; i++) {
      bad += sp_stream_release_current(dev) != SP_OK;
      bad += sp_stream_current(dev, &out) != SP_OK;
    }
    break;
  case OP_MEMSET:
  case OP_MEMSET_IN:
  case OP_COPY: {
    char *blk = NULL, host[64] = {0};
    if (sp_alloc(dev, 4096, s, (void **)&blk) != SP_OK) {
      arg->bad = iters;
      return;
    }
    char *at = arg->op == OP_MEMSET_IN ? blk + 1024 : blk;
    for (unsigned long i = 0; i < iters; i++) {
      bad += (arg->op == OP_COPY ? sp_memcpy_async(s, at, host, 64)
                                 : sp_memset_async(s, at, (int)i, 64)) != SP_OK;
      if ((i & 1023) == 1023) bad += sp_stream_sync(s) != SP_OK;
    }
    bad += sp_stream_sync(s) != SP_OK;
    bad += sp_free(dev, blk) != SP_OK;
    break;
  }
  default: break;
  }
  arg->bad = bad;
}

static void *bench_thread(void *p) {
  bench_arg *a = p;
  sp_stream *s = NULL;
  a->bad += sp_stream_current(a->dev, &s) != SP_OK; /* bind before timing */
  pthread_barrier_wait(a->start);
  double t0 = now_ns();
  loop(a, s);
  a->ns = now_ns() - t0;
  (void)sp_stream_release_current(a->dev);
  return NULL;
}

static void bench_row(bench_op op, unsigned threads, double scale) {
  sp_device_config cfg = {
      .backend = "host",
      .streams = 8,
      .stream_mode = op == OP_SLOT ? SP_STREAMS_EXCLUSIVE : SP_STREAMS_ROUND_ROBIN,
      .slot_wait_ms = 1000};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  if (st != SP_OK) {
    fprintf(stderr, "open: %s: %s\n", sp_status_str(st), sp_last_error());
    exit(1);
  }
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, threads);
  pthread_t th[8];
  bench_arg args[8];
  unsigned long iters = (unsigned long)((double)bench_iters[op] * scale);
  if (!iters) iters = 1;
  for (unsigned i = 0; i < threads; i++) {
    args[i] = (bench_arg){dev, op, iters, &start, 0, 0};
    bench_thread_start(&th[i], bench_thread, &args[i], "bench_streams");
  }
  double worst = 0, sum = 0;
  unsigned long bad = 0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    sum += args[i].ns;
    if (args[i].ns > worst) worst = args[i].ns;
    bad += args[i].bad;
  }
  double per_op = sum / threads / (double)iters;
  double mops = (double)iters * threads / worst * 1e3;
  printf("| %-14s | %7u | %12lu | %10.1f | %12.2f |%s\n", bench_names[op], threads, iters, per_op,
         mops, bad ? "  (calls failed!)" : "");
  fflush(stdout);
  pthread_barrier_destroy(&start);
  sp_device_close(dev);
}

int main(int argc, char **argv) {
  double scale = 1.0;
  if (argc == 3 && !strcmp(argv[1], "--scale")) scale = atof(argv[2]);
  printf("streampool %s: stream/event pool hot paths on the host device\n\n", sp_version());
  printf("| %-14s | %7s | %12s | %10s | %12s |\n", "operation", "threads", "iters/thread", "ns/op",
         "total Mops/s");
  printf("|----------------|---------|--------------|------------|--------------|\n");
  const unsigned counts[] = {1, 2, 4};
  for (int op = 0; op < OP_COUNT; op++)
    for (int t = 0; t < 3; t++) bench_row((bench_op)op, counts[t], scale);
  return 0;
}
