/* A failing, counting host allocator for tests (public API only: sp_host_allocator_set).
 *
 * tu_hostmem_install() installs it; it forwards to malloc/calloc/free and counts live blocks.
 * tu_hostmem_arm(nth, min_bytes, persist) counts, from now on, the allocations (malloc and calloc)
 * of at least min_bytes: allocations 0..nth-1 of those succeed, allocation nth returns NULL (and,
 * with persist, every later one too); smaller ones always succeed. The library reports such a
 * failure as SP_ERR_HOST_MEMORY. tu_hostmem_disarm() stops failing. tu_hostmem_live() is the
 * number of blocks allocated through the hook and not yet freed (compare it before and after a
 * step: a difference is a leak).
 *
 * Thread safety: the hook runs on any thread (atomics); install/arm/disarm on the test's main
 * thread between steps. Install before opening any device (the hook frees with free(), so blocks
 * from before the install are freed correctly, but they make tu_hostmem_live drift: compare
 * deltas).
 */
#ifndef SP_TU_HOST_FAULTS_H
#define SP_TU_HOST_FAULTS_H

#include <stddef.h>

void tu_hostmem_install(void);
void tu_hostmem_uninstall(void); /* back to the C library's allocator; disarms */
void tu_hostmem_arm(unsigned long nth, size_t min_bytes, int persist);
void tu_hostmem_disarm(void);
unsigned long tu_hostmem_hits(void);  /* allocations failed since the last arm */
unsigned long tu_hostmem_calls(void); /* counted allocations (>= min_bytes) since the last arm */
long tu_hostmem_live(void);

#endif /* SP_TU_HOST_FAULTS_H */
