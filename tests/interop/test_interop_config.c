/* config.toml: the file a reference node writes into a fresh home (tm2ref
 * config) read by tm2p2p's config reader (src/cli/config_toml.h). Every
 * [p2p] value tm2p2p reads must come out as the reference reads it back from
 * the same file, and the top-level moniker and node_key_file too. Every
 * [p2p] key of the file must be checked here and none may be reported
 * unknown by the reader, so a new reference key cannot slip by. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/config_toml.h"
#include "refproc.h"
#include "tv.h"

#define WAIT_MS  20000
#define MAX_KEYS 64

typedef struct ref_value {
    char key[64];
    char value[256];    /* strings unquoted */
    bool seen;          /* compared or accounted for */
} ref_value;

typedef struct warnings {
    char keys[MAX_KEYS][64];
    size_t n;
} warnings;

/* "config.toml:12: unknown key p2p.NAME ignored" -> NAME */
static void on_warn(void *user, const char *msg)
{
    warnings *w = user;
    const char *k = strstr(msg, "unknown key p2p.");
    assert_non_null(k);
    k += strlen("unknown key p2p.");
    const char *end = strchr(k, ' ');
    assert_non_null(end);
    assert_true(w->n < MAX_KEYS);
    snprintf(w->keys[w->n++], sizeof w->keys[0], "%.*s", (int)(end - k), k);
}

/* Go-quoted strings from tm2ref carry no escapes for these values. */
static void unquote(char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        assert_null(strchr(s, '\\'));
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
    }
}

static ref_value *find(ref_value *v, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].key, key))
            return &v[i];
    fail_msg("the reference printed no value for %s", key);
    return NULL;
}

static void eq_str(ref_value *v, size_t n, const char *key, const char *got)
{
    ref_value *r = find(v, n, key);
    if (strcmp(r->value, got))
        fail_msg("%s: reference \"%s\", tm2p2p \"%s\"", key, r->value, got);
    r->seen = true;
}

static void eq_int(ref_value *v, size_t n, const char *key, long long got)
{
    ref_value *r = find(v, n, key);
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", got);
    if (strcmp(r->value, buf))
        fail_msg("%s: reference %s, tm2p2p %s", key, r->value, buf);
    r->seen = true;
}

static void eq_bool(ref_value *v, size_t n, const char *key, bool got)
{
    eq_str(v, n, key, got ? "true" : "false");
}

typedef struct fixture {
    char home[64];
    cli_config c;           /* freed by the teardown on every path */
    bool have_c;
} fixture;

static int setup(void **state)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    snprintf(f.home, sizeof f.home, "/tmp/tm2-interop-config-XXXXXX");
    if (!mkdtemp(f.home))
        return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->have_c)
        cli_config_free(&f->c);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->home);
    return system(cmd) == 0 ? 0 : -1;
}

static void reference_default_config_reads_the_same(void **state)
{
    fixture *f = *state;
    const char *home = f->home;

    const char *args[] = {"config", "--home", home, NULL};
    refproc p;
    refproc_start(&p, args);
    ref_value base[2], p2p[MAX_KEYS];
    size_t n_base = 0, n_p2p = 0;
    char path[512] = "";
    char line[REFPROC_LINE_MAX];
    while (refproc_line(&p, line, sizeof line, WAIT_MS) == 0) {
        char *w[3];
        char *rest = NULL;
        char *sp = strchr(line, ' ');
        if (sp && (sp = strchr(sp + 1, ' ')) != NULL) {
            *sp = '\0';
            rest = sp + 1;
        }
        int nw = tv_split(line, ' ', w, 3);
        if (nw == 2 && !strcmp(w[0], "CONFIG")) {
            snprintf(path, sizeof path, "%s", w[1]);
            continue;
        }
        assert_true(nw == 2 && rest != NULL);
        ref_value *r;
        if (!strcmp(w[0], "BASE")) {
            assert_true(n_base < 2);
            r = &base[n_base++];
        } else {
            assert_string_equal(w[0], "P2P");
            assert_true(n_p2p < MAX_KEYS);
            r = &p2p[n_p2p++];
        }
        snprintf(r->key, sizeof r->key, "%s", w[1]);
        snprintf(r->value, sizeof r->value, "%s", rest);
        unquote(r->value);
        r->seen = false;
    }
    assert_int_equal(refproc_wait(&p, WAIT_MS), 0);
    refproc_stop(&p);
    assert_true(path[0] != '\0');
    assert_int_equal(n_base, 2);
    assert_true(n_p2p >= 14);

    cli_config *cp = &f->c;
    assert_int_equal(cli_config_defaults(cp), 0);
    f->have_c = true;
    warnings warns = {.n = 0};
    char err[512] = "";
    bool found = false;
    int r = cli_config_load(cp, path, &found, on_warn, &warns, err, sizeof err);
    if (r != 0)
        fail_msg("tm2p2p refuses the reference's config.toml: %s", err);
    assert_true(found);

    eq_str(base, 2, "moniker", cp->moniker);
    eq_str(base, 2, "node_key_file", cp->node_key_file);

    eq_str(p2p, n_p2p, "laddr", cp->laddr);
    eq_str(p2p, n_p2p, "external_address", cp->external_address);
    eq_str(p2p, n_p2p, "seeds", cp->seeds);
    eq_str(p2p, n_p2p, "persistent_peers", cp->persistent_peers);
    eq_str(p2p, n_p2p, "private_peer_ids", cp->private_peer_ids);
    eq_str(p2p, n_p2p, "addr_book_file", cp->addr_book_file);
    eq_int(p2p, n_p2p, "max_num_inbound_peers", (long long)cp->max_num_inbound_peers);
    eq_int(p2p, n_p2p, "max_num_outbound_peers", (long long)cp->max_num_outbound_peers);
    eq_int(p2p, n_p2p, "flush_throttle_timeout", (long long)cp->flush_throttle_timeout_ns);
    eq_int(p2p, n_p2p, "max_packet_msg_payload_size", (long long)cp->max_packet_msg_payload_size);
    eq_int(p2p, n_p2p, "send_rate", (long long)cp->send_rate);
    eq_int(p2p, n_p2p, "recv_rate", (long long)cp->recv_rate);
    eq_bool(p2p, n_p2p, "pex", cp->pex);
    eq_bool(p2p, n_p2p, "allow_duplicate_ip", cp->allow_duplicate_ip);

    /* The receive limits are in v1.2.0 already; max_send_buffer_bytes is new
     * in v1.7.1. */
    eq_int(p2p, n_p2p, "max_recv_buffer_bytes", (long long)cp->max_recv_buffer_bytes);
    eq_int(p2p, n_p2p, "recv_assembly_timeout", (long long)cp->recv_assembly_timeout_ns);
    if (TM2REF_V171)
        eq_int(p2p, n_p2p, "max_send_buffer_bytes", (long long)cp->max_send_buffer_bytes);
    for (size_t i = 0; i < n_p2p; i++)
        if (!p2p[i].seen)
            fail_msg("[p2p] %s = %s in the reference's file is not checked here", p2p[i].key,
                     p2p[i].value);
    for (size_t i = 0; i < warns.n; i++)
        fail_msg("tm2p2p reports [p2p] %s as unknown", warns.keys[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reference_default_config_reads_the_same, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
