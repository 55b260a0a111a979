/*
 * datafactory.encoders._fastrender: the compiled fast path of the JSON and Avro encoders.
 *
 * Python compiles an event schema plus one RecordBlock into a small program of ops that point
 * at the block's numpy buffers; render() runs it over every row into one contiguous buffer and
 * returns (payload bytes, record offsets). The program is rebuilt per block (a few dozen
 * tuples); the per-row work happens here, without the GIL.
 *
 * Ops (tuples):
 *   (0, bytes)                               literal
 *   (1, int array)                           int/long (any signed width)
 *   (2, int64 array, scale)                  decimal in minor units
 *   (3, int64 array)                         timestamp-micros
 *   (4, int32 codes, int64 pool offsets, bytes pool data)   pre-rendered pool entry
 *   (5, S<w> array)                          fixed-width ASCII (NUL-padded)
 *   (6, bool array)                          boolean
 *   (7, float64 array)                       double
 *   (8, bool mask, [ops], null_index, value_index)   nullable ([null, X] union)
 *   (9, int32 list offsets, [ops])           array (ops index the flat child rows)
 *   (10, int64 seq array, base)              event id: UUIDv8 text from splitmix64(seq ^ base),
 *                                            as datafactory.engine.identity.event_ids
 * Ops of documents (a FHIR resource, an HL7 message: text whatever the format):
 *   (11, int array, width)                   integer, zero-padded to at least width digits
 *   (12, int64 array, style)                 time (epoch µs, UTC) as text: 0 YYYY-MM-DDTHH:MM:SS,
 *                                            1 YYYY-MM-DD, 2 YYYYMMDDHHMMSS, 3 YYYYMMDD
 *   (13, int32 offsets, [ops], separator)    child rows joined by separator (no brackets:
 *                                            0 or 1 child is an optional part)
 * Rows taken without copying the columns (a block the chaos chain chose rows of):
 *   (14, int64 rows, [ops])                  the ops run on row rows[r] of their arrays
 *   (15, 0)                                  mark: where the output is now (render(...,
 *                                            marks=True) returns them, in order, per row)
 * Formats: 0 = JSON text, 1 = Avro binary.
 */
#include "_fastrender.h"
#include <math.h>
#include <stdio.h>

enum { OP_LIT, OP_INT, OP_DEC, OP_TS, OP_POOL, OP_FIXED, OP_BOOL, OP_DOUBLE, OP_NULLABLE, OP_LIST,
       OP_UUID, OP_PADINT, OP_TIME, OP_JOIN, OP_ROWS, OP_MARK };
enum { FMT_JSON = 0, FMT_AVRO = 1 };

typedef struct Op {
    int code;
    const char *data;
    Py_ssize_t itemsize, len;
    const int64_t *pool_off;
    const char *pool_data;
    Py_ssize_t pool_n, pool_data_len;
    int scale;
    int null_index, value_index;
    const uint8_t *mask;
    const int32_t *offsets;
    const int64_t *rows;
    uint64_t base;
    struct Op *sub;
    Py_ssize_t nsub;
    const char *sep;
    Py_ssize_t seplen;
} Op;

typedef struct {
    Py_buffer *views;
    Py_ssize_t nviews, capviews;
    Op **allocs;
    Py_ssize_t nallocs, capallocs;
} Ctx;


static Py_buffer *ctx_view(Ctx *c, PyObject *obj, int writable_ok) {
    (void)writable_ok;
    if (c->nviews == c->capviews) {
        Py_ssize_t cap = c->capviews ? c->capviews * 2 : 32;
        Py_buffer *v = realloc(c->views, cap * sizeof(Py_buffer));
        if (!v) { PyErr_NoMemory(); return NULL; }
        c->views = v;
        c->capviews = cap;
    }
    Py_buffer *view = &c->views[c->nviews];
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    c->nviews++;
    return view;
}

static void ctx_free(Ctx *c) {
    for (Py_ssize_t i = 0; i < c->nviews; i++) PyBuffer_Release(&c->views[i]);
    free(c->views);
    for (Py_ssize_t i = 0; i < c->nallocs; i++) free(c->allocs[i]);
    free(c->allocs);
}

static Op *ctx_ops(Ctx *c, Py_ssize_t n) {
    if (c->nallocs == c->capallocs) {
        Py_ssize_t cap = c->capallocs ? c->capallocs * 2 : 16;
        Op **a = realloc(c->allocs, cap * sizeof(Op *));
        if (!a) { PyErr_NoMemory(); return NULL; }
        c->allocs = a;
        c->capallocs = cap;
    }
    Op *ops = calloc(n ? n : 1, sizeof(Op));
    if (!ops) { PyErr_NoMemory(); return NULL; }
    c->allocs[c->nallocs++] = ops;
    return ops;
}

static int parse_ops(Ctx *c, PyObject *list, Op **out, Py_ssize_t *nout);

static int set_array(Ctx *c, Op *op, PyObject *obj) {
    Py_buffer *v = ctx_view(c, obj, 0);
    if (!v) return -1;
    op->data = v->buf;
    op->itemsize = v->itemsize;
    op->len = v->itemsize ? v->len / v->itemsize : 0;
    return 0;
}

static int parse_op(Ctx *c, PyObject *t, Op *op) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2) {
        PyErr_SetString(PyExc_TypeError, "op must be a tuple (code, ...)");
        return -1;
    }
    op->code = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    PyObject *a1 = PyTuple_GET_ITEM(t, 1);
    Py_ssize_t size = PyTuple_GET_SIZE(t);
    switch (op->code) {
    case OP_LIT: {
        Py_buffer *v = ctx_view(c, a1, 0);
        if (!v) return -1;
        op->data = v->buf;
        op->len = v->len;
        return 0;
    }
    case OP_INT: case OP_TS: case OP_FIXED: case OP_BOOL: case OP_DOUBLE:
        return set_array(c, op, a1);
    case OP_UUID:
        if (size < 3) break;
        op->base = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(t, 2));
        if (PyErr_Occurred()) return -1;
        return set_array(c, op, a1);
    case OP_DEC: case OP_PADINT: case OP_TIME:
        if (size < 3) break;
        op->scale = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 2));
        if (op->scale < 0 || op->scale > 18 || (op->code == OP_TIME && op->scale > 3)) break;
        return set_array(c, op, a1);
    case OP_POOL: {
        if (size < 4) break;
        if (set_array(c, op, a1) < 0) return -1;
        Py_buffer *po = ctx_view(c, PyTuple_GET_ITEM(t, 2), 0);
        if (!po) return -1;
        Py_buffer *pd = ctx_view(c, PyTuple_GET_ITEM(t, 3), 0);
        if (!pd) return -1;
        op->pool_off = po->buf;
        op->pool_n = po->len / 8 - 1;
        op->pool_data = pd->buf;
        op->pool_data_len = pd->len;
        return 0;
    }
    case OP_NULLABLE: {
        if (size < 5) break;
        Py_buffer *m = ctx_view(c, a1, 0);
        if (!m) return -1;
        op->mask = m->buf;
        op->len = m->len;
        op->null_index = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 3));
        op->value_index = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 4));
        return parse_ops(c, PyTuple_GET_ITEM(t, 2), &op->sub, &op->nsub);
    }
    case OP_LIST: {
        if (size < 3) break;
        Py_buffer *o = ctx_view(c, a1, 0);
        if (!o) return -1;
        op->offsets = o->buf;
        op->len = o->len / 4 - 1;
        return parse_ops(c, PyTuple_GET_ITEM(t, 2), &op->sub, &op->nsub);
    }
    case OP_MARK:
        return 0;
    case OP_ROWS: {
        if (size < 3) break;
        Py_buffer *r = ctx_view(c, a1, 0);
        if (!r) return -1;
        if (r->itemsize != 8) break;
        op->rows = r->buf;
        op->len = r->len / 8;
        return parse_ops(c, PyTuple_GET_ITEM(t, 2), &op->sub, &op->nsub);
    }
    case OP_JOIN: {
        if (size < 4) break;
        Py_buffer *o = ctx_view(c, a1, 0);
        if (!o) return -1;
        op->offsets = o->buf;
        op->len = o->len / 4 - 1;
        Py_buffer *sep = ctx_view(c, PyTuple_GET_ITEM(t, 3), 0);
        if (!sep) return -1;
        op->sep = sep->buf;
        op->seplen = sep->len;
        return parse_ops(c, PyTuple_GET_ITEM(t, 2), &op->sub, &op->nsub);
    }
    }
    PyErr_Format(PyExc_ValueError, "bad op (code %d, %zd fields)", op->code, size);
    return -1;
}

static int parse_ops(Ctx *c, PyObject *list, Op **out, Py_ssize_t *nout) {
    PyObject *seq = PySequence_Fast(list, "ops must be a list");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Op *ops = ctx_ops(c, n);
    if (!ops) { Py_DECREF(seq); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_op(c, PySequence_Fast_GET_ITEM(seq, i), &ops[i]) < 0) { Py_DECREF(seq); return -1; }
    }
    Py_DECREF(seq);
    *out = ops;
    *nout = n;
    return 0;
}

/* ---- value writers ------------------------------------------------------------------- */

static int64_t get_int(const Op *op, Py_ssize_t i) {
    const char *p = op->data + i * op->itemsize;
    switch (op->itemsize) {
    case 1: return *(const int8_t *)p;
    case 2: return *(const int16_t *)p;
    case 4: return *(const int32_t *)p;
    default: return *(const int64_t *)p;
    }
}

static int put_u64(Buf *b, uint64_t u) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    ENSURE(b, (size_t)n);
    while (n) b->p[b->len++] = tmp[--n];
    return 0;
}

static int put_i64(Buf *b, int64_t v) {
    if (v < 0) {
        ENSURE(b, 1);
        b->p[b->len++] = '-';
        return put_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(b, (uint64_t)v);
}

static const uint64_t POW10[19] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL};

static int json_decimal(Buf *b, int64_t v, int scale) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0) { ENSURE(b, 1); b->p[b->len++] = '-'; }
    if (scale <= 0) return put_u64(b, u);
    uint64_t p = POW10[scale > 18 ? 18 : scale];
    if (put_u64(b, u / p) < 0) return -1;
    uint64_t frac = u % p;
    ENSURE(b, (size_t)scale + 1);
    b->p[b->len++] = '.';
    for (int k = scale - 1; k >= 0; k--) { b->p[b->len + k] = (char)('0' + frac % 10); frac /= 10; }
    b->len += scale;
    return 0;
}

/* Avro decimal: two's complement big-endian, as many bytes as Python's
   (bit_length(|v|) + 1 + 7) // 8 (what fastavro writes), behind a length prefix. */
static int avro_decimal(Buf *b, int64_t v) {
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int bits = 0;
    while (mag) { bits++; mag >>= 1; }
    int nbytes = (bits + 1 + 7) / 8;
    if (nbytes > 8) nbytes = 8;
    if (put_varint(b, nbytes) < 0) return -1;
    ENSURE(b, (size_t)nbytes);
    uint64_t u = (uint64_t)v;
    for (int k = nbytes - 1; k >= 0; k--) { b->p[b->len + k] = (char)(u & 0xFF); u >>= 8; }
    b->len += nbytes;
    return 0;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t yy = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static void digits(char *p, unsigned v, int width) {
    for (int k = width - 1; k >= 0; k--) { p[k] = (char)('0' + v % 10); v /= 10; }
}

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" in quotes; the date is formatted once per day seen. */
static int json_timestamp(Buf *b, int64_t us) {
    int64_t days = us >= 0 ? us / 86400000000LL : -((-us + 86400000000LL - 1) / 86400000000LL);
    int64_t rem = us - days * 86400000000LL;
    if (days != b->day || !b->day_valid) {
        int64_t y;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        if (y < 0 || y > 9999) return -2;
        b->date[0] = '"';
        digits(b->date + 1, (unsigned)y, 4);
        b->date[5] = '-';
        digits(b->date + 6, m, 2);
        b->date[8] = '-';
        digits(b->date + 9, d, 2);
        b->date[11] = 'T';
        b->day = days;
        b->day_valid = 1;
    }
    unsigned secs = (unsigned)(rem / 1000000), micros = (unsigned)(rem % 1000000);
    ENSURE(b, 29);
    char *p = b->p + b->len;
    memcpy(p, b->date, 12);
    digits(p + 12, secs / 3600, 2);
    p[14] = ':';
    digits(p + 15, secs / 60 % 60, 2);
    p[17] = ':';
    digits(p + 18, secs % 60, 2);
    p[20] = '.';
    digits(p + 21, micros, 6);
    p[27] = 'Z';
    p[28] = '"';
    b->len += 29;
    return 0;
}

/* A document's time as text (no quotes), in one of the styles of OP_TIME. */
static int put_time(Buf *b, int64_t us, int style) {
    int64_t days = us >= 0 ? us / 86400000000LL : -((-us + 86400000000LL - 1) / 86400000000LL);
    int64_t rem = us - days * 86400000000LL;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) return -2;
    unsigned secs = (unsigned)(rem / 1000000);
    ENSURE(b, 20);
    char *p = b->p + b->len;
    int dash = style <= 1;
    digits(p, (unsigned)y, 4);
    int k = 4;
    if (dash) p[k++] = '-';
    digits(p + k, m, 2);
    k += 2;
    if (dash) p[k++] = '-';
    digits(p + k, d, 2);
    k += 2;
    if (style == 0 || style == 2) {
        if (style == 0) p[k++] = 'T';
        digits(p + k, secs / 3600, 2);
        k += 2;
        if (style == 0) p[k++] = ':';
        digits(p + k, secs / 60 % 60, 2);
        k += 2;
        if (style == 0) p[k++] = ':';
        digits(p + k, secs % 60, 2);
        k += 2;
    }
    b->len += (size_t)k;
    return 0;
}

static int put_padded(Buf *b, int64_t v, int width) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    ENSURE(b, (size_t)(n > width ? n : width) + 1);
    if (v < 0) b->p[b->len++] = '-';
    for (int k = n; k < width; k++) b->p[b->len++] = '0';
    while (n) b->p[b->len++] = tmp[--n];
    return 0;
}

static int json_double(Buf *b, double x) {
    if (!isfinite(x)) return put_bytes(b, "null", 4);
    char tmp[40];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (strtod(tmp, NULL) == x) break;
    }
    return put_bytes(b, tmp, (size_t)n);
}

static int run_ops(Buf *b, const Op *ops, Py_ssize_t n, Py_ssize_t row, int fmt);

static int put_uuid(Buf *b, uint64_t seq, uint64_t base, int fmt) {
    static const char hex[] = "0123456789abcdef";
    uint64_t hi = splitmix64(seq ^ base);
    uint64_t lo = splitmix64(hi ^ 0xD1B54A32D192ED03ULL);
    hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000008000ULL;
    lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;
    if (fmt == FMT_AVRO && put_varint(b, 36) < 0) return -1;
    ENSURE(b, 38);
    char *p = b->p + b->len;
    int k = 0;
    if (fmt == FMT_JSON) p[k++] = '"';
    for (int i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) p[k++] = '-';
        uint64_t w = i < 16 ? hi : lo;
        int shift = 60 - 4 * (i % 16);
        p[k++] = hex[(w >> shift) & 0xF];
    }
    if (fmt == FMT_JSON) p[k++] = '"';
    b->len += (size_t)k;
    return 0;
}

static int run_op(Buf *b, const Op *op, Py_ssize_t row, int fmt) {
    switch (op->code) {
    case OP_LIT:
        return put_bytes(b, op->data, (size_t)op->len);
    case OP_INT: {
        int64_t v = get_int(op, row);
        return fmt == FMT_JSON ? put_i64(b, v) : put_varint(b, v);
    }
    case OP_DEC: {
        int64_t v = ((const int64_t *)op->data)[row];
        return fmt == FMT_JSON ? json_decimal(b, v, op->scale) : avro_decimal(b, v);
    }
    case OP_TS: {
        int64_t v = ((const int64_t *)op->data)[row];
        return fmt == FMT_JSON ? json_timestamp(b, v) : put_varint(b, v);
    }
    case OP_POOL: {
        int64_t code = get_int(op, row);
        if (code < 0 || code >= op->pool_n) return -2;
        int64_t lo = op->pool_off[code], hi = op->pool_off[code + 1];
        return put_bytes(b, op->pool_data + lo, (size_t)(hi - lo));
    }
    case OP_FIXED: {
        const char *p = op->data + row * op->itemsize;
        size_t w = strnlen(p, (size_t)op->itemsize);
        if (fmt == FMT_JSON) {
            ENSURE(b, w + 2);
            b->p[b->len++] = '"';
            memcpy(b->p + b->len, p, w);
            b->len += w;
            b->p[b->len++] = '"';
            return 0;
        }
        if (put_varint(b, (int64_t)w) < 0) return -1;
        return put_bytes(b, p, w);
    }
    case OP_UUID:
        return put_uuid(b, (uint64_t)((const int64_t *)op->data)[row], op->base, fmt);
    case OP_BOOL: {
        int v = op->data[row] != 0;
        if (fmt == FMT_JSON) return v ? put_bytes(b, "true", 4) : put_bytes(b, "false", 5);
        ENSURE(b, 1);
        b->p[b->len++] = (char)v;
        return 0;
    }
    case OP_DOUBLE: {
        double x = ((const double *)op->data)[row];
        if (fmt == FMT_JSON) return json_double(b, x);
        return put_bytes(b, (const char *)&x, 8);
    }
    case OP_NULLABLE: {
        int is_null = op->mask[row] != 0;
        if (fmt == FMT_JSON) {
            if (is_null) return put_bytes(b, "null", 4);
            return run_ops(b, op->sub, op->nsub, row, fmt);
        }
        if (put_varint(b, is_null ? op->null_index : op->value_index) < 0) return -1;
        return is_null ? 0 : run_ops(b, op->sub, op->nsub, row, fmt);
    }
    case OP_LIST: {
        int32_t lo = op->offsets[row], hi = op->offsets[row + 1];
        if (fmt == FMT_JSON) {
            if (put_bytes(b, "[", 1) < 0) return -1;
            for (int32_t j = lo; j < hi; j++) {
                if (j > lo && put_bytes(b, ",", 1) < 0) return -1;
                int r = run_ops(b, op->sub, op->nsub, j, fmt);
                if (r < 0) return r;
            }
            return put_bytes(b, "]", 1);
        }
        if (hi > lo) {
            if (put_varint(b, hi - lo) < 0) return -1;
            for (int32_t j = lo; j < hi; j++) {
                int r = run_ops(b, op->sub, op->nsub, j, fmt);
                if (r < 0) return r;
            }
        }
        return put_varint(b, 0);
    }
    case OP_ROWS:
        return run_ops(b, op->sub, op->nsub, (Py_ssize_t)op->rows[row], fmt);
    case OP_MARK:
        if (b->nmarks == b->capmarks) {
            size_t cap = b->capmarks ? b->capmarks * 2 : 1024;
            int64_t *m = realloc(b->marks, cap * sizeof(int64_t));
            if (!m) return -1;
            b->marks = m;
            b->capmarks = cap;
        }
        b->marks[b->nmarks++] = (int64_t)b->len;
        return 0;
    case OP_PADINT:
        return put_padded(b, get_int(op, row), op->scale);
    case OP_TIME:
        return put_time(b, ((const int64_t *)op->data)[row], op->scale);
    case OP_JOIN: {
        int32_t lo = op->offsets[row], hi = op->offsets[row + 1];
        for (int32_t j = lo; j < hi; j++) {
            if (j > lo && put_bytes(b, op->sep, (size_t)op->seplen) < 0) return -1;
            int r = run_ops(b, op->sub, op->nsub, j, fmt);
            if (r < 0) return r;
        }
        return 0;
    }
    }
    return -2;
}

static int run_ops(Buf *b, const Op *ops, Py_ssize_t n, Py_ssize_t row, int fmt) {
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = run_op(b, &ops[i], row, fmt);
        if (r < 0) return r;
    }
    return 0;
}

/* Checks that every array an op reads covers the rows it will be asked for. */
static int check_ops(const Op *ops, Py_ssize_t n, Py_ssize_t rows) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const Op *op = &ops[i];
        switch (op->code) {
        case OP_LIT: case OP_MARK: break;
        case OP_NULLABLE:
            if (op->len < rows || check_ops(op->sub, op->nsub, rows) < 0) return -1;
            break;
        case OP_LIST: case OP_JOIN: {
            if (op->len < rows) return -1;
            int32_t prev = op->offsets[0];
            if (prev < 0) return -1;
            for (Py_ssize_t r = 1; r <= rows; r++) {
                if (op->offsets[r] < prev) return -1;
                prev = op->offsets[r];
            }
            if (check_ops(op->sub, op->nsub, prev) < 0) return -1;
            break;
        }
        case OP_ROWS: {
            if (op->len < rows) return -1;
            int64_t top = -1;
            for (Py_ssize_t r = 0; r < rows; r++) {
                if (op->rows[r] < 0) return -1;
                if (op->rows[r] > top) top = op->rows[r];
            }
            if (check_ops(op->sub, op->nsub, (Py_ssize_t)(top + 1)) < 0) return -1;
            break;
        }
        case OP_DEC: case OP_TS: case OP_DOUBLE: case OP_UUID: case OP_TIME:
            if (op->itemsize != 8 || op->len < rows) return -1;
            break;
        case OP_INT: case OP_POOL: case OP_PADINT:
            if ((op->itemsize != 1 && op->itemsize != 2 && op->itemsize != 4 && op->itemsize != 8) ||
                op->len < rows)
                return -1;
            if (op->code == OP_POOL && op->pool_off[op->pool_n] > op->pool_data_len) return -1;
            break;
        default:
            if (op->len < rows) return -1;
        }
    }
    return 0;
}

/* The rendered bytes, owned without a copy: exposes the malloc'd buffer (read-only). */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len;
} Payload;

static void payload_dealloc(Payload *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int payload_getbuffer(Payload *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 1, flags);
}

static Py_ssize_t payload_length(Payload *self) { return self->len; }

static PyBufferProcs payload_as_buffer = {(getbufferproc)payload_getbuffer, NULL};
static PySequenceMethods payload_as_sequence = {(lenfunc)payload_length};

static PyTypeObject PayloadType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "datafactory.encoders._fastrender.Payload",
    .tp_basicsize = sizeof(Payload),
    .tp_dealloc = (destructor)payload_dealloc,
    .tp_as_buffer = &payload_as_buffer,
    .tp_as_sequence = &payload_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Rendered records (supports the buffer protocol; read-only).",
};

/* Rows whose bytes are given instead of rendered (a byte-level chaos fault): ascending row
 * numbers and, for each, its bytes. Pointers stay valid while the caller's tuple lives. */
typedef struct {
    Py_ssize_t n;
    const int64_t *rows;
    const char **data;
    Py_ssize_t *len;
    Py_buffer view;
} Subst;

static int subst_parse(PyObject *obj, Py_ssize_t rows, Subst *s) {
    if (obj == Py_None) return 0;
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(obj, 1))) {
        PyErr_SetString(PyExc_TypeError, "subst must be (int64 rows, tuple of bytes)");
        return -1;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(obj, 0), &s->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    PyObject *items = PyTuple_GET_ITEM(obj, 1);
    s->n = PyTuple_GET_SIZE(items);
    s->rows = s->view.buf;
    if (s->view.itemsize != 8 || s->view.len / 8 != s->n) {
        PyErr_SetString(PyExc_ValueError, "subst: one int64 row per replacement");
        return -1;
    }
    s->data = malloc((s->n ? s->n : 1) * sizeof(char *));
    s->len = malloc((s->n ? s->n : 1) * sizeof(Py_ssize_t));
    if (!s->data || !s->len) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *it = PyTuple_GET_ITEM(items, i);
        if (!PyBytes_Check(it)) { PyErr_SetString(PyExc_TypeError, "subst: replacements are bytes"); return -1; }
        if (s->rows[i] < 0 || s->rows[i] >= rows || (i && s->rows[i] <= s->rows[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "subst: rows ascending, each once, within the rows rendered");
            return -1;
        }
        s->data[i] = PyBytes_AS_STRING(it);
        s->len[i] = PyBytes_GET_SIZE(it);
    }
    return 0;
}

static void subst_free(Subst *s) {
    if (s->view.obj) PyBuffer_Release(&s->view);
    free(s->data);
    free(s->len);
}

static PyObject *render(PyObject *self, PyObject *args) {
    (void)self;
    int fmt;
    Py_ssize_t rows;
    PyObject *program, *subst_obj = Py_None;
    int want_marks = 0;
    if (!PyArg_ParseTuple(args, "inO|Op", &fmt, &rows, &program, &subst_obj, &want_marks)) return NULL;
    if (want_marks && subst_obj != Py_None) {
        PyErr_SetString(PyExc_ValueError, "marks of substituted rows are not known: not both");
        return NULL;
    }
    Ctx ctx = {0};
    Subst subst = {0};
    Op *ops = NULL;
    Py_ssize_t nops = 0;
    if (subst_parse(subst_obj, rows, &subst) < 0) { subst_free(&subst); return NULL; }
    if (parse_ops(&ctx, program, &ops, &nops) < 0) { ctx_free(&ctx); subst_free(&subst); return NULL; }
    if (check_ops(ops, nops, rows) < 0) {
        ctx_free(&ctx);
        subst_free(&subst);
        PyErr_SetString(PyExc_ValueError, "program arrays are shorter than the rows to render");
        return NULL;
    }
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, (rows + 1) * 8);
    if (!offsets) { ctx_free(&ctx); subst_free(&subst); return NULL; }
    int64_t *off = (int64_t *)PyBytes_AS_STRING(offsets);
    Buf b = {0};
    int rc = 0;
    b.day_valid = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = buf_grow(&b, (size_t)(rows > 0 ? rows : 1) * 64);
    off[0] = 0;
    Py_ssize_t k = 0;
    for (Py_ssize_t r = 0; r < rows && rc == 0; r++) {
        if (k < subst.n && subst.rows[k] == r) {
            rc = put_bytes(&b, subst.data[k], (size_t)subst.len[k]);
            k++;
        } else {
            rc = run_ops(&b, ops, nops, r, fmt);
        }
        off[r + 1] = (int64_t)b.len;
    }
    Py_END_ALLOW_THREADS
    ctx_free(&ctx);
    subst_free(&subst);
    if (rc < 0) {
        free(b.p);
        free(b.marks);
        Py_DECREF(offsets);
        if (rc == -2)
            PyErr_SetString(PyExc_ValueError,
                            "cannot render: pool code out of range, or a timestamp outside years 0-9999");
        else PyErr_NoMemory();
        return NULL;
    }
    PyObject *marks = NULL;
    if (want_marks) {
        marks = PyBytes_FromStringAndSize((const char *)b.marks, (Py_ssize_t)(b.nmarks * 8));
        free(b.marks);
        if (!marks) { free(b.p); Py_DECREF(offsets); return NULL; }
    } else {
        free(b.marks);
    }
    Payload *payload = PyObject_New(Payload, &PayloadType);
    if (!payload) { free(b.p); Py_DECREF(offsets); Py_XDECREF(marks); return NULL; }
    payload->data = b.p;
    payload->len = (Py_ssize_t)b.len;
    if (marks) return Py_BuildValue("(NNN)", (PyObject *)payload, offsets, marks);
    return Py_BuildValue("(NN)", (PyObject *)payload, offsets);
}

static PyMethodDef methods[] = {
    {"alias_fill", fr_alias_fill, METH_VARARGS, "alias_fill(scaled, prob, alias): Vose's table"},
    {"alias_pick", fr_alias_pick, METH_VARARGS,
     "alias_pick(u, prob, alias, out): draws from an alias table, u uniforms in [0, 1)"},
    {"render", render, METH_VARARGS,
     "render(fmt, rows, program, subst=None, marks=False) -> (payload, offsets[, marks])"},
    {"hits", fr_hits, METH_VARARGS, "hits(seq bytes, salt, threshold) -> int64 rows (bytes)"},
    {"mix", fr_mix, METH_VARARGS, "mix(seq bytes, salt) -> uint64 splitmix64(seq ^ salt) (bytes)"},
    {"crc32c", fr_crc32c, METH_VARARGS, "crc32c(data) -> int (Castagnoli)"},
    {"kafka_records", fr_kafka_records, METH_VARARGS,
     "kafka_records(...) -> (records, count, first_ts, max_ts): Kafka v2 records"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastrender", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastrender(void) {
    if (PyType_Ready(&PayloadType) < 0) return NULL;
    fr_crc32c_init();
    return PyModule_Create(&module);
}
