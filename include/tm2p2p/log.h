/* The log sink the library writes to (tm2_switch_config.log,
 * tm2_discovery_config.log).
 *
 * A line is a short constant message and key/value fields. Values are raw
 * text, peer-supplied text (monikers, reasons) included: the sink escapes
 * them for its own format, so one escaping rule applies to every line of a
 * program. Facts that are also events (peers connected, disconnected,
 * rejected, failed dials) are logged at debug level only: the event is the
 * record. */
#ifndef TM2P2P_LOG_H
#define TM2P2P_LOG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tm2_log_level {
    TM2_LOG_ERROR = 0,
    TM2_LOG_WARN = 1,
    TM2_LOG_INFO = 2,
    TM2_LOG_DEBUG = 3,
} tm2_log_level;

typedef struct tm2_log_field {
    const char *key;             /* [a-z_]+ */
    const char *value;           /* never NULL */
} tm2_log_field;

/* Called on the network thread (or the caller's thread for errors of
 * tm2_switch_new/start, and for the ban file written by tm2_switch_stop);
 * must not block for long. Everything it is given is
 * valid during the call only. */
typedef void (*tm2_log_fn)(void *user, tm2_log_level level, const char *msg,
                           const tm2_log_field *fields, size_t n_fields);

#ifdef __cplusplus
}
#endif
#endif
