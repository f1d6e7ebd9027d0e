/* streampool._speedups: the package's two per-request calls, model(x) and batcher(row), as one
 * C call each in the common case: the input checked, the output array allocated (NumPy's C
 * API), the library called with the GIL released, a failed status raised. Through ctypes a call
 * spent about 3.8 us in Python under the GIL (docs/PERFORMANCE.md); taking the arrays through the
 * buffer protocol with the checks and np.empty in Python still left about 2.2 us on the H200.
 *
 * Owns two function pointers and one callable, set once by bind(): the addresses of the ctypes
 * library's sp_model_infer and sp_batcher_infer, so this module links against no library
 * (NumPy's C API comes through its import) and the package loads libstreampool once, through
 * ctypes, whether this module is there or not; and the package's raise-for-status function,
 * called on the calling thread (the library's message is thread-local). Optional:
 * python/streampool/__init__.py uses it when it imports (CPython and NumPy headers at build
 * time) and runs the ctypes path otherwise, and for every input that is not a plain float32
 * array of the right shape (model_call and batcher_call return None for those); both paths
 * compute the same thing. Also owns ModelBase, the C type the package's Model derives from,
 * whose vectorcall is model(x) itself (no Python frame between the caller and the library), and
 * its switch set_fast. No locks: the pointers are written before any call (at import, under the
 * import lock) and never changed after (bind() refuses others); the GIL hand-over gate below is
 * atomics only (the word, its on switch, two counters); a ModelBase's fields change with the
 * GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* Built against NumPy 2 headers, runs on NumPy >= 1.22 (the package's dependency). */
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#if PY_VERSION_HEX < 0x03090000 /* the names 3.8 gave the vectorcall protocol */
#define PyObject_Vectorcall _PyObject_Vectorcall
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

#include <sched.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef int (*model_infer_fn)(void *model, const void *x, void *y, unsigned batch);
typedef int (*batcher_infer_fn)(void *batcher, const void *row, void *out);

static model_infer_fn model_infer_p;
static batcher_infer_fn batcher_infer_p;
static PyObject *raise_status; /* the package's check(status): raises for a failed status */

/* ---- the GIL hand-over gate ---------------------------------------------------------------
 * With the GIL, a thread coming back from a C call sleeps in CPython's take_gil whenever another
 * thread holds it, and is woken with a futex when that one lets go; under many threads the GIL
 * then sits unheld while each sleeper wakes up (the H200, 16 threads: 0.25-0.44 of the C-thread
 * rate without the gate, 0.82-1.04 with it). The gate keeps threads coming back from our calls out
 * of take_gil while one of them is known to be running Python: a returning thread claims the gate
 * (one CAS of the word from 0 to a token of this claim) and only then takes the GIL; the others
 * spin (yielding the CPU now and then, so a preempted holder can run) until the holder enters its
 * next call, which frees the gate right after giving up the GIL, so the next one takes a free GIL
 * without a sleep and a wake. A claim a waiter has seen unchanged for GATE_AGE_NS (its holder went
 * on to other Python work, or ended) is taken over, so one stale claim holds a waiter up no longer
 * than that; a new claim (every claim has its own token) starts that count again, and a waiter
 * gives up on the gate GATE_GIVE_UP_NS after it began, taking the GIL the ordinary way. Bounding
 * each waiter's own wait instead was measured worse (the H200, 16 threads: 96-101 k calls/s against
 * 146-157 k): under contention waiters then time out and sleep in take_gil after all (the give-up
 * is 100 times longer). A thread that runs more than GATE_AGE_NS of Python between its calls gains
 * nothing from the gate: its claim is taken over and the taker sleeps in take_gil after spinning.
 * An uncontended call costs two CAS and no clock read. The gate only orders who asks CPython first:
 * the GIL itself is always taken and given up through the C API. Free-threaded builds have no gate.
 */
#ifndef Py_GIL_DISABLED
/* A claim seen unchanged this long is taken over; a waiter that has lost the race to others
 * this long (CPython's switch interval) takes the GIL the ordinary way, unclaimed. */
#define GATE_AGE_NS 50000ull
#define GATE_GIVE_UP_NS 5000000ull

static _Atomic uint64_t gate;                       /* 0, or the token of the claim holding it */
static atomic_uint gate_threads;                    /* thread ids handed out (tokens' high half) */
static atomic_ullong gate_takeovers, gate_give_ups; /* slow paths taken, for gate_stats()       */
static atomic_bool gate_on = true; /* set_gate(); the package sets it from STREAMPOOL_GIL_GATE */
/* This thread's latest claim, 0 once it gave the gate up (it may have been taken over since). */
static _Thread_local uint64_t held;
static _Thread_local uint64_t last_own; /* this thread's latest token (0: none yet) */

/* A token no other claim has: the thread's id (from 1) << 32 | its claim count. */
static uint64_t gate_token(void) {
  if (!last_own) last_own = (uint64_t)(atomic_fetch_add(&gate_threads, 1) + 1u) << 32;
  last_own = (last_own & ~0xffffffffull) | ((last_own + 1) & 0xffffffffull);
  return last_own;
}

static uint64_t gate_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void gate_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Claims the gate: when it is free, or its claim has not changed for GATE_AGE_NS; gives up,
 * unclaimed (held stays 0), GATE_GIVE_UP_NS after the wait began whoever holds the gate, so one
 * thread's spin is bounded even when others keep winning it, and CPython's own fairness takes
 * over. */
static void gate_claim(void) {
  const uint64_t mine = gate_token();
  uint64_t g = 0;
  if (!atomic_compare_exchange_strong(&gate, &g, mine)) {
    const uint64_t start = gate_now();
    uint64_t seen = g, since = start;
    for (unsigned i = 1;; i++) {
      gate_relax();
      g = atomic_load_explicit(&gate, memory_order_relaxed);
      if (g == 0 && atomic_compare_exchange_weak(&gate, &g, mine)) break;
      if ((i & 63) == 0) {
        uint64_t now = gate_now();
        if (g != seen) {
          seen = g;
          since = now;
        } else if (g != 0 && now - since > GATE_AGE_NS &&
                   atomic_compare_exchange_strong(&gate, &g, mine)) {
          atomic_fetch_add_explicit(&gate_takeovers, 1, memory_order_relaxed);
          break;
        }
        if (now - start > GATE_GIVE_UP_NS) { /* unclaimed: to take_gil, fair by its rules */
          atomic_fetch_add_explicit(&gate_give_ups, 1, memory_order_relaxed);
          return;
        }
        if ((i & 255) == 0) sched_yield();
      }
    }
  }
  held = mine;
}
#endif

/* Gives up the GIL for a C call (and the gate, if this thread holds it). */
static PyThreadState *gil_release(void) {
  PyThreadState *ts = PyEval_SaveThread();
#ifndef Py_GIL_DISABLED
  uint64_t mine = held;
  held = 0;
  if (mine) atomic_compare_exchange_strong(&gate, &mine, 0); /* unless taken over meanwhile */
#endif
  return ts;
}

/* Takes the GIL back after a C call, through the gate where it is on. */
static void gil_take(PyThreadState *ts) {
#ifndef Py_GIL_DISABLED
  if (atomic_load_explicit(&gate_on, memory_order_relaxed)) gate_claim();
#endif
  PyEval_RestoreThread(ts);
}

/* bind(model_infer_address, batcher_infer_address, raise_status) */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 3) return PyErr_Format(PyExc_TypeError, "bind: 3 arguments, got %zd", n);
  unsigned long long m = PyLong_AsUnsignedLongLong(args[0]);
  if (PyErr_Occurred()) return NULL;
  unsigned long long b = PyLong_AsUnsignedLongLong(args[1]);
  if (PyErr_Occurred()) return NULL;
  if (!m || !b) return PyErr_Format(PyExc_ValueError, "bind: a null function address");
  if (!PyCallable_Check(args[2]))
    return PyErr_Format(PyExc_TypeError, "bind: raise_status is not callable");
  if (model_infer_p &&
      ((uintptr_t)model_infer_p != m || (uintptr_t)batcher_infer_p != b || raise_status != args[2]))
    return PyErr_Format(PyExc_RuntimeError, "bind: already bound to other functions");
  model_infer_p = (model_infer_fn)(uintptr_t)m; /* an address from ctypes: a function's */
  batcher_infer_p = (batcher_infer_fn)(uintptr_t)b;
  if (!raise_status) {
    Py_INCREF(args[2]); /* kept for the module's life */
    raise_status = args[2];
  }
  Py_RETURN_NONE;
}

/* Whether a is the array the fast path takes as it is: exactly a NumPy ndarray (no subclass),
 * native-order aligned float32, C-contiguous, of ndim dimensions. Anything else goes to the
 * package's general path, which converts or refuses it with its own message. */
static int plain_f32(PyObject *a, int ndim) {
  if (!PyArray_CheckExact(a)) return 0;
  PyArrayObject *x = (PyArrayObject *)a;
  return PyArray_NDIM(x) == ndim && PyArray_TYPE(x) == NPY_FLOAT32 && PyArray_ISNOTSWAPPED(x) &&
         PyArray_ISALIGNED(x) && PyArray_IS_C_CONTIGUOUS(x);
}

/* arg as a feature count: a positive Py_ssize_t. */
static int features(PyObject *arg, Py_ssize_t *n) {
  *n = PyLong_AsSsize_t(arg);
  if (*n == -1 && PyErr_Occurred()) return -1;
  if (*n <= 0) {
    PyErr_Format(PyExc_ValueError, "_speedups: bad feature count %zd", *n);
    return -1;
  }
  return 0;
}

/* The calls' common arguments: n == want, the library function bound, args[0] a handle, then
 * the two feature counts at args[counts] and args[counts + 1]. 0, or -1 with an exception. */
static int call_args(const char *fn, PyObject *const *args, Py_ssize_t n, Py_ssize_t want,
                     bool bound, Py_ssize_t counts, void **h, Py_ssize_t *in, Py_ssize_t *out) {
  if (n != want) {
    PyErr_Format(PyExc_TypeError, "%s: %zd arguments, got %zd", fn, want, n);
    return -1;
  }
  if (!bound) {
    PyErr_Format(PyExc_RuntimeError, "%s: bind() first", fn);
    return -1;
  }
  *h = PyLong_AsVoidPtr(args[0]);
  if (PyErr_Occurred()) return -1;
  return features(args[counts], in) < 0 || features(args[counts + 1], out) < 0 ? -1 : 0;
}

/* The rows of x when it is a plain float32 [rows, features] array with 0 < rows < 2^32, else 0. */
static unsigned rows_of(PyObject *x, Py_ssize_t features) {
  if (!plain_f32(x, 2)) return 0;
  npy_intp r = PyArray_DIM((PyArrayObject *)x, 0);
  return PyArray_DIM((PyArrayObject *)x, 1) == features && r > 0 &&
                 (unsigned long long)r <= 0xffffffffULL
             ? (unsigned)r
             : 0;
}

/* The call's result: y, or, for a failed status, NULL with the package's exception for it set
 * (raise_status runs on this thread, so it reads this thread's library message). */
static PyObject *result(int st, PyObject *y) {
  if (!st) return y;
  Py_DECREF(y);
  PyObject *r = PyObject_CallFunction(raise_status, "i", st);
  Py_XDECREF(r);
  if (!PyErr_Occurred()) PyErr_Format(PyExc_RuntimeError, "_speedups: status %d did not raise", st);
  return NULL;
}

/* y = sp_model_infer(m, x) for x, a plain float32 [rows, in] array (rows_of said so): a new
 * [rows, out] array, the GIL released for the whole C call; a failed status raised. */
static PyObject *infer_rows(void *m, PyObject *x, unsigned rows, Py_ssize_t out) {
  npy_intp dims[2] = {rows, out};
  PyObject *y = PyArray_SimpleNew(2, dims, NPY_FLOAT32); /* refuses a size that overflows */
  if (!y) return NULL;
  PyThreadState *ts = gil_release();
  int st =
      model_infer_p(m, PyArray_DATA((PyArrayObject *)x), PyArray_DATA((PyArrayObject *)y), rows);
  gil_take(ts);
  return result(st, y);
}

/* model_call(model, x, in_features, out_features) -> y or None: sp_model_infer with the GIL
 * released, y a new float32 [batch, out_features] array, when x is a plain float32 array (see
 * plain_f32) of shape [batch, in_features] with 0 < batch < 2^32; None for any other x, which
 * the package then converts or refuses. A failed status raises the package's exception. */
static PyObject *model_call(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  void *m;
  Py_ssize_t in, out;
  if (call_args("model_call", args, n, 4, model_infer_p, 2, &m, &in, &out) < 0) return NULL;
  unsigned rows = rows_of(args[1], in);
  if (!rows) Py_RETURN_NONE;
  return infer_rows(m, args[1], rows, out);
}

/* batcher_call(batcher, row, in_features, out_features) -> out or None: sp_batcher_infer with
 * the GIL released, out a new float32 [out_features] array, when row is a plain float32 array
 * of shape [in_features] or [1, in_features]; None for any other row. */
static PyObject *batcher_call(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  void *b;
  Py_ssize_t in, out;
  if (call_args("batcher_call", args, n, 4, batcher_infer_p, 2, &b, &in, &out) < 0) return NULL;
  PyArrayObject *row = (PyArrayObject *)args[1];
  if (!(plain_f32(args[1], 1) && PyArray_DIM(row, 0) == in) && rows_of(args[1], in) != 1)
    Py_RETURN_NONE;
  npy_intp dims[1] = {out};
  PyObject *y = PyArray_SimpleNew(1, dims, NPY_FLOAT32);
  if (!y) return NULL;
  PyThreadState *ts = gil_release();
  int st = batcher_infer_p(b, PyArray_DATA(row), PyArray_DATA((PyArrayObject *)y));
  gil_take(ts);
  return result(st, y);
}

/* time_model_calls(model, x, y, in_features, out_features, calls[, per_call]) -> seconds:
 * sp_model_infer on x [batch, in] into y [batch, out] (plain float32 arrays, y writable) `calls`
 * times in a row, for bench/python_threads.py's in-process C baseline (the C side of the
 * binding's overhead, on the same thread, device and stream as model(x)). The feature counts
 * must be the model's, as for model_call (the library takes no sizes). per_call (default 0)
 * adds to each call what model_call does around it, so the bench can split the overhead: 1 gives
 * up and takes back the GIL (through the gate) around every call instead of once around the
 * loop; 2 also makes a new output array for every call (with the GIL, then released) instead of
 * writing y. */
static PyObject *time_model_calls(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  void *m;
  Py_ssize_t in, out, per_call = 0;
  if (n == 7) {
    per_call = PyLong_AsSsize_t(args[6]);
    if (per_call == -1 && PyErr_Occurred()) return NULL;
    if (per_call < 0 || per_call > 2)
      return PyErr_Format(PyExc_ValueError, "time_model_calls: per_call %zd is not 0, 1 or 2",
                          per_call);
    n = 6;
  }
  if (call_args("time_model_calls", args, n, 6, model_infer_p, 3, &m, &in, &out) < 0) return NULL;
  Py_ssize_t calls = PyLong_AsSsize_t(args[5]);
  if (calls == -1 && PyErr_Occurred()) return NULL;
  unsigned rows = rows_of(args[1], in);
  PyArrayObject *x = (PyArrayObject *)args[1], *y = (PyArrayObject *)args[2];
  if (!rows || rows_of(args[2], out) != rows || !PyArray_ISWRITEABLE(y) || calls <= 0)
    return PyErr_Format(PyExc_ValueError,
                        "time_model_calls: x [batch, %zd] and a writable y [batch, %zd], plain "
                        "float32, and calls > 0",
                        in, out);
  npy_intp dims[2] = {rows, out};
  int st = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (per_call == 0) {
    PyThreadState *ts = gil_release(); /* as model_call: the gate's protocol kept */
    for (Py_ssize_t i = 0; i < calls && !st; i++)
      st = model_infer_p(m, PyArray_DATA(x), PyArray_DATA(y), rows);
    gil_take(ts);
  } else {
    for (Py_ssize_t i = 0; i < calls && !st; i++) {
      PyObject *yi = per_call == 2 ? PyArray_SimpleNew(2, dims, NPY_FLOAT32) : NULL;
      if (per_call == 2 && !yi) return NULL;
      PyThreadState *ts = gil_release();
      st = model_infer_p(m, PyArray_DATA(x), PyArray_DATA(yi ? (PyArrayObject *)yi : y), rows);
      gil_take(ts);
      Py_XDECREF(yi);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  PyObject *secs = PyFloat_FromDouble((double)(t1.tv_sec - t0.tv_sec) +
                                      (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
  return secs ? result(st, secs) : NULL;
}

/* gate_stats() -> (takeovers, give_ups): the gate's slow paths taken since import, for the tests;
 * (0, 0) where there is no gate. */
static PyObject *gate_stats(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  (void)args;
  if (n != 0) return PyErr_Format(PyExc_TypeError, "gate_stats: no arguments, got %zd", n);
#ifndef Py_GIL_DISABLED
  return Py_BuildValue("(KK)", (unsigned long long)atomic_load(&gate_takeovers),
                       (unsigned long long)atomic_load(&gate_give_ups));
#else
  return Py_BuildValue("(KK)", 0ull, 0ull);
#endif
}

/* The one truth-value argument of a switch (set_gate, set_fast): 1 or 0, or -1 with an
 * exception. */
static int switch_arg(const char *fn, PyObject *const *args, Py_ssize_t n) {
  if (n != 1) {
    PyErr_Format(PyExc_TypeError, "%s: 1 argument, got %zd", fn, n);
    return -1;
  }
  return PyObject_IsTrue(args[0]);
}

/* set_gate(on): the gate on (True, the default) or off for the calls that follow; a claim held
 * when it goes off is still given up at its holder's next call. No-op without a GIL. */
static PyObject *set_gate(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  int on = switch_arg("set_gate", args, n);
  if (on < 0) return NULL;
#ifndef Py_GIL_DISABLED
  atomic_store(&gate_on, on != 0);
#endif
  Py_RETURN_NONE;
}

/* ---- ModelBase: the C half of streampool.Model ------------------------------------------------
 * model(x) as one vectorcall: for a plain float32 [batch, in] x it calls infer_rows directly,
 * so no Python frame runs between the caller and the library (CPython's call of a Python
 * __call__ cost about 0.4-0.55 us a call on the H200's CPU, bench/python_threads.py); any other
 * call (another x, keywords, a model not bound or closed, the fast path switched off) goes to
 * the instance's _call method, the package's general path. The package's Model subclasses it
 * and binds its handle and feature counts with _fast_bind; _fast_bind(0, 0, 0) unbinds (close).
 * Invariants: h is the model or NULL; in and out are its feature counts while h is set. The
 * fields are written by _fast_bind with the GIL held, and a call reads them with the GIL held
 * (a free-threaded build: the package's rule that no call runs on a model being closed). */
typedef struct model_base {
  PyObject ob_base; /* PyObject_HEAD */
  vectorcallfunc vectorcall;
  void *h;
  Py_ssize_t in, out;
} model_base;

static atomic_bool fast_on = true; /* set_fast(); off: every call takes the general path */

static PyObject *model_base_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                       PyObject *kwnames) {
  model_base *mb = (model_base *)self;
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  if (n == 1 && !kwnames && mb->h && model_infer_p &&
      atomic_load_explicit(&fast_on, memory_order_relaxed)) {
    unsigned rows = rows_of(args[0], mb->in);
    if (rows) return infer_rows(mb->h, args[0], rows, mb->out);
  }
  PyObject *general = PyObject_GetAttrString(self, "_call");
  if (!general) return NULL;
  PyObject *r = PyObject_Vectorcall(general, args, n, kwnames);
  Py_DECREF(general);
  return r;
}

static PyObject *model_base_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  (void)args;
  (void)kw;
  model_base *mb = (model_base *)type->tp_alloc(type, 0);
  if (mb) mb->vectorcall = model_base_vectorcall;
  return (PyObject *)mb;
}

/* _fast_bind(handle, in_features, out_features): handle 0 unbinds. */
static PyObject *model_base_bind(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  model_base *mb = (model_base *)self;
  if (n != 3) return PyErr_Format(PyExc_TypeError, "_fast_bind: 3 arguments, got %zd", n);
  void *h = PyLong_AsVoidPtr(args[0]);
  if (!h && PyErr_Occurred()) return NULL;
  Py_ssize_t in = 0, out = 0;
  if (h && (features(args[1], &in) < 0 || features(args[2], &out) < 0)) return NULL;
  mb->h = NULL; /* bound again only once the counts are in place */
  mb->in = in;
  mb->out = out;
  mb->h = h;
  Py_RETURN_NONE;
}

static PyMethodDef model_base_methods[] = {
    {"_fast_bind", (PyCFunction)(void (*)(void))model_base_bind, METH_FASTCALL,
     "_fast_bind(handle, in_features, out_features): what model(x) calls; handle 0 unbinds."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject model_base_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streampool._speedups.ModelBase",
    .tp_basicsize = sizeof(model_base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The C half of streampool.Model: model(x) as one vectorcall (see _speedups.c).",
    .tp_new = model_base_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(model_base, vectorcall),
    .tp_methods = model_base_methods,
};

/* set_fast(on): ModelBase's direct path on (True, the default) or off (every model(x) goes to
 * the package's general path: the tests and the bench compare the paths with it). */
static PyObject *set_fast(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  int on = switch_arg("set_fast", args, n);
  if (on < 0) return NULL;
  atomic_store(&fast_on, on != 0);
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(model_infer_address, batcher_infer_address, raise_status): what the calls run."},
    {"model_call", (PyCFunction)(void (*)(void))model_call, METH_FASTCALL,
     "model_call(model, x, in_features, out_features) -> y, or None for an x it does not take."},
    {"batcher_call", (PyCFunction)(void (*)(void))batcher_call, METH_FASTCALL,
     "batcher_call(batcher, row, in_features, out_features) -> out, or None for such a row."},
    {"time_model_calls", (PyCFunction)(void (*)(void))time_model_calls, METH_FASTCALL,
     "time_model_calls(model, x, y, in, out, calls[, per_call]) -> seconds for that many calls "
     "from C (per_call 1: the GIL given up per call; 2: also a new output array per call)."},
    {"set_gate", (PyCFunction)(void (*)(void))set_gate, METH_FASTCALL,
     "set_gate(on): the GIL hand-over gate on or off for the calls that follow."},
    {"set_fast", (PyCFunction)(void (*)(void))set_fast, METH_FASTCALL,
     "set_fast(on): ModelBase's direct model(x) path on or off (off: the general path)."},
    {"gate_stats", (PyCFunction)(void (*)(void))gate_stats, METH_FASTCALL,
     "gate_stats() -> (takeovers, give_ups) of the GIL hand-over gate since import (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_speedups",
    "streampool's per-request calls as one C call each (model(x), batcher(row)).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
  /* NumPy's C API: without it the import fails with NumPy's error and the package uses ctypes
   * (import_array() would also print a traceback on every import). */
  if (_import_array() < 0) return NULL;
  if (PyType_Ready(&model_base_type) < 0) return NULL;
  PyObject *m = PyModule_Create(&module);
  if (!m) return NULL;
  Py_INCREF(&model_base_type);
  if (PyModule_AddObject(m, "ModelBase", (PyObject *)&model_base_type) < 0) {
    Py_DECREF(&model_base_type);
    Py_DECREF(m);
    return NULL;
  }
#ifdef Py_GIL_DISABLED
  PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED); /* no state but the bound pointers */
#endif
  return m;
}
