/* Test support: vector files from tests/vectors/, hex helpers, monotonic time.
 * Every function fails the running cmocka test on error, so callers need no checks. */
#ifndef TM2_TEST_TV_H
#define TM2_TEST_TV_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tm2p2p/log.h"

/* Full path of a vector file (static buffer, valid until the next call). */
const char *tv_path(const char *file);

/* Value of the first line "NAME=VALUE" in the file; malloc'd, caller frees. */
char *tv_get(const char *file, const char *name);

/* Hex value of NAME=HEX decoded into a malloc'd buffer; *len receives its size. */
uint8_t *tv_get_hex(const char *file, const char *name, size_t *len);

/* Decodes exactly cap bytes of hex (fails the test on bad hex or length). */
void tv_hex(const char *hex, uint8_t *out, size_t cap);

/* Decodes hex of any length into a malloc'd buffer. */
uint8_t *tv_hex_alloc(const char *hex, size_t *len);

/* Calls cb for each non-empty, non-comment line (without its newline);
 * returns how many lines were visited. */
int tv_lines(const char *file, void (*cb)(char *line, void *user), void *user);

/* Splits a line in place on sep; returns the number of fields (<= max). */
int tv_split(char *line, char sep, char **fields, int max);

/* Monotonic milliseconds, for deadlines in tests. */
uint64_t tv_now_ms(void);

/* Threads of this process whose name (/proc/self/task/<tid>/comm) is name. */
int tv_threads_named(const char *name);

/* A library log line as one string for tests to search: msg="MSG" then
 * key=value, the value in double quotes when it has a space or is empty
 * (nothing escaped). Cut to fit cap. */
const char *tv_log_line(char *buf, size_t cap, const char *msg, const tm2_log_field *f,
                        size_t n);

/* xorshift64: the tests' reproducible random source. Advances *x (never
 * 0) and returns its new value. */
static inline uint64_t tv_xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

#endif
