/* uuid.h - trace ids: random (version 4) UUIDs in their 36-character form. */
#ifndef CHATQ_UUID_H
#define CHATQ_UUID_H

#define UUID_LEN 36

/* Fills out with a new lower-case UUID v4 and a NUL; returns 0, or -1 if the
 * kernel's random source failed. */
int uuid_v4(char out[UUID_LEN + 1]);

/* 1 if s is a well-formed UUID (any version, either case), 0 otherwise. */
int uuid_valid(const char *s);

/* The 32 hex digits of a UUID without its dashes, as the OpenAI front's ids carry
 * a trace id (resp_<hex>, chatcmpl-<hex>, evt_<hex> in its webhooks). */
#define UUID_HEX_LEN 32
void uuid_hex(const char *uuid, char out[UUID_HEX_LEN + 1]);

#endif
