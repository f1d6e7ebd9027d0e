/* Shared test helpers; see testutil.h. */
#include "testutil.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t tu_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long tu_fail_count;

void tu_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&tu_mu);
  if (tu_fail_count++ < 20) { /* the first few, with both values as the caller formatted them */
    fprintf(stderr, "FAILED %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
  pthread_mutex_unlock(&tu_mu);
}

unsigned long tu_failures(void) {
  pthread_mutex_lock(&tu_mu);
  unsigned long n = tu_fail_count;
  pthread_mutex_unlock(&tu_mu);
  return n;
}

void tu_failures_reset(void) {
  pthread_mutex_lock(&tu_mu);
  tu_fail_count = 0;
  pthread_mutex_unlock(&tu_mu);
}

int tu_under_tsan(void) {
#if defined(__SANITIZE_THREAD__)
  return 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  return 1;
#else
  return 0;
#endif
#else
  return 0;
#endif
}

size_t tu_scale(size_t n) {
  size_t m = tu_under_tsan() ? n / 10 : n;
  return m ? m : 1;
}

unsigned long tu_race_ms(const char *var, unsigned long dflt) {
  const char *v = getenv(var);
  unsigned long ms = v && *v ? strtoul(v, NULL, 10) : dflt;
  return tu_under_tsan() ? ms / 3 : ms;
}

static uint64_t tu_seed_value;
static pthread_once_t tu_seed_once = PTHREAD_ONCE_INIT;

static void tu_seed_init(void) {
  const char *e = getenv("SP_TEST_SEED");
  tu_seed_value = e ? strtoull(e, NULL, 10) : 12345;
  if (!tu_seed_value) tu_seed_value = 12345;
  fprintf(stderr, "[seed %llu: set SP_TEST_SEED to repeat]\n", (unsigned long long)tu_seed_value);
}

uint64_t tu_seed(void) { /* any thread */
  pthread_once(&tu_seed_once, tu_seed_init);
  return tu_seed_value;
}

sp_device *tu_open_host_index(int index, unsigned streams, sp_stream_mode mode) {
  sp_device_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  cfg.backend = "host";
  cfg.index = index;
  cfg.streams = streams;
  cfg.stream_mode = mode;
  sp_device *dev = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &dev));
  return dev;
}

sp_device *tu_open_host(unsigned streams, sp_stream_mode mode) {
  return tu_open_host_index(0, streams, mode);
}

int tu_backends(const char *names[4]) {
  int n = 0;
  names[n++] = "host";
  int count = 0;
  if (sp_backend_compiled("cuda") && sp_device_count("cuda", &count) == SP_OK && count > 0)
    names[n++] = "cuda";
  return n;
}

unsigned long long tu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

void tu_sleep_us(unsigned us) {
  struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void tu_gate_fn(void *gate) {
  tu_gate *g = gate;
  atomic_store(&g->entered, 1);
  for (unsigned i = 0; i < 400000 && !atomic_load(&g->open); i++) tu_sleep_us(50);
}

static void *tu_gate_timer(void *gate) {
  tu_gate *g = gate;
  tu_sleep_us(g->timer_ms * 1000u);
  atomic_store(&g->open, 1);
  return NULL;
}

void tu_gate_init(tu_gate *g, unsigned timer_ms) {
  atomic_store(&g->open, 0);
  atomic_store(&g->entered, 0);
  g->timer_ms = timer_ms;
  g->has_timer = timer_ms && pthread_create(&g->timer, NULL, tu_gate_timer, g) == 0;
  if (timer_ms && !g->has_timer) tu_fail(__FILE__, __LINE__, "tu_gate_init: no timer thread");
}

void tu_gate_open(tu_gate *g) {
  atomic_store(&g->open, 1);
  if (g->has_timer) pthread_join(g->timer, NULL);
  g->has_timer = 0;
}
