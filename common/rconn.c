/* rconn.c - see rconn.h. */
#include "rconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "log.h"

int rconn_url_parse(const char *url, struct rconn_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;

    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "REDIS_URL must start with redis://");
        return -1;
    }
    p += 8;

    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *userend = colon ? colon : at;
        size_t ulen = (size_t)(userend - p);
        size_t plen = colon ? (size_t)(at - colon - 1) : 0;
        if (ulen >= sizeof(out->user) || plen >= sizeof(out->pass)) {
            snprintf(err, errlen, "REDIS_URL: user or password too long");
            return -1;
        }
        memcpy(out->user, p, ulen);
        if (colon)
            memcpy(out->pass, colon + 1, plen);
        else if (ulen) {
            /* redis://secret@host is the common way to give a password alone. */
            memcpy(out->pass, out->user, ulen + 1);
            out->user[0] = '\0';
        }
        p = at + 1;
    }

    size_t hlen = strcspn(p, ":/");
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        snprintf(err, errlen, "REDIS_URL: missing or too long host");
        return -1;
    }
    memcpy(out->host, p, hlen);
    p += hlen;

    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            snprintf(err, errlen, "REDIS_URL: bad port");
            return -1;
        }
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1] != '\0') {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end != '\0' || db < 0 || db > 65535) {
            snprintf(err, errlen, "REDIS_URL: bad database number");
            return -1;
        }
        out->db = (int)db;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        snprintf(err, errlen, "REDIS_URL: unexpected text after host");
        return -1;
    }
    return 0;
}

void rconn_url_describe(const struct rconn_url *u, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s:%d/%d%s", u->host, u->port, u->db,
             u->pass[0] ? " (with password)" : "");
}

/* Sends one command and checks that Redis did not answer with an error. */
static int rconn_simple(redisContext *c, const char *what, char *err, size_t errlen,
                        int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (rconn_reply_failed(r)) {
        snprintf(err, errlen, "%s failed: %s", what,
                 r ? r->str : (c->errstr[0] ? c->errstr : "connection lost"));
        freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

redisContext *rconn_connect(const struct rconn_url *u, int timeout_ms, char *err,
                            size_t errlen)
{
    struct timeval tv =
        clock_timeval(timeout_ms > 0 && timeout_ms < 2000 ? timeout_ms : 2000);
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", u->host, u->port,
                 c->errstr);
        goto fail;
    }
    /* 0 (what a timeout_ms <= 0 gives) means no timeout to hiredis. */
    redisSetTimeout(c, clock_timeval(timeout_ms));
    redisEnableKeepAlive(c);

    if (u->pass[0]) {
        const char *argv[3] = {"AUTH", u->user[0] ? u->user : u->pass, u->pass};
        if (rconn_simple(c, "AUTH", err, errlen, u->user[0] ? 3 : 2, argv) != 0)
            goto fail;
    }
    if (u->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        if (rconn_simple(c, "SELECT", err, errlen, 2, argv) != 0)
            goto fail;
    }
    return c;

fail:
    redisFree(c);
    return NULL;
}

static void rconn_async_checked(redisAsyncContext *ac, void *reply, void *privdata)
{
    const char *what = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_error(NULL, "Redis %s failed: %s", what, r->str);
        redisAsyncDisconnect(ac);
    }
}

int rconn_async_prepare(redisAsyncContext *ac, const struct rconn_url *u)
{
    if (u->pass[0]) {
        const char *argv[3] = {"AUTH", u->user[0] ? u->user : u->pass, u->pass};
        if (redisAsyncCommandArgv(ac, rconn_async_checked, "AUTH", u->user[0] ? 3 : 2,
                                  argv, NULL) != REDIS_OK)
            return -1;
    }
    if (u->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        if (redisAsyncCommandArgv(ac, rconn_async_checked, "SELECT", 2, argv, NULL) !=
            REDIS_OK)
            return -1;
    }
    return 0;
}

int rconn_reply_failed(const redisReply *r)
{
    return r == NULL || r->type == REDIS_REPLY_ERROR;
}

long long rconn_backoff_ms(long long prev)
{
    if (prev < RCONN_BACKOFF_MIN_MS)
        return RCONN_BACKOFF_MIN_MS;
    return prev * 2 < RCONN_BACKOFF_MAX_MS ? prev * 2 : RCONN_BACKOFF_MAX_MS;
}
