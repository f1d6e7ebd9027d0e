/* Goal: sp_model_load accepts well-formed safetensors state dicts (F32, BF16 and F16 tensors,
 * unaligned data, layers named "0","2" or "fc1","fc2","fc10") with their description (the file's
 * metadata, a config.json beside it, the caller's sp_model_desc) and computes what the
 * description says, in its order; and rejects each named kind of malformed or undescribed file
 * with SP_ERR_INVALID_ARGUMENT and a message naming the problem (issue 14: bytes after the header
 * object, numbers written as floats, directories and FIFOs; issue 11: a bare state dict, a
 * torch.save zip or pickle, BatchNorm and Conv tensors, tensors the description does not use).
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

/* Writes n layers with names[k].{weight,bias}, dims[k] -> dims[k+1], in F32 or BF16, in reverse
 * order in the file; fills ref. The metadata describes them ("names[k]:linear relu ...") unless
 * bare. */
static void write_mlp_meta(const char *path, const char *const *names, const unsigned *dims,
                           unsigned n, bool bf16, tu_rng *rng, ref_layer *ref, bool bare) {
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
    tu_st_tensor *tk = &t[2 * (n - 1 - k)];
    tk[0] = (tu_st_tensor){wn[k],
                           bf16 ? "BF16" : "F32",
                           2,
                           {dims[k + 1], dims[k]},
                           bf16 ? (const void *)wh[k] : wf[k],
                           es * dims[k] * dims[k + 1]};
    tk[1] = (tu_st_tensor){bn[k],
                           bf16 ? "BF16" : "F32",
                           1,
                           {dims[k + 1]},
                           bf16 ? (const void *)bh[k] : bf[k],
                           es * dims[k + 1]};
  }
  char meta[512];
  size_t len = (size_t)snprintf(meta, sizeof(meta), "{\"format\":\"pt\",\"streampool.arch\":\"");
  for (unsigned k = 0; k < n; k++)
    len += (size_t)snprintf(meta + len, sizeof(meta) - len, "%s:linear%s ", names[k],
                            k + 1 < n ? " relu" : "");
  snprintf(meta + len, sizeof(meta) - len, "\"}");
  assert_int_equal(tu_st_write(path, t, 2 * n, bare ? "{\"format\":\"pt\"}" : meta), 0);
}

static void write_mlp(const char *path, const char *const *names, const unsigned *dims, unsigned n,
                      bool bf16, tu_rng *rng, ref_layer *ref) {
  write_mlp_meta(path, names, dims, n, bf16, rng, ref, false);
}

/* Checks 5 random inputs through m against ref within tol (relative to max |ref|); frees m. */
static void check_loaded(sp_model *m, const char *path, const ref_layer *ref, unsigned n,
                         double tol, tu_rng *rng) {
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
    (void)path;
    for (unsigned o = 0; o < ref[n - 1].out; o++) scale = fmax(scale, fabs(want[o]));
    for (unsigned o = 0; o < ref[n - 1].out; o++)
      if (fabs(y[o] - want[o]) / scale > tol)
        fail_msg("%s out[%u]: got %.9g, reference %.9g (tol %g)", path, o, (double)y[o], want[o],
                 tol);
  }
  sp_model_free(m);
}

/* Loads path (described by itself) as dt and checks it against ref. */
static void check_model(const char *path, sp_dtype dt, const ref_layer *ref, unsigned n, double tol,
                        tu_rng *rng) {
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, dt, &m));
  check_loaded(m, path, ref, n, tol, rng);
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

static void test_bf16_description_order(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 1};
  /* Written in reverse; only the description's order (fc1, fc2, fc10) chains the dims. */
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
                                   "{\"__metadata__\":{\"streampool.arch\":\"l:linear\"},"
                                   "\"l.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],"
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

/* A header of 640 bytes starts the file with 0x80 0x02, as a pickle does: it still loads (the
 * torch.save diagnosis only runs on files that cannot be safetensors). */
static void test_pickle_like_length(void **state) {
  (void)state;
  float w[2] = {1.5f, -2.0f}, b[1] = {0.25f};
  unsigned char data[12];
  memcpy(data, w, 8);
  memcpy(data + 8, b, 4);
  char header[641], path[128];
  int n = snprintf(header, sizeof(header), "%s",
                   "{\"__metadata__\":{\"streampool.arch\":\"l:linear\"},"
                   "\"l.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],"
                   "\"data_offsets\":[0,8]},\"l.bias\":{\"dtype\":\"F32\","
                   "\"shape\":[1],\"data_offsets\":[8,12]}}");
  memset(header + n, ' ', 640 - (size_t)n);
  header[640] = '\0';
  path_of(path, sizeof(path), "pickle_like");
  assert_int_equal(tu_st_write_raw(path, header, UINT64_MAX, data, sizeof(data)), 0);
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, SP_F32, &m));
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
#define M(arch) "'__metadata__':{'streampool.arch':'" arch "'},"
static const bad_case bad_cases[] = {
    {"header_len_past_end", "{}", 1000, 0, "bad header length 1000"},
    {"header_len_huge", "{}", 1ull << 40, 0, "bad header length"},
    {"header_len_zero", "{}", 0, 0, "bad header length 0"},
    {"truncated_json", "{'0.weight':{'dtype':'F32','sha", UINT64_MAX, 0, "not valid JSON"},
    {"not_object", "[1,2]", UINT64_MAX, 0, "not a JSON object"},
    {"entry_not_object", "{'0.weight':5}", UINT64_MAX, 0, "entry is not an object"},
    {"dtype_f64", "{'0.weight':{'dtype':'F64','shape':[3,4],'data_offsets':[0,96]}}", UINT64_MAX,
     96, "'0.weight': dtype F64 is not supported"},
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
    /* issue 11: nothing is guessed: a bare state dict is refused, saying how to describe it. */
    {"bare", "{" L01 "," B01 "}", UINT64_MAX, 60,
     "no architecture given: the file is a bare state dict (2 tensors: '0.weight', '0.bias')"},
    {"bare_says_how", "{" L01 "," B01 "}", UINT64_MAX, 60, "--arch"},
    {"no_tensors", "{'__metadata__':{}}", UINT64_MAX, 0, "no architecture given"},
    {"described_no_tensors",
     "{" M("0:linear") "'x':{'dtype':'F32','shape':[0],'data_offsets':[0,0]}}", UINT64_MAX, 0,
     "needs tensor '0.weight', which the file does not have"},
    {"meta_not_string", "{'__metadata__':{'streampool.arch':5}," L01 "}", UINT64_MAX, 48,
     "\"streampool.arch\" is not a string"},
    {"meta_bad_desc", "{" M("0:linaer") L01 "}", UINT64_MAX, 48,
     "__metadata__ \"streampool.arch\" is not a valid description: model description: item 1: "
     "'linaer' is unknown"},
    {"missing_bias", "{" M("0:linear") L01 "}", UINT64_MAX, 48, "needs tensor '0.bias'"},
    {"missing_weight", "{" M("0:linear") B01 "}", UINT64_MAX, 60, "needs tensor '0.weight'"},
    {"batchnorm",
     "{" M("0:linear") L01 "," B01 ",'1.running_mean':{'dtype':'F32','shape':[3],"
                           "'data_offsets':[60,72]}}",
     UINT64_MAX, 72, "'1.running_mean' [3] is not used by the description: it is a BatchNorm"},
    {"batchnorm_count",
     "{" M("0:linear") L01 "," B01 ",'1.num_batches_tracked':{'dtype':'F32','shape':[],"
                           "'data_offsets':[60,64]}}",
     UINT64_MAX, 64, "BatchNorm layers are not supported"},
    {"conv_weight",
     "{" M("0:linear") "'0.weight':{'dtype':'F32','shape':[3,1,2,2],"
                       "'data_offsets':[0,48]}," B01 "}",
     UINT64_MAX, 60, "is rank 4, a convolution's weight"},
    {"conv_unused",
     "{" M("0:linear") L01 "," B01 ",'c.weight':{'dtype':'F32','shape':[1,1,1,1],"
                           "'data_offsets':[60,64]}}",
     UINT64_MAX, 64, "Conv layers are not supported"},
    {"unused_linear",
     "{" M("0:linear") L01 "," B01 ",'2.weight':{'dtype':'F32','shape':[1,3],"
                           "'data_offsets':[60,72]}}",
     UINT64_MAX, 72,
     "'2.weight' [1, 3] is not used by the description: it is the weight of a "
     "Linear"},
    {"unused_norm",
     "{" M("0:linear") L01 "," B01 ",'1.weight':{'dtype':'F32','shape':[3],"
                           "'data_offsets':[60,72]}}",
     UINT64_MAX, 72, "a LayerNorm? name it NAME:layernorm"},
    {"nobias_but_bias", "{" M("0:linear:nobias") L01 "," B01 "}", UINT64_MAX, 60,
     "'0.bias' [3] is not used by the description: it is the bias of a Linear the description "
     "says has none"},
    {"weight_rank1",
     "{" M("0:linear") "'0.weight':{'dtype':'F32','shape':[12],'data_offsets':[0,48]}," B01 "}",
     UINT64_MAX, 60, "'0.weight' is [12], expected rank 2"},
    {"bias_mismatch",
     "{" M("0:linear") L01 ",'0.bias':{'dtype':'F32','shape':[2],'data_offsets':[48,56]}}",
     UINT64_MAX, 56, "'0.bias' is [2], expected rank 1 with one value per output"},
    {"norm_mismatch",
     "{" M("0:linear 1:layernorm") L01
     "," B01 ",'1.weight':{'dtype':'F32',"
     "'shape':[2],'data_offsets':[60,68]},'1.bias':{'dtype':'F32','shape':[3],"
     "'data_offsets':[68,80]}}",
     UINT64_MAX, 80, "LayerNorm tensor '1.weight' is [2]"},
    {"dims_not_chaining",
     "{" M("0:linear relu 2:linear") L01
     "," B01 ",'2.weight':{'dtype':'F32','shape':[2,5],"
     "'data_offsets':[60,100]},'2.bias':{'dtype':'F32','shape':[2],'data_offsets':[100,108]}}",
     UINT64_MAX, 108,
     "do not chain: layer 0 ('0') gives 3 features, layer 1 ('2.weight' [2, 5]) "
     "takes 5"},
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
    char header[2048], path[128];
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
  /* torch.save files are named as what they are. */
  static const struct {
    const char *name, *bytes, *expect;
  } torch_files[] = {
      {"torch_zip",
       "PK\x03\x04"
       "archive/data.pkl",
       "a torch.save zip archive (pickled tensors), not safetensors: export the state dict with "
       "safetensors.torch.save_file"},
      {"torch_pickle",
       "\x80\x02\x8a\x0a"
       "lz",
       "a Python pickle"},
  };
  for (size_t i = 0; i < sizeof(torch_files) / sizeof(torch_files[0]); i++) {
    path_of(path, sizeof(path), torch_files[i].name);
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(torch_files[i].bytes, 1, strlen(torch_files[i].bytes), f);
    fclose(f);
    check_bad(torch_files[i].name, path, torch_files[i].expect);
  }
}

/* A description from a config.json beside the file (the Hugging Face folder layout), and the
 * refusals around it. */
static void test_sidecar_config(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 3};
  const char *names[] = {"fc1", "fc2"};
  const unsigned dims[] = {4, 6, 3};
  ref_layer ref[2];
  char dir[128], path[160], cfg[160];
  snprintf(dir, sizeof(dir), "%s/hf", tmpdir);
  assert_int_equal(mkdir(dir, 0700), 0);
  snprintf(path, sizeof(path), "%s/model.safetensors", dir);
  snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
  write_mlp_meta(path, names, dims, 2, false, &rng, ref, true);
  check_bad("sidecar_absent", path, "no architecture given");
  static const struct {
    const char *json, *expect;
  } bad[] = {
      {"{\"model_type\": \"bert\"}", "config.json describes a 'bert' model, not an MLP"},
      {"{\"streampool.arch\": [1]}", "config.json: \"streampool.arch\" is not a string"},
      {"{\"streampool.arch\": \"fc1:linear gelu gelu\"}",
       "config.json \"streampool.arch\" is not a valid description: model description: item 3 "
       "'gelu': an activation right after another activation is not supported"},
      {"{\"streampool.arch\": \"fc1:linear relu fc2:linear", "is not a JSON object"},
      {"{}", "no architecture given"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fputs(bad[i].json, f);
    fclose(f);
    check_bad("sidecar_bad", path, bad[i].expect);
  }
  FILE *f = fopen(cfg, "w");
  assert_non_null(f);
  fputs("{\"model_type\": \"mlp\", \"streampool.arch\": \"fc1:linear relu fc2:linear\"}", f);
  fclose(f);
  check_model(path, SP_F32, ref, 2, 1e-5, &rng);
}

/* The caller's description wins over the file's, and sp_model_describe prints what was built. */
static void test_caller_description(void **state) {
  (void)state;
  tu_rng rng = {tu_seed() + 4};
  const char *names[] = {"a", "b"};
  const unsigned dims[] = {5, 4, 2};
  ref_layer ref[2];
  char path[128];
  path_of(path, sizeof(path), "caller");
  write_mlp_meta(path, names, dims, 2, false, &rng, ref, true);
  const sp_mlp_layer layers[] = {{.linear = "a", .act = SP_ACT_RELU}, {.linear = "b"}};
  const sp_model_desc desc = {.n_layers = 2, .layers = layers};
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load_desc(dev, path, &desc, SP_F32, &m));
  char text[128];
  size_t n = sp_model_describe(m, text, sizeof(text));
  const char *want = "Linear(5->4) ReLU -> Linear(4->2)";
  if (n != strlen(want) || strcmp(text, want))
    fail_msg("describe: got \"%s\" (%zu), want \"%s\"", text, n, want);
  char small[8];
  if (sp_model_describe(m, small, sizeof(small)) != n || strlen(small) != 7)
    fail_msg("describe into 8 bytes: \"%s\"", small);
  check_loaded(m, path, ref, 2, 1e-5, &rng);
  /* A description that lies about the file is refused, naming the difference. */
  const sp_mlp_layer wrong[] = {{.linear = "a", .act = SP_ACT_RELU}};
  const sp_model_desc short_desc = {.n_layers = 1, .layers = wrong};
  m = (sp_model *)(uintptr_t)0x1;
  SP_CHECK_STATUS(sp_model_load_desc(dev, path, &short_desc, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "'b.weight' [2, 4] is not used by the description"))
    fail_msg("message: %s", sp_last_error());
  const sp_mlp_layer bad_act[] = {{.linear = "a", .act = (sp_activation)17}, {.linear = "b"}};
  const sp_model_desc bad = {.n_layers = 2, .layers = bad_act};
  SP_CHECK_STATUS(sp_model_load_desc(dev, path, &bad, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  if (!strstr(sp_last_error(), "activation 17 is not an sp_activation"))
    fail_msg("message: %s", sp_last_error());
  const sp_model_desc empty = {.n_layers = 0, .layers = layers};
  SP_CHECK_STATUS(sp_model_load_desc(dev, path, &empty, SP_F32, &m), SP_ERR_INVALID_ARGUMENT);
  assert_ptr_equal(m, (sp_model *)(uintptr_t)0x1);
}

/* F16 tensors (exact in f32) load and compute what they hold. */
static void test_f16_weights(void **state) {
  (void)state;
  /* 1.5, -2.0, 0.25 and a subnormal 2^-24 in IEEE half. */
  const uint16_t w[3] = {0x3e00, 0xc000, 0x0001}, b[1] = {0x3400};
  tu_st_tensor t[2] = {{"l.weight", "F16", 2, {1, 3}, w, sizeof(w)},
                       {"l.bias", "F16", 1, {1}, b, sizeof(b)}};
  char path[128];
  path_of(path, sizeof(path), "f16");
  assert_int_equal(tu_st_write(path, t, 2, "{\"streampool.arch\":\"l:linear\"}"), 0);
  sp_model *m = NULL;
  SP_CHECK_OK(sp_model_load(dev, path, SP_F32, &m));
  float x[3] = {2.0f, 1.0f, 16777216.0f}, y[1];
  SP_CHECK_OK(sp_model_infer(m, x, y, 1));
  if (y[0] != 2.25f) fail_msg("got %.9g, want 2.25 (1.5*2 - 2 + 1 + 0.25)", (double)y[0]);
  sp_model_free(m);
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
      cmocka_unit_test(test_sequential_f32),   cmocka_unit_test(test_bf16_description_order),
      cmocka_unit_test(test_sidecar_config),   cmocka_unit_test(test_caller_description),
      cmocka_unit_test(test_f16_weights),      cmocka_unit_test(test_single_unnumbered_layer),
      cmocka_unit_test(test_unaligned_data),   cmocka_unit_test(test_pickle_like_length),
      cmocka_unit_test(test_malformed),        cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_not_regular_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
