/* SIGINT and SIGTERM as counted events, for a graceful stop: a crawl catches them, finishes
   the round it is in, saves its state and leaves, instead of dying with its state half
   written. The first Ctrl-C asks for a stop; the crawl may treat a second as "now".

   The handlers only count: a handler may touch nothing but sig_atomic_t variables, and
   the Lua side polls core.caught_signals() between rounds. No SA_RESTART, so that a wait
   in a system call returns EINTR and the loop gets to look at the counts soon.

   The counts, the saved dispositions and the installed flag are C globals, not per Lua
   state, because signal dispositions belong to the process. A child forked while they are
   installed inherits the handlers and the counts: it counts SIGTERM too, so p:terminate()
   does not stop it (p:kill() does, and the pool ends its workers with SIGKILL); a child
   that should die of SIGTERM calls restore_signals. A crawl's workers set SIGINT to
   SIG_IGN (core.ignore_interrupts): Ctrl-C reaches the whole process group, and the parent
   stops them in order.

   Lua's standalone interpreter handles SIGINT itself while the main chunk runs (a hook
   that raises "interrupted!"): catch_signals replaces that handler while installed and
   restore_signals gives it back. When the Lua state closes, a finaliser restores the
   dispositions before this library can be unloaded: a handler must never point into
   unmapped code. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "core.h"
#include "lauxlib.h"

#define SIGNALS_SENTINEL "forage.signals"   /* registry field: restores at lua_close */

static volatile sig_atomic_t interrupts;    /* SIGINTs caught since catch_signals */
static volatile sig_atomic_t terminations;  /* SIGTERMs caught since catch_signals */
static volatile sig_atomic_t last_signal;   /* SIGINT, SIGTERM, or 0 for none yet */

static int installed;                        /* our handlers are in place */
static struct sigaction saved_interrupt;     /* the dispositions they replaced */
static struct sigaction saved_termination;

static void count_signal(int sig) {
    if (sig == SIGINT) interrupts++;
    else terminations++;
    last_signal = sig;
}

/* Blocks (block != 0) or unblocks SIGINT and SIGTERM in this thread, so that the three
   counters are read or reset together, never half before a signal and half after. */
static void block_caught(int block, sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (block) pthread_sigmask(SIG_BLOCK, &set, old);
    else pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Puts back the dispositions catch_signals replaced; does nothing when not installed. */
static void restore_dispositions(void) {
    if (!installed) return;
    sigaction(SIGINT, &saved_interrupt, NULL);
    sigaction(SIGTERM, &saved_termination, NULL);
    installed = 0;
}

/* catch_signals(): from now on SIGINT and SIGTERM are only counted; the counts start at 0
   (again, when called while installed). Raises when the handlers cannot be installed. */
static int catch_signals(lua_State *L) {
    sigset_t old;
    block_caught(1, &old);
    interrupts = 0;
    terminations = 0;
    last_signal = 0;
    if (!installed) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = count_signal;
        action.sa_flags = 0;   /* no SA_RESTART: a waiting call returns EINTR */
        sigemptyset(&action.sa_mask);
        sigaddset(&action.sa_mask, SIGINT);
        sigaddset(&action.sa_mask, SIGTERM);
        if (sigaction(SIGINT, &action, &saved_interrupt) != 0) {
            int err = errno;
            block_caught(0, &old);
            return luaL_error(L, "cannot catch SIGINT: %s", strerror(err));
        }
        if (sigaction(SIGTERM, &action, &saved_termination) != 0) {
            int err = errno;
            sigaction(SIGINT, &saved_interrupt, NULL);
            block_caught(0, &old);
            return luaL_error(L, "cannot catch SIGTERM: %s", strerror(err));
        }
        installed = 1;
    }
    block_caught(0, &old);
    return 0;
}

/* caught_signals() -> the SIGINTs and SIGTERMs counted since catch_signals, and "INT",
   "TERM" or nil for the one that came last. The counts stay readable after
   restore_signals. */
static int caught_signals(lua_State *L) {
    sigset_t old;
    block_caught(1, &old);
    lua_Integer int_count = interrupts, term_count = terminations;
    int last = last_signal;
    block_caught(0, &old);
    lua_pushinteger(L, int_count);
    lua_pushinteger(L, term_count);
    if (last == SIGINT) lua_pushliteral(L, "INT");
    else if (last == SIGTERM) lua_pushliteral(L, "TERM");
    else lua_pushnil(L);
    return 3;
}

/* restore_signals(): puts back the dispositions catch_signals replaced; idempotent. */
static int restore_signals(lua_State *L) {
    (void)L;
    restore_dispositions();
    return 0;
}

void forage_open_signals(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"catch_signals", catch_signals}, {"caught_signals", caught_signals},
        {"restore_signals", restore_signals}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
    /* Finalisers run in the reverse order of their objects' creation: this sentinel's,
       made after the package library's table of loaded C libraries, runs before that
       table's unloads this library. */
    if (luaL_getsubtable(L, LUA_REGISTRYINDEX, SIGNALS_SENTINEL)) {
        lua_pop(L, 1);
        return;
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, restore_signals);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
}
