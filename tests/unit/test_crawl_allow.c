/* The crawler's dial policy (src/crawl/allow.c): CIDR parsing, matching,
 * the public-unicast default and the addresses never dialled. */
#include <stdio.h>
#include <string.h>

#include "crawl/allow.h"
#include "tv.h"

static void ip_of(const char *s, uint8_t ip[16])
{
    char buf[80];
    snprintf(buf, sizeof buf, strchr(s, ':') ? "[%s]:1" : "%s:1", s);
    tm2_netaddr a;
    int r = tm2_netaddr_parse(buf, TM2_NETADDR_NO_ID, &a);
    if (r)
        fail_msg("cannot parse %s: %s", s, tm2_strerror(r));
    memcpy(ip, a.ip, 16);
}

static bool allowed(const crawl_allow *a, const char *ip)
{
    uint8_t b[16];
    ip_of(ip, b);
    return crawl_allow_ip(a, b);
}

static bool public_ip(const char *ip)
{
    uint8_t b[16];
    ip_of(ip, b);
    return crawl_ip_is_public(b);
}

static void cidr_parse_and_format(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"127.0.0.0/8", "127.0.0.0/8"},
        {"10.0.0.0/8", "10.0.0.0/8"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"192.168.1.7", "192.168.1.7/32"},
        {"192.168.1.7/32", "192.168.1.7/32"},
        {"fd00::/8", "fd00::/8"},
        {"::1", "::1/128"},
        {"2001:db8:1::/48", "2001:db8:1::/48"},
        {"::/0", "::/0"},
        {"::ffff:127.0.0.0/104", "::ffff:127.0.0.0/104"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        crawl_cidr c;
        char why[128] = "", out[80];
        if (crawl_cidr_parse(ok[i].in, &c, why, sizeof why) != 0)
            fail_msg("%s refused: %s", ok[i].in, why);
        assert_true(crawl_cidr_format(&c, out, sizeof out) > 0);
        assert_string_equal(out, ok[i].out);
    }
    static const char *const bad[] = {
        "", "/8", "127.0.0.0/", "127.0.0.0/33", "127.0.0.0/-1", "127.0.0.0/8x", "127.0.0.0/08",
        "10.1.0.0/8",      /* host bits set */
        "127.1/8",         /* legacy short form */
        "127.000.0.0/8",   /* leading zeros */
        "256.0.0.0/8", "fd00::/129", "fd00::1/8", "fe80::1%eth0/64", "localhost", "1.2.3.4/1234",
        "example.com/24", "1.2.3.4 /8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        crawl_cidr c;
        char why[128] = "";
        if (crawl_cidr_parse(bad[i], &c, why, sizeof why) == 0)
            fail_msg("'%s' accepted", bad[i]);
        assert_true(why[0] != '\0');
    }
    crawl_cidr c;
    assert_int_equal(crawl_cidr_parse(NULL, &c, NULL, 0), TM2_EINVAL);
}

static void cidr_contains(void **state)
{
    (void)state;
    crawl_cidr c;
    uint8_t ip[16];
    assert_int_equal(crawl_cidr_parse("127.0.0.0/8", &c, NULL, 0), 0);
    ip_of("127.0.0.1", ip);
    assert_true(crawl_cidr_contains(&c, ip));
    ip_of("127.255.255.254", ip);
    assert_true(crawl_cidr_contains(&c, ip));
    ip_of("128.0.0.1", ip);
    assert_false(crawl_cidr_contains(&c, ip));
    ip_of("::1", ip);
    assert_false(crawl_cidr_contains(&c, ip));
    /* IPv4-mapped and dotted forms are one address. */
    ip_of("::ffff:127.0.0.1", ip);
    assert_true(crawl_cidr_contains(&c, ip));

    assert_int_equal(crawl_cidr_parse("172.16.0.0/12", &c, NULL, 0), 0);
    ip_of("172.31.255.255", ip);
    assert_true(crawl_cidr_contains(&c, ip));
    ip_of("172.32.0.0", ip);
    assert_false(crawl_cidr_contains(&c, ip));
    ip_of("172.15.255.255", ip);
    assert_false(crawl_cidr_contains(&c, ip));

    assert_int_equal(crawl_cidr_parse("fd00::/8", &c, NULL, 0), 0);
    ip_of("fdff::1", ip);
    assert_true(crawl_cidr_contains(&c, ip));
    ip_of("fe00::1", ip);
    assert_false(crawl_cidr_contains(&c, ip));

    assert_int_equal(crawl_cidr_parse("0.0.0.0/0", &c, NULL, 0), 0);
    ip_of("8.8.8.8", ip);
    assert_true(crawl_cidr_contains(&c, ip));
    ip_of("2600::1", ip);
    assert_false(crawl_cidr_contains(&c, ip));   /* IPv4 /0 covers IPv4 only */

    assert_int_equal(crawl_cidr_parse("::/0", &c, NULL, 0), 0);
    assert_true(crawl_cidr_contains(&c, ip));
}

static void public_unicast(void **state)
{
    (void)state;
    static const char *const yes[] = {"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0",
                                      "172.15.0.1", "172.32.0.1", "192.169.0.1", "198.20.0.1",
                                      "223.255.255.255", "2600::1", "2a00:1450::1", "2001:200::1"};
    static const char *const no[] = {
        "0.1.2.3", "10.0.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "172.16.0.1",
        "172.31.255.255", "192.0.0.1", "192.0.2.1", "192.88.99.1", "192.168.0.1", "198.18.0.1",
        "198.19.255.255", "198.51.100.1", "203.0.113.9", "224.0.0.1", "239.1.1.1", "240.0.0.1",
        "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "2001:db8::1",
        "2001::1", "2001:1ff::1", "2002:a00:1::1", "64:ff9b::808:808"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!public_ip(yes[i]))
            fail_msg("%s should be public", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (public_ip(no[i]))
            fail_msg("%s should not be public", no[i]);
    /* 3fff::/20 is new documentation space, but inside 2000::/3: public here. */
    assert_true(public_ip("3fff::1"));
}

static void default_policy(void **state)
{
    (void)state;
    crawl_allow a;
    crawl_allow_default(&a);
    assert_true(allowed(&a, "8.8.8.8"));
    assert_true(allowed(&a, "2600::1"));
    assert_false(allowed(&a, "127.0.0.1"));
    assert_false(allowed(&a, "10.1.2.3"));
    assert_false(allowed(&a, "192.168.1.1"));
    assert_false(allowed(&a, "::1"));
    assert_false(allowed(&a, "fd00::1"));
    char buf[64];
    assert_int_equal(crawl_allow_format(&a, buf, sizeof buf), 6);
    assert_string_equal(buf, "public");
}

static void listed_policy(void **state)
{
    (void)state;
    crawl_allow a;
    char why[128] = "";
    /* A list without "public" allows only its blocks. */
    assert_int_equal(crawl_allow_parse("127.0.0.0/8", &a, why, sizeof why), 0);
    assert_true(allowed(&a, "127.0.0.1"));
    assert_true(allowed(&a, "127.3.4.5"));
    assert_false(allowed(&a, "8.8.8.8"));
    assert_false(allowed(&a, "10.0.0.1"));
    assert_false(allowed(&a, "::1"));

    assert_int_equal(crawl_allow_parse(" public , 10.0.0.0/8,::1 ", &a, why, sizeof why), 0);
    assert_true(a.public_ok);
    assert_int_equal(a.n, 2);
    assert_true(allowed(&a, "8.8.8.8"));
    assert_true(allowed(&a, "10.9.9.9"));
    assert_true(allowed(&a, "::1"));
    assert_false(allowed(&a, "127.0.0.1"));
    assert_false(allowed(&a, "192.168.0.1"));
    char buf[128];
    assert_true(crawl_allow_format(&a, buf, sizeof buf) > 0);
    assert_string_equal(buf, "public,10.0.0.0/8,::1/128");
    assert_int_equal(crawl_allow_format(&a, buf, 10), TM2_ENOSPC);

    /* Never dialled, whatever the list says. */
    assert_int_equal(crawl_allow_parse("0.0.0.0/0,::/0", &a, why, sizeof why), 0);
    assert_true(allowed(&a, "10.0.0.1"));
    assert_false(allowed(&a, "0.0.0.0"));
    assert_false(allowed(&a, "255.255.255.255"));
    assert_false(allowed(&a, "224.0.0.251"));
    assert_false(allowed(&a, "::"));
    assert_false(allowed(&a, "ff02::1"));

    /* Port 0 is never dialled. */
    assert_int_equal(crawl_allow_parse("127.0.0.0/8", &a, why, sizeof why), 0);
    tm2_netaddr na;
    assert_int_equal(tm2_netaddr_parse("127.0.0.1:0", TM2_NETADDR_NO_ID, &na), 0);
    assert_false(crawl_allow_addr(&a, &na));
    na.port = 26656;
    assert_true(crawl_allow_addr(&a, &na));
    assert_false(crawl_allow_addr(&a, NULL));
    assert_false(crawl_allow_ip(NULL, na.ip));
}

static void bad_lists(void **state)
{
    (void)state;
    static const char *const bad[] = {"", ",", "127.0.0.0/8,", ",127.0.0.0/8", "127.0.0.0/8,,::1",
                                      "public,nonsense", "publicc", "PUBLIC", "10.0.0.1/8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        crawl_allow a;
        char why[128] = "";
        if (crawl_allow_parse(bad[i], &a, why, sizeof why) == 0)
            fail_msg("'%s' accepted", bad[i]);
        assert_true(why[0] != '\0');
    }
    crawl_allow a;
    assert_int_equal(crawl_allow_parse(NULL, &a, NULL, 0), TM2_EINVAL);
    /* Too many blocks. */
    char list[CRAWL_ALLOW_MAX * 20 + 40] = "";
    size_t len = 0;
    for (int i = 0; i <= CRAWL_ALLOW_MAX; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s10.%d.0.0/16", i ? "," : "", i);
    assert_int_equal(crawl_allow_parse(list, &a, NULL, 0), TM2_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cidr_parse_and_format), cmocka_unit_test(cidr_contains),
        cmocka_unit_test(public_unicast),        cmocka_unit_test(default_policy),
        cmocka_unit_test(listed_policy),         cmocka_unit_test(bad_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
