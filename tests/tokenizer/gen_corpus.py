#!/usr/bin/env python3
"""Writes the tokenizer test corpus: N varied lines (default 12000), seeded, to stdout as UTF-8,
one line per '\\n' (lines hold every other character, '\\r' and U+2028 included).

Kinds of line: English-like sentences, accents (precomposed and combining, marks in odd orders),
CJK (ideographs, extension B, kana, Hangul), emoji (ZWJ sequences, skin tones, flags), URLs,
e-mail, code and numbers, punctuation runs, odd whitespace, control and format characters,
private-use and unassigned code points, other scripts (Greek with final sigma, Cyrillic,
Arabic, Hebrew, Devanagari, Thai, Cherokee, Turkish dotted I, ligatures, fullwidth forms),
special tokens written in the text, words over 100 characters, very long and empty lines, and
random code points from the whole range. Usage: gen_corpus.py [N] [SEED]
"""
import random
import sys

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which "
         "this be or has had not but have they one their all new first two been its who after "
         "time year world people state university school city government music film game team "
         "running jumped quickly unbelievable tokenization transformers embedding sentence "
         "encoder streampool inference batching allocator unaffordable reconsideration "
         "antidisestablishmentarianism pneumonoultramicroscopic hello world don't can't it's "
         "naïve café résumé coöperate façade jalapeño Zürich Ångström São Paulo").split()
SCRIPTS = [(0x0391, 0x03C9), (0x0410, 0x044F), (0x0621, 0x064A), (0x05D0, 0x05EA),
           (0x0905, 0x0939), (0x0E01, 0x0E2E), (0x13A0, 0x13F4), (0x10A0, 0x10FA), (0x0531, 0x0586),
           (0xAB70, 0xABBF), (0x1E00, 0x1EFF), (0x0100, 0x024F), (0xFF01, 0xFF5E), (0x3041, 0x3096),
           (0x30A1, 0x30FA)]
MARKS = [0x0300, 0x0301, 0x0302, 0x0303, 0x0308, 0x030A, 0x0327, 0x0328, 0x0316, 0x0323, 0x0345,
         0x05B0, 0x064B, 0x093C, 0x094D, 0x0E48, 0x1AB0, 0x20D0, 0x034F, 0x1D165, 0x1D16D,
         0x1D167, 0x302E, 0x302F, 0x1B44, 0xA953, 0x16FF0, 0x1715, 0x0F39, 0x0F71, 0x0F72]
SPACES = "\t\r\x0b\x0c \xa0\u1680\u2000\u2001\u2002\u2005\u200a\u202f\u205f\u3000\x85\u2028\u2029" \
         "\u180e\u200b\u200c\u200d\u2060\ufeff\x1c\x1d\x1e\x1f"
CONTROLS = [chr(c) for c in list(range(0, 9)) + [0x0e, 0x1b, 0x7f] + list(range(0x80, 0xa0))] + \
    ["\u00ad", "\u0600", "\u061c", "\u200e", "\u202e", "\ufffd", "\ufff9", "\ue000", "\U000f0000",
     "\U000e0001", "\U000e0041", "\u0378", "\u2fff", "\U0001fb95"]
PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’“”„–—…·•§¶†‡‰′″※‼⁇⁈⁉、。〃〈〉《》「」『』【】〔〕〜・！？，．：；"
SPECIAL = ["[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]", "[cls]", "[SE", "SEP]", "[[SEP]]", "[SEP][SEP]"]
EMOJI = [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
         (0x1FA70, 0x1FAFF), (0x2600, 0x27BF)]


def rnd_range(r, ranges):
    lo, hi = r.choice(ranges)
    return chr(r.randint(lo, hi))


def word(r):
    w = r.choice(WORDS)
    k = r.random()
    if k < 0.1:
        w = w.upper()
    elif k < 0.2:
        w = w.capitalize()
    return w


def sentence(r, n=None):
    n = n or r.randint(3, 25)
    s = " ".join(word(r) for _ in range(n))
    return s + r.choice([".", "!", "?", "...", "", ";"])


def accents(r):
    out = []
    for _ in range(r.randint(2, 12)):
        w = list(word(r))
        for i in range(len(w)):
            if r.random() < 0.3:
                w[i] += "".join(chr(r.choice(MARKS)) for _ in range(r.randint(1, 4)))
        out.append("".join(w))
        if r.random() < 0.4:
            out.append("".join(chr(r.randint(0xC0, 0x24F)) for _ in range(r.randint(1, 8))))
    return " ".join(out)


def cjk(r):
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x3041, 0x30FF), (0xAC00, 0xD7A3),
              (0x1100, 0x11FF), (0x3131, 0x318E)]
    s = "".join(rnd_range(r, ranges) for _ in range(r.randint(1, 40)))
    return s + (" " + sentence(r, 4) if r.random() < 0.5 else "")


def emoji(r):
    parts = []
    for _ in range(r.randint(1, 10)):
        e = rnd_range(r, EMOJI)
        k = r.random()
        if k < 0.2:
            e += chr(r.randint(0x1F3FB, 0x1F3FF))
        elif k < 0.35:
            e += "\u200d" + rnd_range(r, EMOJI) + "\ufe0f"
        elif k < 0.45:
            e = chr(r.randint(0x1F1E6, 0x1F1FF)) + chr(r.randint(0x1F1E6, 0x1F1FF))
        parts.append(e)
    return r.choice(["", word(r) + " "]) + r.choice(["", " "]).join(parts)


def url(r):
    host = ".".join(r.choice(WORDS).lower().strip("'") for _ in range(r.randint(1, 3)))
    path = "/".join(r.choice(WORDS).lower() for _ in range(r.randint(0, 4)))
    q = r.choice(["", "?q=%d&lang=en" % r.randint(0, 99999), "#frag-%x" % r.randint(0, 1 << 32)])
    s = r.choice(["https://", "http://www.", "ftp://", ""]) + host + "." + r.choice(
        ["com", "org", "de", "co.uk", "io"]) + "/" + path + q
    if r.random() < 0.3:
        s += " mail: %s.%s@%s.com" % (word(r), word(r), word(r))
    return sentence(r, 3) + " " + s


def code(r):
    return r.choice([
        "if (x[%d] >= 0x%x && y != NULL) { return -%d; }" % (r.randint(0, 99), r.randint(0, 1 << 20), r.randint(0, 9)),
        "def f(a, b=%d): return a**b // %d  # comment" % (r.randint(0, 9), r.randint(1, 9)),
        "%d,%03d.%02d $%s €%d ¥%d %d%% %d°C 1/2 ½ ² ³ ⅓ %s" % (r.randint(1, 999), r.randint(0, 999), r.randint(0, 99), r.randint(0, 10**9), r.randint(0, 999), r.randint(0, 999), r.randint(0, 100), r.randint(-40, 40), "3.14159e-10"),
        "<div class=\"x\">%s</div> &amp; &lt;tag&gt;" % sentence(r, 4),
        "{\"key\": [%d, %d], \"s\": \"%s\"}" % (r.randint(0, 9), r.randint(0, 9), word(r)),
    ])


def punct_run(r):
    return "".join(r.choice(PUNCT) for _ in range(r.randint(1, 30))) + word(r) + \
        "".join(r.choice(PUNCT) for _ in range(r.randint(0, 10)))


def odd_space(r):
    return "".join(word(r) + "".join(r.choice(SPACES) for _ in range(r.randint(1, 4)))
                   for _ in range(r.randint(1, 10)))


def controls(r):
    return "".join(r.choice(CONTROLS) + (word(r) if r.random() < 0.6 else "")
                   for _ in range(r.randint(1, 10)))


def scripts(r):
    out = []
    for _ in range(r.randint(1, 8)):
        out.append("".join(rnd_range(r, SCRIPTS) for _ in range(r.randint(1, 12))))
    extra = ["ΟΔΥΣΣΕΥΣ", "İstanbul", "STRASSE Straße", "ﬁﬂﬀ", "ǅungla", "ΐΰ", "Ꭰꮎ", "ß̂", "Ⅻ ⓐ",
             "ＡＢＣ１２３", "ŉ", "ﬃ", "İ̇", "Σσς"]
    out.append(r.choice(extra))
    return " ".join(out)


def special(r):
    parts = [r.choice([sentence(r, 3), word(r), "", " "]) for _ in range(4)]
    for _ in range(r.randint(1, 4)):
        parts.insert(r.randint(0, len(parts)), r.choice(SPECIAL))
    return r.choice(["", " "]).join(parts)


def long_word(r):
    n = r.choice([99, 100, 101, 150, 300])
    base = "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    if r.random() < 0.5:
        base = "".join(r.choice(["a", "é", "ß", "x", "ǅ"]) for _ in range(n))
    return sentence(r, 2) + " " + base + " " + word(r)


def very_long(r):
    kinds = [sentence, accents, cjk, emoji, url, scripts]
    return " ".join(r.choice(kinds)(r) for _ in range(r.randint(50, 400)))


def any_code_points(r):
    s = []
    for _ in range(r.randint(1, 30)):
        c = r.randint(0, 0x10FFFF)
        if 0xD800 <= c <= 0xDFFF or c == 0x0A:
            c = 0x20
        s.append(chr(c))
    return "".join(s)


def mixed(r):
    kinds = [sentence, accents, cjk, emoji, url, code, punct_run, odd_space, controls, scripts, special]
    return "".join(r.choice(kinds)(r) + r.choice(["", " ", "\t", "\u3000"]) for _ in range(r.randint(2, 5)))


KINDS = [(sentence, 14), (accents, 10), (cjk, 8), (emoji, 8), (url, 6), (code, 5), (punct_run, 6),
         (odd_space, 6), (controls, 6), (scripts, 8), (special, 5), (long_word, 3), (very_long, 1),
         (any_code_points, 8), (mixed, 8), (lambda r: "", 1), (lambda r: r.choice(SPACES) * 3, 1)]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
    r = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 20261201)
    fns = [f for f, w in KINDS for _ in range(w)]
    out = sys.stdout.buffer
    for _ in range(n):
        line = r.choice(fns)(r).replace("\n", " ")
        out.write(line.encode("utf-8") + b"\n")


if __name__ == "__main__":
    main()
