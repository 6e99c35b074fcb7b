/* forage.Process: one Lua function run in a forked child. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fork.h"
#include "lauxlib.h"
#include "luatype.h"

#define PROCESS_TYPE "forage.Process"

typedef struct process {
    pid_t owner;      /* the process that created (and may reap) the child */
    pid_t pid;        /* 0 until started */
    int pidfd;
    int exited;       /* reaped: exitcode is final */
    int exitcode;     /* exit code, or -N when killed by signal N */
} process;

static process *check_process(lua_State *L, int i) {
    return type_check_fast(L, i, PROCESS_TYPE);
}

static void close_pidfd(process *p) {
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
}

/* Records the status of a reaped child. */
static void set_exited(process *p, int status) {
    p->exited = 1;
    p->exitcode = status_code(status);
    close_pidfd(p);
}

/* Checks the child without blocking; returns 1 when it has exited. */
static int poll_exit(process *p) {
    if (p->exited || p->pid == 0) return p->exited;
    int status;
    if (p->owner == getpid() && reap_child(p->pid, p->pidfd, 0, &status) == 1) set_exited(p, status);
    return p->exited;
}

/* process_new(fn, ...): a process object, not yet started. */
static int process_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L);
    process *p = lua_newuserdatauv(L, sizeof *p, 1);
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    luaL_setmetatable(L, PROCESS_TYPE);
    /* The uservalue keeps the function and its arguments: { fn, n, arg1 ... argn }. */
    lua_createtable(L, nargs + 1, 0);
    for (int i = 1; i <= nargs; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i == 1 ? 1 : i + 1);
    }
    lua_pushinteger(L, nargs - 1);
    lua_rawseti(L, -2, 2);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* Runs in the child: calls the function, reports an error with its traceback, leaves. */
static _Noreturn void process_run(lua_State *L, int self) {
    lua_settop(L, self);
    child_own_os_exit(L);
    lua_pushcfunction(L, traceback_handler);
    lua_getiuservalue(L, self, 1);
    lua_rawgeti(L, -1, 2);
    int nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, nargs + 1, "too many arguments");
    int args = lua_gettop(L);
    for (int i = 1; i <= nargs + 1; i++) lua_rawgeti(L, args, i == 1 ? 1 : i + 1);
    if (lua_pcall(L, nargs, 0, self + 1) != LUA_OK) {
        fprintf(stderr, "forage: process %ld failed: %s\n", (long)getpid(), lua_tostring(L, -1));
        child_exit(1);
    }
    child_exit(0);
}

/* p:start() -> p. Raises when already started or when fork fails. */
static int process_start(lua_State *L) {
    process *p = check_process(L, 1);
    if (p->pid != 0) return luaL_error(L, "process already started (pid %d)", (int)p->pid);
    int pidfd;
    pid_t pid = fork_child(&pidfd);
    if (pid < 0) return luaL_error(L, "cannot fork: %s", strerror(errno));
    if (pid == 0) process_run(L, 1);
    p->owner = getpid();
    p->pid = pid;
    p->pidfd = pidfd;
    lua_settop(L, 1);
    return 1;
}

/* p:join([timeout]) -> exitcode, or nil, "timeout", "timeout". */
static int process_join(lua_State *L) {
    process *p = check_process(L, 1);
    double timeout = args_timeout(L, 2);
    if (p->pid == 0) return luaL_error(L, "cannot join a process that was not started");
    if (!p->exited) {
        if (p->owner != getpid()) return luaL_error(L, "cannot join a process started by another process");
        int status;
        int rc = reap_child(p->pid, p->pidfd, timeout, &status);
        if (rc < 0) return luaL_error(L, "cannot wait for process %d: %s", (int)p->pid, strerror(errno));
        if (rc == 0) return args_fail(L, "timeout", "timeout");
        set_exited(p, status);
    }
    lua_pushinteger(L, p->exitcode);
    return 1;
}

/* p:alive() -> true while the started child runs. */
static int process_alive(lua_State *L) {
    process *p = check_process(L, 1);
    lua_pushboolean(L, p->pid != 0 && !poll_exit(p));
    return 1;
}

static int process_signal(lua_State *L, int sig) {
    process *p = check_process(L, 1);
    if (p->pid != 0 && !poll_exit(p) && kill(p->pid, sig) != 0 && errno != ESRCH)
        return luaL_error(L, "cannot signal process %d: %s", (int)p->pid, strerror(errno));
    lua_settop(L, 1);
    return 1;
}

/* p:terminate() sends SIGTERM; p:kill() sends SIGKILL. Both return p. */
static int process_terminate(lua_State *L) { return process_signal(L, SIGTERM); }
static int process_kill(lua_State *L) { return process_signal(L, SIGKILL); }

/* Fields: pid (nil before start), exitcode (nil while running), then the methods
   (upvalue 2). */
static int process_index(lua_State *L) {
    process *p = check_process(L, 1);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "pid") == 0) {
        if (p->pid == 0) lua_pushnil(L);
        else lua_pushinteger(L, p->pid);
    } else if (strcmp(key, "exitcode") == 0) {
        if (poll_exit(p)) lua_pushinteger(L, p->exitcode);
        else lua_pushnil(L);
    } else {
        lua_getfield(L, lua_upvalueindex(2), key);
    }
    return 1;
}

static int process_tostring(lua_State *L) {
    process *p = check_process(L, 1);
    if (p->pid == 0) lua_pushliteral(L, "forage.Process (not started)");
    else if (poll_exit(p)) lua_pushfstring(L, "forage.Process %d (exit %d)", (int)p->pid, p->exitcode);
    else lua_pushfstring(L, "forage.Process %d (running)", (int)p->pid);
    return 1;
}

/* __gc and __close: reap the child when it has ended (no zombie), release the pidfd.
   A running child is left to run, as Python leaves a Process object's child. */
static int process_gc(lua_State *L) {
    process *p = check_process(L, 1);
    if (p->pid != 0 && p->owner == getpid()) poll_exit(p);
    close_pidfd(p);
    return 0;
}

void forage_open_proc(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"start", process_start}, {"join", process_join}, {"alive", process_alive},
        {"terminate", process_terminate}, {"kill", process_kill}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__tostring", process_tostring}, {"__gc", process_gc}, {"__close", process_gc}, {NULL, NULL},
    };
    type_register(L, PROCESS_TYPE, methods, meta, 1);
    /* The fields pid and exitcode are computed: __index becomes a function that falls
       back on the methods table type_register made. */
    luaL_getmetatable(L, PROCESS_TYPE);
    lua_pushvalue(L, -1);
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, process_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, process_new);
    lua_setfield(L, -2, "process");
}
