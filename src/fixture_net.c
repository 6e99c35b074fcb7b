/* What forage.testing's servers share (fixture.h): the socket bound before the fork, the
   server process and its stop, a thread per connection, the request reader. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fixture.h"
#include "fork.h"
#include "shm.h"

#define HEAD_MAX (64 * 1024)        /* a request head longer than this is refused (400) */
#define THREAD_STACK (256 * 1024)
#define IDLE_SECONDS 120            /* a connection silent this long is closed */

int fixture_bind(int *port, int listen_now) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || (listen_now && listen(fd, 4096) != 0) ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int fixture_counters_map(fixture_server *s, size_t ncounters) {
    s->counters = shm_map(ncounters * sizeof *s->counters);
    if (s->counters == NULL) return -1;
    s->ncounters = ncounters;
    return 0;
}

int fixture_spawn(fixture_server *s, int listen_fd, void (*serve)(int listen_fd, void *arg), void *arg) {
    pid_t parent = getpid();
    int pidfd;
    pid_t pid = fork_child(&pidfd);
    if (pid < 0) {
        int e = errno;
        close(listen_fd);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        /* The server dies with the process that made it, even one killed with SIGKILL. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(0);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_IGN);
        /* Keep stdio and the listening socket only. */
        if (listen_fd > 3) close_range(3, (unsigned)listen_fd - 1, 0);
        close_range((unsigned)listen_fd + 1, ~0U, 0);
        serve(listen_fd, arg);
        _exit(0);
    }
    close(listen_fd);
    s->owner = parent;
    s->pid = pid;
    s->pidfd = pidfd;
    return 0;
}

void fixture_stop(fixture_server *s) {
    if (s->closed) return;
    s->closed = 1;
    if (s->owner == getpid() && s->pid > 0) {
        int status;
        kill(s->pid, SIGTERM);
        if (reap_child(s->pid, s->pidfd, 5, &status) == 0) {
            kill(s->pid, SIGKILL);
            reap_child(s->pid, s->pidfd, -1, &status);
        }
    }
    /* In a forked child these are copies: closing them leaves the owner's alone. */
    if (s->pidfd >= 0) close(s->pidfd);
    if (s->reserved_fd >= 0) close(s->reserved_fd);
    s->pidfd = s->reserved_fd = -1;
    s->pid = 0;
    shm_unmap(s->counters, s->ncounters * sizeof *s->counters);
    s->counters = NULL;
}

/* ---- in the server process ---- */

typedef struct conn_start {
    int fd;
    void (*handle)(int fd, void *arg);
    void *arg;
} conn_start;

static void *conn_thread(void *p) {
    conn_start st = *(conn_start *)p;
    free(p);
    st.handle(st.fd, st.arg);
    return NULL;
}

void fixture_accept_loop(int listen_fd, void (*handle)(int fd, void *arg), void *arg,
                         _Atomic uint64_t *connections) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                fixture_sleep_ms(10);
                continue;
            }
            break;   /* EINVAL: the socket was shut down */
        }
        atomic_fetch_add(connections, 1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval idle = {IDLE_SECONDS, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
        conn_start *st = malloc(sizeof *st);
        pthread_t t;
        if (st == NULL) {
            close(fd);
            continue;
        }
        st->fd = fd;
        st->handle = handle;
        st->arg = arg;
        if (pthread_create(&t, &attr, conn_thread, st) != 0) {
            free(st);
            close(fd);
        }
    }
    pthread_attr_destroy(&attr);
}

static int send_all(int fd, const void *p, size_t len, int flags) {
    const char *s = p;
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL | flags);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

int fixture_write_all(int fd, const void *p, size_t len) {
    return send_all(fd, p, len, 0);
}

void fixture_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Reads more bytes into the buffer: 1, or 0 at end of stream or error. */
static int conn_fill(fixture_conn *c) {
    if (buf_reserve(&c->in, 16384) != 0) return 0;
    for (;;) {
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        c->in.len += (size_t)n;
        return 1;
    }
}

void fixture_consume(fixture_conn *c, size_t n) {
    if (n >= c->in.len) {
        c->in.len = 0;
        return;
    }
    memmove(c->in.data, c->in.data + n, c->in.len - n);
    c->in.len -= n;
}

static const char *find_head_end(const char *p, size_t len) {
    return len < 4 ? NULL : memmem(p, len, "\r\n\r\n", 4);
}

const char *fixture_header(const fixture_request *r, const char *name, size_t *len) {
    size_t nlen = strlen(name);
    const char *p = r->head, *end = r->head + r->head_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

/* 1 when the comma-separated header value holds token (case-insensitive). */
static int value_has_token(const char *v, size_t len, const char *token) {
    size_t tlen = strlen(token);
    for (size_t i = 0; i + tlen <= len; i++)
        if (strncasecmp(v + i, token, tlen) == 0) return 1;
    return 0;
}

int fixture_read_request(fixture_conn *c, fixture_request *r) {
    const char *end;
    for (;;) {
        /* Blank lines before a request are allowed (RFC 9112 2.2). */
        while (c->in.len >= 2 && c->in.data[0] == '\r' && c->in.data[1] == '\n') fixture_consume(c, 2);
        if ((end = find_head_end(c->in.data, c->in.len)) != NULL) break;
        if (c->in.len > HEAD_MAX) return -1;
        if (!conn_fill(c)) return 0;
    }
    memset(r, 0, sizeof *r);
    r->total = (size_t)(end - c->in.data) + 4;
    const char *line_end = memchr(c->in.data, '\n', r->total);
    const char *sp1 = memchr(c->in.data, ' ', (size_t)(line_end - c->in.data));
    if (sp1 == NULL) return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
    if (sp2 == NULL) return -1;
    size_t mlen = (size_t)(sp1 - c->in.data), tlen = (size_t)(sp2 - sp1 - 1);
    if (mlen == 0 || mlen >= sizeof r->method || tlen == 0 || tlen >= sizeof r->target) return -1;
    memcpy(r->method, c->in.data, mlen);
    memcpy(r->target, sp1 + 1, tlen);
    if (line_end - sp2 < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) return -1;
    r->minor = sp2[8] == '0' ? 0 : 1;
    r->head = line_end + 1;
    r->head_len = (size_t)(end + 2 - r->head);
    r->content_length = -1;
    size_t len;
    const char *v = fixture_header(r, "Content-Length", &len);
    if (v != NULL) {
        char num[32];
        if (len == 0 || len >= sizeof num) return -1;
        memcpy(num, v, len);
        num[len] = '\0';
        char *e;
        errno = 0;
        long long n = strtoll(num, &e, 10);
        if (*e != '\0' || n < 0 || errno != 0) return -1;
        r->content_length = n;
    }
    v = fixture_header(r, "Transfer-Encoding", &len);
    r->chunked = v != NULL && value_has_token(v, len, "chunked");
    v = fixture_header(r, "Connection", &len);
    if (r->minor == 0) r->keep_alive = v != NULL && value_has_token(v, len, "keep-alive");
    else r->keep_alive = v == NULL || !value_has_token(v, len, "close");
    return 1;
}

int fixture_read_body(fixture_conn *c, const fixture_request *r) {
    size_t want = r->total + (size_t)(r->content_length > 0 ? r->content_length : 0);
    size_t dropped = 0;
    /* A large body is dropped as it comes rather than held whole. */
    while (c->in.len < want - dropped) {
        if (c->in.len > 65536) {
            dropped += c->in.len;
            c->in.len = 0;
        }
        if (!conn_fill(c)) return -1;
    }
    fixture_consume(c, want - dropped);
    return 0;
}

int fixture_respond(int fd, int status, const char *reason, const char *content_type, const char *extra,
                    const char *body, size_t len, int head_only, int keep_alive) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: forage-testing\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\n%s\r\n",
                     status, reason, content_type, len, keep_alive ? "keep-alive" : "close", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    if (head_only || len == 0) return fixture_write_all(fd, head, (size_t)n);
    /* MSG_MORE: the head and the start of the body leave in one segment. */
    if (send_all(fd, head, (size_t)n, MSG_MORE) != 0) return -1;
    return send_all(fd, body, len, 0);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t fixture_mix(uint64_t a, uint64_t b, uint64_t c) {
    return splitmix64(splitmix64(splitmix64(a) ^ b) ^ c);
}
