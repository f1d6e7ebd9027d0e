#!/usr/bin/env python3
"""Summarizes an A/B run of scripts/bench-ab.sh: one row per benchmark cell, each tree's runs.

usage: bench-ab-summary.py LOGDIR

LOGDIR holds NAME.TREE.ROUND.log files (TREE is base or new) from bench/streams, bench/alloc and
bench/infer. Every cell the benchmarks print is read from their own output (no number is typed
in): the "ns/" columns of the markdown tables of streams and alloc (streampool's and malloc's, the
peer measured in the same run) and calls/s of infer's rows. Printed: per cell, each tree's
median and range over the rounds and new/base of the medians, with "lower" or "higher" saying
which is better. A cell only one tree prints is listed with the other side empty.
"""
import pathlib
import re
import statistics
import sys
from collections import defaultdict

INFER_ROW = re.compile(r"^((?:f32|bf16) [a-z]+(?: \([a-z ]+\))?)\s+(\d+)\s+(\d+)\s")


def cells_of(name, text):
    """Yields (cell, value, better) for one log."""
    header = None
    for line in text.splitlines():
        m = INFER_ROW.match(line)
        if m:
            yield f"{name}: {m.group(1)}, {m.group(2)} threads, calls/s", float(m.group(3)), "higher"
            continue
        if not line.startswith("|"):
            header = None
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cols)) <= set("-: "):
            continue
        if header is None or not cols[1].isdigit():
            header = cols
            continue
        for i, h in enumerate(header):
            if "ns/" in h and "CPU" not in h and i < len(cols):
                try:
                    v = float(cols[i])
                except ValueError:
                    continue
                yield f"{name}: {cols[0]}, {cols[1]} threads, {h}", v, "lower"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    runs = defaultdict(lambda: {"base": [], "new": []})
    better = {}
    for p in sorted(pathlib.Path(sys.argv[1]).glob("*.*.*.log")):
        name, tree, _ = p.name[: -len(".log")].rsplit(".", 2)
        if tree not in ("base", "new"):
            continue
        for cell, v, b in cells_of(name, p.read_text(errors="replace")):
            runs[cell][tree].append(v)
            better[cell] = b

    def side(vs):
        if not vs:
            return "-"
        return f"{statistics.median(vs):.4g} ({min(vs):.4g}..{max(vs):.4g}, n={len(vs)})"

    print("| cell | base: median (range) | new: median (range) | new/base | better |")
    print("|---|---|---|---|---|")
    for cell in runs:
        b, n = runs[cell]["base"], runs[cell]["new"]
        ratio = f"{statistics.median(n) / statistics.median(b):.3f}" if b and n else "-"
        print(f"| {cell} | {side(b)} | {side(n)} | {ratio} | {better[cell]} |")


if __name__ == "__main__":
    main()
