/*
 * The chaos chain's vector parts (datafactory.chaos): which events a step hits and each
 * hit's draws (splitmix64 of seq ^ salt, the same values as the numpy functions).
 */
#include "_fastrender.h"

/* splitmix64(seq ^ salt) per seq: datafactory.chaos.base.Step.hashes in one call. */
PyObject *fr_mix(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer seq;
    unsigned long long salt;
    if (!PyArg_ParseTuple(args, "y*K", &seq, &salt)) return NULL;
    if (seq.len % 8) {
        PyBuffer_Release(&seq);
        PyErr_SetString(PyExc_ValueError, "mix: seq must be int64 bytes");
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, seq.len);
    if (res) {
        const int64_t *s = seq.buf;
        uint64_t *out = (uint64_t *)PyBytes_AS_STRING(res);
        for (Py_ssize_t i = 0; i < seq.len / 8; i++) out[i] = splitmix64((uint64_t)s[i] ^ (uint64_t)salt);
    }
    PyBuffer_Release(&seq);
    return res;
}

/* Rows whose splitmix64(seq ^ salt) >> 11 is below threshold (rate * 2**53): the same test
 * as datafactory.chaos.base.Step.uniform(seq) < rate, without its temporaries. */
PyObject *fr_hits(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer seq;
    unsigned long long salt;
    double threshold;
    if (!PyArg_ParseTuple(args, "y*Kd", &seq, &salt, &threshold)) return NULL;
    if (seq.len % 8) {
        PyBuffer_Release(&seq);
        PyErr_SetString(PyExc_ValueError, "hits: seq must be int64 bytes");
        return NULL;
    }
    Py_ssize_t n = seq.len / 8;
    const int64_t *s = seq.buf;
    int64_t *out = malloc((n ? n : 1) * sizeof(int64_t));
    if (!out) { PyBuffer_Release(&seq); return PyErr_NoMemory(); }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t h = splitmix64((uint64_t)s[i] ^ (uint64_t)salt) >> 11;
        if ((double)h < threshold) out[m++] = i;
    }
    PyBuffer_Release(&seq);
    PyObject *res = PyBytes_FromStringAndSize((const char *)out, m * 8);
    free(out);
    return res;
}

