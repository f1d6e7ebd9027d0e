/* Errors, logging and host memory for every layer of the library.
 *
 * sp__fail(status, fmt, ...) records a message in the calling thread's last-error buffer and
 * returns status, so a failure path reads `return sp__fail(SP_ERR_..., "what and why");`.
 * sp__log() goes to the hook set with sp_log_set_hook (the library never prints).
 * sp__malloc/sp__calloc/sp__free go through the hook set with sp_host_allocator_set.
 *
 * Assertions: sp_assert() checks internal pre/postconditions in debug builds (SP_DEBUG >= 1);
 * SP_DEBUG >= 2 also enables whole-structure validators (sp__debug_level() tells them).
 * Operating errors are returned, never asserted. All functions here: any thread.
 */
#ifndef SP_CORE_STATUS_H
#define SP_CORE_STATUS_H

#include <stddef.h>

#include "streampool.h"

#if defined(__GNUC__)
#define SP__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SP__LIKELY(x) __builtin_expect(!!(x), 1)
#define SP__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define SP__PRINTF(f, a)
#define SP__LIKELY(x) (x)
#define SP__UNLIKELY(x) (x)
#endif

#ifndef SP_DEBUG
#define SP_DEBUG 0
#endif

/* Records "fmt..." as this thread's last error and returns st. */
sp_status sp__fail(sp_status st, const char *fmt, ...) SP__PRINTF(2, 3);
/* Clears this thread's last error. */
void sp__error_clear(void);

void sp__log(sp_log_level level, const char *fmt, ...) SP__PRINTF(2, 3);

void *sp__malloc(size_t bytes);               /* NULL on failure; never logs */
void *sp__calloc(size_t count, size_t bytes); /* NULL on failure or overflow */
void sp__free(void *p);                       /* NULL ok */
char *sp__strdup(const char *s);              /* through sp__malloc; NULL on failure */

/* Internal invariant failure: reports file:line and the expression through the log hook, then
 * aborts. Only reached through sp_assert in debug builds. */
_Noreturn void sp__assert_fail(const char *expr, const char *file, int line);

#if SP_DEBUG >= 1
#define sp_assert(e) ((e) ? (void)0 : sp__assert_fail(#e, __FILE__, __LINE__))
#else
#define sp_assert(e) ((void)0)
#endif

/* Whole-structure validators run only when this is >= 2. */
static inline int sp__debug_level(void) { return SP_DEBUG; }

/* Monotonic clock in nanoseconds. */
unsigned long long sp__now_ns(void);

#endif /* SP_CORE_STATUS_H */
