/* Goal: the safetensors parser's SP__ST_INTEGERS flag (the encoder loader reads Hugging Face BERT
 * files, which carry an I64 position_ids buffer): without the flag an I64 or I32 tensor is
 * refused naming its dtype; with it the tensor is accepted as SP__ST_I64/I32 and its byte span
 * checked against 8 (I64) or 4 (I32) bytes an element, and float tensors read as before.
 * Method: headers built in memory, parsed with sp__safetensors_parse(_flags).
 */
#include <string.h>

#include "infer/safetensors.h"
#include "testutil.h"

/* header JSON + data bytes -> a buffer in the format. */
static size_t build(unsigned char *buf, const char *header, size_t data_len) {
  size_t hl = strlen(header);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(buf + 8, header, hl);
  memset(buf + 8 + hl, 0, data_len);
  return 8 + hl + data_len;
}

static void test_integers(void **state) {
  (void)state;
  unsigned char buf[512];
  const char *h =
      "{\"pos\":{\"dtype\":\"I64\",\"shape\":[1,3],\"data_offsets\":[0,24]},"
      "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
      "\"t\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[32,40]}}";
  size_t n = build(buf, h, 40);
  sp__safetensors *st = NULL;
  SP_CHECK_STATUS(sp__safetensors_parse(buf, n, "buffer", &st), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "dtype I64"));
  SP_CHECK_OK(sp__safetensors_parse_flags(buf, n, "buffer", SP__ST_INTEGERS, &st));
  const sp__st_tensor *pos = sp__safetensors_find(st, "pos"), *w = sp__safetensors_find(st, "w");
  const sp__st_tensor *t = sp__safetensors_find(st, "t");
  assert_non_null(pos);
  assert_int_equal(pos->dtype, SP__ST_I64);
  assert_int_equal(pos->bytes, 24);
  assert_int_equal(t->dtype, SP__ST_I32);
  assert_int_equal(t->bytes, 8);
  assert_int_equal(w->dtype, SP__ST_F32);
  sp__safetensors_free(st);
  /* an I64 span sized as if 4 bytes an element */
  n = build(buf, "{\"pos\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12);
  SP_CHECK_STATUS(sp__safetensors_parse_flags(buf, n, "buffer", SP__ST_INTEGERS, &st),
                  SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "need 24"));
  n = build(buf, "{\"x\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3);
  SP_CHECK_STATUS(sp__safetensors_parse_flags(buf, n, "buffer", SP__ST_INTEGERS, &st),
                  SP_ERR_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_integers)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
