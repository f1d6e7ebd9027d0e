/* Goal (issue 14 C4): copies, fills and forwards check their device ranges on every backend: a
 * device range must lie inside one live block of the stream's (model's) device, memset needs
 * device memory, memcpy at least one side of it (the other may be host memory), a forward device
 * memory for all its rows. Everything else is SP_ERR_INVALID_ARGUMENT with a message, and nothing
 * is written: a neighbouring block keeps its contents.
 * Method: per backend, blocks of 512 B and a few KiB; fills and copies past a block's end (by one
 * byte, by 512 B, by 1 TiB), from just before a block, into freed blocks, host to host, with each
 * message's key phrase checked; a neighbour block filled with a seeded pattern and checked after
 * a stream sync; a small MLP run with 1-row buffers for 64 rows, with host buffers and with
 * another open device's buffers; and the valid cases (interior ranges, exact ends) still run and
 * give the right bytes.
 */
#include "conformance.h"

#define TIB ((size_t)1 << 40)

static void expect_invalid(sp_status st, const char *what, const char *phrase) {
  if (st != SP_ERR_INVALID_ARGUMENT)
    fail_msg("%s: got %s (%s), want SP_ERR_INVALID_ARGUMENT", what, sp_status_str(st),
             sp_last_error());
  if (!strstr(sp_last_error(), phrase))
    fail_msg("%s: message \"%s\" lacks \"%s\"", what, sp_last_error(), phrase);
}

/* A 512-byte block p and a neighbour q filled with a pattern, on stream s. */
static void two_blocks(sp_device *dev, sp_stream *s, unsigned char **p, unsigned char **q,
                       unsigned char *pattern) {
  SP_CHECK_OK(sp_alloc(dev, 512, s, (void **)p));
  SP_CHECK_OK(sp_alloc(dev, 512, s, (void **)q));
  conf_fill(pattern, 512, 7);
  SP_CHECK_OK(sp_memcpy_async(s, *q, pattern, 512));
  SP_CHECK_OK(sp_stream_sync(s));
}

static void check_untouched(sp_stream *s, const unsigned char *q) {
  unsigned char back[512];
  conf_download(s, back, q, 512);
  size_t bad = conf_check(back, 512, 7);
  if (bad != 512) fail_msg("the neighbour block changed at byte %zu", bad);
}

static void fills(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  unsigned char *p, *q, pattern[512];
  two_blocks(dev, s, &p, &q, pattern);
  expect_invalid(sp_memset_async(s, p, 0xee, 1024), "memset 1024 B into 512", "passes the end");
  expect_invalid(sp_memset_async(s, p, 0xee, 513), "memset 513 B into 512", "by 1 bytes");
  expect_invalid(sp_memset_async(s, p + 256, 0xee, 257), "memset inside, 1 past", "passes");
  expect_invalid(sp_memset_async(s, p - 16, 0xee, 32), "memset from before the block", "");
  int local[4];
  expect_invalid(sp_memset_async(s, local, 0, sizeof(local)), "memset host memory",
                 "not memory of this device");
  SP_CHECK_OK(sp_memset_async(s, p + 256, 0x11, 256)); /* inside, up to the exact end */
  SP_CHECK_OK(sp_memset_async(s, p, 0x22, 256));
  unsigned char back[512];
  conf_download(s, back, p, 512);
  if (conf_check_byte(back, 256, 0x22) != 256 || conf_check_byte(back + 256, 256, 0x11) != 256)
    fail_msg("valid fills did not land");
  check_untouched(s, q);
  SP_CHECK_OK(sp_free(dev, p));
  expect_invalid(sp_memset_async(s, p, 0, 16), "memset into a freed block", "freed block");
  SP_CHECK_OK(sp_free(dev, q));
}

static void copies(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  unsigned char *p, *q, pattern[512], host[1024] = {0}, host2[64];
  two_blocks(dev, s, &p, &q, pattern);
  expect_invalid(sp_memcpy_async(s, host, p, TIB), "1 TiB out of 512 B", "passes the end");
  expect_invalid(sp_memcpy_async(s, p, host, TIB), "1 TiB into 512 B", "dst");
  expect_invalid(sp_memcpy_async(s, p, host, 1024), "1 KiB into 512 B", "passes the end");
  expect_invalid(sp_memcpy_async(s, p, q, 513), "device to device, 1 past", "by 1 bytes");
  expect_invalid(sp_memcpy_async(s, host2, host, sizeof(host2)), "host to host", "neither");
  expect_invalid(sp_memcpy_async(s, host, (const void *)(uintptr_t)(UINTPTR_MAX - 8), 64),
                 "wrapping range", "wraps");
  SP_CHECK_OK(sp_memcpy_async(s, p, q, 512)); /* device to device, whole block */
  SP_CHECK_OK(sp_memcpy_async(s, host, p + 100, 412));
  SP_CHECK_OK(sp_stream_sync(s));
  if (memcmp(host, pattern + 100, 412)) fail_msg("a valid interior copy gave wrong bytes");
  check_untouched(s, q);
  SP_CHECK_OK(sp_free(dev, q));
  expect_invalid(sp_memcpy_async(s, host, q, 16), "copy out of a freed block", "freed block");
  SP_CHECK_OK(sp_free(dev, p));
}

static void forwards(sp_device *dev) {
  sp_stream *s;
  SP_CHECK_OK(sp_stream_current(dev, &s));
  const unsigned dims[] = {16, 8, 4};
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_mlp_random(dev, dims, 3, tu_seed(), SP_F32, &m));
  float *in1, *out1, *in64, *out64;
  SP_CHECK_OK(sp_alloc(dev, 16 * sizeof(float), s, (void **)&in1));
  SP_CHECK_OK(sp_alloc(dev, 4 * sizeof(float), s, (void **)&out1));
  SP_CHECK_OK(sp_alloc(dev, 64 * 16 * sizeof(float), s, (void **)&in64));
  SP_CHECK_OK(sp_alloc(dev, 64 * 4 * sizeof(float), s, (void **)&out64));
  SP_CHECK_OK(sp_memset_async(s, in64, 0, 64 * 16 * sizeof(float)));
  expect_invalid(sp_model_forward(m, s, in1, out64, 64), "1-row in for 64 rows", "in ");
  expect_invalid(sp_model_forward(m, s, in64, out1, 64), "1-row out for 64 rows", "out ");
  static float host_in[64 * 16], host_out[64 * 4];
  expect_invalid(sp_model_forward(m, s, host_in, out64, 64), "host in", "not memory of the model");
  expect_invalid(sp_model_forward(m, s, in64, host_out, 64), "host out", "not memory of the model");
  /* Another open device of the same backend: its blocks are not this device's memory. */
  sp_device_config cfg = {.backend = sp_device_backend(dev), .streams = 4};
  sp_device *other = NULL;
  SP_CHECK_OK(sp_device_open(&cfg, &other));
  float *o_in, *o_out;
  SP_CHECK_OK(sp_alloc(other, 64 * 16 * sizeof(float), sp_stream_default(other), (void **)&o_in));
  SP_CHECK_OK(sp_alloc(other, 64 * 4 * sizeof(float), sp_stream_default(other), (void **)&o_out));
  expect_invalid(sp_model_forward(m, s, o_in, o_out, 64), "another device's buffers",
                 "not memory of the model");
  SP_CHECK_OK(sp_free(other, o_in));
  SP_CHECK_OK(sp_free(other, o_out));
  SP_CHECK_OK(sp_device_close(other));
  SP_CHECK_OK(sp_model_forward(m, s, in64, out64, 64));
  SP_CHECK_OK(sp_model_forward(m, s, in64 + 16, out64 + 4, 63)); /* interior, to the exact end */
  SP_CHECK_OK(sp_stream_sync(s));
  sp_free(dev, in1);
  sp_free(dev, out1);
  sp_free(dev, in64);
  SP_CHECK_OK(sp_free(dev, out64));
  expect_invalid(sp_model_forward(m, s, in64, out64, 1), "freed buffers", "");
  sp_model_free(m);
}

int main(void) {
  setenv("STREAMPOOL_HOST_JITTER_US", "20", 0);
  static const conf_case cases[] = {
      {"fills", fills},
      {"copies", copies},
      {"forwards", forwards},
  };
  return conf_main("conf_ranges", cases, sizeof(cases) / sizeof(cases[0]));
}
