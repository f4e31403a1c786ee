#include "tm2p2p/error.h"

#include <stddef.h>

#define E(c, t) {c, #c, t}

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
    {0, "OK", "success"},
    E(TM2_EINVAL, "invalid argument"),
    E(TM2_ENOMEM, "out of memory"),
    E(TM2_ENOSPC, "output buffer too small"),
    E(TM2_EAGAIN, "more input needed"),
    E(TM2_ETIMEDOUT, "deadline exceeded"),
    E(TM2_ECLOSED, "closed"),
    E(TM2_EFULL, "queue full"),
    E(TM2_EIO, "I/O error"),
    E(TM2_ESTATE, "invalid state for this call"),
    E(TM2_ENOTFOUND, "not found"),
    E(TM2_EEXIST, "already exists"),
    E(TM2_EDECODE, "malformed encoding"),
    E(TM2_ETOOBIG, "size over limit"),
    E(TM2_ETRUNC, "truncated input"),
    E(TM2_ETRAILING, "trailing bytes after value"),
    E(TM2_EFIELD, "unknown, duplicate or out-of-order field"),
    E(TM2_EWIRETYPE, "wrong wire type for field"),
    E(TM2_EOVERFLOW, "integer overflow"),
    E(TM2_ETYPEURL, "bad or unexpected type URL"),
    E(TM2_ECHECKSUM, "bech32 checksum mismatch"),
    E(TM2_ECHARSET, "invalid character"),
    E(TM2_ECASE, "mixed case"),
    E(TM2_EHRP, "wrong human-readable prefix"),
    E(TM2_EID, "invalid peer ID"),
    E(TM2_EADDR, "invalid net address"),
    E(TM2_EHOST, "invalid host"),
    E(TM2_EPORT, "invalid port"),
    E(TM2_ERESOLVE, "host name did not resolve"),
    E(TM2_EUNSPEC, "unspecified IP address"),
    E(TM2_ERESERVED, "reserved IP address"),
    E(TM2_EKEY, "invalid key"),
    E(TM2_EKEYFILE, "bad node key file"),
    E(TM2_ENODEINFO, "invalid node info"),
    E(TM2_EINCOMPAT, "incompatible node info"),
    E(TM2_ELOWORDER, "low-order X25519 point"),
    E(TM2_EAUTH, "challenge verification failed"),
    E(TM2_EDECRYPT, "frame failed authentication"),
    E(TM2_EFRAME, "frame length out of range"),
    E(TM2_ENONCE, "nonce counter exhausted"),
    E(TM2_EPROTO, "protocol violation"),
    E(TM2_ECHANNEL, "unknown channel"),
    E(TM2_EMSGSIZE, "message over channel capacity"),
    E(TM2_EPONG, "pong timeout"),
    E(TM2_EIDMISMATCH, "peer ID mismatch"),
    E(TM2_ESELF, "connection to self"),
    E(TM2_EDUPLICATE, "duplicate peer"),
    E(TM2_ELIMIT, "peer limit reached"),
    E(TM2_ECONNREFUSED, "connection refused"),
    E(TM2_EREJECTED, "peer rejected"),
    E(TM2_EEVICTED, "peer evicted"),
    E(TM2_EBANNED, "peer banned"),
    E(TM2_ENETGROUP, "network group already has an outbound peer"),
    E(TM2_EABUSE, "protocol abuse"),
};

const char *tm2_strerror(int err)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == err)
            return errors[i].text;
    return "unknown error";
}

const char *tm2_errname(int err)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == err)
            /* Past "TM2_E": a short stable label ("LIMIT", "TIMEDOUT"). */
            return err ? errors[i].name + 5 : errors[i].name;
    return "UNKNOWN";
}

bool tm2_err_is_fatal(int err)
{
    return err < 0 && err != TM2_EAGAIN && err != TM2_EFULL && err != TM2_ENOSPC;
}
