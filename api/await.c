/* await.c - waiting for a final status by polling the trace's hash (see await.h).
 *
 * One HGET of the status every AWAIT_POLL_MS on the thread's own connection: simple,
 * and at most 40 small commands a second per waiting caller. The thread is held for
 * the whole wait, so API_THREADS bounds the callers waiting at once. */
#include "await.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "clock.h"
#include "keys.h"
#include "log.h"
#include "record.h"
#include "server.h"
#include "uuid.h"
#include "worker.h"

#define AWAIT_POLL_MS 25

int await_final(struct server *srv, struct worker *w, const char *trace,
                long long deadline_ms)
{
    char key[KEYS_MAX + UUID_LEN + 1];
    keys_trace(&srv->keys, trace, key, sizeof(key));
    const char *argv[] = {"HGET", key, REC_STATUS};
    for (;;) {
        redisReply *r = worker_command(w, trace, 3, argv);
        if (r == NULL)
            return -1;
        if (r->type == REDIS_REPLY_ERROR) {
            log_warn(trace, "Redis refused HGET: %s", r->str);
            freeReplyObject(r);
            return -1;
        }
        int final = r->type != REDIS_REPLY_STRING ||
                    strcmp(r->str, record_status_name(CHAT_PROCESSING)) != 0;
        freeReplyObject(r);
        if (final)
            return 1;
        long long left = deadline_ms - clock_mono_ms();
        /* A stopping api answers what it has rather than hold up its shutdown. */
        if (left <= 0 || atomic_load(&srv->draining))
            return 0;
        long long ms = left < AWAIT_POLL_MS ? left : AWAIT_POLL_MS;
        struct timespec tick = {0, ms * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
}
