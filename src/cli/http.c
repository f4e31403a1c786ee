/* The node's HTTP endpoints (libmicrohttpd) and a small GET client (cli/http.h). */
#include "cli/http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/metrics.h"

/* ---- addresses ------------------------------------------------------------------ */

/* Splits "[tcp://]host:port" into host (brackets removed) and port. */
static int split_addr(const char *addr, char *host, size_t host_cap, char *port, size_t port_cap)
{
    if (!strncmp(addr, "tcp://", 6))
        addr += 6;
    const char *colon;
    const char *h = addr;
    size_t hl;
    if (*addr == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -1;
        h = addr + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || memchr(addr, ':', (size_t)(colon - addr)))
            return -1;
        hl = (size_t)(colon - addr);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl >= host_cap || pl == 0 || pl > 5 || pl >= port_cap || strspn(p, "0123456789") != pl ||
        atol(p) > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
}

int cli_http_addr_check(const char *listen_addr)
{
    char host[256], port[8];
    return listen_addr ? split_addr(listen_addr, host, sizeof host, port, sizeof port) : -1;
}

/* "ip:port" of a bound socket, for the log line a port-0 listener needs. */
static void format_sockaddr(const struct sockaddr *sa, char *out, size_t cap)
{
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getnameinfo(sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in), h,
                    sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV)) {
        snprintf(out, cap, "?");
        return;
    }
    snprintf(out, cap, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
}

/* ---- server ---------------------------------------------------------------------- */

struct cli_http {
    struct MHD_Daemon *d;
    int fd;
    tm2_switch *sw;
    tm2_discovery *disc;
    int (*render)(void *user, const char *path, char **body, size_t *len, const char **type);
    void *render_user;
    const cli_log *log;
    char addr[NI_MAXHOST + 16];
};

/* libmicrohttpd's errors go to the node's log instead of stderr. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    const cli_http *h = cls;
    if (!cli_log_enabled(h->log, TM2_LOG_WARN))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    cli_log_kv(h->log, TM2_LOG_WARN, "http server", "reason", msg, (const char *)NULL);
}

/* Queues body (taken: freed by libmicrohttpd once sent) with its type;
 * nothing is cached, every GET is a fresh reading. */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* Short fixed answers: the index, 404, 405. */
static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text)
{
    char *b = strdup(text);
    return b ? reply(c, code, "text/plain; charset=utf-8", b, strlen(b)) : MHD_NO;
}

static const char index_text[] = "tm2p2p node\n"
                                 "/metrics  Prometheus metrics (text format 0.0.4)\n"
                                 "/status   this node (JSON)\n"
                                 "/peers    connected peers (JSON)\n";

/* The server's thread yields the CPU to the network threads: nice +10
 * gives it a tenth of their weight when they contend (Linux sets a
 * thread's nice by its ID), so a scrape slows itself more than the peers,
 * yet still finishes on a busy machine. Once per thread. */
static void yield_to_network(void)
{
    static _Thread_local bool done;
    if (done)
        return;
    done = true;
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)gettid());
    if (errno == 0 && cur < 10)
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
}

/* Every answer is built whole from a fresh snapshot: requests are rare
 * (a scrape a second at most) and small next to what the switch does. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req)
{
    (void)version;
    (void)upload;
    (void)req;
    cli_http *h = cls;
    yield_to_network();
    if (*upload_size)
        return MHD_NO;
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    bool metrics = !strcmp(url, "/metrics"), status = !strcmp(url, "/status"), peers = !strcmp(url, "/peers");
    if (!h->sw && strcmp(url, "/")) {
        char *b = NULL;
        size_t n = 0;
        const char *type = "text/plain; charset=utf-8";
        int rr = h->render(h->render_user, url, &b, &n, &type);
        if (rr == 0)
            return reply(c, MHD_HTTP_OK, type, b, n);
        return rr > 0 ? reply_text(c, MHD_HTTP_NOT_FOUND, "not found; try /metrics\n")
                      : reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    }
    if (!strcmp(url, "/"))
        return reply_text(c, MHD_HTTP_OK, h->sw ? index_text : "tm2p2p\n/metrics  Prometheus metrics\n");
    if (!metrics && !status && !peers)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found; try /metrics, /status or /peers\n");

    cli_metrics_snap s;
    int r = cli_metrics_collect(h->sw, h->disc, &s);
    char *body = NULL;
    size_t len = 0;
    if (r == 0 && metrics) {
        tm2__buf b = {0};
        cli_metrics_write(&s, &b);
        if (!b.oom) {
            body = b.p ? b.p : strdup("");
            len = b.len;
        } else {
            tm2__buf_free(&b);
        }
    } else if (r == 0) {
        body = status ? cli_metrics_status_json(&s) : cli_metrics_peers_json(&s);
        len = body ? strlen(body) : 0;
    }
    cli_metrics_snap_free(&s);
    if (!body)
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    return reply(c, MHD_HTTP_OK, metrics ? CLI_METRICS_CONTENT_TYPE : "application/json", body, len);
}

/* Binds and listens ourselves, so a taken port is a clear error and port 0
 * tells which port it got; libmicrohttpd gets the socket. */
static int bind_listener(const char *addr, char *bound, size_t bound_cap, char *err, size_t err_len)
{
    char host[256], port[8];
    if (split_addr(addr, host, sizeof host, port, sizeof port)) {
        snprintf(err, err_len, "bad listen address '%s' (want host:port, [ip6]:port or :port)", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int g = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
    if (g) {
        snprintf(err, err_len, "listen address '%s': %s", addr, gai_strerror(g));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64)) {
        snprintf(err, err_len, "cannot listen on '%s': %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        format_sockaddr((struct sockaddr *)&ss, bound, bound_cap);
    return fd;
}

int cli_http_start(const cli_http_config *c, cli_http **out, char *err, size_t err_len)
{
    *out = NULL;
    cli_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    h->sw = c->sw;
    h->disc = c->disc;
    h->render = c->render;
    h->render_user = c->render_user;
    if (!h->sw && !h->render) {
        free(h);
        snprintf(err, err_len, "nothing to serve");
        return -1;
    }
    h->log = c->log;
    h->fd = bind_listener(c->listen_addr, h->addr, sizeof h->addr, err, err_len);
    if (h->fd < 0) {
        free(h);
        return -1;
    }
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                            on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_LISTEN_SOCKET,
                            h->fd, MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, err_len, "cannot start the HTTP server on %s", h->addr);
        close(h->fd);
        free(h);
        return -1;
    }
    *out = h;
    return 0;
}

const char *cli_http_addr(const cli_http *h)
{
    return h->addr;
}

void cli_http_stop(cli_http *h)
{
    if (!h)
        return;
    /* A running daemon owns the listening socket and closes it here (a
     * failed start leaves it to us, cli_http_start closes it then). */
    MHD_stop_daemon(h->d);
    free(h);
}

/* ---- client ------------------------------------------------------------------ */

#define GET_MAX_BYTES (256u << 20)

/* The client's deadline clock. */
static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pf = {.fd = fd, .events = events};
        int r = poll(&pf, 1, (int)left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* A non-blocking connect to each resolved address in turn, within the deadline. */
static int connect_to(const char *host, const char *port, int64_t deadline, char *err, size_t err_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g) {
        snprintf(err, err_len, "%s: %s", host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        int e = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            e = errno;
            if (e == EINPROGRESS) {
                socklen_t l = sizeof e;
                int w = wait_fd(fd, POLLOUT, deadline);
                e = w == 1 ? (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) ? errno : e) : w == 0 ? ETIMEDOUT : errno;
            }
        }
        if (!e)
            break;
        snprintf(err, err_len, "cannot connect to %s:%s: %s", host, port, strerror(e));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Decodes a chunked body in place; its new length, or -1. */
static long dechunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = strstr(end, "\r\n");
        if (end == b + in || !crlf)
            return -1;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0)
            return (long)out;
        if (sz > n - in || n - in - sz < 2)
            return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
}

int cli_http_get(const char *url, int timeout_ms, int *status, char **body, size_t *body_len, char *err,
                 size_t err_len)
{
    *body = NULL;
    *body_len = 0;
    if (strncmp(url, "http://", 7)) {
        snprintf(err, err_len, "'%s': only http:// URLs are supported", url);
        return -1;
    }
    const char *hp = url + 7, *path = strchr(hp, '/');
    size_t hpl = path ? (size_t)(path - hp) : strlen(hp);
    char hostport[300], host[256], port[8];
    if (hpl == 0 || hpl >= sizeof hostport) {
        snprintf(err, err_len, "'%s': no host", url);
        return -1;
    }
    memcpy(hostport, hp, hpl);
    hostport[hpl] = '\0';
    bool has_port = hostport[0] == '[' ? strstr(hostport, "]:") != NULL : strchr(hostport, ':') != NULL;
    char withport[320];
    snprintf(withport, sizeof withport, has_port ? "%s" : "%s:80", hostport);
    if (split_addr(withport, host, sizeof host, port, sizeof port) || !host[0]) {
        snprintf(err, err_len, "'%s': bad host or port", url);
        return -1;
    }
    int64_t deadline = mono_ms() + timeout_ms;
    int fd = connect_to(host, port, deadline, err, err_len);
    if (fd < 0)
        return -1;

    char req[1024];
    int rl = snprintf(req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tm2p2p\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                      path ? path : "/", hostport);
    if (rl < 0 || (size_t)rl >= sizeof req) {
        close(fd);
        snprintf(err, err_len, "'%s': too long", url);
        return -1;
    }
    for (size_t off = 0; off < (size_t)rl;) {
        ssize_t w = send(fd, req + off, (size_t)rl - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) != 1)
                goto timeout;
        } else {
            snprintf(err, err_len, "sending to %s: %s", hostport, strerror(errno));
            close(fd);
            return -1;
        }
    }
    tm2__buf b = {0};
    for (;;) {
        char tmp[65536];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r > 0) {
            tm2__buf_add(&b, tmp, (size_t)r);
            if (b.oom || b.len > GET_MAX_BYTES) {
                snprintf(err, err_len, "answer from %s too large", hostport);
                close(fd);
                tm2__buf_free(&b);
                return -1;
            }
        } else if (r == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) != 1) {
                tm2__buf_free(&b);
                goto timeout;
            }
        } else {
            snprintf(err, err_len, "reading from %s: %s", hostport, strerror(errno));
            close(fd);
            tm2__buf_free(&b);
            return -1;
        }
    }
    close(fd);

    char *hend = b.p ? strstr(b.p, "\r\n\r\n") : NULL;
    int code = 0;
    if (!hend || sscanf(b.p, "HTTP/1.%*[01] %d", &code) != 1) {
        snprintf(err, err_len, "%s did not answer in HTTP", hostport);
        tm2__buf_free(&b);
        return -1;
    }
    *hend = '\0';
    size_t hlen = (size_t)(hend - b.p) + 4, n = b.len - hlen;
    bool chunked = false;
    long clen = -1;
    for (char *line = strstr(b.p, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (!strncasecmp(line, "content-length:", 15))
            clen = strtol(line + 15, NULL, 10);
        else if (!strncasecmp(line, "transfer-encoding:", 18) && strstr(line, "chunked"))
            chunked = true;
    }
    memmove(b.p, b.p + hlen, n);
    b.p[n] = '\0';
    if (chunked) {
        long dn = dechunk(b.p, n);
        if (dn < 0) {
            snprintf(err, err_len, "bad chunked answer from %s", hostport);
            tm2__buf_free(&b);
            return -1;
        }
        n = (size_t)dn;
    } else if (clen >= 0 && (size_t)clen > n) {
        snprintf(err, err_len, "answer from %s cut short (%zu of %ld bytes)", hostport, n, clen);
        tm2__buf_free(&b);
        return -1;
    } else if (clen >= 0) {
        n = (size_t)clen;
    }
    b.p[n] = '\0';
    *status = code;
    *body = b.p;
    *body_len = n;
    return 0;
timeout:
    close(fd);
    snprintf(err, err_len, "%s did not answer within %d ms", hostport, timeout_ms);
    return -1;
}
