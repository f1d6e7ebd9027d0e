/* The allocator's optional event history (internal): a bounded ring of recent events.
 *
 * Off by default. The allocator's hot path pays one relaxed load of sp__allocator.history and a
 * branch when it is off (SP__HISTORY); when on, an event costs a clock read, one atomic ticket
 * (fetch_add on the ring's shared counter) and a seqlocked slot write, with no lock. See history.c.
 */
#ifndef SP_ALLOC_HISTORY_H
#define SP_ALLOC_HISTORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct sp__history sp__history;
typedef struct sp__allocator sp__allocator;

/* Event kinds; their JSON names are sp__history_kind_name's. */
typedef enum sp__hist_kind {
  SP__HIST_ALLOC = 0,     /* a block handed to the user (stream: its stream)                   */
  SP__HIST_FREE,          /* sp_free, the block cached on its stream at once                    */
  SP__HIST_FREE_PENDING,  /* sp_free of a block used on other streams: deferred (pending)       */
  SP__HIST_FREE_COMPLETE, /* a pending block's other streams finished: it is cached now         */
  SP__HIST_REUSE,         /* cross-stream reuse of a completed block (peer: the owner stream)   */
  SP__HIST_REUSE_WAIT,    /* cross-stream reuse of an in-flight block, with a device-side wait  */
  SP__HIST_SEGMENT_MAP,   /* a segment allocated from the backend                               */
  SP__HIST_SEGMENT_UNMAP, /* a segment returned to the backend (bytes: its committed bytes)     */
  SP__HIST_OOM_RETRY,     /* out of memory (or the limit): flush everything and retry once     */
  SP__HIST_OOM,           /* the retry failed too: sp_alloc returns the error                   */
  SP__HIST_EMPTY_CACHE,   /* sp_empty_cache (bytes: what it released)                           */
  SP__HIST_PAGE_DECOMMIT, /* whole free pages of a segment given back (address: the first)      */
  SP__HIST_PAGE_COMMIT,   /* decommitted pages taken again for a block being allocated          */
  SP__HIST_KINDS
} sp__hist_kind;

/* One event as read back. stream/peer: -1 when none. */
typedef struct sp__hist_event {
  uint64_t seq;      /* ticket: total order of recording                              */
  uint64_t t_ns;     /* sp__now_ns() when recorded (monotonic)                        */
  unsigned kind;     /* sp__hist_kind                                                 */
  int device;        /* the device's index (sp_device_config.index)                   */
  int stream, peer;  /* stream index; peer: the other stream of a reuse               */
  uint32_t thread;   /* the recording thread's kernel thread id                       */
  uint64_t bytes;    /* block or segment bytes (rounded), or the request for OOM      */
  uintptr_t address; /* block (or segment) address; 0 when none                       */
  uintptr_t segment; /* the block's segment base; 0 when none                         */
} sp__hist_event;

/* Most entries one ring may have (64 bytes each). */
#define SP__HISTORY_MAX SP_MEMORY_HISTORY_MAX

const char *sp__history_kind_name(unsigned kind);

/* Records one event on h (not NULL). Any thread, no lock taken (any lock may be held). */
void sp__history_add(sp__history *h, unsigned kind, int stream, int peer, size_t bytes,
                     const void *address, const void *segment);

/* Starts a history of `entries` events on a (1..SP__HISTORY_MAX), replacing the current one;
 * 0 turns it off. Rings are kept until sp__history_destroy, a ring of the same size is reused, so
 * memory stays bounded by the distinct sizes asked for. Any thread (serialized by history_mu). */
sp_status sp__history_set(sp__allocator *a, size_t entries, const char *fn);
/* At allocator create: STREAMPOOL_MEMORY_HISTORY=N (unset or 0: off). */
sp_status sp__history_init(sp__allocator *a);
/* At allocator destroy: frees every ring. No other thread uses a. */
void sp__history_destroy(sp__allocator *a);

/* Reads the events still in the current ring, oldest first, into out (up to max). Entries being
 * written or overwritten during the read are left out. Returns the count; *info_out (may be NULL)
 * gets the ring's numbers. Any thread. */
typedef struct sp__history_info {
  bool enabled;
  size_t capacity;   /* entries                                              */
  uint64_t recorded; /* events recorded since enabled (kept or not)          */
  uint64_t dropped;  /* events lost because their slot was busy (wraparound) */
  uint64_t start_ns; /* sp__now_ns() when enabled                             */
} sp__history_info;
size_t sp__history_read(sp__allocator *a, sp__hist_event *out, size_t max, sp__history_info *info);

#endif /* SP_ALLOC_HISTORY_H */
