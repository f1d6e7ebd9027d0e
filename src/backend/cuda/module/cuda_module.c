/* The CUDA backend as a loadable module (libstreampool_cuda.so): the entry point the registry
 * calls, and the core functions the backend's code uses (sp__fail, sp__log, sp__calloc, sp__free,
 * sp__assert_fail), forwarded to the services the library passed in (backend/module.h).
 *
 * Owns `svc`, written once by the entry before any backend slot can run (the registry calls the
 * entry inside pthread_once, which orders it before every later use). Messages are formatted
 * here into a bounded buffer on the stack, then handed to the core. No lock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/module.h"
#include "core/status.h"

extern const sp__backend sp__cuda_backend;

static const sp__core_services *svc;

__attribute__((visibility("default"))) const sp__backend *sp__backend_module_entry(
    const sp__core_services *services);

const sp__backend *sp__backend_module_entry(const sp__core_services *services) {
  if (!services || services->abi != SP__MODULE_ABI) return NULL;
  svc = services;
  return &sp__cuda_backend;
}

sp_status sp__fail(sp_status st, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return svc->fail(st, msg);
}

void sp__log(sp_log_level level, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  svc->log(level, msg);
}

void *sp__calloc(size_t count, size_t bytes) { return svc->calloc(count, bytes); }
void sp__free(void *p) { svc->free(p); }
_Noreturn void sp__assert_fail(const char *expr, const char *file, int line) {
  svc->assert_fail(expr, file, line);
  abort(); /* not reached: the core's assert_fail aborts */
}
