/* streampool run: reporting. The table (header, a row per thread count with a line per device
 * when there are several), the allocator's counters and the result line on stdout; or, with
 * --json, one JSON document holding the same. Main thread; no state.
 */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "measure.h"
#include "run.h"

void sp_cli_run_print_header(const run_fleet *f, const run_opts *o, const char *model_desc) {
  if (f->n == 1)
    printf("streampool run: %s (backend %s)\n", sp_device_name(f->dev[0]),
           sp_device_backend(f->dev[0]));
  else
    printf(
        "streampool run: %u devices (backend %s), threads spread round-robin, one model "
        "each\n",
        f->n, sp_device_backend(f->dev[0]));
  for (unsigned d = 0; f->n > 1 && d < f->n; d++)
    printf("  device %u: %s\n", f->index[d], sp_device_name(f->dev[d]));
  printf(
      "model: %s, %s, batch %u, %.1f s per thread count, outputs checked against a "
      "single-threaded reference (%d rows, tolerance %g)\n",
      model_desc, sp_cli_dtype_name(o->dtype), o->batch, o->duration_s, REF_ROWS,
      sp_cli_tolerance(o->dtype));
  if (o->batcher)
    printf("batcher: max_batch %u, max_delay_us %u, workers %u (0: defaults 16, 200, 4)\n",
           o->bcfg.max_batch, o->bcfg.max_delay_us, o->bcfg.workers);
  printf("\n%s%8s %12s %12s %9s %9s %8s %10s%s\n", f->n > 1 ? " device " : "",
         o->batcher ? "clients" : "threads", "requests/s", "samples/s", "p50 us", "p99 us",
         "speedup", "max err", o->batcher ? "  rows/batch" : "");
  fflush(stdout);
}

/* One line; label (a device index or "total") only with several devices. */
static void print_row(const run_opts *o, const run_result *r, const char *label) {
  double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
  if (label) printf("%7s ", label);
  printf("%8u %12.1f %12.1f %9.1f %9.1f %7.2fx %10.2e", r->threads, rps, rps * o->batch, r->p50_us,
         r->p99_us, r->speedup, r->max_err);
  if (o->batcher) printf("  %10.1f", r->batches ? (double)r->requests / (double)r->batches : 0);
  if (r->failures) printf("   %llu FAILED: %s", (unsigned long long)r->failures, r->first_error);
  if (r->wrong) printf("   %llu WRONG outputs", (unsigned long long)r->wrong);
  printf("\n");
  fflush(stdout);
}

static void print_memory(const sp_memory_stats *ms, const char *label) {
  printf(
      "%smemory%s: allocated %.1f MiB (peak %.1f), reserved %.1f MiB (peak %.1f); allocs %llu, "
      "cache hits %llu, backend allocs %llu, cross-stream reuses %llu, deferred frees %llu, "
      "OOM retries %llu\n",
      label ? "" : "\n", label ? label : "", (double)ms->allocated_bytes / 1048576.0,
      (double)ms->allocated_bytes_peak / 1048576.0, (double)ms->reserved_bytes / 1048576.0,
      (double)ms->reserved_bytes_peak / 1048576.0, (unsigned long long)ms->allocs,
      (unsigned long long)ms->cache_hits, (unsigned long long)ms->backend_allocs,
      (unsigned long long)ms->cross_stream_reuses, (unsigned long long)ms->deferred_frees,
      (unsigned long long)ms->oom_retries);
}

static cJSON *json_run(const run_opts *o, const run_result *r) {
  cJSON *j = cJSON_CreateObject();
  double rps = r->seconds > 0 ? (double)r->requests / r->seconds : 0;
  cJSON_AddNumberToObject(j, "threads", r->threads);
  cJSON_AddNumberToObject(j, "requests", (double)r->requests);
  cJSON_AddNumberToObject(j, "seconds", r->seconds);
  cJSON_AddNumberToObject(j, "requests_per_s", rps);
  cJSON_AddNumberToObject(j, "samples_per_s", rps * o->batch);
  cJSON_AddNumberToObject(j, "p50_us", r->p50_us);
  cJSON_AddNumberToObject(j, "p99_us", r->p99_us);
  cJSON_AddNumberToObject(j, "speedup", r->speedup);
  cJSON_AddNumberToObject(j, "max_err", r->max_err);
  cJSON_AddNumberToObject(j, "failures", (double)r->failures);
  cJSON_AddNumberToObject(j, "wrong", (double)r->wrong);
  if (o->batcher) cJSON_AddNumberToObject(j, "batches", (double)r->batches);
  if (r->first_error[0]) cJSON_AddStringToObject(j, "first_error", r->first_error);
  return j;
}

static cJSON *json_memory(const sp_memory_stats *ms) {
  cJSON *mem = cJSON_CreateObject();
  cJSON_AddNumberToObject(mem, "allocated_bytes_peak", (double)ms->allocated_bytes_peak);
  cJSON_AddNumberToObject(mem, "reserved_bytes_peak", (double)ms->reserved_bytes_peak);
  cJSON_AddNumberToObject(mem, "allocs", (double)ms->allocs);
  cJSON_AddNumberToObject(mem, "cache_hits", (double)ms->cache_hits);
  cJSON_AddNumberToObject(mem, "backend_allocs", (double)ms->backend_allocs);
  cJSON_AddNumberToObject(mem, "cross_stream_reuses", (double)ms->cross_stream_reuses);
  return mem;
}

/* With several devices: "devices" [{index, name, memory}] at the top, and per run "devices"
 * [{device, ...row}]. "memory" is device 0's (the only one without --devices). */
void sp_cli_run_print_json(const run_fleet *f, const run_opts *o, const char *model_desc,
                           const run_result *res, const run_result *res_dev,
                           const sp_memory_stats *ms, bool ok) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "device", sp_device_name(f->dev[0]));
  cJSON_AddStringToObject(root, "backend", sp_device_backend(f->dev[0]));
  cJSON_AddStringToObject(root, "model", model_desc);
  cJSON_AddStringToObject(root, "dtype", sp_cli_dtype_name(o->dtype));
  cJSON_AddNumberToObject(root, "batch", o->batch);
  cJSON_AddNumberToObject(root, "duration_s", o->duration_s);
  cJSON_AddNumberToObject(root, "tolerance", sp_cli_tolerance(o->dtype));
  cJSON_AddBoolToObject(root, "batcher", o->batcher);
  cJSON *runs = cJSON_AddArrayToObject(root, "runs");
  for (unsigned i = 0; i < o->n_runs; i++) {
    cJSON *run = json_run(o, &res[i]);
    cJSON *per = f->n > 1 ? cJSON_AddArrayToObject(run, "devices") : NULL;
    for (unsigned d = 0; per && d < f->n; d++) {
      cJSON *row = json_run(o, &res_dev[(size_t)i * MAX_DEVICES + d]);
      cJSON_AddNumberToObject(row, "device", f->index[d]);
      cJSON_AddItemToArray(per, row);
    }
    cJSON_AddItemToArray(runs, run);
  }
  cJSON_AddItemToObject(root, "memory", json_memory(&ms[0]));
  cJSON *devs = f->n > 1 ? cJSON_AddArrayToObject(root, "devices") : NULL;
  for (unsigned d = 0; devs && d < f->n; d++) {
    cJSON *dj = cJSON_CreateObject();
    cJSON_AddNumberToObject(dj, "index", f->index[d]);
    cJSON_AddStringToObject(dj, "name", sp_device_name(f->dev[d]));
    cJSON_AddItemToObject(dj, "memory", json_memory(&ms[d]));
    cJSON_AddItemToArray(devs, dj);
  }
  cJSON_AddBoolToObject(root, "ok", ok);
  char *s = cJSON_Print(root);
  if (s) printf("%s\n", s);
  free(s);
  cJSON_Delete(root);
}

/* The table: per thread count, a line per device (several devices) and the total. */
void sp_cli_run_print_rows(const run_fleet *f, const run_opts *o, const run_result *r,
                           const run_result *rd) {
  char label[16];
  for (unsigned d = 0; f->n > 1 && d < f->n; d++) {
    snprintf(label, sizeof(label), "%u", f->index[d]);
    print_row(o, &rd[d], label);
  }
  print_row(o, r, f->n > 1 ? "total" : NULL);
}

void sp_cli_run_print_footer(const run_fleet *f, const sp_memory_stats *ms, bool ok) {
  if (f->n > 1) printf("\n");
  for (unsigned d = 0; d < f->n; d++) {
    char label[32];
    snprintf(label, sizeof(label), " (device %u)", f->index[d]);
    print_memory(&ms[d], f->n > 1 ? label : NULL);
  }
  printf("result: %s\n", ok ? "OK (every output matches the single-threaded reference)"
                            : "FAILED (a call failed or an output differs from the reference)");
}
