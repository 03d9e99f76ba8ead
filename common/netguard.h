/* netguard.h - which addresses chatq may call on a client's behalf: webhook URLs
 * are checked here so that a chat cannot make chatq reach loopback, link-local or
 * private services (server-side request forgery).
 *
 * The check is made twice: by the api when a chat names a URL (every address its
 * host resolves to), and by the sender on the address it is about to connect to
 * (libcurl's open-socket callback), so a name that resolves to a public address at
 * submit time and to 127.0.0.1 at delivery time (DNS rebinding) is still refused.
 *
 * Refused unless listed in the allow-list (WEBHOOK_ALLOW): IPv4 0/8, 10/8,
 * 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24, 192.168/16,
 * 198.18/15, 198.51.100/24, 203.0.113/24, 224/4 and 240/4 (multicast, reserved,
 * broadcast); IPv6 ::, ::1, fc00::/7, fe80::/10, fec0::/10, ff00::/8,
 * 2001:db8::/32, and the IPv4 addresses embedded in ::ffff:0:0/96, ::/96,
 * 64:ff9b::/96 and 2002::/16 are judged as IPv4. */
#ifndef CHATQ_NETGUARD_H
#define CHATQ_NETGUARD_H

#include <stddef.h>

struct sockaddr;

#define NETGUARD_URL_MAX 2048 /* longest webhook URL, bytes */
#define NETGUARD_HOST_MAX 254
#define NETGUARD_ALLOW_MAX 64 /* entries of the allow-list */

struct netguard_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};

/* The allow-list: networks (CIDRs and single addresses) and host names. */
struct netguard {
    size_t nnets, nhosts;
    struct netguard_net nets[NETGUARD_ALLOW_MAX];
    char hosts[NETGUARD_ALLOW_MAX][NETGUARD_HOST_MAX + 1]; /* lower case */
};

/* Reads allow (comma-separated host names, addresses and CIDRs such as
 * "127.0.0.1,10.0.0.0/8,::1,hooks.internal"; NULL or "" for none). Returns 0, or
 * -1 with the bad entry named in err. */
int netguard_init(struct netguard *g, const char *allow, char *err, size_t errlen);

/* The parts of a webhook URL the checks need. */
struct netguard_url {
    int https;
    char host[NETGUARD_HOST_MAX + 1]; /* without brackets for IPv6 */
    int port;
};

/* Checks a webhook URL's syntax: http:// or https://, at most NETGUARD_URL_MAX
 * bytes of printable ASCII, a host of letters, digits, '-', '.', '_' (or an IPv6
 * literal in brackets), an optional port 1-65535, no user name or password (they
 * would be kept in Redis). Strict on purpose: the sender hands the URL to libcurl,
 * and what this parser calls the host must be what libcurl connects to. Returns 0,
 * or -1 with the reason in err. */
int netguard_url_parse(const char *url, struct netguard_url *out, char *err,
                       size_t errlen);

/* 1 if host (a URL's host) is named in the allow-list, else 0. */
int netguard_host_listed(const struct netguard *g, const char *host);

/* 1 if chatq may connect to sa (AF_INET or AF_INET6; anything else is refused),
 * 0 if not, with the address and the reason in why (may be NULL). */
int netguard_addr_allowed(const struct netguard *g, const struct sockaddr *sa, char *why,
                          size_t whylen);

enum netguard_result {
    NETGUARD_OK,
    NETGUARD_BAD_URL,    /* not a URL chatq calls */
    NETGUARD_REFUSED,    /* an address the host has is not allowed */
    NETGUARD_UNRESOLVED, /* the host name does not resolve */
};

/* The submit-time check of a URL: its syntax, then each address of its host
 * (getaddrinfo, so this may wait for DNS) unless the host is listed by name.
 * The reason goes into err. */
enum netguard_result netguard_check_url(const struct netguard *g, const char *url,
                                        char *err, size_t errlen);

#endif
