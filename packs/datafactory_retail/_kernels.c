/*
 * datafactory_retail._kernels: the retail pack's per-block loops in C (each with its numpy
 * version beside its caller, which gives the same results where this is not built).
 *
 * take: sales taken from the shelves in one pass (Inventory.take). Lines take their quantity from their store x SKU cell in line order, never more than the
 * cell held when the block began minus what earlier lines of the block asked of it (a lost
 * sale is the rest), exactly as the numpy code in inventory.py computes it; then the cells'
 * ledgers move by what was sold (and asked). The numpy code sorts the lines by cell to group
 * them; here a small hash table of the block's cells does it in one pass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

/* take(cell i64[n], qty i64[n], actual i64[m], book i64[m], sold_today i64[m],
        demand_today i64[m], sold i64[n] (out)) -> units lost */
static PyObject *take(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer cell, qty, actual, book, sold_today, demand_today, sold;
    if (!PyArg_ParseTuple(args, "y*y*w*w*w*w*w*", &cell, &qty, &actual, &book, &sold_today,
                          &demand_today, &sold))
        return NULL;
    Py_buffer *all[] = {&cell, &qty, &actual, &book, &sold_today, &demand_today, &sold};
    Py_ssize_t n = cell.len / 8, m = actual.len / 8;
    const char *err = NULL;
    int64_t *keys = NULL, *vals = NULL;
    long long lost = 0;
    if (qty.len != cell.len || sold.len != cell.len || book.len != actual.len ||
        sold_today.len != actual.len || demand_today.len != actual.len || cell.len % 8 ||
        actual.len % 8)
        err = "take: lengths differ";
    const int64_t *c = cell.buf, *q = qty.buf;
    for (Py_ssize_t i = 0; !err && i < n; i++)
        if (c[i] < 0 || c[i] >= m) err = "take: a cell out of range";
    size_t cap = 16;
    while (!err && cap < (size_t)n * 2) cap *= 2;
    if (!err) {
        keys = malloc(cap * sizeof(int64_t));
        vals = malloc(cap * sizeof(int64_t));
        if (!keys || !vals) err = "";
    }
    if (!err) {
        int64_t *a = actual.buf, *b = book.buf, *st = sold_today.buf, *dt = demand_today.buf;
        int64_t *s = sold.buf;
        Py_BEGIN_ALLOW_THREADS
        for (size_t j = 0; j < cap; j++) keys[j] = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            /* what earlier lines of this block asked of the cell */
            size_t h = (size_t)((uint64_t)c[i] * 0x9E3779B97F4A7C15ULL >> 20) & (cap - 1);
            while (keys[h] != -1 && keys[h] != c[i]) h = (h + 1) & (cap - 1);
            if (keys[h] == -1) { keys[h] = c[i]; vals[h] = 0; }
            int64_t x = a[c[i]] - vals[h];
            int64_t got = x < 0 ? 0 : x; /* np.clip(x, 0, q): min(max(x, 0), q) */
            if (got > q[i]) got = q[i];
            s[i] = got;
            vals[h] += q[i];
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            a[c[i]] -= s[i];
            b[c[i]] -= s[i];
            st[c[i]] += s[i];
            dt[c[i]] += q[i];
            lost += q[i] - s[i];
        }
        Py_END_ALLOW_THREADS
    }
    free(keys);
    free(vals);
    for (int i = 0; i < 7; i++) PyBuffer_Release(all[i]);
    if (err) {
        if (*err) PyErr_SetString(PyExc_ValueError, err);
        else PyErr_NoMemory();
        return NULL;
    }
    return PyLong_FromLongLong(lost);
}

/* scatter_max(target i64[m], idx i64[n], values i64[n]): target[idx[i]] = max(target[idx[i]],
   values[i]) (customers.py's _set_latest: a customer's latest pick or visit). */
static PyObject *scatter_max(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer target, idx, values;
    if (!PyArg_ParseTuple(args, "w*y*y*", &target, &idx, &values)) return NULL;
    Py_ssize_t m = target.len / 8, n = idx.len / 8;
    const char *err = NULL;
    const int64_t *ix = idx.buf, *v = values.buf;
    if (values.len != idx.len || idx.len % 8 || target.len % 8) err = "scatter_max: lengths differ";
    for (Py_ssize_t i = 0; !err && i < n; i++)
        if (ix[i] < 0 || ix[i] >= m) err = "scatter_max: an index out of range";
    if (!err) {
        int64_t *t = target.buf;
        for (Py_ssize_t i = 0; i < n; i++)
            if (v[i] > t[ix[i]]) t[ix[i]] = v[i];
    }
    PyBuffer_Release(&target);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&values);
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS,
     "take(cell, qty, actual, book, sold_today, demand_today, sold) -> units lost"},
    {"scatter_max", scatter_max, METH_VARARGS,
     "scatter_max(target, idx, values): target[idx] = max(target[idx], values), per row"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
