#!/usr/bin/env python3
"""Generates src/infer/unicode_tables.c: the per-code-point facts the WordPiece tokenizer needs.

Why not Python's unicodedata or utf8proc: Hugging Face `tokenizers` mixes Unicode versions. Its
BertNormalizer lowercases and tests whitespace with Rust's std (Unicode 16), tests control and
punctuation characters with the `unicode_categories` crate (tables older than Unicode 9: U+166D is
still punctuation, U+2E43.. are not), and decomposes and tests Mn with
`unicode-normalization-alignments`. No single-version library gives the same answers (run this
script with --compare to count the code points where Python's unicodedata differs), so the tables
are taken from `tokenizers` itself, one code point at a time, through its public normalizers and
pre-tokenizer:
  control   BertNormalizer(clean_text) drops it (NUL, U+FFFD, Cc/Cf/Co/Cs but \\t \\n \\r)
  cleanws   BertNormalizer(clean_text) maps it to ' '
  cjk       BertNormalizer(handle_chinese_chars) puts spaces around it
  ws        BertPreTokenizer splits on it and drops it (Rust char::is_whitespace)
  punct     BertPreTokenizer isolates it
  strip     BertNormalizer(strip_accents) result: NFD with Mn removed (a string, maybe empty);
            Hangul syllables are flagged instead and decomposed by the algorithm in C (checked
            here against tokenizers for every syllable)
  lower     BertNormalizer(lowercase) result (Rust char::to_lowercase, a string)
  ccc       canonical combining class, from unicodedata, kept only where it can matter: for the
            marks that strip_accents removes (NFD reorders before the filter) and for the spacing
            marks with ccc != 0 that survive it (0 for those tokenizers' tables do not know: they
            do not reorder); the order of every pair of survivors is checked against `tokenizers`
            here and the script fails on any difference.
Run: python scripts/gen_unicode_tables.py > src/infer/unicode_tables.c (in a venv with the
`tokenizers` version named in the output; a few minutes).
"""
import sys
import unicodedata

import tokenizers
from tokenizers import normalizers, pre_tokenizers

BLOCK = 128
F_CONTROL, F_CLEANWS, F_CJK, F_WS, F_PUNCT, F_HANGUL = 1, 2, 4, 8, 16, 32


def hangul_nfd(c):
    """The algorithmic decomposition of a Hangul syllable (Unicode 3.12), which the C code does."""
    i = c - 0xAC00
    t = (0x1100 + i // 588, 0x1161 + (i % 588) // 28)
    return t + ((0x11A7 + i % 28,) if i % 28 else ())


def probe():
    bn = lambda **k: normalizers.BertNormalizer(**{**dict(clean_text=False, handle_chinese_chars=False,
                                                          strip_accents=False, lowercase=False), **k})
    clean, chin, strip, lower = bn(clean_text=True), bn(handle_chinese_chars=True), \
        bn(strip_accents=True), bn(lowercase=True)
    pt = pre_tokenizers.BertPreTokenizer()
    props = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            props.append((0, 0, (c,), (c,)))
            continue
        s = chr(c)
        f = 0
        r = clean.normalize_str(s)
        if r == '':
            f |= F_CONTROL
        elif r == ' ' and s != ' ':
            f |= F_CLEANWS
        elif r != s:
            sys.exit(f"U+{c:04X}: clean_text gave {r!r}")
        r = chin.normalize_str(s)
        if r == ' ' + s + ' ':
            f |= F_CJK
        elif r != s:
            sys.exit(f"U+{c:04X}: handle_chinese_chars gave {r!r}")
        p = [w for w, _ in pt.pre_tokenize_str('a' + s + 'b')]
        if p == ['a', s, 'b']:
            f |= F_PUNCT
        elif p == ['a', 'b']:
            f |= F_WS
        elif p != ['a' + s + 'b']:
            sys.exit(f"U+{c:04X}: BertPreTokenizer gave {p!r}")
        st = tuple(ord(x) for x in strip.normalize_str(s))
        lo = tuple(ord(x) for x in lower.normalize_str(s))
        ccc = 0
        if unicodedata.combining(s) and (st == () or unicodedata.category(s) != 'Mn'):
            ccc = unicodedata.combining(s)
        if 0xAC00 <= c <= 0xD7A3:
            if st != hangul_nfd(c):
                sys.exit(f"U+{c:04X}: strip_accents gave {st!r}, not the Hangul algorithm")
            f, st = f | F_HANGUL, (c,)
        props.append((f, ccc, st, lo))
    return props, strip


def check_survivor_order(props, strip):
    surv = [c for c in range(0x110000) if props[c][1] and props[c][2] == (c,)]
    # A survivor that tokenizers' older tables do not know is a starter (ccc 0) there: it does not
    # move past U+1D165 (ccc 216, Unicode 3.1) in either order.
    ref = chr(0x1D165)
    for x in surv:
        if x != 0x1D165 and props[x][1] != 216 and all(
                strip.normalize_str('a' + a + b) == 'a' + a + b for a, b in ((chr(x), ref), (ref, chr(x)))):
            props[x] = (props[x][0], 0, props[x][2], props[x][3])
    surv = [c for c in surv if props[c][1]]
    for x in surv:
        for y in surv:
            got = strip.normalize_str('a' + chr(x) + chr(y))
            exp = 'a' + ''.join(sorted([chr(x), chr(y)], key=lambda ch: props[ord(ch)][1]))
            if got != exp:
                sys.exit(f"NFD order of U+{x:04X} U+{y:04X}: tokenizers {got!r}, ccc says {exp!r}")
    return len(surv)


def compare(props):
    """Counts code points where unicodedata (Python's Unicode version) disagrees with tokenizers."""
    n = {'punct': 0, 'ws': 0, 'control': 0, 'strip': 0, 'lower': 0}
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        s, (f, _, st, lo) = chr(c), props[c]
        cat = unicodedata.category(s)
        punct = 33 <= c <= 47 or 58 <= c <= 64 or 91 <= c <= 96 or 123 <= c <= 126 or cat[0] == 'P'
        n['punct'] += punct != bool(f & F_PUNCT)
        n['ws'] += s.isspace() != bool(f & F_WS)
        ctrl = c in (0, 0xFFFD) or (s not in '\t\n\r' and cat in ('Cc', 'Cf', 'Co', 'Cs'))
        n['control'] += ctrl != bool(f & F_CONTROL)
        e = tuple(ord(x) for x in unicodedata.normalize('NFD', s) if unicodedata.category(x) != 'Mn')
        n['strip'] += e != (hangul_nfd(c) if f & F_HANGUL else st)
        n['lower'] += tuple(ord(x) for x in s.lower()) != lo
    print(f"unicodedata {unicodedata.unidata_version} vs tokenizers {tokenizers.__version__}: "
          f"code points that differ: {n}")


def emit(props, n_surv):
    pool, pool_index = [0], {}

    def seq(c, t):
        if t == (c,):
            return 0
        if t not in pool_index:
            pool_index[t] = len(pool)
            pool.extend((len(t),) + t)
        return pool_index[t]

    recs, rec_index, cp_rec = [], {}, []
    for c, (f, ccc, st, lo) in enumerate(props):
        r = (f, ccc, seq(c, st), seq(c, lo))
        if r not in rec_index:
            rec_index[r] = len(recs)
            recs.append(r)
        cp_rec.append(rec_index[r])
    blocks, block_index, stage1 = [], {}, []
    for b in range(0, 0x110000, BLOCK):
        blk = tuple(cp_rec[b:b + BLOCK])
        if blk not in block_index:
            block_index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(block_index[blk])
    assert len(recs) < 65536 and len(blocks) < 65536 and len(pool) < 65536
    out = sys.stdout.write
    out("/* GENERATED by scripts/gen_unicode_tables.py from Hugging Face tokenizers "
        f"{tokenizers.__version__} (and unicodedata {unicodedata.unidata_version} for combining classes).\n"
        " * Do not edit: rerun the script. What each field means: src/infer/unicode.h.\n"
        f" * {len(recs)} records, {len(blocks)} blocks of {BLOCK}, {len(pool)} sequence words, "
        f"{n_surv} spacing marks with a combining class.\n */\n")
    out('#include "infer/unicode.h"\n\n')

    def arr(decl, vals, per=16):
        out(decl + " = {\n")
        for i in range(0, len(vals), per):
            out("  " + ",".join(str(v) for v in vals[i:i + per]) + ",\n")
        out("};\n\n")

    out(f"const sp__uprops sp__uprops_records[{len(recs)}] = {{\n")
    for f, ccc, s, lo in recs:
        out(f"  {{{f},{ccc},{s},{lo}}},\n")
    out("};\n\n")
    arr(f"const uint16_t sp__uprops_stage1[{len(stage1)}]", stage1)
    arr(f"const uint16_t sp__uprops_stage2[{len(blocks) * BLOCK}]", [v for b in blocks for v in b], 32)
    arr(f"const uint32_t sp__uprops_seq[{len(pool)}]", pool)
    strip_max = max(len(st) for _, _, st, _ in props)
    lower_max = max(len(lo) for _, _, _, lo in props)
    out(f"const unsigned sp__uprops_strip_max = {strip_max}, sp__uprops_lower_max = {lower_max};\n")


def main():
    props, strip = probe()
    n_surv = check_survivor_order(props, strip)
    if '--compare' in sys.argv:
        compare(props)
        return
    emit(props, n_surv)


if __name__ == '__main__':
    main()
