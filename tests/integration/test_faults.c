/* test_faults.c - the fault suite: every chat the api accepted (202) ends
 * completed or failed, exactly once as the client sees it, whatever crashes or
 * misbehaves in between.
 *
 * Each fault is one test with a bounded load (up to a few hundred chats, posted
 * concurrently from several threads so that the fault really hits work in
 * flight). Each test keeps a ledger of the trace ids that got 202 and, after the
 * fault, counts per trace what a client sees (GET until final, bounded) and what
 * the handlers wrote (their "trace=<id> completed|failed" log lines, killed
 * handlers included):
 *
 *   accepted    202s received
 *   completed   final "completed"
 *   failed      final "failed"
 *   lost        neither by the deadline (still processing, or gone): must be 0
 *   dup-writes  traces whose final record was written more than once: must be 0
 *
 * and that a final answer never changes afterwards (GET twice, same body). Each
 * test also checks the outcome the fault calls for (status, error code, the
 * upstream's message, attempts in the record, and what the fake upstream's
 * /stats say really reached it). The table of all faults is printed to stdout
 * by the group teardown.
 *
 * One stack for the whole group, with short timeouts so that a fault resolves
 * in seconds; the tests replace processes (a killed processor, a restarted api)
 * as they go, so their order matters. The bounded-memory test comes last: it
 * pushes many chats through and checks that streams, keys and Redis memory
 * settle back. */
#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "record.h"
#include "stack.h"
#include "stream.h"
#include "suite.h"

/* The group's settings. Short, so that each fault resolves in seconds. */
#define FAULT_CLAIM_IDLE_MS 1500
#define FAULT_ATTEMPTS 3
#define FAULT_TIMEOUT_MS 1500
#define FAULT_AFTER_MAX_MS 2500
#define FAULT_GRACE_MS 1000
#define FAULT_DEAD_MAX 10
#define FAULT_MAX_DELIVERIES 3
#define FAULT_MAX_RESPONSE 65536

#define FAULT_LOAD 200        /* chats per fault */
#define FAULT_THREADS 8       /* posting threads */
#define FAULT_HTTP_MS 10000   /* one request */
#define FAULT_SETTLE_MS 60000 /* every chat of a fault final after it */
#define FAULT_ERROR_PAUSE_MS 20
/* Between the POSTs of each thread when a fault must hit a load still coming in:
 * 8 threads post some 250 chats a second, so the fault (which takes up to
 * 100 ms to bite: Redis shuts down on its next cron tick) meets half a second
 * of load still to come. */
#define FAULT_PACE_MS 30
#define FAULT_EXIT_SLACK_MS 2000

/* Redis trims MAXLEN ~ in whole stream nodes (stream-node-max-entries, 100). */
#define FAULT_NODE_ENTRIES 100

/* The bounded-memory load: 20 000 chats against a zero-latency upstream. */
#define FAULT_MEM_CHATS 20000
#define FAULT_MEM_TTL 10 /* CHATQ_RESULT_TTL while it runs, seconds */
/* Under CHATQ_WRAP (valgrind, some 20 times slower) a tenth of it, with records
 * kept long enough to outlive the backlog. */
#define FAULT_MEM_CHATS_WRAPPED 2000
#define FAULT_MEM_TTL_WRAPPED 60
#define FAULT_MEM_WARMUP 500
#define FAULT_MEM_API_THREADS "16" /* all touched by the warm-up: see there */
#define FAULT_MEM_SLACK (2LL * 1024 * 1024)
#define FAULT_MEM_MS 180000

static struct stack fault_stack;

/* Every chat here asks for the api's default model, which the fake echoes. */
#define FAULT_MODEL "gpt-3.5-turbo"

#define FAULT_STR_(x) #x
#define FAULT_STR(x) FAULT_STR_(x)

/* Enough slots for a whole fault's load in flight at once. */
/* Its upstream faults are scripted per chat, not load being shed: adaptive
 * concurrency would only slow the following faults down. */
static const char *const fault_processor_env[] = {
    "PROCESSOR_CONCURRENCY=256",
    "ADAPTIVE_CONCURRENCY=0",
    "UPSTREAM_TIMEOUT_MS=" FAULT_STR(FAULT_TIMEOUT_MS),
    "UPSTREAM_MAX_ATTEMPTS=" FAULT_STR(FAULT_ATTEMPTS),
    "RETRY_BASE_MS=50",
    "RETRY_MAX_MS=200",
    "RETRY_AFTER_MAX_MS=" FAULT_STR(FAULT_AFTER_MAX_MS),
    "CLAIM_IDLE_MS=" FAULT_STR(FAULT_CLAIM_IDLE_MS),
    "MAX_DELIVERIES=" FAULT_STR(FAULT_MAX_DELIVERIES),
    "DEAD_LETTER_MAX=" FAULT_STR(FAULT_DEAD_MAX),
    "SHUTDOWN_GRACE_MS=" FAULT_STR(FAULT_GRACE_MS),
    "UPSTREAM_MAX_RESPONSE_BYTES=" FAULT_STR(FAULT_MAX_RESPONSE),
    NULL};
static const char *const fault_handler_env[] = {
    "CLAIM_IDLE_MS=" FAULT_STR(FAULT_CLAIM_IDLE_MS),
    "DEAD_LETTER_MAX=" FAULT_STR(FAULT_DEAD_MAX), NULL};

/* ---- what a chat should end as ------------------------------------------------ */

struct fault_kind {
    const char *directive; /* inside [[fake ...]]; NULL: a plain chat */
    const char *status;    /* "completed" or "failed" */
    const char *code;      /* error.code of a failed chat */
    const char *needle;    /* in error.message; NULL: not checked */
    int attempts;          /* the record's attempts; 0: not checked */
    int requests;          /* chat requests the fake gets per chat; -1: not checked */
    int requests_max;      /* ... up to this many (0: exactly `requests`) */
    int http_status;       /* status of the fake's scripted answers (0: none) ... */
    int answers;           /* ... and how many of them per chat */
    int ok;                /* plain 200 answers per chat; -1: not known */
    long response_len;     /* a completed answer this long, not the echo; 0: echo */
    long long min_ms;      /* POST to final at least this; 0: not checked */
    long long max_ms;      /* ... and at most this; 0: not checked */
    long long deadline_ms; /* the POST's deadline_ms; 0: none */
};

static const struct fault_kind fault_plain = {
    .status = "completed", .attempts = 1, .requests = -1, .ok = -1};

/* ---- the ledger of one fault ---------------------------------------------------- */

struct fault_trace {
    char id[UUID_LEN + 1];
    char *message; /* owned: what was posted (NULL: written by hand) */
    const struct fault_kind *kind;
    long long posted_ms;
    long long done_ms;                   /* 0 while not final */
    long last_http;                      /* status of the last GET */
    char *final;                         /* owned: the first final body seen */
    int writes_completed, writes_failed; /* handler log lines */
};

struct fault_ledger {
    char name[48];
    pthread_mutex_t mu;
    struct fault_trace *t;
    size_t n, cap;
    /* POSTs not accepted */
    long refused_503, bad_503, conn_errors, unexpected;
    long fate_unknown; /* 504 redis_timeout answers, each retried with its key */
    char unexpected_sample[300];
    /* after fault_settle */
    size_t completed, failed, lost, changed, dup;
    char changed_sample[300];
};

static struct fault_ledger fault_l = {.mu = PTHREAD_MUTEX_INITIALIZER};

struct fault_row {
    char name[48];
    size_t accepted, completed, failed, lost, dup;
};

#define FAULT_ROWS_MAX 32
static struct fault_row fault_rows[FAULT_ROWS_MAX];
static size_t fault_nrows;

static void fault_ledger_reset(const char *name)
{
    struct fault_ledger *l = &fault_l;
    for (size_t i = 0; i < l->n; i++) {
        free(l->t[i].message);
        free(l->t[i].final);
    }
    free(l->t);
    l->t = NULL;
    l->n = l->cap = 0;
    l->refused_503 = l->bad_503 = l->conn_errors = l->unexpected = 0;
    l->fate_unknown = 0;
    l->unexpected_sample[0] = l->changed_sample[0] = '\0';
    l->completed = l->failed = l->lost = l->changed = l->dup = 0;
    snprintf(l->name, sizeof(l->name), "%s", name != NULL ? name : "");
}

/* Adds an accepted trace; message is copied (may be NULL). 0 or -1. */
static int fault_ledger_add(const char *id, const char *message,
                            const struct fault_kind *kind, long long posted_ms)
{
    struct fault_ledger *l = &fault_l;
    int rc = -1;
    pthread_mutex_lock(&l->mu);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct fault_trace *t = realloc(l->t, cap * sizeof(*t));
        if (t == NULL)
            goto out;
        l->t = t;
        l->cap = cap;
    }
    struct fault_trace *t = &l->t[l->n];
    memset(t, 0, sizeof(*t));
    snprintf(t->id, sizeof(t->id), "%s", id);
    t->message = message != NULL ? strdup(message) : NULL;
    t->kind = kind;
    t->posted_ms = posted_ms;
    l->n++;
    rc = 0;
out:
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static size_t fault_accepted(void)
{
    pthread_mutex_lock(&fault_l.mu);
    size_t n = fault_l.n;
    pthread_mutex_unlock(&fault_l.mu);
    return n;
}

/* The row of this fault in the table (before the test's checks, so that a
 * failing fault shows its figures too). */
static void fault_record(void)
{
    struct fault_ledger *l = &fault_l;
    if (fault_nrows == FAULT_ROWS_MAX)
        return;
    struct fault_row *r = &fault_rows[fault_nrows++];
    memcpy(r->name, l->name, sizeof(r->name));
    r->accepted = l->n;
    r->completed = l->completed;
    r->failed = l->failed;
    r->lost = l->lost;
    r->dup = l->dup;
}

static void fault_table_print(void)
{
    if (fault_nrows == 0)
        return;
    printf("\n%-36s %8s %9s %6s %4s %10s\n", "fault", "accepted", "completed", "failed",
           "lost", "dup-writes");
    for (size_t i = 0; i < fault_nrows; i++) {
        const struct fault_row *r = &fault_rows[i];
        printf("%-36s %8zu %9zu %6zu %4zu %10zu\n", r->name, r->accepted, r->completed,
               r->failed, r->lost, r->dup);
    }
    printf("\n");
    fflush(stdout);
}

/* ---- posting under load ----------------------------------------------------------- */

/* Threads post chats until `count` have been sent (exact mode: each message once,
 * whatever the answer) or, with count 0, until `target` were accepted (load
 * mode: errors are counted and the next message tried, after a pause). */
struct fault_load {
    struct stack *s;
    const char *fault;                     /* in every message */
    const struct fault_kind *const *kinds; /* message i is of kind i % nkinds */
    size_t nkinds;
    size_t count;
    size_t target;
    int pace_ms; /* pause after each POST: a load spread over time */
    long long deadline;
    atomic_size_t next;
    atomic_int stop;
    pthread_t th[FAULT_THREADS];
    int nth;
};

static void fault_message(const struct fault_load *ld, size_t i, char *buf, size_t len,
                          const struct fault_kind **kind)
{
    *kind = ld->kinds[i % ld->nkinds];
    if ((*kind)->directive != NULL)
        snprintf(buf, len, "[[fake %s]] %s #%05zu", (*kind)->directive, ld->fault, i);
    else
        snprintf(buf, len, "%s #%05zu", ld->fault, i);
}

static void fault_note_unexpected(const char *what)
{
    pthread_mutex_lock(&fault_l.mu);
    fault_l.unexpected++;
    if (fault_l.unexpected_sample[0] == '\0')
        snprintf(fault_l.unexpected_sample, sizeof(fault_l.unexpected_sample), "%s",
                 what);
    pthread_mutex_unlock(&fault_l.mu);
}

/* 1 if r is the api's "fate unknown" answer: Redis did not confirm the write. */
static int fault_is_fate_unknown(const struct http_response *r)
{
    if (r->status != 504)
        return 0;
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    int yes = strcmp(STR(http_error_code(j)), "redis_timeout") == 0;
    json_decref(j);
    return yes;
}

/* One POST, as a careful client sends it: with an Idempotency-Key (the message's
 * name, unique in the group), and again with the same key for as long as the
 * answer is "fate unknown". What came back goes into the ledger. 1 if accepted. */
static int fault_post_one(struct fault_load *ld, struct http_client *c, size_t i)
{
    char msg[256], url[128], what[300], key[300];
    const char *headers[] = {key, NULL};
    const struct fault_kind *kind;
    struct http_response r;
    int accepted = 0;

    fault_message(ld, i, msg, sizeof(msg), &kind);
    json_t *req = json_pack("{s:s}", "message", msg);
    if (req != NULL && kind->deadline_ms > 0)
        json_object_set_new(req, "deadline_ms", json_integer(kind->deadline_ms));
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) {
        fault_note_unexpected("out of memory building a POST");
        return 0;
    }
    snprintf(key, sizeof(key), "Idempotency-Key: %s #%05zu", ld->fault, i);
    long long t0 = harness_now_ms();
    stack_url(ld->s, "/chat", url, sizeof(url));
    int rc;
    for (;;) {
        rc = http_client_request_with(c, "POST", url, headers, body, strlen(body),
                                      FAULT_HTTP_MS, &r);
        if (rc != 0 || !fault_is_fate_unknown(&r) || harness_now_ms() >= ld->deadline)
            break;
        pthread_mutex_lock(&fault_l.mu);
        fault_l.fate_unknown++;
        pthread_mutex_unlock(&fault_l.mu);
        http_response_free(&r);
        harness_sleep_ms(FAULT_ERROR_PAUSE_MS);
    }
    free(body);
    if (rc != 0) {
        pthread_mutex_lock(&fault_l.mu);
        fault_l.conn_errors++;
        pthread_mutex_unlock(&fault_l.mu);
    } else if (r.status == 202) {
        json_t *j = http_json(&r);
        const char *id = http_json_str(j, "traceId");
        if (id != NULL && strlen(id) == UUID_LEN &&
            fault_ledger_add(id, msg, kind, t0) == 0)
            accepted = 1;
        else
            fault_note_unexpected("202 without a traceId");
        json_decref(j);
    } else if (r.status == 503) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        int good = http_is_json(&r) &&
                   strcmp(STR(http_error_code(j)), "redis_unavailable") == 0 &&
                   http_error_message(j) != NULL;
        json_decref(j);
        pthread_mutex_lock(&fault_l.mu);
        fault_l.refused_503++;
        if (!good) {
            fault_l.bad_503++;
            if (fault_l.unexpected_sample[0] == '\0')
                snprintf(fault_l.unexpected_sample, sizeof(fault_l.unexpected_sample),
                         "503 (%.60s): %.200s", r.content_type, r.body);
        }
        pthread_mutex_unlock(&fault_l.mu);
    } else {
        snprintf(what, sizeof(what), "HTTP %ld: %.200s", r.status, r.body);
        fault_note_unexpected(what);
    }
    if (!accepted)
        harness_sleep_ms(FAULT_ERROR_PAUSE_MS);
    http_response_free(&r);
    return accepted;
}

static void *fault_post_thread(void *arg)
{
    struct fault_load *ld = arg;
    struct http_client *c = http_client_new();
    if (c == NULL) {
        fault_note_unexpected("out of memory for an HTTP client");
        return NULL;
    }
    while (!atomic_load(&ld->stop) && harness_now_ms() < ld->deadline) {
        if (ld->count == 0 && fault_accepted() >= ld->target)
            break;
        size_t i = atomic_fetch_add(&ld->next, 1);
        if (ld->count > 0 && i >= ld->count)
            break;
        fault_post_one(ld, c, i);
        if (ld->pace_ms > 0)
            harness_sleep_ms(ld->pace_ms);
    }
    http_client_free(c);
    return NULL;
}

static void fault_load_start(struct fault_load *ld, struct stack *s, const char *fault,
                             const struct fault_kind *const *kinds, size_t nkinds,
                             size_t count, size_t target, int pace_ms, int threads,
                             int timeout_ms)
{
    memset(ld, 0, sizeof(*ld));
    ld->pace_ms = pace_ms;
    ld->s = s;
    ld->fault = fault;
    ld->kinds = kinds;
    ld->nkinds = nkinds;
    ld->count = count;
    ld->target = target;
    ld->deadline = harness_now_ms() + harness_timeout(timeout_ms);
    atomic_init(&ld->next, 0);
    atomic_init(&ld->stop, 0);
    for (int i = 0; i < threads && i < FAULT_THREADS; i++)
        if (pthread_create(&ld->th[ld->nth], NULL, fault_post_thread, ld) == 0)
            ld->nth++;
}

static void fault_load_join(struct fault_load *ld)
{
    for (int i = 0; i < ld->nth; i++)
        pthread_join(ld->th[i], NULL);
    ld->nth = 0;
}

/* Posts count chats (kind i % nkinds) from FAULT_THREADS threads and waits. */
static void fault_post_all(struct stack *s, const char *fault,
                           const struct fault_kind *const *kinds, size_t nkinds,
                           size_t count)
{
    struct fault_load ld;
    fault_load_start(&ld, s, fault, kinds, nkinds, count, 0, 0, FAULT_THREADS,
                     FAULT_SETTLE_MS);
    fault_load_join(&ld);
}

struct fault_until {
    size_t want;
};

static int fault_check_accepted(void *arg)
{
    const struct fault_until *u = arg;
    return fault_accepted() >= u->want;
}

/* ---- settling: what the client sees, what the handlers wrote ---------------------- */

static void fault_trace_url(struct stack *s, const char *id, char *url, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "/chat/%s/response", id);
    stack_url(s, path, url, len);
}

/* 1 if body (HTTP 200) is a final answer. */
static int fault_is_final(const struct http_response *r)
{
    if (r->status != 200)
        return 0;
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const char *st = http_json_str(j, "status");
    int final = st != NULL && strcmp(st, "processing") != 0;
    json_decref(j);
    return final;
}

static int fault_cmp_id(const void *a, const void *b)
{
    const struct fault_trace *const *x = a, *const *y = b;
    return strcmp((*x)->id, (*y)->id);
}

static int fault_find_id(const void *key, const void *elem)
{
    const struct fault_trace *const *t = elem;
    return strncmp(key, (*t)->id, UUID_LEN);
}

/* Reads every handler log of the group and counts, per trace of the ledger, the
 * final writes it logged. */
static void fault_count_writes(struct stack *s)
{
    struct fault_ledger *l = &fault_l;
    char pattern[PATH_MAX];
    glob_t g;
    struct fault_trace **index = malloc((l->n ? l->n : 1) * sizeof(*index));
    if (index == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        l->t[i].writes_completed = l->t[i].writes_failed = 0;
        index[i] = &l->t[i];
    }
    qsort(index, l->n, sizeof(*index), fault_cmp_id);

    snprintf(pattern, sizeof(pattern), "%s/handler*.log", s->dir);
    if (glob(pattern, 0, NULL, &g) != 0) {
        free(index);
        return;
    }
    for (size_t f = 0; f < g.gl_pathc; f++) {
        FILE *fp = fopen(g.gl_pathv[f], "r");
        char *line = NULL;
        size_t cap = 0;
        if (fp == NULL)
            continue;
        while (getline(&line, &cap, fp) > 0) {
            const char *p = strstr(line, " trace=");
            if (p == NULL || strlen(p + 7) < UUID_LEN + 1)
                continue;
            const char *id = p + 7, *what = p + 7 + UUID_LEN;
            /* The handler's line of a final write (LOG_FORMAT=logfmt). */
            int completed = strncmp(what, " event=completed model=", 23) == 0;
            int failed = strncmp(what, " event=failed code=", 19) == 0;
            if (!completed && !failed)
                continue;
            struct fault_trace **t =
                bsearch(id, index, l->n, sizeof(*index), fault_find_id);
            if (t == NULL)
                continue;
            if (completed)
                (*t)->writes_completed++;
            else
                (*t)->writes_failed++;
        }
        free(line);
        fclose(fp);
    }
    globfree(&g);
    free(index);
    l->dup = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->t[i].writes_completed + l->t[i].writes_failed > 1)
            l->dup++;
}

/* GETs every trace of the ledger until it is final or timeout_ms pass, then once
 * more to see that the final answer stays, and counts the outcomes. */
static void fault_settle(struct stack *s, int timeout_ms)
{
    struct fault_ledger *l = &fault_l;
    struct http_client *c = http_client_new();
    char url[256];
    long long deadline = harness_now_ms() + harness_timeout(timeout_ms);

    for (;;) {
        size_t open = 0;
        for (size_t i = 0; c != NULL && i < l->n; i++) {
            struct fault_trace *t = &l->t[i];
            struct http_response r;
            if (t->done_ms != 0)
                continue;
            fault_trace_url(s, t->id, url, sizeof(url));
            if (http_client_request(c, "GET", url, NULL, 0, FAULT_HTTP_MS, &r) == 0) {
                t->last_http = r.status;
                if (fault_is_final(&r)) {
                    t->done_ms = harness_now_ms();
                    t->final = strdup(r.body);
                }
            } else {
                t->last_http = 0;
            }
            http_response_free(&r);
            if (t->done_ms == 0)
                open++;
        }
        if (open == 0 || c == NULL || harness_now_ms() >= deadline)
            break;
        harness_sleep_ms(50);
    }

    l->completed = l->failed = l->lost = l->changed = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct fault_trace *t = &l->t[i];
        struct http_response r = {0};
        if (t->done_ms == 0 || t->final == NULL) {
            l->lost++;
            continue;
        }
        json_t *j = json_loads(t->final, 0, NULL);
        const char *st = http_json_str(j, "status");
        if (st != NULL && strcmp(st, "completed") == 0)
            l->completed++;
        else if (st != NULL && strcmp(st, "failed") == 0)
            l->failed++;
        else
            l->lost++;
        json_decref(j);
        /* The same answer again: a final record never changes. */
        fault_trace_url(s, t->id, url, sizeof(url));
        int got = c != NULL &&
                  http_client_request(c, "GET", url, NULL, 0, FAULT_HTTP_MS, &r) == 0;
        if (got && r.status == 200 && strcmp(r.body, t->final) == 0) {
            http_response_free(&r);
            continue;
        }
        if (l->changed++ == 0)
            snprintf(l->changed_sample, sizeof(l->changed_sample),
                     "%s first %.100s, then HTTP %ld %.100s", t->id, t->final, r.status,
                     r.body != NULL ? r.body : "");
        http_response_free(&r);
    }
    http_client_free(c);
    fault_count_writes(s);
}

/* Describes the first lost trace into buf. */
static const char *fault_lost_example(char *buf, size_t len)
{
    snprintf(buf, len, "-");
    for (size_t i = 0; i < fault_l.n; i++) {
        const struct fault_trace *t = &fault_l.t[i];
        if (t->done_ms == 0) {
            snprintf(buf, len, "%s (last GET: HTTP %ld) \"%s\"", t->id, t->last_http,
                     STR(t->message));
            break;
        }
    }
    return buf;
}

static const char *fault_dup_example(char *buf, size_t len)
{
    snprintf(buf, len, "-");
    for (size_t i = 0; i < fault_l.n; i++) {
        const struct fault_trace *t = &fault_l.t[i];
        if (t->writes_completed + t->writes_failed > 1) {
            snprintf(buf, len, "%s written %d times completed, %d times failed", t->id,
                     t->writes_completed, t->writes_failed);
            break;
        }
    }
    return buf;
}

/* Records the row, then fails the test on any lost chat, duplicate write or
 * changed answer. */
static void fault_check_ledger(void)
{
    char ex[512];
    struct fault_ledger *l = &fault_l;
    fault_record();
    CHECK(l->lost == 0, "%s: %zu of %zu accepted chats lost, e.g. %s", l->name, l->lost,
          l->n, fault_lost_example(ex, sizeof(ex)));
    CHECK(l->dup == 0,
          "%s: %zu chats had their final record written more than once, "
          "e.g. %s",
          l->name, l->dup, fault_dup_example(ex, sizeof(ex)));
    CHECK(l->changed == 0, "%s: %zu final answers changed on a second GET, e.g. %s",
          l->name, l->changed, l->changed_sample);
}

/* The record's "attempts" field, or -1. */
static long long fault_attempts(struct stack *s, const char *id)
{
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&s->keys, id, key, sizeof(key));
    redisReply *r = stack_redis(s, "HGET %s %s", key, REC_ATTEMPTS);
    long long n = r != NULL && r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

/* Checks one final answer against its kind; the reason into why, 0 if fine. */
static int fault_check_one(struct stack *s, const struct fault_trace *t, char *why,
                           size_t len)
{
    const struct fault_kind *k = t->kind;
    json_t *j = json_loads(t->final, 0, NULL);
    const char *st = http_json_str(j, "status");
    json_t *usage = json_object_get(json_object_get(j, "usage"), "total_tokens");
    long long total = json_is_integer(usage) ? (long long)json_integer_value(usage) : -1;
    int rc = -1;

    if (strcmp(STR(http_json_str(j, "traceId")), t->id) != 0) {
        snprintf(why, len, "traceId %s", STR(http_json_str(j, "traceId")));
    } else if (strcmp(STR(st), k->status) != 0) {
        snprintf(why, len, "ended %s (%s: %.150s), want %s", STR(st),
                 STR(http_error_code(j)), STR(http_error_message(j)), k->status);
    } else if (strcmp(k->status, "completed") == 0) {
        const char *resp = http_json_str(j, "response");
        char want[512];
        snprintf(want, sizeof(want), "Fake answer to: %s", STR(t->message));
        if (k->response_len > 0 &&
            (resp == NULL || (long)strlen(resp) != k->response_len))
            snprintf(why, len, "answered %zu bytes, want %ld",
                     resp != NULL ? strlen(resp) : 0, k->response_len);
        else if (k->response_len == 0 && t->message != NULL &&
                 strcmp(STR(resp), want) != 0)
            snprintf(why, len, "answered \"%.150s\"", STR(resp));
        else if (strcmp(STR(http_json_str(j, "model")), FAULT_MODEL) != 0)
            snprintf(why, len, "model %s, want %s", STR(http_json_str(j, "model")),
                     FAULT_MODEL);
        else if (total <= 0)
            snprintf(why, len, "usage.total_tokens %lld", total);
        else if (!http_is_iso8601_utc(http_json_str(j, "timestamp")))
            snprintf(why, len, "timestamp \"%s\"", STR(http_json_str(j, "timestamp")));
        else
            rc = 0;
    } else if (json_object_get(j, "response") != NULL) {
        snprintf(why, len, "a failed chat carries a response");
    } else if (!http_is_iso8601_utc(http_json_str(j, "timestamp"))) {
        snprintf(why, len, "timestamp \"%s\"", STR(http_json_str(j, "timestamp")));
    } else if (strcmp(STR(http_error_code(j)), STR(k->code)) != 0) {
        snprintf(why, len, "failed with %s (%.150s), want %s", STR(http_error_code(j)),
                 STR(http_error_message(j)), STR(k->code));
    } else if (k->needle != NULL &&
               strstr(STR(http_error_message(j)), k->needle) == NULL) {
        snprintf(why, len, "error.message \"%.200s\" lacks \"%s\"",
                 STR(http_error_message(j)), k->needle);
    } else {
        rc = 0;
    }
    if (rc == 0 && k->attempts > 0) {
        long long a = fault_attempts(s, t->id);
        if (a != k->attempts) {
            snprintf(why, len, "record says attempts=%lld, want %d", a, k->attempts);
            rc = -1;
        }
    }
    long long took = t->done_ms - t->posted_ms;
    if (rc == 0 && k->min_ms > 0 && took < k->min_ms) {
        snprintf(why, len, "final %lld ms after POST, want >= %lld", took, k->min_ms);
        rc = -1;
    }
    if (rc == 0 && k->max_ms > 0 && took > harness_timeout((int)k->max_ms)) {
        snprintf(why, len, "final %lld ms after POST, want <= %d", took,
                 harness_timeout((int)k->max_ms));
        rc = -1;
    }
    json_decref(j);
    return rc;
}

/* Every settled chat ended as its kind says. */
static void fault_check_kinds(struct stack *s)
{
    char why[400];
    size_t bad = 0;
    const struct fault_trace *first = NULL;
    char first_why[400] = "";
    for (size_t i = 0; i < fault_l.n; i++) {
        const struct fault_trace *t = &fault_l.t[i];
        if (t->final == NULL)
            continue;
        if (fault_check_one(s, t, why, sizeof(why)) != 0) {
            if (bad++ == 0) {
                first = t;
                snprintf(first_why, sizeof(first_why), "%s", why);
            }
        }
    }
    CHECK(bad == 0, "%s: %zu chats did not end as they should; e.g. \"%s\" (%s): %s",
          fault_l.name, bad, first != NULL ? STR(first->message) : "",
          first != NULL ? first->id : "", first_why);
}

/* ---- the fake's counters ---------------------------------------------------------- */

struct fault_stats {
    long long requests, by_status[600];
};

static void fault_stats_get(struct stack *s, struct fault_stats *st)
{
    memset(st, 0, sizeof(*st));
    json_t *j = stack_fake_stats(s);
    CHECK(j != NULL, "GET /stats of the fake upstream failed");
    st->requests = stack_stat(j, "requests", 0);
    for (int code = 100; code < 600; code++)
        st->by_status[code] = stack_stat(j, NULL, code);
    json_decref(j);
}

/* What reached the fake between before and now is what the kinds of the ledger's
 * chats say: the number of requests (attempts), and the answers by status. */
static void fault_check_stats(struct stack *s, const struct fault_stats *before)
{
    struct fault_stats after;
    long long want_requests = 0, want_requests_max = 0, want[600];
    int check_requests = 1, check_200 = 1;
    memset(want, 0, sizeof(want));
    fault_stats_get(s, &after);
    for (size_t i = 0; i < fault_l.n; i++) {
        const struct fault_kind *k = fault_l.t[i].kind;
        if (k->requests < 0)
            check_requests = 0;
        want_requests += k->requests;
        want_requests_max += k->requests_max > 0 ? k->requests_max : k->requests;
        if (k->http_status > 0)
            want[k->http_status] += k->answers;
        if (k->ok < 0)
            check_200 = 0;
        else
            want[200] += k->ok;
    }
    long long got_requests = after.requests - before->requests;
    if (check_requests && want_requests == want_requests_max)
        CHECK(got_requests == want_requests,
              "%s: the upstream got %lld requests, want %lld", fault_l.name, got_requests,
              want_requests);
    else if (check_requests)
        CHECK(got_requests >= want_requests && got_requests <= want_requests_max,
              "%s: the upstream got %lld requests, want %lld to %lld", fault_l.name,
              got_requests, want_requests, want_requests_max);
    for (int code = 100; code < 600; code++) {
        if (code == 200 && !check_200)
            continue;
        long long got = after.by_status[code] - before->by_status[code];
        CHECK(got == want[code], "%s: the upstream answered %lld times %d, want %lld",
              fault_l.name, got, code, want[code]);
    }
}

/* ---- processes -------------------------------------------------------------------- */

/* *pp, told to stop, must exit 0 within limit_ms. Returns how long it took, or
 * -1 with the reason in why. Frees the proc either way. */
static long long fault_exited(struct proc **pp, int limit_ms, char *why, size_t len)
{
    struct proc *p = *pp;
    char how[64];
    int status = 0;
    long long t0 = harness_now_ms(), took = -1;
    if (p == NULL) {
        snprintf(why, len, "no process to wait for");
        return -1;
    }
    if (proc_wait(p, harness_timeout(limit_ms), &status) != 0) {
        snprintf(why, len, "%s still running %d ms after SIGTERM; see %.300s", p->name,
                 harness_timeout(limit_ms), p->log);
        goto out;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, len, "%s %s on SIGTERM, want exit 0; see %.300s", p->name,
                 proc_describe(status, how, sizeof(how)), p->log);
        goto out;
    }
    took = harness_now_ms() - t0;
out:
    proc_free(p);
    *pp = NULL;
    return took;
}

/* SIGTERM *pp; it must exit 0 within limit_ms (see fault_exited). */
static long long fault_term(struct proc **pp, int limit_ms, char *why, size_t len)
{
    if (*pp == NULL || !proc_alive(*pp)) {
        snprintf(why, len, "%s is not running before SIGTERM",
                 *pp != NULL ? (*pp)->name : "?");
        proc_free(*pp);
        *pp = NULL;
        return -1;
    }
    proc_signal(*pp, SIGTERM);
    return fault_exited(pp, limit_ms, why, len);
}

/* SIGKILLs *pp and frees it. 0 or -1. */
static int fault_kill(struct proc **pp)
{
    int status;
    if (*pp == NULL || proc_signal(*pp, SIGKILL) != 0)
        return -1;
    int rc = proc_wait(*pp, 5000, &status) == 0 && WIFSIGNALED(status) ? 0 : -1;
    proc_free(*pp);
    *pp = NULL;
    return rc;
}

static void fault_require_alive(struct proc *p, const char *what)
{
    char how[64];
    CHECK(p != NULL && proc_alive(p), "%s: %s is gone (%s); see %s", fault_l.name, what,
          p != NULL ? proc_describe(p->status, how, sizeof(how)) : "never started",
          p != NULL ? p->log : "-");
}

struct fault_fake_flight {
    struct stack *s;
    long long want, seen;
};

static int fault_check_in_flight(void *arg)
{
    struct fault_fake_flight *f = arg;
    json_t *st = stack_fake_stats(f->s);
    f->seen = stack_stat(st, "in_flight", 0);
    json_decref(st);
    return f->seen >= f->want;
}

struct fault_log_wait {
    const char *path;
    const char *needle;
};

static int fault_check_log(void *arg)
{
    const struct fault_log_wait *w = arg;
    return harness_file_contains(w->path, w->needle) == 1;
}

/* What the tests started with settings of their own, to be replaced by the
 * group's kind before the next test. */
#define FAULT_SPECIAL_PROCESSOR 1
#define FAULT_SPECIAL_HANDLER 2
#define FAULT_SPECIAL_API 4
static int fault_special;
static int fault_respawned;
/* A second processor a test runs beside the stack's; stopped by the next
 * fault_begin if a failed test left it running. */
static struct proc *fault_second;

/* Each fault starts from a whole stack of the group's settings, whatever the
 * previous one left behind (a failed test may leave a process killed or one
 * with settings of its own), and with an empty ledger. */
static void fault_begin(const char *name)
{
    struct stack *s = &fault_stack;
    char pname[32], why[512] = "";
    int ok = 1;

    if (s->redis == NULL || !proc_alive(s->redis))
        ok = ok && stack_redis_start(s) == 0;
    if (s->processor != NULL && (fault_special & FAULT_SPECIAL_PROCESSOR) &&
        proc_alive(s->processor))
        ok = ok && fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                              sizeof(why)) >= 0;
    if (s->handler != NULL && (fault_special & FAULT_SPECIAL_HANDLER) &&
        proc_alive(s->handler))
        ok = ok &&
             fault_term(&s->handler, 1000 + FAULT_EXIT_SLACK_MS, why, sizeof(why)) >= 0;
    if (s->api != NULL && (fault_special & FAULT_SPECIAL_API) && proc_alive(s->api))
        ok = ok && fault_term(&s->api, 5000, why, sizeof(why)) >= 0;
    fault_special = 0;
    if (fault_second != NULL) {
        proc_free(fault_second); /* SIGTERM, then SIGKILL if need be */
        fault_second = NULL;
    }
    /* A failed test_fault_wrong_type may have left the results key a string. */
    redisReply *t = stack_redis(s, "TYPE %s", s->keys.results);
    if (t != NULL && t->type == REDIS_REPLY_STATUS && strcmp(t->str, "string") == 0)
        freeReplyObject(stack_redis(s, "DEL %s", s->keys.results));
    freeReplyObject(t);
    if (s->processor != NULL && !proc_alive(s->processor)) {
        proc_free(s->processor);
        s->processor = NULL;
    }
    if (s->processor == NULL) {
        snprintf(pname, sizeof(pname), "processor-r%d", ++fault_respawned);
        s->processor = stack_processor_start(s, pname, NULL);
    }
    if (s->handler != NULL && !proc_alive(s->handler)) {
        proc_free(s->handler);
        s->handler = NULL;
    }
    if (s->handler == NULL) {
        snprintf(pname, sizeof(pname), "handler-r%d", ++fault_respawned);
        s->handler = stack_handler_start(s, pname);
    }
    if (s->api == NULL || !proc_alive(s->api)) {
        snprintf(pname, sizeof(pname), "api-r%d", ++fault_respawned);
        ok = ok && stack_api_restart(s, pname, NULL) == 0;
    }
    CHECK(ok && s->processor != NULL && s->handler != NULL && s->api != NULL,
          "cannot bring the stack back for \"%s\": %s", name, why);
    fault_ledger_reset(name);
}

/* Replaces the stack's processor with one named name with extra settings (on top
 * of the group's), which the next fault_begin replaces again. */
static void fault_processor_swap(const char *name, const char *const *extra)
{
    struct stack *s = &fault_stack;
    char why[512];
    CHECK(s->processor != NULL, "the processor is not running");
    CHECK(fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                     sizeof(why)) >= 0,
          "%s", why);
    fault_special |= FAULT_SPECIAL_PROCESSOR;
    s->processor = stack_processor_start(s, name, extra);
    CHECK(s->processor != NULL, "%s did not start", name);
}

static int fault_group_setup(void **state)
{
    (void)state;
    struct stack_settings set = {.processor = fault_processor_env,
                                 .handler = fault_handler_env};
    fault_ledger_reset(NULL);
    return stack_start(&fault_stack, "faults", "t5:", &set);
}

/* 1 if a sanitizer reported something in one of the group's logs: processes the
 * tests killed or replaced are no longer the stack's, so stack_stop does not
 * look at them. */
static int fault_sanitizer_reports(const char *dir)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", NULL};
    char pattern[PATH_MAX];
    glob_t g;
    int found = 0;
    snprintf(pattern, sizeof(pattern), "%s/*.log", dir);
    if (glob(pattern, 0, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        for (int m = 0; marks[m] != NULL; m++) {
            if (harness_file_contains(g.gl_pathv[i], marks[m]) == 1) {
                fprintf(stderr, "integration: sanitizer report in %s\n", g.gl_pathv[i]);
                found = 1;
                break;
            }
        }
    }
    globfree(&g);
    return found;
}

static int fault_group_teardown(void **state)
{
    (void)state;
    fault_table_print();
    int rc = stack_stop(&fault_stack);
    if (fault_sanitizer_reports(fault_stack.dir)) {
        harness_mark_failed();
        rc = -1;
    }
    fault_ledger_reset(NULL);
    return rc;
}

/* ---- SIGKILL a processor with requests in flight -------------------------------- */

static void test_fault_sigkill_processor(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind slow = {
        .directive = "latency=1000", .status = "completed", .requests = -1, .ok = -1};
    const struct fault_kind *kinds[] = {&slow};

    fault_begin("sigkill processor");
    fault_post_all(s, "sigkill processor", kinds, 1, FAULT_LOAD);
    CHECK(fault_accepted() == FAULT_LOAD && fault_l.unexpected + fault_l.conn_errors == 0,
          "only %zu of %d POSTs accepted (%s)", fault_accepted(), FAULT_LOAD,
          fault_l.unexpected_sample);
    /* Most of them at the upstream at once: the processor dies holding them. */
    struct fault_fake_flight f = {.s = s, .want = FAULT_LOAD / 2};
    CHECK(harness_poll(harness_timeout(5000), 10, fault_check_in_flight, &f) == 0,
          "never %lld chats in flight at the upstream (last %lld)", f.want, f.seen);
    long long pending = stack_xpending(s, s->keys.requests, KEYS_GROUP_PROCESSORS);
    int killed = fault_kill(&s->processor) == 0;
    print_message("sigkill processor: killed with %lld chats at the upstream, %lld "
                  "entries pending\n",
                  f.seen, pending);
    s->processor = stack_processor_start(s, "processor-b", NULL);
    CHECK(s->processor != NULL, "processor-b did not start");
    CHECK(killed, "the processor did not die on SIGKILL");

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == FAULT_LOAD, "%zu of %d completed", fault_l.completed,
          FAULT_LOAD);
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- SIGKILL a handler mid-batch -----------------------------------------------------
 */

struct fault_results {
    struct stack *s;
    long long want, seen;
};

static int fault_check_results(void *arg)
{
    struct fault_results *r = arg;
    r->seen = stack_xadded(r->s, r->s->keys.results);
    return r->seen >= r->want;
}

static int fault_check_handler_pending(void *arg)
{
    struct stack *s = arg;
    return stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS) > 0;
}

static void test_fault_sigkill_handler(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    /* Answers spread over a second, so that results keep arriving. */
    static const struct fault_kind k[] = {
        {.directive = "latency=100", .status = "completed", .requests = 1, .ok = 1},
        {.directive = "latency=400", .status = "completed", .requests = 1, .ok = 1},
        {.directive = "latency=700", .status = "completed", .requests = 1, .ok = 1},
        {.directive = "latency=1000", .status = "completed", .requests = 1, .ok = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2], &k[3]};
    struct fault_stats before;

    fault_begin("sigkill handler mid-batch");
    fault_stats_get(s, &before);
    long long added = stack_xadded(s, s->keys.results);
    /* Paced, so that results keep coming for a few seconds whatever the
     * machine's speed: a stop that catches the handler between batches gets
     * another try while there is still work. */
    struct fault_load ld;
    fault_load_start(&ld, s, "sigkill handler", kinds, 4, FAULT_LOAD, 0,
                     2 * FAULT_PACE_MS, FAULT_THREADS, FAULT_SETTLE_MS);
    struct fault_results r = {.s = s, .want = added + FAULT_LOAD / 10};
    int flowing = harness_poll(harness_timeout(10000), 10, fault_check_results, &r) == 0;
    if (!flowing)
        atomic_store(&ld.stop, 1);

    /* Stopped, the handler still takes results: Redis serves its blocked
     * XREADGROUP and marks them pending on it. Killed then, it dies mid-batch. */
    long long pending = 0;
    for (int tries = 0; tries < 5 && pending == 0; tries++) {
        proc_signal(s->handler, SIGSTOP);
        if (harness_poll(harness_timeout(1500), 10, fault_check_handler_pending, s) == 0)
            pending = stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS);
        else
            proc_signal(s->handler, SIGCONT);
    }
    int killed = fault_kill(&s->handler) == 0;
    print_message("sigkill handler: killed holding %lld unfinished results\n", pending);
    s->handler = stack_handler_start(s, "handler-b");
    fault_load_join(&ld);
    CHECK(flowing, "results never started flowing (%lld of %lld)", r.seen, r.want);
    CHECK(fault_accepted() == FAULT_LOAD, "only %zu of %d POSTs accepted (%s)",
          fault_accepted(), FAULT_LOAD, fault_l.unexpected_sample);
    CHECK(s->handler != NULL, "handler-b did not start");
    CHECK(killed, "the handler did not die on SIGKILL");
    CHECK(pending > 0, "the handler never held an unfinished result: not mid-batch");

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == FAULT_LOAD, "%zu of %d completed", fault_l.completed,
          FAULT_LOAD);
    fault_check_stats(s, &before);
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- SIGKILL the api under load -------------------------------------------------------
 */

static void test_fault_sigkill_api(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind k = {
        .directive = "latency=200", .status = "completed", .requests = -1, .ok = -1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_load ld;
    char why[512] = "";
    int ok = 0;

    fault_begin("sigkill api");
    fault_load_start(&ld, s, "sigkill api", kinds, 1, 0, FAULT_LOAD, FAULT_PACE_MS,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    /* Threads are running from here: no CHECK (it would leave them) until joined. */
    struct fault_until u = {FAULT_LOAD / 3};
    if (harness_poll(harness_timeout(10000), 5, fault_check_accepted, &u) != 0) {
        snprintf(why, sizeof(why), "only %zu POSTs accepted before the kill",
                 fault_accepted());
        goto join;
    }
    size_t at_kill = fault_accepted();
    if (fault_kill(&s->api) != 0) {
        snprintf(why, sizeof(why), "the api did not die on SIGKILL");
        goto join;
    }
    /* The posters meet a closed port for a moment. */
    harness_sleep_ms(200);
    if (stack_api_restart(s, "api-2", NULL) != 0) {
        snprintf(why, sizeof(why), "the api did not start again");
        goto join;
    }
    print_message("sigkill api: killed after %zu accepted\n", at_kill);
    ok = 1;
join:
    if (!ok)
        atomic_store(&ld.stop, 1);
    fault_load_join(&ld);
    CHECK(ok, "%s", why);
    print_message("sigkill api: %ld POSTs got no answer\n", fault_l.conn_errors);
    CHECK(fault_accepted() >= FAULT_LOAD, "only %zu accepted", fault_accepted());
    CHECK(fault_l.unexpected == 0, "%ld POSTs got an unexpected answer, e.g. %s",
          fault_l.unexpected, fault_l.unexpected_sample);
    CHECK(fault_l.conn_errors > 0, "no POST met the dead api: the kill hit no load");

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == fault_l.n, "%zu of %zu completed", fault_l.completed,
          fault_l.n);
}

/* ---- redis-server restarted under load ------------------------------------------------
 */

struct fault_refusals {
    long want;
};

static int fault_check_refusals(void *arg)
{
    const struct fault_refusals *r = arg;
    pthread_mutex_lock(&fault_l.mu);
    long n = fault_l.refused_503;
    pthread_mutex_unlock(&fault_l.mu);
    return n >= r->want;
}

static void test_fault_redis_restart(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    /* At the upstream while Redis goes: their outcomes have to wait for it. */
    static const struct fault_kind k = {
        .directive = "latency=300", .status = "completed", .requests = -1, .ok = -1};
    const struct fault_kind *kinds[] = {&k};
    struct proc *processor = s->processor, *handler = s->handler;
    struct fault_load ld;
    char why[512] = "";
    int ok = 0;

    fault_begin("redis-server restart (AOF)");
    fault_load_start(&ld, s, "redis restart", kinds, 1, 0, FAULT_LOAD, FAULT_PACE_MS,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    struct fault_until u = {FAULT_LOAD / 3};
    if (harness_poll(harness_timeout(10000), 5, fault_check_accepted, &u) != 0) {
        snprintf(why, sizeof(why), "only %zu POSTs accepted before the restart",
                 fault_accepted());
        goto join;
    }
    size_t at_stop = fault_accepted();
    /* SIGTERM: a graceful shutdown fsyncs the AOF, so nothing acknowledged is lost. */
    if (stack_redis_stop(s) != 0) {
        snprintf(why, sizeof(why), "redis-server did not exit 0 on SIGTERM");
        goto join;
    }
    long long down = harness_now_ms();
    struct fault_refusals want = {10};
    harness_poll(harness_timeout(5000), 10, fault_check_refusals, &want);
    if (harness_now_ms() - down < 1000)
        harness_sleep_ms((int)(1000 - (harness_now_ms() - down)));
    if (stack_redis_start(s) != 0) {
        snprintf(why, sizeof(why), "redis-server did not come back");
        goto join;
    }
    print_message("redis restart: stopped after %zu accepted, down %lld ms\n", at_stop,
                  harness_now_ms() - down);
    ok = 1;
join:
    if (!ok)
        atomic_store(&ld.stop, 1);
    fault_load_join(&ld);
    if (!ok && s->redis != NULL && !proc_alive(s->redis))
        stack_redis_start(s); /* the rest of the group needs it */
    CHECK(ok, "%s", why);
    print_message("redis restart: %ld POSTs answered 503, %ld no answer\n",
                  fault_l.refused_503, fault_l.conn_errors);
    CHECK(fault_l.refused_503 > 0, "no POST was answered 503 while Redis was down");
    CHECK(fault_l.bad_503 == 0,
          "%ld of the 503s were not JSON with error.code redis_unavailable, e.g. %s",
          fault_l.bad_503, fault_l.unexpected_sample);
    CHECK(fault_l.unexpected == 0 && fault_l.conn_errors == 0,
          "%ld POSTs got an unexpected answer and %ld none, e.g. %s", fault_l.unexpected,
          fault_l.conn_errors, fault_l.unexpected_sample);
    CHECK(fault_accepted() >= FAULT_LOAD, "only %zu accepted after Redis came back",
          fault_accepted());

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == fault_l.n, "%zu of %zu completed", fault_l.completed,
          fault_l.n);
    /* The same processes: they reconnected rather than died. */
    CHECK(s->processor == processor && proc_alive(processor),
          "the processor did not survive the restart; see %s", processor->log);
    CHECK(s->handler == handler && proc_alive(handler),
          "the handler did not survive the restart; see %s", handler->log);
    CHECK(harness_file_contains(processor->log, "is back") == 1,
          "the processor never logged its reconnection; see %s", processor->log);
    CHECK(harness_file_contains(handler->log, "is back") == 1,
          "the handler never logged its reconnection; see %s", handler->log);
    char w[256];
    CHECK(stack_drained(s, 10000, w, sizeof(w)) == 0, "%s", w);
}

/* ---- the upstream misbehaves
 * ------------------------------------------------------------ */

/* Posts FAULT_LOAD chats of the given kinds at once, waits for all of them and
 * checks the ledger, every chat's outcome and what reached the fake. */
static void fault_upstream_run(const char *name, const struct fault_kind *const *kinds,
                               size_t nkinds)
{
    struct stack *s = &fault_stack;
    struct fault_stats before;
    fault_begin(name);
    fault_stats_get(s, &before);
    fault_post_all(s, name, kinds, nkinds, FAULT_LOAD);
    CHECK(fault_accepted() == FAULT_LOAD, "%s: only %zu of %d POSTs accepted (%s)", name,
          fault_accepted(), FAULT_LOAD, fault_l.unexpected_sample);
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    fault_check_stats(s, &before);
    fault_require_alive(s->processor, "the processor");
    char why[256];
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

#define FAULT_KINDS(a) (a), sizeof(a) / sizeof((a)[0])

/* One 429 each, then a plain answer: the wait is what the upstream asked for,
 * up to RETRY_AFTER_MAX_MS (2500). Without it the backoff would be ~50 ms. */
static void test_fault_upstream_retry_after(void **state)
{
    (void)state;
    static const struct fault_kind seconds = {.directive =
                                                  "status=429 retry-after=1 times=1",
                                              .status = "completed",
                                              .attempts = 2,
                                              .requests = 2,
                                              .http_status = 429,
                                              .answers = 1,
                                              .ok = 1,
                                              .min_ms = 900,
                                              .max_ms = 2400};
    /* An HTTP-date has whole seconds: 2 s ahead is more than 1 s away. */
    static const struct fault_kind date = {.directive =
                                               "status=429 retry-after-date=2 times=1",
                                           .status = "completed",
                                           .attempts = 2,
                                           .requests = 2,
                                           .http_status = 429,
                                           .answers = 1,
                                           .ok = 1,
                                           .min_ms = 950,
                                           .max_ms = 3400};
    static const struct fault_kind ms = {.directive =
                                             "status=429 retry-after-ms=700 times=1",
                                         .status = "completed",
                                         .attempts = 2,
                                         .requests = 2,
                                         .http_status = 429,
                                         .answers = 1,
                                         .ok = 1,
                                         .min_ms = 650,
                                         .max_ms = 2000};
    static const struct fault_kind capped = {.directive =
                                                 "status=429 retry-after=30 times=1",
                                             .status = "completed",
                                             .attempts = 2,
                                             .requests = 2,
                                             .http_status = 429,
                                             .answers = 1,
                                             .ok = 1,
                                             .min_ms = FAULT_AFTER_MAX_MS - 100,
                                             .max_ms = 5000};
    const struct fault_kind *kinds[] = {&seconds, &date, &ms, &capped};
    fault_upstream_run("upstream 429 + Retry-After", FAULT_KINDS(kinds));
    CHECK(fault_l.completed == FAULT_LOAD, "%zu of %d completed", fault_l.completed,
          FAULT_LOAD);
}

/* Retrying cannot cure these: one attempt, the upstream's code and message. */
static void test_fault_upstream_final_4xx(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "status=429 quota",
         .status = "failed",
         .code = "insufficient_quota",
         .needle = "exceeded your current quota",
         .attempts = 1,
         .requests = 1,
         .http_status = 429,
         .answers = 1},
        {.directive = "status=400",
         .status = "failed",
         .code = "context_length_exceeded",
         .needle = "maximum context length",
         .attempts = 1,
         .requests = 1,
         .http_status = 400,
         .answers = 1},
        {.directive = "status=401",
         .status = "failed",
         .code = "invalid_api_key",
         .needle = "Incorrect API key",
         .attempts = 1,
         .requests = 1,
         .http_status = 401,
         .answers = 1},
        {.directive = "status=403",
         .status = "failed",
         .code = "unsupported_country_region_territory",
         .needle = "not supported",
         .attempts = 1,
         .requests = 1,
         .http_status = 403,
         .answers = 1},
        {.directive = "status=404",
         .status = "failed",
         .code = "model_not_found",
         .needle = "does not exist",
         .attempts = 1,
         .requests = 1,
         .http_status = 404,
         .answers = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2], &k[3], &k[4]};
    fault_upstream_run("upstream 429 quota/400/401/403/404", FAULT_KINDS(kinds));
    CHECK(fault_l.failed == FAULT_LOAD, "%zu of %d failed", fault_l.failed, FAULT_LOAD);
}

#define FAULT_GAVE_UP "gave up after " FAULT_STR(FAULT_ATTEMPTS) " attempts"

/* Worth retrying: UPSTREAM_MAX_ATTEMPTS (3) attempts, then a clear code; one
 * that recovers on the third attempt completes. */
static void test_fault_upstream_5xx(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "status=500",
         .status = "failed",
         .code = "upstream_unavailable",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 500,
         .answers = FAULT_ATTEMPTS},
        {.directive = "status=502",
         .status = "failed",
         .code = "upstream_unavailable",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 502,
         .answers = FAULT_ATTEMPTS},
        {.directive = "status=503",
         .status = "failed",
         .code = "upstream_unavailable",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 503,
         .answers = FAULT_ATTEMPTS},
        {.directive = "status=504",
         .status = "failed",
         .code = "upstream_unavailable",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 504,
         .answers = FAULT_ATTEMPTS},
        {.directive = "status=429",
         .status = "failed",
         .code = "upstream_rate_limited",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 429,
         .answers = FAULT_ATTEMPTS},
        /* two 502s, then an answer: the third attempt */
        {.directive = "status=502 times=2",
         .status = "completed",
         .attempts = 3,
         .requests = 3,
         .http_status = 502,
         .answers = 2,
         .ok = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2], &k[3], &k[4], &k[5]};
    fault_upstream_run("upstream 500/502/503/504/429", FAULT_KINDS(kinds));
}

/* No answer at all: each attempt ends at UPSTREAM_TIMEOUT_MS (1500). */
static void test_fault_upstream_timeout(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "hang",
         .status = "failed",
         .code = "upstream_timeout",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .min_ms = FAULT_ATTEMPTS * FAULT_TIMEOUT_MS},
        {.directive = "hang times=1",
         .status = "completed",
         .attempts = 2,
         .requests = 2,
         .ok = 1,
         .min_ms = FAULT_TIMEOUT_MS},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1]};
    fault_upstream_run("upstream no answer (timeout)", FAULT_KINDS(kinds));
}

/* A body a few bytes at a time: within the timeout it is an answer, past it a
 * timeout like any other. */
static void test_fault_upstream_drip(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "drip=20",
         .status = "completed",
         .attempts = 1,
         .requests = 1,
         .ok = 1},
        {.directive = "drip=300",
         .status = "failed",
         .code = "upstream_timeout",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1]};
    fault_upstream_run("upstream body dripping slowly", FAULT_KINDS(kinds));
}

static void test_fault_upstream_reset(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "reset",
         .status = "failed",
         .code = "upstream_connection_error",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS},
        /* libcurl sends a request again, once, on a fresh connection when a
         * reused one is closed before any answer: up to 2 requests an attempt. */
        {.directive = "close",
         .status = "failed",
         .code = "upstream_connection_error",
         .needle = FAULT_GAVE_UP,
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .requests_max = 2 * FAULT_ATTEMPTS},
        {.directive = "reset times=1",
         .status = "completed",
         .attempts = 2,
         .requests = 2,
         .ok = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2]};
    fault_upstream_run("upstream reset/closed mid-response", FAULT_KINDS(kinds));
}

static void test_fault_upstream_bad_200(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "garbage",
         .status = "failed",
         .code = "upstream_invalid_response",
         .needle = "invalid JSON",
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 200,
         .answers = FAULT_ATTEMPTS},
        {.directive = "nochoices",
         .status = "failed",
         .code = "upstream_invalid_response",
         .needle = "no choices",
         .attempts = FAULT_ATTEMPTS,
         .requests = FAULT_ATTEMPTS,
         .http_status = 200,
         .answers = FAULT_ATTEMPTS},
        {.directive = "garbage times=1",
         .status = "completed",
         .attempts = 2,
         .requests = 2,
         .http_status = 200,
         .answers = 1,
         .ok = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2]};
    fault_upstream_run("upstream 200 invalid JSON/no choices", FAULT_KINDS(kinds));
}

/* Over UPSTREAM_MAX_RESPONSE_BYTES (65536): no retry, it would be as large again. */
static void test_fault_upstream_huge(void **state)
{
    (void)state;
    static const struct fault_kind k[] = {
        {.directive = "huge=200000",
         .status = "failed",
         .code = "upstream_response_too_large",
         .needle = FAULT_STR(FAULT_MAX_RESPONSE),
         .attempts = 1,
         .requests = 1,
         .ok = -1},
        {.directive = "huge=30000",
         .status = "completed",
         .attempts = 1,
         .requests = 1,
         .ok = 1,
         .response_len = 30000},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1]};
    fault_upstream_run("upstream huge body", FAULT_KINDS(kinds));
}

/* Nobody listens at the upstream's address: a processor pointed there fails
 * each chat after its attempts, and goes on. */
static void test_fault_upstream_refused(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind k = {.status = "failed",
                                        .code = "upstream_unreachable",
                                        .needle = FAULT_GAVE_UP,
                                        .attempts = FAULT_ATTEMPTS,
                                        .requests = 0};
    const struct fault_kind *kinds[] = {&k};
    char why[512], url[128];
    struct fault_stats before;

    fault_begin("upstream connection refused");
    CHECK(fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                     sizeof(why)) >= 0,
          "%s", why);
    int port = harness_free_port();
    snprintf(url, sizeof(url), "OPENAI_BASE_URL=http://127.0.0.1:%d/v1", port);
    const char *extra[] = {url, NULL};
    fault_special |= FAULT_SPECIAL_PROCESSOR;
    s->processor = stack_processor_start(s, "processor-refused", extra);
    CHECK(s->processor != NULL, "processor-refused did not start");
    fault_stats_get(s, &before);
    fault_post_all(s, "refused", kinds, 1, FAULT_LOAD);
    CHECK(fault_accepted() == FAULT_LOAD, "only %zu of %d POSTs accepted (%s)",
          fault_accepted(), FAULT_LOAD, fault_l.unexpected_sample);
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    fault_check_stats(s, &before);
    fault_require_alive(s->processor, "processor-refused");
    /* The next test's fault_begin stops it: it must exit 0. */
}

/* ---- poison entries in the request stream
 * ------------------------------------------------ */

/* A hand-made pending record, as the api writes it. 0 or -1. */
static int fault_pending_hash(struct stack *s, const char *trace)
{
    char key[KEYS_MAX + UUID_LEN + 1], now[CLOCK_ISO_LEN];
    keys_trace(&s->keys, trace, key, sizeof(key));
    clock_iso8601(now, clock_now_ms());
    redisReply *r =
        stack_redis(s, "HSET %s trace %s status processing model %s accepted %s", key,
                    trace, FAULT_MODEL, now);
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
        freeReplyObject(r);
    r = stack_redis(s, "EXPIRE %s %d", key, STACK_RESULT_TTL);
    ok = ok && r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* The id of an XADD reply into id; 0 or -1. */
static int fault_xadd_id(redisReply *r, char *id, size_t len)
{
    int ok = r != NULL && r->type == REDIS_REPLY_STRING;
    if (ok)
        snprintf(id, len, "%s", r->str);
    else
        fprintf(stderr, "integration: XADD failed: %s\n",
                r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* The index of the entry with an unknown trace in test_fault_poison_entries. */
#define FAULT_POISON_UNKNOWN 6

struct fault_poison {
    const char *what;
    int result;               /* written to the results stream, not the requests */
    char id[64];              /* its stream entry id (in that stream) */
    char trace[UUID_LEN + 1]; /* "" when it has none */
    int has_record;           /* a pending hash was made for it */
    const char *reason;       /* the dead letter's reason must contain this */
    int found;                /* seen in the dead-letter stream */
    char dead_reason[256];
};

/* Looks for each poison entry in the dead-letter stream, by the entry id the
 * processor records, or by its trace (a dead result names its trace). */
static void fault_find_dead(struct stack *s, struct fault_poison *p, size_t n)
{
    redisReply *r = stack_redis(s, "XRANGE %s - +", s->keys.dead);
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        redisReply *f = e->element[1];
        const char *id = NULL, *trace = NULL, *reason = NULL, *source = NULL;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *name = f->element[k]->str, *value = f->element[k + 1]->str;
            if (strcmp(name, "source") == 0)
                source = value;
            else if (strcmp(name, "id") == 0)
                id = value;
            else if (strcmp(name, "trace") == 0)
                trace = value;
            else if (strcmp(name, "reason") == 0)
                reason = value;
        }
        /* Entry ids are per stream: the handler's dead letters name theirs. */
        int from_results = source != NULL && strcmp(source, s->keys.results) == 0;
        for (size_t k = 0; k < n; k++) {
            int match =
                (id != NULL && from_results == p[k].result && strcmp(id, p[k].id) == 0) ||
                (trace != NULL && p[k].trace[0] && strcmp(trace, p[k].trace) == 0);
            if (match && !p[k].found) {
                p[k].found = 1;
                snprintf(p[k].dead_reason, sizeof(p[k].dead_reason), "%s", STR(reason));
            }
        }
    }
    if (r != NULL)
        freeReplyObject(r);
}

struct fault_dead_wait {
    struct stack *s;
    struct fault_poison *p;
    size_t n;
};

static int fault_check_dead(void *arg)
{
    struct fault_dead_wait *w = arg;
    fault_find_dead(w->s, w->p, w->n);
    for (size_t i = 0; i < w->n; i++)
        if (!w->p[i].found)
            return 0;
    return 1;
}

static void test_fault_poison_entries(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind invalid = {
        .status = "failed", .code = "invalid_request", .requests = -1, .ok = -1};
    static const struct fault_kind limit = {.status = "failed",
                                            .code = "delivery_limit_exceeded",
                                            .needle = "deliver",
                                            .requests = -1,
                                            .ok = -1};
    const struct fault_kind *plain[] = {&fault_plain};
    struct fault_poison p[] = {
        {.what = "missing message", .has_record = 1, .reason = "message"},
        {.what = "missing trace", .reason = "trace"},
        {.what = "trace not a UUID", .reason = "trace"},
        {.what = "temperature \"abc\"", .has_record = 1, .reason = "temperature"},
        {.what = "empty model", .has_record = 1, .reason = "model"},
        {.what = "message not UTF-8", .has_record = 1, .reason = "UTF-8"},
        {.what = "unknown trace"},
        {.what = "delivered too often", .has_record = 1, .reason = "deliver"},
        /* and one in the results stream, for the handler */
        {.what = "result without a status", .result = 1, .reason = "status"},
    };
    const size_t np = sizeof(p) / sizeof(p[0]);
    const char *rq = s->keys.requests;
    char why[256];
    struct proc *processor;

    fault_begin("poison entries");
    processor = s->processor;
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "before: %s", why);
    for (size_t i = 0; i < np; i++) {
        if (i == 1 || i == 2)
            continue;
        CHECK(uuid_v4(p[i].trace) == 0, "uuid_v4");
        if (p[i].has_record)
            CHECK(fault_pending_hash(s, p[i].trace) == 0, "HSET failed");
    }
    snprintf(p[2].trace, sizeof(p[2].trace), "not-a-uuid");
    /* Stream fields are not JSON: the "bad JSON" of a hand-written entry is a
     * field that does not parse (temperature), or bytes that are not text. */
    static const char binary[] = "\xff\xfe\x00 not \xc3\x28 text";
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s model gpt-3.5-turbo "
                                    "temperature 0.7",
                                    rq, p[0].trace),
                        p[0].id, sizeof(p[0].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * message %s model gpt-3.5-turbo "
                                    "temperature 0.7",
                                    rq, "no trace at all"),
                        p[1].id, sizeof(p[1].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s message %s model "
                                    "gpt-3.5-turbo temperature 0.7",
                                    rq, p[2].trace, "a trace that is no UUID"),
                        p[2].id, sizeof(p[2].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s message %s model "
                                    "gpt-3.5-turbo temperature abc",
                                    rq, p[3].trace, "temperature is not a number"),
                        p[3].id, sizeof(p[3].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s message %s model %s "
                                    "temperature 0.7",
                                    rq, p[4].trace, "empty model", ""),
                        p[4].id, sizeof(p[4].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s message %b model "
                                    "gpt-3.5-turbo temperature 0.7",
                                    rq, p[5].trace, binary, sizeof(binary) - 1),
                        p[5].id, sizeof(p[5].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s,
                                    "XADD %s * trace %s message %s model "
                                    "gpt-3.5-turbo temperature 0.7",
                                    rq, p[6].trace, "nobody accepted this trace"),
                        p[6].id, sizeof(p[6].id)) == 0,
          "XADD");
    CHECK(fault_xadd_id(stack_redis(s, "XADD %s * trace %s response %s", s->keys.results,
                                    p[8].trace, "an answer without a status"),
                        p[8].id, sizeof(p[8].id)) == 0,
          "XADD");

    /* The delivery limit: a well-formed entry that (so its delivery count says)
     * was taken and not finished 10 times. A ghost consumer reads it in the same
     * transaction as it is added, so no live processor gets it first, and holds
     * it without ever acking: after CLAIM_IDLE_MS a processor takes it over. */
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "before the ghost: %s", why);
    redisReply *r = stack_redis(s, "MULTI");
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS, "MULTI failed");
    freeReplyObject(r);
    r = stack_redis(s,
                    "XADD %s * trace %s message %s model gpt-3.5-turbo temperature 0.7",
                    rq, p[7].trace, "every processor died on this one");
    freeReplyObject(r);
    r = stack_redis(s, "XREADGROUP GROUP %s ghost-processor COUNT 1 STREAMS %s >",
                    KEYS_GROUP_PROCESSORS, rq);
    freeReplyObject(r);
    r = stack_redis(s, "EXEC");
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_STRING,
          "MULTI XADD XREADGROUP EXEC failed");
    snprintf(p[7].id, sizeof(p[7].id), "%s", r->element[0]->str);
    redisReply *read = r->element[1];
    int got = read->type == REDIS_REPLY_ARRAY && read->elements == 1 &&
              stream_read_entries(read) != NULL &&
              stream_read_entries(read)->elements == 1;
    freeReplyObject(r);
    CHECK(got, "the ghost consumer did not get the entry");
    r = stack_redis(s, "XCLAIM %s %s ghost-processor 0 %s RETRYCOUNT 10 JUSTID", rq,
                    KEYS_GROUP_PROCESSORS, p[7].id);
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1,
          "XCLAIM RETRYCOUNT failed");
    freeReplyObject(r);

    for (size_t i = 0; i < np; i++) {
        if (p[i].has_record)
            CHECK(
                fault_ledger_add(p[i].trace, NULL,
                                 strcmp(p[i].reason, "deliver") == 0 ? &limit : &invalid,
                                 harness_now_ms()) == 0,
                "ledger");
    }

    struct fault_dead_wait w = {.s = s, .p = p, .n = np};
    /* Whatever is missing after this is named by the checks below. */
    harness_poll(harness_timeout(3 * FAULT_CLAIM_IDLE_MS + 3000), 50, fault_check_dead,
                 &w);
    /* And the processor goes on with ordinary chats. */
    fault_post_all(s, "after the poison", plain, 1, 20);
    CHECK(fault_l.unexpected + fault_l.conn_errors == 0, "POST failed: %s",
          fault_l.unexpected_sample);
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);

    for (size_t i = 0; i < np; i++) {
        if (i == FAULT_POISON_UNKNOWN)
            continue; /* last: see below */
        CHECK(p[i].found, "%s (entry %s, trace %s): not in %s", p[i].what, p[i].id,
              p[i].trace[0] ? p[i].trace : "-", s->keys.dead);
        CHECK(p[i].dead_reason[0] != '\0' && strcmp(p[i].dead_reason, "(null)") != 0,
              "%s: its dead letter has no reason", p[i].what);
        CHECK(p[i].reason == NULL || strstr(p[i].dead_reason, p[i].reason) != NULL,
              "%s: dead-letter reason \"%s\" does not mention \"%s\"", p[i].what,
              p[i].dead_reason, p[i].reason);
    }
    /* No record appears for a trace nobody accepted. */
    for (size_t i = 0; i < np; i++) {
        char key[KEYS_MAX + UUID_LEN + 1];
        if (p[i].has_record || p[i].trace[0] == '\0' || !uuid_valid(p[i].trace))
            continue;
        keys_trace(&s->keys, p[i].trace, key, sizeof(key));
        r = stack_redis(s, "EXISTS %s", key);
        CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0,
              "%s: a record %s appeared for it", p[i].what, key);
        freeReplyObject(r);
    }
    fault_require_alive(s->handler, "the handler");
    CHECK(s->processor == processor, "the processor was replaced");
    fault_require_alive(processor, "the processor");
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "after: %s", why);
    /* The issue's table: a poison entry with an unknown trace (well formed, but
     * no record: nobody accepted it) is moved to the dead-letter stream, by the
     * processor (before calling the upstream) or by the handler (finding no
     * record to write). */
    const struct fault_poison *u = &p[FAULT_POISON_UNKNOWN];
    CHECK(u->found, "%s (entry %s, trace %s): not in %s", u->what, u->id, u->trace,
          s->keys.dead);
    CHECK(u->dead_reason[0] != '\0' && strcmp(u->dead_reason, "(null)") != 0,
          "%s: its dead letter has no reason", u->what);
}

/* ---- the dead-letter stream is capped
 * --------------------------------------------------- */

struct fault_added {
    struct stack *s;
    long long want, seen;
};

static int fault_check_dead_added(void *arg)
{
    struct fault_added *a = arg;
    a->seen = stack_xadded(a->s, a->s->keys.dead);
    return a->seen >= a->want;
}

static void test_fault_dead_letter_cap(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 3 * FAULT_NODE_ENTRIES };
    char why[256];

    long long added = stack_xadded(s, s->keys.dead);
    CHECK(added >= 0, "XINFO STREAM %s failed", s->keys.dead);
    redisReply *r = stack_redis(s, "PING");
    CHECK(r != NULL, "Redis is not answering");
    freeReplyObject(r);
    /* Pipelined: poison entries without a trace, nothing to fail for them. */
    for (int i = 0; i < N; i++)
        redisAppendCommand(s->rc, "XADD %s * message poison-%d model m temperature 0.5",
                           s->keys.requests, i);
    for (int i = 0; i < N; i++) {
        void *reply = NULL;
        CHECK(redisGetReply(s->rc, &reply) == REDIS_OK, "XADD %d failed", i);
        freeReplyObject(reply);
    }
    struct fault_added a = {.s = s, .want = added + N};
    CHECK(harness_poll(harness_timeout(20000), 50, fault_check_dead_added, &a) == 0,
          "only %lld of %d poison entries dead-lettered", a.seen - added, N);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
    long long len = stack_xlen(s, s->keys.dead);
    print_message("dead-letter cap: %lld dead letters in all, XLEN %s = %lld "
                  "(DEAD_LETTER_MAX %d)\n",
                  a.seen, s->keys.dead, len, FAULT_DEAD_MAX);
    CHECK(len >= 0 && len <= FAULT_DEAD_MAX + FAULT_NODE_ENTRIES,
          "XLEN %s = %lld after %lld dead letters; want <= DEAD_LETTER_MAX %d + %d "
          "(MAXLEN ~ trims whole nodes)",
          s->keys.dead, len, a.seen, FAULT_DEAD_MAX, FAULT_NODE_ENTRIES);
    fault_require_alive(s->processor, "the processor");
}

/* ---- SIGTERM to each binary
 * ----------------------------------------------------------------- */

/* The processor stops reading at once, lets what can finish within
 * SHUTDOWN_GRACE_MS finish, and hands back the rest: another processor takes
 * that over at once, not after CLAIM_IDLE_MS. */
static void test_fault_sigterm_processor(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { SLOW = 100, FAST = 50, LATE = 10 };
    /* The slow ones would take 5 s on their first attempt only. */
    /* Their record says attempts=1: the attempt handed back is not counted by
     * the processor that takes over (the fake's count shows both). */
    static const struct fault_kind slow = {.directive = "latency=5000 times=1",
                                           .status = "completed",
                                           .requests = 2,
                                           .ok = 1};
    /* The fast ones finish within the grace period whenever SIGTERM comes. */
    static const struct fault_kind fast = {.directive = "latency=600",
                                           .status = "completed",
                                           .attempts = 1,
                                           .requests = 1,
                                           .ok = 1};
    static const struct fault_kind late = {
        .status = "completed", .attempts = 1, .requests = 1, .ok = 1};
    const struct fault_kind *kslow[] = {&slow}, *kfast[] = {&fast}, *klate[] = {&late};
    static const char *const patient[] = {"UPSTREAM_TIMEOUT_MS=20000", NULL};
    /* Takes over nothing but what was handed back. */
    static const char *const taker[] = {"CLAIM_IDLE_MS=600000", NULL};
    char why[512];
    struct fault_stats before;

    fault_begin("sigterm processor");
    CHECK(fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                     sizeof(why)) >= 0,
          "idle: %s", why);
    fault_special |= FAULT_SPECIAL_PROCESSOR;
    s->processor = stack_processor_start(s, "processor-term", patient);
    CHECK(s->processor != NULL, "processor-term did not start");
    fault_stats_get(s, &before);
    fault_post_all(s, "sigterm processor slow", kslow, 1, SLOW);
    fault_post_all(s, "sigterm processor fast", kfast, 1, FAST);
    CHECK(fault_accepted() == SLOW + FAST, "only %zu POSTs accepted (%s)",
          fault_accepted(), fault_l.unexpected_sample);
    struct fault_fake_flight f = {.s = s, .want = SLOW + FAST};
    CHECK(harness_poll(harness_timeout(5000), 10, fault_check_in_flight, &f) == 0,
          "only %lld of %d chats reached the upstream", f.seen, SLOW + FAST);

    struct proc *a = s->processor;
    char alog[PATH_MAX];
    snprintf(alog, sizeof(alog), "%s", a->log);
    long long t0 = harness_now_ms();
    CHECK(proc_signal(a, SIGTERM) == 0, "cannot signal processor-term");
    /* Posted once it is stopping: it must not take them. */
    struct fault_log_wait lw = {alog, "stopping:"};
    CHECK(harness_poll(harness_timeout(2000), 5, fault_check_log, &lw) == 0,
          "processor-term never said it was stopping; see %s", alog);
    fault_post_all(s, "sigterm processor late", klate, 1, LATE);
    CHECK(fault_accepted() == SLOW + FAST + LATE, "late POSTs not accepted (%s)",
          fault_l.unexpected_sample);
    long long took = fault_exited(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS,
                                  why, sizeof(why));
    CHECK(took >= 0, "%s", why);
    took = harness_now_ms() - t0;
    print_message("sigterm processor: exited 0 after %lld ms (grace %d ms)\n", took,
                  FAULT_GRACE_MS);
    CHECK(took <= harness_timeout(FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS),
          "processor-term took %lld ms to exit, want <= %d", took,
          harness_timeout(FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS));
    CHECK(harness_file_contains(alog, "handed back") == 1,
          "processor-term never said it handed work back; see %s", alog);

    /* The fast ones finished within the grace period; the slow ones are pending,
     * handed back; the late ones were not run. (A read already on its way when
     * the shutdown began may have brought some of them: those are handed back
     * too.) */
    long long pending = stack_xpending(s, s->keys.requests, KEYS_GROUP_PROCESSORS);
    long long len = stack_xlen(s, s->keys.requests);
    CHECK(len == SLOW + LATE,
          "after the exit XLEN %s = %lld, want %d (the slow and late "
          "ones)",
          s->keys.requests, len, SLOW + LATE);
    CHECK(pending >= SLOW && pending <= SLOW + LATE,
          "after the exit %lld entries pending, want the %d slow ones (and maybe late "
          "ones)",
          pending, SLOW);
    for (size_t i = 0; i < fault_l.n; i++) {
        long http;
        if (fault_l.t[i].kind != &late)
            continue;
        json_t *j = chat_get(s, fault_l.t[i].id, &http);
        int processing =
            http == 200 && strcmp(STR(http_json_str(j, "status")), "processing") == 0;
        json_decref(j);
        CHECK(processing,
              "a chat posted after SIGTERM was run by the stopping processor");
    }

    long long t1 = harness_now_ms();
    fault_special |= FAULT_SPECIAL_PROCESSOR;
    s->processor = stack_processor_start(s, "processor-taker", taker);
    CHECK(s->processor != NULL, "processor-taker did not start");
    fault_settle(s, FAULT_SETTLE_MS);
    print_message("sigterm processor: all settled %lld ms after the taker started\n",
                  harness_now_ms() - t1);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == fault_l.n, "%zu of %zu completed", fault_l.completed,
          fault_l.n);
    fault_check_stats(s, &before);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* The handler finishes the batch in hand and exits 0; nothing is left pending
 * on it, and the next handler writes the rest. */
static void test_fault_sigterm_handler(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind k[] = {
        {.directive = "latency=100", .status = "completed", .requests = 1, .ok = 1},
        {.directive = "latency=500", .status = "completed", .requests = 1, .ok = 1},
        {.directive = "latency=900", .status = "completed", .requests = 1, .ok = 1},
    };
    const struct fault_kind *kinds[] = {&k[0], &k[1], &k[2]};
    char why[512];

    fault_begin("sigterm handler");
    long long added = stack_xadded(s, s->keys.results);
    fault_post_all(s, "sigterm handler", kinds, 3, FAULT_LOAD);
    CHECK(fault_accepted() == FAULT_LOAD, "only %zu POSTs accepted (%s)",
          fault_accepted(), fault_l.unexpected_sample);
    struct fault_results r = {.s = s, .want = added + FAULT_LOAD / 5};
    CHECK(harness_poll(harness_timeout(10000), 10, fault_check_results, &r) == 0,
          "results never started flowing");
    /* HANDLER_BLOCK_MS (1000) is the longest a batch can be waited for. */
    long long took =
        fault_term(&s->handler, 1000 + FAULT_EXIT_SLACK_MS, why, sizeof(why));
    CHECK(took >= 0, "%s", why);
    long long pending = stack_xpending(s, s->keys.results, KEYS_GROUP_HANDLERS);
    print_message("sigterm handler: exited 0 after %lld ms, %lld results left pending\n",
                  took, pending);
    CHECK(pending == 0,
          "the handler left %lld results pending: it did not finish its batch", pending);
    s->handler = stack_handler_start(s, "handler-c");
    CHECK(s->handler != NULL, "handler-c did not start");

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == FAULT_LOAD, "%zu of %d completed", fault_l.completed,
          FAULT_LOAD);
}

/* The api stops accepting and answers what it has open: every POST gets a 202 or
 * no connection at all, never an error page; it exits 0. */
static void test_fault_sigterm_api(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind k = {
        .directive = "latency=100", .status = "completed", .requests = -1, .ok = -1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_load ld;
    char why[512] = "";
    int ok = 0;
    long long took = -1;

    fault_begin("sigterm api");
    fault_load_start(&ld, s, "sigterm api", kinds, 1, 0, FAULT_LOAD, FAULT_PACE_MS,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    struct fault_until u = {FAULT_LOAD / 3};
    if (harness_poll(harness_timeout(10000), 5, fault_check_accepted, &u) != 0) {
        snprintf(why, sizeof(why), "only %zu POSTs accepted before SIGTERM",
                 fault_accepted());
        goto join;
    }
    took = fault_term(&s->api, 5000, why, sizeof(why));
    if (took < 0)
        goto join;
    harness_sleep_ms(100);
    if (stack_api_restart(s, "api-3", NULL) != 0) {
        snprintf(why, sizeof(why), "the api did not start again");
        goto join;
    }
    ok = 1;
join:
    if (!ok)
        atomic_store(&ld.stop, 1);
    fault_load_join(&ld);
    if (!ok && s->api == NULL)
        stack_api_restart(s, "api-3", NULL);
    CHECK(ok, "%s", why);
    print_message("sigterm api: exited 0 after %lld ms; %ld POSTs got no connection\n",
                  took, fault_l.conn_errors);
    CHECK(fault_l.unexpected == 0 && fault_l.refused_503 == 0,
          "%ld POSTs got an error answer during the shutdown, e.g. %s",
          fault_l.unexpected + fault_l.refused_503, fault_l.unexpected_sample);
    CHECK(fault_accepted() >= FAULT_LOAD, "only %zu accepted", fault_accepted());

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == fault_l.n, "%zu of %zu completed", fault_l.completed,
          fault_l.n);
}

/* Processors whose calls may outlast FAULT_TIMEOUT_MS: their chats take seconds. */
static const char *const fault_patient[] = {"UPSTREAM_TIMEOUT_MS=20000", NULL};
/* The same, for a chat whose call is cut by three hand-backs: each cut call did
 * reach the upstream, so it counts against UPSTREAM_MAX_ATTEMPTS (3 + the last). */
static const char *const fault_roll[] = {"UPSTREAM_TIMEOUT_MS=20000",
                                         "UPSTREAM_MAX_ATTEMPTS=5", NULL};

/* ---- a key of the wrong type
 * ----------------------------------------------------------------- */

struct fault_wait_log {
    struct proc *p;
    const char *needle;
};

static int fault_check_proc_log(void *arg)
{
    const struct fault_wait_log *w = arg;
    return harness_file_contains(w->p->log, w->needle) == 1;
}

static int fault_check_requests(void *arg)
{
    struct fault_fake_flight *f = arg;
    json_t *st = stack_fake_stats(f->s);
    f->seen = stack_stat(st, "requests", 0);
    json_decref(st);
    return f->seen >= f->want;
}

struct fault_pending_wait {
    struct stack *s;
    long long want;
};

static int fault_check_pending(void *arg)
{
    struct fault_pending_wait *w = arg;
    return stack_xpending(w->s, w->s->keys.requests, KEYS_GROUP_PROCESSORS) >= w->want;
}

/* Someone made the results stream a string (a misconfigured prefix, a stray
 * SET). The processor's write must fail as a whole: the request stays pending
 * with its outcome, nothing is acknowledged, and once the key is mended every
 * chat completes without calling the upstream again. */
static void test_fault_wrong_type(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 50 };
    static const struct fault_kind k = {
        .status = "completed", .attempts = 1, .requests = 1, .ok = 1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_stats before;
    char why[256];

    fault_begin("a key of the wrong type");
    fault_stats_get(s, &before);
    redisReply *r = stack_redis(s, "SET %s not-a-stream", s->keys.results);
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS, "SET %s failed", s->keys.results);
    freeReplyObject(r);
    fault_post_all(s, "wrong type", kinds, 1, N);
    CHECK(fault_accepted() == N, "only %zu of %d POSTs accepted (%s)", fault_accepted(),
          N, fault_l.unexpected_sample);
    struct fault_wait_log w = {s->processor, "WRONGTYPE"};
    CHECK(harness_poll(harness_timeout(10000), 20, fault_check_proc_log, &w) == 0,
          "the processor never said its write was refused; see %s", s->processor->log);
    /* Every chat has been to the upstream and been read; none may be
     * acknowledged (the old MULTI/EXEC acknowledged them all the same). */
    struct fault_fake_flight done = {.s = s, .want = before.requests + N};
    CHECK(harness_poll(harness_timeout(10000), 20, fault_check_requests, &done) == 0,
          "only %lld of %d chats reached the upstream", done.seen - before.requests, N);
    struct fault_pending_wait pw = {s, N};
    harness_poll(harness_timeout(5000), 20, fault_check_pending, &pw);
    long long len = stack_xlen(s, s->keys.requests);
    long long pending = stack_xpending(s, s->keys.requests, KEYS_GROUP_PROCESSORS);
    print_message("wrong type: writes refused; XLEN %s = %lld, %lld pending\n",
                  s->keys.requests, len, pending);
    CHECK(len == N && pending == N,
          "with the results key a string, XLEN %s = %lld and %lld pending, want %d and "
          "%d: requests were acknowledged although their outcome was never written",
          s->keys.requests, len, pending, N, N);

    r = stack_redis(s, "DEL %s", s->keys.results);
    freeReplyObject(r);
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == N, "%zu of %d completed after the key was mended",
          fault_l.completed, N);
    fault_check_stats(s, &before);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- Redis away longer than the claim interval, two processors
 * ------------------------------------------------------------------ */

/* Both processors hold calls at the upstream when Redis goes away for longer
 * than CLAIM_IDLE_MS: their heartbeats stop, so on the way back every entry
 * looks abandoned. Neither may take the other's: upstream calls = chats. */
static void test_fault_redis_away_two_processors(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 20, AWAY_MS = 2500 };
    static const struct fault_kind k = {.directive = "latency=4000",
                                        .status = "completed",
                                        .attempts = 1,
                                        .requests = 1,
                                        .ok = 1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_stats before;
    char why[512];

    fault_begin("Redis away > claim interval, 2 procs");
    fault_processor_swap("processor-away", fault_patient);
    fault_second = stack_processor_start(s, "processor-twin", fault_patient);
    struct proc **twin = &fault_second;
    CHECK(s->processor != NULL && *twin != NULL, "the processors did not start");
    fault_stats_get(s, &before);
    fault_post_all(s, "redis away", kinds, 1, N);
    CHECK(fault_accepted() == N, "only %zu of %d POSTs accepted (%s)", fault_accepted(),
          N, fault_l.unexpected_sample);
    struct fault_fake_flight f = {.s = s, .want = N};
    CHECK(harness_poll(harness_timeout(5000), 10, fault_check_in_flight, &f) == 0,
          "only %lld of %d chats reached the upstream", f.seen, N);
    CHECK(stack_redis_stop(s) == 0, "redis-server did not exit 0 on SIGTERM");
    harness_sleep_ms(AWAY_MS); /* the fault itself: longer than CLAIM_IDLE_MS */
    CHECK(stack_redis_start(s) == 0, "redis-server did not come back");

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == N, "%zu of %d completed", fault_l.completed, N);
    struct fault_stats after;
    fault_stats_get(s, &after);
    print_message("redis away: %d chats, %lld upstream calls\n", N,
                  after.requests - before.requests);
    fault_check_stats(s, &before);
    CHECK(fault_term(twin, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why, sizeof(why)) >= 0,
          "%s", why);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- three rolling restarts under load
 * ---------------------------------------------------------------------- */

#define FAULT_CONSUMERS_MAX 64

struct fault_consumers {
    size_t n;
    char name[FAULT_CONSUMERS_MAX][160];
};

/* The consumers of the processors group (XINFO CONSUMERS); 0 or -1. */
static int fault_consumers(struct stack *s, struct fault_consumers *out)
{
    out->n = 0;
    redisReply *r =
        stack_redis(s, "XINFO CONSUMERS %s %s", s->keys.requests, KEYS_GROUP_PROCESSORS);
    int rc = r != NULL && r->type == REDIS_REPLY_ARRAY ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < r->elements && out->n < FAULT_CONSUMERS_MAX; i++) {
        const redisReply *c = r->element[i];
        for (size_t k = 0; c->type == REDIS_REPLY_ARRAY && k + 1 < c->elements; k += 2)
            if (strcmp(c->element[k]->str, "name") == 0)
                snprintf(out->name[out->n++], sizeof(out->name[0]), "%s",
                         c->element[k + 1]->str);
    }
    freeReplyObject(r);
    return rc;
}

/* Consumers in after that were not in before and belong to none of the live
 * processors (pids): left behind by a process that exited. Counted into *n, the
 * first named in example. */
static size_t fault_new_stale(const struct fault_consumers *before,
                              const struct fault_consumers *after, const pid_t *live,
                              size_t nlive, char *example, size_t len)
{
    size_t stale = 0;
    for (size_t i = 0; i < after->n; i++) {
        int known = 0;
        for (size_t k = 0; k < before->n && !known; k++)
            known = strcmp(after->name[i], before->name[k]) == 0;
        for (size_t k = 0; k < nlive && !known; k++) {
            char suffix[32];
            snprintf(suffix, sizeof(suffix), "-%ld", (long)live[k]);
            size_t nl = strlen(after->name[i]), sl = strlen(suffix);
            known = nl > sl && strcmp(after->name[i] + nl - sl, suffix) == 0;
        }
        if (!known && stale++ == 0)
            snprintf(example, len, "%s", after->name[i]);
    }
    return stale;
}

struct fault_holders {
    struct stack *s;
    pid_t pid;    /* the one live processor expected to hold everything */
    long long n;  /* entries pending */
    long long on; /* ... of which on that processor */
};

/* 1 once every pending entry is held by the processor with pid h->pid. */
static int fault_check_holders(void *arg)
{
    struct fault_holders *h = arg;
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "-%ld", (long)h->pid);
    redisReply *r =
        stack_redis(h->s, "XPENDING %s %s", h->s->keys.requests, KEYS_GROUP_PROCESSORS);
    h->n = h->on = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 4) {
        freeReplyObject(r);
        return 0;
    }
    h->n = r->element[0]->integer;
    const redisReply *per = r->element[3];
    for (size_t i = 0; per->type == REDIS_REPLY_ARRAY && i < per->elements; i++) {
        const redisReply *c = per->element[i];
        if (c->type != REDIS_REPLY_ARRAY || c->elements != 2)
            continue;
        size_t nl = strlen(c->element[0]->str), sl = strlen(suffix);
        if (nl > sl && strcmp(c->element[0]->str + nl - sl, suffix) == 0)
            h->on += atoll(c->element[1]->str);
    }
    freeReplyObject(r);
    return h->n > 0 && h->on == h->n;
}

/* A deploy: each processor in turn gets SIGTERM while it holds calls that take
 * longer than SHUTDOWN_GRACE_MS, hands them back, and a new one starts. Three
 * rounds take every chat through more hand-backs than MAX_DELIVERIES (3): no
 * chat may fail for it, and the group must not keep a consumer per exit. */
static void test_fault_rolling_restarts(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 40, ROUNDS = 3 };
    static const struct fault_kind k = {
        .directive = "latency=6000", .status = "completed", .requests = -1, .ok = -1};
    const struct fault_kind *kinds[] = {&k};
    char why[512], name[32];

    fault_begin("three rolling restarts under load");
    CHECK(s->processor != NULL, "the processor is not running");
    CHECK(fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                     sizeof(why)) >= 0,
          "%s", why);
    fault_special |= FAULT_SPECIAL_PROCESSOR;
    struct fault_consumers before, after;
    CHECK(fault_consumers(s, &before) == 0, "XINFO CONSUMERS failed");
    s->processor = stack_processor_start(s, "processor-roll", fault_roll);
    fault_second = stack_processor_start(s, "processor-roll0", fault_roll);
    struct proc *other = fault_second;
    CHECK(s->processor != NULL && other != NULL, "the processors did not start");
    fault_post_all(s, "rolling", kinds, 1, N);
    CHECK(fault_accepted() == N, "only %zu of %d POSTs accepted (%s)", fault_accepted(),
          N, fault_l.unexpected_sample);
    struct fault_fake_flight f = {.s = s, .want = N};
    CHECK(harness_poll(harness_timeout(5000), 10, fault_check_in_flight, &f) == 0,
          "only %lld of %d chats reached the upstream", f.seen, N);

    for (int round = 1; round <= ROUNDS; round++) {
        /* The older of the two goes; what it held must end up on the other. */
        CHECK(fault_term(&s->processor, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why,
                         sizeof(why)) >= 0,
              "round %d: %s", round, why);
        s->processor = other;
        fault_second = NULL;
        struct fault_holders h = {.s = s, .pid = other->pid};
        CHECK(harness_poll(harness_timeout(10000), 20, fault_check_holders, &h) == 0,
              "round %d: %lld of %lld pending entries on the live processor", round, h.on,
              h.n);
        snprintf(name, sizeof(name), "processor-roll%d", round);
        other = fault_second = stack_processor_start(s, name, fault_roll);
        CHECK(other != NULL, "%s did not start", name);
        print_message("rolling restarts: round %d, %lld entries handed over\n", round,
                      h.n);
    }

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == N, "%zu of %d completed", fault_l.completed, N);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
    CHECK(fault_consumers(s, &after) == 0, "XINFO CONSUMERS failed");
    pid_t live[] = {s->processor->pid, other->pid};
    char stale_name[160] = "";
    size_t stale =
        fault_new_stale(&before, &after, live, 2, stale_name, sizeof(stale_name));
    print_message("rolling restarts: %zu consumers before, %zu after %d restarts, %zu "
                  "left behind\n",
                  before.n, after.n, ROUNDS, stale);
    CHECK(stale == 0,
          "%zu consumers of exited processors stay in the group after %d restarts, "
          "e.g. %s",
          stale, ROUNDS, stale_name);
    fault_second = NULL;
    CHECK(fault_term(&other, FAULT_GRACE_MS + FAULT_EXIT_SLACK_MS, why, sizeof(why)) >= 0,
          "%s", why);
}

/* ---- Redis slow (not down) under load ----------------------------------------------
 */

#define FAULT_SLOW_LOAD 100
#define FAULT_SLOW_SLEEP "1.5" /* past the api's REDIS_TIMEOUT_MS (1000) */

/* Redis stops answering for a moment (DEBUG SLEEP) while chats come in: POSTs
 * whose write it holds get 504 "fate unknown" and are retried with the same key.
 * Each chat is accepted once, runs once, and reaches the upstream once. */
static void test_fault_redis_slow(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    static const struct fault_kind k = {
        .status = "completed", .attempts = 1, .requests = 1, .ok = 1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_stats before;
    struct fault_load ld;
    redisContext *sleeper = NULL;
    char why[512] = "";
    int ok = 0;

    fault_begin("redis slow (DEBUG SLEEP " FAULT_SLOW_SLEEP ")");
    fault_stats_get(s, &before);
    long long added = stack_xadded(s, s->keys.requests);
    fault_load_start(&ld, s, "redis slow", kinds, 1, FAULT_SLOW_LOAD, 0, FAULT_PACE_MS,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    struct fault_until u = {FAULT_SLOW_LOAD / 4};
    if (harness_poll(harness_timeout(10000), 5, fault_check_accepted, &u) != 0) {
        snprintf(why, sizeof(why), "only %zu POSTs accepted before the sleep",
                 fault_accepted());
        goto join;
    }
    size_t at_sleep = fault_accepted();
    sleeper = stack_redis_sleep(s, FAULT_SLOW_SLEEP);
    if (sleeper == NULL) {
        snprintf(why, sizeof(why), "could not put Redis to sleep");
        goto join;
    }
    void *woke = NULL;
    if (redisGetReply(sleeper, &woke) != REDIS_OK) {
        snprintf(why, sizeof(why), "DEBUG SLEEP never answered");
        goto join;
    }
    freeReplyObject(woke);
    print_message("redis slow: asleep after %zu accepted\n", at_sleep);
    ok = 1;
join:
    if (!ok)
        atomic_store(&ld.stop, 1);
    fault_load_join(&ld);
    if (sleeper != NULL)
        redisFree(sleeper);
    CHECK(ok, "%s", why);
    print_message("redis slow: %ld answers 504 redis_timeout (retried), %ld 503\n",
                  fault_l.fate_unknown, fault_l.refused_503);
    CHECK(fault_l.unexpected == 0 && fault_l.conn_errors == 0 && fault_l.bad_503 == 0,
          "%ld POSTs got an unexpected answer and %ld none, e.g. %s", fault_l.unexpected,
          fault_l.conn_errors, fault_l.unexpected_sample);
    CHECK(fault_accepted() + (size_t)fault_l.refused_503 == FAULT_SLOW_LOAD,
          "%zu accepted and %ld refused of %d posted", fault_accepted(),
          fault_l.refused_503, FAULT_SLOW_LOAD);

    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == fault_l.n, "%zu of %zu completed", fault_l.completed,
          fault_l.n);
    /* A chat written although its POST was told otherwise would show here. */
    CHECK(stack_xadded(s, s->keys.requests) - added == (long long)fault_l.n,
          "%lld request-stream entries for %zu accepted chats",
          stack_xadded(s, s->keys.requests) - added, fault_l.n);
    fault_check_stats(s, &before);
    CHECK(fault_l.fate_unknown > 0, "no POST met the sleeping Redis");
    char w[256];
    CHECK(stack_drained(s, 10000, w, sizeof(w)) == 0, "%s", w);
}

/* ---- bounded spend: attempts across kills, deadlines
 * ------------------------------------------------------------------------ */

/* Each chat's processor is SIGKILLed mid-call twice: the third processor finds
 * both attempts counted in the record and, with UPSTREAM_MAX_ATTEMPTS at 2, ends
 * the chat instead of calling a third time. */
static void test_fault_attempts_across_kills(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 5 };
    static const char *const two[] = {"UPSTREAM_TIMEOUT_MS=20000",
                                      "UPSTREAM_MAX_ATTEMPTS=2", NULL};
    static const struct fault_kind k = {.directive = "latency=6000",
                                        .status = "failed",
                                        .code = "upstream_attempts_exhausted",
                                        .needle = "UPSTREAM_MAX_ATTEMPTS",
                                        .attempts = 2,
                                        .requests = 2,
                                        .ok = 0};
    const struct fault_kind *kinds[] = {&k};
    struct fault_stats before;
    char why[512];

    fault_begin("killed mid-call twice, 2 attempts");
    fault_processor_swap("processor-spend-a", two);
    fault_stats_get(s, &before);
    fault_post_all(s, "spend", kinds, 1, N);
    CHECK(fault_accepted() == N, "only %zu of %d POSTs accepted (%s)", fault_accepted(),
          N, fault_l.unexpected_sample);
    for (int kill = 1; kill <= 2; kill++) {
        /* Every chat on the wire (again), then the processor holding them dies. */
        struct fault_fake_flight f = {.s = s, .want = before.requests + kill * N};
        CHECK(harness_poll(harness_timeout(15000), 20, fault_check_requests, &f) == 0,
              "kill %d: the upstream got %lld of %d calls", kill,
              f.seen - before.requests, kill * N);
        CHECK(fault_kill(&s->processor) == 0, "kill %d: the processor did not die", kill);
        s->processor = stack_processor_start(
            s, kill == 1 ? "processor-spend-b" : "processor-spend-c", two);
        CHECK(s->processor != NULL, "the next processor did not start");
    }
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    fault_check_stats(s, &before);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* A deadline that passes during a retryable failure ends the chat instead of
 * another attempt; one far away changes nothing. */
static void test_fault_deadline(void **state)
{
    (void)state;
    static const struct fault_kind late = {.directive = "status=503 latency=700",
                                           .status = "failed",
                                           .code = "deadline_exceeded",
                                           .needle = "deadline",
                                           .attempts = 1,
                                           .requests = 1,
                                           .http_status = 503,
                                           .answers = 1,
                                           .ok = 0,
                                           .deadline_ms = 500};
    static const struct fault_kind roomy = {.status = "completed",
                                            .attempts = 1,
                                            .requests = 1,
                                            .ok = 1,
                                            .deadline_ms = 60000};
    const struct fault_kind *kinds[] = {&late, &roomy};
    fault_upstream_run("deadline_ms", FAULT_KINDS(kinds));
}

/* ---- the script cache flushed
 * ------------------------------------------------------------------------- */

/* The api, the processor and the handler send their scripts by SHA1; an operator's
 * SCRIPT FLUSH in the middle of the work must cost nothing but a resend: chats in
 * flight when it comes complete, and POSTs after it are accepted. */
static void test_fault_script_flush(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    enum { N = 50 };
    static const struct fault_kind k = {.directive = "latency=500",
                                        .status = "completed",
                                        .attempts = 1,
                                        .requests = 1,
                                        .ok = 1};
    const struct fault_kind *kinds[] = {&k};
    struct fault_stats before;
    char why[256];

    fault_begin("SCRIPT FLUSH mid-work");
    fault_stats_get(s, &before);
    fault_post_all(s, "script flush", kinds, 1, N);
    CHECK(fault_accepted() == N, "only %zu of %d POSTs accepted (%s)", fault_accepted(),
          N, fault_l.unexpected_sample);
    redisReply *r = stack_redis(s, "SCRIPT FLUSH");
    CHECK(r != NULL && r->type == REDIS_REPLY_STATUS, "SCRIPT FLUSH failed");
    freeReplyObject(r);
    fault_post_all(s, "script flushed", kinds, 1, N);
    CHECK(fault_accepted() == 2 * N, "only %zu of %d POSTs accepted (%s)",
          fault_accepted(), 2 * N, fault_l.unexpected_sample);
    fault_settle(s, FAULT_SETTLE_MS);
    fault_check_ledger();
    fault_check_kinds(s);
    CHECK(fault_l.completed == 2 * N, "%zu of %d completed", fault_l.completed, 2 * N);
    fault_check_stats(s, &before);
    CHECK(stack_drained(s, 10000, why, sizeof(why)) == 0, "%s", why);
}

/* ---- bounded memory
 * ------------------------------------------------------------------------ */

static long long fault_info_memory(struct stack *s)
{
    redisReply *r = stack_redis(s, "INFO memory");
    long long n = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "used_memory:");
        if (p != NULL)
            n = atoll(p + strlen("used_memory:"));
    }
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

/* Keys in Redis but the workers' own (heartbeats, their index, the finished-chat
 * counters): those come and go with processes, whatever the load, and are a
 * fixed few. */
static long long fault_dbsize(struct stack *s)
{
    redisReply *r = stack_redis(s, "DBSIZE");
    long long n = r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r != NULL)
        freeReplyObject(r);
    char cursor[32] = "0";
    while (n >= 0) {
        r = stack_redis(s, "SCAN %s MATCH %s[ws]* COUNT 1000", cursor, s->prefix);
        int ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
        for (size_t i = 0; ok && i < r->element[1]->elements; i++) {
            const char *k = r->element[1]->element[i]->str + strlen(s->prefix);
            n -= strncmp(k, "worker:", 7) == 0 || strcmp(k, "workers") == 0 ||
                 strcmp(k, "stats") == 0;
        }
        if (ok)
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        if (r != NULL)
            freeReplyObject(r);
        if (!ok)
            n = -1;
        else if (strcmp(cursor, "0") == 0)
            break;
    }
    return n;
}

struct fault_keys {
    struct stack *s;
    long long want, seen;
};

static int fault_check_dbsize(void *arg)
{
    struct fault_keys *k = arg;
    k->seen = fault_dbsize(k->s);
    return k->seen >= 0 && k->seen <= k->want;
}

/* Thousands of chats through a zero-latency upstream: acknowledged entries leave
 * both streams, records expire (CHATQ_RESULT_TTL), and Redis's memory comes back
 * to where it was. */
static void test_fault_bounded_memory(void **state)
{
    (void)state;
    struct stack *s = &fault_stack;
    const int wrapped = harness_timeout(1) > 1;
    const int chats = wrapped ? FAULT_MEM_CHATS_WRAPPED : FAULT_MEM_CHATS;
    const int ttl = wrapped ? FAULT_MEM_TTL_WRAPPED : FAULT_MEM_TTL;
    char ttl_env[64], name[48];
    snprintf(ttl_env, sizeof(ttl_env), "CHATQ_RESULT_TTL=%d", ttl);
    const char *const api_env[] = {ttl_env, "API_THREADS=" FAULT_MEM_API_THREADS, NULL};
    const char *const handler_env[] = {ttl_env, NULL};
    const struct fault_kind *plain[] = {&fault_plain};
    char why[512];

    /* Records that expire within seconds: an api and a handler with a short TTL. */
    fault_begin("warm-up");
    CHECK(fault_term(&s->api, 5000, why, sizeof(why)) >= 0, "%s", why);
    fault_special |= FAULT_SPECIAL_API | FAULT_SPECIAL_HANDLER;
    CHECK(stack_api_restart(s, "api-mem", api_env) == 0, "api-mem did not start");
    CHECK(fault_term(&s->handler, 1000 + FAULT_EXIT_SLACK_MS, why, sizeof(why)) >= 0,
          "%s", why);
    s->handler = stack_handler_start_with(s, "handler-mem", handler_env);
    CHECK(s->handler != NULL, "handler-mem did not start");

    /* The warm-up makes what a load leaves behind for good: a Redis connection for
     * every api worker thread (hence as many posting connections as threads),
     * the stream and group structures, the handler's cached script. */
    long long keys0 = fault_dbsize(s);
    struct fault_load ld;
    fault_load_start(&ld, s, "memory warm-up", plain, 1, FAULT_MEM_WARMUP, 0, 0,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    fault_load_join(&ld);
    fault_load_start(&ld, s, "memory warm-up 2", plain, 1, FAULT_MEM_WARMUP, 0, 0,
                     FAULT_THREADS, FAULT_SETTLE_MS);
    fault_load_join(&ld);
    CHECK(stack_drained(s, 30000, why, sizeof(why)) == 0, "warm-up: %s", why);
    struct fault_keys k = {.s = s, .want = keys0};
    CHECK(harness_poll(harness_timeout((ttl + 20) * 1000), 200, fault_check_dbsize, &k) ==
              0,
          "warm-up records did not expire: DBSIZE %lld, want <= %lld", k.seen, k.want);
    long long mem0 = fault_info_memory(s);
    CHECK(mem0 > 0, "INFO memory failed");

    snprintf(name, sizeof(name), "bounded memory (%d chats)", chats);
    fault_ledger_reset(name);
    long long t0 = harness_now_ms();
    fault_load_start(&ld, s, "memory", plain, 1, (size_t)chats, 0, 0, FAULT_THREADS,
                     FAULT_MEM_MS);
    fault_load_join(&ld);
    long long posted = harness_now_ms() - t0;
    CHECK(fault_accepted() == (size_t)chats,
          "only %zu of %d accepted (%ld unexpected, "
          "%ld no answer: %s)",
          fault_accepted(), chats, fault_l.unexpected, fault_l.conn_errors,
          fault_l.unexpected_sample);
    long long peak_req = stack_xlen(s, s->keys.requests);
    CHECK(stack_drained(s, FAULT_MEM_MS, why, sizeof(why)) == 0, "after the load: %s",
          why);
    long long drained = harness_now_ms() - t0;
    long long mem_drained = fault_info_memory(s);

    /* Final writes, counted from the handlers' logs (the records expire too fast
     * to GET all of them). */
    fault_count_writes(s);
    fault_l.completed = fault_l.failed = fault_l.lost = 0;
    for (size_t i = 0; i < fault_l.n; i++) {
        const struct fault_trace *t = &fault_l.t[i];
        if (t->writes_completed > 0)
            fault_l.completed++;
        else if (t->writes_failed > 0)
            fault_l.failed++;
        else
            fault_l.lost++;
    }
    fault_record();

    k.want = keys0;
    int expired = harness_poll(harness_timeout((ttl + 30) * 1000), 200,
                               fault_check_dbsize, &k) == 0;
    long long mem1 = fault_info_memory(s);
    long long settled = harness_now_ms() - t0;
    printf(
        "bounded memory: %d chats posted in %lld ms (%.0f/s), all processed after %lld "
        "ms; XLEN %s %lld -> %lld, %s %lld; DBSIZE %lld -> %lld after %lld ms; "
        "used_memory %lld before, %lld drained, %lld settled (%+lld bytes)\n",
        chats, posted, posted > 0 ? chats * 1000.0 / posted : 0.0, drained,
        s->keys.requests, peak_req, stack_xlen(s, s->keys.requests), s->keys.results,
        stack_xlen(s, s->keys.results), keys0, k.seen, settled, mem0, mem_drained, mem1,
        mem1 - mem0);
    fflush(stdout);

    char ex[512];
    CHECK(fault_l.lost == 0, "%zu of %zu chats never got a final record written, e.g. %s",
          fault_l.lost, fault_l.n, fault_lost_example(ex, sizeof(ex)));
    CHECK(fault_l.dup == 0, "%zu chats written more than once, e.g. %s", fault_l.dup,
          fault_dup_example(ex, sizeof(ex)));
    CHECK(fault_l.completed == (size_t)chats, "%zu of %d completed", fault_l.completed,
          chats);
    CHECK(expired, "records did not expire: DBSIZE %lld, want <= %lld", k.seen, k.want);
    CHECK(mem1 - mem0 <= FAULT_MEM_SLACK,
          "used_memory grew by %lld bytes (%lld -> %lld), want <= %lld", mem1 - mem0,
          mem0, mem1, FAULT_MEM_SLACK);
}

static const struct CMUnitTest fault_tests[] = {
    cmocka_unit_test(test_fault_sigkill_processor),
    cmocka_unit_test(test_fault_sigkill_handler),
    cmocka_unit_test(test_fault_sigkill_api),
    cmocka_unit_test(test_fault_redis_restart),
    cmocka_unit_test(test_fault_upstream_retry_after),
    cmocka_unit_test(test_fault_upstream_final_4xx),
    cmocka_unit_test(test_fault_upstream_5xx),
    cmocka_unit_test(test_fault_upstream_timeout),
    cmocka_unit_test(test_fault_upstream_drip),
    cmocka_unit_test(test_fault_upstream_reset),
    cmocka_unit_test(test_fault_upstream_bad_200),
    cmocka_unit_test(test_fault_upstream_huge),
    cmocka_unit_test(test_fault_upstream_refused),
    cmocka_unit_test(test_fault_poison_entries),
    cmocka_unit_test(test_fault_dead_letter_cap),
    cmocka_unit_test(test_fault_sigterm_processor),
    cmocka_unit_test(test_fault_sigterm_handler),
    cmocka_unit_test(test_fault_sigterm_api),
    cmocka_unit_test(test_fault_wrong_type),
    cmocka_unit_test(test_fault_redis_away_two_processors),
    cmocka_unit_test(test_fault_rolling_restarts),
    cmocka_unit_test(test_fault_redis_slow),
    cmocka_unit_test(test_fault_attempts_across_kills),
    cmocka_unit_test(test_fault_deadline),
    cmocka_unit_test(test_fault_script_flush),
    cmocka_unit_test(test_fault_bounded_memory),
};

const struct suite_group suite_faults = {"faults", fault_tests,
                                         sizeof(fault_tests) / sizeof(fault_tests[0]),
                                         fault_group_setup, fault_group_teardown};
