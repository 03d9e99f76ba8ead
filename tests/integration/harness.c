/* harness.c - the run's temp dir, free ports, polling and log tails; see harness.h.
 *
 * The temp dir is removed at exit only when every test passed, so a failure
 * leaves each process's log behind for a look. */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "proc.h"

/* Under valgrind our binaries are some 20 times slower; 5 is enough for the
 * waits, which are far above what the normal build needs. */
#define HARNESS_WRAP_SCALE 5

static char harness_tmp[PATH_MAX];
static int harness_failed;
static pid_t harness_owner; /* the process that made harness_tmp */

static int harness_rm_one(const char *path, const struct stat *st, int flag,
                          struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void harness_cleanup(void)
{
    proc_kill_all();
    /* A group's child process (main.c) leaves the temp dir to its parent. */
    if (harness_tmp[0] == '\0' || getpid() != harness_owner)
        return;
    const char *keep = getenv("CHATQ_KEEP_TMP");
    if (harness_failed || (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0)) {
        fprintf(stderr, "integration: logs kept in %s\n", harness_tmp);
        return;
    }
    nftw(harness_tmp, harness_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int harness_init(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(harness_tmp, sizeof(harness_tmp), "%s/chatq-it-XXXXXX", base);
    if (mkdtemp(harness_tmp) == NULL) {
        fprintf(stderr, "integration: mkdtemp %s: %s\n", harness_tmp, strerror(errno));
        harness_tmp[0] = '\0';
        return -1;
    }
    harness_owner = getpid();
    atexit(harness_cleanup);
    return 0;
}

const char *harness_dir(void)
{
    return harness_tmp;
}

int harness_subdir(const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", harness_tmp, name);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    /* mkdir -p, one component at a time */
    for (char *p = out + strlen(harness_tmp) + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(out, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    if (mkdir(out, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

const char *harness_bin_dir(void)
{
    const char *d = getenv("CHATQ_BIN_DIR");
    return d != NULL && d[0] != '\0' ? d : "bin";
}

int harness_bin(const char *prog, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", harness_bin_dir(), prog);
    if (access(out, X_OK) != 0) {
        fprintf(stderr, "integration: %s is not there (%s); build it first\n", out,
                strerror(errno));
        return -1;
    }
    return 0;
}

int harness_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        goto out;
    port = ntohs(sa.sin_port);
out:
    close(fd);
    return port;
}

int harness_timeout(int ms)
{
    const char *wrap = getenv("CHATQ_WRAP");
    return wrap != NULL && wrap[0] != '\0' ? ms * HARNESS_WRAP_SCALE : ms;
}

long long harness_now_ms(void)
{
    return clock_mono_ms();
}

void harness_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int harness_poll(int timeout_ms, int interval_ms, int (*check)(void *arg), void *arg)
{
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        int rc = check(arg);
        if (rc == 1)
            return 0;
        if (rc < 0)
            return -1;
        if (harness_now_ms() >= deadline)
            return -1;
        harness_sleep_ms(interval_ms);
    }
}

/* Prints the last `lines` lines of one file: read it whole (logs are small),
 * then walk back from the end. */
static void harness_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (f == NULL)
        return;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)size + 1);
    if (buf == NULL)
        goto out;
    size = (long)fread(buf, 1, (size_t)size, f);
    buf[size] = '\0';
    long start = size;
    int seen = 0;
    if (start > 0 && buf[start - 1] == '\n')
        start--;
    while (start > 0) {
        if (buf[start - 1] == '\n' && ++seen == lines)
            break;
        start--;
    }
    fprintf(stderr, "---- last %d lines of %s ----\n%s%s", lines, path, buf + start,
            size > 0 && buf[size - 1] != '\n' ? "\n" : "");
out:
    free(buf);
    fclose(f);
}

void harness_dump_logs(const char *dir, int lines)
{
    char pattern[PATH_MAX];
    glob_t g;

    snprintf(pattern, sizeof(pattern), "%s/*.log", dir);
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++)
        harness_tail(g.gl_pathv[i], lines);
    globfree(&g);
}

void harness_mark_failed(void)
{
    harness_failed++;
}

int harness_failures(void)
{
    return harness_failed;
}

int harness_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, len = 0;
    int found = -1;

    if (f == NULL)
        return -1;
    for (;;) {
        if (cap - len < 4096) {
            char *nbuf = realloc(buf, cap + 65536);
            if (nbuf == NULL)
                goto out;
            buf = nbuf;
            cap += 65536;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    buf[len] = '\0';
    found = memmem(buf, len, needle, strlen(needle)) != NULL;
out:
    free(buf);
    fclose(f);
    return found;
}
