/* forage.Listener and core.connect: sockets whose connections are forage.Connections
   (pipe.c's frames and wire values), on TCP ("HOST:PORT") or a unix socket (a path).

   Fds follow pipe.c: close-on-exec, inherited by forked children as Python's are, and
   each connection fd blocking (pipe.c's reads wait with poll first). The listening fd is
   non-blocking, so that an accept that another process (a forked child sharing the
   listener) won never blocks past its timeout. A listener removes its unix socket file
   on close only in the process that created it, and only while the path is still the
   socket it bound (a child closing its copy, or a path replaced since, is left alone).
   SIGPIPE is ignored as for pipes: a write to a peer that has gone is "closed". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "args.h"
#include "clock.h"
#include "core.h"
#include "fork.h"
#include "frame.h"
#include "lauxlib.h"
#include "luatype.h"
#include "pipe.h"
#include "socket.h"

#define SHOWN_MAX 60   /* bytes of an address repeated in a message */

typedef struct address {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;   /* AF_INET, AF_INET6 or AF_UNIX */
} address;

typedef struct listener {
    int fd;        /* -1 once closed */
    int family;
    pid_t owner;   /* the process that bound it: the only one that removes its unix file */
    dev_t dev;     /* the unix socket file bound, to remove nothing else */
    ino_t ino;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} listener;

/* Parses "HOST:PORT" (an IPv4 literal, "[IPv6]" or "localhost"; PORT 0 to 65535) or a
   unix socket path (any text with a '/'). Returns NULL, or what is wrong. */
static const char *parse_address(const char *text, size_t len, address *a) {
    memset(a, 0, sizeof *a);
    if (strlen(text) != len) return "address contains zeros";
    if (strchr(text, '/') != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        if (len >= sizeof un->sun_path) return "unix socket path too long (at most 107 bytes)";
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, text, len + 1);
        a->len = (socklen_t)sizeof *un;
        a->family = AF_UNIX;
        return NULL;
    }
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text) return "address must be HOST:PORT or a unix socket path (with a '/')";
    char host[64];
    size_t host_len = (size_t)(colon - text);
    const char *host_at = text;
    if (text[0] == '[') {
        if (host_len < 2 || colon[-1] != ']') return "an IPv6 address goes in brackets: [::1]:PORT";
        host_at++;
        host_len -= 2;
    }
    if (host_len >= sizeof host) return "host too long";
    memcpy(host, host_at, host_len);
    host[host_len] = '\0';
    const char *port_text = colon + 1;
    long port = 0;
    if (*port_text == '\0' || strlen(port_text) > 5) return "port must be a number from 0 to 65535";
    for (const char *d = port_text; *d; d++) {
        if (*d < '0' || *d > '9') return "port must be a number from 0 to 65535";
        port = port * 10 + (*d - '0');
    }
    if (port > 65535) return "port must be a number from 0 to 65535";
    if (text[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) return "not an IPv6 address in the brackets";
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        a->len = (socklen_t)sizeof *in6;
        a->family = AF_INET6;
        return NULL;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&a->sa;
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");   /* no resolver: loopback it is */
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
        return "host must be an IPv4 address, [IPv6] or localhost";
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    a->len = (socklen_t)sizeof *in;
    a->family = AF_INET;
    return NULL;
}

/* The address at argument 1, parsed; raises "bad argument #1 to 'f' (what is wrong)". */
static void check_address(lua_State *L, address *a) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *wrong = parse_address(text, len, a);
    if (wrong != NULL) {
        args_show(L, 1);
        luaL_argerror(L, 1, lua_pushfstring(L, "%s, got %s", wrong, lua_tostring(L, -1)));
    }
}

/* Pushes nil, "<verb> <address>: <why>", kind (the address cut to 60 bytes); returns 3. */
static int socket_fail(lua_State *L, const char *kind, const char *verb, const char *text, const char *why) {
    char where[SHOWN_MAX + 1];
    snprintf(where, sizeof where, "%s", text);
    return args_fail(L, kind, "%s %s%s: %s", verb, where, strlen(text) > SHOWN_MAX ? "..." : "", why);
}

static void set_nodelay(int fd, int family) {
    if (family == AF_UNIX) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* frames are whole messages */
}

/* ------------------------------------------------------------------ listeners */

static listener *check_listener(lua_State *L, int i) {
    listener *l = type_check_fast(L, i, LISTENER_TYPE);
    if (l->fd < 0) type_closed_error(L, LISTENER_TYPE);
    return l;
}

int listener_fd(lua_State *L, int idx) {
    listener *l = luaL_testudata(L, idx, LISTENER_TYPE);
    return l == NULL ? -2 : l->fd;
}

/* Binds fd to the unix path of a, replacing a stale socket file (one nobody listens on).
   Returns 0; -1 with errno (EADDRINUSE when a listener answers there); -2 when the path
   holds a file that is not a socket. */
static int bind_unix(int fd, const address *a) {
    const char *path = ((const struct sockaddr_un *)&a->sa)->sun_path;
    for (int tries = 0; tries < 3; tries++) {
        if (bind(fd, (const struct sockaddr *)&a->sa, a->len) == 0) return 0;
        if (errno != EADDRINUSE) return -1;
        struct stat st;
        if (lstat(path, &st) != 0) continue;   /* gone meanwhile: bind again */
        if (!S_ISSOCK(st.st_mode)) return -2;
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (probe < 0) return -1;
        int rc = connect(probe, (const struct sockaddr *)&a->sa, a->len);
        int probe_errno = errno;
        close(probe);
        if (rc == 0 || probe_errno == EAGAIN || probe_errno == EINPROGRESS) {
            errno = EADDRINUSE;   /* somebody listens there */
            return -1;
        }
        if (probe_errno != ECONNREFUSED) {
            errno = probe_errno;
            return -1;
        }
        if (unlink(path) != 0 && errno != ENOENT) return -1;
    }
    errno = EADDRINUSE;
    return -1;
}

/* Pushes the address the listener has (the port the kernel chose for port 0). */
static void push_bound_address(lua_State *L, int fd, const char *given) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        lua_pushstring(L, given);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        lua_pushfstring(L, "%s:%d", host, (int)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        lua_pushfstring(L, "[%s]:%d", host, (int)ntohs(in6->sin6_port));
    } else {
        lua_pushstring(L, given);
    }
}

/* listen(address [, { backlog = 64 }]) -> a forage.Listener, or nil, "listen ADDRESS: why",
   kind ("in_use" when the address is taken, else "io"). */
static int socket_listen(lua_State *L) {
    static const char *const names[] = {"backlog", NULL};
    address a;
    check_address(L, &a);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    args_check_options(L, 2, "forage.listen", names);
    int backlog = (int)args_opt_integer(L, 2, "forage.listen", "backlog", 64, 1, 65535);
    const char *text = lua_tostring(L, 1);
    const char *where = text;
    listener *l = lua_newuserdatauv(L, sizeof *l, 1);   /* closed first: no fd at stake */
    memset(l, 0, sizeof *l);
    l->fd = -1;
    luaL_setmetatable(L, LISTENER_TYPE);
    ignore_sigpipe();

    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return socket_fail(L, "io", "listen", where, strerror(errno));
    int rc;
    if (a.family == AF_UNIX) {
        rc = bind_unix(fd, &a);
    } else {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);   /* a port in TIME_WAIT is free */
        rc = bind(fd, (const struct sockaddr *)&a.sa, a.len);
    }
    if (rc == 0 && listen(fd, backlog) != 0) rc = -1;
    if (rc != 0) {
        int err = errno;
        close(fd);
        if (rc == -2) return socket_fail(L, "io", "listen", where, "a file that is not a socket is in the way");
        return socket_fail(L, err == EADDRINUSE ? "in_use" : "io", "listen", where, strerror(err));
    }
    l->fd = fd;
    l->family = a.family;
    l->owner = current_pid();
    if (a.family == AF_UNIX) {
        struct stat st;
        snprintf(l->path, sizeof l->path, "%s", text);
        if (stat(l->path, &st) == 0) {
            l->dev = st.st_dev;
            l->ino = st.st_ino;
        }
    }
    push_bound_address(L, fd, text);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* l:accept([timeout]) -> a forage.Connection, or nil, "timeout", "timeout", or nil,
   "accept ADDRESS: why", "io" (out of fds, say). */
static int listener_accept(lua_State *L) {
    listener *l = check_listener(L, 1);
    double timeout = args_timeout(L, 2);
    double deadline = timeout < 0 ? 0 : now_seconds() + timeout;
    connection *c = connection_push(L);
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);   /* blocking, as pipe.c's fds */
        if (fd >= 0) {
            set_nodelay(fd, l->family);
            connection_open(c, fd);
            return 1;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            int err = errno;
            lua_getiuservalue(L, 1, 1);
            return socket_fail(L, "io", "accept", lua_tostring(L, -1), strerror(err));
        }
        double left = timeout < 0 ? -1 : deadline - now_seconds();
        if (timeout >= 0 && left < 0) left = 0;
        int ready = fd_wait(l->fd, POLLIN, left);
        if (ready < 0) return luaL_error(L, "cannot accept: %s", strerror(errno));
        if (ready == 0) return args_fail(L, "timeout", "timeout");
    }
}

/* l:fileno() -> the listening fd. */
static int listener_fileno(lua_State *L) {
    listener *l = check_listener(L, 1);
    lua_pushinteger(L, l->fd);
    return 1;
}

/* l:close(), __gc and __close: idempotent; the creating process removes its unix socket file. */
static int listener_close(lua_State *L) {
    listener *l = type_check_fast(L, 1, LISTENER_TYPE);
    if (l->fd < 0) return 0;
    if (l->family == AF_UNIX && l->owner == current_pid()) {
        struct stat st;
        if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l->dev && st.st_ino == l->ino)
            unlink(l->path);
    }
    close(l->fd);
    l->fd = -1;
    return 0;
}

static int listener_tostring(lua_State *L) {
    listener *l = type_check_fast(L, 1, LISTENER_TYPE);
    lua_getiuservalue(L, 1, 1);
    if (l->fd < 0) lua_pushfstring(L, "forage.Listener (%s, closed)", lua_tostring(L, -1));
    else lua_pushfstring(L, "forage.Listener (%s, fd %d)", lua_tostring(L, -1), l->fd);
    return 1;
}

/* l.address, then the methods (upvalue 1). */
static int listener_index(lua_State *L) {
    const char *key = lua_tostring(L, 2);
    if (key != NULL && strcmp(key, "address") == 0) {
        luaL_checkudata(L, 1, LISTENER_TYPE);
        lua_getiuservalue(L, 1, 1);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

/* ------------------------------------------------------------------ connect */

/* Connects fd (blocking) to the unix path, waiting at most timeout for room in the
   listener's backlog. Returns 0, or -1 with errno (EAGAIN on timeout). */
static int connect_unix(int fd, const address *a, double timeout) {
    double deadline = now_seconds() + timeout;
    for (;;) {
        double left = timeout < 0 ? 0 : deadline - now_seconds();
        if (timeout >= 0 && left < 1e-6) left = 1e-6;   /* a zero SO_SNDTIMEO would wait for ever */
        struct timeval tv = {.tv_sec = (time_t)left, .tv_usec = (suseconds_t)((left - (double)(time_t)left) * 1e6)};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int rc = connect(fd, (const struct sockaddr *)&a->sa, a->len);
        int err = errno;
        struct timeval none = {0, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
        if (rc == 0) return 0;
        if (err != EINTR || (timeout >= 0 && now_seconds() >= deadline)) {
            errno = err == EINTR ? EAGAIN : err;
            return -1;
        }
    }
}

/* Connects fd (non-blocking) over TCP within timeout, then makes it blocking. Returns 0,
   or -1 with errno (ETIMEDOUT on timeout). */
static int connect_tcp(int fd, const address *a, double timeout) {
    if (connect(fd, (const struct sockaddr *)&a->sa, a->len) != 0) {
        if (errno != EINPROGRESS) return -1;
        int ready = fd_wait(fd, POLLOUT, timeout);
        if (ready < 0) return -1;
        if (ready == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return -1;
        if (err != 0) {
            errno = err;
            return -1;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return -1;
    return 0;
}

/* connect(address [, { timeout = 5 }]) -> a forage.Connection, or nil,
   "connect ADDRESS: why", kind ("timeout" when the timeout ran out, else "io"). */
static int socket_connect(lua_State *L) {
    static const char *const names[] = {"timeout", NULL};
    address a;
    check_address(L, &a);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    args_check_options(L, 2, "forage.connect", names);
    double timeout = 5;
    if (lua_istable(L, 2) && lua_getfield(L, 2, "timeout") != LUA_TNIL) timeout = -2;
    if (lua_istable(L, 2)) lua_pop(L, 1);
    if (timeout == -2) timeout = args_opt_timeout(L, 2, "forage.connect", "timeout");
    const char *where = lua_tostring(L, 1);
    connection *c = connection_push(L);   /* closed first: no fd at stake */
    ignore_sigpipe();
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | (a.family == AF_UNIX ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return socket_fail(L, "io", "connect", where, strerror(errno));
    int rc = a.family == AF_UNIX ? connect_unix(fd, &a, timeout) : connect_tcp(fd, &a, timeout);
    if (rc != 0) {
        int err = errno;
        close(fd);
        if (err == ETIMEDOUT || (a.family == AF_UNIX && err == EAGAIN))
            return socket_fail(L, "timeout", "connect", where, "timeout");
        return socket_fail(L, "io", "connect", where, strerror(err));
    }
    set_nodelay(fd, a.family);
    connection_open(c, fd);
    return 1;
}

void forage_open_socket(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"accept", listener_accept}, {"fileno", listener_fileno}, {"close", listener_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", listener_close}, {"__close", listener_close}, {"__tostring", listener_tostring}, {NULL, NULL},
    };
    type_register(L, LISTENER_TYPE, methods, meta, 1);
    luaL_getmetatable(L, LISTENER_TYPE);
    lua_getfield(L, -1, "__index");
    lua_pushcclosure(L, listener_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, socket_listen);
    lua_setfield(L, -2, "listen");
    lua_pushcfunction(L, socket_connect);
    lua_setfield(L, -2, "connect");
}
