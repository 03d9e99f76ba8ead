/* test_netguard.c - which addresses a webhook may reach (common/netguard.c): the
 * URL syntax, every refused range, IPv4 inside IPv6, and the allow-list. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "netguard.h"

/* 1 if g allows the address text (IPv4 or IPv6). */
static int allowed(const struct netguard *g, const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        fail_msg("bad address in test: %s", text);
    char why[200];
    return netguard_addr_allowed(g, (struct sockaddr *)&ss, why, sizeof(why));
}

static void test_refused_by_default(void **state)
{
    (void)state;
    struct netguard g;
    char err[128];
    assert_int_equal(netguard_init(&g, NULL, err, sizeof(err)), 0);
    static const char *const refused[] = {
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.1.2.3",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.1.1.1",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:c0a8:0101::1",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (allowed(&g, refused[i]))
            fail_msg("%s was allowed", refused[i]);
    static const char *const public[] = {
        "1.1.1.1",         "8.8.8.8",        "100.63.255.255",    "100.128.0.0",
        "172.15.255.255",  "172.32.0.0",     "192.167.255.255",   "11.0.0.1",
        "2606:4700::1111", "::ffff:8.8.8.8", "2002:0808:0808::1",
    };
    for (size_t i = 0; i < sizeof(public) / sizeof(public[0]); i++)
        if (!allowed(&g, public[i]))
            fail_msg("%s was refused", public[i]);
}

static void test_why(void **state)
{
    (void)state;
    struct netguard g;
    struct sockaddr_in sa;
    char why[200];
    netguard_init(&g, "", why, sizeof(why));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "169.254.169.254", &sa.sin_addr);
    assert_int_equal(netguard_addr_allowed(&g, (struct sockaddr *)&sa, why, sizeof(why)),
                     0);
    assert_string_equal(why, "169.254.169.254 is link-local (169.254.0.0/16), and not in "
                             "WEBHOOK_ALLOW");
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(netguard_addr_allowed(&g, &un, why, sizeof(why)), 0);
}

static void test_allow_list(void **state)
{
    (void)state;
    struct netguard g;
    char err[160];
    assert_int_equal(netguard_init(&g, " 127.0.0.1, 10.1.0.0/16 ,fd00::/8,Hooks.Internal",
                                   err, sizeof(err)),
                     0);
    assert_true(allowed(&g, "127.0.0.1"));
    assert_false(allowed(&g, "127.0.0.2"));
    assert_true(allowed(&g, "10.1.200.3"));
    assert_false(allowed(&g, "10.2.0.1"));
    assert_true(allowed(&g, "fd00::5"));
    assert_false(allowed(&g, "fc00::5"));
    assert_true(netguard_host_listed(&g, "hooks.internal"));
    assert_true(netguard_host_listed(&g, "HOOKS.internal"));
    assert_false(netguard_host_listed(&g, "other.internal"));
    assert_int_equal(netguard_init(&g, "10.0.0.0/33", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "10.0.0.0/33"));
    assert_int_equal(netguard_init(&g, "host/8", err, sizeof(err)), -1);
    assert_int_equal(netguard_init(&g, "bad host!", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "WEBHOOK_ALLOW"));
}

static void test_url_parse(void **state)
{
    (void)state;
    struct netguard_url u;
    char err[160];
    assert_int_equal(
        netguard_url_parse("https://Hooks.example.com/a/b?c=d#e", &u, err, sizeof(err)),
        0);
    assert_true(u.https);
    assert_string_equal(u.host, "Hooks.example.com");
    assert_int_equal(u.port, 443);
    assert_int_equal(netguard_url_parse("HTTP://10.0.0.1:8080", &u, err, sizeof(err)), 0);
    assert_false(u.https);
    assert_string_equal(u.host, "10.0.0.1");
    assert_int_equal(u.port, 8080);
    assert_int_equal(netguard_url_parse("http://[::1]:9/x", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 9);
    static const char *const bad[] = {
        "",
        "example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://",
        "http:///path",
        "http://user@example.com/",
        "http://a:b@example.com/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:80x/",
        "http://example.com:/",
        "http://exa mple.com/",
        "http://example.com\\@evil.com/",
        "http://[::1/",
        "http://[zz::1]/",
        "http://[::1]x/",
        "http://ex%61mple.com/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (netguard_url_parse(bad[i], &u, err, sizeof(err)) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    char longurl[NETGUARD_URL_MAX + 2];
    memset(longurl, 'a', sizeof(longurl));
    memcpy(longurl, "http://example.com/", 19);
    longurl[NETGUARD_URL_MAX + 1] = '\0';
    assert_int_equal(netguard_url_parse(longurl, &u, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
}

/* Address literals need no DNS: every one is judged like a resolved address. */
static void test_check_url_literals(void **state)
{
    (void)state;
    struct netguard g;
    char err[320];
    netguard_init(&g, "127.0.0.1,hooks.internal", err, sizeof(err));
    assert_int_equal(netguard_check_url(&g, "http://127.0.0.1:1/", err, sizeof(err)),
                     NETGUARD_OK);
    assert_int_equal(netguard_check_url(&g, "http://[::1]/", err, sizeof(err)),
                     NETGUARD_REFUSED);
    assert_non_null(strstr(err, "::1 is loopback"));
    /* Listed by name: allowed without asking DNS. */
    assert_int_equal(netguard_check_url(&g, "http://hooks.internal/x", err, sizeof(err)),
                     NETGUARD_OK);
    /* inet_aton's other spellings of loopback resolve to it. */
    assert_int_equal(netguard_check_url(&g, "http://2130706434/", err, sizeof(err)),
                     NETGUARD_REFUSED);
    assert_non_null(strstr(err, "127.0.0.2"));
    assert_int_equal(netguard_check_url(&g, "ftp://1.1.1.1/", err, sizeof(err)),
                     NETGUARD_BAD_URL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_by_default), cmocka_unit_test(test_why),
        cmocka_unit_test(test_allow_list),         cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_check_url_literals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
