/* `streampool streams [--threads N] [--seconds S] [--backend B] [--bytes N] [--json]`: the
 * multi-threaded stream demo. N threads each take their own current stream and, until S seconds
 * have passed, copy a seeded pattern host -> device -> device -> host through two sp_alloc'd
 * blocks and check it byte for byte. Prints what each thread did and the totals (or one JSON
 * document with --json); exit status 1 if any copy came back wrong or any call failed, 2 on bad
 * usage.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "cli.h"
#include "measure.h"
#include "streampool.h"

typedef struct sp_cli_worker {
  sp_device *dev;
  unsigned id;
  size_t bytes;
  double seconds;
  unsigned stream;      /* the pool stream it ran on     */
  unsigned long rounds; /* host->dev->dev->host round trips checked */
  unsigned long errors; /* failed calls + wrong bytes    */
  char first_error[256];
  int started; /* its thread was created (joined at the end) */
} sp_cli_worker;

static double sp_cli_now(void) { return (double)sp_cli_now_ns() * 1e-9; }

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

static void sp_cli_streams_usage(FILE *f) {
  fprintf(f,
          "usage: streampool streams [--threads N] [--seconds S] [--backend host|cuda|auto]\n"
          "                          [--bytes N] [--json]\n"
          "  N threads (1..1024, default 4) copy --bytes (default 64K; K/M/G/T, B or iB) host ->\n"
          "  device -> device -> host on their own streams for S seconds (default 1) and check\n"
          "  every byte. --json: one JSON document on stdout instead of the lines.\n");
}

enum { OPT_THREADS = 256, OPT_SECONDS, OPT_BYTES, OPT_BACKEND, OPT_JSON };

static const struct option sp_cli_streams_opts[] = {{"threads", required_argument, 0, OPT_THREADS},
                                                    {"seconds", required_argument, 0, OPT_SECONDS},
                                                    {"bytes", required_argument, 0, OPT_BYTES},
                                                    {"backend", required_argument, 0, OPT_BACKEND},
                                                    {"json", no_argument, 0, OPT_JSON},
                                                    {0, 0, 0, 0}};

typedef struct sp_cli_streams_args {
  unsigned threads;
  double seconds;
  uint64_t bytes;
  const char *backend;
  int json;
} sp_cli_streams_args;

static const char *sp_cli_streams_opt(int c, const char *arg, void *ctx) {
  sp_cli_streams_args *a = ctx;
  switch (c) {
  case OPT_THREADS: return sp_cli_unsigned(arg, 1, 1024, &a->threads);
  case OPT_SECONDS: return sp_cli_decimal(arg, 0, 86400, &a->seconds);
  case OPT_BYTES: return sp_cli_bytes(arg, 1, (uint64_t)1 << 30, &a->bytes);
  case OPT_BACKEND: return sp_cli_backend(arg, &a->backend);
  case OPT_JSON: a->json = 1; return NULL;
  default: return "not an option of streams";
  }
}

/* The totals as one JSON document. */
static void sp_cli_streams_json(sp_device *dev, const sp_device_config *c, const sp_cli_worker *w,
                                unsigned threads, size_t bytes, unsigned long rounds,
                                unsigned long errors, double dt) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "backend", sp_device_backend(dev));
  cJSON_AddNumberToObject(j, "index", c->index);
  cJSON_AddStringToObject(j, "device", sp_device_name(dev));
  cJSON_AddNumberToObject(j, "streams", c->streams);
  cJSON_AddStringToObject(j, "stream_mode",
                          c->stream_mode == SP_STREAMS_EXCLUSIVE ? "exclusive" : "round_robin");
  cJSON_AddNumberToObject(j, "bytes", (double)bytes);
  cJSON *per = cJSON_AddArrayToObject(j, "threads");
  for (unsigned i = 0; i < threads; i++) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "thread", i);
    cJSON_AddNumberToObject(t, "stream", w[i].stream);
    cJSON_AddNumberToObject(t, "round_trips", (double)w[i].rounds);
    cJSON_AddNumberToObject(t, "errors", (double)w[i].errors);
    if (w[i].errors) cJSON_AddStringToObject(t, "first_error", w[i].first_error);
    cJSON_AddItemToArray(per, t);
  }
  cJSON_AddNumberToObject(j, "round_trips", (double)rounds);
  cJSON_AddNumberToObject(j, "copies", (double)rounds * 3.0);
  cJSON_AddNumberToObject(j, "seconds", dt);
  cJSON_AddNumberToObject(j, "copies_per_s", dt > 0 ? (double)rounds * 3.0 / dt : 0.0);
  cJSON_AddNumberToObject(j, "errors", (double)errors);
  cJSON_AddBoolToObject(j, "ok", errors == 0);
  char *text = cJSON_Print(j);
  if (text) printf("%s\n", text);
  free(text);
  cJSON_Delete(j);
}

int sp_cli_streams(int argc, char **argv) {
  sp_cli_streams_args a = {.threads = 4, .seconds = 1.0, .bytes = 64 << 10};
  int prc = sp_cli_parse("streams", argc, argv, sp_cli_streams_opts, sp_cli_streams_usage,
                         sp_cli_streams_opt, &a);
  if (prc) return prc == 1 ? SP_CLI_OK : SP_CLI_USAGE;
  unsigned threads = a.threads;
  double seconds = a.seconds;
  size_t bytes = (size_t)a.bytes;
  const char *backend = a.backend;
  sp_device_config cfg = {.backend = backend};
  sp_device *dev = NULL;
  sp_status st = sp_device_open(&cfg, &dev);
  if (st != SP_OK) {
    fprintf(stderr, "streampool streams: %s: %s\n", sp_status_str(st), sp_last_error());
    return 1;
  }
  sp_device_config c;
  (void)sp_device_config_get(dev, &c);
  if (!a.json)
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
  if (a.json) {
    sp_cli_streams_json(dev, &c, w, threads, bytes, rounds, errors, dt);
  } else {
    for (unsigned i = 0; i < threads; i++)
      printf("  thread %2u  stream %3u  %8lu round trips  %lu errors%s%s\n", i, w[i].stream,
             w[i].rounds, w[i].errors, w[i].errors ? "  first: " : "", w[i].first_error);
    double copied = (double)rounds * 3.0 * (double)bytes;
    printf(
        "total: %lu round trips (%lu copies, %.1f MiB copied) in %.2f s, %.0f copies/s, "
        "errors: %lu\n",
        rounds, rounds * 3, copied / 1048576.0, dt, dt > 0 ? (double)rounds * 3.0 / dt : 0.0,
        errors);
  }
  free(w);
  free(th);
  sp_device_close(dev);
  return errors ? 1 : 0;
}
