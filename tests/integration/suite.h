/* suite.h - how the test files hand their groups to main.c, and the one check
 * macro they all use.
 *
 * A group is a list of cmocka tests sharing one stack (started by the group's
 * setup, stopped by its teardown); its processes log into <tmp>/<name>/. */
#ifndef CHATQ_TEST_SUITE_H
#define CHATQ_TEST_SUITE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct suite_group {
    const char *name; /* also the sub-directory of its logs */
    const struct CMUnitTest *tests;
    size_t count;
    CMFixtureFunction setup;
    CMFixtureFunction teardown;
};

extern const struct suite_group suite_api;
extern const struct suite_group suite_intake;
extern const struct suite_group suite_upstream;
extern const struct suite_group suite_recovery;
extern const struct suite_group suite_lifecycle;
extern const struct suite_group suite_faults;
extern const struct suite_group suite_pacing;
extern const struct suite_group suite_pacing_shared;
extern const struct suite_group suite_pacing_tls;
extern const struct suite_group suite_adaptive;
extern const struct suite_group suite_config;
extern const struct suite_group suite_handler;
extern const struct suite_group suite_fake_limits;
extern const struct suite_group suite_tls;
extern const struct suite_group suite_strict;
extern const struct suite_group suite_secrets;
extern const struct suite_group suite_redis_auth;
extern const struct suite_group suite_access;
extern const struct suite_group suite_quota;
extern const struct suite_group suite_clients;
extern const struct suite_group suite_front;
extern const struct suite_group suite_ops;
extern const struct suite_group suite_openai;
extern const struct suite_group suite_workers;
extern const struct suite_group suite_status_page;
extern const struct suite_group suite_capacity;
extern const struct suite_group suite_webhooks;
extern const struct suite_group suite_memory_cap;
extern const struct suite_group suite_memory_api;
extern const struct suite_group suite_push;

/* Fails the running test with a printf-style message unless cond holds. */
#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond))                                                                     \
            fail_msg(__VA_ARGS__);                                                       \
    } while (0)

/* "(null)"-safe string for messages. */
#define STR(s) ((s) != NULL ? (s) : "(null)")

#endif
