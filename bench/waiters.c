/* waiters.c - holds many long-polls open on one api at once.
 *
 * Opens --n connections to 127.0.0.1:--port (at most --burst connecting at a
 * time), each sending GET /chat/{id}/response?wait=--wait for the ids of --ids
 * (one a line, used in turn), and keeps them open. Touches --ready FILE once every
 * request is sent, then reads answers until each connection has one (or was
 * closed), or --timeout seconds pass. An answer is counted "completed" if its body
 * says so, "early" if it says "processing" (the wait ended, or the api answered at
 * once because its waiting places were full).
 *
 * Prints one JSON line: n, connected, sent, answered, completed, early, errors
 * (connections closed or refused without an answer), connect_ms (first connect to
 * last request sent), release_ms (from when the file --release appeared, which the
 * caller creates right after marking the chats completed, to the last answer; -1
 * if it never did). One thread, epoll. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { W_CONNECTING, W_WAITING, W_DONE };

struct waiter {
    int fd;
    int state;
    char req[256];
    int reqlen;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    int port = 0, n = 1000, burst = 256, wait_s = 120;
    double timeout_s = 120;
    const char *ids_path = NULL, *ready = NULL, *release = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--n") == 0)
            n = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--burst") == 0)
            burst = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--wait") == 0)
            wait_s = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout_s = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--ids") == 0)
            ids_path = argv[i + 1];
        else if (strcmp(argv[i], "--ready") == 0)
            ready = argv[i + 1];
        else if (strcmp(argv[i], "--release") == 0)
            release = argv[i + 1];
    }
    if (port <= 0 || n <= 0 || ids_path == NULL) {
        fprintf(stderr, "usage: waiters --port P --ids FILE [--n N] [--wait S] "
                        "[--burst B] [--timeout S] [--ready FILE]\n");
        return 2;
    }
    FILE *f = fopen(ids_path, "r");
    if (f == NULL) {
        perror(ids_path);
        return 2;
    }
    char(*ids)[64] = calloc((size_t)n, 64);
    int nids = 0;
    while (ids != NULL && nids < n && fgets(ids[nids], 64, f) != NULL) {
        ids[nids][strcspn(ids[nids], "\r\n")] = '\0';
        if (ids[nids][0] != '\0')
            nids++;
    }
    fclose(f);
    struct waiter *w = calloc((size_t)n, sizeof(*w));
    int ep = epoll_create1(0);
    if (ids == NULL || nids == 0 || w == NULL || ep < 0) {
        fprintf(stderr, "waiters: no ids, or out of memory\n");
        return 2;
    }

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int next = 0, connecting = 0, connected = 0, sent = 0, answered = 0, completed = 0,
        early = 0, errors = 0;
    long long t0 = now_ms(), t_sent = 0, t_release = 0, last = 0;
    long long end = t0 + (long long)(timeout_s * 1000);
    int ready_done = 0;
    struct epoll_event evs[512];

    while (now_ms() < end && answered + errors < n) {
        while (next < n && connecting < burst) {
            struct waiter *x = &w[next];
            x->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (x->fd < 0) {
                x->state = W_DONE;
                errors++;
                next++;
                continue;
            }
            x->reqlen = snprintf(x->req, sizeof(x->req),
                                 "GET /chat/%s/response?wait=%d HTTP/1.1\r\n"
                                 "Host: 127.0.0.1\r\n\r\n",
                                 ids[next % nids], wait_s);
            if (connect(x->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
                errno != EINPROGRESS) {
                close(x->fd);
                x->state = W_DONE;
                errors++;
                next++;
                continue;
            }
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN,
                                     .data.u32 = (uint32_t)next};
            epoll_ctl(ep, EPOLL_CTL_ADD, x->fd, &ev);
            x->state = W_CONNECTING;
            connecting++;
            next++;
        }
        if (!ready_done && sent + errors == n) {
            t_sent = now_ms();
            ready_done = 1;
            if (ready != NULL) {
                int fd = open(ready, O_CREAT | O_WRONLY, 0644);
                if (fd >= 0)
                    close(fd);
            }
        }
        struct stat sb;
        if (t_release == 0 && release != NULL && stat(release, &sb) == 0)
            t_release = now_ms();
        int k = epoll_wait(ep, evs, 512, 50);
        for (int i = 0; i < k; i++) {
            struct waiter *x = &w[evs[i].data.u32];
            if (x->state == W_CONNECTING && (evs[i].events & EPOLLOUT)) {
                connecting--;
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0 || write(x->fd, x->req, (size_t)x->reqlen) != x->reqlen) {
                    close(x->fd);
                    x->state = W_DONE;
                    errors++;
                    continue;
                }
                connected++;
                sent++;
                x->state = W_WAITING;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
                continue;
            }
            if (x->state != W_WAITING)
                continue;
            char buf[4096];
            ssize_t r = read(x->fd, buf, sizeof(buf) - 1);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                errors++;
            } else {
                buf[r] = '\0';
                answered++;
                last = now_ms();
                if (strstr(buf, "\"completed\"") != NULL)
                    completed++;
                else if (strstr(buf, "\"processing\"") != NULL)
                    early++;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
            close(x->fd);
            x->state = W_DONE;
        }
    }
    printf("{\"n\":%d,\"connected\":%d,\"sent\":%d,\"answered\":%d,\"completed\":%d,"
           "\"early\":%d,\"errors\":%d,\"connect_ms\":%lld,\"release_ms\":%lld}\n",
           n, connected, sent, answered, completed, early, errors,
           t_sent > 0 ? t_sent - t0 : -1, t_release > 0 ? last - t_release : -1);
    for (int i = 0; i < n; i++)
        if (w[i].state != W_DONE)
            close(w[i].fd);
    free(w);
    free(ids);
    close(ep);
    return 0;
}
