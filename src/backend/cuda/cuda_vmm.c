/* CUDA segments that can give pages back: CUDA's virtual memory management.
 *
 * Owns the segments mapped page by page and the driver entry points they need. A segment of whole
 * 2 MiB pages (two or more; the allocator's 20 MiB and larger segments) is an address range
 * reserved with cuMemAddressReserve and one physical allocation per page (cuMemCreate), each
 * mapped (cuMemMap) and made readable and writable (cuMemSetAccess) by the device and by every
 * device that can access it as a peer (as cuda_peer.c enables for cudaMalloc memory), so
 * mem_decommit can unmap and release single pages and mem_commit create and map them again.
 * Anything else, and every segment where the driver lacks the calls, the device does not support
 * them, the granularity is not 2 MiB or STREAMPOOL_CUDA_PAGES=0, is cudaMalloc'd as before
 * (mem_decommit then answers SP_ERR_UNSUPPORTED and the allocator keeps the pages).
 * Cost, measured on the H200 (2026-12-02): creating and freeing a 20 MiB segment this way takes
 * about 570 us (per page: cuMemCreate 8, cuMemMap 1, cuMemSetAccess 21, cuMemUnmap 15,
 * cuMemRelease 11 us) against 75 us for cudaMalloc + cudaFree; a page decommitted and committed
 * again, about 57 us. The allocator's cache makes segment creation rare in steady state.
 *
 * Invariants: a registered segment's handle[p] is non-zero exactly when page p is mapped;
 * handles and mappings are created and destroyed only here. Locking: vmm_mu (rank CUDA_VMM, a
 * leaf) guards the registry list; one segment's pages are changed only by the allocator's commit
 * lock holder or by mem_alloc/mem_free of that segment, never concurrently, so the driver calls
 * run with vmm_mu released.
 */
#include <dlfcn.h>

#include <cuda.h>

#include "cuda_internal.h"

typedef struct vmm_api {
  CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
  CUresult (*address_free)(CUdeviceptr, size_t);
  CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                     unsigned long long);
  CUresult (*release)(CUmemGenericAllocationHandle);
  CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
  CUresult (*unmap)(CUdeviceptr, size_t);
  CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
  CUresult (*granularity)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags);
  CUresult (*device_get)(CUdevice *, int);
  CUresult (*attribute)(int *, CUdevice_attribute, CUdevice);
} vmm_api;

static vmm_api api;
static bool api_ok;
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

/* The driver's entry points, from the libcuda the runtime has loaded. */
static void api_load(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!lib) lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (!lib) return;
  void **slots[] = {(void **)&api.reserve,    (void **)&api.address_free, (void **)&api.create,
                    (void **)&api.release,    (void **)&api.map,          (void **)&api.unmap,
                    (void **)&api.set_access, (void **)&api.granularity,  (void **)&api.device_get,
                    (void **)&api.attribute};
  const char *names[] = {"cuMemAddressReserve",
                         "cuMemAddressFree",
                         "cuMemCreate",
                         "cuMemRelease",
                         "cuMemMap",
                         "cuMemUnmap",
                         "cuMemSetAccess",
                         "cuMemGetAllocationGranularity",
                         "cuDeviceGet",
                         "cuDeviceGetAttribute"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (!(*slots[i] = dlsym(lib, names[i]))) return;
  api_ok = true; /* the handle stays open for the process's life */
}

typedef struct vmm_segment {
  struct vmm_segment *next;
  CUdeviceptr base;
  size_t pages;
  int ordinal;
  CUmemGenericAllocationHandle handle[]; /* [pages]; 0: decommitted */
} vmm_segment;

static sp__mutex vmm_mu = SP__MUTEX_INITIALIZER(CUDA_VMM);
static vmm_segment *segments; /* vmm_mu */

static vmm_segment *vmm_find(const void *base) {
  sp__mutex_lock(&vmm_mu);
  vmm_segment *g = segments;
  while (g && g->base != (CUdeviceptr)(uintptr_t)base) g = g->next;
  sp__mutex_unlock(&vmm_mu);
  return g;
}

static sp_status vmm_fail(CUresult r, const char *what) {
  return sp__fail(r == CUDA_ERROR_OUT_OF_MEMORY ? SP_ERR_OUT_OF_MEMORY : SP_ERR_BACKEND,
                  "cuda: %s: CUresult %d", what, (int)r);
}

static CUmemAllocationProp vmm_prop(int ordinal) {
  CUmemAllocationProp p = {0};
  p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p.location.id = ordinal;
  return p;
}

bool sp__cuda_vmm_usable(int ordinal) {
  pthread_once(&api_once, api_load);
  if (!api_ok) return false;
  int supported = 0;
  CUdevice dev = 0;
  CUmemAllocationProp prop = vmm_prop(ordinal);
  size_t gran = 0;
  return api.device_get(&dev, ordinal) == CUDA_SUCCESS &&
         api.attribute(&supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev) ==
             CUDA_SUCCESS &&
         supported &&
         api.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) == CUDA_SUCCESS && gran &&
         SP__MEM_PAGE % gran == 0;
}

/* Maps `count` pages of g from page `first` (each a new physical allocation) with read/write
 * access for g's device and its peers; on failure the pages mapped by this call are undone. */
static sp_status vmm_map(vmm_segment *g, size_t first, size_t count) {
  CUmemAllocationProp prop = vmm_prop(g->ordinal);
  CUmemAccessDesc access[16];
  size_t n_access = 0;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 1;
  for (int i = 0; i < devices && n_access < 16; i++) {
    int can = i == g->ordinal;
    if (!can && cudaDeviceCanAccessPeer(&can, i, g->ordinal) != cudaSuccess) can = 0;
    if (!can) continue;
    access[n_access].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access[n_access].location.id = i;
    access[n_access++].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  }
  (void)cudaGetLastError();
  for (size_t p = first; p < first + count; p++) {
    CUdeviceptr at = g->base + p * SP__MEM_PAGE;
    CUmemGenericAllocationHandle h = 0;
    CUresult r = api.create(&h, SP__MEM_PAGE, &prop, 0);
    if (r == CUDA_SUCCESS && (r = api.map(at, SP__MEM_PAGE, 0, h, 0)) != CUDA_SUCCESS)
      (void)api.release(h);
    if (r == CUDA_SUCCESS &&
        (r = api.set_access(at, SP__MEM_PAGE, access, n_access)) != CUDA_SUCCESS) {
      (void)api.unmap(at, SP__MEM_PAGE);
      (void)api.release(h);
    }
    if (r != CUDA_SUCCESS) {
      while (p-- > first) {
        (void)api.unmap(g->base + p * SP__MEM_PAGE, SP__MEM_PAGE);
        (void)api.release(g->handle[p]);
        g->handle[p] = 0;
      }
      return vmm_fail(r, r == CUDA_ERROR_OUT_OF_MEMORY ? "cuMemCreate (device full)"
                                                       : "cuMemCreate/cuMemMap/cuMemSetAccess");
    }
    g->handle[p] = h;
  }
  return SP_OK;
}

static void vmm_unmap(vmm_segment *g, size_t first, size_t count) {
  for (size_t p = first; p < first + count; p++) {
    if (!g->handle[p]) continue;
    (void)api.unmap(g->base + p * SP__MEM_PAGE, SP__MEM_PAGE);
    (void)api.release(g->handle[p]);
    g->handle[p] = 0;
  }
}

/* A segment mapped page by page, or *out = NULL (nothing done, no error) where it cannot be. */
sp_status sp__cuda_vmm_alloc(sp__bdevice *d, size_t bytes, void **out) {
  *out = NULL;
  if (!d->pages || bytes % SP__MEM_PAGE || bytes < 2 * SP__MEM_PAGE) return SP_OK;
  size_t pages = bytes / SP__MEM_PAGE;
  vmm_segment *g = sp__calloc(1, sizeof(*g) + pages * sizeof(g->handle[0]));
  if (!g) return sp__fail(SP_ERR_HOST_MEMORY, "cuda: mem_alloc: out of host memory");
  g->pages = pages;
  g->ordinal = d->ordinal;
  CUresult r = api.reserve(&g->base, bytes, SP__MEM_PAGE, 0, 0);
  if (r != CUDA_SUCCESS) {
    sp__free(g);
    return vmm_fail(r, "cuMemAddressReserve");
  }
  sp_status st = vmm_map(g, 0, pages);
  if (st != SP_OK) {
    (void)api.address_free(g->base, bytes);
    sp__free(g);
    return st;
  }
  sp__mutex_lock(&vmm_mu);
  g->next = segments;
  segments = g;
  sp__mutex_unlock(&vmm_mu);
  *out = (void *)(uintptr_t)g->base;
  return SP_OK;
}

bool sp__cuda_vmm_free(void *p) {
  sp__mutex_lock(&vmm_mu);
  vmm_segment **at = &segments;
  while (*at && (*at)->base != (CUdeviceptr)(uintptr_t)p) at = &(*at)->next;
  vmm_segment *g = *at;
  if (g) *at = g->next;
  sp__mutex_unlock(&vmm_mu);
  if (!g) return false;
  vmm_unmap(g, 0, g->pages);
  (void)api.address_free(g->base, g->pages * SP__MEM_PAGE);
  sp__free(g);
  return true;
}

/* The checks shared by decommit and commit: d made current, segment one of d's page-mapped
 * segments, [offset, + bytes) whole pages inside it; the segment through *out. */
static sp_status vmm_range(sp__bdevice *d, void *segment, size_t offset, size_t bytes,
                           const char *fn, vmm_segment **out) {
  if (!d) return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: %s: NULL device", fn);
  sp_status st = sp__cuda_use_device(d);
  if (st != SP_OK) return st;
  vmm_segment *g = segment ? vmm_find(segment) : NULL;
  if (!g)
    return sp__fail(SP_ERR_UNSUPPORTED,
                    "cuda: %s: segment %p is not mapped page by page (a cudaMalloc segment)", fn,
                    segment);
  if (offset % SP__MEM_PAGE || bytes % SP__MEM_PAGE || !bytes ||
      offset / SP__MEM_PAGE + bytes / SP__MEM_PAGE > g->pages)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "cuda: %s: [%zu, +%zu) is not whole 2 MiB pages of the %zu-page segment %p", fn,
                    offset, bytes, g->pages, segment);
  *out = g;
  return SP_OK;
}

sp_status sp__cuda_mem_decommit(sp__bdevice *d, void *segment, size_t offset, size_t bytes) {
  vmm_segment *g = NULL;
  sp_status st = vmm_range(d, segment, offset, bytes, "mem_decommit", &g);
  if (st == SP_OK) vmm_unmap(g, offset / SP__MEM_PAGE, bytes / SP__MEM_PAGE);
  return st;
}

sp_status sp__cuda_mem_commit(sp__bdevice *d, void *segment, size_t offset, size_t bytes) {
  vmm_segment *g = NULL;
  sp_status st = vmm_range(d, segment, offset, bytes, "mem_commit", &g);
  if (st != SP_OK) return st;
  size_t first = offset / SP__MEM_PAGE, count = bytes / SP__MEM_PAGE;
  for (size_t p = first; p < first + count; p++)
    if (g->handle[p])
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "cuda: mem_commit: page %zu of %p is mapped", p,
                      segment);
  return vmm_map(g, first, count);
}
