/* harness.h - what every integration test shares: one temp dir per run, a
 * sub-directory per group, free loopback ports, bounded polling, and the log
 * tails printed when a group failed.
 *
 * The suite runs as one binary from the repo root:
 *   CHATQ_BIN_DIR   where chatq-api, -processor, -handler, -fake-upstream are
 *                   (default "bin")
 *   CHATQ_WRAP      a command prefix for OUR binaries, e.g. "valgrind -q";
 *                   timeouts are scaled up when it is set. The prefix must
 *                   end up exec'ing the binary in the same process (valgrind
 *                   and env do); a wrapper that forks would be the one
 *                   signalled, and its child would outlive the run
 *   CHATQ_KEEP_TMP  1: keep the temp dir (and its logs) even when all passed
 *   argv[1]         optional test-name filter (fnmatch pattern, e.g. "*redis*") */
#ifndef CHATQ_TEST_HARNESS_H
#define CHATQ_TEST_HARNESS_H

#include <stddef.h>

/* Creates the run's temp dir and registers the atexit cleanup. 0 or -1. */
int harness_init(void);

/* Borrowed: the run's temp dir. */
const char *harness_dir(void);

/* Creates <tmp>/<name> (and any parent) and writes its path into out. 0 or -1. */
int harness_subdir(const char *name, char *out, size_t outlen);

/* Borrowed: CHATQ_BIN_DIR or "bin". */
const char *harness_bin_dir(void);

/* Writes <bin dir>/<prog> into out; returns 0, or -1 (with a message printed)
 * if that file is not an executable. */
int harness_bin(const char *prog, char *out, size_t outlen);

/* A port nobody listened on a moment ago (bind 127.0.0.1:0). -1 on error. */
int harness_free_port(void);

/* ms, multiplied when our binaries run under CHATQ_WRAP (valgrind is slow). */
int harness_timeout(int ms);

long long harness_now_ms(void);
void harness_sleep_ms(int ms);

/* Calls check(arg) every interval_ms until it returns 1 (returns 0), it returns
 * -1 (returns -1 at once: the condition can no longer come true), or timeout_ms
 * pass (returns -1). */
int harness_poll(int timeout_ms, int interval_ms, int (*check)(void *arg), void *arg);

/* Prints the last `lines` lines of every *.log in dir to stderr. */
void harness_dump_logs(const char *dir, int lines);

/* Remembers that something failed (a test, or a teardown, which cmocka 1.1
 * reports but does not count): the temp dir is then kept at exit. */
void harness_mark_failed(void);

/* How many times harness_mark_failed was called. */
int harness_failures(void);

/* 1 if needle occurs in the file at path; 0 if not; -1 if it cannot be read. */
int harness_file_contains(const char *path, const char *needle);

#endif
