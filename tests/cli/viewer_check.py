"""Checks a memory viewer page as Chromium drew it (tests/cli/viewer.sh).

usage: viewer_check.py page.html dom.html [hostile]
page.html is the file the CLI wrote; the JSON the page was built from is read back from its
<script id="snapshot"> element (json.loads undoes the \\uXXXX escapes). dom.html is
`chromium --dump-dom` of it: the DOM after the page's script ran. Every count and total the page
shows (elements with ids and data-value, .segment and .block elements) must equal the value
computed here from the JSON. With "hostile": also nothing from the JSON ran (title unchanged, no
element or attribute the payloads would add) and the payload strings appear as text.
Prints each mismatch with both values; exits 1 on any.
"""
import html.parser
import json
import re
import sys

STATES = ["live", "cached", "pending"]
KINDS = ["alloc", "free", "free_pending", "free_complete", "reuse", "reuse_wait", "segment_map",
         "segment_unmap", "oom_retry", "oom", "empty_cache", "page_decommit", "page_commit"]


class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.by_id, self.tags, self.classes = {}, [], {}
        self.attrs_all, self.text, self.title, self._in_title = [], [], "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs_all.append((tag, a))
        if "id" in a:
            self.by_id[a["id"]] = a
        for c in (a.get("class") or "").split():
            self.classes.setdefault(c, []).append(a)
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title:
            self.title += data


def embedded_json(page):
    m = re.search(r'<script type="application/json" id="snapshot">(.*?)</script>', page, re.S)
    assert m, "no snapshot element in the page"
    raw = m.group(1)
    for ch in "<>&\u2028\u2029":
        assert ch not in raw, "unescaped %r inside the page's JSON element" % ch
    return json.loads(raw)


def main():
    page = open(sys.argv[1], encoding="utf-8").read()
    dom_text = open(sys.argv[2], encoding="utf-8").read()
    hostile = len(sys.argv) > 3 and sys.argv[3] == "hostile"
    snap = embedded_json(page)
    dom = Dom()
    dom.feed(dom_text)
    bad = []

    def same(what, got, want):
        if got != want:
            bad.append("%s: page shows %r, JSON gives %r" % (what, got, want))

    def shown(id_):
        a = dom.by_id.get(id_)
        if a is None or "data-value" not in a:
            bad.append("element #%s with data-value is missing" % id_)
            return None
        return int(a["data-value"])

    same("page rendered", dom.by_id.get("error", {}).get("data-status"), "ok")
    segs = snap["segments"]
    blocks = [b for s in segs for b in s["blocks"]]
    same("segments", shown("segment-count"), len(segs))
    same("blocks", shown("block-count"), len(blocks))
    same("reserved bytes", shown("reserved-bytes"), sum(s.get("committed", s["bytes"]) for s in segs))
    same("streams", shown("stream-count"), len({s["stream"] for s in segs}))
    for st in STATES:
        mine = [b for b in blocks if b.get("state") == st]
        same(st + " blocks", shown(st + "-block-count"), len(mine))
        same(st + " bytes", shown(st + "-bytes"), sum(b["bytes"] for b in mine))
        same("drawn " + st + " blocks", sum(1 for a in dom.classes.get("block", [])
                                             if a.get("data-state") == st), len(mine))
    unknown = [b for b in blocks if b.get("state") not in STATES]
    same("unknown-state blocks", shown("unknown-block-count"), len(unknown))
    same("drawn segments", len(dom.classes.get("segment", [])), len(segs))
    same("drawn blocks", len(dom.classes.get("block", [])), len(blocks))
    for k, v in snap.get("stats", {}).items():
        if isinstance(v, (int, float)):
            same("stats." + k, shown("stat-" + k), v)
    ev = snap.get("events", [])
    same("events", shown("event-count"), len(ev))
    for k in KINDS:
        same("events " + k, shown("kind-" + k), sum(1 for e in ev if e.get("kind") == k))
    ooms = sum(1 for e in ev if e.get("kind") in ("oom", "oom_retry"))
    same("oom rows", len(dom.classes.get("oom-row", [])), ooms)
    if ev:
        same("oom markers drawn", len(dom.classes.get("oom-marker", [])), ooms)
        same("oom marker count", shown("oom-marker-count"), ooms)
    same("reuses", shown("reuse-count"), sum(1 for e in ev if e.get("kind") in ("reuse", "reuse_wait")))
    same("deferred frees", shown("deferred-count"), sum(1 for e in ev if e.get("kind") == "free_pending"))
    live = sorted((b["bytes"] for b in blocks if b.get("state") == "live"), reverse=True)[:20]
    same("largest live blocks", [int(r.get("data-bytes", -1))
                                 for r in dom.classes.get("largest-row", [])], live)
    if not hostile:
        same("consistency note", dom.by_id.get("consistency", {}).get("data-value"), "ok")
    if hostile:
        same("title (a payload would change it)", dom.title, "streampool memory")
        for id_ in ("injected", "pwned"):
            if id_ in dom.by_id:
                bad.append("element #%s from the JSON is in the DOM: the payload ran" % id_)
        for tag, a in dom.attrs_all:
            if "data-pwned" in a or tag in ("img", "iframe", "b") or any(k.startswith("on") for k in a):
                bad.append("element <%s %r> from the JSON is in the DOM" % (tag, a))
        same("script elements", dom.tags.count("script"), 2)
        text = "".join(dom.text)
        for needle in ("</script><script>", "<img src=x", "<b id=\"injected\">"):
            if needle not in text:
                bad.append("payload %r not shown as text" % needle)
    for b in bad:
        print("FAILED:", b)
    print("checked %d segments, %d blocks, %d events: %s" % (len(segs), len(blocks), len(ev),
                                                              "mismatch" if bad else "all match"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
