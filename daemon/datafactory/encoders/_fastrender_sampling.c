/*
 * Sampling for the packs (datafactory.engine.sampling): Vose's alias table built, and draws
 * from it, with the same float operations as the numpy code, so the same table and the same
 * draws with or without a compiler.
 */
#include "_fastrender.h"

/* alias_fill(scaled f64[k], prob f64[k] (ones), alias i32[k] (arange)): Vose's alias table,
   the same steps as the pure loop in datafactory.engine.sampling (stacks popped from the end,
   the same float operations in the same order), so both give the same table. */
PyObject *fr_alias_fill(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer scaled, prob, alias;
    if (!PyArg_ParseTuple(args, "y*w*w*", &scaled, &prob, &alias)) return NULL;
    Py_ssize_t k = scaled.len / 8;
    if (prob.len / 8 != k || alias.len / 4 != k) {
        PyBuffer_Release(&scaled); PyBuffer_Release(&prob); PyBuffer_Release(&alias);
        PyErr_SetString(PyExc_ValueError, "alias_fill: lengths differ");
        return NULL;
    }
    double *s = malloc((size_t)(k ? k : 1) * sizeof(double));
    int32_t *small = malloc((size_t)(k ? k : 1) * sizeof(int32_t));
    int32_t *large = malloc((size_t)(k ? k : 1) * sizeof(int32_t));
    if (!s || !small || !large) {
        free(s); free(small); free(large);
        PyBuffer_Release(&scaled); PyBuffer_Release(&prob); PyBuffer_Release(&alias);
        return PyErr_NoMemory();
    }
    const double *in = scaled.buf;
    double *pr = prob.buf;
    int32_t *al = alias.buf;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t ns = 0, nl = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        s[i] = in[i];
        if (in[i] < 1.0) small[ns++] = (int32_t)i; else large[nl++] = (int32_t)i;
    }
    while (ns && nl) {
        int32_t lo = small[--ns], hi = large[--nl];
        pr[lo] = s[lo];
        al[lo] = hi;
        s[hi] = (s[hi] + s[lo]) - 1.0;
        if (s[hi] < 1.0) small[ns++] = hi; else large[nl++] = hi;
    }
    Py_END_ALLOW_THREADS
    free(s); free(small); free(large);
    PyBuffer_Release(&scaled); PyBuffer_Release(&prob); PyBuffer_Release(&alias);
    Py_RETURN_NONE;
}

/* alias_pick(u f64[n], prob f64[k], alias i32[k], out i32[n]): out[i] = the entry uniform
   u[i] draws, as AliasTable.sample in numpy: x = u * k; j = min(int32(x), k - 1);
   x - j < prob[j] ? j : alias[j]. */
PyObject *fr_alias_pick(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer u, prob, alias, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &u, &prob, &alias, &out)) return NULL;
    Py_ssize_t n = u.len / 8, k = prob.len / 8;
    if (k < 1 || alias.len / 4 != k || out.len / 4 != n || u.len % 8 || prob.len % 8) {
        PyBuffer_Release(&u); PyBuffer_Release(&prob); PyBuffer_Release(&alias); PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "alias_pick: lengths differ");
        return NULL;
    }
    const double *uu = u.buf, *pr = prob.buf;
    const int32_t *al = alias.buf;
    int32_t *o = out.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    const double kd = (double)k;
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = uu[i] * kd;
        if (!(x >= 0.0 && x < 2147483647.0)) { bad = 1; break; } /* not a uniform in [0, 1) */
        int32_t j = (int32_t)x;
        if (j > k - 1) j = (int32_t)(k - 1);
        o[i] = (x - (double)j) < pr[j] ? j : al[j];
        if (o[i] < 0 || o[i] >= k) { bad = 1; break; }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&u); PyBuffer_Release(&prob); PyBuffer_Release(&alias); PyBuffer_Release(&out);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "alias_pick: a uniform outside [0, 1) or an alias out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}
