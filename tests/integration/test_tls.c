/* test_tls.c - the upstream as production has it: HTTPS with HTTP/2. nginx
 * terminates TLS (certificates from a CA made here with the openssl CLI) and
 * proxies to the fake upstream over HTTP/1.1; the processor trusts that CA
 * through UPSTREAM_CA_FILE. Chats complete over HTTP/2 (nginx's access log
 * says which protocol carried each call, and on which connection), many calls
 * in flight share a few connections, and a certificate the processor must not
 * trust (another CA, another host name, expired) fails the chat at once with
 * upstream_tls_error without a single request reaching the upstream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <curl/curl.h>

#include "harness.h"
#include "stack.h"
#include "suite.h"

#define TLS_CHAT_MS 20000
#define TLS_READY_MS 15000
#define TLS_BURST 200
#define TLS_BURST_LATENCY_MS 1500
#define TLS_CONCURRENCY 256

static struct stack tls_stack;
static struct proc *tls_nginx;
static char tls_dir[PATH_MAX - 64]; /* <tmp>/tls/pki: certificates, nginx */
static char tls_ca[PATH_MAX], tls_other_ca[PATH_MAX];
static char tls_access_log[PATH_MAX], tls_error_log[PATH_MAX];
/* nginx's ports: a good certificate, one for another host name, an expired one */
static int tls_port, tls_wrong_port, tls_expired_port;
static int tls_swaps; /* processors started in place of the first */

/* The stack's processor settings; the strings live as long as the group. */
static char tls_env_url[128], tls_env_ca[PATH_MAX + 32];
static char tls_env_concurrency[64];
static const char *tls_processor_env[4];

/* ---- setup: a CA, certificates, nginx ------------------------------------- */

/* Runs the openssl CLI with args to completion; 0 if it exited 0. */
static int tls_openssl(char *const args[])
{
    char log[PATH_MAX], how[64];
    char *argv[32] = {"openssl"};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    snprintf(log, sizeof(log), "%s/openssl.log", tls_dir);
    struct proc *p = proc_start("openssl", log, argv, NULL, PROC_CLEAN);
    if (p == NULL)
        return -1;
    int status = -1;
    int rc = proc_wait(p, harness_timeout(10000), &status) == 0 && WIFEXITED(status) &&
                     WEXITSTATUS(status) == 0
                 ? 0
                 : -1;
    if (rc != 0)
        fprintf(stderr, "integration: openssl %s %s; see %s\n", args[0],
                proc_describe(status, how, sizeof(how)), log);
    proc_free(p);
    return rc;
}

static int tls_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "integration: cannot write %s\n", path);
        return -1;
    }
    int rc = fputs(text, f) >= 0 ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* Extension sections for the two kinds of certificate: a CA, and a server
 * certificate for the names the processor dials (or for another name). */
static const char tls_openssl_conf[] = "[req]\n"
                                       "distinguished_name = dn\n"
                                       "prompt = no\n"
                                       "[dn]\n"
                                       "CN = chatq test\n"
                                       "[ca]\n"
                                       "basicConstraints = critical,CA:TRUE\n"
                                       "keyUsage = critical,keyCertSign,cRLSign\n"
                                       "subjectKeyIdentifier = hash\n"
                                       "[server]\n"
                                       "basicConstraints = CA:FALSE\n"
                                       "keyUsage = critical,digitalSignature\n"
                                       "extendedKeyUsage = serverAuth\n"
                                       "subjectAltName = IP:127.0.0.1,DNS:localhost\n"
                                       "authorityKeyIdentifier = keyid\n"
                                       "[wrong]\n"
                                       "basicConstraints = CA:FALSE\n"
                                       "keyUsage = critical,digitalSignature\n"
                                       "extendedKeyUsage = serverAuth\n"
                                       "subjectAltName = DNS:example.invalid\n"
                                       "authorityKeyIdentifier = keyid\n";

/* A self-signed CA: <name>.pem, <name>.key. EC keys: quick to make. */
static int tls_ca_make(const char *name, const char *subject)
{
    char conf[PATH_MAX], key[PATH_MAX], cert[PATH_MAX], subj[128];
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", tls_dir);
    snprintf(key, sizeof(key), "%s/%s.key", tls_dir, name);
    snprintf(cert, sizeof(cert), "%s/%s.pem", tls_dir, name);
    snprintf(subj, sizeof(subj), "/CN=%s", subject);
    /* clang-format off */
    char *args[] = {"req", "-x509", "-config", conf, "-extensions", "ca",
                    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-noenc", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", subj, NULL};
    /* clang-format on */
    return tls_openssl(args);
}

/* A server certificate <name>.pem / <name>.key signed by ca.pem, with the
 * extension section ext, valid for days from now (negative: expired since). A
 * request first, then the signature: only x509 takes a negative -days. */
static int tls_leaf_make(const char *name, const char *ext, const char *days)
{
    char conf[PATH_MAX], key[PATH_MAX], csr[PATH_MAX], cert[PATH_MAX], ca_cert[PATH_MAX],
        ca_key[PATH_MAX], extopt[64], daysopt[16];
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", tls_dir);
    snprintf(key, sizeof(key), "%s/%s.key", tls_dir, name);
    snprintf(csr, sizeof(csr), "%s/%s.csr", tls_dir, name);
    snprintf(cert, sizeof(cert), "%s/%s.pem", tls_dir, name);
    snprintf(ca_cert, sizeof(ca_cert), "%s/ca.pem", tls_dir);
    snprintf(ca_key, sizeof(ca_key), "%s/ca.key", tls_dir);
    snprintf(extopt, sizeof(extopt), "%s", ext);
    snprintf(daysopt, sizeof(daysopt), "%s", days);
    /* clang-format off */
    char *req[] = {"req", "-new", "-config", conf,
                   "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                   "-noenc", "-keyout", key, "-out", csr, NULL};
    char *sign[] = {"x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                    "-days", daysopt, "-extfile", conf, "-extensions", extopt,
                    "-out", cert, NULL};
    /* clang-format on */
    return tls_openssl(req) == 0 && tls_openssl(sign) == 0 ? 0 : -1;
}

static int tls_make_pki(void)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", tls_dir);
    if (tls_write_file(conf, tls_openssl_conf) != 0 ||
        tls_ca_make("ca", "chatq test CA") != 0 ||
        tls_ca_make("other-ca", "chatq other test CA") != 0 ||
        tls_leaf_make("server", "server", "2") != 0 ||
        tls_leaf_make("wrong", "wrong", "2") != 0 ||
        tls_leaf_make("expired", "server", "-1") != 0)
        return -1;
    snprintf(tls_ca, sizeof(tls_ca), "%s/ca.pem", tls_dir);
    snprintf(tls_other_ca, sizeof(tls_other_ca), "%s/other-ca.pem", tls_dir);
    return 0;
}

/* nginx in the foreground as one process (no master: nothing can outlive it),
 * everything it writes under tls_dir. It passes the fake's slow answers
 * through as they come (no buffering, long timeouts) and keeps its HTTP/1.1
 * connections to the fake alive. The log line: connection serial number,
 * protocol, method, path, status, end time (s) and duration (s). */
static int tls_nginx_conf(const char *path)
{
    char buf[8192];
    const char *d = tls_dir;
    int n = snprintf(
        buf, sizeof(buf),
        "daemon off;\n"
        "master_process off;\n"
        "worker_processes 1;\n"
        "pid %s/nginx.pid;\n"
        "error_log %s info;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        "    log_format chatq '$connection $server_protocol $request_method $uri "
        "$status $msec $request_time';\n"
        "    access_log %s chatq;\n"
        "    client_body_temp_path %s/body;\n"
        "    proxy_temp_path %s/proxy;\n"
        "    fastcgi_temp_path %s/fastcgi;\n"
        "    uwsgi_temp_path %s/uwsgi;\n"
        "    scgi_temp_path %s/scgi;\n"
        "    client_max_body_size 0;\n"
        "    upstream fake { server 127.0.0.1:%d; keepalive 64; }\n"
        "    proxy_http_version 1.1;\n"
        "    proxy_set_header Connection \"\";\n"
        "    proxy_buffering off;\n"
        "    proxy_request_buffering off;\n"
        "    proxy_read_timeout 300s;\n"
        "    proxy_send_timeout 300s;\n"
        "    server {\n"
        "        listen 127.0.0.1:%d ssl http2;\n"
        "        ssl_certificate %s/server.pem;\n"
        "        ssl_certificate_key %s/server.key;\n"
        "        location / { proxy_pass http://fake; }\n"
        "    }\n"
        "    server {\n"
        "        listen 127.0.0.1:%d ssl http2;\n"
        "        ssl_certificate %s/wrong.pem;\n"
        "        ssl_certificate_key %s/wrong.key;\n"
        "        location / { proxy_pass http://fake; }\n"
        "    }\n"
        "    server {\n"
        "        listen 127.0.0.1:%d ssl http2;\n"
        "        ssl_certificate %s/expired.pem;\n"
        "        ssl_certificate_key %s/expired.key;\n"
        "        location / { proxy_pass http://fake; }\n"
        "    }\n"
        "}\n",
        d, tls_error_log, tls_access_log, d, d, d, d, d, tls_stack.fake_port, tls_port, d,
        d, tls_wrong_port, d, d, tls_expired_port, d, d);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    return tls_write_file(path, buf);
}

/* The body (the fake's {"ok":true}) is not wanted. */
static size_t tls_discard(char *buf, size_t size, size_t n, void *userp)
{
    (void)buf;
    (void)userp;
    return size * n;
}

/* GET url trusting tls_ca only. Returns the HTTP status (0: none) and the HTTP
 * version curl used in *version. */
static long tls_get(const char *url, long *version)
{
    CURL *e = curl_easy_init();
    long status = 0;
    *version = 0;
    if (e == NULL)
        return 0;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, tls_ca);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tls_discard);
    if (curl_easy_perform(e) == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, version);
    }
    curl_easy_cleanup(e);
    return status;
}

static int tls_check_nginx(void *arg)
{
    char url[128], how[64];
    long version;
    (void)arg;
    if (!proc_alive(tls_nginx)) {
        fprintf(stderr, "integration: nginx exited while starting (%s); see %s\n",
                proc_describe(tls_nginx->status, how, sizeof(how)), tls_nginx->log);
        return -1;
    }
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/health", tls_port);
    return tls_get(url, &version) == 200;
}

static int tls_nginx_start(void)
{
    char conf[PATH_MAX], log[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/nginx.conf", tls_dir);
    snprintf(log, sizeof(log), "%s/nginx.log", tls_stack.dir);
    if (tls_nginx_conf(conf) != 0)
        return -1;
    /* -e: the error log before the configuration is read, or nginx tries the
     * system's (/var/log/nginx), which an unprivileged user cannot open. */
    char *argv[] = {"nginx", "-e", tls_error_log, "-p", tls_dir, "-c", conf, NULL};
    tls_nginx = proc_start("nginx", log, argv, NULL, PROC_CLEAN);
    if (tls_nginx == NULL)
        return -1;
    if (harness_poll(harness_timeout(TLS_READY_MS), 20, tls_check_nginx, NULL) != 0) {
        fprintf(stderr, "integration: nginx never answered on port %d; see %s\n",
                tls_port, tls_error_log);
        return -1;
    }
    return 0;
}

static int tls_setup(void **state)
{
    (void)state;
    if (harness_subdir("tls/pki", tls_dir, sizeof(tls_dir)) != 0)
        return -1;
    snprintf(tls_access_log, sizeof(tls_access_log), "%s/access.log", tls_dir);
    snprintf(tls_error_log, sizeof(tls_error_log), "%s/error.log", tls_dir);
    tls_port = harness_free_port();
    tls_wrong_port = harness_free_port();
    tls_expired_port = harness_free_port();
    if (tls_port < 0 || tls_wrong_port < 0 || tls_expired_port < 0 || tls_make_pki() != 0)
        return -1;
    snprintf(tls_env_url, sizeof(tls_env_url), "OPENAI_BASE_URL=https://127.0.0.1:%d/v1",
             tls_port);
    snprintf(tls_env_ca, sizeof(tls_env_ca), "UPSTREAM_CA_FILE=%s", tls_ca);
    snprintf(tls_env_concurrency, sizeof(tls_env_concurrency), "PROCESSOR_CONCURRENCY=%d",
             TLS_CONCURRENCY);
    tls_processor_env[0] = tls_env_url;
    tls_processor_env[1] = tls_env_ca;
    tls_processor_env[2] = tls_env_concurrency;
    tls_processor_env[3] = NULL;
    struct stack_settings set = {.processor = tls_processor_env};
    /* The processor only dials the upstream for a chat: nginx may come after. */
    if (stack_start(&tls_stack, "tls", "tls:", &set) != 0)
        return -1;
    return tls_nginx_start();
}

static int tls_teardown(void **state)
{
    (void)state;
    int rc = stack_stop(&tls_stack);
    proc_free(tls_nginx);
    tls_nginx = NULL;
    return rc;
}

/* ---- helpers ---------------------------------------------------------------- */

/* Stops the stack's processor, which must exit 0 without a sanitizer report,
 * and starts another in its place with extra settings (may be NULL). */
static void tls_processor_swap(const char *const *extra)
{
    char name[64], how[64];
    struct stack *s = &tls_stack;
    if (s->processor != NULL) {
        int st = proc_stop(s->processor);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %s on SIGTERM",
              s->processor->name, proc_describe(st, how, sizeof(how)));
        CHECK(harness_file_contains(s->processor->log, "ERROR: AddressSanitizer") != 1 &&
                  harness_file_contains(s->processor->log, "ERROR: LeakSanitizer") != 1 &&
                  harness_file_contains(s->processor->log, "runtime error:") != 1,
              "sanitizer report in %s", s->processor->log);
        proc_free(s->processor);
        s->processor = NULL;
    }
    snprintf(name, sizeof(name), "processor-%d", ++tls_swaps);
    s->processor = stack_processor_start(s, name, extra);
    CHECK(s->processor != NULL, "%s did not start", name);
}

/* Per-test teardown of the tests that swapped the processor: the stack's own
 * settings again. */
static int tls_processor_restore(void **state)
{
    (void)state;
    tls_processor_swap(NULL);
    return tls_stack.processor != NULL ? 0 : -1;
}

static long long tls_fake_requests(void)
{
    json_t *st = stack_fake_stats(&tls_stack);
    CHECK(st != NULL, "GET /stats of the fake upstream failed");
    long long n = stack_stat(st, "requests", 0);
    json_decref(st);
    return n;
}

/* Size of the file at path (0 if it does not exist yet). */
static long tls_file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* One chat call as nginx logged it. */
struct tls_call {
    long long conn;
    char proto[16];
    double start, end; /* s since the epoch */
};

/* The chat calls nginx logged from byte offset on, the first max of them into
 * calls (may be NULL with max 0). Returns how many there are, or -1 if the log
 * cannot be read. */
static int tls_calls_since(long offset, struct tls_call *calls, int max)
{
    char line[512], method[16], uri[256];
    int n = 0, status;
    double took;
    FILE *f = fopen(tls_access_log, "r");
    if (f == NULL)
        return -1;
    fseek(f, offset, SEEK_SET);
    while (fgets(line, sizeof(line), f) != NULL) {
        struct tls_call c;
        if (sscanf(line, "%lld %15s %15s %255s %d %lf %lf", &c.conn, c.proto, method, uri,
                   &status, &c.end, &took) != 7 ||
            strcmp(method, "POST") != 0 || strcmp(uri, "/v1/chat/completions") != 0)
            continue;
        c.start = c.end - took;
        if (n < max)
            calls[n] = c;
        n++;
    }
    fclose(f);
    return n;
}

/* Waits until nginx logged want chat calls since offset (it logs a call when
 * the answer has been sent, a moment before the chat is seen to finish) and
 * reads them into calls (up to max). Returns how many there are. */
static int tls_calls_wait(long offset, int want, struct tls_call *calls, int max)
{
    long long until = harness_now_ms() + harness_timeout(5000);
    int n;
    for (;;) {
        n = tls_calls_since(offset, calls, max);
        if (n >= want || harness_now_ms() > until)
            return n;
        harness_sleep_ms(20);
    }
}

/* Posts message and waits for the chat to end; returns the final body (new). */
static json_t *tls_chat(const char *message, long long *took_ms)
{
    char trace[UUID_LEN + 1];
    long long t0 = harness_now_ms(), done;
    CHECK(chat_post(&tls_stack, message, NULL, -1, trace) == 0, "POST \"%s\" failed",
          message);
    json_t *j = chat_wait(&tls_stack, trace, TLS_CHAT_MS, &done);
    CHECK(j != NULL, "chat \"%s\" did not finish", message);
    if (took_ms != NULL)
        *took_ms = done - t0;
    return j;
}

/* Posts message and expects the chat to fail with upstream_tls_error after one
 * attempt, no request having reached the fake. Returns the error message (new). */
static char *tls_expect_tls_error(const char *message)
{
    long long before = tls_fake_requests(), took;
    json_t *j = tls_chat(message, &took);
    const char *st = http_json_str(j, "status");
    CHECK(strcmp(STR(st), "failed") == 0, "chat ended %s (%s), want failed", STR(st),
          STR(http_json_str(j, "response")));
    CHECK(strcmp(STR(http_error_code(j)), "upstream_tls_error") == 0,
          "error.code %s (%s), want upstream_tls_error", STR(http_error_code(j)),
          STR(http_error_message(j)));
    const char *msg = http_error_message(j);
    /* Final at the first failure: outcome_give_up would have said "gave up". */
    CHECK(msg != NULL && strstr(msg, "TLS") != NULL && strstr(msg, "gave up") == NULL,
          "error.message \"%s\"", STR(msg));
    char *copy = strdup(msg);
    json_decref(j);
    long long after = tls_fake_requests();
    CHECK(after == before, "the fake got %lld requests through an untrusted connection",
          after - before);
    fprintf(stderr, "integration: TLS failure after %lld ms: %s\n", took, copy);
    return copy;
}

/* ---- tests -------------------------------------------------------------------- */

static void test_tls_chats_complete_over_http2(void **state)
{
    (void)state;
    struct tls_call calls[8];
    char msg[64], want[128];
    long offset = tls_file_size(tls_access_log);
    for (int i = 0; i < 3; i++) {
        snprintf(msg, sizeof(msg), "over TLS %d", i);
        json_t *j = tls_chat(msg, NULL);
        CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat \"%s\" ended %s (%s: %s), want completed", msg,
              STR(http_json_str(j, "status")), STR(http_error_code(j)),
              STR(http_error_message(j)));
        snprintf(want, sizeof(want), "Fake answer to: %s", msg);
        CHECK(strcmp(STR(http_json_str(j, "response")), want) == 0, "response \"%s\"",
              STR(http_json_str(j, "response")));
        json_decref(j);
    }
    int n = tls_calls_wait(offset, 3, calls, 8);
    CHECK(n == 3, "nginx logged %d chat calls, want 3", n);
    for (int i = 0; i < n; i++)
        CHECK(strcmp(calls[i].proto, "HTTP/2.0") == 0,
              "call %d came over %s, want HTTP/2.0", i, calls[i].proto);
    /* Sequential calls reuse the kept-alive connection. */
    CHECK(calls[0].conn == calls[1].conn && calls[1].conn == calls[2].conn,
          "3 sequential calls on connections %lld, %lld, %lld: not kept alive",
          calls[0].conn, calls[1].conn, calls[2].conn);
}

static void test_tls_unknown_ca_fails_at_once(void **state)
{
    (void)state;
    char env[PATH_MAX + 32];
    snprintf(env, sizeof(env), "UPSTREAM_CA_FILE=%s", tls_other_ca);
    const char *extra[] = {env, NULL};
    tls_processor_swap(extra);
    long offset = tls_file_size(tls_access_log);
    char *msg = tls_expect_tls_error("signed by a CA I do not trust");
    CHECK(strstr(msg, "certificate") != NULL, "\"%s\" does not name the certificate",
          msg);
    free(msg);
    CHECK(tls_calls_since(offset, NULL, 0) == 0, "nginx passed a call on");
}

static void test_tls_wrong_host_name_fails(void **state)
{
    (void)state;
    char env[128];
    snprintf(env, sizeof(env), "OPENAI_BASE_URL=https://127.0.0.1:%d/v1", tls_wrong_port);
    const char *extra[] = {env, NULL};
    tls_processor_swap(extra);
    char *msg = tls_expect_tls_error("a certificate for example.invalid");
    CHECK(strstr(msg, "127.0.0.1") != NULL, "\"%s\" does not name the host", msg);
    free(msg);
}

static void test_tls_expired_certificate_fails(void **state)
{
    (void)state;
    char env[128];
    snprintf(env, sizeof(env), "OPENAI_BASE_URL=https://127.0.0.1:%d/v1",
             tls_expired_port);
    const char *extra[] = {env, NULL};
    tls_processor_swap(extra);
    char *msg = tls_expect_tls_error("a certificate that expired yesterday");
    CHECK(strstr(msg, "expired") != NULL, "\"%s\" does not say it expired", msg);
    free(msg);
}

/* 1 for each call, by start time then end time, to find the most at once. */
static int tls_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The most calls in flight at one time. */
static int tls_max_in_flight(const struct tls_call *calls, int n)
{
    if (n <= 0)
        return 0;
    double *starts = calloc((size_t)n, sizeof(double));
    double *ends = calloc((size_t)n, sizeof(double));
    int most = 0, now = 0;
    CHECK(starts != NULL && ends != NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        starts[i] = calls[i].start;
        ends[i] = calls[i].end;
    }
    qsort(starts, (size_t)n, sizeof(double), tls_cmp_double);
    qsort(ends, (size_t)n, sizeof(double), tls_cmp_double);
    for (int i = 0, j = 0; i < n;) {
        if (starts[i] < ends[j]) {
            now++;
            i++;
            if (now > most)
                most = now;
        } else {
            now--;
            j++;
        }
    }
    free(starts);
    free(ends);
    return most;
}

static void test_tls_calls_in_flight_share_connections(void **state)
{
    (void)state;
    static char traces[TLS_BURST][UUID_LEN + 1];
    static struct tls_call calls[TLS_BURST + 16];
    char msg[96];
    long offset = tls_file_size(tls_access_log);

    for (int i = 0; i < TLS_BURST; i++) {
        snprintf(msg, sizeof(msg), "[[fake latency=%d]] burst %d", TLS_BURST_LATENCY_MS,
                 i);
        CHECK(chat_post(&tls_stack, msg, NULL, -1, traces[i]) == 0, "POST %d failed", i);
    }
    for (int i = 0; i < TLS_BURST; i++) {
        json_t *j = chat_wait(&tls_stack, traces[i], TLS_CHAT_MS, NULL);
        CHECK(j != NULL, "chat %d did not finish", i);
        CHECK(strcmp(STR(http_json_str(j, "status")), "completed") == 0,
              "chat %d ended %s (%s: %s)", i, STR(http_json_str(j, "status")),
              STR(http_error_code(j)), STR(http_error_message(j)));
        json_decref(j);
    }
    int n = tls_calls_wait(offset, TLS_BURST, calls, TLS_BURST + 16);
    CHECK(n == TLS_BURST, "nginx logged %d chat calls, want %d", n, TLS_BURST);

    /* Calls per connection, in order of first use. */
    long long conns[TLS_BURST];
    int per_conn[TLS_BURST] = {0};
    int nconns = 0, http2 = 0, busiest = 0;
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < nconns && conns[k] != calls[i].conn)
            k++;
        if (k == nconns)
            conns[nconns++] = calls[i].conn;
        if (++per_conn[k] > busiest)
            busiest = per_conn[k];
        http2 += strcmp(calls[i].proto, "HTTP/2.0") == 0;
    }
    char spread[256] = "";
    for (int k = 0, len = 0; k < nconns && len < (int)sizeof(spread) - 16; k++)
        len += snprintf(spread + len, sizeof(spread) - (size_t)len, "%s%d",
                        k ? " + " : "", per_conn[k]);
    int most = tls_max_in_flight(calls, n);
    fprintf(stderr,
            "integration: TLS: %d calls (up to %d in flight at once, %d over HTTP/2) on "
            "%d TCP connection%s (%s)\n",
            n, most, http2, nconns, nconns == 1 ? "" : "s", spread);
    CHECK(http2 == n, "%d of %d calls came over HTTP/2", http2, n);
    /* Otherwise the burst did not test multiplexing: the calls came one by one. */
    CHECK(most >= TLS_BURST / 2, "only %d calls were in flight at once", most);
    /* HTTP/1.1 would need a connection per call in flight, none carrying more than
     * one at a time. curl fills a connection to 100 streams; while it sets up the
     * next one, a few calls may open a connection each (2 to 9 seen), so the
     * bound is loose. */
    CHECK(busiest >= TLS_BURST / 4, "no connection carried more than %d calls", busiest);
    CHECK(nconns <= TLS_BURST / 10, "%d calls took %d connections (%s)", n, nconns,
          spread);
}

static const struct CMUnitTest tls_tests[] = {
    cmocka_unit_test(test_tls_chats_complete_over_http2),
    cmocka_unit_test_teardown(test_tls_unknown_ca_fails_at_once, tls_processor_restore),
    cmocka_unit_test_teardown(test_tls_wrong_host_name_fails, tls_processor_restore),
    cmocka_unit_test_teardown(test_tls_expired_certificate_fails, tls_processor_restore),
    cmocka_unit_test(test_tls_calls_in_flight_share_connections),
};

const struct suite_group suite_tls = {
    "tls", tls_tests, sizeof(tls_tests) / sizeof(tls_tests[0]), tls_setup, tls_teardown};
