#!/usr/bin/env bash
# Goal: the memory viewer page shows what the snapshot JSON says, in a real browser: a page made
# by a real `streampool run --snapshot x.html` (history on) is drawn by headless Chromium and
# every count and total on it (segments, blocks per state, bytes, stats, events per kind, OOM
# markers, largest live blocks) equals the value computed from the JSON; hostile JSON (HTML,
# </script>, U+2028 in strings) is shown as text and nothing in it runs; malformed JSON is refused
# by `streampool viewer` with a message, and a page carrying malformed JSON says so instead of
# drawing.
# Method: chromium --headless --dump-dom (the DOM after the page's script ran) checked by
# viewer_check.py against the JSON embedded in the page; a screenshot of each page is kept in
# <build>/viewer/ as an artifact. Without chromium or python3 the test is skipped (exit 77),
# except with SP_REQUIRE_BROWSER=1 (CI), where that is a failure.
. "$(dirname "$0")/../common/cli.sh" "$1"
here=$(cd "$(dirname "$0")" && pwd)
art=$(dirname "$(readlink -f "$cli")")/viewer
mkdir -p "$art"
browser=$(command -v chromium || command -v chromium-browser || true)
for need in "$browser" "$(command -v python3 || true)"; do
  [ -n "$need" ] && continue
  if [ "${SP_REQUIRE_BROWSER:-0}" = 1 ]; then
    echo "FAILED: chromium or python3 not installed and SP_REQUIRE_BROWSER=1"; exit 1
  fi
  echo "skipped: chromium or python3 not installed (as root, make test installs them:" \
       "scripts/install-deps.sh chromium python3)"
  exit 77
done

draw() { # page.html dom.html screenshot.png
  local url="file://$(readlink -f "$1")" flags=(--headless --no-sandbox --disable-gpu
    --user-data-dir="$tmp/chrome" --virtual-time-budget=10000 --window-size=1280,2400)
  timeout 120 "$browser" "${flags[@]}" --dump-dom "$url" >"$2" 2>"$tmp/chrome.log" &&
    timeout 120 "$browser" "${flags[@]}" --screenshot="$3" "$url" >/dev/null 2>>"$tmp/chrome.log"
  local rc=$?
  [ $rc -ne 0 ] && tail -n 20 "$tmp/chrome.log"
  return $rc
}

# 1. A real run.
STREAMPOOL_MEMORY_HISTORY=4096 "$cli" run --backend host --threads 1,3 --duration 0.3 \
  --no-progress --snapshot "$tmp/run.html" >"$tmp/run.out" 2>&1
check "run --snapshot x.html exits 0 (got $?)" $?
draw "$tmp/run.html" "$tmp/run.dom" "$art/run.png"; check "chromium drew the run's page" $?
python3 "$here/viewer_check.py" "$tmp/run.html" "$tmp/run.dom"; check "run page matches its JSON" $?
grep -q '"kind":"alloc"' <(python3 -c 'import json,re,sys; p=open(sys.argv[1]).read();
print(re.search(r"id=\"snapshot\">(.*?)</script>", p, re.S).group(1))' "$tmp/run.html")
check "the run's snapshot has alloc events (history on)" $?
"$cli" run --backend host --threads 2 --duration 0.2 --no-progress --snapshot "$tmp/run.json" >/dev/null 2>&1
check "run --snapshot x.json exits 0" $?
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["history"]["enabled"] and d["events"]' "$tmp/run.json"
check "x.json is the JSON with events" $?
"$cli" viewer --json "$tmp/run.json" "$tmp/run2.html" >"$tmp/viewer.out"; check "viewer in.json out.html" $?
python3 -c 'import json,sys; v=json.loads(open(sys.argv[1]).read()); d=json.load(open(sys.argv[2]))
assert v["ok"] and v["segments"] == len(d["segments"]) and v["events"] == len(d["events"]), v
assert v["blocks"] == sum(len(s["blocks"]) for s in d["segments"]), v' "$tmp/viewer.out" "$tmp/run.json"
check "viewer --json reports what the page holds" $?
draw "$tmp/run2.html" "$tmp/run2.dom" "$art/run2.png" &&
  python3 "$here/viewer_check.py" "$tmp/run2.html" "$tmp/run2.dom"
check "converted page matches its JSON" $?

# 2. Hostile strings and every event kind (a hand-made snapshot).
python3 - "$tmp/hostile.json" <<'PY'
import json, sys
x = '</script><script>document.title="pwned";document.body.appendChild(document.createElement("i")).id="pwned"</script>'
img = '<img src=x onerror="document.body.setAttribute(\'data-pwned\',\'1\')">'
kinds = ["alloc", "free", "free_pending", "free_complete", "reuse", "reuse_wait", "segment_map",
         "segment_unmap", "oom_retry", "oom", "empty_cache", "page_decommit", "page_commit"]
segs = [{"address": x, "bytes": 2097152, "pool": img, "stream": 1,
         "blocks": [{"offset": 0, "bytes": 1024, "state": "live", "stream": 1},
                    {"offset": 1024, "bytes": 4096, "state": "pending", "stream": 1},
                    {"offset": 5120, "bytes": 2092032, "state": img, "stream": 1}]},
        {"address": "0x2\u2028\u2029<!--", "bytes": 20971520, "pool": "large", "stream": 3,
         "blocks": [{"offset": 0, "bytes": 20971520, "state": "cached", "stream": 3}]}]
ev = [{"seq": i, "t_ns": 1000 * i, "kind": k, "device": 0, "stream": 1, "peer": '<b id="injected">x</b>',
       "thread": x, "bytes": 512 * (i + 1), "address": img, "segment": None}
      for i, k in enumerate(kinds + kinds)]
ev.append({"seq": 99, "t_ns": 99000, "kind": '<b id="injected">x</b>', "bytes": 1})
json.dump({"stats": {"allocated_bytes": 1024, "reserved_bytes": 23068672, "note": x},
           "segments": segs, "history": {"enabled": True, "capacity": x}, "events": ev},
          open(sys.argv[1], "w"), ensure_ascii=False)
PY
"$cli" viewer "$tmp/hostile.json" "$tmp/hostile.html"; check "viewer accepts hostile strings" $?
draw "$tmp/hostile.html" "$tmp/hostile.dom" "$art/hostile.png"; check "chromium drew the hostile page" $?
python3 "$here/viewer_check.py" "$tmp/hostile.html" "$tmp/hostile.dom" hostile
check "hostile page: shown as text, nothing ran, counts match" $?

# 3. Malformed snapshots: refused by the converter with a message.
bad_inputs=('not json' '[]' '{"segments": 5}'
  '{"segments":[{"bytes":1e300,"stream":0,"blocks":[]}]}'
  '{"segments":[{"bytes":-1,"stream":0,"blocks":[]}]}'
  '{"segments":[{"bytes":10,"stream":0,"blocks":[{"offset":0,"bytes":"10","stream":0}]}]}'
  '{"segments":[{"bytes":10,"stream":0.5,"blocks":[]}]}'
  '{"segments":[],"events":{}}' '{"segments":[],"events":[{"bytes":1,"t_ns":"1"}]}')
for i in "${!bad_inputs[@]}"; do
  printf '%s' "${bad_inputs[$i]}" >"$tmp/bad$i.json"
  "$cli" viewer "$tmp/bad$i.json" "$tmp/bad$i.html" 2>"$tmp/bad$i.err"
  rc=$?
  [ $rc -eq 1 ] && grep -Eq "refusing|not valid JSON" "$tmp/bad$i.err" && [ ! -e "$tmp/bad$i.html" ]
  check "refused: ${bad_inputs[$i]} (rc $rc: $(cat "$tmp/bad$i.err"))" $?
done
printf '{"segments":[]}\0{}' >"$tmp/nul.json"
"$cli" viewer "$tmp/nul.json" "$tmp/nul.html" 2>"$tmp/nul.err"; [ $? -eq 1 ] && grep -q NUL "$tmp/nul.err"
check "refused: a NUL byte" $?
"$cli" viewer "$tmp/missing.json" "$tmp/x.html" 2>/dev/null; [ $? -eq 1 ]; check "missing input: exit 1" $?
"$cli" viewer only-one 2>/dev/null; [ $? -eq 2 ]; check "bad usage: exit 2" $?
"$cli" viewer --bogus a b 2>/dev/null; [ $? -eq 2 ]; check "unknown option: exit 2" $?
"$cli" viewer --help | grep -q "usage: streampool viewer"; check "viewer --help" $?

# 4. A page whose JSON was damaged after it was written says so and draws nothing.
python3 - "$tmp/hostile.html" "$tmp/damaged.html" <<'PY'
import re, sys
p = open(sys.argv[1], encoding="utf-8").read()
p = re.sub(r'(id="snapshot">).*?(</script>)', lambda m: m.group(1) + '{"segments":"x"}' + m.group(2), p, count=1, flags=re.S)
open(sys.argv[2], "w", encoding="utf-8").write(p)
PY
draw "$tmp/damaged.html" "$tmp/damaged.dom" "$art/damaged.png"
grep -q 'data-status="error"' "$tmp/damaged.dom" && ! grep -q 'class="segment' "$tmp/damaged.dom"
check "damaged page shows an error and no segments" $?
echo "screenshots: $art"
exit $fail
