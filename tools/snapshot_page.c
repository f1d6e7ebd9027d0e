/* Memory snapshots as files: `streampool run --snapshot out.html|out.json` and
 * `streampool viewer in.json out.html`.
 *
 * Owns the conversion of a sp_memory_snapshot_json document into the self-contained page
 * tools/viewer/memory.html (embedded at build time as sp_cli_viewer_html). A document is checked
 * before it goes into a page: an object with "segments" (objects with integer bytes/stream and a
 * "blocks" array of objects with integer offset/bytes/stream), optional "stats" (object) and
 * "events" (array of objects with integer bytes and numeric t_ns), counts under fixed bounds;
 * anything else is refused with a message naming the first problem. Strings are not checked:
 * the page shows them as text. The document is re-printed by cJSON and then <, >, &, U+2028 and
 * U+2029 are written as \uXXXX escapes (all inside JSON strings, so the value is unchanged),
 * which keeps "</script>" or "<!--" in a string from ending the page's JSON element. No state,
 * no lock; the CLI's main thread only.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "streampool.h"

extern const unsigned char sp_cli_viewer_html[];
extern const size_t sp_cli_viewer_html_len;

enum { PAGE_HISTORY_DEFAULT = 65536 }; /* events kept by `run --snapshot` without the variable */
#define PAGE_TOKEN "@STREAMPOOL_SNAPSHOT_JSON@"
#define PAGE_INPUT_MAX ((long)1 << 30) /* bytes of JSON the converter reads */
#define PAGE_SEGMENTS_MAX 1000000
#define PAGE_BLOCKS_MAX 4000000
#define PAGE_EVENTS_MAX (4 * 1024 * 1024)

static int page_is_count(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 9007199254740991.0 &&
         floor(v->valuedouble) == v->valuedouble;
}

/* NULL when doc is a snapshot the page can show, else what is wrong (into err). */
static const char *page_check_segments(const cJSON *segs, char *err, size_t n) {
  if (!cJSON_IsArray(segs)) return "\"segments\" is missing or not an array";
  int count = cJSON_GetArraySize(segs), i = 0;
  long blocks = 0;
  if (count > PAGE_SEGMENTS_MAX) return "more segments than the viewer accepts (1000000)";
  for (const cJSON *g = segs->child; g; g = g->next, i++) {
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(g, "blocks");
    if (!cJSON_IsObject(g) || !page_is_count(g, "bytes") || !page_is_count(g, "stream") ||
        !cJSON_IsArray(bl)) {
      snprintf(err, n, "segment %d: needs integer \"bytes\" and \"stream\" and a \"blocks\" array",
               i);
      return err;
    }
    int j = 0;
    for (const cJSON *b = bl->child; b; b = b->next, j++) {
      if (++blocks > PAGE_BLOCKS_MAX) return "more blocks than the viewer accepts (4000000)";
      if (!cJSON_IsObject(b) || !page_is_count(b, "offset") || !page_is_count(b, "bytes") ||
          !page_is_count(b, "stream")) {
        snprintf(err, n, "segment %d block %d: needs integer \"offset\", \"bytes\", \"stream\"", i,
                 j);
        return err;
      }
    }
  }
  return NULL;
}

static const char *page_check(const cJSON *doc, char *err, size_t n) {
  if (!cJSON_IsObject(doc)) return "the document is not a JSON object";
  const char *why = page_check_segments(cJSON_GetObjectItemCaseSensitive(doc, "segments"), err, n);
  if (why) return why;
  const cJSON *stats = cJSON_GetObjectItemCaseSensitive(doc, "stats");
  if (stats && !cJSON_IsObject(stats)) return "\"stats\" is not an object";
  const cJSON *ev = cJSON_GetObjectItemCaseSensitive(doc, "events");
  if (!ev) return NULL;
  if (!cJSON_IsArray(ev)) return "\"events\" is not an array";
  if (cJSON_GetArraySize(ev) > PAGE_EVENTS_MAX) return "more events than the viewer accepts";
  int i = 0;
  for (const cJSON *e = ev->child; e; e = e->next, i++) {
    if (!cJSON_IsObject(e) || !page_is_count(e, "bytes") ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "t_ns"))) {
      snprintf(err, n, "event %d: needs integer \"bytes\" and a number \"t_ns\"", i);
      return err;
    }
  }
  return NULL;
}

/* Writes json with the characters that could end or confuse the script element escaped. */
static int page_write_escaped(FILE *f, const char *json) {
  for (const unsigned char *p = (const unsigned char *)json; *p; p++) {
    if (*p == '<' || *p == '>' || *p == '&') {
      if (fprintf(f, "\\u%04x", *p) < 0) return -1;
    } else if (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) {
      if (fprintf(f, "\\u%04x", p[2] == 0xA8 ? 0x2028u : 0x2029u) < 0) return -1;
      p += 2;
    } else if (fputc(*p, f) == EOF) {
      return -1;
    }
  }
  return 0;
}

/* What a written page holds, for `viewer --json`. */
typedef struct page_counts {
  int segments, blocks, events;
} page_counts;

static void page_count(const cJSON *doc, page_counts *n) {
  const cJSON *segs = cJSON_GetObjectItemCaseSensitive(doc, "segments");
  n->segments = cJSON_GetArraySize(segs);
  n->blocks = 0;
  for (const cJSON *g = segs->child; g; g = g->next)
    n->blocks += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(g, "blocks"));
  n->events = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "events"));
}

/* The page for document text `json` into path; 0 ok, else 1 with a message on stderr. counts
 * (may be NULL) gets what the page holds. */
static int page_write(const char *json, const char *path, const char *who, page_counts *counts) {
  char err[160];
  cJSON *doc = cJSON_Parse(json);
  if (!doc) {
    fprintf(stderr, "%s: the snapshot is not valid JSON (near byte %ld)\n", who,
            (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - json : 0));
    return 1;
  }
  const char *why = page_check(doc, err, sizeof(err));
  if (!why && counts) page_count(doc, counts);
  char *text = why ? NULL : cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  if (why || !text) {
    fprintf(stderr, "%s: refusing the snapshot: %s\n", who, why ? why : "out of host memory");
    return 1;
  }
  const char *tpl = (const char *)sp_cli_viewer_html;
  const char *at = strstr(tpl, PAGE_TOKEN);
  FILE *f = at ? fopen(path, "wb") : NULL;
  int bad = !f;
  if (f) {
    bad |= fwrite(tpl, 1, (size_t)(at - tpl), f) != (size_t)(at - tpl);
    bad |= page_write_escaped(f, text) != 0;
    const char *rest = at + strlen(PAGE_TOKEN);
    size_t rest_len = sp_cli_viewer_html_len - (size_t)(rest - tpl);
    bad |= fwrite(rest, 1, rest_len, f) != rest_len;
    bad |= fclose(f) != 0;
  }
  cJSON_free(text);
  if (bad) fprintf(stderr, "%s: cannot write %s\n", who, path);
  return bad;
}

static int page_ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), m = strlen(tail);
  return n >= m && !strcmp(s + n - m, tail);
}

void sp_cli_snapshot_prepare(void) {
  char n[24];
  snprintf(n, sizeof(n), "%d", PAGE_HISTORY_DEFAULT);
  setenv("STREAMPOOL_MEMORY_HISTORY", n, 0); /* set already: the user chose (0: off) */
}

int sp_cli_snapshot_save(sp_device *dev, const char *path) {
  char *json = NULL;
  sp_status st = sp_memory_snapshot_json(dev, &json);
  if (st != SP_OK) {
    fprintf(stderr, "streampool run: --snapshot: %s: %s\n", sp_status_str(st), sp_last_error());
    return 1;
  }
  int bad;
  if (page_ends_with(path, ".json")) {
    FILE *f = fopen(path, "wb");
    bad = !f || fputs(json, f) < 0;
    if (f) bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "streampool run: cannot write %s\n", path);
  } else {
    bad = page_write(json, path, "streampool run", NULL);
  }
  sp_string_free(json);
  return bad;
}

/* The whole file at path (NUL-terminated; *len its bytes), or NULL with a message. */
static char *page_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n = -1;
  if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
  if (f && n >= 0 && n <= PAGE_INPUT_MAX && fseek(f, 0, SEEK_SET) == 0) {
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
      free(buf);
      buf = NULL;
    }
    if (buf) buf[n] = '\0';
    *len = (size_t)n;
  }
  if (!buf)
    fprintf(stderr, "streampool viewer: cannot read %s%s\n", path,
            n > PAGE_INPUT_MAX ? " (larger than 1 GiB)" : "");
  if (f) fclose(f);
  return buf;
}

static void viewer_usage(FILE *f) {
  fprintf(f,
          "usage: streampool viewer [--json] SNAPSHOT.json OUT.html\n"
          "  turns a memory snapshot (sp_memory_snapshot_json, `streampool run --snapshot "
          "x.json`) into\n  a self-contained HTML page: segments per stream, bytes over time, "
          "largest blocks, events.\n"
          "  --json  one JSON line on stdout: {\"ok\", \"page\", \"segments\", \"blocks\", "
          "\"events\"}\n"
          "Exit status: 0 written, 1 unreadable or refused input (the message says why), 2 bad "
          "usage.\n");
}

int sp_cli_viewer(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    viewer_usage(stdout);
    return SP_CLI_OK;
  }
  const char *files[2];
  int n_files = 0, json_out = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json_out = 1;
    else if (argv[i][0] == '-' && argv[i][1])
      return sp_cli_usage_error("viewer", "unknown option '%s'", argv[i]);
    else if (n_files == 2)
      return sp_cli_usage_error("viewer", "needs two files: SNAPSHOT.json OUT.html");
    else files[n_files++] = argv[i];
  }
  if (n_files != 2) return sp_cli_usage_error("viewer", "needs two files: SNAPSHOT.json OUT.html");
  size_t len = 0;
  char *json = page_read(files[0], &len);
  if (!json) return SP_CLI_FAILED;
  if (strlen(json) != len) {
    fprintf(stderr, "streampool viewer: refusing %s: it contains a NUL byte\n", files[0]);
    free(json);
    return SP_CLI_FAILED;
  }
  page_counts n = {0};
  int rc = page_write(json, files[1], "streampool viewer", &n);
  free(json);
  if (json_out) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", !rc);
    cJSON_AddStringToObject(o, "page", files[1]);
    cJSON_AddNumberToObject(o, "segments", n.segments);
    cJSON_AddNumberToObject(o, "blocks", n.blocks);
    cJSON_AddNumberToObject(o, "events", n.events);
    char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    if (txt) printf("%s\n", txt);
    cJSON_free(txt);
    cJSON_Delete(o);
  }
  return rc ? SP_CLI_FAILED : SP_CLI_OK;
}
