/* Starting the benchmarks' worker threads: a thread that cannot be created ends the run with a
 * message, because a table measured with fewer threads than it says would be a wrong answer.
 * Header-only; any thread. */
#ifndef SP_BENCH_THREAD_H
#define SP_BENCH_THREAD_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void bench_thread_start(pthread_t *t, void *(*fn)(void *), void *arg,
                                      const char *bench) {
  int rc = pthread_create(t, NULL, fn, arg);
  if (rc != 0) {
    fprintf(stderr, "%s: cannot start a worker thread: %s\n", bench, strerror(rc));
    exit(1);
  }
}

#endif /* SP_BENCH_THREAD_H */
