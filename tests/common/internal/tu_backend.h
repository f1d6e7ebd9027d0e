/* White-box helpers for tests that drive a backend table directly (conformance/conf_backend.c,
 * unit/internal/host_backend.c): open a device, create a stream or an event through `be`, failing
 * the test (cmocka) with the slot's message when the slot fails. Any thread. */
#ifndef TU_BACKEND_H
#define TU_BACKEND_H

#include "backend/backend.h"
#include "testutil.h"

static inline sp__bdevice *tu_be_device(const sp__backend *be, int index) {
  sp__bdevice *d = NULL;
  SP_CHECK_OK(be->device_open(index, &d));
  assert_non_null(d);
  return d;
}

static inline sp__bstream *tu_be_stream(const sp__backend *be, sp__bdevice *d, unsigned index) {
  sp__bstream *s = NULL;
  SP_CHECK_OK(be->stream_create(d, index, &s));
  assert_non_null(s);
  return s;
}

static inline sp__bevent *tu_be_event(const sp__backend *be, sp__bdevice *d, unsigned flags) {
  sp__bevent *e = NULL;
  SP_CHECK_OK(be->event_create(d, flags, &e));
  assert_non_null(e);
  return e;
}

#endif /* TU_BACKEND_H */
