/* The per-record inner loop of tfface's shard writer, in C.
 *
 * `fill(out, source, image_at, source_at, lengths, example_start,
 * example_end, first, stop)` copies image j from `source[source_at[j]:]`
 * into `out[image_at[j]:]` and stores the masked CRC-32C of
 * `out[example_start[j]:example_end[j]]` (little endian) at
 * `out[example_end[j]:]`, for j in [first, stop). Python does the same with
 * a slice assignment and a google-crc32c call per record (about a
 * microsecond of interpreter per record); everything else about a shard
 * stays in Python and numpy (tfface/data/tfrecord/example_batch.py).
 *
 * CRC-32C uses SSE4.2's crc32 instruction where the CPU has it, three
 * records at a time (one instruction per cycle, against one per three when
 * a record is checksummed alone); elsewhere `HARDWARE` is False and the
 * caller keeps its Python path. Every range is checked against its buffer
 * before anything is written: a bad index is a ValueError, not a write out
 * of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FRAMER_X86 1
#include <nmmintrin.h>
#endif

#define MASK_DELTA 0xA282EAD8u

#ifdef FRAMER_X86
__attribute__((target("sse4.2"))) static uint32_t crc_one(uint32_t crc, const uint8_t *p,
                                                          size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  crc = (uint32_t)c;
  for (; n; --n, ++p) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

/* CRC-32C (raw: no inversion) of three messages, interleaved while all
 * three have bytes left: the crc32 instruction has a latency of three
 * cycles and a throughput of one. */
__attribute__((target("sse4.2"))) static void crc_three(const uint8_t *const p[3],
                                                        const size_t n[3], uint32_t c[3]) {
  size_t common = n[0] < n[1] ? n[0] : n[1];
  if (n[2] < common) common = n[2];
  common &= ~(size_t)7;
  uint64_t a = c[0], b = c[1], d = c[2];
  for (size_t i = 0; i < common; i += 8) {
    uint64_t x, y, z;
    memcpy(&x, p[0] + i, 8);
    memcpy(&y, p[1] + i, 8);
    memcpy(&z, p[2] + i, 8);
    a = _mm_crc32_u64(a, x);
    b = _mm_crc32_u64(b, y);
    d = _mm_crc32_u64(d, z);
  }
  c[0] = crc_one((uint32_t)a, p[0] + common, n[0] - common);
  c[1] = crc_one((uint32_t)b, p[1] + common, n[1] - common);
  c[2] = crc_one((uint32_t)d, p[2] + common, n[2] - common);
}
#endif

static int have_hardware;

static int hardware(void) {
#ifdef FRAMER_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
#else
  return 0;
#endif
}

static uint32_t masked(uint32_t crc) {
  crc = ~crc;  /* CRC-32C's final inversion */
  return ((crc >> 15) | (crc << 17)) + MASK_DELTA;
}

static void store_le32(uint8_t *at, uint32_t v) {
  at[0] = (uint8_t)v;
  at[1] = (uint8_t)(v >> 8);
  at[2] = (uint8_t)(v >> 16);
  at[3] = (uint8_t)(v >> 24);
}

/* A 1-d buffer of int64 (numpy int64 or "q"/"l" memoryviews). */
static int get_int64s(PyObject *obj, Py_buffer *view, const char *name) {
  if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
  const char *f = view->format ? view->format : "B";
  if (*f == '<' || *f == '=' || *f == '@') ++f;
  if (view->itemsize != 8 || (strcmp(f, "q") && strcmp(f, "l"))) {
    PyErr_Format(PyExc_TypeError, "%s: expected int64 values, got format '%s'", name,
                 view->format ? view->format : "B");
    PyBuffer_Release(view);
    return -1;
  }
  return 0;
}

static PyObject *fill(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *objs[7];
  Py_ssize_t first, stop;
  if (!PyArg_ParseTuple(args, "OOOOOOOnn:fill", &objs[0], &objs[1], &objs[2], &objs[3],
                        &objs[4], &objs[5], &objs[6], &first, &stop))
    return NULL;
  if (!have_hardware) {
    PyErr_SetString(PyExc_RuntimeError, "this CPU has no CRC-32C instruction (HARDWARE is "
                    "False): use the Python path");
    return NULL;
  }
  static const char *names[7] = {"out", "source", "image_at", "source_at", "lengths",
                                 "example_start", "example_end"};
  Py_buffer views[7];
  int got = 0;
  PyObject *result = NULL;
  if (PyObject_GetBuffer(objs[0], &views[0], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
    goto done;
  got = 1;
  if (PyObject_GetBuffer(objs[1], &views[1], PyBUF_C_CONTIGUOUS) < 0) goto done;
  got = 2;
  for (; got < 7; ++got)
    if (get_int64s(objs[got], &views[got], names[got]) < 0) goto done;
  {
    uint8_t *out = views[0].buf;
    const uint8_t *source = views[1].buf;
    const int64_t size = views[0].len, source_size = views[1].len;
    const int64_t *image_at = views[2].buf, *source_at = views[3].buf;
    const int64_t *lengths = views[4].buf;
    const int64_t *start = views[5].buf, *end = views[6].buf;
    Py_ssize_t count = views[2].len / 8;
    for (int i = 3; i < 7; ++i)
      if (views[i].len / 8 != count) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd values, image_at %zd", names[i],
                     views[i].len / 8, count);
        goto done;
      }
    if (first < 0 || stop > count || first > stop) {
      PyErr_Format(PyExc_ValueError, "records [%zd, %zd) are not within [0, %zd)", first,
                   stop, count);
      goto done;
    }
    for (Py_ssize_t j = first; j < stop; ++j) {
      int64_t n = lengths[j];
      if (n < 0 || image_at[j] < 0 || image_at[j] > size - n || source_at[j] < 0 ||
          source_at[j] > source_size - n || start[j] < 0 || start[j] > image_at[j] ||
          end[j] < image_at[j] + n || end[j] > size - 4) {
        PyErr_Format(PyExc_ValueError,
                     "record %zd: image [%lld, +%lld) from source byte %lld, Example "
                     "[%lld, %lld) do not fit buffers of %lld and %lld bytes",
                     j, (long long)image_at[j], (long long)n, (long long)source_at[j],
                     (long long)start[j], (long long)end[j], (long long)size,
                     (long long)source_size);
        goto done;
      }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = first; j < stop; ++j)
      memcpy(out + image_at[j], source + source_at[j], (size_t)lengths[j]);
#ifdef FRAMER_X86
    Py_ssize_t j = first;
    for (; j + 3 <= stop; j += 3) {
      const uint8_t *p[3] = {out + start[j], out + start[j + 1], out + start[j + 2]};
      const size_t n[3] = {(size_t)(end[j] - start[j]), (size_t)(end[j + 1] - start[j + 1]),
                           (size_t)(end[j + 2] - start[j + 2])};
      uint32_t c[3] = {~0u, ~0u, ~0u};
      crc_three(p, n, c);
      for (int k = 0; k < 3; ++k) store_le32(out + end[j + k], masked(c[k]));
    }
    for (; j < stop; ++j)
      store_le32(out + end[j],
                 masked(crc_one(~0u, out + start[j], (size_t)(end[j] - start[j]))));
#endif
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
  }
done:
  for (int i = 0; i < got; ++i) PyBuffer_Release(&views[i]);
  return result;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS,
     "fill(out, source, image_at, source_at, lengths, example_start, example_end, first, "
     "stop): copies images into framed records and seals them with their masked CRC-32C."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_framer",
                                    "tfface's shard framing loop in C (see _framer.c).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__framer(void) {
  PyObject *m = PyModule_Create(&module);
  have_hardware = hardware();
  if (m && PyModule_AddObject(m, "HARDWARE", PyBool_FromLong(have_hardware)) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
