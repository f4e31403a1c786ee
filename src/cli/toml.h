/* A TOML 1.0 document parser: text in, a tree of values out.
 *
 * Everything in TOML 1.0 is read: tables, arrays of tables, dotted and quoted
 * keys, inline tables, arrays, basic/literal strings (one-line and
 * multi-line), integers (decimal, 0x, 0o, 0b), floats (incl. inf and nan),
 * booleans, and offset/local date-times, local dates and local times. Every
 * rule the specification states is enforced (a document either parses
 * exactly or is refused): valid UTF-8 only, no control characters, no
 * duplicate keys or tables, no reopening of tables defined by dotted keys or
 * of inline tables, no mixing [x] and [[x]], 64-bit integer range, etc.
 *
 * Bounds: nesting of tables, arrays and inline tables is at most
 * TOML_MAX_DEPTH levels (so walking the tree recursively is safe) and a key
 * has at most TOML_MAX_KEY_PARTS dotted parts. The caller bounds the input
 * size.
 *
 * Ownership: toml_parse returns a tree the caller frees with toml_free.
 * Strings (values and keys) carry a length: "\u0000" is a legal escape, so
 * they may contain NUL bytes; they are also NUL-terminated. */
#ifndef TM2_CLI_TOML_H
#define TM2_CLI_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOML_MAX_DEPTH     64
#define TOML_MAX_KEY_PARTS 64

typedef enum toml_type {
    TOML_TABLE,
    TOML_ARRAY,
    TOML_STRING,
    TOML_INTEGER,
    TOML_FLOAT,
    TOML_BOOL,
    TOML_DATETIME,       /* offset date-time: text "YYYY-MM-DDTHH:MM:SS[.f](Z|+hh:mm)" */
    TOML_DATETIME_LOCAL, /* "YYYY-MM-DDTHH:MM:SS[.f]" */
    TOML_DATE_LOCAL,     /* "YYYY-MM-DD" */
    TOML_TIME_LOCAL,     /* "HH:MM:SS[.f]" */
} toml_type;

typedef struct toml_value toml_value;

typedef struct toml_entry {
    char *key;
    size_t key_len;
    toml_value *value;
} toml_entry;

struct toml_value {
    toml_type type;
    unsigned line; /* 1-based line where the value (or table) was defined */
    union {
        /* TOML_STRING, and the date/time types (normalised text: 'T' between
         * date and time, upper-case 'Z', fraction digits as written) */
        struct {
            char *ptr;
            size_t len;
        } s;
        int64_t i;
        double f;
        bool b;
        struct {
            toml_entry *items; /* in definition order */
            size_t n, cap;
            uint32_t *index;   /* private: hash index of items */
            size_t index_cap;
        } t;
        struct {
            toml_value **items;
            size_t n, cap;
        } a;
    } u;
    /* private: how the table or array came to be, for the redefinition rules */
    uint8_t origin;
    bool sealed;
    unsigned depth;
};

typedef struct toml_error {
    unsigned line;  /* 1-based; 0 when not tied to a line */
    bool oom;       /* out of memory rather than a bad document */
    char msg[160];  /* one line, without the line number */
} toml_error;

/* Parses text[0..len) (need not be NUL-terminated). 0 with *root set to the
 * root table, or -1 with err filled and *root NULL. */
int toml_parse(const char *text, size_t len, toml_value **root, toml_error *err);

void toml_free(toml_value *v);

/* The entry named key (one key, not a dotted path) of table t, or NULL when t
 * is NULL, not a table, or has no such key. */
const toml_value *toml_get(const toml_value *t, const char *key);

/* "a string", "an integer", ... for messages. */
const char *toml_type_name(toml_type t);

#endif
