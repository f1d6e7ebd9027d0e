/* Many threads, one device: each thread runs the model on its own stream. */
#include <pthread.h>
#include <stdio.h>
#include <streampool.h>

static sp_model *model;

static void *worker(void *arg) {
  float in[512] = {[0] = (float)(size_t)arg}, out[512];
  sp_status st = sp_model_infer(model, in, out, 1);  /* this thread's own stream */
  if (st != SP_OK) fprintf(stderr, "infer: %s\n", sp_last_error());
  return (void *)(size_t)(st != SP_OK);
}

int main(void) {
  sp_device *dev;
  if (sp_device_open(NULL, &dev) != SP_OK) return fprintf(stderr, "%s\n", sp_last_error()), 1;
  const unsigned dims[] = {512, 1024, 1024, 512};
  if (sp_model_mlp_random(dev, dims, 4, 42, SP_F32, &model) != SP_OK) return 1;
  pthread_t t[8];
  size_t failed = 0;
  for (size_t i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  for (size_t i = 0; i < 8; i++) { void *r; pthread_join(t[i], &r); failed += (size_t)r; }
  sp_memory_stats ms;
  sp_memory_stats_get(dev, &ms);
  printf("%s: 8 threads, %zu failed, %zu bytes reserved\n", sp_device_name(dev), failed, ms.reserved_bytes);
  sp_model_free(model);
  sp_device_close(dev);
  return failed != 0;
}
