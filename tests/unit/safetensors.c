/* Goal: sp_model_load accepts well-formed safetensors state dicts (F32 and BF16 tensors, metadata,
 * unaligned data, layers named "0","2" or "fc1","fc2","fc10") and computes what they describe,
 * and rejects each named kind of malformed file with SP_ERR_INVALID_ARGUMENT and a message naming
 * the problem (issue 14: signed layer numbers, bytes after the header object, numbers written as
 * floats, directories and FIFOs).
 * Method: the test writes every file itself (tests/common/tu_safetensors.h), loads it on the host
 * backend, and compares sp_model_infer outputs with a double-precision forward of the same
 * weights; each broken case states the substring its message must contain.
 */
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_safetensors.h"

static char tmpdir[64];
static sp_device *dev;

static int setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_st_XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  dev = tu_open_host(4, SP_STREAMS_ROUND_ROBIN);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sp_device_close(dev);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s.safetensors", tmpdir, name);
}

static uint16_t to_bf16(float f) { /* truncation is fine: the reference reads back what is stored */
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* A layer's parameters as doubles, for the reference. */
typedef struct ref_layer {
  unsigned in, out;
  double w[64], b[8];
} ref_layer;

static void ref_forward(const ref_layer *l, unsigned n, const float *x, double *y) {
  double a[8], t[8];
  for (unsigned i = 0; i < l[0].in; i++) a[i] = x[i];
  for (unsigned k = 0; k < n; k++) {
    for (unsigned o = 0; o < l[k].out; o++) {
      double s = l[k].b[o];
      for (unsigned i = 0; i < l[k].in; i++) s += l[k].w[o * l[k].in + i] * a[i];
      t[o] = k + 1 < n && s < 0 ? 0 : s;
    }
    memcpy(a, t, sizeof(t));
  }
  memcpy(y, a, sizeof(a));
}

/* Writes n layers with names[k].{weight,bias}, dims[k] -> dims[k+1], in F32 or BF16; fills ref. */
static void write_mlp(const char *path, const char *const *names, const unsigned *dims, unsigned n,
                      bool bf16, tu_rng *rng, ref_layer *ref) {
  static float wf[8][64], bf[8][8];
  static uint16_t wh[8][64], bh[8][8];
  static char wn[8][64], bn[8][64];
  tu_st_tensor t[16];
  for (unsigned k = 0; k < n; k++) {
    ref[k].in = dims[k];
    ref[k].out = dims[k + 1];
    for (unsigned i = 0; i < dims[k] * dims[k + 1] + dims[k + 1]; i++) {
      float v = (float)((double)tu_rng_below(rng, 2001) / 1000.0 - 1.0);
      if (bf16) v = from_bf16(to_bf16(v));
      bool is_w = i < dims[k] * dims[k + 1];
      unsigned j = is_w ? i : i - dims[k] * dims[k + 1];
      (is_w ? wf[k] : bf[k])[j] = v;
      (is_w ? wh[k] : bh[k])[j] = to_bf16(v);
      (is_w ? ref[k].w : ref[k].b)[j] = v;
    }
    snprintf(wn[k], sizeof(wn[k]), "%s.weight", names[k]);
    snprintf(bn[k], sizeof(bn[k]), "%s.bias", names[k]);
    size_t es = bf16 ? 2 : 4;
    t[2 * k] = (tu_st_tensor){wn[k],
                              bf16 ? "BF16" : "F32",
                              2,
                              {dims[k + 1], dims[k]},
                              bf16 ? (const void *)wh[k] : wf[k],
                              es * dims[k] * dims[k + 1]};
    t[2 * k + 1] = (tu_st_tensor){bn[k],
                                  bf16 ? "BF16" : "F32",
                                  1,
                                  {dims[k + 1]},
                                  bf16 ? (const void *)bh[k] : bf[k],
                                  es * dims[k + 1]};
  }
  assert_int_equal(tu_st_write(path, t, 2 * n, bf16 ? NULL : "{\"format\":\"pt\"}"), 0);
}

/* Loads path as dt and checks 5 random inputs against ref within tol (relative to max |ref|). */
static void check_model(const char *path, sp_dtype dt, const ref_layer *ref, unsigned n, double tol,
                        tu_rng *rng) {
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, dt, &m));
  assert_int_equal(sp_model_in_features(m), ref[0].in);
  assert_int_equal(sp_model_out_features(m), ref[n - 1].out);
  for (int trial = 0; trial < 5; trial++) {
    float x[8], y[8];
    double want[8];
    for (unsigned i = 0; i < ref[0].in; i++)
      x[i] = (float)((double)tu_rng_below(rng, 2001) / 500.0 - 2.0);
    SP_CHECK_OK(sp_model_infer(m, x, y, 1));
    ref_forward(ref, n, x, want);
    double scale = 1e-3;
    for (unsigned o = 0; o < ref[n - 1].out; o++) scale = fmax(scale, fabs(want[o]));
    for (unsigned o = 0; o < ref[n - 1].out; o++)
      if (fabs(y[o] - want[o]) / scale > tol)
        fail_msg("%s out[%u]: got %.9g, reference %.9g (tol %g)", path, o, (double)y[o], want[o],
                 tol);
  }
  sp_model_free(m);
}

static void test_sequential_f32(void **state) {
  (void)state;
  tu_rng rng = {tu_seed()};
  const char *names[] = {"0", "2", "4"};
  const unsigned dims[] = {4, 6, 5, 3};
  ref_layer ref[3];
  char path[128];
  path_of(path, sizeof(path), "seq_f32");
  write_mlp(path, names, dims, 3, false, &rng, ref);
  check_model(path, SP_F32, ref, 3, 1e-5, &rng);
  check_model(path, SP_BF16, ref, 3, 2e-2, &rng);
}

static void test_bf16_numeric_order(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 1};
  /* Written out of order; only numeric order (1, 2, 10) chains the dims. */
  const char *names[] = {"fc1", "fc2", "fc10"};
  const unsigned dims[] = {4, 3, 5, 2};
  ref_layer ref[3];
  char path[128];
  path_of(path, sizeof(path), "fc_bf16");
  write_mlp(path, names, dims, 3, true, &rng, ref);
  check_model(path, SP_F32, ref, 3, 1e-5, &rng);
}

static void test_single_unnumbered_layer(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 2};
  const char *names[] = {"linear"};
  const unsigned dims[] = {5, 4};
  ref_layer ref[1];
  char path[128];
  path_of(path, sizeof(path), "single");
  write_mlp(path, names, dims, 1, false, &rng, ref);
  check_model(path, SP_F32, ref, 1, 1e-5, &rng);
}

/* Data starting at an odd offset (header length not a multiple of 8) still loads. */
static void test_unaligned_data(void **state) {
  (void)state;
  float w[2] = {1.5f, -2.0f}, b[1] = {0.25f};
  unsigned char data[12];
  memcpy(data, w, 8);
  memcpy(data + 8, b, 4);
  char path[128];
  path_of(path, sizeof(path), "unaligned");
  assert_int_equal(tu_st_write_raw(path,
                                   "{\"l.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],"
                                   "\"data_offsets\":[0,8]},\"l.bias\":{\"dtype\":\"F32\","
                                   "\"shape\":[1],\"data_offsets\":[8,12]}}",
                                   UINT64_MAX, data, sizeof(data)),
                   0);
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, SP_F32, &m));
  float x[2] = {2.0f, 1.0f}, y[1];
  SP_CHECK_OK(sp_model_infer(m, x, y, 1));
  if (fabsf(y[0] - 1.25f) > 1e-6f) fail_msg("got %g, want 1.25", (double)y[0]);
  sp_model_free(m);
}

/* ---- malformed files ----------------------------------------------------------------------- */

typedef struct bad_case {
  const char *name;
  const char *header;  /* with ' for " */
  uint64_t header_len; /* UINT64_MAX: the header's own length */
  size_t data_len;     /* zero bytes after the header */
  const char *expect;  /* substring of the message */
} bad_case;

#define L01 "'0.weight':{'dtype':'F32','shape':[3,4],'data_offsets':[0,48]}"
#define B01 "'0.bias':{'dtype':'F32','shape':[3],'data_offsets':[48,60]}"
static const bad_case bad_cases[] = {
    {"header_len_past_end", "{}", 1000, 0, "bad header length 1000"},
    {"header_len_huge", "{}", 1ull << 40, 0, "bad header length"},
    {"header_len_zero", "{}", 0, 0, "bad header length 0"},
    {"truncated_json", "{'0.weight':{'dtype':'F32','sha", UINT64_MAX, 0, "not valid JSON"},
    {"not_object", "[1,2]", UINT64_MAX, 0, "not a JSON object"},
    {"entry_not_object", "{'0.weight':5}", UINT64_MAX, 0, "entry is not an object"},
    {"dtype_f16", "{'0.weight':{'dtype':'F16','shape':[3,4],'data_offsets':[0,24]}}", UINT64_MAX,
     24, "'0.weight': dtype F16 is not supported"},
    {"dtype_i64", "{'0.weight':{'dtype':'I64','shape':[3],'data_offsets':[0,24]}}", UINT64_MAX, 24,
     "dtype I64"},
    {"dtype_missing", "{'0.weight':{'shape':[3,4],'data_offsets':[0,48]}}", UINT64_MAX, 48,
     "\"dtype\" missing"},
    {"shape_negative", "{'0.weight':{'dtype':'F32','shape':[-3,4],'data_offsets':[0,48]}}",
     UINT64_MAX, 48, "shape[0]"},
    {"shape_fraction", "{'0.weight':{'dtype':'F32','shape':[3,2.5],'data_offsets':[0,48]}}",
     UINT64_MAX, 48, "shape[1]"},
    {"shape_overflow",
     "{'0.weight':{'dtype':'F32','shape':[4294967296,4294967296],'data_offsets':[0,4]}}",
     UINT64_MAX, 4, "overflows"},
    {"rank_too_big",
     "{'0.weight':{'dtype':'F32','shape':[1,1,1,1,1,1,1,1,1],'data_offsets':"
     "[0,4]}}",
     UINT64_MAX, 4, "rank 9"},
    {"offsets_not_pair", "{'0.weight':{'dtype':'F32','shape':[3,4],'data_offsets':[0]}}",
     UINT64_MAX, 48, "data_offsets"},
    {"offsets_past_end", "{" L01 "}", UINT64_MAX, 40, "past the data section"},
    {"offsets_reversed", "{'0.weight':{'dtype':'F32','shape':[0],'data_offsets':[8,0]}}",
     UINT64_MAX, 8, "begin 8 > end 0"},
    {"size_mismatch", "{'0.weight':{'dtype':'F32','shape':[3,4],'data_offsets':[0,40]}}",
     UINT64_MAX, 48, "need 48"},
    {"overlap", "{" L01 ",'0.bias':{'dtype':'F32','shape':[3],'data_offsets':[40,52]}}", UINT64_MAX,
     60, "overlap"},
    {"duplicate_name", "{" L01 "," L01 "}", UINT64_MAX, 48, "appears twice"},
    {"metadata_not_object", "{'__metadata__':'x'," L01 "}", UINT64_MAX, 48, "__metadata__"},
    {"no_tensors", "{'__metadata__':{}}", UINT64_MAX, 0, "no tensors"},
    {"missing_bias", "{" L01 "}", UINT64_MAX, 48, "missing '0.bias'"},
    {"missing_weight", "{" B01 "}", UINT64_MAX, 60, "missing '0.weight'"},
    {"not_linear",
     "{" L01 "," B01 ",'0.running_mean':{'dtype':'F32','shape':[3],"
     "'data_offsets':[60,72]}}",
     UINT64_MAX, 72, "'0.running_mean' is not a Linear"},
    {"weight_rank1", "{'0.weight':{'dtype':'F32','shape':[12],'data_offsets':[0,48]}," B01 "}",
     UINT64_MAX, 60, "rank 2"},
    {"bias_mismatch", "{" L01 ",'0.bias':{'dtype':'F32','shape':[2],'data_offsets':[48,56]}}",
     UINT64_MAX, 56, "bias has 2 elements"},
    {"dims_not_chaining",
     "{" L01 "," B01 ",'2.weight':{'dtype':'F32','shape':[2,5],"
     "'data_offsets':[60,100]},'2.bias':{'dtype':'F32','shape':[2],'data_offsets':[100,108]}}",
     UINT64_MAX, 108, "do not chain"},
    {"same_layer_number",
     "{'a.1.weight':{'dtype':'F32','shape':[3,4],'data_offsets':[0,48]},"
     "'a.1.bias':{'dtype':'F32','shape':[3],'data_offsets':[48,60]},'b.1.weight':{'dtype':'F32',"
     "'shape':[3,3],'data_offsets':[60,96]},'b.1.bias':{'dtype':'F32','shape':[3],"
     "'data_offsets':[96,108]}}",
     UINT64_MAX, 108, "ambiguous"},
    {"no_number",
     "{'first.weight':{'dtype':'F32','shape':[3,4],'data_offsets':[0,48]},"
     "'first.bias':{'dtype':'F32','shape':[3],'data_offsets':[48,60]},'last.weight':{'dtype':"
     "'F32','shape':[3,3],'data_offsets':[60,96]},'last.bias':{'dtype':'F32','shape':[3],"
     "'data_offsets':[96,108]}}",
     UINT64_MAX, 108, "no number"},
    /* issue 14 W2: "-1" must not sort as 1 (it would run before "0" here only by chance). */
    {"signed_layer_number",
     "{" L01 "," B01 ",'-1.weight':{'dtype':'F32','shape':[3,3],"
     "'data_offsets':[60,96]},'-1.bias':{'dtype':'F32','shape':[3],'data_offsets':[96,108]}}",
     UINT64_MAX, 108, "'-1': its number is signed"},
    /* issue 14 W3: nothing but padding after the header object; integers written as integers. */
    {"trailing_garbage", "{" L01 "," B01 "}xx", UINT64_MAX, 60, "2 bytes after the JSON object"},
    {"trailing_object", "{" L01 "," B01 "} {}", UINT64_MAX, 60, "after the JSON object"},
    {"shape_float", "{'0.weight':{'dtype':'F32','shape':[3.0,4],'data_offsets':[0,48]}," B01 "}",
     UINT64_MAX, 60, "'3.0'"},
    {"shape_exponent", "{'0.weight':{'dtype':'F32','shape':[3,4e0],'data_offsets':[0,48]}," B01 "}",
     UINT64_MAX, 60, "'4e0' (at byte"},
    {"offsets_float", "{" L01 ",'0.bias':{'dtype':'F32','shape':[3],'data_offsets':[48,6.0E1]}}",
     UINT64_MAX, 60, "'6.0E1'"},
};

static void check_bad(const char *name, const char *path, const char *expect) {
  sp_model *m = (sp_model *)(uintptr_t)0x1;
  sp_status st = sp_model_load(dev, path, SP_F32, &m);
  if (st != SP_ERR_INVALID_ARGUMENT)
    fail_msg("case %s: got %s (%s), want SP_ERR_INVALID_ARGUMENT", name, sp_status_str(st),
             sp_last_error());
  if (!strstr(sp_last_error(), expect))
    fail_msg("case %s: message \"%s\" lacks \"%s\"", name, sp_last_error(), expect);
  if (m != (sp_model *)(uintptr_t)0x1) fail_msg("case %s: out was written on failure", name);
}

static void test_malformed(void **state) {
  (void)state;
  static unsigned char zeros[4096];
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    const bad_case *c = &bad_cases[i];
    char header[1024], path[128];
    snprintf(header, sizeof(header), "%s", c->header);
    for (char *p = header; *p; p++)
      if (*p == '\'') *p = '"';
    path_of(path, sizeof(path), c->name);
    assert_int_equal(tu_st_write_raw(path, header, c->header_len, zeros, c->data_len), 0);
    check_bad(c->name, path, c->expect);
  }
  char path[128];
  path_of(path, sizeof(path), "too_short");
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fwrite("abcd", 1, 4, f);
  fclose(f);
  check_bad("too_short", path, "too short");
  path_of(path, sizeof(path), "does_not_exist");
  check_bad("missing_file", path, "cannot open");
}

/* Issue 14 H4/U1: a directory and a FIFO with no writer are refused at once (a FIFO open used to
 * block forever: the alarm turns a hang into a failure within 20 s). */
static void test_not_regular_file(void **state) {
  (void)state;
  alarm(20);
  check_bad("directory", tmpdir, "is a directory");
  char path[128];
  snprintf(path, sizeof(path), "%s/fifo.safetensors", tmpdir);
  assert_int_equal(mkfifo(path, 0600), 0);
  check_bad("fifo", path, "is not a regular file");
  check_bad("dev_null", "/dev/null", "is not a regular file");
  alarm(0);
}

static void test_bad_arguments(void **state) {
  (void)state;
  sp_model *m = NULL;
  SP_CHECK_STATUS(sp_model_load(NULL, "x", SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_load(dev, NULL, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_load(dev, "x", SP_F32, NULL), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_load(dev, "x", (sp_dtype)7, &m), SP_ERR_INVALID_ARGUMENT);
  assert_null(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sequential_f32),
      cmocka_unit_test(test_bf16_numeric_order),
      cmocka_unit_test(test_single_unnumbered_layer),
      cmocka_unit_test(test_unaligned_data),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_not_regular_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
