/* forage.redis: a small hiredis binding, what a crawl shared by several hosts needs
   (lua/forage/crawl/redis.lua holds the policy: keys, scripts, leases). A module of its
   own, so that forage.core stays free of libraries and a crawl without Redis never loads
   libhiredis. docs/redis_client.md is the user's reference.

     local r, message, kind = redis.connect { host = "127.0.0.1", port = 6379, timeout = 5 }
     local r = redis.connect { path = "/run/redis.sock" }     -- a unix socket
     r:call("SET", "k", "v")          -> the reply | nil, message, kind
     r:pipeline({ {"SET", "a", 1}, {"GET", "a"} })  -> { reply, ... } | nil, message, kind
     r:reconnect()                    -> true | nil, message, kind   (same address and timeout)
     r:fd()                           -> the socket's fd, or nil while the connection is lost
     r:close()                        -- idempotent; also __gc and __close

   Arguments are strings (sent as they are: binary safe) or numbers (integers as %lld,
   floats as %.17g: the text reads back as the same number). Replies: a status or a bulk
   string is a string, an integer an integer, a nil bulk or nil array is false (nil always
   means failure), an array a sequence (its nil elements false, its error elements
   { err = message }). An error reply of call() is nil, the server's message, "reply"; the
   connection stays usable.

   Failures of the connection (refused, reset, closed by the server: "io"; no connection or
   no reply within the timeout: "timeout") return nil, "redis HOST:PORT: cause", kind. The
   connection is then lost for good: a reply may still be on its way, and a later reply
   must never be taken for another command's. Every later call returns nil, "redis
   HOST:PORT: connection lost (cause)", "io" without touching the socket, until
   reconnect() dials again (the caller sends AUTH and SELECT again: the binding keeps no
   credentials, and its messages name the address only, never a command's arguments).

   After fork(): a connection belongs to the process that opened it (two processes on one
   socket would read each other's replies). A child gets an error from every call; its
   __gc frees the memory and closes its copy of the fd, which writes nothing to the
   socket. The socket is close-on-exec. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "args.h"
#include "lauxlib.h"
#include "lua.h"
#include "luatype.h"

#define REDIS_TYPE "forage.redis"
#define DEFAULT_TIMEOUT 5.0
#define HOST_MAX 255
#define PATH_MAX_UNIX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define CAUSE_MAX 160
#define ARGV_LOCAL 16   /* arguments a command may have without a scratch buffer */

typedef struct {
    redisContext *ctx;        /* NULL while closed or lost */
    redisReply *reply;        /* a reply being converted, freed when the conversion raised */
    int open;                 /* 0 once closed */
    int in_flight;            /* a pipeline is being sent or read: set when one raised midway */
    pid_t owner;              /* the process that opened it */
    double timeout;           /* seconds, for connecting and for each reply */
    int port;                 /* 0 for a unix socket */
    char address[HOST_MAX + 1];        /* the host, or the socket's path */
    char where[HOST_MAX + 8];          /* "host:port" or the path, for messages */
    char lost[CAUSE_MAX];              /* why the connection was lost */
} connection;

int luaopen_forage_redis(lua_State *L);

/* This process's id, kept by a fork handler (as in sqlite.c): every call checks it. */
static pid_t current_pid;

static void note_pid(void) { current_pid = getpid(); }

/* Writing to a server that has gone is then an EPIPE error, not the death of the process
   (as fork.c's ignore_sigpipe does for forage.core's pipes). */
static void sigpipe_ignore(void) {
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

static struct timeval timeval_of(double seconds) {
    struct timeval tv;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
    return tv;
}

/* hiredis says "Resource temporarily unavailable" when SO_RCVTIMEO expires and
   "Connection timed out" when connecting takes too long: both are our "timeout". */
static int is_timeout(const redisContext *ctx, int saved_errno) {
    return ctx->err == REDIS_ERR_IO &&
           (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT);
}

/* Frees the reply a raised conversion left behind. */
static void reply_release(connection *c) {
    if (c->reply != NULL) {
        freeReplyObject(c->reply);
        c->reply = NULL;
    }
}

/* Marks the connection lost for cause and lets its socket go. */
static void connection_lose(connection *c, const char *cause) {
    snprintf(c->lost, sizeof c->lost, "%s", cause);
    if (c->ctx != NULL) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
}

/* nil, "redis WHERE: cause", kind for the failure hiredis left in ctx (connecting when
   dialing is set); the connection is lost after it. 3 results. */
static int connection_failed(lua_State *L, connection *c, redisContext *ctx, int saved_errno, int dialing) {
    char cause[CAUSE_MAX];
    const char *kind = "io";
    if (ctx != NULL && is_timeout(ctx, saved_errno)) {
        kind = "timeout";
        snprintf(cause, sizeof cause, dialing ? "cannot connect within %g s" : "no reply within %g s", c->timeout);
    } else if (ctx != NULL && ctx->err != 0) {
        snprintf(cause, sizeof cause, "%s", ctx->errstr);
    } else {
        snprintf(cause, sizeof cause, "%s", "out of memory");
    }
    if (ctx != NULL && ctx != c->ctx) redisFree(ctx);
    connection_lose(c, cause);
    return args_fail(L, kind, "redis %s: %s", c->where, cause);
}

/* Dials c's address: 1 when connected, else 0 with nil, message, kind pushed. */
static int connection_dial(lua_State *L, connection *c) {
    struct timeval tv = timeval_of(c->timeout);
    sigpipe_ignore();
    errno = 0;
    redisContext *ctx = c->port != 0 ? redisConnectWithTimeout(c->address, c->port, tv)
                                     : redisConnectUnixWithTimeout(c->address, tv);
    int saved_errno = errno;
    if (ctx == NULL || ctx->err != 0) {
        connection_failed(L, c, ctx, saved_errno, 1);
        return 0;
    }
    if (redisSetTimeout(ctx, tv) != REDIS_OK) {
        connection_failed(L, c, ctx, errno, 1);
        return 0;
    }
    int flags = fcntl(ctx->fd, F_GETFD);
    if (flags >= 0) fcntl(ctx->fd, F_SETFD, flags | FD_CLOEXEC);
    c->ctx = ctx;
    c->lost[0] = '\0';
    return 1;
}

/* The connection at i, open and owned by this process; raises otherwise. */
static connection *check_connection(lua_State *L, int i) {
    connection *c = luaL_checkudata(L, i, REDIS_TYPE);
    if (!c->open) type_closed_error(L, REDIS_TYPE);
    if (c->owner != current_pid)
        luaL_error(L, "forage.redis: this connection belongs to process %d (use one connection per process)",
                   (int)c->owner);
    reply_release(c);
    if (c->in_flight) {
        /* a pipeline raised (out of memory) with commands unsent or replies unread: the
           next reply on this socket may be one of theirs */
        c->in_flight = 0;
        connection_lose(c, "a pipeline was interrupted");
    }
    return c;
}

/* nil, "redis WHERE: connection lost (cause)", "io". */
static int connection_lost(lua_State *L, const connection *c) {
    return args_fail(L, "io", "redis %s: connection lost (%s)", c->where, c->lost);
}

/* The timeout option: seconds > 0 (default 5); over ARGS_FOREVER means ARGS_FOREVER. */
static double timeout_option(lua_State *L, int idx, const char *fname) {
    if (lua_getfield(L, idx, "timeout") == LUA_TNIL) {
        lua_pop(L, 1);
        return DEFAULT_TIMEOUT;
    }
    double t = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
    if (!(t > 0)) luaL_error(L, "%s: option 'timeout' must be a number of seconds > 0, got %s", fname, args_show(L, -1));
    lua_pop(L, 1);
    return t > ARGS_FOREVER ? ARGS_FOREVER : t;
}

/* redis.connect{ host, port, path, timeout } -> a connection, or nil, message, kind. */
static int redis_connect(lua_State *L) {
    static const char *const options[] = {"host", "port", "path", "timeout", NULL};
    static const char fname[] = "forage.redis.connect";
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    args_check_options(L, 1, fname, options);
    size_t host_len, path_len;
    const char *host = args_opt_string(L, 1, fname, "host", NULL, &host_len);
    const char *path = args_opt_string(L, 1, fname, "path", NULL, &path_len);
    int port_given = lua_getfield(L, 1, "port") != LUA_TNIL;
    lua_pop(L, 1);
    lua_Integer port = args_opt_integer(L, 1, fname, "port", 6379, 1, 65535);
    double timeout = timeout_option(L, 1, fname);
    if (path != NULL && (host != NULL || port_given))
        return luaL_error(L, "%s: option 'path' (a unix socket) excludes 'host' and 'port'", fname);
    if (path != NULL && (path_len == 0 || path_len > PATH_MAX_UNIX || strlen(path) != path_len))
        return luaL_error(L, "%s: option 'path' must be a socket's path of 1 to %d bytes without zeros", fname,
                          (int)PATH_MAX_UNIX);
    if (host == NULL) {
        host = "127.0.0.1";
        host_len = strlen(host);
    }
    if (path == NULL && (host_len == 0 || host_len > HOST_MAX || strlen(host) != host_len))
        return luaL_error(L, "%s: option 'host' must be a host name or address of 1 to %d bytes", fname, HOST_MAX);

    connection *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);   /* closed until dialed */
    c->owner = current_pid;
    c->timeout = timeout;
    luaL_setmetatable(L, REDIS_TYPE);
    if (path != NULL) {
        memcpy(c->address, path, path_len + 1);
        memcpy(c->where, path, path_len + 1);
    } else {
        c->port = (int)port;
        memcpy(c->address, host, host_len + 1);
        snprintf(c->where, sizeof c->where, "%s:%d", host, c->port);
    }
    c->open = 1;
    if (!connection_dial(L, c)) return 3;
    return 1;
}

/* The argument at idx as bytes: a string as it is, an integer as %lld, a float as %.17g
   (the number is replaced on the stack by its text, which must outlive the command).
   Returns 0 for any other type. */
static int command_arg(lua_State *L, int idx, const char **bytes, size_t *len) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        char text[64];
        if (lua_isinteger(L, idx)) snprintf(text, sizeof text, "%lld", (long long)lua_tointeger(L, idx));
        else snprintf(text, sizeof text, "%.17g", (double)lua_tonumber(L, idx));
        lua_pushstring(L, text);
        lua_replace(L, idx);
    } else if (lua_type(L, idx) != LUA_TSTRING) {
        return 0;
    }
    *bytes = lua_tolstring(L, idx, len);
    return 1;
}

/* Room for argc arguments' pointers and lengths: the local arrays when they are large
   enough, else a scratch userdata pushed on the stack (collected with it). */
static void argv_room(lua_State *L, size_t argc, const char ***argv, size_t **lens) {
    if (argc <= ARGV_LOCAL) return;
    if (argc > (size_t)0x7fffffff / (sizeof **argv + sizeof **lens)) luaL_error(L, "forage.redis: too many arguments");
    void *room = lua_newuserdatauv(L, argc * (sizeof **argv + sizeof **lens), 0);
    *lens = room;
    *argv = (const char **)(void *)((char *)room + argc * sizeof **lens);
}

/* Pushes a reply: strings, integers, false for nil, sequences for arrays, { err = m } for
   an error inside an array. Raises on a reply nested deeper than the stack allows. */
static void push_reply(lua_State *L, const redisReply *r) {
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: lua_pushlstring(L, r->str, r->len); break;
    case REDIS_REPLY_INTEGER: lua_pushinteger(L, (lua_Integer)r->integer); break;
    case REDIS_REPLY_NIL: lua_pushboolean(L, 0); break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    case REDIS_REPLY_ARRAY:
        if (!lua_checkstack(L, 4) || r->elements > 0x7fffffff) luaL_error(L, "forage.redis: reply too deep or large");
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    default: luaL_error(L, "forage.redis: unknown reply type %d", r->type);
    }
}

/* r:call(name, ...) -> the reply, or nil, message, kind ("reply" for the server's error
   reply, "io" or "timeout" for the connection's failure). */
static int connection_call(lua_State *L) {
    connection *c = check_connection(L, 1);
    int top = lua_gettop(L);
    if (top < 2) return luaL_typeerror(L, 2, "string or number");
    const char *local_argv[ARGV_LOCAL];
    size_t local_lens[ARGV_LOCAL];
    const char **argv = local_argv;
    size_t *lens = local_lens;
    size_t argc = (size_t)(top - 1);
    for (int i = 2; i <= top; i++)
        if (lua_type(L, i) != LUA_TSTRING && lua_type(L, i) != LUA_TNUMBER) luaL_typeerror(L, i, "string or number");
    if (c->ctx == NULL) return connection_lost(L, c);
    argv_room(L, argc, &argv, &lens);
    for (int i = 2; i <= top; i++) command_arg(L, i, &argv[i - 2], &lens[i - 2]);
    errno = 0;
    redisReply *r = redisCommandArgv(c->ctx, (int)argc, argv, lens);
    if (r == NULL) return connection_failed(L, c, c->ctx, errno, 0);
    c->reply = r;
    int results = 1;
    if (r->type == REDIS_REPLY_ERROR) {
        results = args_fail(L, "reply", "%s", r->str);
    } else {
        push_reply(L, r);
    }
    reply_release(c);
    return results;
}

/* Raises unless the pipeline's command at index i (on the stack top) is a non-empty
   sequence of strings and numbers; returns its length. */
static size_t pipeline_check(lua_State *L, lua_Integer i) {
    if (lua_type(L, -1) != LUA_TTABLE) {
        luaL_argerror(L, 2, lua_pushfstring(L, "command %I: table expected, got %s", (LUAI_UACINT)i,
                                            luaL_typename(L, -1)));
    }
    size_t argc = lua_rawlen(L, -1);
    if (argc == 0) luaL_argerror(L, 2, lua_pushfstring(L, "command %I: empty", (LUAI_UACINT)i));
    for (size_t j = 1; j <= argc; j++) {
        int t = lua_rawgeti(L, -1, (lua_Integer)j);
        if (t != LUA_TSTRING && t != LUA_TNUMBER) {
            luaL_argerror(L, 2, lua_pushfstring(L, "command %I: string or number expected at %I, got %s",
                                                (LUAI_UACINT)i, (LUAI_UACINT)j, luaL_typename(L, -1)));
        }
        lua_pop(L, 1);
    }
    return argc;
}

/* r:pipeline({ {name, ...}, ... }) -> { reply, ... } (an error reply as { err = message }),
   or nil, message, kind when the connection fails. Every command is checked before any is
   sent, so that a raised argument error leaves nothing half-sent. */
static int connection_pipeline(lua_State *L) {
    connection *c = check_connection(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    size_t widest = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        size_t argc = pipeline_check(L, i);
        if (argc > widest) widest = argc;
        lua_pop(L, 1);
    }
    if (c->ctx == NULL) return connection_lost(L, c);
    if (n > 0x7fffffff || widest > 1000000) return luaL_error(L, "forage.redis: too many commands or arguments");
    const char *local_argv[ARGV_LOCAL];
    size_t local_lens[ARGV_LOCAL];
    const char **argv = local_argv;
    size_t *lens = local_lens;
    argv_room(L, widest, &argv, &lens);
    luaL_checkstack(L, (int)widest + 4, "too many arguments");
    int base = lua_gettop(L);
    c->in_flight = 1;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        int command = lua_gettop(L);
        size_t argc = lua_rawlen(L, command);
        for (size_t j = 0; j < argc; j++) {
            lua_rawgeti(L, command, (lua_Integer)j + 1);
            command_arg(L, lua_gettop(L), &argv[j], &lens[j]);
        }
        if (redisAppendCommandArgv(c->ctx, (int)argc, argv, lens) != REDIS_OK) {
            c->in_flight = 0;
            connection_lose(c, "out of memory");
            return luaL_error(L, "forage.redis: out of memory");
        }
        lua_settop(L, base);
    }
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        void *reply = NULL;
        errno = 0;
        if (redisGetReply(c->ctx, &reply) != REDIS_OK || reply == NULL) {
            c->in_flight = 0;
            return connection_failed(L, c, c->ctx, errno, 0);
        }
        c->reply = reply;
        push_reply(L, c->reply);
        reply_release(c);
        lua_rawseti(L, -2, i);
    }
    c->in_flight = 0;
    return 1;
}

/* r:reconnect() -> true, or nil, message, kind: dials the same address again with the
   same timeout (the old socket, healthy or not, is closed first). */
static int connection_reconnect(lua_State *L) {
    connection *c = check_connection(L, 1);
    connection_lose(c, "reconnecting");
    if (!connection_dial(L, c)) return 3;
    lua_pushboolean(L, 1);
    return 1;
}

/* r:fd() -> the socket's file descriptor, or nil while the connection is lost. */
static int connection_fd(lua_State *L) {
    connection *c = check_connection(L, 1);
    if (c->ctx == NULL) lua_pushnil(L);
    else lua_pushinteger(L, c->ctx->fd);
    return 1;
}

/* r:close(), __gc, __close: idempotent. In a forked child it only frees memory and closes
   the child's copy of the fd (redisFree writes nothing). */
static int connection_close(lua_State *L) {
    connection *c = luaL_checkudata(L, 1, REDIS_TYPE);
    reply_release(c);
    if (c->ctx != NULL) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    c->open = 0;
    return 0;
}

static int connection_tostring(lua_State *L) {
    connection *c = luaL_checkudata(L, 1, REDIS_TYPE);
    if (!c->open) lua_pushfstring(L, "%s (closed)", REDIS_TYPE);
    else lua_pushfstring(L, "%s (%s)", REDIS_TYPE, c->where);
    return 1;
}

int luaopen_forage_redis(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"call", connection_call}, {"pipeline", connection_pipeline}, {"reconnect", connection_reconnect},
        {"fd", connection_fd}, {"close", connection_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", connection_close}, {"__close", connection_close}, {"__tostring", connection_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg functions[] = {{"connect", redis_connect}, {NULL, NULL}};
    static int fork_handler;
    luaL_checkversion(L);
    if (!fork_handler) {
        note_pid();
        if (pthread_atfork(NULL, NULL, note_pid) != 0) return luaL_error(L, "forage.redis: pthread_atfork failed");
        fork_handler = 1;
    }
    type_register(L, REDIS_TYPE, methods, meta, 0);
    luaL_newlib(L, functions);
    lua_pushfstring(L, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    lua_setfield(L, -2, "hiredis_version");
    return 1;
}
