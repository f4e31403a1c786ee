/* Internal, for tests and tools on libuv: the uv_tcp_t under a secret
 * connection stream, to uv_accept, uv_tcp_connect or uv_tcp_open into
 * directly (its socket is opened on first use). */
#ifndef TM2_NET_SC_STREAM_UV_H
#define TM2_NET_SC_STREAM_UV_H

#include <uv.h>

#include "net/sc_stream.h"

static inline uv_tcp_t *tm2__sc_stream_uv_tcp(tm2__sc_stream *s)
{
    if (!s->sock_open && tm2__sc_stream_open(s) != 0)
        return NULL;
    return (uv_tcp_t *)(void *)s->sock.slot;
}

#endif
