/* The BERT encoder as src/infer sees it (internal).
 *
 * An sp_encoder is immutable after sp_encoder_load: shape, tokenizer and device weights never
 * change until sp_encoder_free, so any number of threads may embed at once without a lock. The
 * one exception is its plan table (io_plan.c), filled on first use per (stream, batch bucket,
 * sequence bucket) under its own per-stream locks.
 *
 * Weights live in one allocator block (taken on the default stream at load, freed with the
 * encoder), every tensor at a 256-byte aligned offset, in the encoder's dtype. Q, K and V of a
 * layer are fused into one [3 hidden, hidden] Linear (rows q | k | v), which is the layout
 * SP__NN_ATTENTION reads.
 */
#ifndef SP_INFER_ENCODER_H
#define SP_INFER_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/device.h"
#include "infer/io_plan.h"

typedef struct sp__enc_layer { /* device pointers into the weight block */
  const void *wqkv, *bqkv;     /* [3H, H], [3H]                            */
  const void *wo, *bo;         /* attention output dense [H, H], [H]       */
  const void *ln1_g, *ln1_b;   /* attention output LayerNorm [H]           */
  const void *w1, *b1;         /* intermediate dense [I, H], [I]           */
  const void *w2, *b2;         /* output dense [H, I], [H]                 */
  const void *ln2_g, *ln2_b;   /* output LayerNorm [H]                     */
} sp__enc_layer;

struct sp_encoder {
  sp_device *dev;          /* owner device; immutable                            */
  sp_dtype dtype;          /* weights and activations on the device               */
  sp_encoder_info info;    /* shape, max_seq, pooling; immutable                  */
  unsigned max_pos, types; /* position and token-type embedding rows              */
  float eps;               /* LayerNorm epsilon (config.json's layer_norm_eps)    */
  sp__act act;             /* the intermediate activation (hidden_act)            */
  sp_tokenizer *tok;       /* owned                                               */
  void *weights;           /* the one device block holding every tensor           */
  const void *word, *pos, *type, *emb_g, *emb_b; /* embeddings and their LayerNorm    */
  sp__enc_layer *layers; /* [info.layers]                                       */
  bool graphs;           /* graphs on (sp__graphs_enabled at load)              */
  sp__io_plans *plans;   /* host-io plans of embed passes (io_plan.h); at load  */
};

/* The largest padded sequence-length bucket >= len (8, 16, 32, ... capped at max_seq). */
unsigned sp__encoder_seq_bucket(const sp_encoder *e, unsigned len);

/* Bytes of activation workspace one pass of batch x seq tokens needs (256-byte aligned parts). */
size_t sp__encoder_workspace_bytes(const sp_encoder *e, unsigned batch, unsigned seq);

/* Enqueues one whole forward on s (a pool stream or a capture stream): ids [batch*seq] and
 * lengths [batch] are device int32 (ids checked < vocab by the caller, 1 <= lengths <= seq), out
 * is device f32 [batch, hidden], workspace holds sp__encoder_workspace_bytes device bytes.
 * Nothing is allocated or freed, so the same calls can be captured into a graph. Any thread. */
sp_status sp__encoder_enqueue(const sp_encoder *e, sp_stream *s, const int32_t *ids,
                              const int32_t *lengths, float *out, unsigned batch, unsigned seq,
                              void *workspace);

/* The plan table's limits (encoder_load.c creates it): (batch, seq) buckets per stream index, and
 * the largest pass (device bytes) a plan caches; larger passes run uncached. */
enum { SP__ENC_PLANS = 16 };
#define SP__ENC_PLAN_BYTES_MAX ((size_t)256 << 20)

#endif /* SP_INFER_ENCODER_H */
