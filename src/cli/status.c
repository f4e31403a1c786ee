/* tm2p2p status: a running node's /status and /peers, as a table. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/http.h"

static const char status_usage[] =
    "usage: tm2p2p status [--url URL] [--json] [--timeout MS]\n"
    "\n"
    "Prints a running node's status and its peers, read from its HTTP endpoints\n"
    "(tm2p2p node --prometheus): URL/status and URL/peers.\n"
    "\n"
    "  --url URL      the node's endpoints, http://HOST:PORT [http://127.0.0.1:26660]\n"
    "  --json         print the two JSON documents as they came, one per line\n"
    "  --timeout MS   for each request [5000]\n"
    "\n"
    "Exit status: 0, 1 when the node cannot be read, 2 on bad usage.\n";

/* Missing or mistyped fields print as empty or 0: the table is for reading. */
static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* GETs base+path and parses it; NULL (with a message on stderr) on failure. */
static cJSON *fetch(const char *base, const char *path, int timeout_ms, bool raw)
{
    char url[1200], err[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    int code;
    char *body;
    size_t len;
    if (cli_http_get(url, timeout_ms, &code, &body, &len, err, sizeof err)) {
        fprintf(stderr, "tm2p2p status: %s\n", err);
        return NULL;
    }
    if (code != 200) {
        fprintf(stderr, "tm2p2p status: %s: HTTP %d\n", url, code);
        free(body);
        return NULL;
    }
    if (raw)
        printf("%s\n", body);
    cJSON *j = cJSON_ParseWithLength(body, len);
    free(body);
    if (!j || !cJSON_IsObject(j)) {
        fprintf(stderr, "tm2p2p status: %s: not a JSON object\n", url);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* The node's part: one line per fact. */
static void print_status(const cJSON *st)
{
    const cJSON *ni = cJSON_GetObjectItemCaseSensitive(st, "node_info");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(st, "peers");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(st, "pending_handshakes");
    printf("%-11s %s\n", "node", str(st, "node_id"));
    printf("%-11s %s\n", "moniker", str(ni, "moniker"));
    printf("%-11s %s\n", "network", str(ni, "network"));
    printf("%-11s %s\n", "version", str(ni, "version"));
    printf("%-11s %s\n", "listen", str(st, "listen_addr"));
    printf("%-11s %s\n", "external", str(st, "external_addr"));
    printf("%-11s %.1f s\n", "uptime", num(st, "uptime_seconds"));
    printf("%-11s %.0f (inbound %.0f, outbound %.0f; persistent %.0f, unconditional %.0f, private %.0f)\n",
           "peers", num(p, "inbound") + num(p, "outbound"), num(p, "inbound"), num(p, "outbound"),
           num(p, "persistent"), num(p, "unconditional"), num(p, "private"));
    printf("%-11s queued %.0f, in flight %.0f\n", "dials", num(st, "dials_queued"), num(st, "dials_in_flight"));
    printf("%-11s inbound %.0f, outbound %.0f\n", "handshakes", num(h, "inbound"), num(h, "outbound"));
    printf("%-11s sent %.0f B, received %.0f B\n", "wire", num(st, "wire_sent_bytes"),
           num(st, "wire_received_bytes"));
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(st, "addrbook");
    if (b)
        printf("%-11s tried %.0f, new %.0f\n", "addrbook", num(b, "tried"), num(b, "new"));
}

/* One row per peer and channel; a peer's own columns only on its first row. */
static void print_peers(const cJSON *pj)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(pj, "peers");
    printf("\n%-40s  %-8s  %10s  %6s  %-7s  %12s  %12s  %5s  %s\n", "PEER", "DIR", "UPTIME_S", "RTT_MS",
           "CHANNEL", "SENT_BYTES", "RECV_BYTES", "QUEUE", "ADDRESS");
    const cJSON *p;
    cJSON_ArrayForEach(p, arr)
    {
        const char *addr = str(p, "address"), *at = strchr(addr, '@');
        const cJSON *chs = cJSON_GetObjectItemCaseSensitive(p, "channels"), *ch;
        bool first = true;
        char up[32], rtt[32] = "-";
        snprintf(up, sizeof up, "%.1f", num(p, "uptime_seconds"));
        if (cJSON_GetObjectItemCaseSensitive(p, "rtt_seconds"))   /* absent until measured */
            snprintf(rtt, sizeof rtt, "%.0f", num(p, "rtt_seconds") * 1000);
        cJSON_ArrayForEach(ch, chs)
        {
            printf("%-40s  %-8s  %10s  %6s  %-7s  %12.0f  %12.0f  %5.0f  %s\n", first ? str(p, "id") : "",
                   first ? str(p, "direction") : "", first ? up : "", first ? rtt : "", str(ch, "id"),
                   num(ch, "sent_bytes"), num(ch, "received_bytes"), num(ch, "send_queue"),
                   first ? (at ? at + 1 : addr) : "");
            first = false;
        }
        if (first)
            printf("%-40s  %-8s  %10s  %6s  %-7s  %12s  %12s  %5s  %s\n", str(p, "id"), str(p, "direction"), up,
                   rtt, "-", "-", "-", "-", at ? at + 1 : addr);
    }
    if (!cJSON_GetArraySize(arr))
        printf("(no peers)\n");
}

int cli_status(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:26660";
    bool raw = false;
    long timeout = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(status_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            raw = true;
        } else if (!strncmp(a, "--url=", 6)) {
            url = a + 6;
        } else if (!strcmp(a, "--url") && i + 1 < argc) {
            url = argv[++i];
        } else if ((!strcmp(a, "--timeout") && i + 1 < argc) || !strncmp(a, "--timeout=", 10)) {
            const char *v = a[9] == '=' ? a + 10 : argv[++i];
            char *end;
            timeout = strtol(v, &end, 10);
            if (*end || timeout < 1 || timeout > 600000) {
                fprintf(stderr, "tm2p2p status: --timeout: '%s' is not from 1 to 600000\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "tm2p2p status: unknown or incomplete option '%s'\n(see 'tm2p2p status --help')\n", a);
            return 2;
        }
    }
    if (strncmp(url, "http://", 7)) {
        fprintf(stderr, "tm2p2p status: --url: '%s' is not an http:// URL\n", url);
        return 2;
    }
    char base[1024];
    snprintf(base, sizeof base, "%s", url);
    size_t bl = strlen(base);
    while (bl > 7 && base[bl - 1] == '/')
        base[--bl] = '\0';
    cJSON *st = fetch(base, "/status", (int)timeout, raw);
    cJSON *pj = st ? fetch(base, "/peers", (int)timeout, raw) : NULL;
    if (st && pj && !raw) {
        print_status(st);
        print_peers(pj);
    }
    int rc = st && pj ? 0 : 1;
    cJSON_Delete(st);
    cJSON_Delete(pj);
    return rc;
}
