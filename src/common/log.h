/* Internal: the one way library modules format a log line and hand it to
 * the application's tm2_log_fn, and the logfmt quoting of peer-supplied text. */
#ifndef TM2_COMMON_LOG_H
#define TM2_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "tm2p2p/switch.h"

/* Longest line handed to a sink; longer ones are cut. */
#define TM2__LOG_LINE 1024

/* Formats and hands one line to fn if fn is set and lv <= max. */
void tm2__vlogf(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv,
                const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

void tm2__logf(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* s as a double-quoted logfmt value with '"', '\\' and bytes outside
 * 0x20..0x7e escaped, so text from peers (monikers, network names, reasons)
 * can neither break nor forge a log line. Cut to fit cap (>= 8). */
const char *tm2__log_quote(const char *s, char *buf, size_t cap);

#endif
