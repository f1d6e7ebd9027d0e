/* Status strings, the thread-local last error, the log hook and the host-allocation hook.
 *
 * The last error is a fixed thread-local buffer (no allocation on failure paths). The log hook and
 * the host allocator are process-wide: the hook under a seqlock (below), the allocator published
 * with a release store and read with an acquire load.
 */
#include "core/status.h"

#include "core/lock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *sp_version(void) { return "0.1.0"; }

const char *sp_status_str(sp_status s) {
  switch (s) {
#define SP__STATUS_CASE(name, value, text) \
  case name: return text;
    SP_STATUS_TABLE(SP__STATUS_CASE)
#undef SP__STATUS_CASE
  }
  return "unknown status";
}

enum { SP__ERROR_MAX = 512 };
static _Thread_local char sp__last_error[SP__ERROR_MAX];

const char *sp_last_error(void) { return sp__last_error; }

void sp__error_clear(void) { sp__last_error[0] = '\0'; }

sp_status sp__fail(sp_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sp__last_error, sizeof(sp__last_error), fmt, ap);
  va_end(ap);
  sp__log(SP_LOG_DEBUG, "%s: %s", sp_status_str(st), sp__last_error);
  return st;
}

/* ---- logging ---- */

/* The hook is three atomics under a sequence count (a seqlock): setters, serialized by a flag,
 * make the count odd, store the fields, make it even; a reader copies the fields and retries
 * until it saw the same even count before and after, so a message never gets the fn of one hook
 * and the user pointer of another, however often the hook is set meanwhile. */
static _Atomic(sp_log_fn) sp__log_fn; /* NULL: no hook */
static _Atomic(void *) sp__log_user;
static atomic_int sp__log_max_level;
static atomic_uint sp__log_seq; /* odd while a setter writes the fields */
static atomic_flag sp__log_setting = ATOMIC_FLAG_INIT;

void sp_log_set_hook(sp_log_fn fn, void *user, sp_log_level max_level) {
  sp__lock_note_acquire(&sp__log_setting, SP__RANK_LOG_SETTING);
  while (atomic_flag_test_and_set_explicit(&sp__log_setting, memory_order_acquire)) {
  }
  sp__lock_note_acquired(&sp__log_setting, SP__RANK_LOG_SETTING);
  unsigned seq = atomic_load_explicit(&sp__log_seq, memory_order_relaxed);
  atomic_store_explicit(&sp__log_seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release); /* odd count before the fields */
  atomic_store_explicit(&sp__log_fn, fn, memory_order_relaxed);
  atomic_store_explicit(&sp__log_user, user, memory_order_relaxed);
  atomic_store_explicit(&sp__log_max_level, (int)max_level, memory_order_relaxed);
  atomic_store_explicit(&sp__log_seq, seq + 2, memory_order_release);
  sp__lock_note_release(&sp__log_setting, SP__RANK_LOG_SETTING);
  atomic_flag_clear_explicit(&sp__log_setting, memory_order_release);
}

void sp__log(sp_log_level level, const char *fmt, ...) {
  sp_log_fn fn;
  void *user;
  int max_level;
  unsigned seq;
  do {
    seq = atomic_load_explicit(&sp__log_seq, memory_order_acquire);
    fn = atomic_load_explicit(&sp__log_fn, memory_order_relaxed);
    user = atomic_load_explicit(&sp__log_user, memory_order_relaxed);
    max_level = atomic_load_explicit(&sp__log_max_level, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire); /* the fields before the second count */
  } while ((seq & 1u) || seq != atomic_load_explicit(&sp__log_seq, memory_order_relaxed));
  if (!fn || (int)level > max_level) return;
  char msg[SP__ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fn(user, level, msg);
}

_Noreturn void sp__assert_fail(const char *expr, const char *file, int line) {
  sp__log(SP_LOG_ERROR, "assertion failed: %s (%s:%d)", expr, file, line);
  abort();
}

/* ---- host memory ---- */

static void *libc_malloc(void *user, size_t bytes) {
  (void)user;
  return malloc(bytes);
}
static void *libc_calloc(void *user, size_t count, size_t bytes) {
  (void)user;
  return calloc(count, bytes);
}
static void libc_free(void *user, void *p) {
  (void)user;
  free(p);
}

static const sp_host_allocator sp__libc_allocator = {libc_malloc, libc_calloc, libc_free, NULL};
static sp_host_allocator sp__custom_allocator;
static _Atomic(const sp_host_allocator *) sp__allocator = &sp__libc_allocator;

void sp_host_allocator_set(const sp_host_allocator *a) {
  if (!a || !a->malloc || !a->calloc || !a->free) {
    atomic_store_explicit(&sp__allocator, &sp__libc_allocator, memory_order_release);
    return;
  }
  sp__custom_allocator = *a;
  atomic_store_explicit(&sp__allocator, &sp__custom_allocator, memory_order_release);
}

void *sp__malloc(size_t bytes) {
  const sp_host_allocator *a = atomic_load_explicit(&sp__allocator, memory_order_acquire);
  return a->malloc(a->user, bytes ? bytes : 1);
}

void *sp__calloc(size_t count, size_t bytes) {
  if (bytes && count > (size_t)-1 / bytes) return NULL;
  const sp_host_allocator *a = atomic_load_explicit(&sp__allocator, memory_order_acquire);
  return a->calloc(a->user, count ? count : 1, bytes ? bytes : 1);
}

void sp__free(void *p) {
  if (!p) return;
  const sp_host_allocator *a = atomic_load_explicit(&sp__allocator, memory_order_acquire);
  a->free(a->user, p);
}

char *sp__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = sp__malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

unsigned long long sp__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}
