/* deadletter.h - the one way an entry reaches the dead-letter stream
 * ({prefix}dead): a Lua function that every script writing a dead letter
 * includes (the processor's outcome write, the handler's finalize scripts), so
 * the shape of a dead letter is written once.
 *
 *   dead_letter(key, max, source, id, reason, deliveries, fields, from)
 *
 * XADDs to key, capped at about max entries: source (the stream the entry came
 * from), id (its id there), reason, deliveries (left out when '' ), then
 * fields[from..] (the entry's own field/value pairs). A script acknowledges the
 * entry after this call, so an entry is acknowledged only once its dead letter
 * is written: a failing XADD raises an error and the script stops there. */
#ifndef CHATQ_DEADLETTER_H
#define CHATQ_DEADLETTER_H

#include "record.h"

#define DEADLETTER_LUA                                                                   \
    "local function dead_letter(key, max, source, id, reason, deliveries, fields, "      \
    "from)\n"                                                                            \
    "  local a = {key, 'MAXLEN', '~', max, '*', '" REC_DEAD_SOURCE "', source,\n"        \
    "             '" REC_DEAD_ID "', id, '" REC_DEAD_REASON "', reason}\n"               \
    "  if deliveries ~= '' then\n"                                                       \
    "    a[#a + 1] = '" REC_DEAD_DELIVERIES "'\n"                                        \
    "    a[#a + 1] = deliveries\n"                                                       \
    "  end\n"                                                                            \
    "  for i = from, #fields do a[#a + 1] = fields[i] end\n"                             \
    "  return redis.call('XADD', unpack(a))\n"                                           \
    "end\n"

#endif
