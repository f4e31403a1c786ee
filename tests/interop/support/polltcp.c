#include "polltcp.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tv.h"

int pt_remaining_ms(uint64_t deadline)
{
    uint64_t now = tv_now_ms();
    if (now >= deadline)
        fail_msg("deadline passed");
    return (int)(deadline - now);
}

int pt_connect_loopback(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    return fd;
}

int pt_listen_loopback(uint16_t *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return lfd;
}

int pt_accept_one(int lfd, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int r = poll(&p, 1, pt_remaining_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        if (r == 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            return fd;
        assert_true(errno == EAGAIN || errno == EINTR || errno == ECONNABORTED);
    }
}

size_t pt_send_some(int fd, const uint8_t *p, size_t len)
{
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        fail_msg("send: %s", strerror(errno));
    }
    return (size_t)n;
}

ssize_t pt_recv_some(int fd, uint8_t *p, size_t cap)
{
    ssize_t n = recv(fd, p, cap, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return -1;
        fail_msg("recv: %s", strerror(errno));
    }
    return n;
}

void pt_sc_handshake(tm2__sc *sc, int fd, uint8_t *rx, size_t rx_cap, size_t *rx_len,
                     uint64_t deadline)
{
    uint8_t out[TM2__SC_EPH_MSG_SIZE + TM2__SC_FRAME_SIZE];
    size_t out_len = 0, out_off = 0;
    *rx_len = 0;
    for (;;) {
        if (out_off == out_len) {
            out_len = tm2__sc_hs_output(sc, out, sizeof out);
            out_off = 0;
        }
        bool done = tm2__sc_established(sc);
        if (done && out_off == out_len)
            return;
        struct pollfd p = {.fd = fd, .events = (short)((done ? 0 : POLLIN) |
                                                       (out_off < out_len ? POLLOUT : 0))};
        int r = poll(&p, 1, pt_remaining_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
        if (p.revents & POLLOUT)
            out_off += pt_send_some(fd, out + out_off, out_len - out_off);
        if (!done && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = pt_recv_some(fd, rx, rx_cap);
            if (n == 0)
                fail_msg("reference closed the connection during the handshake");
            if (n < 0)
                continue;
            size_t used = 0;
            int hr = tm2__sc_hs_input(sc, rx, (size_t)n, &used);
            if (hr == 0) {
                memmove(rx, rx + used, (size_t)n - used);
                *rx_len = (size_t)n - used;
            } else if (hr != TM2_EAGAIN) {
                fail_msg("handshake failed: %s", tm2_strerror(hr));
            } else {
                assert_int_equal(used, (size_t)n);
            }
        }
    }
}
