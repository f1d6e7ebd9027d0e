/* Pages: the memory of whole free pages given back to the backend while their segment stays, and
 * taken again when a block over them is allocated.
 *
 * Owns the policy of which pages go: every whole SP__MEM_PAGE page of a segment that lies inside
 * one CACHED block whose stream is done with it (the conditions under which segment.c gives back a
 * segment whose blocks are all free). Without it a segment that one small live block pins keeps
 * all its free pages reserved: on bench/alloc's 16- and 8-stream traces peak reserved / peak
 * allocated was 1.24 and 1.34, the free memory in pieces of 2-18 MiB of 16-46 MiB segments. The
 * allocator decommits before it grows (alloc.c), when the cache is large, and on the way to an
 * out-of-memory error and in sp_empty_cache; sp_alloc commits the pages of a block it takes before
 * handing it out, under the memory limit.
 *
 * Invariants: a decommitted page (a bit of seg->gone) lies wholly inside one CACHED block, or
 * inside a LIVE block whose commit flag is set and whose taker commits it before the block is
 * used; a bit is set before the page's decommit call and cleared only after its commit call
 * returned, so a set bit may mean "on its way out" but a clear one always means usable;
 * reserved == the sum over linked segments of bytes - n_gone pages, plus `decommitting` (pages
 * picked whose decommit has not returned: reserved drops only once the backend has them, so a
 * segment made meanwhile cannot pass the limit) (validate.c checks it); pages being committed are
 * counted in `reserving`, as a segment being made. So reserved never counts less than the backend
 * holds for us. Locking: commit_mu serializes every change of the bitmaps and holds segment
 * releases off (segment.c detaches under it), so between picking a page and the backend call
 * nobody can release its segment or commit it; bits change under seglist_mu and the segment's
 * lock, where takers (cache.c) and the validator read them. The backend is called under
 * commit_mu alone, never under a spinlock.
 */
#include "alloc/alloc_internal.h"

#include "core/status.h"

static_assert(SP__HUGE_ROUND % SP__MEM_PAGE == 0, "a huge segment is whole pages");
static_assert(SP__LARGE_SEGMENT % SP__MEM_PAGE == 0, "a large segment is whole pages");

enum { RUNS_MAX = 64 }; /* page runs decommitted by one pass at most (the next pass goes on) */

typedef struct page_run {
  sp__segment *seg;
  size_t first, count; /* pages */
} page_run;

static bool page_gone(const sp__segment *seg, size_t p) {
  return (seg->gone[p / 64] >> (p % 64)) & 1u;
}

/* Sets or clears count bits from page first (seg->mu and commit_mu held). */
static void pages_mark(sp__segment *seg, size_t first, size_t count, bool gone) {
  for (size_t p = first; p < first + count; p++) {
    if (gone) seg->gone[p / 64] |= 1ull << (p % 64);
    else seg->gone[p / 64] &= ~(1ull << (p % 64));
  }
  if (gone) seg->n_gone += count;
  else seg->n_gone -= count;
}

bool sp__pages_bitmap_new(sp__allocator *a, size_t bytes, uint64_t **out) {
  size_t pages = bytes / SP__MEM_PAGE;
  *out = NULL;
  if (!a->can_decommit || pages < 2) return true; /* one page: the segment goes back whole */
  *out = sp__calloc((pages + 63) / 64, sizeof(uint64_t));
  return *out != NULL;
}

bool sp__pages_gone_in(const sp__segment *seg, size_t off, size_t bytes) {
  if (!seg->n_gone) return false;
  size_t end = (off + bytes + SP__MEM_PAGE - 1) / SP__MEM_PAGE, pages = seg->bytes / SP__MEM_PAGE;
  for (size_t p = off / SP__MEM_PAGE; p < end && p < pages; p++)
    if (page_gone(seg, p)) return true;
  return false;
}

/* Marks the committed whole pages inside the done CACHED blocks of seg (every lock held) and
 * appends them to runs[n..cap); the new n. */
static unsigned pages_pick(sp__allocator *a, sp__segment *seg, const uint64_t *max_stamp,
                           const bool *keep, page_run *runs, unsigned n) {
  for (sp__block *b = seg->first; b && n < RUNS_MAX; b = b->next) {
    if (b->state != SP__BLOCK_CACHED || b->stamp > max_stamp[b->stream] ||
        (keep && keep[b->stream]))
      continue;
    size_t off = (size_t)(b->ptr - seg->base);
    size_t p = (off + SP__MEM_PAGE - 1) / SP__MEM_PAGE, end = (off + b->bytes) / SP__MEM_PAGE;
    while (p < end && n < RUNS_MAX) {
      if (page_gone(seg, p)) {
        p++;
        continue;
      }
      size_t q = p;
      while (q < end && !page_gone(seg, q)) q++;
      pages_mark(seg, p, q - p, true); /* reserved drops once the backend has them */
      a->decommitting += (q - p) * SP__MEM_PAGE;
      runs[n++] = (page_run){seg, p, q - p};
      p = q;
    }
  }
  return n;
}

size_t sp__pages_decommit(sp__allocator *a, const uint64_t *max_stamp, const bool *keep,
                          unsigned pool) {
  if (!a->can_decommit) return 0;
  page_run runs[RUNS_MAX];
  unsigned n = 0;
  sp__mutex_lock(&a->commit_mu);
  sp__spin_lock(&a->seglist_mu);
  for (sp__segment *seg = a->segments; seg && n < RUNS_MAX; seg = seg->next) {
    if (!seg->gone || seg->whole || (pool != SP__POOLS && seg->pool != pool)) continue;
    sp__spin_lock(&seg->mu);
    n = pages_pick(a, seg, max_stamp, keep, runs, n);
    sp__spin_unlock(&seg->mu);
  }
  sp__spin_unlock(&a->seglist_mu);
  size_t done = 0;
  for (unsigned i = 0; i < n; i++) {
    sp__segment *seg = runs[i].seg;
    size_t off = runs[i].first * SP__MEM_PAGE, bytes = runs[i].count * SP__MEM_PAGE;
    sp_status st = a->dev->be->mem_decommit(a->dev->bdev, seg->base, off, bytes);
    sp__spin_lock(&a->seglist_mu);
    a->decommitting -= bytes;
    if (st == SP_OK) {
      a->reserved -= bytes;
      sp__spin_unlock(&a->seglist_mu);
      done += bytes;
      SP__HISTORY(a, SP__HIST_PAGE_DECOMMIT, (int)seg->stream, -1, bytes, seg->base + off,
                  seg->base);
      continue;
    }
    sp__error_clear(); /* best effort: the pages stay committed and counted */
    sp__spin_lock(&seg->mu);
    if (st == SP_ERR_UNSUPPORTED) seg->whole = true; /* not this segment: never asked again */
    pages_mark(seg, runs[i].first, runs[i].count, false);
    sp__spin_unlock(&seg->mu);
    sp__spin_unlock(&a->seglist_mu);
  }
  sp__mutex_unlock(&a->commit_mu);
  return done;
}

/* The first run of decommitted pages of seg at or after page *p and before end (mu or commit_mu
 * held); false when none. */
static bool next_gone_run(const sp__segment *seg, size_t *p, size_t end, size_t *count) {
  while (*p < end && !page_gone(seg, *p)) (*p)++;
  size_t q = *p;
  while (q < end && page_gone(seg, q)) q++;
  *count = q - *p;
  return *count > 0;
}

sp_status sp__pages_commit(sp__allocator *a, sp__block *blk) {
  sp__segment *seg = blk->seg;
  size_t off = (size_t)(blk->ptr - seg->base);
  size_t first = off / SP__MEM_PAGE, pages = seg->bytes / SP__MEM_PAGE;
  size_t end = (off + blk->bytes + SP__MEM_PAGE - 1) / SP__MEM_PAGE;
  if (end > pages) end = pages;
  sp_status st = SP_OK;
  sp__mutex_lock(&a->commit_mu);
  size_t count = 0;
  for (size_t p = first; st == SP_OK && next_gone_run(seg, &p, end, &count); p += count) {
    size_t bytes = count * SP__MEM_PAGE;
    sp__spin_lock(&a->seglist_mu);
    size_t held = a->reserved + a->reserving;
    size_t room = !a->limit ? SIZE_MAX : (held < a->limit ? a->limit - held : 0);
    if (bytes <= room) a->reserving += bytes; /* as a segment being made: under the limit */
    sp__spin_unlock(&a->seglist_mu);
    if (bytes > room) {
      st = sp__fail(SP_ERR_LIMIT,
                    "sp_alloc: the %zu bytes of decommitted pages under a cached block of %zu "
                    "bytes do not fit under the memory limit %zu: reserved %zu leaves %zu",
                    bytes, blk->bytes, a->limit, held, room);
      break;
    }
    st = a->dev->be->mem_commit(a->dev->bdev, seg->base, p * SP__MEM_PAGE, bytes);
    /* The bits stay set until the pages are usable: a neighbour block taken meanwhile over the
     * same page gets its own commit flag and waits here on commit_mu. */
    sp__spin_lock(&a->seglist_mu);
    a->reserving -= bytes;
    if (st == SP_OK) {
      sp__spin_lock(&seg->mu);
      pages_mark(seg, p, count, false);
      sp__spin_unlock(&seg->mu);
      a->reserved += bytes;
      if (a->reserved > a->reserved_peak) a->reserved_peak = a->reserved;
    }
    sp__spin_unlock(&a->seglist_mu);
    if (st == SP_OK)
      SP__HISTORY(a, SP__HIST_PAGE_COMMIT, (int)blk->stream, -1, bytes,
                  seg->base + p * SP__MEM_PAGE, seg->base);
  }
  if (st == SP_OK) {
    sp__spin_lock(&seg->mu); /* the validator reads the flag under it */
    blk->commit = false;
    sp__spin_unlock(&seg->mu);
  }
  sp__mutex_unlock(&a->commit_mu);
  return st;
}
