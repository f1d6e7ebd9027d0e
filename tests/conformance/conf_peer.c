/* Conformance: cross-device event waits and peer copies, on every backend with two devices, and
 * between backends.
 *
 * Goal: on each pair of devices, data written on one device and copied by the other device's
 * stream (sp_memcpy_peer_async) after sp_stream_wait_event_peer arrives complete, in both
 * directions, for odd sizes and offsets, also when the producer is held back so that only the
 * wait orders the copy. Pairs: host 0 + host 1 (STREAMPOOL_HOST_DEVICES=2 is set here when
 * unset), cuda 0 + cuda 1 (the device slot: cudaMemcpyPeerAsync), host 0 + cuda 0 (different
 * backends: host-side wait and host-staged copy).
 * Method: the source is filled on the producer's stream (memset, then a seeded pattern uploaded
 * over part of it), an event is recorded; the consumer's stream waits on it, peer-copies into a
 * block it had cleared, downloads; every byte is compared with the host's expectation. The held
 * case puts a gate (a host function released by a timer thread) in front of the producer's writes.
 * A pair whose backend has fewer than 2 devices prints "skipped: fewer than 2 devices" and the
 * others run; SP_REQUIRE_PEER=1 turns a missing CUDA pair into a failure (for the multi-GPU run).
 * With no pair at all the test exits 77 (skipped).
 */
#include "conformance.h"

enum { PEER_MAX = (1 << 20) + 64 };

typedef struct peer_pair {
  const char *be[2];
  int index[2];
  sp_device *dev[2];
  char name[64];
} peer_pair;

/* src on devs[p] (made there behind an optional gate), copied to dst on devs[c]. */
static void peer_once(sp_device *pd, sp_device *cd, size_t n, size_t off, uint64_t seed, int held) {
  sp_stream *ps = NULL, *cs = NULL;
  SP_CHECK_OK(sp_stream_current(pd, &ps));
  SP_CHECK_OK(sp_stream_current(cd, &cs));
  unsigned char *src = NULL, *dst = NULL, *host = malloc(n), *out = malloc(n + off);
  assert_true(host && out);
  SP_CHECK_OK(sp_alloc(pd, n + off, ps, (void **)&src));
  SP_CHECK_OK(sp_alloc(cd, n + off, cs, (void **)&dst));
  conf_fill(host, n, seed);
  SP_CHECK_OK(sp_memset_async(cs, dst, 0x5a, n + off));
  conf_gate g;
  if (held) conf_gate_close(&g, ps, 40);
  SP_CHECK_OK(sp_memset_async(ps, src, 0xa5, n + off));
  SP_CHECK_OK(sp_memcpy_async(ps, src + off, host, n));
  sp_event made;
  SP_CHECK_OK(sp_event_acquire(pd, 0, &made));
  SP_CHECK_OK(sp_event_record(made, ps));
  SP_CHECK_OK(sp_stream_wait_event_peer(cs, pd, made));
  SP_CHECK_OK(sp_memcpy_peer_async(cs, dst, pd, src + off, n));
  conf_download(cs, out, dst, n + off);
  if (held) conf_gate_open(&g);
  size_t bad = conf_check(out, n, seed);
  if (bad != n)
    fail_msg("%s -> %s, %zu bytes at offset %zu%s: byte %zu got 0x%02x, want 0x%02x",
             sp_device_backend(pd), sp_device_backend(cd), n, off, held ? " (held)" : "", bad,
             out[bad], conf_pattern(seed, bad));
  bad = conf_check_byte(out + n, off, 0x5a);
  if (bad != off) fail_msg("the copy wrote past its end: byte %zu", n + bad);
  SP_CHECK_OK(sp_stream_sync(ps));
  SP_CHECK_OK(sp_event_release(pd, made));
  SP_CHECK_OK(sp_free(pd, src));
  SP_CHECK_OK(sp_free(cd, dst));
  free(host);
  free(out);
}

static void peer_copies(void **state) {
  peer_pair *pp = *state;
  static const size_t sizes[] = {1, 4097, PEER_MAX - 64};
  for (int dir = 0; dir < 2; dir++)
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
      peer_once(pp->dev[dir], pp->dev[!dir], sizes[k], (k * 3) & 31u,
                tu_seed() + (uint64_t)(dir * 16) + k, 0);
}

static void peer_copies_held(void **state) {
  peer_pair *pp = *state;
  unsigned rounds = (unsigned)tu_scale(6);
  for (unsigned r = 0; r < rounds; r++)
    peer_once(pp->dev[r & 1u], pp->dev[!(r & 1u)], 256u << 10, r, tu_seed() * 7u + r, 1);
}

static int pair_setup(void **state) {
  peer_pair *pp = *state;
  for (int i = 0; i < 2; i++) {
    sp_device_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.backend = pp->be[i];
    cfg.index = pp->index[i];
    cfg.streams = CONF_STREAMS;
    sp_status st = sp_device_open(&cfg, &pp->dev[i]);
    if (st != SP_OK) {
      fprintf(stderr, "%s: open %s %d: %s: %s\n", pp->name, pp->be[i], pp->index[i],
              sp_status_str(st), sp_last_error());
      if (i) sp_device_close(pp->dev[0]);
      return -1;
    }
  }
  return 0;
}

static int pair_teardown(void **state) {
  peer_pair *pp = *state;
  sp_device_close(pp->dev[0]);
  sp_device_close(pp->dev[1]);
  return 0;
}

static int device_count(const char *be) {
  int n = 0;
  if (!sp_backend_compiled(be) || sp_device_count(be, &n) != SP_OK) return 0;
  return n;
}

int main(void) {
  setenv("STREAMPOOL_HOST_DEVICES", "2", 0);
  setenv("STREAMPOOL_HOST_JITTER_US", "30", 0);
  (void)tu_seed();
  const char *req = getenv("SP_REQUIRE_PEER");
  int require = req && strcmp(req, "1") == 0;
  int host_n = device_count("host"), cuda_n = device_count("cuda");
  static peer_pair pairs[3];
  int np = 0;
  if (host_n >= 2) pairs[np++] = (peer_pair){{"host", "host"}, {0, 1}, {NULL, NULL}, "host0+host1"};
  else printf("[conf_peer] host: skipped: fewer than 2 devices (STREAMPOOL_HOST_DEVICES)\n");
  if (cuda_n >= 2) pairs[np++] = (peer_pair){{"cuda", "cuda"}, {0, 1}, {NULL, NULL}, "cuda0+cuda1"};
  else printf("[conf_peer] cuda: skipped: fewer than 2 devices (%d)\n", cuda_n);
  if (cuda_n >= 1 && host_n >= 1)
    pairs[np++] = (peer_pair){{"host", "cuda"}, {0, 0}, {NULL, NULL}, "host0+cuda0"};
  else printf("[conf_peer] host+cuda: skipped: fewer than 2 devices (no CUDA device)\n");
  if (require && cuda_n < 2) {
    fprintf(stderr, "conf_peer: SP_REQUIRE_PEER=1 but only %d CUDA device(s)\n", cuda_n);
    return 1;
  }
  if (np == 0) {
    printf("skipped: fewer than 2 devices on every backend\n");
    return TU_SKIP;
  }
  struct CMUnitTest tests[6];
  static char names[6][96];
  int nt = 0;
  for (int p = 0; p < np; p++) {
    static const struct {
      const char *name;
      void (*fn)(void **);
    } cases[] = {{"peer_copies", peer_copies}, {"peer_copies_held", peer_copies_held}};
    for (int c = 0; c < 2; c++, nt++) {
      snprintf(names[nt], sizeof(names[nt]), "%s/%s", pairs[p].name, cases[c].name);
      tests[nt] = (struct CMUnitTest){names[nt], cases[c].fn, pair_setup, pair_teardown, &pairs[p]};
    }
  }
  return _cmocka_run_group_tests("conf_peer", tests, (size_t)nt, NULL, NULL);
}
