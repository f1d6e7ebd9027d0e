/* The host device: its environment settings, its name, and its device memory.
 *
 * Owns: the host sp__bdevice (index, name, capacity, jitter settings) and raw "device" segments.
 * A segment is posix_memalign'd host memory starting on an OS page, with a page-sized header in
 * front (magic, size, committed bytes, owning device) so mem_free can check the pointer and give
 * the bytes back to the capacity. Whole 2 MiB pages of a segment can be decommitted (madvise:
 * the system takes the memory back) and committed again. Device memory deliberately bypasses the
 * host-allocation hook: it is the device's, not the library's bookkeeping.
 *
 * Invariants: used_bytes == sum of the committed bytes of live segments <= total_bytes (a
 * reservation is a CAS that never passes the capacity).
 *
 * Locking: none; the device's mutable state is atomic. Environment variables are read at
 * device_count/device_open only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/mman.h>

#include "backend/host/host_impl.h"
#include "core/env.h"

/* ---- environment ---------------------------------------------------------------------------- */

/* Reads var (through the one STREAMPOOL_* reader, core/env.h) as a count, or a byte size when
 * bytes, in [lo, hi]; unset: *out = dflt. */
static sp_status host_env_uint(const char *var, unsigned long long lo, unsigned long long hi,
                               unsigned long long dflt, bool bytes, unsigned long long *out) {
  uint64_t v = 0;
  sp_status st =
      sp__env_u64_or("host backend", var, bytes ? SP__ENV_BYTES : SP__ENV_COUNT, lo, hi, dflt, &v);
  if (st == SP_OK) *out = v;
  return st;
}

static size_t host_physical_ram(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return (size_t)1 << 32; /* unknown: assume 4 GiB */
  return (size_t)pages * (size_t)page;
}

/* ---- devices -------------------------------------------------------------------------------- */

sp_status sp__host_device_count(int *count) {
  if (!count) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host device_count: count is NULL");
  unsigned long long n = 0;
  sp_status st = host_env_uint("STREAMPOOL_HOST_DEVICES", 1, SP__HOST_DEVICES_MAX, 1, false, &n);
  if (st != SP_OK) return st;
  *count = (int)n;
  return SP_OK;
}

sp_status sp__host_device_open(int index, sp__bdevice **out) {
  if (!out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host device_open: out is NULL");
  int count;
  sp_status st = sp__host_device_count(&count);
  if (st != SP_OK) return st;
  if (index < 0 || index >= count)
    return sp__fail(SP_ERR_NO_DEVICE,
                    "host device_open: index %d out of range (%d host devices; set "
                    "STREAMPOOL_HOST_DEVICES for more)",
                    index, count);
  unsigned long long jitter = 0, seed = 0, memory = 0;
  if ((st = host_env_uint("STREAMPOOL_HOST_JITTER_US", 0, SP__HOST_JITTER_US_MAX, 0, false,
                          &jitter)) != SP_OK)
    return st;
  if ((st = host_env_uint("STREAMPOOL_HOST_JITTER_SEED", 0, ~0ull, 1, false, &seed)) != SP_OK)
    return st;
  if ((st = host_env_uint("STREAMPOOL_HOST_MEMORY", 1, SIZE_MAX / 2, host_physical_ram(), true,
                          &memory)) != SP_OK)
    return st;
  sp__bdevice *d = sp__calloc(1, sizeof(*d));
  if (!d) return sp__fail(SP_ERR_HOST_MEMORY, "host device_open: out of host memory");
  d->index = index;
  d->total_bytes = (size_t)memory;
  atomic_init(&d->used_bytes, 0);
  d->jitter_us = (unsigned)jitter;
  d->jitter_seed = seed;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  snprintf(d->name, sizeof(d->name), "host (%ld core%s)", cores > 0 ? cores : 1L,
           cores == 1 ? "" : "s");
  *out = d;
  return SP_OK;
}

void sp__host_device_close(sp__bdevice *d) {
  if (!d) return;
  size_t leaked = atomic_load(&d->used_bytes);
  if (leaked) /* the core frees every segment first; the rest is the caller's leak */
    sp__log(SP_LOG_WARN, "host device %d closed with %zu bytes of segments not freed", d->index,
            leaked);
  sp__free(d);
}

const char *sp__host_device_name(const sp__bdevice *d) { return d ? d->name : NULL; }

sp_status sp__host_memory_info(sp__bdevice *d, size_t *free_bytes, size_t *total_bytes) {
  if (!d || !free_bytes || !total_bytes)
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "host memory_info: NULL argument");
  size_t used = atomic_load_explicit(&d->used_bytes, memory_order_relaxed);
  *total_bytes = d->total_bytes;
  *free_bytes = used < d->total_bytes ? d->total_bytes - used : 0;
  return SP_OK;
}

/* ---- device memory -------------------------------------------------------------------------- */

#define HOST_SEGMENT_MAGIC 0x5350484f53544d45ull /* "SPHOSTME" */
/* A segment starts on an OS page, so its 2 MiB pages can be decommitted. */
enum { HOST_PAGE = 4096 };

typedef struct host_segment_header { /* the HOST_PAGE bytes in front of a segment          */
  uint64_t magic;                    /* HOST_SEGMENT_MAGIC while live, 0 after free         */
  size_t bytes;                      /* the size asked for                                 */
  _Atomic size_t committed;          /* bytes counted in used_bytes (decommitted pages not) */
  sp__bdevice *dev;                  /* the owner                                          */
} host_segment_header;
_Static_assert(sizeof(host_segment_header) <= HOST_PAGE, "segment header fits its slot");
_Static_assert(HOST_PAGE % SP__HOST_ALIGN == 0, "segments keep the device alignment");

/* Reserves bytes of d's capacity; false if it would pass the capacity. */
static bool host_capacity_take(sp__bdevice *d, size_t bytes) {
  size_t used = atomic_load_explicit(&d->used_bytes, memory_order_relaxed);
  do {
    if (bytes > d->total_bytes - used) return false;
  } while (!atomic_compare_exchange_weak(&d->used_bytes, &used, used + bytes));
  return true;
}

sp_status sp__host_mem_alloc(sp__bdevice *d, size_t bytes, void **out) {
  if (!d || !out) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host mem_alloc: NULL argument");
  sp__lock_assert_call_ok("host mem_alloc");
  if (bytes == 0) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host mem_alloc: 0 bytes");
  if (SP__UNLIKELY(sp__host_capture_of_thread()))
    return SP__HOST_CAPTURE_VIOLATION(sp__host_capture_of_thread(), "mem_alloc",
                                      "raw allocation during a capture");
  if (bytes > SIZE_MAX - HOST_PAGE || !host_capacity_take(d, bytes))
    return sp__fail(SP_ERR_OUT_OF_MEMORY,
                    "host device %d: out of memory: requested %zu bytes, %zu of %zu in use",
                    d->index, bytes, atomic_load(&d->used_bytes), d->total_bytes);
  void *base = NULL;
  if (posix_memalign(&base, HOST_PAGE, HOST_PAGE + bytes) != 0) {
    atomic_fetch_sub(&d->used_bytes, bytes);
    return sp__fail(SP_ERR_OUT_OF_MEMORY,
                    "host device %d: out of memory: the system refused %zu bytes", d->index, bytes);
  }
  host_segment_header *h = base;
  h->magic = HOST_SEGMENT_MAGIC;
  h->bytes = bytes;
  atomic_init(&h->committed, bytes);
  h->dev = d;
  *out = (char *)base + HOST_PAGE;
  return SP_OK;
}

/* The header of p if p is a live segment of d, else NULL with the error set (fn: the slot). */
static host_segment_header *host_segment_of(sp__bdevice *d, void *p, const char *fn) {
  if ((uintptr_t)p % HOST_PAGE != 0) {
    sp__fail(SP_ERR_INVALID_ARGUMENT, "host %s: %p is not a host segment", fn, p);
    return NULL;
  }
  host_segment_header *h = (host_segment_header *)((char *)p - HOST_PAGE);
  if (h->magic != HOST_SEGMENT_MAGIC || h->dev != d) {
    sp__fail(SP_ERR_INVALID_ARGUMENT, "host %s: %p is not a live segment of host device %d", fn, p,
             d->index);
    return NULL;
  }
  return h;
}

sp_status sp__host_mem_free(sp__bdevice *d, void *p) {
  if (!d) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host mem_free: device is NULL");
  sp__lock_assert_call_ok("host mem_free");
  if (!p) return SP_OK;
  if (SP__UNLIKELY(sp__host_capture_of_thread()))
    return SP__HOST_CAPTURE_VIOLATION(sp__host_capture_of_thread(), "mem_free",
                                      "raw free during a capture");
  host_segment_header *h = host_segment_of(d, p, "mem_free");
  if (!h) return SP_ERR_INVALID_ARGUMENT;
  h->magic = 0;
  atomic_fetch_sub(&d->used_bytes, atomic_load(&h->committed));
  free(h);
  return SP_OK;
}

/* The checks shared by decommit and commit: a live segment of d, a whole-page range inside it;
 * its header through *out. */
static sp_status host_page_range(sp__bdevice *d, void *segment, size_t offset, size_t bytes,
                                 const char *fn, host_segment_header **out) {
  if (!d || !segment) return sp__fail(SP_ERR_INVALID_ARGUMENT, "host %s: NULL argument", fn);
  sp__lock_assert_call_ok(fn);
  if (SP__UNLIKELY(sp__host_capture_of_thread()))
    return SP__HOST_CAPTURE_VIOLATION(sp__host_capture_of_thread(), fn,
                                      "page change during a capture");
  host_segment_header *h = host_segment_of(d, segment, fn);
  if (!h) return SP_ERR_INVALID_ARGUMENT;
  if (offset % SP__MEM_PAGE || bytes % SP__MEM_PAGE || !bytes || offset > h->bytes ||
      bytes > h->bytes - offset)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "host %s: [%zu, +%zu) is not a range of whole 2 MiB pages inside the "
                    "%zu-byte segment %p",
                    fn, offset, bytes, h->bytes, segment);
  *out = h;
  return SP_OK;
}

/* The pages' memory goes back to the system (MADV_DONTNEED: they read as zeros when touched
 * again) and their bytes to the device's capacity. They stay accessible: segments are heap memory,
 * which LeakSanitizer scans while they live (PROT_NONE pages crashed its scan in the fuzz run).
 * EINVAL (a system whose pages are larger than a segment's 4 KiB alignment) is
 * SP_ERR_UNSUPPORTED: the allocator keeps such segments whole. */
sp_status sp__host_mem_decommit(sp__bdevice *d, void *segment, size_t offset, size_t bytes) {
  host_segment_header *h = NULL;
  sp_status st = host_page_range(d, segment, offset, bytes, "mem_decommit", &h);
  if (st != SP_OK) return st;
  char *p = (char *)segment + offset;
  if (madvise(p, bytes, MADV_DONTNEED) != 0)
    return sp__fail(errno == EINVAL ? SP_ERR_UNSUPPORTED : SP_ERR_BACKEND,
                    "host mem_decommit: madvise of %zu bytes failed: %s", bytes, strerror(errno));
  atomic_fetch_sub(&h->committed, bytes);
  atomic_fetch_sub(&d->used_bytes, bytes);
  return SP_OK;
}

/* The pages count against the capacity again; the system maps them on first touch. */
sp_status sp__host_mem_commit(sp__bdevice *d, void *segment, size_t offset, size_t bytes) {
  host_segment_header *h = NULL;
  sp_status st = host_page_range(d, segment, offset, bytes, "mem_commit", &h);
  if (st != SP_OK) return st;
  if (!host_capacity_take(d, bytes))
    return sp__fail(SP_ERR_OUT_OF_MEMORY,
                    "host device %d: out of memory: committing %zu bytes, %zu of %zu in use",
                    d->index, bytes, atomic_load(&d->used_bytes), d->total_bytes);
  atomic_fetch_add(&h->committed, bytes);
  return SP_OK;
}
