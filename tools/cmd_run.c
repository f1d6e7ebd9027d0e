/* streampool run: the command (run.h describes the whole of it and its files). Opens the devices
 * of --devices with a model each, builds their references, runs one row of the table per thread
 * count, reports, and closes everything. Main thread.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "model_open.h"
#include "run.h"

/* The device indices of --devices ("all": every device of the backend, at most MAX_DEVICES). */
static sp_status fleet_indices(const run_opts *o, run_fleet *f) {
  if (!o->devices_all) {
    f->n = o->n_devices ? o->n_devices : 1;
    for (unsigned d = 0; d < f->n; d++) f->index[d] = o->n_devices ? o->devices[d] : 0;
    return SP_OK;
  }
  int count = 0;
  sp_status st = sp_device_count(o->backend, &count);
  if (st != SP_OK) return st;
  if (count <= 0) {
    fprintf(stderr, "streampool run: --devices all: backend %s has no device\n",
            o->backend ? o->backend : "auto");
    return SP_ERR_NO_DEVICE;
  }
  f->n = count < MAX_DEVICES ? (unsigned)count : MAX_DEVICES;
  for (unsigned d = 0; d < f->n; d++) f->index[d] = d;
  return SP_OK;
}

/* Opens every device of the fleet with a model each (the same seeded model or file). */
static sp_status open_fleet(const run_opts *o, run_fleet *f, char *desc, size_t n) {
  sp_status st = fleet_indices(o, f);
  if (st != SP_OK) return st; /* f->n is 0: no device to spread threads over */
  unsigned max_t = 1;
  for (unsigned i = 0; i < o->n_runs; i++)
    if (o->threads[i] > max_t) max_t = o->threads[i];
  max_t = (max_t + f->n - 1) / f->n; /* threads per device */
  sp_device_config cfg = {.backend = o->backend};
  if (max_t + 1 + o->bcfg.workers > 32)
    cfg.streams =
        max_t + 3 + o->bcfg.workers > SP_STREAMS_MAX ? SP_STREAMS_MAX : max_t + 3 + o->bcfg.workers;
  static const unsigned dims[] = {512, 1024, 1024, 512};
  for (unsigned d = 0; st == SP_OK && d < f->n; d++) {
    cfg.index = (int)f->index[d];
    st = sp_device_open(&cfg, &f->dev[d]);
    if (st != SP_OK) break;
    if (o->model_path) {
      st = sp_cli_model_open(f->dev[d], o->model_path, o->arch, o->dtype, &f->m[d]);
    } else {
      st = sp_model_mlp_random(f->dev[d], dims, 4, o->seed, o->dtype, &f->m[d]);
    }
    char chain[384];
    if (st == SP_OK) sp_cli_model_chain(f->m[d], chain, sizeof(chain));
    if (st == SP_OK && o->model_path) snprintf(desc, n, "%s: %s", o->model_path, chain);
    else if (st == SP_OK)
      snprintf(desc, n, "built-in seeded MLP (seed %llu): %s", (unsigned long long)o->seed, chain);
  }
  return st;
}

static void fleet_close(run_fleet *f) {
  for (unsigned d = 0; d < MAX_DEVICES; d++) {
    free(f->ref[d].in);
    free(f->ref[d].out);
    sp_model_free(f->m[d]);
    sp_device_close(f->dev[d]);
  }
}

/* Every device's reference outputs, computed on that device. */
static int fleet_refs(run_fleet *f, const run_opts *o) {
  for (unsigned d = 0; d < f->n; d++) {
    if (sp_cli_run_ref_build(f->m[d], o, &f->ref[d]) != SP_OK) {
      fprintf(stderr, "streampool run: reference pass on device %u failed: %s\n", f->index[d],
              sp_last_error());
      return 1;
    }
    sp_stream_release_current(f->dev[d]); /* the reference pass's stream is not the run's */
  }
  return 0;
}

static int run_all(run_fleet *f, const run_opts *o, const char *desc) {
  if (fleet_refs(f, o)) return 1;
  run_result res[MAX_RUNS];
  run_result *res_dev = calloc((size_t)MAX_RUNS * MAX_DEVICES, sizeof(*res_dev));
  if (!res_dev) return 1;
  if (!o->json) sp_cli_run_print_header(f, o, desc);
  int bad = 0;
  double base = 0, base_dev[MAX_DEVICES] = {0};
  for (unsigned i = 0; i < o->n_runs; i++) {
    run_result *rd = &res_dev[(size_t)i * MAX_DEVICES];
    bad |= sp_cli_run_one(f, o, o->threads[i], &res[i], rd);
    double rps = res[i].seconds > 0 ? (double)res[i].requests / res[i].seconds : 0;
    if (i == 0) base = rps; /* speedup is over the first row: 1 thread in the usual lists */
    res[i].speedup = base > 0 ? rps / base : 0;
    for (unsigned d = 0; d < f->n; d++) {
      double r = rd[d].seconds > 0 ? (double)rd[d].requests / rd[d].seconds : 0;
      if (base_dev[d] == 0) base_dev[d] = r;
      rd[d].speedup = base_dev[d] > 0 ? r / base_dev[d] : 0;
    }
    if (!o->json) sp_cli_run_print_rows(f, o, &res[i], rd);
  }
  sp_memory_stats ms[MAX_DEVICES];
  memset(ms, 0, sizeof(ms));
  for (unsigned d = 0; d < f->n; d++) sp_memory_stats_get(f->dev[d], &ms[d]);
  if (o->json) sp_cli_run_print_json(f, o, desc, res, res_dev, ms, !bad);
  else sp_cli_run_print_footer(f, ms, !bad);
  free(res_dev);
  return bad ? 1 : 0;
}

int sp_cli_run(int argc, char **argv) {
  run_opts o;
  int rc = sp_cli_run_parse(argc, argv, &o);
  if (rc) return rc == 1 ? SP_CLI_OK : SP_CLI_USAGE;
  if (sp_cli_run_is_encoder_folder(o.model_path))
    return sp_cli_run_encoder(&o); /* a folder: an encoder (run_encoder.c) */
  run_fleet f;
  memset(&f, 0, sizeof(f));
  char desc[512];
  if (o.snapshot) sp_cli_snapshot_prepare(); /* history on before the devices open */
  sp_status st = open_fleet(&o, &f, desc, sizeof(desc));
  if (st != SP_OK) {
    fprintf(stderr, "streampool run: %s: %s\n", sp_status_str(st), sp_last_error());
    fleet_close(&f);
    return st == SP_ERR_INVALID_ARGUMENT ? SP_CLI_USAGE : SP_CLI_FAILED;
  }
  rc = run_all(&f, &o, desc); /* outputs written after the run (files, snapshots) go here */
  if (o.snapshot && sp_cli_snapshot_save(f.dev[0], o.snapshot)) rc = SP_CLI_FAILED;
  fleet_close(&f);
  return rc;
}
