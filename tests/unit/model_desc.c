/* Goal: sp_model_desc_parse, the one parser of a model description's text form (used for the
 * file's __metadata__, a config.json, --arch and Python's arch=), reads every item of the grammar
 * into the struct it means (names, activations, bias, LayerNorm and its eps, dropout ignored,
 * every separator), and refuses each bad text with SP_ERR_INVALID_ARGUMENT and a message naming
 * the item and what is wrong, writing nothing to *out.
 * Method: a table of texts with the layers they must give, and a table of bad texts with the
 * substring their message must contain; the size limits (64 KiB of text, 4096 Linear layers).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct want_layer {
  const char *linear;
  int no_bias;
  sp_activation act;
  const char *norm;
  float eps;
} want_layer;

typedef struct good_case {
  const char *text;
  unsigned n;
  want_layer l[3];
} good_case;

static const good_case good[] = {
    {"0:linear", 1, {{"0", 0, SP_ACT_NONE, NULL, 0}}},
    {"0:linear 1:gelu 2:layernorm 3:linear",
     2,
     {{"0", 0, SP_ACT_GELU, "2", 1e-5f}, {"3", 0, SP_ACT_NONE, NULL, 0}}},
    {" fc1:linear:nobias,silu->ln:layernorm:eps=1e-6 -> fc2:linear\ttanh\n out.x:linear ",
     3,
     {{"fc1", 1, SP_ACT_SILU, "ln", 1e-6f},
      {"fc2", 0, SP_ACT_TANH, NULL, 0},
      {"out.x", 0, SP_ACT_NONE, NULL, 0}}},
    {"a:linear relu b:linear gelu_tanh dropout c:linear none",
     3,
     {{"a", 0, SP_ACT_RELU, NULL, 0},
      {"b", 0, SP_ACT_GELU_TANH, NULL, 0},
      {"c", 0, SP_ACT_NONE, NULL, 0}}},
    {"net.0:linear net.1:dropout net.2:layernorm net.3:linear",
     2,
     {{"net.0", 0, SP_ACT_NONE, "net.2", 1e-5f}, {"net.3", 0, SP_ACT_NONE, NULL, 0}}},
};

static void test_good(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    const good_case *c = &good[i];
    sp_model_desc *d = NULL;
    if (sp_model_desc_parse(c->text, &d) != SP_OK) fail_msg("'%s': %s", c->text, sp_last_error());
    if (d->n_layers != c->n) fail_msg("'%s': %u layers, want %u", c->text, d->n_layers, c->n);
    for (unsigned k = 0; k < c->n; k++) {
      const sp_mlp_layer *l = &d->layers[k];
      const want_layer *w = &c->l[k];
      if (strcmp(l->linear, w->linear) || l->no_bias != w->no_bias || l->act != w->act ||
          (l->norm == NULL) != (w->norm == NULL) || (w->norm && strcmp(l->norm, w->norm)) ||
          l->norm_eps != w->eps)
        fail_msg(
            "'%s' layer %u: got {%s, no_bias %d, act %d, norm %s, eps %g}, want {%s, %d, %d, "
            "%s, %g}",
            c->text, k, l->linear, l->no_bias, (int)l->act, l->norm ? l->norm : "-",
            (double)l->norm_eps, w->linear, w->no_bias, (int)w->act, w->norm ? w->norm : "-",
            (double)w->eps);
    }
    sp_model_desc_free(d);
  }
  sp_model_desc_free(NULL);
}

typedef struct bad_case {
  const char *text, *expect;
} bad_case;

static const bad_case bad[] = {
    {"", "no Linear layer"},
    {" , -> ", "no Linear layer"},
    {"relu 0:linear", "item 1 'relu': an activation before the first Linear"},
    {"0:linear gelu relu", "item 3 'relu': an activation right after another activation"},
    {"0:linear 1:layernorm gelu", "item 3 'gelu': an activation after a LayerNorm"},
    {"1:layernorm 0:linear", "item 1: a LayerNorm before the first Linear"},
    {"0:linear 1:layernorm 2:layernorm", "item 3: a LayerNorm right after another"},
    {"0:linear 1:batchnorm", "item 2: 'batchnorm' is unknown (items: NAME:linear"},
    {"linear", "item 1 'linear': a linear needs a tensor-name prefix"},
    {":linear", "needs a tensor-name prefix"},
    {"0:layernorm", "item 1: a LayerNorm before the first Linear"},
    {"0:linear 1:layernorm:eps=0", "layernorm option 'eps=0' is not \"eps=E\""},
    {"0:linear 1:layernorm:eps=1e-5x", "'eps=1e-5x'"},
    {"0:linear 1:layernorm:epsilon=1", "'epsilon=1'"},
    {"0:linear 1:layernorm:eps=nan", "'eps=nan'"},
    {"0:linear:bias", "linear option 'bias' is unknown"},
    {"0:linear:nobias:x", "more than three ':' fields"},
    {"0:linear 1:relu:x", "relu takes no option"},
    {"dropout 0:linear", "dropout must follow a Linear"},
    {"we\"ird:linear", "name 'we\"ird' has '\"'"},
    {"0:linear 1:GELU", "'GELU' is unknown"},
};

static void test_bad(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sp_model_desc *d = (sp_model_desc *)(uintptr_t)0x1;
    sp_status st = sp_model_desc_parse(bad[i].text, &d);
    if (st != SP_ERR_INVALID_ARGUMENT)
      fail_msg("'%s': got %s, want SP_ERR_INVALID_ARGUMENT", bad[i].text, sp_status_str(st));
    if (!strstr(sp_last_error(), bad[i].expect))
      fail_msg("'%s': message \"%s\" lacks \"%s\"", bad[i].text, sp_last_error(), bad[i].expect);
    if (d != (sp_model_desc *)(uintptr_t)0x1) fail_msg("'%s': out written on failure", bad[i].text);
  }
  sp_model_desc *d = NULL;
  SP_CHECK_STATUS(sp_model_desc_parse(NULL, &d), SP_ERR_INVALID_ARGUMENT);
  SP_CHECK_STATUS(sp_model_desc_parse("0:linear", NULL), SP_ERR_INVALID_ARGUMENT);
  /* Longer than 64 KiB, and more than 4096 Linear layers. */
  size_t n = 70000;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, ' ', n);
  big[n] = '\0';
  memcpy(big, "0:linear", 8);
  SP_CHECK_STATUS(sp_model_desc_parse(big, &d), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "longer than"));
  size_t len = 0;
  for (unsigned k = 0; k < 4097; k++) len += (size_t)sprintf(big + len, "%u:linear ", k % 10);
  SP_CHECK_STATUS(sp_model_desc_parse(big, &d), SP_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(sp_last_error(), "more than 4096 Linear layers"));
  free(big);
  assert_null(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good),
      cmocka_unit_test(test_bad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
