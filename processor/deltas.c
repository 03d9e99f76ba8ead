/* deltas.c - a streamed answer's text among the chat's events (see deltas.h). */
#include "deltas.h"

#include <event2/event.h>
#include <hiredis/async.h>

#include "clock.h"
#include "cmd.h"
#include "events.h"
#include "keys.h"
#include "processor.h"
#include "record.h"
#include "rlink.h"
#include "script.h"

/* KEYS: the trace hash, its events channel. ARGV: the text. A record that
 * expired (no status), or a chat the client cancelled meanwhile, gains nothing. */
static const char deltas_lua[] =
    EVENTS_LUA "local st = redis.call('HGET', KEYS[1], '" REC_STATUS "')\n"
               "if st and st ~= '" CHAT_CANCELLED_NAME "' then\n"
               "  chat_event(KEYS[1], KEYS[2], '" EVENTS_DELTA "', ARGV[1])\n"
               "end\n"
               "return 1\n";

static struct script deltas_script = {deltas_lua, ""};

void deltas_register(void)
{
    script_register(&deltas_script);
}

void deltas_flush(struct processor *p, struct job *job)
{
    const struct chunks *c = &job->xfer.chunks;
    char key[KEYS_MAX + UUID_LEN + 1], events[KEYS_MAX + UUID_LEN + 1];
    if (c->text_len <= job->delta_sent)
        return;
    redisAsyncContext *ac = rlink_ctx(p->wr);
    if (ac != NULL) {
        keys_trace(&p->keys, job->trace, key, sizeof(key));
        keys_events(&p->keys, job->trace, events, sizeof(events));
        struct cmd cm;
        script_cmd(&cm, &deltas_script);
        cmd_addz(&cm, "2");
        cmd_addz(&cm, key);
        cmd_addz(&cm, events);
        cmd_add(&cm, c->text + job->delta_sent, c->text_len - job->delta_sent);
        if (!cm.overflow)
            redisAsyncCommandArgv(ac, NULL, NULL, cm.argc, cm.argv, cm.len);
        cmd_free(&cm);
    }
    job->delta_sent = c->text_len;
    job->delta_ms = clock_mono_ms();
}

void deltas_offer(struct processor *p, struct job *job)
{
    long long since = clock_mono_ms() - job->delta_ms;
    if (job->xfer.chunks.text_len - job->delta_sent >= DELTAS_BYTES ||
        since >= DELTAS_INTERVAL_MS) {
        evtimer_del(job->timer);
        deltas_flush(p, job);
        return;
    }
    if (!evtimer_pending(job->timer, NULL)) {
        struct timeval tv = clock_timeval(DELTAS_INTERVAL_MS - since);
        evtimer_add(job->timer, &tv);
    }
}
