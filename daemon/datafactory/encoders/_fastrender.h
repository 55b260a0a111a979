/*
 * What the sources of datafactory.encoders._fastrender share: the growing output buffer and
 * its writers, splitmix64, and the functions each source adds to the module.
 *
 *   _fastrender.c        render (the encoders' ops), the module
 *   _fastrender_sampling.c  alias_fill, alias_pick (alias tables for the packs' draws)
 *   _fastrender_chaos.c  hits, mix (the chaos chain's vector parts)
 *   _fastrender_kafka.c  crc32c, kafka_records (Kafka v2 record batches)
 */
#ifndef DATAFACTORY_FASTRENDER_H
#define DATAFACTORY_FASTRENDER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t len, cap;
    int64_t day; /* timestamp cache: the day whose date text is in `date` */
    int day_valid;
    char date[12];
    int64_t *marks; /* OP_MARK's positions, when asked for */
    size_t nmarks, capmarks;
} Buf;

static inline int buf_grow(Buf *b, size_t need) {
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}
#define ENSURE(b, n) do { if ((b)->len + (n) > (b)->cap && buf_grow((b), (n)) < 0) return -1; } while (0)

static inline int put_varint(Buf *b, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    ENSURE(b, 10);
    while (z & ~(uint64_t)0x7F) { b->p[b->len++] = (char)((z & 0x7F) | 0x80); z >>= 7; }
    b->p[b->len++] = (char)z;
    return 0;
}

static inline int put_bytes(Buf *b, const char *p, size_t n) {
    ENSURE(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static inline uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* _fastrender_chaos.c */
PyObject *fr_mix(PyObject *self, PyObject *args);
PyObject *fr_hits(PyObject *self, PyObject *args);

/* _fastrender_sampling.c */
PyObject *fr_alias_fill(PyObject *self, PyObject *args);
PyObject *fr_alias_pick(PyObject *self, PyObject *args);

/* _fastrender_kafka.c */
void fr_crc32c_init(void);
PyObject *fr_crc32c(PyObject *self, PyObject *args);
PyObject *fr_kafka_records(PyObject *self, PyObject *args);

#endif
