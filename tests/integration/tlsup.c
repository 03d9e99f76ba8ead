/* tlsup.c - nginx with TLS and HTTP/2 in front of the fake upstream, and a CA
 * made with the openssl CLI; see tlsup.h. */
#include "tlsup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <curl/curl.h>

#include "harness.h"

#define TLSUP_READY_MS 15000

/* ---- a CA and certificates ------------------------------------------------------ */

/* Runs the openssl CLI with args to completion; 0 if it exited 0. */
static int tlsup_openssl(const struct tlsup *t, char *const args[])
{
    char log[PATH_MAX], how[64];
    char *argv[32] = {"openssl"};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    snprintf(log, sizeof(log), "%s/openssl.log", t->dir);
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

static int tlsup_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "integration: cannot write %s\n", path);
        return -1;
    }
    int rc = fputs(text, f) >= 0 ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* Extension sections for the kinds of certificate: a CA, a server certificate
 * for the names the processor dials, and one for another name. */
static const char tlsup_openssl_conf[] = "[req]\n"
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

/* EC keys: quick to make. */
int tlsup_ca_make(struct tlsup *t, const char *name, const char *subject)
{
    char conf[PATH_MAX], key[PATH_MAX], cert[PATH_MAX], subj[128];
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", t->dir);
    snprintf(key, sizeof(key), "%s/%s.key", t->dir, name);
    snprintf(cert, sizeof(cert), "%s/%s.pem", t->dir, name);
    snprintf(subj, sizeof(subj), "/CN=%s", subject);
    /* clang-format off */
    char *args[] = {"req", "-x509", "-config", conf, "-extensions", "ca",
                    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-noenc", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", subj, NULL};
    /* clang-format on */
    return tlsup_openssl(t, args);
}

/* A request first, then the signature: only x509 takes a negative -days. */
int tlsup_leaf_make(struct tlsup *t, const char *name, const char *ext, const char *days)
{
    char conf[PATH_MAX], key[PATH_MAX], csr[PATH_MAX], cert[PATH_MAX], ca_cert[PATH_MAX],
        ca_key[PATH_MAX], extopt[64], daysopt[16];
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", t->dir);
    snprintf(key, sizeof(key), "%s/%s.key", t->dir, name);
    snprintf(csr, sizeof(csr), "%s/%s.csr", t->dir, name);
    snprintf(cert, sizeof(cert), "%s/%s.pem", t->dir, name);
    snprintf(ca_cert, sizeof(ca_cert), "%s/ca.pem", t->dir);
    snprintf(ca_key, sizeof(ca_key), "%s/ca.key", t->dir);
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
    return tlsup_openssl(t, req) == 0 && tlsup_openssl(t, sign) == 0 ? 0 : -1;
}

int tlsup_add_server(struct tlsup *t, const char *cert)
{
    if (t->nservers >= TLSUP_SERVERS_MAX || strlen(cert) >= sizeof(t->certs[0]))
        return -1;
    int port = harness_free_port();
    if (port < 0)
        return -1;
    snprintf(t->certs[t->nservers], sizeof(t->certs[0]), "%s", cert);
    t->ports[t->nservers++] = port;
    return port;
}

int tlsup_init(struct tlsup *t, const char *subdir)
{
    char conf[PATH_MAX];
    memset(t, 0, sizeof(*t));
    if (harness_subdir(subdir, t->dir, sizeof(t->dir)) != 0)
        return -1;
    snprintf(t->ca, sizeof(t->ca), "%s/ca.pem", t->dir);
    snprintf(t->access_log, sizeof(t->access_log), "%s/access.log", t->dir);
    snprintf(t->error_log, sizeof(t->error_log), "%s/error.log", t->dir);
    snprintf(conf, sizeof(conf), "%s/openssl.cnf", t->dir);
    if (tlsup_write_file(conf, tlsup_openssl_conf) != 0 ||
        tlsup_ca_make(t, "ca", "chatq test CA") != 0 ||
        tlsup_leaf_make(t, "server", "server", "2") != 0 ||
        tlsup_add_server(t, "server") < 0)
        return -1;
    return 0;
}

/* ---- nginx ------------------------------------------------------------------------ */

/* nginx in the foreground as one process (no master: nothing can outlive it),
 * everything it writes under t->dir. It passes the fake's slow answers through
 * as they come (no buffering, long timeouts) and keeps its HTTP/1.1 connections
 * to the fake alive. The log line: connection serial number, protocol, method,
 * path, status, end time (s) and duration (s). */
static int tlsup_conf(const struct tlsup *t, int upstream_port, const char *path)
{
    char buf[8192];
    const char *d = t->dir;
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
        "    proxy_send_timeout 300s;\n",
        d, t->error_log, t->access_log, d, d, d, d, d, upstream_port);
    for (int i = 0; i < t->nservers && n >= 0 && (size_t)n < sizeof(buf); i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n,
                      "    server {\n"
                      "        listen 127.0.0.1:%d ssl http2;\n"
                      "        ssl_certificate %s/%s.pem;\n"
                      "        ssl_certificate_key %s/%s.key;\n"
                      "        location / { proxy_pass http://fake; }\n"
                      "    }\n",
                      t->ports[i], d, t->certs[i], d, t->certs[i]);
    if (n >= 0 && (size_t)n < sizeof(buf))
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "}\n");
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    return tlsup_write_file(path, buf);
}

/* The body (the fake's {"ok":true}) is not wanted. */
static size_t tlsup_discard(char *buf, size_t size, size_t n, void *userp)
{
    (void)buf;
    (void)userp;
    return size * n;
}

/* 1 once GET /health on server 0 answers 200 trusting t->ca only; -1 if nginx
 * exited. */
static int tlsup_check(void *arg)
{
    struct tlsup *t = arg;
    char url[128], how[64];
    long status = 0;
    if (!proc_alive(t->nginx)) {
        fprintf(stderr, "integration: nginx exited while starting (%s); see %s\n",
                proc_describe(t->nginx->status, how, sizeof(how)), t->nginx->log);
        return -1;
    }
    CURL *e = curl_easy_init();
    if (e == NULL)
        return 0;
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/health", t->ports[0]);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, t->ca);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tlsup_discard);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    return status == 200;
}

int tlsup_start(struct tlsup *t, int upstream_port, const char *log)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/nginx.conf", t->dir);
    if (tlsup_conf(t, upstream_port, conf) != 0) {
        fprintf(stderr, "integration: cannot write %s\n", conf);
        return -1;
    }
    /* -e: the error log before the configuration is read, or nginx tries the
     * system's (/var/log/nginx), which an unprivileged user cannot open. */
    char *argv[] = {"nginx", "-e", t->error_log, "-p", t->dir, "-c", conf, NULL};
    t->nginx = proc_start("nginx", log, argv, NULL, PROC_CLEAN);
    if (t->nginx == NULL)
        return -1;
    if (harness_poll(harness_timeout(TLSUP_READY_MS), 20, tlsup_check, t) != 0) {
        fprintf(stderr, "integration: nginx never answered on port %d; see %s\n",
                t->ports[0], t->error_log);
        return -1;
    }
    return 0;
}

void tlsup_stop(struct tlsup *t)
{
    proc_free(t->nginx);
    t->nginx = NULL;
}

/* ---- its access log ---------------------------------------------------------------- */

long tlsup_log_offset(const struct tlsup *t)
{
    FILE *f = fopen(t->access_log, "rb");
    if (f == NULL)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n < 0 ? 0 : n;
}

int tlsup_calls_since(const struct tlsup *t, long offset, struct tlsup_call *calls,
                      int max)
{
    char line[512], method[16], uri[256];
    int n = 0;
    double took;
    FILE *f = fopen(t->access_log, "r");
    if (f == NULL)
        return -1;
    fseek(f, offset, SEEK_SET);
    while (fgets(line, sizeof(line), f) != NULL) {
        struct tlsup_call c;
        if (sscanf(line, "%lld %15s %15s %255s %d %lf %lf", &c.conn, c.proto, method, uri,
                   &c.status, &c.end, &took) != 7 ||
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

int tlsup_calls_wait(const struct tlsup *t, long offset, int want,
                     struct tlsup_call *calls, int max)
{
    long long until = harness_now_ms() + harness_timeout(5000);
    int n;
    for (;;) {
        n = tlsup_calls_since(t, offset, calls, max);
        if (n >= want || harness_now_ms() > until)
            return n;
        harness_sleep_ms(20);
    }
}

static int tlsup_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The most calls in flight at one time: starts and ends in time order, +1 for
 * each start, -1 for each end. A start at the time of an end comes first: the
 * log's times are in ms, and a call shorter than that (start == end) was still
 * in flight; it also keeps j <= i, within the arrays. */
static int tlsup_max_in_flight(const struct tlsup_call *calls, int n, int *most)
{
    *most = 0;
    if (n <= 0)
        return 0;
    double *starts = calloc((size_t)n, sizeof(double));
    double *ends = calloc((size_t)n, sizeof(double));
    int now = 0, rc = -1;
    if (starts == NULL || ends == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        starts[i] = calls[i].start;
        ends[i] = calls[i].end;
    }
    qsort(starts, (size_t)n, sizeof(double), tlsup_cmp_double);
    qsort(ends, (size_t)n, sizeof(double), tlsup_cmp_double);
    for (int i = 0, j = 0; i < n;) {
        if (starts[i] <= ends[j]) {
            now++;
            i++;
            if (now > *most)
                *most = now;
        } else {
            now--;
            j++;
        }
    }
    rc = 0;
out:
    free(starts);
    free(ends);
    return rc;
}

int tlsup_spread(const struct tlsup_call *calls, int n, struct tlsup_spread *sp)
{
    memset(sp, 0, sizeof(*sp));
    sp->calls = n;
    if (n <= 0)
        return 0;
    long long *conns = calloc((size_t)n, sizeof(*conns));
    int *per_conn = calloc((size_t)n, sizeof(*per_conn));
    int rc = -1;
    if (conns == NULL || per_conn == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < sp->conns && conns[k] != calls[i].conn)
            k++;
        if (k == sp->conns)
            conns[sp->conns++] = calls[i].conn;
        if (++per_conn[k] > sp->busiest)
            sp->busiest = per_conn[k];
        sp->http2 += strcmp(calls[i].proto, "HTTP/2.0") == 0;
    }
    /* Stops 16 bytes short of the end: room for one more number, or " + ...". */
    size_t len = 0;
    int k = 0;
    for (; k < sp->conns && len < sizeof(sp->text) - 16; k++)
        len += (size_t)snprintf(sp->text + len, sizeof(sp->text) - len, "%s%d",
                                k ? " + " : "", per_conn[k]);
    if (k < sp->conns)
        snprintf(sp->text + len, sizeof(sp->text) - len, " + ...");
    rc = tlsup_max_in_flight(calls, n, &sp->in_flight);
out:
    free(conns);
    free(per_conn);
    return rc;
}
