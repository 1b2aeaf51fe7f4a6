/* RFC 8785 (JCS) canonical JSON of float-free values, in C: `datastorage.ledger.leaf` uses it,
 * when it is built, for the writer's leaf of every event (its pure-Python path writes the same
 * bytes). Built as an optional extension: without a C compiler the package installs without it.
 *
 * dumps(value) -> bytes | None
 *
 * The bytes are the JCS form of `value` when every part of it is a dict with str keys, a list,
 * a str, an int within +-(2**53 - 1), True, False or None (exact types only, as a JSON parser
 * makes them). None when anything else is found: a float (JCS writes numbers as ECMAScript
 * does; the reference canonicalizer decides), a bigger int, a str that is not valid UTF-8 (a
 * lone surrogate), a key holding a character in U+E000..U+FFFF (UTF-8 lead byte 0xEE or 0xEF:
 * the only characters whose order by UTF-16 code units differs from the order of their UTF-8
 * bytes, against characters beyond U+FFFF), or nesting deeper than MAX_DEPTH.
 *
 * What JCS asks of the rest (RFC 8785 section 3.2): object members sorted by their names'
 * UTF-16 code units (the order of their UTF-8 bytes here, see above); no whitespace; strings as
 * UTF-8 with only '"', '\\' and the characters below U+0020 escaped, as \b \t \n \f \r or else
 * \u00xx in lowercase hex; integers in decimal. No Python code runs while a value is written
 * (no callbacks, no comparisons of objects), so borrowed references stay valid throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128
#define SAFE_INTEGER 9007199254740991LL /* 2**53 - 1 */

enum { WRITTEN = 0, FAILED = -1, INEXACT = 1 };

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Buffer;

static int grow(Buffer *out, Py_ssize_t more)
{
    Py_ssize_t capacity = out->capacity ? out->capacity : 4096;
    while (capacity < out->length + more) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return FAILED;
        }
        capacity *= 2;
    }
    char *data = PyMem_Realloc(out->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    out->data = data;
    out->capacity = capacity;
    return WRITTEN;
}

static inline int reserve(Buffer *out, Py_ssize_t more)
{
    return out->length + more <= out->capacity ? WRITTEN : grow(out, more);
}

static inline int append(Buffer *out, const char *text, Py_ssize_t size)
{
    if (reserve(out, size) != WRITTEN)
        return FAILED;
    memcpy(out->data + out->length, text, (size_t)size);
    out->length += size;
    return WRITTEN;
}

static const char HEX[] = "0123456789abcdef";

/* Whether any byte of an 8-byte word is below 0x20, '"' or '\\' (SWAR: a byte that is zero
 * after a subtraction or an exclusive-or sets its high bit here; the `& ~word` term excludes
 * bytes of 0x80 and above). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline int needs_escape(uint64_t word)
{
    uint64_t quote = word ^ (ONES * '"'), backslash = word ^ (ONES * '\\');
    return (((word - ONES * 0x20) | (quote - ONES) | (backslash - ONES)) & ~word & HIGHS) != 0;
}

static int write_string(Buffer *out, const char *text, Py_ssize_t size)
{
    if (size > (PY_SSIZE_T_MAX - 2) / 6 || reserve(out, size * 6 + 2) != WRITTEN) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return FAILED;
    }
    char *at = out->data + out->length;
    *at++ = '"';
    Py_ssize_t i = 0;
    while (i < size) {
        /* Copy eight bytes at a time while none of them needs an escape. */
        while (i + 8 <= size) {
            uint64_t word;
            memcpy(&word, text + i, 8);
            if (needs_escape(word))
                break;
            memcpy(at, &word, 8);
            at += 8;
            i += 8;
        }
        if (i >= size)
            break;
        unsigned char c = (unsigned char)text[i++];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *at++ = (char)c;
            continue;
        }
        *at++ = '\\';
        switch (c) {
        case '"': *at++ = '"'; break;
        case '\\': *at++ = '\\'; break;
        case '\b': *at++ = 'b'; break;
        case '\t': *at++ = 't'; break;
        case '\n': *at++ = 'n'; break;
        case '\f': *at++ = 'f'; break;
        case '\r': *at++ = 'r'; break;
        default:
            *at++ = 'u';
            *at++ = '0';
            *at++ = '0';
            *at++ = HEX[c >> 4];
            *at++ = HEX[c & 0xf];
        }
    }
    *at++ = '"';
    out->length = at - out->data;
    return WRITTEN;
}

typedef struct {
    uint64_t prefix; /* the name's first eight bytes, big-endian, zero-padded: most orders */
    const char *name;
    Py_ssize_t size;
    PyObject *value;
} Member;

static inline int by_name(const Member *x, const Member *y)
{
    if (x->prefix != y->prefix)
        return x->prefix < y->prefix ? -1 : 1;
    Py_ssize_t common = x->size < y->size ? x->size : y->size;
    int order = memcmp(x->name, y->name, (size_t)common);
    if (order != 0)
        return order;
    return (x->size > y->size) - (x->size < y->size);
}

/* A str's UTF-8 bytes (NULL: it has none, a lone surrogate; the error is cleared). */
static inline const char *utf8(PyObject *text, Py_ssize_t *size)
{
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        *size = PyUnicode_GET_LENGTH(text);
        return (const char *)PyUnicode_DATA(text);
    }
    const char *bytes = PyUnicode_AsUTF8AndSize(text, size);
    if (bytes == NULL)
        PyErr_Clear();
    return bytes;
}

static int write_value(Buffer *out, PyObject *value, int depth);

static int write_object(Buffer *out, PyObject *dict, int depth)
{
    Py_ssize_t count = PyDict_GET_SIZE(dict);
    if (count == 0)
        return append(out, "{}", 2);
    int result = WRITTEN;
    Member local[32], *local_order[32];
    Member *members = local, **order = local_order;
    if (count > 32) {
        members = PyMem_Malloc(sizeof(Member) * (size_t)count);
        order = PyMem_Malloc(sizeof(Member *) * (size_t)count);
        if (members == NULL || order == NULL) {
            PyErr_NoMemory();
            result = FAILED;
            goto done;
        }
    }
    Py_ssize_t position = 0, n = 0;
    PyObject *key, *item;
    while (PyDict_Next(dict, &position, &key, &item)) {
        Py_ssize_t size;
        const char *name = PyUnicode_CheckExact(key) ? utf8(key, &size) : NULL;
        if (name == NULL || (!PyUnicode_IS_ASCII(key) && (memchr(name, 0xee, (size_t)size) ||
                                                          memchr(name, 0xef, (size_t)size)))) {
            result = INEXACT;
            goto done;
        }
        uint64_t prefix = 0;
        if (size >= 8) {
            memcpy(&prefix, name, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            prefix = __builtin_bswap64(prefix);
#endif
        } else {
            for (Py_ssize_t b = 0; b < 8; b++)
                prefix = prefix << 8 | (b < size ? (unsigned char)name[b] : 0);
        }
        members[n] = (Member){prefix, name, size, item};
        /* Insertion sort of pointers as the members come: objects are small. */
        Py_ssize_t j = n++;
        while (j > 0 && by_name(order[j - 1], &members[n - 1]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = &members[n - 1];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((result = append(out, i ? "," : "{", 1)) != WRITTEN)
            goto done;
        if ((result = write_string(out, order[i]->name, order[i]->size)) != WRITTEN)
            goto done;
        if ((result = append(out, ":", 1)) != WRITTEN)
            goto done;
        if ((result = write_value(out, order[i]->value, depth + 1)) != WRITTEN)
            goto done;
    }
    result = append(out, "}", 1);
done:
    if (members != local)
        PyMem_Free(members);
    if (order != local_order)
        PyMem_Free(order);
    return result;
}

static int write_array(Buffer *out, PyObject *list, int depth)
{
    Py_ssize_t count = PyList_GET_SIZE(list);
    if (append(out, "[", 1) != WRITTEN)
        return FAILED;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i && append(out, ",", 1) != WRITTEN)
            return FAILED;
        int result = write_value(out, PyList_GET_ITEM(list, i), depth + 1);
        if (result != WRITTEN)
            return result;
    }
    return append(out, "]", 1);
}

static int write_value(Buffer *out, PyObject *value, int depth)
{
    if (depth > MAX_DEPTH)
        return INEXACT;
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t size;
        const char *text = utf8(value, &size);
        return text == NULL ? INEXACT : write_string(out, text, size);
    }
    if (value == Py_None)
        return append(out, "null", 4);
    if (value == Py_True)
        return append(out, "true", 4);
    if (value == Py_False)
        return append(out, "false", 5);
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (number == -1 && PyErr_Occurred())
            return FAILED;
        if (overflow || number > SAFE_INTEGER || number < -SAFE_INTEGER)
            return INEXACT;
        char digits[24], *end = digits + sizeof digits, *at = end;
        unsigned long long magnitude = (unsigned long long)(number < 0 ? -number : number);
        do {
            *--at = (char)('0' + magnitude % 10);
            magnitude /= 10;
        } while (magnitude);
        if (number < 0)
            *--at = '-';
        return append(out, at, end - at);
    }
    if (PyDict_CheckExact(value))
        return write_object(out, value, depth);
    if (PyList_CheckExact(value))
        return write_array(out, value, depth);
    return INEXACT; /* a float, or a type no JSON parser makes */
}

/* One buffer for every call, kept between calls (the GIL is held throughout a call). */
static Buffer scratch;

static PyObject *dumps(PyObject *Py_UNUSED(module), PyObject *value)
{
    scratch.length = 0;
    int result = write_value(&scratch, value, 0);
    PyObject *text = NULL;
    if (result == WRITTEN)
        text = PyBytes_FromStringAndSize(scratch.data, scratch.length);
    else if (result == INEXACT)
        text = Py_NewRef(Py_None);
    if (scratch.capacity > (1 << 20)) { /* give back what one large value took */
        PyMem_Free(scratch.data);
        scratch.data = NULL;
        scratch.capacity = 0;
    }
    return text;
}

static PyMethodDef methods[] = {
    {"dumps", dumps, METH_O,
     "dumps(value) -> bytes | None: the RFC 8785 form of a float-free JSON value (None: not"
     " written here)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_jcs",
    .m_doc = "RFC 8785 canonical JSON of float-free values.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jcs(void)
{
    return PyModule_Create(&module);
}
