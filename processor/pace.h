/* pace.h - never more than the upstream allows.
 *
 * Budgets: per upstream key and model, a bucket of requests (UPSTREAM_RPM) and
 * one of tokens (UPSTREAM_TPM), each holding UPSTREAM_BURST_MS' worth, kept in
 * Redis ({prefix}budget:{key id}:{model}) and taken from by every processor
 * atomically. The upstream's x-ratelimit-* headers and its 429s correct them as
 * they come (pace_feedback), so a key shared with other software still paces
 * right: a key with nothing left pauses every processor until its reset.
 *
 * The wait room: a chat that may not start yet leaves the stream and waits in a
 * list of its user's ({prefix}wait:{budget}|{user}); users are served round
 * robin ({prefix}users:{budget}), so one user's ten thousand chats do not starve
 * another's ten. Any processor's dispatch tick moves what the budget allows back
 * into the requests stream, its attempt already counted ("admitted"), so the
 * processor that reads it calls at once. Backoff waits of PARK_MIN_MS or more
 * wait in {prefix}delayed (a sorted set by due time) instead of in a slot. A
 * processor's slots are for calls on the wire.
 *
 * Everything moves by Lua script, so an entry is always in exactly one place:
 * the stream, a wait list, or the delayed set. */
#ifndef CHATQ_PROCESSOR_PACE_H
#define CHATQ_PROCESSOR_PACE_H

#include <stddef.h>

struct processor;
struct job;
struct pace;
struct upstream_limits;

/* How often each processor runs the dispatch. */
#define PACE_TICK_MS 50
/* The most entries one dispatch moves. */
#define PACE_DISPATCH_MAX 256
/* "{key id}:{model}" fits; a model is at most 256 bytes. */
#define PACE_NAME_MAX 300
#define PACE_USER_MAX 80

/* Lua shared by the scripts that touch budgets and the wait room. */
#define PACE_LUA                                                                         \
    "local function now_ms()\n"                                                          \
    "  local t = redis.call('TIME')\n"                                                   \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"               \
    "end\n"                                                                              \
    "local function budget_load(key, rpm, tpm, burst, now)\n"                            \
    "  local h = redis.call('HMGET', key, 'tok', 'ttok', 'ts', 'block', 'rpm', 'tpm',\n" \
    "                       'burst')\n"                                                  \
    "  local b = {key = key, rpm = rpm or tonumber(h[5]) or 0,\n"                        \
    "             tpm = tpm or tonumber(h[6]) or 0, burst = burst or tonumber(h[7])\n"   \
    "             or 1000, block = tonumber(h[4]) or 0}\n"                               \
    "  b.cap = math.max(1, b.rpm * b.burst / 60000)\n"                                   \
    "  b.tcap = math.max(1, b.tpm * b.burst / 60000)\n"                                  \
    "  local el = math.max(0, now - (tonumber(h[3]) or now))\n"                          \
    "  b.tok = math.min(b.cap, (tonumber(h[1]) or b.cap) + el * b.rpm / 60000)\n"        \
    "  b.ttok = math.min(b.tcap, (tonumber(h[2]) or b.tcap) + el * b.tpm / 60000)\n"     \
    "  return b\n"                                                                       \
    "end\n"                                                                              \
    "local function budget_save(b, now)\n"                                               \
    "  redis.call('HSET', b.key, 'tok', b.tok, 'ttok', b.ttok, 'ts', now, 'block',\n"    \
    "             b.block, 'rpm', b.rpm, 'tpm', b.tpm, 'burst', b.burst)\n"              \
    "  redis.call('PEXPIRE', b.key, 600000)\n"                                           \
    "end\n"                                                                              \
    "local function budget_take(b, est, now)\n"                                          \
    "  if now < b.block then return false end\n"                                         \
    "  if b.rpm > 0 and b.tok < 1 then return false end\n"                               \
    "  if b.tpm > 0 and b.ttok < math.min(est, b.tcap) then return false end\n"          \
    "  if b.rpm > 0 then b.tok = b.tok - 1 end\n"                                        \
    "  if b.tpm > 0 then b.ttok = b.ttok - est end\n"                                    \
    "  return true\n"                                                                    \
    "end\n"                                                                              \
    "local function budget_wait(b, est, now)\n"                                          \
    "  local w = math.max(0, b.block - now)\n"                                           \
    "  if b.rpm > 0 and b.tok < 1 then\n"                                                \
    "    w = math.max(w, (1 - b.tok) * 60000 / b.rpm)\n"                                 \
    "  end\n"                                                                            \
    "  local need = math.min(est, b.tcap)\n"                                             \
    "  if b.tpm > 0 and b.ttok < need then\n"                                            \
    "    w = math.max(w, (need - b.ttok) * 60000 / b.tpm)\n"                             \
    "  end\n"                                                                            \
    "  return math.ceil(w)\n"                                                            \
    "end\n"                                                                              \
    "local function park(stream, group, id, prefix, mode, name, user, est, head, due)\n" \
    "  local e = redis.call('XRANGE', stream, id, id)\n"                                 \
    "  if #e == 0 then return 0 end\n"                                                   \
    "  local f, src = {}, e[1][2]\n"                                                     \
    "  for i = 1, #src, 2 do\n"                                                          \
    "    if src[i] ~= 'admitted' then f[#f + 1] = src[i]; f[#f + 1] = src[i + 1] end\n"  \
    "  end\n"                                                                            \
    "  local packed = cmsgpack.pack(est, f)\n"                                           \
    "  if mode == 'room' then\n"                                                         \
    "    local q = prefix .. 'wait:' .. name .. '|' .. user\n"                           \
    "    local n\n"                                                                      \
    "    if head == '1' then n = redis.call('LPUSH', q, packed)\n"                       \
    "    else n = redis.call('RPUSH', q, packed) end\n"                                  \
    "    if n == 1 then redis.call('RPUSH', prefix .. 'users:' .. name, user) end\n"     \
    "    redis.call('SADD', prefix .. 'rooms', name)\n"                                  \
    "  else\n"                                                                           \
    "    redis.call('HSET', prefix .. 'delayed:entries', id, packed)\n"                  \
    "    redis.call('ZADD', prefix .. 'delayed', due, id)\n"                             \
    "  end\n"                                                                            \
    "  redis.call('XACK', stream, group, id)\n"                                          \
    "  redis.call('XDEL', stream, id)\n"                                                 \
    "  return 1\n"                                                                       \
    "end\n"

/* The budget of one model (UPSTREAM_LIMITS). */
struct pace_limit {
    char *model; /* owned */
    long long rpm, tpm;
};

/* Parses UPSTREAM_LIMITS ("model=rpm:tpm,..."; NULL or "": none) into a new array
 * of *n entries (free with pace_limits_free). Returns 0, or -1 with the reason in
 * err. */
int pace_limits_parse(const char *spec, struct pace_limit **out, size_t *n, char *err,
                      size_t errlen);
void pace_limits_free(struct pace_limit *l, size_t n);

/* The budget of model: its UPSTREAM_LIMITS entry, else UPSTREAM_RPM / _TPM. */
void pace_limits_of(const struct processor *p, const char *model, long long *rpm,
                    long long *tpm);

/* Returns the dispatch timer, started, or NULL. p borrowed. */
struct pace *pace_new(struct processor *p);
void pace_free(struct pace *pc);

/* Stops dispatching (shutdown). */
void pace_stop(struct pace *pc);

/* The budget of job's model: "{key id}:{model}" into out. */
void pace_budget_name(const struct processor *p, const char *model, char *out,
                      size_t len);

/* job's user as it goes into key names: itself when made of [A-Za-z0-9._@+=-]
 * only (at most 64 bytes), else a hash of it; "-" for none. */
void pace_user_key(const char *user, char out[PACE_USER_MAX]);

/* Tokens counted against UPSTREAM_TPM before the answer says. */
long long pace_estimate(const struct processor *p, size_t message_len);

/* Moves job's entry out of the stream for wait_ms (a Retry-After or a backoff),
 * into the delayed set. job->state becomes JOB_PARKING; processor_parked has the
 * answer. */
void pace_park_delay(struct processor *p, struct job *job, long long wait_ms);

/* What an answer says of the budget: the real token count against the estimate,
 * and the x-ratelimit-* headers (a key with nothing left pauses for every
 * processor until its reset, at most RETRY_AFTER_MAX_MS). Sent only when there is
 * something to say. */
void pace_feedback(struct processor *p, const struct job *job,
                   const struct upstream_limits *l, long long total_tokens);

#endif
