/* proc.c - fork/exec, signal, wait and stop the processes of a test; see proc.h. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define PROC_MAX 64
#define PROC_MAX_ARGS 64
#define PROC_MAX_ENV 512
#define PROC_STOP_MS 10000

extern char **environ;

static struct proc *proc_table[PROC_MAX];

/* Settings of our binaries that must not leak in from the caller's shell: a
 * test sets what it means, and everything else is the binary's default. */
static const char *const proc_scrubbed[] = {"PORT=",
                                            "HOST=",
                                            "REDIS_URL=",
                                            "CHATQ_PREFIX=",
                                            "CHATQ_RESULT_TTL=",
                                            "LOG_LEVEL=",
                                            "OPENAI_",
                                            "PROCESSOR_",
                                            "UPSTREAM_",
                                            "RETRY_",
                                            "CLAIM_IDLE_MS=",
                                            "MAX_DELIVERIES=",
                                            "SHUTDOWN_GRACE_MS=",
                                            "MAX_BODY_BYTES=",
                                            "WEBHOOK_",
                                            NULL};

static int proc_scrub(const char *entry)
{
    for (int i = 0; proc_scrubbed[i] != NULL; i++)
        if (strncmp(entry, proc_scrubbed[i], strlen(proc_scrubbed[i])) == 0)
            return 1;
    return 0;
}

static int proc_same_name(const char *a, const char *b)
{
    size_t n = strcspn(a, "=");
    return strncmp(a, b, n) == 0 && b[n] == '=';
}

/* Builds the child's environment into envp (pointers borrowed). 0 or -1. */
static int proc_env(char *const env[], int clean, char **envp, int max)
{
    int n = 0;
    for (char **e = environ; *e != NULL; e++) {
        int overridden = clean && proc_scrub(*e);
        for (int i = 0; env != NULL && env[i] != NULL && !overridden; i++)
            overridden = proc_same_name(env[i], *e);
        if (overridden)
            continue;
        if (n + 1 >= max)
            return -1;
        envp[n++] = *e;
    }
    for (int i = 0; env != NULL && env[i] != NULL; i++) {
        int later = 0;
        for (int j = i + 1; env[j] != NULL && !later; j++)
            later = proc_same_name(env[i], env[j]);
        if (later)
            continue;
        if (n + 1 >= max)
            return -1;
        envp[n++] = env[i];
    }
    envp[n] = NULL;
    return 0;
}

static int proc_track(struct proc *p)
{
    for (int i = 0; i < PROC_MAX; i++) {
        if (proc_table[i] == NULL) {
            proc_table[i] = p;
            return 0;
        }
    }
    return -1;
}

static void proc_untrack(struct proc *p)
{
    for (int i = 0; i < PROC_MAX; i++)
        if (proc_table[i] == p)
            proc_table[i] = NULL;
}

struct proc *proc_start(const char *name, const char *log, char *const argv[],
                        char *const env[], int flags)
{
    char *args[PROC_MAX_ARGS];
    char *envp[PROC_MAX_ENV];
    char *wrapcopy = NULL;
    struct proc *p = NULL;
    int n = 0;
    int fd = -1;

    const char *w = getenv("CHATQ_WRAP");
    if ((flags & PROC_WRAP) && w != NULL && w[0] != '\0') {
        wrapcopy = strdup(w);
        if (wrapcopy == NULL)
            goto fail;
        char *save = NULL;
        for (char *tok = strtok_r(wrapcopy, " \t", &save); tok != NULL;
             tok = strtok_r(NULL, " \t", &save)) {
            if (n + 1 >= PROC_MAX_ARGS)
                goto fail;
            args[n++] = tok;
        }
    }
    for (int i = 0; argv[i] != NULL; i++) {
        if (n + 1 >= PROC_MAX_ARGS)
            goto fail;
        args[n++] = argv[i];
    }
    args[n] = NULL;
    if (proc_env(env, flags & PROC_CLEAN, envp, PROC_MAX_ENV) != 0)
        goto fail;

    p = calloc(1, sizeof(*p));
    if (p == NULL)
        goto fail;
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log, sizeof(p->log), "%s", log);
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "integration: open %s: %s\n", log, strerror(errno));
        goto fail;
    }
    if (proc_track(p) != 0)
        goto fail;
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        proc_untrack(p);
        goto fail;
    }
    if (pid == 0) {
        /* If the test binary dies, its servers go with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        /* Our sockets (Redis, HTTP) must not live on in a server. */
        for (int i = 3; i < 1024; i++)
            close(i);
        execvpe(args[0], args, envp);
        fprintf(stderr, "integration: exec %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    close(fd);
    free(wrapcopy);
    return p;
fail:
    if (fd >= 0)
        close(fd);
    free(p);
    free(wrapcopy);
    return NULL;
}

int proc_alive(struct proc *p)
{
    if (p == NULL || p->pid == 0)
        return 0;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
        p->status = status;
        p->pid = 0;
        return 0;
    }
    if (r < 0 && errno != EINTR) {
        p->status = -1; /* reaped elsewhere: nothing left to signal */
        p->pid = 0;
        return 0;
    }
    return 1;
}

int proc_signal(struct proc *p, int sig)
{
    if (!proc_alive(p))
        return -1;
    return kill(p->pid, sig);
}

int proc_wait(struct proc *p, int timeout_ms, int *status)
{
    long long deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        if (!proc_alive(p)) {
            if (status != NULL)
                *status = p->status;
            return 0;
        }
        if (harness_now_ms() >= deadline)
            return -1;
        harness_sleep_ms(10);
    }
}

int proc_stop(struct proc *p)
{
    int status;
    if (p == NULL)
        return -1;
    proc_signal(p, SIGTERM);
    if (proc_wait(p, harness_timeout(PROC_STOP_MS), &status) == 0)
        return status;
    fprintf(stderr, "integration: %s (pid %d) ignored SIGTERM for %d ms; SIGKILL\n",
            p->name, (int)p->pid, harness_timeout(PROC_STOP_MS));
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &p->status, 0);
    p->pid = 0;
    return -1;
}

void proc_free(struct proc *p)
{
    if (p == NULL)
        return;
    if (p->pid != 0)
        proc_stop(p);
    proc_untrack(p);
    free(p);
}

void proc_kill_all(void)
{
    for (int i = 0; i < PROC_MAX; i++) {
        struct proc *p = proc_table[i];
        if (p == NULL || p->pid == 0)
            continue;
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->pid = 0;
    }
}

const char *proc_describe(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "wait status %#x", status);
    return buf;
}
