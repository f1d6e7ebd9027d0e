/* The argument checks of an encoder-layer op and of a linear op's f32 io (nn_check.h), shared by
 * every backend's nn_async and linear_async.
 *
 * Owns nothing: pure functions of the op, reading only its fields (never the device memory they
 * point to). Moved here from host_nn.c so the host and CUDA backends refuse the same ops with the
 * same messages. Compiled into libstreampool and, separately, into the CUDA module. No locks.
 */
#include <math.h>

#include "backend/nn_check.h"
#include "core/dtype.h"
#include "core/status.h"

static sp_status nn_dims(const char *fn, const char *what, const unsigned *d, size_t n) {
  uint64_t prod = 1;
  for (size_t i = 0; i < n; i++) {
    if (d[i] == 0 || d[i] > SP__NN_DIM_MAX)
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: extent %u is outside 1..%u", fn, what, d[i],
                      SP__NN_DIM_MAX);
    prod *= d[i];
    if (prod > ((uint64_t)1 << 40))
      return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: shape too large", fn, what);
  }
  return SP_OK;
}

static sp_status nn_ptrs(const char *fn, const char *what, const void *const *p,
                         const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!p[i]) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: %s: %s is NULL", fn, what, names[i]);
  return SP_OK;
}

sp_status sp__nn_op_check(const sp__nn *op, const char *fn) {
  if (!op) return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: op is NULL", fn);
  if (!sp__dtype_valid(op->dtype))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown dtype %d", fn, (int)op->dtype);
  switch (op->kind) {
  case SP__NN_LAYERNORM: {
    const unsigned d[] = {op->u.norm.rows, op->u.norm.cols};
    const void *p[] = {op->u.norm.x, op->u.norm.gamma, op->u.norm.beta, op->u.norm.y};
    const char *const n[] = {"x", "gamma", "beta", "y"};
    sp_status st = nn_dims(fn, "layernorm", d, 2);
    if (st == SP_OK) st = nn_ptrs(fn, "layernorm", p, n, 4);
    if (st == SP_OK && !(op->u.norm.eps >= 0.0f))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: layernorm: eps %g is not >= 0", fn,
                    (double)op->u.norm.eps);
    return st;
  }
  case SP__NN_EMBED: {
    const unsigned d[] = {op->u.embed.batch, op->u.embed.seq, op->u.embed.hidden};
    const void *p[] = {op->u.embed.ids, op->u.embed.word, op->u.embed.pos, op->u.embed.type,
                       op->u.embed.y};
    const char *const n[] = {"ids", "word", "pos", "type", "y"};
    sp_status st = nn_dims(fn, "embed", d, 3);
    return st == SP_OK ? nn_ptrs(fn, "embed", p, n, 5) : st;
  }
  case SP__NN_ATTENTION: {
    const unsigned d[] = {op->u.attention.batch, op->u.attention.seq, op->u.attention.heads,
                          op->u.attention.head_dim, 3};
    const void *p[] = {op->u.attention.lengths, op->u.attention.qkv, op->u.attention.y};
    const char *const n[] = {"lengths", "qkv", "y"};
    sp_status st = nn_dims(fn, "attention", d, 5);
    if (st == SP_OK) st = nn_ptrs(fn, "attention", p, n, 3);
    if (st == SP_OK && !isfinite(op->u.attention.scale))
      st = sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: attention: scale is not finite", fn);
    return st;
  }
  case SP__NN_POOL: {
    const unsigned d[] = {op->u.pool.batch, op->u.pool.seq, op->u.pool.hidden};
    const void *p[] = {op->u.pool.lengths, op->u.pool.x, op->u.pool.y};
    const char *const n[] = {"lengths", "x", "y"};
    sp_status st = nn_dims(fn, "pool", d, 3);
    return st == SP_OK ? nn_ptrs(fn, "pool", p, n, 3) : st;
  }
  case SP__NN_KIND_COUNT: break;
  }
  return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown op kind %d", fn, (int)op->kind);
}

sp_status sp__linear_io_check(const sp__linear *op, unsigned rows_max, const char *fn) {
  if (op->io & ~(unsigned)(SP__LINEAR_X_F32 | SP__LINEAR_Y_F32))
    return sp__fail(SP_ERR_INVALID_ARGUMENT, "%s: unknown io flags 0x%x", fn, op->io);
  if (op->io && op->dtype != SP_F32 && op->batch > rows_max)
    return sp__fail(SP_ERR_INVALID_ARGUMENT,
                    "%s: f32 input or output with %s weights at %u rows (at most %u here)", fn,
                    sp__dtype_name(op->dtype), op->batch, rows_max);
  return SP_OK;
}
