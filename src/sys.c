/* Small system services for Lua: clocks, sleeping, process ids, processor count, and a
   pre-sized table (what the standard library lacks for the pool and its examples). */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "core.h"
#include "fork.h"
#include "lauxlib.h"

/* cpu_count() -> the number of online processors. */
static int cpu_count(lua_State *L) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

/* now() -> seconds on the monotonic clock. */
static int monotonic_now(lua_State *L) {
    lua_pushnumber(L, now_seconds());
    return 1;
}

/* new_table(narray, nhash) -> an empty table with room for that many entries. */
static int new_table(lua_State *L) {
    lua_Integer na = luaL_checkinteger(L, 1), nh = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, na >= 0 && na <= 1 << 26, 1, "out of range");
    luaL_argcheck(L, nh >= 0 && nh <= 1 << 26, 2, "out of range");
    lua_createtable(L, (int)na, (int)nh);
    return 1;
}

/* sleep(seconds): sleeps, resuming after signals, for the whole time. */
static int sleep_seconds(lua_State *L) {
    double d = luaL_checknumber(L, 1);
    luaL_argcheck(L, d >= 0 && d < 1e9, 1, "seconds out of range");
    struct timespec ts = seconds_to_timespec(d);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    return 0;
}

/* getppid() -> the parent's process id. */
static int sys_getppid(lua_State *L) {
    lua_pushinteger(L, getppid());
    return 1;
}

/* core.ignore_interrupts(["SIGINT"]): SIGINT and SIGTERM (or SIGINT only) are ignored from
   now on in this process (a crawl's workers: Ctrl-C reaches the whole process group, and a
   service manager's stop sends SIGTERM to every process of the crawl; the parent stops the
   workers in order. A manager's server: Ctrl-C is for the program, which stops its server
   with SIGTERM when it is done, as Python's manager server ignores SIGINT). */
static int ignore_interrupts(lua_State *L) {
    const char *which = luaL_optstring(L, 1, NULL);
    luaL_argcheck(L, which == NULL || strcmp(which, "SIGINT") == 0, 1, "only \"SIGINT\" may be named");
    signal(SIGINT, SIG_IGN);
    if (which == NULL) signal(SIGTERM, SIG_IGN);
    return 0;
}

/* getpid() -> this process's id (cached until the next fork: no system call). */
static int sys_getpid(lua_State *L) {
    lua_pushinteger(L, current_pid());
    return 1;
}

void forage_open_sys(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"cpu_count", cpu_count}, {"now", monotonic_now}, {"new_table", new_table},
        {"sleep", sleep_seconds}, {"getppid", sys_getppid}, {"getpid", sys_getpid},
        {"ignore_interrupts", ignore_interrupts}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
