/* proc.h - child processes the tests start, signal, wait for and stop.
 *
 * Every process started is tracked until proc_free(), and proc_kill_all()
 * (run at exit) SIGKILLs whatever is still running, so a failed or crashed
 * test never leaves a server behind. Only pids we forked are ever signalled. */
#ifndef CHATQ_TEST_PROC_H
#define CHATQ_TEST_PROC_H

#include <limits.h>
#include <sys/types.h>

struct proc {
    char name[64];
    char log[PATH_MAX]; /* stdout and stderr, appended */
    pid_t pid;          /* 0 once reaped */
    int status;         /* wait status, valid once reaped */
};

/* flags of proc_start */
#define PROC_WRAP 1  /* put CHATQ_WRAP's words (if set) in front of argv */
#define PROC_CLEAN 2 /* drop chatq settings inherited from the caller's shell */

/* Forks and execs argv (argv[0] looked up in PATH) with the current
 * environment plus env ("NAME=value" strings, NULL-terminated, may be NULL; a
 * later entry wins over an earlier one). Output goes to log. Returns a new proc
 * (free with proc_free), or NULL. */
struct proc *proc_start(const char *name, const char *log, char *const argv[],
                        char *const env[], int flags);

/* 1 if still running (reaps it if it has exited), 0 if not. */
int proc_alive(struct proc *p);

/* Sends sig to the process if it is still running; 0 or -1. */
int proc_signal(struct proc *p, int sig);

/* Waits up to timeout_ms for the process to exit. Returns 0 with the wait
 * status in *status (may be NULL), or -1 if it is still running. */
int proc_wait(struct proc *p, int timeout_ms, int *status);

/* SIGTERM, up to 10 s, then SIGKILL. Returns the wait status, or -1 if it
 * had to be killed. A process that already exited just returns its status. */
int proc_stop(struct proc *p);

/* Stops the process if needed, then frees. NULL is fine. */
void proc_free(struct proc *p);

/* SIGKILLs and reaps every process still tracked (for exit and crashes). */
void proc_kill_all(void);

/* "exited 0", "exited 3", "killed by signal 9" ... into buf; returns buf. */
const char *proc_describe(int status, char *buf, size_t len);

#endif
