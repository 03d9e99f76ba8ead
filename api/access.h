/* access.h - who may use the api: gateway keys (API_KEYS, API_KEYS_FILE, reloaded on
 * SIGHUP) and the origins browsers may call it from (CORS_ORIGINS).
 *
 * Process-wide state: access_init once before the server starts, access_reload from
 * the main thread at any time, the rest from any thread. */
#ifndef CHATQ_API_ACCESS_H
#define CHATQ_API_ACCESS_H

#include <stddef.h>

/* An owner id: 16 hex digits of a hash of the key that made a trace, never the key. */
#define ACCESS_OWNER_LEN 16
/* The longest key and origin accepted. */
#define ACCESS_KEY_MAX 256
#define ACCESS_ORIGIN_MAX 200

/* Reads the keys from keys (comma- or newline-separated, may be NULL or empty) and
 * file (one per line, '#' comments and blank lines ignored; NULL or empty: none),
 * and the allowed origins from origins (comma-separated; NULL or empty: CORS off).
 * Both strings are copied. Returns 0, or -1 with the reason in err. */
int access_init(const char *keys, const char *file, const char *origins, char *err,
                size_t errlen);

/* Reads the keys again (the variable's as given to access_init, the file anew).
 * Returns 0 with the number of keys now in force in *count, or -1 with the reason in
 * err, the keys in force unchanged. */
int access_reload(size_t *count, char *err, size_t errlen);

/* 1 when no key is configured: every request is let in. */
int access_open(void);

/* Checks an Authorization header value (may be NULL). Returns 0 with the owner id of
 * the key in owner ("" when the gateway is open), or -1 when the request must be
 * refused. The key is compared in constant time against every configured one. */
int access_check(const char *authorization, char owner[ACCESS_OWNER_LEN + 1]);

/* The configured origin equal to origin (may be NULL), borrowed, or NULL when CORS
 * is off or origin is not one of them. */
const char *access_cors_origin(const char *origin);

/* 1 when CORS_ORIGINS names at least one origin. */
int access_cors_on(void);

/* Frees everything; no other access_ function may run during or after. */
void access_free(void);

#endif
