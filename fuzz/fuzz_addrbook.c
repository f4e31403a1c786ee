/* Address book loader on arbitrary file contents. A loaded book is checked
 * against its invariants, saved to text and loaded again: the second book
 * must hold the same entries, be clean, and encode to the same bytes. Then
 * the book is driven a little (pick, marks, expire, add). */
#include <stdlib.h>
#include <string.h>

#include "discovery/addrbook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define NOW 1767225600
/* Small, so the bound and eviction paths run. */
#define MAX 16

static bool skip_odd(const tm2_id *id, void *user)
{
    (void)user;
    return (id->s[39] & 1) != 0;
}

static void check_book(const tm2__addrbook *b, int64_t now)
{
    CHECK(tm2__addrbook_size(b) <= MAX);
    for (size_t i = 0; i < tm2__addrbook_size(b); i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_at(b, i);
        CHECK(e != NULL);
        CHECK(tm2_netaddr_validate(&e->addr) == 0);
        CHECK(e->last_seen >= 0 && e->last_seen <= now);
        CHECK(e->last_attempt >= 0 && e->last_attempt <= now);
        CHECK(e->last_success >= 0 && e->last_success <= now);
        CHECK(tm2__addrbook_find(b, &e->addr.id) == e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    /* A private copy, so reads past the end hit the allocator's redzone. */
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);

    tm2_id self;
    memset(&self, 0, sizeof self);
    memcpy(self.s, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl", TM2_ID_LEN);
    tm2__addrbook_config cfg = {.max_entries = MAX};
    tm2__addrbook *b = NULL;
    CHECK(tm2__addrbook_new(&self, &cfg, &b) == 0);

    char why[256];
    int n = tm2__addrbook_load_buffer(b, copy, size, NOW, why, sizeof why);
    CHECK(strlen(why) < sizeof why);
    CHECK(n >= 0 || n == TM2_EDECODE || n == TM2_ENOMEM);
    if (n < 0) {
        CHECK(tm2__addrbook_size(b) == 0);
    } else {
        CHECK((size_t)n == tm2__addrbook_size(b));
        check_book(b, NOW);
        CHECK(tm2__addrbook_find(b, &self) == NULL);

        char *text;
        size_t len;
        CHECK(tm2__addrbook_encode(b, &text, &len, NULL) == 0);
        CHECK(strlen(text) == len && len <= TM2__ADDRBOOK_FILE_MAX);
        tm2__addrbook *c = NULL;
        CHECK(tm2__addrbook_new(&self, &cfg, &c) == 0);
        CHECK(tm2__addrbook_load_buffer(c, text, len, NOW, NULL, 0) == n);
        CHECK(!tm2__addrbook_dirty(c));
        for (size_t i = 0; i < (size_t)n; i++) {
            const tm2__addrbook_entry *x = tm2__addrbook_at(b, i);
            const tm2__addrbook_entry *y = tm2__addrbook_find(c, &x->addr.id);
            CHECK(y != NULL);
            CHECK(tm2_netaddr_equal(&x->addr, &y->addr));
            CHECK(x->last_seen == y->last_seen && x->attempts == y->attempts &&
                  x->last_attempt == y->last_attempt && x->last_success == y->last_success);
        }
        char *text2;
        size_t len2;
        CHECK(tm2__addrbook_encode(c, &text2, &len2, NULL) == 0);
        CHECK(len2 == len && memcmp(text, text2, len) == 0);
        free(text2);
        free(text);
        tm2__addrbook_free(c);
    }

    /* Drive it: every picked entry is in the book and past its back-off. */
    int64_t now = NOW + (size ? (int64_t)data[0] * 1000 : 0);
    tm2_netaddr out[MAX];
    size_t k = tm2__addrbook_pick(b, now, size, skip_odd, NULL, out, MAX);
    CHECK(k <= tm2__addrbook_size(b));
    for (size_t i = 0; i < k; i++) {
        const tm2__addrbook_entry *e = tm2__addrbook_find(b, &out[i].id);
        CHECK(e != NULL && !skip_odd(&e->addr.id, NULL));
        CHECK(tm2__addrbook_retry_at(b, e) <= now);
        CHECK(tm2__addrbook_mark_attempt(b, &out[i].id, now) == 0);
        if (i & 1)
            CHECK(tm2__addrbook_mark_failure(b, &out[i].id, now) == 0);
        else
            CHECK(tm2__addrbook_mark_success(b, &out[i].id, now) == 0);
    }
    tm2__addrbook_expire(b, now + TM2__ADDRBOOK_DEAD_AFTER);
    check_book(b, now);
    /* Re-adding what is there never grows the book past its bound. */
    for (size_t i = 0; i < k; i++) {
        int rc = tm2__addrbook_add(b, &out[i], now + 1);
        CHECK(rc == TM2__AB_REFRESHED || rc == TM2__AB_ADDED);
    }
    CHECK(tm2__addrbook_size(b) <= MAX);
    tm2__addrbook_free(b);
    free(copy);
    return 0;
}
