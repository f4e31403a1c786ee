/* tm2p2p error convention.
 *
 * Every fallible call returns 0 (or a non-negative length/count) on success and
 * a negative TM2_E* code on failure. tm2_strerror() names a code; it never
 * returns NULL and is safe from any thread. */
#ifndef TM2P2P_ERROR_H
#define TM2P2P_ERROR_H

#include <stdbool.h>

#if defined(TM2_BUILDING)
#define TM2_API __attribute__((visibility("default")))
#else
#define TM2_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Generic */
#define TM2_EINVAL        (-1)   /* bad argument from the caller */
#define TM2_ENOMEM        (-2)   /* allocation failed */
#define TM2_ENOSPC        (-3)   /* caller's output buffer too small */
#define TM2_EAGAIN        (-4)   /* not enough input yet; call again with more bytes */
#define TM2_ETIMEDOUT     (-5)   /* a deadline passed */
#define TM2_ECLOSED       (-6)   /* object closed or stopped */
#define TM2_EFULL         (-7)   /* bounded queue is full */
#define TM2_EIO           (-8)   /* operating-system I/O error */
#define TM2_ESTATE        (-9)   /* call not valid in the object's current state */
#define TM2_ENOTFOUND     (-10)  /* no such entry */
#define TM2_EEXIST        (-11)  /* entry already present */
/* Encoding (amino, bech32) */
#define TM2_EDECODE       (-20)  /* malformed encoding */
#define TM2_ETOOBIG       (-21)  /* length or size over its limit */
#define TM2_ETRUNC        (-22)  /* input ends inside a value */
#define TM2_ETRAILING     (-23)  /* bytes left after a complete value */
#define TM2_EFIELD        (-24)  /* unknown, duplicate or out-of-order field */
#define TM2_EWIRETYPE     (-25)  /* field has the wrong wire type */
#define TM2_EOVERFLOW     (-26)  /* integer does not fit its type */
#define TM2_ETYPEURL      (-27)  /* Any type URL missing, unprintable or unexpected */
#define TM2_ECHECKSUM     (-28)  /* bech32 checksum mismatch */
#define TM2_ECHARSET      (-29)  /* character outside the allowed set */
#define TM2_ECASE         (-30)  /* mixed upper and lower case */
#define TM2_EHRP          (-31)  /* wrong bech32 human-readable part */
/* Identity and addresses */
#define TM2_EID           (-40)  /* not a valid peer ID */
#define TM2_EADDR         (-41)  /* malformed net address */
#define TM2_EHOST         (-42)  /* missing or malformed host */
#define TM2_EPORT         (-43)  /* missing or malformed port */
#define TM2_ERESOLVE      (-44)  /* host name did not resolve */
#define TM2_EUNSPEC       (-45)  /* unspecified IP (0.0.0.0, ::) */
#define TM2_ERESERVED     (-46)  /* documentation range or broadcast IP */
#define TM2_EKEY          (-47)  /* malformed or inconsistent key */
#define TM2_EKEYFILE      (-48)  /* node key file missing, unreadable or malformed */
/* NodeInfo */
#define TM2_ENODEINFO     (-50)  /* NodeInfo fails validation */
#define TM2_EINCOMPAT     (-51)  /* NodeInfo not compatible with ours */
/* Secret connection */
#define TM2_ELOWORDER     (-60)  /* low-order X25519 point or all-zero shared secret */
#define TM2_EAUTH         (-61)  /* challenge signature did not verify */
#define TM2_EDECRYPT      (-62)  /* frame failed authentication */
#define TM2_EFRAME        (-63)  /* frame length field out of range */
#define TM2_ENONCE        (-64)  /* nonce counter exhausted */
/* Connection and peers */
#define TM2_EPROTO        (-70)  /* peer broke the protocol */
#define TM2_ECHANNEL      (-71)  /* unknown or unadvertised channel */
#define TM2_EMSGSIZE      (-72)  /* message over the channel's receive capacity */
#define TM2_EPONG         (-73)  /* pong timeout */
#define TM2_EIDMISMATCH   (-74)  /* authenticated ID differs from the expected one */
#define TM2_ESELF         (-75)  /* connection to ourselves */
#define TM2_EDUPLICATE    (-76)  /* peer already connected */
#define TM2_ELIMIT        (-77)  /* inbound or outbound peer limit reached */
#define TM2_ECONNREFUSED  (-78)  /* remote refused the TCP connection */
#define TM2_EREJECTED     (-79)  /* peer rejected by policy */
#define TM2_EEVICTED      (-80)  /* inbound peer evicted to make room for another */
#define TM2_EBANNED       (-81)  /* peer ID or address banned */
#define TM2_ENETGROUP     (-82)  /* an outbound peer of the same network group is connected */
#define TM2_EABUSE        (-83)  /* peer abused a protocol (requests too often) */

/* A human-readable name of an error code ("invalid argument", ...). */
TM2_API const char *tm2_strerror(int err);

/* A short, stable name of an error code for labels and logs: "LIMIT" for
 * TM2_ELIMIT, "OK" for 0, "UNKNOWN" for a code that is not listed. */
TM2_API const char *tm2_errname(int err);

/* True for errors after which the object that returned them is unusable
 * (a session or connection must be closed); false for EAGAIN, EFULL, ENOSPC. */
TM2_API bool tm2_err_is_fatal(int err);

#ifdef __cplusplus
}
#endif
#endif
