/*
 * Kafka record batches (v2): the records of an encoded block (keys, timestamps, headers, the
 * seq header) in one pass, and the batch's CRC-32C (datafactory.sinks.kafka).
 */
#include "_fastrender.h"

static uint32_t CRC32C_TABLE[256];

void fr_crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        CRC32C_TABLE[i] = c;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t c, const uint8_t *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

PyObject *fr_crc32c(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    uint32_t c = 0xFFFFFFFFu;
    const uint8_t *p = data.buf;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_HW_CRC
    if (__builtin_cpu_supports("sse4.2"))
        c = crc32c_hw(c, p, (size_t)data.len);
    else
#endif
    for (Py_ssize_t i = 0; i < data.len; i++) c = CRC32C_TABLE[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(c ^ 0xFFFFFFFFu);
}

static int put_zz(Buf *b, int64_t v) { return put_varint(b, v); } /* Kafka varints are zigzag */

static int dec_text(char *out, int64_t v) {
    char tmp[24];
    int n = 0, neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    int len = 0;
    if (neg) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* kafka_records(payload, offsets i64, rows i64, keys i64, ts_ms i64, seqs i64, headers blob,
                 n_headers, trim, max_bytes) -> (records bytes, count, first_ts, max_ts)
   Records of `rows` (in order) until adding one would pass max_bytes (at least one). */
PyObject *fr_kafka_records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer payload, offsets, rows, keys, ts, seqs, headers;
    int n_headers, trim;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*iin", &payload, &offsets, &rows, &keys, &ts, &seqs,
                          &headers, &n_headers, &trim, &max_bytes))
        return NULL;
    const int64_t *off = offsets.buf, *row = rows.buf, *key = keys.buf, *t = ts.buf, *sq = seqs.buf;
    Py_ssize_t nrows = rows.len / 8, noff = offsets.len / 8;
    Buf b = {0}, rec = {0};
    Py_ssize_t count = 0;
    int64_t first = 0, maxts = 0;
    int rc = 0, bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nrows && rc == 0; i++) {
        int64_t r = row[i];
        if (r < 0 || r + 1 >= noff || r >= (Py_ssize_t)(keys.len / 8) || r >= (Py_ssize_t)(ts.len / 8) ||
            r >= (Py_ssize_t)(seqs.len / 8) || off[r + 1] > payload.len || off[r] > off[r + 1]) {
            bad = 1;
            break;
        }
        if (count == 0) { first = t[r]; maxts = t[r]; }
        if (t[r] > maxts) maxts = t[r];
        rec.len = 0;
        char kt[24], st[24];
        int kl = dec_text(kt, key[r]), sl = dec_text(st, sq[r]);
        int64_t vl = off[r + 1] - off[r] - (trim && off[r + 1] > off[r] ? 1 : 0);
        if ((rc = put_bytes(&rec, "\0", 1)) < 0) break;
        if ((rc = put_zz(&rec, t[r] - first)) < 0) break;
        if ((rc = put_zz(&rec, count)) < 0) break;
        if ((rc = put_zz(&rec, kl)) < 0 || (rc = put_bytes(&rec, kt, kl)) < 0) break;
        if ((rc = put_zz(&rec, vl)) < 0) break;
        if ((rc = put_bytes(&rec, (const char *)payload.buf + off[r], (size_t)vl)) < 0) break;
        if ((rc = put_zz(&rec, n_headers + 1)) < 0) break;
        if ((rc = put_bytes(&rec, headers.buf, (size_t)headers.len)) < 0) break;
        if ((rc = put_zz(&rec, 3)) < 0 || (rc = put_bytes(&rec, "seq", 3)) < 0) break;
        if ((rc = put_zz(&rec, sl)) < 0 || (rc = put_bytes(&rec, st, sl)) < 0) break;
        if (count > 0 && (Py_ssize_t)(b.len + rec.len + 10) > max_bytes) break;
        if ((rc = put_zz(&b, (int64_t)rec.len)) < 0) break;
        if ((rc = put_bytes(&b, rec.p, rec.len)) < 0) break;
        count++;
    }
    Py_END_ALLOW_THREADS
    free(rec.p);
    PyBuffer_Release(&payload); PyBuffer_Release(&offsets); PyBuffer_Release(&rows);
    PyBuffer_Release(&keys); PyBuffer_Release(&ts); PyBuffer_Release(&seqs);
    PyBuffer_Release(&headers);
    if (bad || rc < 0) {
        free(b.p);
        if (bad) PyErr_SetString(PyExc_ValueError, "kafka_records: row index or offsets out of range");
        else PyErr_NoMemory();
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p ? b.p : "", (Py_ssize_t)b.len);
    free(b.p);
    if (!out) return NULL;
    return Py_BuildValue("(NnLL)", out, count, (long long)first, (long long)maxts);
}
