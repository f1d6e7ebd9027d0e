/* streampool._speedups: the package's two per-request calls, model(x) and batcher(row), without
 * ctypes. Through ctypes a call spent about 3.8 us in Python under the GIL (docs/PERFORMANCE.md;
 * converting each array to a pointer argument was about 1 us of it); here the arrays are taken
 * through the buffer protocol and the call is one C function call with the GIL released.
 *
 * Owns two function pointers, set once by bind() from the addresses of the ctypes library's
 * sp_model_infer and sp_batcher_infer, so this module links against nothing but Python and the
 * package loads libstreampool once, through ctypes, whether this module is there or not.
 * Optional: python/streampool/__init__.py uses it when it imports (CPython with its headers at
 * build time) and runs the ctypes path otherwise; both compute the same thing. The status is
 * returned as an int for the package to raise, so the library's thread-local message is read on
 * the calling thread as on the ctypes path. No locks: the pointers are written before any call
 * (at import, under the import lock) and never changed after (bind() refuses other addresses).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

typedef int (*model_infer_fn)(void *model, const void *x, void *y, unsigned batch);
typedef int (*batcher_infer_fn)(void *batcher, const void *row, void *out);

static model_infer_fn model_infer_p;
static batcher_infer_fn batcher_infer_p;

/* Whether b holds float32 items (a struct-module format of one 'f', any byte-order mark). */
static int is_f32(const Py_buffer *b) {
  const char *f = b->format ? b->format : "B";
  if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
  return b->itemsize == 4 && f[0] == 'f' && f[1] == 0;
}

/* Takes x (read) and y (written) as C-contiguous float32 buffers of exactly x_bytes and y_bytes. */
static int take_buffers(PyObject *x, PyObject *y, Py_ssize_t x_bytes, Py_ssize_t y_bytes,
                        Py_buffer *bx, Py_buffer *by) {
  if (PyObject_GetBuffer(x, bx, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
  if (!is_f32(bx) || bx->len != x_bytes) {
    PyErr_Format(PyExc_ValueError,
                 "_speedups: input of %zd bytes (format %s), expected %zd of float32", bx->len,
                 bx->format ? bx->format : "B", x_bytes);
    PyBuffer_Release(bx);
    return -1;
  }
  if (PyObject_GetBuffer(y, by, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
    PyBuffer_Release(bx);
    return -1;
  }
  if (!is_f32(by) || by->len != y_bytes) {
    PyErr_Format(PyExc_ValueError,
                 "_speedups: output of %zd bytes (format %s), expected %zd of float32", by->len,
                 by->format ? by->format : "B", y_bytes);
    PyBuffer_Release(by);
    PyBuffer_Release(bx);
    return -1;
  }
  return 0;
}

/* args[0], args[1] as in_features and out_features: positive Ssize_t counts of floats. */
static int sizes(PyObject *const *args, Py_ssize_t *in, Py_ssize_t *out) {
  *in = PyLong_AsSsize_t(args[0]);
  if (*in == -1 && PyErr_Occurred()) return -1;
  *out = PyLong_AsSsize_t(args[1]);
  if (*out == -1 && PyErr_Occurred()) return -1;
  if (*in <= 0 || *out <= 0 || *in > PY_SSIZE_T_MAX / 4 || *out > PY_SSIZE_T_MAX / 4) {
    PyErr_Format(PyExc_ValueError, "_speedups: bad sizes %zd, %zd", *in, *out);
    return -1;
  }
  return 0;
}

/* bind(model_infer_address, batcher_infer_address) */
static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 2) return PyErr_Format(PyExc_TypeError, "bind: 2 arguments, got %zd", n);
  unsigned long long m = PyLong_AsUnsignedLongLong(args[0]);
  if (PyErr_Occurred()) return NULL;
  unsigned long long b = PyLong_AsUnsignedLongLong(args[1]);
  if (PyErr_Occurred()) return NULL;
  if (!m || !b) return PyErr_Format(PyExc_ValueError, "bind: a null function address");
  if (model_infer_p && ((uintptr_t)model_infer_p != m || (uintptr_t)batcher_infer_p != b))
    return PyErr_Format(PyExc_RuntimeError, "bind: already bound to other functions");
  model_infer_p = (model_infer_fn)(uintptr_t)m; /* an address from ctypes: a function's */
  batcher_infer_p = (batcher_infer_fn)(uintptr_t)b;
  Py_RETURN_NONE;
}

/* model_infer(model, x, y, batch, in_features, out_features) -> sp_status: sp_model_infer on
 * float32 x [batch, in_features] and y [batch, out_features] with the GIL released. */
static PyObject *model_infer(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 6) return PyErr_Format(PyExc_TypeError, "model_infer: 6 arguments, got %zd", n);
  if (!model_infer_p) return PyErr_Format(PyExc_RuntimeError, "model_infer: bind() first");
  void *m = PyLong_AsVoidPtr(args[0]);
  if (PyErr_Occurred()) return NULL;
  unsigned long batch = PyLong_AsUnsignedLong(args[3]);
  if (PyErr_Occurred()) return NULL;
  Py_ssize_t in, out;
  if (sizes(args + 4, &in, &out) < 0) return NULL;
  if (batch == 0 || batch > 0xffffffffUL ||
      (size_t)batch > (size_t)PY_SSIZE_T_MAX / 4 / (size_t)(in > out ? in : out))
    return PyErr_Format(PyExc_ValueError, "model_infer: bad batch %lu for sizes %zd, %zd", batch,
                        in, out);
  Py_buffer bx, by;
  if (take_buffers(args[1], args[2], (Py_ssize_t)batch * in * 4, (Py_ssize_t)batch * out * 4, &bx,
                   &by) < 0)
    return NULL;
  PyThreadState *ts = PyEval_SaveThread(); /* the GIL, released for the whole C call */
  int st = model_infer_p(m, bx.buf, by.buf, (unsigned)batch);
  PyEval_RestoreThread(ts);
  PyBuffer_Release(&by);
  PyBuffer_Release(&bx);
  return PyLong_FromLong(st);
}

/* batcher_infer(batcher, row, out, in_features, out_features) -> sp_status: sp_batcher_infer on
 * float32 row [in_features] and out [out_features] with the GIL released. */
static PyObject *batcher_infer(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 5) return PyErr_Format(PyExc_TypeError, "batcher_infer: 5 arguments, got %zd", n);
  if (!batcher_infer_p) return PyErr_Format(PyExc_RuntimeError, "batcher_infer: bind() first");
  void *b = PyLong_AsVoidPtr(args[0]);
  if (PyErr_Occurred()) return NULL;
  Py_ssize_t in, out;
  if (sizes(args + 3, &in, &out) < 0) return NULL;
  Py_buffer bx, by;
  if (take_buffers(args[1], args[2], in * 4, out * 4, &bx, &by) < 0) return NULL;
  PyThreadState *ts = PyEval_SaveThread();
  int st = batcher_infer_p(b, bx.buf, by.buf);
  PyEval_RestoreThread(ts);
  PyBuffer_Release(&by);
  PyBuffer_Release(&bx);
  return PyLong_FromLong(st);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(model_infer_address, batcher_infer_address): the C functions the calls below run."},
    {"model_infer", (PyCFunction)(void (*)(void))model_infer, METH_FASTCALL,
     "model_infer(model, x, y, batch, in_features, out_features) -> status, GIL released."},
    {"batcher_infer", (PyCFunction)(void (*)(void))batcher_infer, METH_FASTCALL,
     "batcher_infer(batcher, row, out, in_features, out_features) -> status, GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_speedups",
    "streampool's per-request calls without ctypes (model(x), batcher(row)).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
  PyObject *m = PyModule_Create(&module);
#ifdef Py_GIL_DISABLED
  if (m) PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED); /* no state but the bound pointers */
#endif
  return m;
}
