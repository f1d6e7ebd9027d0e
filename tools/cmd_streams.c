/* `streampool streams [--threads N] [--seconds S] [--backend B] [--bytes N]`: the multi-threaded
 * stream demo. N threads each take their own current stream and, until S seconds have passed,
 * copy a seeded pattern host -> device -> device -> host through two sp_alloc'd blocks and check it
 * byte for byte. Prints what each thread did and the totals; exit status 1 if any copy came back
 * wrong or any call failed, 2 on bad usage.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "streampool.h"

typedef struct sp_cli_worker {
  sp_device *dev;
  unsigned id;
  size_t bytes;
  double seconds;
  unsigned stream;         /* the pool stream it ran on     */
  unsigned long rounds;    /* host->dev->dev->host round trips checked */
  unsigned long errors;    /* failed calls + wrong bytes    */
  char first_error[256];
  int started;             /* its thread was created (joined at the end) */
} sp_cli_worker;

static double sp_cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sp_cli_error(sp_cli_worker *w, const char *what, sp_status st) {
  if (!w->errors++)
    snprintf(w->first_error, sizeof(w->first_error), "%s: %s: %s", what, sp_status_str(st),
             sp_last_error());
}

static void sp_cli_round(sp_cli_worker *w, sp_stream *s, void *d1, void *d2, unsigned char *src,
                         unsigned char *dst, uint64_t *rng) {
  for (size_t i = 0; i < w->bytes; i++) {
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    src[i] = (unsigned char)*rng;
  }
  memset(dst, 0, w->bytes);
  sp_status st = sp_memcpy_async(s, d1, src, w->bytes);
  const char *what = "h->d";
  if (st == SP_OK) st = sp_memcpy_async(s, d2, d1, w->bytes), what = "d->d";
  if (st == SP_OK) st = sp_memcpy_async(s, dst, d2, w->bytes), what = "d->h";
  if (st == SP_OK) st = sp_stream_sync(s), what = "sync";
  if (st != SP_OK) {
    sp_cli_error(w, what, st);
    return;
  }
  if (memcmp(src, dst, w->bytes)) {
    size_t i = 0;
    while (src[i] == dst[i]) i++;
    if (!w->errors++)
      snprintf(w->first_error, sizeof(w->first_error),
               "round %lu: byte %zu came back 0x%02x, sent 0x%02x", w->rounds, i, dst[i], src[i]);
    return;
  }
  w->rounds++;
}

static void *sp_cli_worker_main(void *p) {
  sp_cli_worker *w = p;
  sp_stream *s = NULL;
  void *d1 = NULL, *d2 = NULL;
  unsigned char *src = malloc(w->bytes), *dst = malloc(w->bytes);
  sp_status st = sp_stream_current(w->dev, &s);
  if (st != SP_OK || !src || !dst) {
    sp_cli_error(w, "sp_stream_current", st);
    goto out;
  }
  w->stream = sp_stream_index(s);
  if ((st = sp_alloc(w->dev, w->bytes, s, &d1)) != SP_OK ||
      (st = sp_alloc(w->dev, w->bytes, s, &d2)) != SP_OK) {
    sp_cli_error(w, "sp_alloc", st);
    goto out;
  }
  uint64_t rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)w->id + 1) * 0xD1B54A32D192ED03ull;
  double end = sp_cli_now() + w->seconds;
  do sp_cli_round(w, s, d1, d2, src, dst, &rng);
  while (sp_cli_now() < end && w->errors == 0);
out:
  if (d1) (void)sp_free(w->dev, d1);
  if (d2) (void)sp_free(w->dev, d2);
  free(src);
  free(dst);
  return NULL;
}

static int sp_cli_streams_usage(int rc) {
  fprintf(rc ? stderr : stdout,
          "usage: streampool streams [--threads N] [--seconds S] [--backend host|cuda] "
          "[--bytes N]\n");
  return rc;
}

int sp_cli_streams(int argc, char **argv) {
  unsigned threads = 4;
  double seconds = 1.0;
  size_t bytes = 64 << 10;
  const char *backend = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
    if (!strcmp(a, "--help")) return sp_cli_streams_usage(0);
    if (!v) return sp_cli_streams_usage(2);
    if (!strcmp(a, "--threads")) threads = (unsigned)strtoul(v, &end, 10);
    else if (!strcmp(a, "--seconds")) seconds = strtod(v, &end);
    else if (!strcmp(a, "--bytes")) bytes = (size_t)strtoull(v, &end, 10);
    else if (!strcmp(a, "--backend")) backend = v, end = (char *)v + strlen(v);
    else return sp_cli_streams_usage(2);
    if (!end || *end || threads < 1 || threads > 1024 || !(seconds >= 0) || !bytes) {
      fprintf(stderr, "streampool streams: bad value '%s' for %s\n", v, a);
      return 2;
    }
    i++;
  }
  sp_device_config cfg = {.backend = backend};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  if (st != SP_OK) {
    fprintf(stderr, "streampool streams: %s: %s\n", sp_status_str(st), sp_last_error());
    return 1;
  }
  sp_device_config c;
  (void)sp_device_config_get(dev, &c);
  printf("device %s:%d (%s), %u streams, %s; %u threads x %.2f s, %zu-byte blocks\n",
         sp_device_backend(dev), c.index, sp_device_name(dev), c.streams,
         c.stream_mode == SP_STREAMS_EXCLUSIVE ? "exclusive" : "round_robin", threads, seconds,
         bytes);
  sp_cli_worker *w = calloc(threads, sizeof(*w));
  pthread_t *th = calloc(threads, sizeof(*th));
  if (!w || !th) {
    fprintf(stderr, "streampool streams: out of memory\n");
    free(w), free(th);
    sp_device_close(dev);
    return 1;
  }
  double t0 = sp_cli_now();
  for (unsigned i = 0; i < threads; i++) {
    w[i] = (sp_cli_worker){.dev = dev, .id = i, .bytes = bytes, .seconds = seconds};
    int e = pthread_create(&th[i], NULL, sp_cli_worker_main, &w[i]);
    w[i].started = !e;
    if (e) { /* counted as a failure, so the run cannot pass untested */
      w[i].errors = 1;
      snprintf(w[i].first_error, sizeof(w[i].first_error), "thread could not start: %s",
               strerror(e));
    }
  }
  unsigned long rounds = 0, errors = 0;
  for (unsigned i = 0; i < threads; i++) {
    if (w[i].started) pthread_join(th[i], NULL);
    rounds += w[i].rounds;
    errors += w[i].errors;
  }
  double dt = sp_cli_now() - t0;
  for (unsigned i = 0; i < threads; i++) {
    printf("  thread %2u  stream %3u  %8lu round trips  %lu errors%s%s\n", i, w[i].stream,
           w[i].rounds, w[i].errors, w[i].errors ? "  first: " : "", w[i].first_error);
  }
  double copied = (double)rounds * 3.0 * (double)bytes;
  printf("total: %lu round trips (%lu copies, %.1f MiB copied) in %.2f s, %.0f copies/s, errors: %lu\n",
         rounds, rounds * 3, copied / 1048576.0, dt, dt > 0 ? (double)rounds * 3.0 / dt : 0.0,
         errors);
  free(w);
  free(th);
  sp_device_close(dev);
  return errors ? 1 : 0;
}
