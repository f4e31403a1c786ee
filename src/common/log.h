/* Internal: the one way library modules hand a log line to the
 * application's tm2_log_fn (tm2p2p/log.h). */
#ifndef TM2_COMMON_LOG_H
#define TM2_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "tm2p2p/log.h"

/* Fields past this many are dropped; a value is cut at TM2__LOG_VALUE - 1
 * bytes. */
#define TM2__LOG_FIELDS 12
#define TM2__LOG_VALUE 512

/* Logs msg with the fields fmt describes, if fn is set and lv <= max. fmt
 * is "key=VALUE key=VALUE ...": keys and values separated by single spaces,
 * each VALUE literal text and printf conversions (no space flag), checked by
 * the compiler against the arguments. Each value is formatted on its own and
 * handed to the sink raw. */
void tm2__vlog(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv, const char *msg,
               const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));

void tm2__log(tm2_log_fn fn, void *user, tm2_log_level max, tm2_log_level lv, const char *msg,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif
