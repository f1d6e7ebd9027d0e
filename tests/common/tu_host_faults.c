/* The failing, counting host allocator; see tu_host_faults.h. State: atomics only. */
#include "tu_host_faults.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "streampool.h"

static atomic_int armed;
static atomic_ulong armed_nth, calls, hits;
static atomic_size_t armed_min;
static atomic_int armed_persist;
static atomic_long live;

/* Whether this allocation of n bytes must fail. */
static int should_fail(size_t n) {
  if (!atomic_load(&armed) || n < atomic_load(&armed_min)) return 0;
  unsigned long k = atomic_fetch_add(&calls, 1), nth = atomic_load(&armed_nth);
  if (k != nth && !(k > nth && atomic_load(&armed_persist))) return 0;
  atomic_fetch_add(&hits, 1);
  return 1;
}

static void *hm_malloc(void *u, size_t n) {
  (void)u;
  if (should_fail(n)) return NULL;
  void *p = malloc(n);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

static void *hm_calloc(void *u, size_t c, size_t n) {
  (void)u;
  if (should_fail(c * n)) return NULL;
  void *p = calloc(c, n);
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

static void hm_free(void *u, void *p) {
  (void)u;
  if (p) atomic_fetch_sub(&live, 1);
  free(p);
}

void tu_hostmem_install(void) {
  sp_host_allocator a = {hm_malloc, hm_calloc, hm_free, NULL};
  tu_hostmem_disarm();
  sp_host_allocator_set(&a);
}

void tu_hostmem_uninstall(void) {
  tu_hostmem_disarm();
  sp_host_allocator_set(NULL);
}

void tu_hostmem_arm(unsigned long nth, size_t min_bytes, int persist) {
  atomic_store(&armed, 0);
  atomic_store(&calls, 0);
  atomic_store(&hits, 0);
  atomic_store(&armed_nth, nth);
  atomic_store(&armed_min, min_bytes);
  atomic_store(&armed_persist, persist);
  atomic_store(&armed, 1);
}

void tu_hostmem_disarm(void) { atomic_store(&armed, 0); }
unsigned long tu_hostmem_hits(void) { return atomic_load(&hits); }
unsigned long tu_hostmem_calls(void) { return atomic_load(&calls); }
long tu_hostmem_live(void) { return atomic_load(&live); }
