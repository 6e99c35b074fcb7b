/* forage.Connection: one end of a pipe or socket between processes, carrying wire-encoded
   values. A connection from a socket (socket.c) may be limited (conn:limits): frames over
   max_frame bytes are refused, and in data mode (code = false) no function travels. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fork.h"
#include "frame.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pipe.h"
#include "socket.h"
#include "wire.h"

#define CONNECTION_TYPE "forage.Connection"

struct connection {
    int fd;            /* -1 once closed */
    int readable;
    int writable;
    int code;          /* WIRE_CODE (the default: functions travel) or WIRE_DATA */
    size_t max_frame;  /* payload bytes a frame may have, received or sent (FRAME_MAX by default) */
    size_t over;       /* the length of the frame that broke max_frame, for recv's message */
    double spin;       /* seconds recv and poll look for a frame before sleeping (conn:spin) */
    int is_socket;     /* -1 unknown, 0 a pipe, 1 a socket: recv(0) reads without a poll on sockets */
    pid_t owner;       /* conn:own(): the one process that uses it (0: any that inherit it) */
    frame_reader in;
    buf out;
    buf queued;        /* frames of send_nowait not yet written, from queued_at on */
    size_t queued_at;
};

static connection *check_open(lua_State *L, int i) {
    connection *c = type_check_fast(L, i, CONNECTION_TYPE);
    if (c->fd < 0) type_closed_error(L, CONNECTION_TYPE);
    if (c->owner != 0 && c->owner != current_pid())
        luaL_error(L, "this forage.Connection belongs to process %d (conn:own)", (int)c->owner);
    return c;
}

/* A new closed connection, then opened on fd: memory errors never leak the fd. */
static connection *new_connection(lua_State *L) {
    connection *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->code = WIRE_CODE;
    c->max_frame = FRAME_MAX;
    c->is_socket = -1;
    luaL_setmetatable(L, CONNECTION_TYPE);
    return c;
}

connection *connection_push(lua_State *L) {
    return new_connection(L);
}

void connection_open(connection *c, int fd) {
    c->fd = fd;
    c->readable = 1;
    c->writable = 1;
}

/* pipe([duplex = true]) -> conn1, conn2. With duplex false, conn1 only receives and
   conn2 only sends, as Python's Pipe(duplex=False). */
static int pipe_new(lua_State *L) {
    int duplex = 1;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TBOOLEAN);
        duplex = lua_toboolean(L, 1);
    }
    connection *a = new_connection(L);
    connection *b = new_connection(L);
    int fds[2];
    int rc = duplex ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) : pipe2(fds, O_CLOEXEC);
    if (rc != 0) return luaL_error(L, "cannot create pipe: %s", strerror(errno));
    ignore_sigpipe();
    a->fd = fds[0];
    b->fd = fds[1];
    a->readable = 1;
    a->writable = duplex;
    b->readable = duplex;
    b->writable = 1;
    return 2;
}

/* Encodes the value at index 2 as one frame in c->out; raises when it cannot travel
   (in data mode, a function; a frame over the connection's max_frame). */
static void encode_frame(lua_State *L, connection *c) {
    char err[256];
    size_t header_at;
    buf_reset(&c->out);
    if (frame_begin(&c->out, &header_at) != 0) luaL_error(L, "not enough memory");
    if (wire_encode(L, 2, &c->out, c->code, "value", err, sizeof err) != 0) luaL_error(L, "%s", err);
    if (frame_end(&c->out, header_at) != 0)
        luaL_error(L, "value too large to send (%I bytes)", (lua_Integer)c->out.len);
    size_t payload = c->out.len - header_at - FRAME_HEADER;
    if (payload > c->max_frame)
        luaL_error(L, "cannot send a frame of %I bytes over the limit of %I", (lua_Integer)payload,
                   (lua_Integer)c->max_frame);
}

/* Writes what the queue of send_nowait holds without waiting. Returns 0 (written, or the
   far end's buffer is full), -2 when the far end is gone, -1 on another error (errno). */
static int write_queued(connection *c) {
    while (c->queued_at < c->queued.len) {
        ssize_t n = send(c->fd, c->queued.data + c->queued_at, c->queued.len - c->queued_at,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            c->queued_at += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else if (n < 0 && errno == ENOTSOCK) {
            /* a one-way pipe: no MSG_DONTWAIT; POLLOUT promises room for PIPE_BUF bytes */
            if (fd_wait(c->fd, POLLOUT, 0) <= 0) return 0;
            size_t left = c->queued.len - c->queued_at;
            n = write(c->fd, c->queued.data + c->queued_at, left < PIPE_BUF ? left : PIPE_BUF);
            if (n > 0) c->queued_at += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR) return errno == EPIPE ? -2 : -1;
        } else {
            return errno == EPIPE || errno == ECONNRESET ? -2 : -1;
        }
    }
    buf_reset(&c->queued);
    c->queued_at = 0;
    if (c->queued.cap > (1u << 20)) buf_free(&c->queued);
    return 0;
}

/* conn:send(v) -> true; raises when v cannot travel; nil, "closed", "closed" when the far
   end is gone. Frames queued by send_nowait go first. */
static int connection_send(lua_State *L) {
    connection *c = check_open(L, 1);
    luaL_checkany(L, 2);
    if (!c->writable) return luaL_error(L, "connection is receive-only");
    encode_frame(L, c);
    if (c->queued_at < c->queued.len) {
        if (fd_write_all(c->fd, c->queued.data + c->queued_at, c->queued.len - c->queued_at) != 0) {
            if (errno == EPIPE || errno == ECONNRESET) return args_fail(L, "closed", "closed");
            return luaL_error(L, "cannot send: %s", strerror(errno));
        }
        buf_reset(&c->queued);
        c->queued_at = 0;
    }
    if (fd_write_all(c->fd, c->out.data, c->out.len) != 0) {
        if (errno == EPIPE || errno == ECONNRESET) return args_fail(L, "closed", "closed");
        return luaL_error(L, "cannot send: %s", strerror(errno));
    }
    if (c->out.cap > (1u << 20)) buf_free(&c->out);   /* do not keep a huge buffer around */
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:send_nowait(v) -> the bytes still queued (0 when all went out), or nil, "closed",
   "closed" when the far end is gone; raises when v cannot travel. Never waits: what the
   far end has no room for yet stays queued, in order, and goes with the next send_nowait,
   flush or send. A process that both sends and receives (a parent feeding workers that
   answer) sends this way, so that two processes can never wait for each other to read. */
static int connection_send_nowait(lua_State *L) {
    connection *c = check_open(L, 1);
    luaL_checkany(L, 2);
    if (!c->writable) return luaL_error(L, "connection is receive-only");
    encode_frame(L, c);
    if (buf_append(&c->queued, c->out.data, c->out.len) != 0) return luaL_error(L, "not enough memory");
    if (c->out.cap > (1u << 20)) buf_free(&c->out);
    int rc = write_queued(c);
    if (rc == -2) return args_fail(L, "closed", "closed");
    if (rc < 0) return luaL_error(L, "cannot send: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)(c->queued.len - c->queued_at));
    return 1;
}

/* conn:flush() -> the bytes still queued after writing what fits now, or nil, "closed",
   "closed". Never waits. */
static int connection_flush(lua_State *L) {
    connection *c = check_open(L, 1);
    int rc = write_queued(c);
    if (rc == -2) return args_fail(L, "closed", "closed");
    if (rc < 0) return luaL_error(L, "cannot send: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)(c->queued.len - c->queued_at));
    return 1;
}

/* Fills the reader until a frame is complete. Returns 1 (frame ready), 0 (timeout),
   -2 (far end closed), -3 (the next frame is over max_frame), -1 (error, errno set). */
static int await_frame(connection *c, double timeout, const char **p, size_t *n) {
    double deadline = timeout < 0 ? 0 : now_seconds() + timeout;
    double spin = c->spin;
    for (;;) {
        int got = frame_next_limited(&c->in, c->max_frame, p, n, &c->over);
        if (got == -3) return -3;
        if (got != 0) {
            if (got < 0) errno = EPROTO;
            return got;
        }
        double left = timeout < 0 ? -1 : deadline - now_seconds();
        if (timeout >= 0 && left < 0) left = 0;
        if (left == 0 && c->is_socket != 0) {
            /* not waiting: one recv says whether there is anything, without a poll first */
            long r = frame_fill_nowait(&c->in, c->fd);
            if (r > 0) continue;
            if (r == 0) return -2;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == ENOTSOCK) {
                c->is_socket = 0;
            } else {
                return errno == ECONNRESET ? -2 : -1;
            }
        }
        int ready = 0;
        if (spin > 0 && left != 0) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN, .revents = 0};
            ready = fds_spin(&pfd, 1, left > 0 && left < spin ? left : spin);
            spin = 0;   /* once a call: then sleep */
        }
        if (ready == 0) ready = fd_wait(c->fd, POLLIN, left);
        if (ready < 0) return -1;
        if (ready == 0) return 0;
        long r = frame_fill(&c->in, c->fd);
        if (r == 0) return -2;
        if (r < 0 && errno != EAGAIN) return errno == ECONNRESET ? -2 : -1;
    }
}

static int connection_close(lua_State *L);

/* conn:recv([timeout]) -> value, or nil, "timeout", "timeout" / nil, "closed", "closed".
   Limited connections (conn:limits) also: nil, "frame of N bytes over the limit of M",
   "limit" (and the connection is closed: the stream cannot be resynchronised); in data
   mode, nil, "recv: wire: ...", "malformed" for bytes data mode refuses (a function), the
   connection still usable (the frame was whole). In code mode bad bytes raise, as ever. */
static int connection_recv(lua_State *L) {
    connection *c = check_open(L, 1);
    double timeout = args_timeout(L, 2);
    if (!c->readable) return luaL_error(L, "connection is send-only");
    const char *p;
    size_t n;
    int rc = await_frame(c, timeout, &p, &n);
    if (rc == 1) {
        char err[256];
        if (wire_decode(L, p, n, c->code, err, sizeof err) != 0) {
            if (c->code) return luaL_error(L, "recv: %s", err);
            return args_fail(L, "malformed", "recv: %s", err);
        }
        return 1;
    }
    if (rc == -3) {
        lua_Integer over = (lua_Integer)c->over, limit = (lua_Integer)c->max_frame;
        lua_settop(L, 1);
        connection_close(L);
        return args_fail(L, "limit", "frame of %I bytes over the limit of %I", over, limit);
    }
    if (rc == -1) return luaL_error(L, "cannot receive: %s", strerror(errno));
    if (rc == 0) return args_fail(L, "timeout", "timeout");
    return args_fail(L, "closed", "closed");
}

/* conn:poll([timeout]) -> true when recv would not block (a message or the far end's
   close). No timeout: do not wait; nil waits forever, as Python's poll(None). */
static int connection_poll(lua_State *L) {
    connection *c = check_open(L, 1);
    double timeout = lua_isnone(L, 2) ? 0 : args_timeout(L, 2);
    if (!c->readable) return luaL_error(L, "connection is send-only");
    const char *p;
    size_t n;
    int rc = await_frame(c, timeout, &p, &n);
    if (rc == 1) c->in.pos -= FRAME_HEADER + n;   /* peek only: the frame stays for recv */
    if (rc == -1) return luaL_error(L, "cannot poll: %s", strerror(errno));
    lua_pushboolean(L, rc != 0);
    return 1;
}

/* conn:fileno() -> the file descriptor (for poll loops of one's own). */
static int connection_fileno(lua_State *L) {
    connection *c = check_open(L, 1);
    lua_pushinteger(L, c->fd);
    return 1;
}

/* True when a whole frame (or corrupt bytes, or a frame over the limit) is already buffered:
   recv answers without reading. */
static int frame_buffered(connection *c) {
    const char *p;
    size_t n;
    int got = frame_next_limited(&c->in, c->max_frame, &p, &n, &c->over);
    if (got == 1) c->in.pos -= FRAME_HEADER + n;   /* peek only */
    return got != 0;   /* a corrupt stream too: recv says so */
}

#define WAIT_MAX 4096

/* forage.wait(connections [, timeout]) -> the list of those whose recv would not block (a
   message, or the far end closed), in their order; an empty list when timeout ran out. As
   Python's multiprocessing.connection.wait: no timeout (nil) waits for ever, 0 does not
   wait. The list may hold listeners too (socket.c), ready when accept would not block.
   Closed and send-only connections raise. */
static int connections_wait(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = args_timeout(L, 2);
    double spin = luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, spin >= 0 && spin <= 0.01, 3, "spin must be from 0 to 0.01 seconds");
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n <= WAIT_MAX, 1, "too many connections (at most 4096)");
    struct pollfd fds[WAIT_MAX];
    int any_buffered = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        connection *c = luaL_testudata(L, -1, CONNECTION_TYPE);
        if (c == NULL) {
            int fd = listener_fd(L, -1);
            if (fd == -1) type_closed_error(L, LISTENER_TYPE);
            if (fd == -2)
                return luaL_error(L, "bad argument #1 to 'wait' (item %d is a %s, not a %s or %s)", (int)i,
                                  luaL_typename(L, -1), CONNECTION_TYPE, LISTENER_TYPE);
            lua_pop(L, 1);
            fds[i - 1] = (struct pollfd){.fd = fd, .events = POLLIN, .revents = 0};
            continue;
        }
        if (c->fd < 0) type_closed_error(L, CONNECTION_TYPE);
        if (!c->readable) return luaL_error(L, "connection %d is send-only", (int)i);
        lua_pop(L, 1);
        fds[i - 1] = (struct pollfd){.fd = c->fd, .events = POLLIN, .revents = 0};
        if (frame_buffered(c)) {
            fds[i - 1].revents = POLLIN;
            any_buffered = 1;
        }
    }
    if (!any_buffered) {
        int ms = timeout < 0 || timeout > 86400 ? -1 : (int)(timeout * 1000 + 0.999);
        int rc = 0;
        if (spin > 0 && ms != 0) {
            rc = fds_spin(fds, (unsigned long)n, timeout >= 0 && timeout < spin ? timeout : spin);
            if (rc < 0) return luaL_error(L, "cannot wait: %s", strerror(errno));
        }
        if (rc == 0) do rc = poll(fds, (nfds_t)n, ms);
        while (rc < 0 && errno == EINTR);
        if (rc < 0) return luaL_error(L, "cannot wait: %s", strerror(errno));
    }
    lua_createtable(L, 0, 0);
    lua_Integer count = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (fds[i - 1].revents == 0) continue;
        lua_rawgeti(L, 1, i);
        lua_rawseti(L, -2, ++count);
    }
    return 1;
}

/* conn:close(), __gc and __close: idempotent. An owned connection (conn:own) is closed by
   its owner only: in a child that inherited the object the fd was closed at fork, and its
   number may name something else there by now. */
static int connection_close(lua_State *L) {
    connection *c = type_check_fast(L, 1, CONNECTION_TYPE);
    if (c->fd >= 0 && c->owner == 0) {
        close(c->fd);
    } else if (c->fd >= 0 && c->owner == current_pid()) {
        fork_unregister_fd(c->fd);
        close(c->fd);
    }
    c->fd = -1;
    frame_reader_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->queued);
    c->queued_at = 0;
    return 0;
}

/* conn:limits{ max_frame = N, code = false } -> conn. max_frame: the payload bytes a frame
   may have, received (recv returns nil, message, "limit" and closes) or sent (send raises);
   code = false: values are encoded and decoded in the wire's data mode (no function
   travels either way). A key left out keeps its current setting (at first: FRAME_MAX, true). */
static int connection_limits(lua_State *L) {
    static const char *const names[] = {"max_frame", "code", NULL};
    connection *c = check_open(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    args_check_options(L, 2, "conn:limits", names);
    lua_Integer max_frame = args_opt_integer(L, 2, "conn:limits", "max_frame", (lua_Integer)c->max_frame, 1,
                                             (lua_Integer)FRAME_MAX);
    int code = args_opt_boolean(L, 2, "conn:limits", "code", c->code);
    c->max_frame = (size_t)max_frame;
    c->code = code ? WIRE_CODE : WIRE_DATA;
    lua_settop(L, 1);
    return 1;
}

/* conn:spin(seconds) -> conn. recv and poll with a timeout look for a frame for up to
   `seconds` without sleeping (yielding the CPU between looks) before they sleep: for a
   request/reply exchange whose reply comes within microseconds, being woken from sleep
   costs more than the exchange. 0 (the default) sleeps at once. At most 0.01. */
static int connection_spin(lua_State *L) {
    connection *c = check_open(L, 1);
    double seconds = luaL_checknumber(L, 2);
    luaL_argcheck(L, seconds >= 0 && seconds <= 0.01, 2, "spin must be from 0 to 0.01 seconds");
    c->spin = seconds;
    lua_settop(L, 1);
    return 1;
}

/* conn:own() -> conn. From now on the connection is this process's alone: the children
   forage forks (forage.process, a pool's workers) do not inherit its fd, so a peer sees it
   close when this process goes, whatever its children do; using it in a child raises.
   For a client's connection to a server that tracks clients by connection (a manager). */
static int connection_own(lua_State *L) {
    connection *c = check_open(L, 1);
    if (c->owner == 0) {
        if (fork_register_fd(c->fd) != 0) return luaL_error(L, "not enough memory");
        c->owner = current_pid();
    }
    lua_settop(L, 1);
    return 1;
}

static int connection_tostring(lua_State *L) {
    connection *c = type_check_fast(L, 1, CONNECTION_TYPE);
    if (c->fd < 0) lua_pushliteral(L, "forage.Connection (closed)");
    else lua_pushfstring(L, "forage.Connection (fd %d)", c->fd);
    return 1;
}

void forage_open_pipe(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"send", connection_send}, {"send_nowait", connection_send_nowait}, {"flush", connection_flush},
        {"recv", connection_recv}, {"poll", connection_poll}, {"limits", connection_limits},
        {"spin", connection_spin}, {"own", connection_own},
        {"fileno", connection_fileno}, {"close", connection_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", connection_close}, {"__close", connection_close},
        {"__tostring", connection_tostring}, {NULL, NULL},
    };
    type_register(L, CONNECTION_TYPE, methods, meta, 1);
    lua_pushcfunction(L, pipe_new);
    lua_setfield(L, -2, "pipe");
    lua_pushcfunction(L, connections_wait);
    lua_setfield(L, -2, "wait");
}
