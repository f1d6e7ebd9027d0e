/* The contract between libstreampool and a backend built as a separate module (the CUDA backend,
 * libstreampool_cuda.so, so that libstreampool itself links no CUDA library and loads on machines
 * without CUDA).
 *
 * The registry (registry.c) dlopen()s the module once, on first use of the backend, looks up
 * SP__MODULE_ENTRY and calls it with the core's services: the module's code reports errors, logs
 * and allocates host memory through them, so the last error is the library's own thread-local one
 * and the host-allocation hook applies. The entry returns the backend's table (validated by the
 * registry as any table) or NULL when the services' ABI is not the one it was built for. The
 * module is never unloaded. All services: any thread.
 */
#ifndef SP_BACKEND_MODULE_H
#define SP_BACKEND_MODULE_H

#include "backend/backend.h"

#define SP__MODULE_ABI 1u
#define SP__MODULE_ENTRY "sp__backend_module_entry"

typedef struct sp__core_services {
  unsigned abi;                                     /* SP__MODULE_ABI                 */
  sp_status (*fail)(sp_status st, const char *msg); /* sets the last error, returns st */
  void (*log)(sp_log_level level, const char *msg); /* the log hook, if level passes   */
  void *(*calloc)(size_t count, size_t bytes);      /* the host-allocation hook        */
  void (*free)(void *p);
  void (*assert_fail)(const char *expr, const char *file, int line); /* does not return */
} sp__core_services;

typedef const sp__backend *(*sp__backend_module_entry_fn)(const sp__core_services *svc);

#endif /* SP_BACKEND_MODULE_H */
