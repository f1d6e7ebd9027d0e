/* A user's first program: open the host device, copy through device memory, check it. */
#include <stdio.h>
#include <string.h>
#include <streampool.h>

int main(void) {
  sp_device_config cfg = {0};
  cfg.backend = "host";
  sp_device *dev = NULL;
  if (sp_device_open(&cfg, &dev) != SP_OK) {
    fprintf(stderr, "open: %s\n", sp_last_error());
    return 1;
  }
  sp_stream *s = NULL;
  void *d = NULL;
  char in[64] = "installed streampool works", out[64] = {0};
  int ok = sp_stream_current(dev, &s) == SP_OK && sp_alloc(dev, sizeof(in), s, &d) == SP_OK &&
           sp_memcpy_async(s, d, in, sizeof(in)) == SP_OK &&
           sp_memcpy_async(s, out, d, sizeof(out)) == SP_OK && sp_stream_sync(s) == SP_OK &&
           sp_free(dev, d) == SP_OK && strcmp(in, out) == 0;
  printf("consumer: %s (streampool %s)\n", ok ? out : sp_last_error(), sp_version());
  sp_device_close(dev);
  return ok ? 0 : 1;
}
