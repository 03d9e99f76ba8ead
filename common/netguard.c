/* netguard.c - see netguard.h. */
#include "netguard.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* An IPv4 range refused by default, with the name a refusal gives. */
struct netguard_range {
    uint32_t net;
    int bits;
    const char *name;
};

static const struct netguard_range netguard_v4[] = {
    {0x00000000, 8, "\"this\" network (0.0.0.0/8)"},
    {0x0a000000, 8, "private (10.0.0.0/8)"},
    {0x64400000, 10, "shared address space (100.64.0.0/10)"},
    {0x7f000000, 8, "loopback (127.0.0.0/8)"},
    {0xa9fe0000, 16, "link-local (169.254.0.0/16)"},
    {0xac100000, 12, "private (172.16.0.0/12)"},
    {0xc0000000, 24, "IETF protocol assignments (192.0.0.0/24)"},
    {0xc0000200, 24, "documentation (192.0.2.0/24)"},
    {0xc0a80000, 16, "private (192.168.0.0/16)"},
    {0xc6120000, 15, "benchmarking (198.18.0.0/15)"},
    {0xc6336400, 24, "documentation (198.51.100.0/24)"},
    {0xcb007100, 24, "documentation (203.0.113.0/24)"},
    {0xe0000000, 4, "multicast (224.0.0.0/4)"},
    {0xf0000000, 4, "reserved or broadcast (240.0.0.0/4)"},
};

static int netguard_prefix_match(const unsigned char *a, const unsigned char *net,
                                 int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, net, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (net[whole] & mask);
}

/* The name of the refused IPv4 range a (network order) is in, or NULL. */
static const char *netguard_v4_refused(const unsigned char a[4])
{
    uint32_t h = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) |
                 (uint32_t)a[3];
    for (size_t i = 0; i < sizeof(netguard_v4) / sizeof(netguard_v4[0]); i++) {
        uint32_t mask = 0xffffffffu << (32 - netguard_v4[i].bits);
        if ((h & mask) == netguard_v4[i].net)
            return netguard_v4[i].name;
    }
    return NULL;
}

/* The name of the refused IPv6 range a is in, or NULL. An IPv4 address carried
 * inside (mapped, compatible, NAT64, 6to4) is judged as IPv4, since that is where
 * the packets end up. */
static const char *netguard_v6_refused(const unsigned char a[16])
{
    static const unsigned char zero[16] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1))
        return a[15] == 0 ? "unspecified (::)" : "loopback (::1)";
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero, 12) == 0 ||
        memcmp(a, nat64, 12) == 0)
        return netguard_v4_refused(a + 12);
    if (a[0] == 0x20 && a[1] == 0x02)
        return netguard_v4_refused(a + 2);
    if ((a[0] & 0xfe) == 0xfc)
        return "unique local (fc00::/7)";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return "link-local (fe80::/10)";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
        return "site-local (fec0::/10)";
    if (a[0] == 0xff)
        return "multicast (ff00::/8)";
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        return "documentation (2001:db8::/32)";
    return NULL;
}

/* Reads one allow-list entry (trimmed, NUL-terminated) into g. */
static int netguard_add(struct netguard *g, char *entry, char *err, size_t errlen)
{
    char *slash = strchr(entry, '/');
    struct netguard_net n;
    memset(&n, 0, sizeof(n));
    if (slash != NULL)
        *slash = '\0';
    if (inet_pton(AF_INET, entry, n.addr) == 1) {
        n.family = AF_INET;
        n.bits = 32;
    } else if (inet_pton(AF_INET6, entry, n.addr) == 1) {
        n.family = AF_INET6;
        n.bits = 128;
    }
    if (slash != NULL) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (n.family == 0 || slash[1] == '\0' || *end != '\0' || bits < 0 ||
            bits > n.bits) {
            *slash = '/';
            snprintf(err, errlen, "WEBHOOK_ALLOW: '%s' is not an address/bits network",
                     entry);
            return -1;
        }
        n.bits = (int)bits;
    }
    if (g->nnets + g->nhosts >= NETGUARD_ALLOW_MAX) {
        snprintf(err, errlen, "WEBHOOK_ALLOW: more than %d entries", NETGUARD_ALLOW_MAX);
        return -1;
    }
    if (n.family != 0) {
        g->nets[g->nnets++] = n;
        return 0;
    }
    size_t len = strlen(entry);
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)entry[i]) && strchr("-._", entry[i]) == NULL) {
            snprintf(err, errlen,
                     "WEBHOOK_ALLOW: '%s' is neither an address, a network nor a host "
                     "name",
                     entry);
            return -1;
        }
    if (len == 0 || len > NETGUARD_HOST_MAX) {
        snprintf(err, errlen, "WEBHOOK_ALLOW: a host name must be 1 to %d bytes",
                 NETGUARD_HOST_MAX);
        return -1;
    }
    for (size_t i = 0; i <= len; i++)
        g->hosts[g->nhosts][i] = (char)tolower((unsigned char)entry[i]);
    g->nhosts++;
    return 0;
}

int netguard_init(struct netguard *g, const char *allow, char *err, size_t errlen)
{
    memset(g, 0, sizeof(*g));
    if (allow == NULL || allow[0] == '\0')
        return 0;
    char *copy = strdup(allow);
    if (copy == NULL) {
        snprintf(err, errlen, "WEBHOOK_ALLOW: out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t' || *tok == '\n')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'))
            *--end = '\0';
        if (*tok != '\0')
            rc = netguard_add(g, tok, err, errlen);
    }
    free(copy);
    return rc;
}

int netguard_url_parse(const char *url, struct netguard_url *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof(*out));
    size_t len = strlen(url);
    if (len > NETGUARD_URL_MAX) {
        snprintf(err, errlen, "it is longer than %d bytes", NETGUARD_URL_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] < 0x21 || (unsigned char)url[i] > 0x7e) {
            snprintf(err, errlen,
                     "it must be printable ASCII without spaces; byte %zu is 0x%02x",
                     i + 1, (unsigned char)url[i]);
            return -1;
        }
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        out->https = 1;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        snprintf(err, errlen, "it must start with http:// or https://");
        return -1;
    }
    size_t alen = strcspn(p, "/?#");
    if (memchr(p, '@', alen) != NULL) {
        snprintf(err, errlen, "it must not carry a user name or password");
        return -1;
    }
    const char *hend, *port = NULL;
    if (*p == '[') {
        const char *close = memchr(p, ']', alen);
        char v6[64];
        unsigned char a[16];
        size_t hlen = close ? (size_t)(close - p - 1) : 0;
        if (close == NULL || hlen == 0 || hlen >= sizeof(v6)) {
            snprintf(err, errlen, "its IPv6 address is malformed");
            return -1;
        }
        memcpy(v6, p + 1, hlen);
        v6[hlen] = '\0';
        if (inet_pton(AF_INET6, v6, a) != 1) {
            snprintf(err, errlen, "its IPv6 address is malformed");
            return -1;
        }
        memcpy(out->host, v6, hlen + 1);
        hend = close + 1;
        if (hend < p + alen && *hend != ':') {
            snprintf(err, errlen, "its host is malformed");
            return -1;
        }
    } else {
        hend = p;
        while (hend < p + alen && *hend != ':') {
            if (!isalnum((unsigned char)*hend) && strchr("-._", *hend) == NULL) {
                snprintf(err, errlen,
                         "its host may hold letters, digits, '-', '.' and "
                         "'_' only");
                return -1;
            }
            hend++;
        }
        size_t hlen = (size_t)(hend - p);
        if (hlen == 0 || hlen > NETGUARD_HOST_MAX) {
            snprintf(err, errlen, "its host must be 1 to %d bytes", NETGUARD_HOST_MAX);
            return -1;
        }
        memcpy(out->host, p, hlen);
        out->host[hlen] = '\0';
    }
    out->port = out->https ? 443 : 80;
    if (hend < p + alen) {
        port = hend + 1; /* after ':' */
        long v = 0;
        const char *q = port;
        for (; q < p + alen && isdigit((unsigned char)*q) && v <= 65535; q++)
            v = v * 10 + (*q - '0');
        if (q == port || q != p + alen || v < 1 || v > 65535) {
            snprintf(err, errlen, "its port must be a number from 1 to 65535");
            return -1;
        }
        out->port = (int)v;
    }
    return 0;
}

int netguard_host_listed(const struct netguard *g, const char *host)
{
    for (size_t i = 0; i < g->nhosts; i++)
        if (strcasecmp(g->hosts[i], host) == 0)
            return 1;
    return 0;
}

int netguard_addr_allowed(const struct netguard *g, const struct sockaddr *sa, char *why,
                          size_t whylen)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN] = "?";
    int family = sa->sa_family;
    if (family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        if (why != NULL)
            snprintf(why, whylen, "address family %d is not IP", family);
        return 0;
    }
    for (size_t i = 0; i < g->nnets; i++)
        if (g->nets[i].family == family &&
            netguard_prefix_match(a, g->nets[i].addr, g->nets[i].bits))
            return 1;
    const char *refused =
        family == AF_INET ? netguard_v4_refused(a) : netguard_v6_refused(a);
    if (refused == NULL)
        return 1;
    if (why != NULL) {
        inet_ntop(family, a, text, sizeof(text));
        snprintf(why, whylen, "%s is %s, and not in WEBHOOK_ALLOW", text, refused);
    }
    return 0;
}

enum netguard_result netguard_check_url(const struct netguard *g, const char *url,
                                        char *err, size_t errlen)
{
    struct netguard_url u;
    char why[160];
    if (netguard_url_parse(url, &u, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        return NETGUARD_BAD_URL;
    }
    if (netguard_host_listed(g, u.host))
        return NETGUARD_OK;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(u.host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "its host '%s' does not resolve: %s", u.host,
                 gai_strerror(gai));
        return NETGUARD_UNRESOLVED;
    }
    enum netguard_result rc = NETGUARD_OK;
    for (const struct addrinfo *ai = res; ai != NULL && rc == NETGUARD_OK;
         ai = ai->ai_next)
        if (!netguard_addr_allowed(g, ai->ai_addr, why, sizeof(why))) {
            snprintf(err, errlen, "its host '%s': %s", u.host, why);
            rc = NETGUARD_REFUSED;
        }
    freeaddrinfo(res);
    return rc;
}
