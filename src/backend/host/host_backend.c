/* The host backend's method table: the CPU as a device whose streams are worker threads.
 *
 * Owns: sp__host_backend, every slot filled (the optional ones included). The implementation is
 * split by object: host_device.c (device, environment, memory), host_stream.c
 * (worker threads and their FIFO), host_event.c (events as stream counters), host_math.c (Linear
 * and dtype conversion), host_nn.c (the encoder's other layers), host_peer.c (copies from another
 * host device), host_graph.c (graph capture and replay, and the capture contract's checks),
 * host_pinned.c (pinned host memory), host_resident.c (resident forwards on a private stream). The
 * table is immutable; the objects' locking is described in host_impl.h.
 */
#include "backend/host/host_impl.h"

const sp__backend sp__host_backend = {
    .version = SP__BACKEND_VERSION,
    .name = "host",
    .device_count = sp__host_device_count,
    .device_open = sp__host_device_open,
    .device_close = sp__host_device_close,
    .device_name = sp__host_device_name,
    .memory_info = sp__host_memory_info,
    .stream_create = sp__host_stream_create,
    .stream_destroy = sp__host_stream_destroy,
    .stream_query = sp__host_stream_query,
    .stream_sync = sp__host_stream_sync,
    .memcpy_async = sp__host_memcpy_async,
    .memset_async = sp__host_memset_async,
    .host_func = sp__host_host_func,
    .linear_async = sp__host_linear_async,
    .linear_f32_io_rows = sp__host_linear_f32_io_rows,
    .convert_async = sp__host_convert_async,
    .nn_async = sp__host_nn_async,
    .event_create = sp__host_event_create,
    .event_destroy = sp__host_event_destroy,
    .event_record = sp__host_event_record,
    .stream_wait_event = sp__host_stream_wait_event,
    .event_query = sp__host_event_query,
    .event_sync = sp__host_event_sync,
    .event_elapsed_ms = sp__host_event_elapsed_ms,
    .mem_alloc = sp__host_mem_alloc,
    .mem_free = sp__host_mem_free,
    .mem_decommit = sp__host_mem_decommit,
    .mem_commit = sp__host_mem_commit,
    .graph_capture_begin = sp__host_graph_capture_begin,
    .graph_capture_end = sp__host_graph_capture_end,
    .graph_launch = sp__host_graph_launch,
    .graph_destroy = sp__host_graph_destroy,
    .host_alloc_pinned = sp__host_alloc_pinned,
    .host_free_pinned = sp__host_free_pinned,
    .memcpy_peer_async = sp__host_memcpy_peer_async,
    .resident_open = sp__host_resident_open,
    .resident_run = sp__host_resident_run,
    .resident_launches = sp__host_resident_launches,
    .resident_close = sp__host_resident_close,
};
