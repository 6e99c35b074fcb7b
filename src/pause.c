/* Pause points for the specs (see pause.h). */
#include "pause.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "frame.h"
#include "lauxlib.h"
#include "luatype.h"
#include "shm.h"

#define PAUSE_TYPE "forage.PausePoint"
#define PAUSE_NAME_MAX 64

typedef struct pause_shared {
    _Atomic int32_t reached_pid;   /* 0 until a process stops at the point */
    _Atomic int32_t hits;          /* how many processes stopped there */
} pause_shared;

typedef struct pause_point {
    pause_shared *sh;
    pid_t owner;                   /* the creator unmaps; its forks only drop their view */
    char name[PAUSE_NAME_MAX];
} pause_point;

const char *pause_armed_name = NULL;
static pause_shared *armed_shared = NULL;

void pause_reached(const char *name) {
    if (strcmp(name, pause_armed_name) != 0) return;
    atomic_fetch_add(&armed_shared->hits, 1);
    atomic_store(&armed_shared->reached_pid, (int32_t)getpid());
    for (;;) pause();   /* until the test kills this process */
}

static pause_point *check_pause(lua_State *L, int i) {
    pause_point *p = luaL_checkudata(L, i, PAUSE_TYPE);
    if (p->sh == NULL) type_closed_error(L, PAUSE_TYPE);
    return p;
}

/* p:arm(): this process stops at the point when it reaches it. */
static int pause_arm(lua_State *L) {
    pause_point *p = check_pause(L, 1);
    armed_shared = p->sh;
    pause_armed_name = p->name;
    return 0;
}

/* p:disarm(): this process passes the point again. */
static int pause_disarm(lua_State *L) {
    check_pause(L, 1);
    pause_armed_name = NULL;
    armed_shared = NULL;
    return 0;
}

/* p:wait([timeout]) -> the pid of a process stopped at the point, or nil, "timeout", "timeout". */
static int pause_wait(lua_State *L) {
    pause_point *p = check_pause(L, 1);
    double timeout = args_timeout(L, 2);
    double deadline = timeout < 0 ? -1 : now_seconds() + timeout;
    for (;;) {
        int32_t pid = atomic_exchange(&p->sh->reached_pid, 0);
        if (pid != 0) {
            lua_pushinteger(L, pid);
            return 1;
        }
        if (deadline >= 0 && now_seconds() >= deadline)
            return args_fail(L, "timeout", "timeout");
        struct timespec ts = {0, 1000000};   /* a test helper: 1 ms polling is plenty */
        nanosleep(&ts, NULL);
    }
}

/* p:hits() -> how many processes have stopped at the point so far. */
static int pause_hits(lua_State *L) {
    pause_point *p = check_pause(L, 1);
    lua_pushinteger(L, atomic_load(&p->sh->hits));
    return 1;
}

static int pause_gc(lua_State *L) {
    pause_point *p = luaL_checkudata(L, 1, PAUSE_TYPE);
    if (p->sh != NULL && p->owner == getpid()) shm_unmap(p->sh, sizeof *p->sh);
    p->sh = NULL;
    return 0;
}

/* core.pause_point(name) -> a PausePoint, unarmed, shared with the processes forked after. */
static int pause_new(lua_State *L) {
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && len < PAUSE_NAME_MAX, 1, "name must be 1 to 63 bytes");
    pause_point *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, PAUSE_TYPE);
    p->sh = shm_map(sizeof *p->sh);
    if (p->sh == NULL) return luaL_error(L, "pause_point: cannot map shared memory: %s", strerror(errno));
    p->owner = getpid();
    memcpy(p->name, name, len + 1);
    shm_share(L, -1);
    return 1;
}

void forage_open_pause(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"arm", pause_arm}, {"disarm", pause_disarm}, {"wait", pause_wait}, {"hits", pause_hits}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {{"__gc", pause_gc}, {"__close", pause_gc}, {NULL, NULL}};
    type_register(L, PAUSE_TYPE, methods, meta, 0);
    lua_pushcfunction(L, pause_new);
    lua_setfield(L, -2, "pause_point");
}
