/* page.h - the status page: GET / serves one self-contained HTML page (api/status.html,
 * embedded in the binary at build time: no files, no CDN) that polls GET /status.json,
 * the snapshot of status.h, every second and draws it; and lets one send a chat and
 * watch it finish through the usual POST /chat and GET /chat/{id}/response. */
#ifndef CHATQ_API_PAGE_H
#define CHATQ_API_PAGE_H

#include <stddef.h>

struct mg_connection;
struct server;
struct worker;

#define PAGE_PATH "/"
#define PAGE_STATUS_PATH "/status.json"

/* The page's bytes, generated from api/status.html by the Makefile. */
extern const unsigned char page_html[];
extern const size_t page_html_len;

/* 1 if path is one of the page's. */
int page_is(const char *path);

/* Answers GET path (one of the page's) and returns the status. w may be NULL
 * (a thread without a worker: 503). */
int page_handle(struct mg_connection *conn, struct server *srv, struct worker *w,
                const char *path);

#endif
