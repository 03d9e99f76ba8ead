/* access.h - who may use the api: gateway keys (API_KEYS, API_KEYS_FILE, reloaded on
 * SIGHUP), each key's limits (KEY_RPM, KEY_INFLIGHT, KEY_MODELS, or its own on its
 * line of the file), and the origins browsers may call it from (CORS_ORIGINS).
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
/* The longest allow-list of models, as written (comma-separated). */
#define ACCESS_MODELS_MAX 4096

/* What one key may do. Enforced in Redis by the api's intake (see intake.c). */
struct access_limits {
    long long rpm;      /* requests a minute; 0: no limit */
    long long inflight; /* chats accepted and not final yet; 0: no limit */
    const char *models; /* allowed models, comma-separated, no blanks; NULL: any */
};

/* Sets the limits of every key that sets none of its own: rpm and inflight (>= 0; 0:
 * no limit) and models (comma-separated, blanks around names ignored; NULL, "" or
 * "*": any model). Call before access_init; models is copied. Returns 0, or -1 with
 * the reason in err. */
int access_defaults(long long rpm, long long inflight, const char *models, char *err,
                    size_t errlen);

/* Reads the keys from keys (comma- or newline-separated, may be NULL or empty) and
 * file (one per line, '#' comments and blank lines ignored; NULL or empty: none),
 * and the allowed origins from origins (comma-separated; NULL or empty: CORS off).
 * Both strings are copied. Returns 0, or -1 with the reason in err.
 *
 * A line of the file is a key, then optionally its own limits, each name=value,
 * separated by blanks: "rpm=N", "inflight=N" (0: no limit), "models=a,b" ("*": any).
 * What a line does not set is the default's (access_defaults). A key has no blanks. */
int access_init(const char *keys, const char *file, const char *origins, char *err,
                size_t errlen);

/* Reads the keys again (the variable's as given to access_init, the file anew).
 * Returns 0 with the number of keys now in force in *count, or -1 with the reason in
 * err, the keys in force unchanged. */
int access_reload(size_t *count, char *err, size_t errlen);

/* 1 when no key is configured: every request is let in. */
int access_open(void);

/* Checks an Authorization header value (may be NULL). Returns 0 with the owner id of
 * the key in owner ("" when the gateway is open) and, if limits is not NULL, its
 * limits in *limits (borrowed, valid until access_free; NULL when the gateway is
 * open: an open gateway has no quotas), or -1 when the request must be refused. The
 * key is compared in constant time against every configured one. */
int access_check(const char *authorization, char owner[ACCESS_OWNER_LEN + 1],
                 const struct access_limits **limits);

/* 1 when limits (may be NULL) let model (n bytes) be used, else 0. */
int access_model_allowed(const struct access_limits *limits, const char *model, size_t n);

/* The configured origin equal to origin (may be NULL), borrowed, or NULL when CORS
 * is off or origin is not one of them. */
const char *access_cors_origin(const char *origin);

/* 1 when CORS_ORIGINS names at least one origin. */
int access_cors_on(void);

/* Frees everything; no other access_ function may run during or after. */
void access_free(void);

#endif
