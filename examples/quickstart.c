/* Eight threads run one model at once, each on its own stream of the best device found. */
#include <pthread.h>
#include <stdio.h>
#include <streampool.h>

static sp_model *model;

static void *worker(void *arg) {
  float in[512] = {(float)(size_t)arg}, out[512];
  return (void *)(size_t)(sp_model_infer(model, in, out, 1) != SP_OK); /* own stream, host in/out */
}

int main(void) {
  sp_device *dev;
  const unsigned dims[] = {512, 1024, 1024, 512};
  if (sp_device_open(NULL, &dev) || sp_model_mlp_random(dev, dims, 4, 42, SP_F32, &model))
    return fprintf(stderr, "streampool: %s\n", sp_last_error()), 1;
  pthread_t t[8];
  size_t failed = 0;
  for (size_t i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
  for (size_t i = 0; i < 8; i++) {
    void *r;
    pthread_join(t[i], &r);
    failed += (size_t)r;
  }
  printf("%s: 8 threads, %zu failed\n", sp_device_name(dev), failed);
  sp_model_free(model);
  sp_device_close(dev);
  return failed != 0;
}
