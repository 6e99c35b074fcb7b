/* forage.testing.proxy: a forward proxy in a forked process on 127.0.0.1 that misbehaves on
   purpose, as its behaviour string says (fixture.h says how the process lives and dies).

   Plain HTTP forwarding (absolute-form request line -> origin-form upstream, a new
   upstream connection per request, keep-alive to the client) and CONNECT tunnels, only to
   127.0.0.0/8: any other destination gets a 403 and no socket is opened for it. Each
   request read takes the next number k (the requests counter); every behaviour decides by
   k, and the probabilistic ones by fixture_mix(seed, k, stream), so a seed gives the same
   faults to the same request numbers however the requests interleave. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fixture.h"
#include "lauxlib.h"
#include "luatype.h"

#define PROXY_TYPE "forage.testing.Proxy"
#define PROXY_FNAME "forage.testing.proxy"
#define KNOWN "good, dead, refuse_after:N, ban_after:N[:SECONDS], slow:MS, reset:P, flaky:P, auth:USER:PASS"
#define UPSTREAM_HEAD_MAX (64 * 1024)

enum { C_REQUESTS, C_CONNECTIONS, C_INFLIGHT, C_PEAK, C_REFUSED, C_BANNED, C_RESET, C_DROPPED, C_TUNNELS, C_COUNT };
static const char *const COUNTER_NAMES[C_COUNT] = {"requests", "connections", "inflight", "peak_inflight", "refused",
                                                   "banned", "reset", "dropped", "tunnels"};

enum { STREAM_FLAKY = 1, STREAM_RESET = 2 };

typedef struct proxy_config {
    int dead;
    long long refuse_after, ban_after, retry_after, slow_ms;   /* -1: not given */
    double reset_p, flaky_p;                                   /* 0: never */
    char *user, *pass;                                         /* auth, or NULL */
    char *auth_expected;                                       /* "Basic <base64>" */
    uint64_t seed;
    _Atomic uint64_t *counters;
    /* In the server process only: */
    int listen_fd, port;
    _Atomic int stopped;
    pthread_mutex_t conns_lock;
    int *conns;
    size_t nconns, capconns;
} proxy_config;

typedef struct proxy {
    fixture_server srv;
    proxy_config cfg;
    char *behaviour;
} proxy;

/* ---- in the server process ---- */

/* A request in flight: it lands (inflight - 1) just before the last byte of its answer is
   written, or before its connection closes without one. A client can then never see an
   answer complete while the proxy still counts it, and a next request sent after that
   answer never overlaps it in peak_inflight: sequential requests peak at 1, exactly. */
typedef struct flight {
    struct proxy_config *cfg;
    int landed;
    int last;   /* the refuse_after-th request: the proxy stops listening as it lands */
} flight;

static void stop_listening(struct proxy_config *cfg);

static void land(flight *f) {
    if (f->landed) return;
    f->landed = 1;
    atomic_fetch_sub(&f->cfg->counters[C_INFLIGHT], 1);
    if (f->last) stop_listening(f->cfg);
}

/* 1 when the n bytes at p end a chunked body (the last chunk, without trailers). */
static int ends_chunked(const char *p, size_t n) {
    return n >= 5 && memcmp(p + n - 5, "0\r\n\r\n", 5) == 0 && (n == 5 || p[n - 6] == '\n');
}

static void count(proxy_config *cfg, int which) { atomic_fetch_add(&cfg->counters[which], 1); }

/* 1 when request k draws a fault of probability p on this stream. */
static int draw(const proxy_config *cfg, uint64_t k, uint64_t stream, double p) {
    if (p <= 0) return 0;
    return (double)(fixture_mix(cfg->seed, k, stream) >> 11) < p * 9007199254740992.0;   /* 2^53 */
}

static void conns_add(proxy_config *cfg, int fd) {
    pthread_mutex_lock(&cfg->conns_lock);
    if (cfg->nconns == cfg->capconns) {
        size_t cap = cfg->capconns ? cfg->capconns * 2 : 64;
        int *p = realloc(cfg->conns, cap * sizeof *p);
        if (p != NULL) cfg->conns = p, cfg->capconns = cap;
    }
    if (cfg->nconns < cfg->capconns) cfg->conns[cfg->nconns++] = fd;
    pthread_mutex_unlock(&cfg->conns_lock);
}

static void conns_remove(proxy_config *cfg, int fd) {
    pthread_mutex_lock(&cfg->conns_lock);
    for (size_t i = 0; i < cfg->nconns; i++)
        if (cfg->conns[i] == fd) {
            cfg->conns[i] = cfg->conns[--cfg->nconns];
            break;
        }
    pthread_mutex_unlock(&cfg->conns_lock);
}

/* refuse_after: stop listening (the port stays reserved by a socket that only binds, so
   connections are refused, not sent elsewhere) and end every connection: reads see end
   of stream, an answer being written still goes out. */
static void stop_listening(proxy_config *cfg) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&cfg->stopped, &expected, 1)) return;
    shutdown(cfg->listen_fd, SHUT_RDWR);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)cfg->port);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) close(fd);   /* else kept: the reservation */
    }
    pthread_mutex_lock(&cfg->conns_lock);
    for (size_t i = 0; i < cfg->nconns; i++) shutdown(cfg->conns[i], SHUT_RD);
    pthread_mutex_unlock(&cfg->conns_lock);
}

static int answer_html(int fd, int status, const char *reason, const char *extra, int head_only, int keep) {
    char body[256];
    int n = snprintf(body, sizeof body, "<html><body><h1>%d %s</h1><p>forage.testing proxy</p></body></html>\n",
                     status, reason);
    return fixture_respond(fd, status, reason, "text/html; charset=utf-8", extra, body, (size_t)n, head_only, keep);
}

/* Parses host[:port] (the CONNECT target, or the authority of an absolute URL) into a
   loopback address. Returns 1, 0 for a destination outside 127.0.0.0/8, -1 when
   malformed. */
static int loopback_address(const char *s, size_t len, int default_port, struct sockaddr_in *a) {
    char host[256];
    const char *colon = memchr(s, ':', len);
    size_t hlen = colon ? (size_t)(colon - s) : len;
    if (hlen == 0 || hlen >= sizeof host) return -1;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    long port = default_port;
    if (colon != NULL) {
        char num[8];
        size_t plen = len - hlen - 1;
        if (plen == 0 || plen >= sizeof num) return -1;
        memcpy(num, colon + 1, plen);
        num[plen] = '\0';
        char *e;
        port = strtol(num, &e, 10);
        if (*e != '\0' || port < 1 || port > 65535) return -1;
    }
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (strcasecmp(host, "localhost") == 0) {
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return 1;
    }
    /* No name is resolved: only a literal 127.x.y.z passes, so nothing touches the network. */
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return 0;
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
}

static int connect_upstream(const struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval idle = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    return fd;
}

/* Copies bytes from -> to until end of stream (limit < 0) or limit bytes, starting with
   what is buffered in from. With f, the flight lands before the write that ends the
   answer (the limit reached, or the end of a chunked body). 0 when all arrived and were
   written, -1 otherwise. */
static int relay(fixture_conn *from, int to, long long limit, flight *f, int chunked) {
    for (;;) {
        size_t n = from->in.len;
        if (limit >= 0 && (long long)n > limit) n = (size_t)limit;
        if (f != NULL && ((limit >= 0 && (long long)n == limit) || (chunked && ends_chunked(from->in.data, n))))
            land(f);
        if (n > 0 && fixture_write_all(to, from->in.data, n) != 0) return -1;
        fixture_consume(from, n);
        if (limit >= 0) {
            limit -= (long long)n;
            if (limit == 0) return 0;
        }
        if (buf_reserve(&from->in, 65536) != 0) return -1;
        ssize_t got = recv(from->fd, from->in.data, from->in.cap, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got == 0 && limit < 0) return 0;
        if (got <= 0) return -1;
        from->in.len = (size_t)got;
    }
}

/* 1 when the header line starting at p names one of the hop-by-hop headers the proxy
   replaces or drops. */
static int hop_by_hop(const char *p, size_t len) {
    static const char *const names[] = {"connection:", "keep-alive:", "proxy-connection:", "proxy-authorization:",
                                        "expect:", "te:", "upgrade:", NULL};
    for (int i = 0; names[i]; i++) {
        size_t n = strlen(names[i]);
        if (len >= n && strncasecmp(p, names[i], n) == 0) return 1;
    }
    return 0;
}

/* Appends the header lines of head (CRLF-terminated lines, no blank line) but the
   hop-by-hop ones. */
static int copy_headers(buf *out, const char *head, size_t len) {
    const char *p = head, *end = head + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        eol = eol ? eol + 1 : end;
        if (!hop_by_hop(p, (size_t)(eol - p)) && buf_append(out, p, (size_t)(eol - p)) != 0) return -1;
        p = eol;
    }
    return 0;
}

/* Forwards one plain request (its head in c, its body still in c or on the wire) and
   relays the answer. Returns 1 to keep the client connection, 0 to close it. */
static int forward(fixture_conn *c, fixture_request *r, flight *f) {
    int head_only = strcmp(r->method, "HEAD") == 0;
    if (strncasecmp(r->target, "http://", 7) != 0) {
        land(f);
        answer_html(c->fd, 400, "Bad Request", NULL, head_only, 0);
        return 0;
    }
    const char *authority = r->target + 7;
    size_t alen = strcspn(authority, "/?#");
    const char *path = authority + alen;
    struct sockaddr_in a;
    int where = memchr(authority, '@', alen) ? -1 : loopback_address(authority, alen, 80, &a);
    if (where <= 0) {
        if (fixture_read_body(c, r) != 0) return 0;
        land(f);
        if (where == 0) return answer_html(c->fd, 403, "Forbidden", NULL, head_only, r->keep_alive) == 0 && r->keep_alive;
        return answer_html(c->fd, 400, "Bad Request", NULL, head_only, r->keep_alive) == 0 && r->keep_alive;
    }
    int up = connect_upstream(&a);
    if (up < 0) {
        if (fixture_read_body(c, r) != 0) return 0;
        land(f);
        return answer_html(c->fd, 502, "Bad Gateway", NULL, head_only, r->keep_alive) == 0 && r->keep_alive;
    }
    buf out = BUF_INIT;
    size_t hlen;
    int ok = buf_reserve(&out, r->head_len + 512) == 0;
    if (ok) {
        char line[sizeof r->target + 64];
        int n = snprintf(line, sizeof line, "%s %s%s HTTP/1.1\r\n", r->method, *path == '/' ? "" : "/", path);
        ok = n > 0 && (size_t)n < sizeof line && buf_append(&out, line, (size_t)n) == 0 &&
             copy_headers(&out, r->head, r->head_len) == 0;
        if (ok && fixture_header(r, "Host", &hlen) == NULL) {
            n = snprintf(line, sizeof line, "Host: %.*s\r\n", (int)alen, authority);
            ok = buf_append(&out, line, (size_t)n) == 0;
        }
        ok = ok && buf_append(&out, "Connection: close\r\n\r\n", 21) == 0;
    }
    long long body = r->content_length > 0 ? r->content_length : 0;
    size_t total = r->total;
    ok = ok && fixture_write_all(up, out.data, out.len) == 0;
    fixture_consume(c, total);   /* r->head is gone from here on */
    ok = ok && relay(c, up, body, NULL, 0) == 0;
    buf_free(&out);
    if (!ok) {
        close(up);
        land(f);
        answer_html(c->fd, 502, "Bad Gateway", NULL, head_only, 0);
        return 0;
    }

    /* The answer: its head rewritten for the client's connection, its body as framed. */
    fixture_conn u = {up, BUF_INIT};
    const char *end = NULL;
    while ((end = u.in.len >= 4 ? memmem(u.in.data, u.in.len, "\r\n\r\n", 4) : NULL) == NULL) {
        if (u.in.len > UPSTREAM_HEAD_MAX || buf_reserve(&u.in, 16384) != 0) break;
        ssize_t got = recv(up, u.in.data + u.in.len, u.in.cap - u.in.len, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        u.in.len += (size_t)got;
    }
    int keep = 0;
    if (end == NULL || u.in.len < 12 || strncmp(u.in.data, "HTTP/1.", 7) != 0) {
        land(f);
        answer_html(c->fd, 502, "Bad Gateway", NULL, head_only, 0);
    } else {
        fixture_request h;   /* the answer's head, parsed with the request's header lookup */
        memset(&h, 0, sizeof h);
        const char *line_end = memchr(u.in.data, '\n', (size_t)(end - u.in.data) + 1);
        h.head = line_end + 1;
        h.head_len = (size_t)(end + 2 - h.head);
        int status = atoi(u.in.data + 9);
        size_t vlen;
        const char *v = fixture_header(&h, "Content-Length", &vlen);
        long long length = v ? strtoll(v, NULL, 10) : -1;
        v = fixture_header(&h, "Transfer-Encoding", &vlen);
        int chunked = v != NULL && vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0;
        int no_body = head_only || status / 100 == 1 || status == 204 || status == 304;
        keep = r->keep_alive && (no_body || length >= 0 || chunked);
        buf head = BUF_INIT;
        int good = buf_append(&head, u.in.data, (size_t)(h.head - u.in.data)) == 0 &&
                   copy_headers(&head, h.head, h.head_len) == 0 &&
                   buf_append(&head, keep ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n",
                              keep ? 26 : 21) == 0;
        size_t head_total = (size_t)(end - u.in.data) + 4;
        if (no_body || length == 0) land(f);
        good = good && fixture_write_all(c->fd, head.data, head.len) == 0;
        buf_free(&head);
        fixture_consume(&u, head_total);
        /* chunked: the upstream closes after the last chunk (it was asked to), and the
           chunks frame the body for the client as they are */
        if (good && !no_body) good = relay(&u, c->fd, chunked ? -1 : length, f, chunked) == 0;
        if (!good) keep = 0;
    }
    buf_free(&u.in);
    close(up);
    land(f);   /* an answer that ends with its connection */
    return keep;
}

/* CONNECT host:port: a byte splice both ways until both sides have ended. */
static void tunnel(proxy_config *cfg, fixture_conn *c, fixture_request *r, flight *f) {
    struct sockaddr_in a;
    int where = loopback_address(r->target, strlen(r->target), -1, &a);
    if (where <= 0 || a.sin_port == 0) {
        land(f);
        answer_html(c->fd, where == 0 ? 403 : 400, where == 0 ? "Forbidden" : "Bad Request", NULL, 0, 0);
        return;
    }
    int up = connect_upstream(&a);
    if (up < 0) {
        land(f);
        answer_html(c->fd, 502, "Bad Gateway", NULL, 0, 0);
        return;
    }
    count(cfg, C_TUNNELS);
    static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    fixture_consume(c, r->total);
    if (fixture_write_all(c->fd, established, sizeof established - 1) != 0 ||
        (c->in.len > 0 && fixture_write_all(up, c->in.data, c->in.len) != 0)) {
        close(up);
        return;
    }
    int fds[2] = {c->fd, up}, open_[2] = {1, 1};
    char chunk[65536];
    while (open_[0] || open_[1]) {
        struct pollfd p[2] = {{fds[0], open_[0] ? POLLIN : 0, 0}, {fds[1], open_[1] ? POLLIN : 0, 0}};
        if (poll(p, 2, 120000) <= 0) break;
        int failed = 0;
        for (int i = 0; i < 2; i++) {
            if (!open_[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = recv(fds[i], chunk, sizeof chunk, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n < 0) failed = 1;
            if (n <= 0) {
                open_[i] = 0;
                shutdown(fds[1 - i], SHUT_WR);
            } else if (fixture_write_all(fds[1 - i], chunk, (size_t)n) != 0) {
                failed = 1;
            }
        }
        if (failed) break;
    }
    land(f);
    close(up);
}

static void proxy_handle(int fd, void *arg) {
    proxy_config *cfg = arg;
    _Atomic uint64_t *C = cfg->counters;
    conns_add(cfg, fd);
    fixture_conn c = {fd, BUF_INIT};
    int reset = 0;
    while (!atomic_load(&cfg->stopped)) {
        fixture_request r;
        int rc = fixture_read_request(&c, &r);
        if (rc == 0) break;
        uint64_t k = atomic_fetch_add(&C[C_REQUESTS], 1) + 1;
        if (rc < 0) {
            answer_html(fd, 400, "Bad Request", NULL, 0, 0);
            break;
        }
        if (cfg->refuse_after >= 0 && k > (uint64_t)cfg->refuse_after) {
            count(cfg, C_REFUSED);
            stop_listening(cfg);
            break;
        }
        uint64_t now = atomic_fetch_add(&C[C_INFLIGHT], 1) + 1;
        uint64_t peak = atomic_load(&C[C_PEAK]);
        while (now > peak && !atomic_compare_exchange_weak(&C[C_PEAK], &peak, now)) {
        }
        flight f = {cfg, 0, cfg->refuse_after >= 0 && k == (uint64_t)cfg->refuse_after};
        int keep = 0, head_only = strcmp(r.method, "HEAD") == 0;
        size_t vlen;
        const char *v;
        if (cfg->slow_ms > 0) fixture_sleep_ms((long)cfg->slow_ms);
        if (draw(cfg, k, STREAM_FLAKY, cfg->flaky_p)) {
            count(cfg, C_DROPPED);
        } else if (draw(cfg, k, STREAM_RESET, cfg->reset_p)) {
            count(cfg, C_RESET);
            reset = 1;
        } else if (cfg->auth_expected != NULL &&
                   ((v = fixture_header(&r, "Proxy-Authorization", &vlen)) == NULL ||
                    vlen != strlen(cfg->auth_expected) || strncasecmp(v, "Basic ", 6) != 0 ||
                    memcmp(v + 6, cfg->auth_expected + 6, vlen - 6) != 0)) {
            keep = r.keep_alive && !r.chunked && fixture_read_body(&c, &r) == 0;
            land(&f);
            keep = answer_html(fd, 407, "Proxy Authentication Required",
                               "Proxy-Authenticate: Basic realm=\"forage\"\r\n", head_only, keep) == 0 && keep;
        } else if (cfg->ban_after >= 0 && k > (uint64_t)cfg->ban_after) {
            count(cfg, C_BANNED);
            char extra[64] = "";
            if (cfg->retry_after >= 0) snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", cfg->retry_after);
            keep = r.keep_alive && !r.chunked && fixture_read_body(&c, &r) == 0;
            land(&f);
            keep = answer_html(fd, 403, "Forbidden", extra, head_only, keep) == 0 && keep;
        } else if (r.chunked) {
            land(&f);
            answer_html(fd, 411, "Length Required", NULL, head_only, 0);
        } else if (strcmp(r.method, "CONNECT") == 0) {
            tunnel(cfg, &c, &r, &f);
        } else {
            keep = forward(&c, &r, &f);
        }
        land(&f);   /* dropped or reset: before the close the client sees */
        if (!keep) break;
    }
    conns_remove(cfg, fd);
    if (reset) {
        /* An abortive close: the client sees a reset, not an end of stream. */
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(fd);
    buf_free(&c.in);
}

static void proxy_serve(int listen_fd, void *arg) {
    proxy_config *cfg = arg;
    cfg->listen_fd = listen_fd;
    pthread_mutex_init(&cfg->conns_lock, NULL);
    fixture_accept_loop(listen_fd, proxy_handle, cfg, &cfg->counters[C_CONNECTIONS]);
    for (;;) pause();   /* stopped listening (refuse_after): the open connections end on their own */
}

/* ---- the behaviour string ---- */

static void b64(const char *in, size_t n, char *out) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned)(unsigned char)in[i + 2];
        out[o++] = T[(v >> 18) & 63];
        out[o++] = T[(v >> 12) & 63];
        out[o++] = i + 1 < n ? T[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? T[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Raises "forage.testing.proxy: behaviour '<item>' <why>". */
static int bad_item(lua_State *L, const char *item, size_t len, const char *why) {
    lua_pushlstring(L, item, len);
    const char *shown = args_show(L, -1);
    return luaL_error(L, "%s: behaviour %s %s", PROXY_FNAME, shown, why);
}

/* An integer from min to max, the whole of s[0..len); 1 when it is one. */
static int parse_integer(const char *s, size_t len, long long min, long long max, long long *out) {
    char num[24];
    if (len == 0 || len >= sizeof num) return 0;
    memcpy(num, s, len);
    num[len] = '\0';
    char *e;
    errno = 0;
    long long v = strtoll(num, &e, 10);
    if (*e != '\0' || errno != 0 || v < min || v > max || num[0] == '+' || num[0] == ' ') return 0;
    *out = v;
    return 1;
}

static int parse_probability(const char *s, size_t len, double *out) {
    char num[32];
    if (len == 0 || len >= sizeof num) return 0;
    memcpy(num, s, len);
    num[len] = '\0';
    char *e;
    double v = strtod(num, &e);
    if (*e != '\0' || !(v >= 0 && v <= 1) || num[0] == ' ') return 0;
    *out = v;
    return 1;
}

/* Fills cfg from the behaviour string (comma-separated items); raises on an unknown,
   malformed, repeated or impossible one. */
static void parse_behaviour(lua_State *L, proxy_config *cfg, const char *s, size_t len) {
    unsigned seen = 0;
    cfg->refuse_after = cfg->ban_after = cfg->retry_after = cfg->slow_ms = -1;
    if (len == 0) bad_item(L, s, 0, "is empty (known: " KNOWN ")");
    const char *p = s, *end = s + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        size_t ilen = (size_t)(item_end - p);
        const char *colon = memchr(p, ':', ilen);
        size_t nlen = colon ? (size_t)(colon - p) : ilen;
        const char *arg = colon ? colon + 1 : item_end;
        size_t arglen = (size_t)(item_end - arg);
        static const char *const names[] = {"good", "dead", "refuse_after", "ban_after", "slow", "reset", "flaky",
                                            "auth", NULL};
        int which = -1;
        for (int i = 0; names[i]; i++)
            if (strlen(names[i]) == nlen && strncmp(p, names[i], nlen) == 0) which = i;
        if (which < 0) {
            lua_pushlstring(L, p, ilen);
            luaL_error(L, "%s: unknown behaviour %s (known: " KNOWN ")", PROXY_FNAME, args_show(L, -1));
        }
        if (seen & (1u << which)) bad_item(L, p, ilen, "is given twice");
        seen |= 1u << which;
        long long n;
        const char *colon2;
        switch (which) {
        case 0:
        case 1:
            if (colon) bad_item(L, p, ilen, "takes no argument");
            if (which == 1) cfg->dead = 1;
            break;
        case 2:
            if (!colon || !parse_integer(arg, arglen, 1, 1000000000, &n))
                bad_item(L, p, ilen, "must be refuse_after:N with N an integer from 1 to 1000000000");
            cfg->refuse_after = n;
            break;
        case 3:
            colon2 = colon ? memchr(arg, ':', arglen) : NULL;
            if (!colon || !parse_integer(arg, colon2 ? (size_t)(colon2 - arg) : arglen, 0, 1000000000, &n) ||
                (colon2 && !parse_integer(colon2 + 1, (size_t)(item_end - colon2 - 1), 0, 1000000000,
                                          &cfg->retry_after)))
                bad_item(L, p, ilen,
                         "must be ban_after:N or ban_after:N:SECONDS with integers from 0 to 1000000000");
            cfg->ban_after = n;
            break;
        case 4:
            if (!colon || !parse_integer(arg, arglen, 0, 600000, &cfg->slow_ms))
                bad_item(L, p, ilen, "must be slow:MS with MS an integer from 0 to 600000");
            break;
        case 5:
        case 6:
            if (!colon || !parse_probability(arg, arglen, which == 5 ? &cfg->reset_p : &cfg->flaky_p))
                bad_item(L, p, ilen, which == 5 ? "must be reset:P with P a number from 0 to 1"
                                                : "must be flaky:P with P a number from 0 to 1");
            break;
        case 7:
            colon2 = colon ? memchr(arg, ':', arglen) : NULL;
            if (!colon2 || colon2 == arg || colon2 + 1 == item_end)
                bad_item(L, p, ilen, "must be auth:USER:PASS with USER and PASS not empty");
            for (const char *q = arg; q < item_end; q++)
                if ((unsigned char)*q <= ' ' || (unsigned char)*q >= 127)
                    bad_item(L, p, ilen, "must be auth:USER:PASS in printable characters without spaces");
            cfg->user = strndup(arg, (size_t)(colon2 - arg));
            cfg->pass = strndup(colon2 + 1, (size_t)(item_end - colon2 - 1));
            if (cfg->user == NULL || cfg->pass == NULL) luaL_error(L, "not enough memory");
            break;
        }
        if (!comma) break;
        p = comma + 1;
    }
    if (cfg->dead && seen != (1u << 1)) {
        lua_pushlstring(L, s, len);
        luaL_error(L, "%s: behaviour %s: 'dead' cannot be combined with another behaviour", PROXY_FNAME,
                   args_show(L, -1));
    }
}

/* ---- the Lua side ---- */

static proxy *check_proxy(lua_State *L, int i) { return type_check_fast(L, i, PROXY_TYPE); }

static proxy *check_open_proxy(lua_State *L, int i) {
    proxy *p = check_proxy(L, i);
    if (p->srv.closed) type_closed_error(L, PROXY_TYPE);
    return p;
}

static void free_config(proxy *p) {
    free(p->cfg.user);
    free(p->cfg.pass);
    free(p->cfg.auth_expected);
    free(p->behaviour);
    p->cfg.user = p->cfg.pass = p->cfg.auth_expected = p->behaviour = NULL;
}

/* core.fixture_proxy(behaviour [, seed]) -> a Proxy. Raises on a bad behaviour or seed, or
   when the socket, the mapping or the fork fails. */
static int proxy_new(lua_State *L) {
    size_t len;
    const char *behaviour = luaL_checklstring(L, 1, &len);
    lua_Integer seed = luaL_optinteger(L, 2, 1);
    proxy *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    p->srv.owner = getpid();
    p->srv.pidfd = p->srv.reserved_fd = -1;
    luaL_setmetatable(L, PROXY_TYPE);
    p->cfg.seed = (uint64_t)seed;
    p->behaviour = strndup(behaviour, len);
    if (p->behaviour == NULL || strlen(p->behaviour) != len) {
        if (p->behaviour != NULL) luaL_argerror(L, 1, "string contains zeros");
        return luaL_error(L, "not enough memory");
    }
    parse_behaviour(L, &p->cfg, behaviour, len);
    if (p->cfg.user != NULL) {
        size_t n = strlen(p->cfg.user) + 1 + strlen(p->cfg.pass);
        char *plain = malloc(n + 1);
        p->cfg.auth_expected = malloc(6 + (n + 2) / 3 * 4 + 1);
        if (plain == NULL || p->cfg.auth_expected == NULL) {
            free(plain);
            return luaL_error(L, "not enough memory");
        }
        snprintf(plain, n + 1, "%s:%s", p->cfg.user, p->cfg.pass);
        memcpy(p->cfg.auth_expected, "Basic ", 6);
        b64(plain, n, p->cfg.auth_expected + 6);
        free(plain);
    }
    if (fixture_counters_map(&p->srv, C_COUNT) != 0)
        return luaL_error(L, "%s: cannot map counters: %s", PROXY_FNAME, strerror(errno));
    p->cfg.counters = p->srv.counters;
    int fd = fixture_bind(&p->srv.port, !p->cfg.dead);
    if (fd < 0) return luaL_error(L, "%s: cannot bind 127.0.0.1: %s", PROXY_FNAME, strerror(errno));
    p->cfg.port = p->srv.port;
    if (p->cfg.dead) {
        p->srv.reserved_fd = fd;   /* bound, never listening: connections are refused */
        return 1;
    }
    if (fixture_spawn(&p->srv, fd, proxy_serve, &p->cfg) != 0)
        return luaL_error(L, "%s: cannot fork: %s", PROXY_FNAME, strerror(errno));
    return 1;
}

/* Percent-encodes s for a URL's userinfo. */
static void push_userinfo_part(luaL_Buffer *b, const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
            luaL_addchar(b, (char)ch);
        else {
            char hex[4];
            snprintf(hex, sizeof hex, "%%%02X", ch);
            luaL_addstring(b, hex);
        }
    }
}

static void push_url(lua_State *L, const proxy *p, int with_auth) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "http://");
    if (with_auth && p->cfg.user != NULL) {
        push_userinfo_part(&b, p->cfg.user);
        luaL_addchar(&b, ':');
        push_userinfo_part(&b, p->cfg.pass);
        luaL_addchar(&b, '@');
    }
    char hostport[32];
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", p->srv.port);
    luaL_addstring(&b, hostport);
    luaL_pushresult(&b);
}

/* p:counters() -> { requests, connections, inflight, peak_inflight, refused, banned,
   reset, dropped, tunnels }, read live (all 0 for a dead proxy). */
static int proxy_counters(lua_State *L) {
    proxy *p = check_open_proxy(L, 1);
    lua_createtable(L, 0, C_COUNT);
    for (int i = 0; i < C_COUNT; i++) {
        lua_pushinteger(L, (lua_Integer)atomic_load(&p->srv.counters[i]));
        lua_setfield(L, -2, COUNTER_NAMES[i]);
    }
    return 1;
}

/* p:close(): stops the proxy (in the process that made it). Idempotent; also __gc and
   __close. */
static int proxy_close(lua_State *L) {
    proxy *p = check_proxy(L, 1);
    fixture_stop(&p->srv);
    p->cfg.counters = NULL;
    return 0;
}

static int proxy_gc(lua_State *L) {
    proxy *p = check_proxy(L, 1);
    fixture_stop(&p->srv);
    free_config(p);
    return 0;
}

/* Fields: url, bare_url, behaviour, port, pid (nil when none runs); then the methods. */
static int proxy_index(lua_State *L) {
    proxy *p = check_proxy(L, 1);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "url") == 0) push_url(L, p, 1);
    else if (strcmp(key, "bare_url") == 0) push_url(L, p, 0);
    else if (strcmp(key, "behaviour") == 0) lua_pushstring(L, p->behaviour);
    else if (strcmp(key, "port") == 0) lua_pushinteger(L, p->srv.port);
    else if (strcmp(key, "pid") == 0) {
        if (p->srv.pid > 0) lua_pushinteger(L, p->srv.pid);
        else lua_pushnil(L);
    } else {
        lua_getfield(L, lua_upvalueindex(2), key);
    }
    return 1;
}

static int proxy_tostring(lua_State *L) {
    proxy *p = check_proxy(L, 1);
    lua_pushfstring(L, "%s '%s' (http://127.0.0.1:%d%s)", PROXY_TYPE, p->behaviour ? p->behaviour : "",
                    p->srv.port, p->srv.closed ? ", closed" : "");
    return 1;
}

void forage_open_fixture_proxy(lua_State *L) {
    static const luaL_Reg methods[] = {{"counters", proxy_counters}, {"close", proxy_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", proxy_gc}, {"__close", proxy_close}, {"__tostring", proxy_tostring}, {NULL, NULL}};
    type_register(L, PROXY_TYPE, methods, meta, 1);
    luaL_getmetatable(L, PROXY_TYPE);
    lua_pushvalue(L, -1);
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, proxy_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, proxy_new);
    lua_setfield(L, -2, "fixture_proxy");
}
