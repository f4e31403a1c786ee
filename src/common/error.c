#include "tm2p2p/error.h"

#include <stddef.h>

static const struct {
    int code;
    const char *text;
} errors[] = {
    {0, "success"},
    {TM2_EINVAL, "invalid argument"},
    {TM2_ENOMEM, "out of memory"},
    {TM2_ENOSPC, "output buffer too small"},
    {TM2_EAGAIN, "more input needed"},
    {TM2_ETIMEDOUT, "deadline exceeded"},
    {TM2_ECLOSED, "closed"},
    {TM2_EFULL, "queue full"},
    {TM2_EIO, "I/O error"},
    {TM2_ESTATE, "invalid state for this call"},
    {TM2_ENOTFOUND, "not found"},
    {TM2_EEXIST, "already exists"},
    {TM2_EDECODE, "malformed encoding"},
    {TM2_ETOOBIG, "size over limit"},
    {TM2_ETRUNC, "truncated input"},
    {TM2_ETRAILING, "trailing bytes after value"},
    {TM2_EFIELD, "unknown, duplicate or out-of-order field"},
    {TM2_EWIRETYPE, "wrong wire type for field"},
    {TM2_EOVERFLOW, "integer overflow"},
    {TM2_ETYPEURL, "bad or unexpected type URL"},
    {TM2_ECHECKSUM, "bech32 checksum mismatch"},
    {TM2_ECHARSET, "invalid character"},
    {TM2_ECASE, "mixed case"},
    {TM2_EHRP, "wrong human-readable prefix"},
    {TM2_EID, "invalid peer ID"},
    {TM2_EADDR, "invalid net address"},
    {TM2_EHOST, "invalid host"},
    {TM2_EPORT, "invalid port"},
    {TM2_ERESOLVE, "host name did not resolve"},
    {TM2_EUNSPEC, "unspecified IP address"},
    {TM2_ERESERVED, "reserved IP address"},
    {TM2_EKEY, "invalid key"},
    {TM2_EKEYFILE, "bad node key file"},
    {TM2_ENODEINFO, "invalid node info"},
    {TM2_EINCOMPAT, "incompatible node info"},
    {TM2_ELOWORDER, "low-order X25519 point"},
    {TM2_EAUTH, "challenge verification failed"},
    {TM2_EDECRYPT, "frame failed authentication"},
    {TM2_EFRAME, "frame length out of range"},
    {TM2_ENONCE, "nonce counter exhausted"},
    {TM2_EPROTO, "protocol violation"},
    {TM2_ECHANNEL, "unknown channel"},
    {TM2_EMSGSIZE, "message over channel capacity"},
    {TM2_EPONG, "pong timeout"},
    {TM2_EIDMISMATCH, "peer ID mismatch"},
    {TM2_ESELF, "connection to self"},
    {TM2_EDUPLICATE, "duplicate peer"},
    {TM2_ELIMIT, "peer limit reached"},
    {TM2_ECONNREFUSED, "connection refused"},
    {TM2_EREJECTED, "peer rejected"},
};

const char *tm2_strerror(int err)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == err)
            return errors[i].text;
    return "unknown error";
}

bool tm2_err_is_fatal(int err)
{
    return err < 0 && err != TM2_EAGAIN && err != TM2_EFULL && err != TM2_ENOSPC;
}
