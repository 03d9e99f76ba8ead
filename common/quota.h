/* quota.h - a gateway key's quota state in Redis: the contract between the api's
 * intake, which checks and charges it (api/intake.c), and whatever makes a chat
 * final and so frees its slot (the handler's finalize and dead-letter scripts, the
 * api's cancel).
 *
 * One hash per gateway key, {prefix}quota:{owner} (keys.h):
 *   tat    the request rate's theoretical arrival time (GCRA), Unix µs
 *   per    the period, µs, tat was counted at (after a reload changed the limit,
 *          what was counted is counted again at the new period)
 *   s<n>   chats accepted during slice n and not final yet. A slice is as long as
 *          KEY_INFLIGHT_MAX_S (slice n = Unix ms / its length); the key's chats in
 *          flight are the sum of its last QUOTA_WINDOW slices, now's and the one
 *          before. A slot whose release never came (the trace expired unfinished,
 *          say) so lapses between 1 and 2 times KEY_INFLIGHT_MAX_S after it was
 *          taken, with no per-chat entry anywhere: a POST reads the whole state
 *          with one HMGET of four fields and writes it with one HSET, whatever the
 *          number of chats in flight. (Shorter slices would lapse a lost slot more
 *          exactly, for a field more read and passed per slice: a quarter lease
 *          cost three more, 6 000 instructions per POST of Redis and the api.)
 * The slice a chat was counted in is kept in its trace hash (REC_SLOT); freeing
 * the slot takes that field away, so a chat is freed once however many of the
 * finalize, dead-letter and cancel paths reach it. Every api process on one Redis
 * must have the same KEY_INFLIGHT_MAX_S (their slices must be the same). */
#ifndef CHATQ_QUOTA_H
#define CHATQ_QUOTA_H

#include "record.h"

#define QUOTA_TAT "tat"
#define QUOTA_PERIOD "per"
#define QUOTA_SLICE "s" /* + the slice number */
#define QUOTA_SLICES_PER_LEASE 1
#define QUOTA_WINDOW (QUOTA_SLICES_PER_LEASE + 1)

/* The slice that now_ms falls in, for a lease of lease_ms. */
static inline long long quota_slice(long long now_ms, long long lease_ms)
{
    long long len = lease_ms / QUOTA_SLICES_PER_LEASE;
    return now_ms / (len > 0 ? len : 1);
}

/* The Lua function that frees the slot of the chat whose trace hash is key, if it
 * holds one, in the quota hash prefix .. owner. With pcall, so that a key of
 * another type cannot stop the script (a dead letter must be written whatever the
 * hash holds). A slice that lapsed (and so may be gone) is not counted any more:
 * what its decrement created is taken away again. */
#define QUOTA_RELEASE_LUA                                                                \
    "local function quota_release(prefix, key)\n"                                        \
    "  local t = redis.pcall('HMGET', key, '" REC_OWNER "', '" REC_SLOT "')\n"           \
    "  if type(t) == 'table' and t[1] and t[1] ~= '' and t[2] then\n"                    \
    "    local q, f = prefix .. t[1], '" QUOTA_SLICE "' .. t[2]\n"                       \
    "    local n = redis.pcall('HINCRBY', q, f, -1)\n"                                   \
    "    if type(n) == 'number' and n < 0 then redis.pcall('HDEL', q, f) end\n"          \
    "    redis.pcall('HDEL', key, '" REC_SLOT "')\n"                                     \
    "  end\n"                                                                            \
    "end\n"

#endif
