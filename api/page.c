/* page.c - see page.h. */
#include "page.h"

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "log.h"
#include "reply.h"
#include "server.h"
#include "status.h"
#include "version.h"
#include "worker.h"

int page_is(const char *path)
{
    return strcmp(path, PAGE_PATH) == 0 || strcmp(path, PAGE_STATUS_PATH) == 0;
}

static int page_html_send(struct mg_connection *conn)
{
    struct reply r;
    reply_init(&r);
    r.type = "text/html; charset=utf-8";
    r.head = "X-Content-Type-Options: nosniff\r\n";
    reply_raw(&r, (const char *)page_html, page_html_len);
    return reply_send(&r, conn, 200);
}

/* One snapshot on the thread's connection; a connection that served earlier
 * requests and fails is tried once more, new (Redis restarted meanwhile). */
static int page_status_send(struct mg_connection *conn, struct server *srv,
                            struct worker *w)
{
    struct reply r;
    char err[256];
    json_t *snap = NULL;
    reply_init(&r);
    for (int attempt = 0; attempt < 2 && snap == NULL && w != NULL; attempt++) {
        redisContext *c = worker_redis(w, NULL);
        if (c == NULL)
            break;
        snap = status_collect(c, &srv->keys, err, sizeof(err));
        if (snap == NULL && !worker_redis_failed(w, NULL, err))
            break;
    }
    if (snap == NULL)
        return reply_error(&r, conn, 503, "redis_unavailable", "Redis is unavailable");
    json_object_set_new(snap, "version", json_string(CHATQ_VERSION));
    char *body = json_dumps(snap, JSON_COMPACT);
    json_decref(snap);
    if (body == NULL)
        return reply_error(&r, conn, 500, "internal_error",
                           "the server ran out of memory");
    reply_raw(&r, body, strlen(body));
    free(body);
    return reply_send(&r, conn, 200);
}

int page_handle(struct mg_connection *conn, struct server *srv, struct worker *w,
                const char *path)
{
    if (strcmp(path, PAGE_PATH) == 0)
        return page_html_send(conn);
    return page_status_send(conn, srv, w);
}
