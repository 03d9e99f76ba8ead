/* access.c - gateway keys, their limits, and allowed origins (see access.h). */
#include "access.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ACCESS_MAX_ORIGINS 32

struct access_key {
    char key[ACCESS_KEY_MAX]; /* zero-padded: compared over the whole array */
    size_t len;
    char owner[ACCESS_OWNER_LEN + 1];
    struct access_limits limits; /* models: the default's, or models_own */
    char *models_own;            /* owned: this key's own allow-list, or NULL */
};

/* A key set never changes once published. A reload publishes a new one; the old
 * ones stay until access_free, since a request thread may still be reading one
 * (reloads are rare, sets small). */
struct access_set {
    size_t n, cap;
    struct access_key *keys;
    struct access_set *older;
};

static _Atomic(struct access_set *) access_current;
static pthread_mutex_t access_reload_lock = PTHREAD_MUTEX_INITIALIZER;
static char *access_keys_var, *access_keys_file;
static char *access_origins_buf;
static const char *access_origins[ACCESS_MAX_ORIGINS];
static size_t access_norigins;
/* The limits of a key whose line sets none; models owned by access_default_models. */
static struct access_limits access_default;
static char *access_default_models;

/* The owner id: FNV-1a 64 of the key. Not a cryptographic hash, but 64 bits of it
 * tell nothing usable about a key long enough to be one; it only has to tell keys
 * apart, and to be safe to store and log. */
static void access_owner(const char *key, size_t len, char owner[ACCESS_OWNER_LEN + 1])
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    snprintf(owner, ACCESS_OWNER_LEN + 1, "%016llx", (unsigned long long)h);
}

static void access_set_free(struct access_set *s)
{
    while (s != NULL) {
        struct access_set *older = s->older;
        for (size_t i = 0; i < s->n; i++)
            free(s->keys[i].models_own);
        if (s->keys != NULL)
            memset(s->keys, 0, s->cap * sizeof(*s->keys));
        free(s->keys);
        free(s);
        s = older;
    }
}

/* Adds the key in s..e (trimmed of blanks) to set. 0, or -1 with err. */
static int access_add(struct access_set *set, const char *s, const char *e, char *err,
                      size_t errlen)
{
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    if (s == e)
        return 0;
    size_t len = (size_t)(e - s);
    if (len > ACCESS_KEY_MAX) {
        snprintf(err, errlen, "a key is longer than %d bytes", ACCESS_KEY_MAX);
        return -1;
    }
    if (set->n == set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 4;
        struct access_key *nk = calloc(ncap, sizeof(*nk));
        if (nk == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (set->keys != NULL) {
            memcpy(nk, set->keys, set->n * sizeof(*nk));
            memset(set->keys, 0, set->cap * sizeof(*nk));
        }
        free(set->keys);
        set->keys = nk;
        set->cap = ncap;
    }
    struct access_key *k = &set->keys[set->n++];
    memcpy(k->key, s, len);
    k->len = len;
    access_owner(k->key, len, k->owner);
    k->limits = access_default;
    return 0;
}

static int access_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* An allow-list of models from s..e: a new string of the names, comma-separated
 * without blanks, into *out; NULL for any model ("", "*", or only commas). Returns
 * 0, or -1 with err. */
static int access_models_parse(const char *s, const char *e, char **out, char *err,
                               size_t errlen)
{
    *out = NULL;
    if ((size_t)(e - s) > ACCESS_MODELS_MAX) {
        snprintf(err, errlen, "a list of models is longer than %d bytes",
                 ACCESS_MODELS_MAX);
        return -1;
    }
    char *buf = malloc((size_t)(e - s) + 1);
    size_t len = 0;
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    while (s < e) {
        const char *c = memchr(s, ',', (size_t)(e - s));
        const char *ne = c != NULL ? c : e, *ns = s;
        s = c != NULL ? c + 1 : e;
        while (ns < ne && access_blank(*ns))
            ns++;
        while (ne > ns && access_blank(ne[-1]))
            ne--;
        if (ns == ne)
            continue;
        for (const char *p = ns; p < ne; p++)
            if ((unsigned char)*p < 0x21 || *p == 0x7f) {
                snprintf(err, errlen, "a model name holds a blank or control character");
                free(buf);
                return -1;
            }
        if (ne - ns == 1 && *ns == '*') {
            free(buf); /* "*": any model, whatever else is listed */
            return 0;
        }
        if (len > 0)
            buf[len++] = ',';
        memcpy(buf + len, ns, (size_t)(ne - ns));
        len += (size_t)(ne - ns);
    }
    buf[len] = '\0';
    if (len == 0) {
        free(buf);
        return 0;
    }
    *out = buf;
    return 0;
}

/* A limit's value from s..e: a whole number 0 to 10^9. Returns 0, or -1. */
static int access_number(const char *s, const char *e, long long *out)
{
    long long v = 0;
    if (s == e)
        return -1;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9' || v > 100000000)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v > 1000000000)
        return -1;
    *out = v;
    return 0;
}

/* Applies the options of a key's line, s..e ("rpm=60 inflight=4 models=a,b"), to k.
 * Returns 0, or -1 with err. */
static int access_options(struct access_key *k, const char *s, const char *e, char *err,
                          size_t errlen)
{
    while (s < e) {
        while (s < e && access_blank(*s))
            s++;
        const char *os = s;
        while (s < e && !access_blank(*s))
            s++;
        if (os == s)
            break;
        const char *eq = memchr(os, '=', (size_t)(s - os));
        size_t nlen = eq != NULL ? (size_t)(eq - os) : 0;
        if (eq != NULL && nlen == 3 && strncmp(os, "rpm", 3) == 0 &&
            access_number(eq + 1, s, &k->limits.rpm) == 0)
            continue;
        if (eq != NULL && nlen == 8 && strncmp(os, "inflight", 8) == 0 &&
            access_number(eq + 1, s, &k->limits.inflight) == 0)
            continue;
        if (eq != NULL && nlen == 6 && strncmp(os, "models", 6) == 0) {
            free(k->models_own);
            k->models_own = NULL;
            if (access_models_parse(eq + 1, s, &k->models_own, err, errlen) != 0)
                return -1;
            k->limits.models = k->models_own;
            continue;
        }
        snprintf(err, errlen,
                 "'%.*s' after the key is not rpm=N, inflight=N (N: 0 to 1000000000) "
                 "or models=a,b",
                 (int)(s - os > 40 ? 40 : s - os), os);
        return -1;
    }
    return 0;
}

/* Keys from the variable: separated by commas or line ends. */
static int access_parse_var(struct access_set *set, const char *v, char *err,
                            size_t errlen)
{
    if (v == NULL)
        return 0;
    while (*v != '\0') {
        size_t n = strcspn(v, ",\n");
        if (access_add(set, v, v + n, err, errlen) != 0) {
            snprintf(err + strlen(err), errlen - strlen(err), " (API_KEYS)");
            return -1;
        }
        v += n;
        if (*v != '\0')
            v++;
    }
    return 0;
}

/* Keys from the file: one a line, '#' comments and blank lines skipped. */
static int access_parse_file(struct access_set *set, const char *path, char *err,
                             size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = -1;
    unsigned lineno = 0;

    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "API_KEYS_FILE: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        const char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '#')
            continue;
        /* The key ends at the first blank; its own limits may follow. */
        const char *ke = s;
        while (ke < line + n && !access_blank(*ke))
            ke++;
        size_t before = set->n;
        if (access_add(set, s, ke, err, errlen) != 0 ||
            (set->n > before &&
             access_options(&set->keys[set->n - 1], ke, line + n, err, errlen) != 0)) {
            snprintf(err + strlen(err), errlen - strlen(err), " (API_KEYS_FILE line %u)",
                     lineno);
            goto out;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "API_KEYS_FILE: cannot read %s", path);
        goto out;
    }
    rc = 0;
out:
    if (line != NULL)
        memset(line, 0, cap);
    free(line);
    fclose(f);
    return rc;
}

/* A new set from the variable and the file, or NULL with err. A file that was given
 * but holds no key is an error: it must not open the gateway. */
static struct access_set *access_load(char *err, size_t errlen)
{
    struct access_set *set = calloc(1, sizeof(*set));
    if (set == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (access_parse_var(set, access_keys_var, err, errlen) != 0 ||
        access_parse_file(set, access_keys_file, err, errlen) != 0)
        goto fail;
    if (access_keys_file != NULL && set->n == 0) {
        snprintf(err, errlen, "API_KEYS_FILE: %s holds no key", access_keys_file);
        goto fail;
    }
    return set;
fail:
    access_set_free(set);
    return NULL;
}

int access_defaults(long long rpm, long long inflight, const char *models, char *err,
                    size_t errlen)
{
    char *list = NULL;
    if (rpm < 0 || inflight < 0) {
        snprintf(err, errlen, "a limit is negative");
        return -1;
    }
    if (models != NULL &&
        access_models_parse(models, models + strlen(models), &list, err, errlen) != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "KEY_MODELS: %s", why);
        return -1;
    }
    free(access_default_models);
    access_default_models = list;
    access_default.rpm = rpm;
    access_default.inflight = inflight;
    access_default.models = list;
    return 0;
}

static char *access_dup(const char *s)
{
    return s != NULL && *s != '\0' ? strdup(s) : NULL;
}

int access_init(const char *keys, const char *file, const char *origins, char *err,
                size_t errlen)
{
    access_keys_var = access_dup(keys);
    access_keys_file = access_dup(file);
    access_origins_buf = access_dup(origins);
    if ((keys && *keys && !access_keys_var) || (file && *file && !access_keys_file) ||
        (origins && *origins && !access_origins_buf)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *save = NULL;
    char *o =
        access_origins_buf != NULL ? strtok_r(access_origins_buf, ",", &save) : NULL;
    for (; o != NULL; o = strtok_r(NULL, ",", &save)) {
        while (*o == ' ' || *o == '\t')
            o++;
        char *e = o + strlen(o);
        while (e > o && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '/'))
            *--e = '\0';
        if (*o == '\0')
            continue;
        if (strcmp(o, "*") == 0 || strlen(o) > ACCESS_ORIGIN_MAX ||
            strpbrk(o, "\r\n") != NULL || access_norigins == ACCESS_MAX_ORIGINS) {
            snprintf(err, errlen,
                     "CORS_ORIGINS: '%.64s' is not an origin such as "
                     "https://app.example.com (at most %d, each at most %d bytes)",
                     o, ACCESS_MAX_ORIGINS, ACCESS_ORIGIN_MAX);
            return -1;
        }
        access_origins[access_norigins++] = o;
    }
    struct access_set *set = access_load(err, errlen);
    if (set == NULL)
        return -1;
    atomic_store(&access_current, set);
    return 0;
}

int access_reload(size_t *count, char *err, size_t errlen)
{
    pthread_mutex_lock(&access_reload_lock);
    struct access_set *set = access_load(err, errlen);
    if (set != NULL) {
        set->older = atomic_load(&access_current);
        atomic_store(&access_current, set);
        *count = set->n;
    }
    pthread_mutex_unlock(&access_reload_lock);
    return set != NULL ? 0 : -1;
}

int access_open(void)
{
    struct access_set *set = atomic_load(&access_current);
    return set == NULL || set->n == 0;
}

/* The token of "Bearer <token>", or NULL; *len its length. */
static const char *access_bearer(const char *h, size_t *len)
{
    if (h == NULL)
        return NULL;
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return NULL;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    const char *e = h + strlen(h);
    while (e > h && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *len = (size_t)(e - h);
    return *len > 0 ? h : NULL;
}

int access_check(const char *authorization, char owner[ACCESS_OWNER_LEN + 1],
                 const struct access_limits **limits)
{
    struct access_set *set = atomic_load(&access_current);
    size_t len = 0;

    owner[0] = '\0';
    if (limits != NULL)
        *limits = NULL;
    if (set == NULL || set->n == 0)
        return 0;
    const char *token = access_bearer(authorization, &len);
    if (token == NULL || len > ACCESS_KEY_MAX)
        return -1;
    /* Every key, each over the token's length: how long the comparison takes
     * depends on the number of keys and on the length of the token, which its
     * sender knows, and says nothing about how much of a key the token got right,
     * nor which key it matched. A key's array is zero-padded and as long as the
     * longest token compared. */
    size_t found = set->n;
    for (size_t k = 0; k < set->n; k++) {
        const struct access_key *key = &set->keys[k];
        unsigned diff = (unsigned)(len ^ key->len);
        for (size_t i = 0; i < len; i++)
            diff |= (unsigned)((unsigned char)token[i] ^ (unsigned char)key->key[i]);
        found = diff == 0 ? k : found;
    }
    if (found == set->n)
        return -1;
    memcpy(owner, set->keys[found].owner, ACCESS_OWNER_LEN + 1);
    if (limits != NULL)
        *limits = &set->keys[found].limits;
    return 0;
}

int access_model_allowed(const struct access_limits *limits, const char *model, size_t n)
{
    if (limits == NULL || limits->models == NULL)
        return 1;
    for (const char *p = limits->models; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == n && memcmp(p, model, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

const char *access_cors_origin(const char *origin)
{
    if (origin == NULL)
        return NULL;
    for (size_t i = 0; i < access_norigins; i++)
        if (strcmp(access_origins[i], origin) == 0)
            return access_origins[i];
    return NULL;
}

int access_cors_on(void)
{
    return access_norigins > 0;
}

void access_free(void)
{
    access_set_free(atomic_exchange(&access_current, NULL));
    free(access_keys_var);
    free(access_keys_file);
    free(access_origins_buf);
    free(access_default_models);
    access_keys_var = access_keys_file = access_origins_buf = NULL;
    access_default_models = NULL;
    memset(&access_default, 0, sizeof(access_default));
    access_norigins = 0;
}
