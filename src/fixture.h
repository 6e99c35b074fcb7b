/* forage.testing's servers (fixture_site.c: the movie site; fixture_proxy.c: forward
   proxies that misbehave on purpose) and what they share (fixture_net.c): a listening
   socket bound to 127.0.0.1 before the fork, the forked server process and how it is
   stopped, counters in a shared mapping, an HTTP/1.1 request reader, a thread per
   connection, and the seeded draws everything deterministic derives from.

   A server is a process forked when the object is created. The listening socket is bound
   and listening before the fork, so the port is known and a connect never races the
   start. The child keeps only its listening socket (every other descriptor it inherited
   is closed: a copy of the parent's connection would hide the parent's close from its
   peer), dies with its parent (PR_SET_PDEATHSIG), and serves each connection on a thread
   of its own until SIGTERM (default action) ends it. Only the process that created the
   server stops it: a forked child's close or collection leaves it running. */
#ifndef FORAGE_FIXTURE_H
#define FORAGE_FIXTURE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "lua.h"

void forage_open_fixture_site(lua_State *L);    /* core.fixture_site(opts) */
void forage_open_fixture_proxy(lua_State *L);   /* core.fixture_proxy(behaviour, seed) */

/* ---- the server process ---- */

typedef struct fixture_server {
    pid_t owner;              /* the process that created it: the only one that stops it */
    pid_t pid;                /* the server process, 0 when none (a dead proxy, or stopped) */
    int pidfd;
    int port;
    int reserved_fd;          /* a bound socket that does not listen (a dead proxy), or -1 */
    _Atomic uint64_t *counters;   /* shared with the server process */
    size_t ncounters;
    int closed;
} fixture_server;

/* A TCP socket bound to 127.0.0.1 on an ephemeral port, listening when listen_now
   (otherwise only bound: connections to it are refused while it stays open). Returns the
   descriptor and sets *port, or -1 with errno set. */
int fixture_bind(int *port, int listen_now);

/* Maps ncounters zeroed shared counters (0 or -1 with errno set). */
int fixture_counters_map(fixture_server *s, size_t ncounters);

/* Forks the server process: in the child, serve(listen_fd, arg) runs and the child
   leaves with _exit when it returns; the parent closes its copy of listen_fd. Returns 0,
   or -1 with errno set (listen_fd closed either way). */
int fixture_spawn(fixture_server *s, int listen_fd, void (*serve)(int listen_fd, void *arg), void *arg);

/* Stops the server when this process created it (SIGTERM, reaped; SIGKILL after 5 s),
   releases what this process holds of it. Idempotent. */
void fixture_stop(fixture_server *s);

/* ---- in the server process ---- */

/* Accepts connections on listen_fd forever, calling handle(fd, arg) on a new detached
   thread for each; counts each in *connections. Returns when accept fails for good (the
   socket was shut down). */
void fixture_accept_loop(int listen_fd, void (*handle)(int fd, void *arg), void *arg,
                         _Atomic uint64_t *connections);

/* Writes all of len bytes; 0, or -1 when the peer is gone. */
int fixture_write_all(int fd, const void *p, size_t len);

void fixture_sleep_ms(long ms);

/* Writes a whole response: status line, Server, Content-Type, Content-Length, Connection
   (keep-alive or close), extra (whole "Name: value\r\n" lines, may be NULL), then the body
   unless head_only (a HEAD request). 0, or -1 when the peer is gone. */
int fixture_respond(int fd, int status, const char *reason, const char *content_type, const char *extra,
                    const char *body, size_t len, int head_only, int keep_alive);

/* One request's head read from a connection. The buffer keeps what follows the head
   (a body, or pipelined requests) for the next read. */
typedef struct fixture_request {
    char method[16];
    char target[4096];
    int minor;                /* HTTP/1.<minor> */
    const char *head;         /* the header lines (after the request line), in conn->in */
    size_t head_len;
    size_t total;             /* bytes of the whole head, CRLFCRLF included */
    long long content_length; /* -1 when absent */
    int chunked;              /* Transfer-Encoding: chunked (refused: 411) */
    int keep_alive;           /* the client wants the connection kept after the answer */
} fixture_request;

typedef struct fixture_conn {
    int fd;
    buf in;
} fixture_conn;

/* Reads the next request head. Returns 1 with *r filled, 0 at a clean end of stream (or
   the peer gone), -1 on a malformed or oversized head (answer 400 and close). */
int fixture_read_request(fixture_conn *c, fixture_request *r);
/* Drops the request head and its body (content_length bytes, read when not yet there)
   from the buffer. The body, when wanted, is at c->in.data + r->total until then.
   Returns 0, or -1 when the peer is gone. */
int fixture_read_body(fixture_conn *c, const fixture_request *r);
void fixture_consume(fixture_conn *c, size_t n);

/* The value of header name in the head (case-insensitive name), trimmed, or NULL;
   *len is its length. */
const char *fixture_header(const fixture_request *r, const char *name, size_t *len);

/* ---- determinism ---- */

/* A 64-bit mix of a, b, c (splitmix64 steps): the one source of every "random" choice of
   the site and the proxies, so that a seed fixes everything. */
uint64_t fixture_mix(uint64_t a, uint64_t b, uint64_t c);

#endif
