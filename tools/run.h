/* streampool run: many threads run one model at once; a scaling table, checked outputs.
 *
 * For each thread count T of --threads, T threads call sp_model_infer (or sp_batcher_infer with
 * --batcher) for --duration seconds, each on its own current stream. Inputs come from a fixed set
 * of REF_ROWS seeded rows whose outputs were computed once, single-threaded, before the runs;
 * every output of the run is compared with its reference row (the one error metric and tolerance
 * of measure.h) and a wrong one or a failed call makes the command exit 1. Latencies go into
 * per-thread log-linear histograms (1/32 relative resolution), merged for p50/p99. Output: a
 * table on stdout (or one JSON document with --json), a progress bar on stderr when it is a
 * terminal, then the allocator's counters.
 *
 * --devices all|0,1,...: one device per index (of the chosen backend), each with its own model
 * and reference; thread i runs on device i mod n (T is the total thread count); each row of the
 * table then has one line per device and a total line, and memory is reported per device.
 *
 * The command is split by what each part owns; this header holds their shared types:
 *   run_options.c    the options: usage text, option table, parsing into run_opts. A new option
 *                    is a run_opts field, a usage line, a table entry and a case in run_opt.
 *   run_reference.c  the seeded inputs and their single-threaded reference outputs
 *   run_threads.c    the worker threads: calls, checks, latencies
 *   run_latency.c    the latency histogram
 *   run_table.c      one row of the table: threads started, timed, merged; batchers
 *   run_report.c     the table, the memory lines and the JSON document
 *   cmd_run.c        the command: devices and models opened, every row run, everything closed
 * Single-threaded except the worker threads, which share only run_shared (atomics, a barrier)
 * and write their own run_thread.
 */
#ifndef SP_CLI_RUN_H
#define SP_CLI_RUN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "streampool.h"

enum {
  REF_ROWS = 64, /* distinct seeded input rows with reference outputs */
  MAX_RUNS = 16, /* thread counts in one --threads list               */
  MAX_THREADS = 1024,
  LAT_BUCKETS = 1920, /* log-linear: 32 per power of two, up to 2^63 ns     */
  MAX_DEVICES = 16,   /* indices in one --devices list                     */
};

typedef struct run_opts {
  const char *backend, *model_path;
  const char *arch; /* --arch: the model file's description, or NULL */
  sp_dtype dtype;
  unsigned threads[MAX_RUNS], n_runs;
  unsigned batch;
  double duration_s;
  bool batcher, json, progress;
  bool self_test_wrong; /* corrupt one output, to show the check catches it */
  sp_batcher_config bcfg;
  uint64_t seed;
  unsigned devices[MAX_DEVICES], n_devices; /* --devices; n_devices 0: index 0 only       */
  bool devices_all;                         /* --devices all: every device of the backend */
  const char *snapshot;                     /* --snapshot FILE (snapshot_page.c)          */
  /* An encoder folder (--model DIR; run_encoder.c): */
  const char *inputs;  /* --inputs FILE: one sentence a line; NULL: seeded sentences */
  unsigned clients;    /* --clients; 0: not given                                  */
  bool batch_given;    /* --batch was given                                        */
  bool workers_given;  /* --workers was given                                      */
  unsigned max_tokens; /* --max-tokens (encoder batcher; 0: default)               */
} run_opts;

typedef struct run_ref {
  unsigned in_f, out_f;
  float *in;  /* [REF_ROWS][in_f]   */
  float *out; /* [REF_ROWS][out_f]  */
  double tol;
} run_ref;

typedef struct run_fleet { /* the devices of --devices, each with its model and reference */
  unsigned n;
  unsigned index[MAX_DEVICES];
  sp_device *dev[MAX_DEVICES];
  sp_model *m[MAX_DEVICES];
  run_ref ref[MAX_DEVICES];
} run_fleet;

typedef struct run_result {
  unsigned threads;
  uint64_t requests, failures, wrong, batches;
  double seconds, max_err, p50_us, p99_us, speedup;
  char first_error[256];
} run_result;

typedef struct run_shared { /* one row of the table */
  sp_model *m[MAX_DEVICES]; /* per device; thread i uses device i mod n_dev */
  sp_batcher *b[MAX_DEVICES];
  const run_opts *o;
  const run_ref *ref[MAX_DEVICES];
  atomic_bool stop;
  atomic_ullong requests;
  pthread_barrier_t start;
} run_shared;

typedef struct run_thread {
  run_shared *sh;
  unsigned index;
  unsigned dev; /* index into run_shared's per-device arrays */
  pthread_t tid;
  uint64_t requests, failures, wrong;
  double max_err;
  char first_error[256];
  uint64_t lat[LAT_BUCKETS];
} run_thread;

/* run_options.c: fills *o from argv. 0 ok, 1 --help shown, 2 bad usage (message printed). */
int sp_cli_run_parse(int argc, char **argv, run_opts *o);
/* Whether path names a folder holding config.json (then --model is an encoder folder; another
 * folder goes to the MLP loader, which refuses it as a directory). */
bool sp_cli_run_is_encoder_folder(const char *path);

/* run_reference.c: REF_ROWS seeded inputs and their outputs, one row at a time on this thread's
 * stream; ref->tol is the dtype's tolerance. ref->in/out are malloc'd (the caller frees them). */
sp_status sp_cli_run_ref_build(sp_model *m, const run_opts *o, run_ref *ref);

/* run_threads.c: a worker thread's body (arg is its run_thread). */
void *sp_cli_run_thread_main(void *arg);

/* run_latency.c: the bucket of a latency in ns, and the q-quantile in us of a histogram of
 * LAT_BUCKETS buckets holding total samples. */
unsigned sp_cli_lat_bucket(uint64_t ns);
double sp_cli_lat_quantile(const uint64_t *h, uint64_t total, double q);

/* run_table.c: runs one row with `threads` threads over the fleet; res the total, res_dev[d] per
 * device. Returns nonzero if a call failed or an output was wrong. */
int sp_cli_run_one(const run_fleet *f, const run_opts *o, unsigned threads, run_result *res,
                   run_result *res_dev);

/* run_encoder.c: `run --model DIR` for an encoder folder (o parsed, o->model_path a folder):
 * the scaling report in sentences/s (threads at batch 1, one thread batched, the encoder
 * batcher from many clients), every output checked against the single-threaded reference.
 * Returns the exit status. */
int sp_cli_run_encoder(const run_opts *o);

/* run_report.c: the table's header, one table row (per device and total), the memory lines and
 * result line, and the JSON document. */
void sp_cli_run_print_header(const run_fleet *f, const run_opts *o, const char *model_desc);
void sp_cli_run_print_rows(const run_fleet *f, const run_opts *o, const run_result *r,
                           const run_result *rd);
void sp_cli_run_print_footer(const run_fleet *f, const sp_memory_stats *ms, bool ok);
void sp_cli_run_print_json(const run_fleet *f, const run_opts *o, const char *model_desc,
                           const run_result *res, const run_result *res_dev,
                           const sp_memory_stats *ms, bool ok);

#endif /* SP_CLI_RUN_H */
