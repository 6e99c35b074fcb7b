/* The worker side of the pool: the loop a forked worker runs (see pool.h; its messages
   are in pool_proto.h). Every failure to build or send a message ends the worker with a
   line on stderr (worker_fail): the parent sees it die and re-runs its tasks. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "fork.h"
#include "frame.h"
#include "lauxlib.h"
#include "clock.h"
#include "core.h"
#include "lease.h"
#include "pool.h"
#include "pool_proto.h"
#include "wire.h"

#define FLUSH_EVERY_SECONDS 0.002   /* finished results wait at most this long to be sent */
#define FLUSH_BYTES (256u << 10)
#define MAX_TASK_ARGS 250
#define GENERATIONAL_HEAP_KB (8 * 1024)   /* inherited heaps above this: generational GC */

static _Noreturn void worker_fail(const char *what) {
    fprintf(stderr, "forage: pool worker %ld: %s: %s\n", (long)getpid(), what, strerror(errno));
    child_exit(70);
}

/* The message handler of a task: the task's error, with the traceback where it was raised. */
static int task_error_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
    proto_push_error(L, 1, lua_tostring(L, -1));
    return 1;
}

/* Ends the worker when building a message failed (out of memory, or over FRAME_MAX). */
static void check_put(int rc, const char *what) {
    if (rc != 0) worker_fail(what);
}

/* Appends the error table at idx; when its value cannot travel, its string form does. */
static void encode_error(lua_State *L, int idx, buf *b) {
    char err[256];
    if (wire_encode(L, idx, b, WIRE_DATA, "error", err, sizeof err) == 0) return;
    lua_getfield(L, idx, "value");
    lua_pushstring(L, luaL_tolstring(L, -1, NULL));
    lua_setfield(L, idx, "value");
    lua_pop(L, 2);
    if (wire_encode(L, idx, b, WIRE_DATA, "error", err, sizeof err) != 0) worker_fail("cannot encode an error");
}

/* Writes out everything buffered; leaves quietly when the parent is gone. */
static void worker_write(int fd, buf *out) {
    if (out->len && fd_write_all(fd, out->data, out->len) != 0) {
        if (errno == EPIPE) child_exit(0);
        worker_fail("write");
    }
    buf_reset(out);
    if (out->cap > (4u << 20)) buf_free(out);
}

/* Pushes the arguments of init_args (the table at idx, replaced); returns their number,
   or -1 when there are too many. */
static int unpack_args(lua_State *L, int idx) {
    lua_getfield(L, idx, "n");
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, idx);
    lua_pop(L, 1);
    if (n < 0 || n > MAX_TASK_ARGS) return -1;
    luaL_checkstack(L, (int)n, "task arguments");
    for (lua_Integer i = 1; i <= n; i++) lua_rawgeti(L, idx, i);
    lua_remove(L, idx);
    return (int)n;
}

/* When the results list cannot travel, finds the first result that cannot, drops it and
   those after it, and pushes the error. Returns the number of results kept. */
static uint32_t drop_bad_result(lua_State *L, int results, uint32_t done) {
    buf scratch = BUF_INIT;
    char err[256];
    uint32_t k = 0;
    for (; k < done; k++) {
        lua_rawgeti(L, results, (lua_Integer)k + 1);
        buf_reset(&scratch);
        int bad = wire_encode(L, -1, &scratch, WIRE_CODE, "result", err, sizeof err) != 0;
        lua_pop(L, 1);
        if (bad) break;
    }
    buf_free(&scratch);
    for (uint32_t j = k; j < done; j++) {
        lua_pushnil(L);
        lua_rawseti(L, results, (lua_Integer)j + 1);
    }
    proto_push_error_message(L, k < done ? err : "results cannot be sent");
    return k;
}

/* The loop over a task's items, in Lua: a call from the VM costs half of one through
   lua_call, and one pcall covers the whole task. `progress` tells how far it got when an
   item raised. With `all`, an item's result is the list of every value f returned (apply
   keeps them all; map keeps one per item). */
static const char RUN_ITEMS[] =
    "local unpack, pack, type, error = table.unpack, table.pack, type, error\n"
    "local done = 0\n"
    "local function run(f, items, results, n, star, all)\n"
    "  done = 0\n"
    "  if all then\n"
    "    for i = 1, n do\n"
    "      local a = items[i]\n"
    "      if type(a) ~= 'table' then error('bad argument list: a table expected, got ' .. type(a), 0) end\n"
    "      results[i] = pack(f(unpack(a, 1, a.n or #a)))\n"
    "      done = i\n"
    "    end\n"
    "  elseif star then\n"
    "    for i = 1, n do\n"
    "      local a = items[i]\n"
    "      if type(a) ~= 'table' then error('bad argument list: a table expected, got ' .. type(a), 0) end\n"
    "      results[i] = f(unpack(a, 1, a.n or #a))\n"
    "      done = i\n"
    "    end\n"
    "  else\n"
    "    for i = 1, n do results[i] = f(items[i]); done = i end\n"
    "  end\n"
    "end\n"
    "local function progress() return done end\n"
    "return run, progress\n";

/* Which pool slot this process works for (1-based), 0 outside a pool worker. */
static int current_slot;
/* The pool's sticky resources, or NULL: a task runs only while its worker holds one. */
static lease_table *current_leases;

/* Runs one task message (p, n: its payload) and appends its MSG_DONE or MSG_FAILED to
   out; or MSG_BOUNCED when the worker holds no resource to run it with; or nothing when
   the parent has taken the task back. */
static void run_task(lua_State *L, int funcs, int runner, shared_slot *slot, const char *p, size_t n, buf *out) {
    task_header th;
    const char *items;
    size_t items_len;
    if (proto_get_task_header(p, n, &th, &items, &items_len) != 0) worker_fail("short task message");
    uint64_t expect = th.seq - 1;
    if (!atomic_compare_exchange_strong(&slot->gate, &expect, th.seq)) return;   /* taken back */
    if (current_leases && lease_held(current_leases, current_slot - 1) < 0) {
        /* The resource went (swapped, retired) while this task waited here: it goes back
           to the parent, which gives it to a worker that holds one. */
        check_put(proto_put_bounced(out, th.task), "memory");
        return;
    }
    int star = (th.flags & TASK_STAR) != 0, all = (th.flags & TASK_ALL_VALUES) != 0;
    double t0 = now_seconds();
    atomic_store_explicit(&slot->running_task, th.task, memory_order_relaxed);

    int base = lua_gettop(L);
    char err[256];
    lua_createtable(L, (int)th.count, 0);       /* base + 1: results */
    int results = base + 1;
    lua_pushcfunction(L, task_error_handler);   /* base + 2 */
    lua_pushvalue(L, runner);
    int fn_type = lua_rawgeti(L, funcs, th.fn);
    if (fn_type != LUA_TFUNCTION && fn_type != LUA_TSTRING) worker_fail("a task names an unknown function");
    int failed = 0;
    uint32_t done = th.count;
    if (fn_type == LUA_TSTRING) {
        snprintf(err, sizeof err, "function: %s", lua_tostring(L, -1));
        lua_settop(L, results);
        proto_push_error_message(L, err);
        failed = 1;
        done = 0;
    } else if (wire_decode(L, items, items_len, WIRE_CODE, err, sizeof err) != 0) {
        lua_settop(L, results);
        proto_push_error_message(L, err);
        failed = 1;
        done = 0;
    } else {
        lua_pushvalue(L, results);
        lua_pushinteger(L, th.count);
        lua_pushboolean(L, star);
        lua_pushboolean(L, all);
        failed = lua_pcall(L, 6, 0, base + 2) != LUA_OK;
        if (failed) {
            lua_remove(L, base + 2);   /* the handler; the error stays on top */
            lua_pushvalue(L, runner + 1);
            lua_call(L, 0, 1);
            done = (uint32_t)lua_tointeger(L, -1);
            lua_pop(L, 1);
        } else {
            lua_settop(L, results);
        }
    }
    result_header rh = {th.task, (uint64_t)((now_seconds() - t0) * 1e9), 0, 0};

    size_t at;
    check_put(proto_begin_result(out, &at), "memory");
    size_t list_at = out->len;
    /* The message is made by drop_bad_result, which encodes the results one by one. */
    if (wire_encode_list(L, results, 1, done, out, WIRE_CODE, "result", NULL, 0) != 0) {
        if (failed) lua_pop(L, 1);   /* this error is older: the bad result comes first */
        out->len = list_at;
        done = drop_bad_result(L, results, done);
        failed = 1;
        if (wire_encode_list(L, results, 1, done, out, WIRE_CODE, "result", NULL, 0) != 0)
            worker_fail("results");
    }
    rh.index = done;
    rh.list_len = (uint32_t)(out->len - list_at);
    if (failed) encode_error(L, lua_gettop(L), out);
    if (proto_end_result(out, at, failed ? MSG_FAILED : MSG_DONE, &rh) != 0) {
        /* Over 2 GiB of results: say so instead of sending them. */
        lua_settop(L, base);
        lua_newtable(L);
        check_put(proto_begin_result(out, &at), "memory");
        list_at = out->len;
        if (wire_encode(L, -1, out, WIRE_CODE, "result", err, sizeof err) != 0) worker_fail("results");
        rh.index = 0;
        rh.list_len = (uint32_t)(out->len - list_at);
        proto_push_error_message(L, "results too large for one message (over 2 GiB)");
        encode_error(L, -1, out);
        check_put(proto_end_result(out, at, MSG_FAILED, &rh), "results");
    }
    lua_settop(L, base);
    atomic_store_explicit(&slot->running_task, 0, memory_order_relaxed);
}

/* Runs init(init_args...) from the config table; on failure sends MSG_INIT_FAILED and exits. */
static void run_init(lua_State *L, int config, int result_fd, buf *out) {
    int base = lua_gettop(L);
    lua_pushcfunction(L, task_error_handler);
    lua_getfield(L, config, "init");
    if (lua_isnil(L, -1)) {
        lua_settop(L, base);
        return;
    }
    int nargs = 0;
    lua_getfield(L, config, "init_args");
    if (lua_istable(L, -1)) nargs = unpack_args(L, lua_gettop(L));
    else lua_pop(L, 1);
    if (nargs < 0 || lua_pcall(L, nargs < 0 ? 0 : nargs, 0, base + 1) != LUA_OK) {
        if (nargs < 0) proto_push_error_message(L, "init: too many init_args");
        size_t at;
        check_put(proto_begin(out, MSG_INIT_FAILED, &at), "memory");
        encode_error(L, lua_gettop(L), out);
        check_put(proto_end(out, at), "init error too large");
        worker_write(result_fd, out);
        child_exit(3);
    }
    lua_settop(L, base);
}

#define WORKER_CONFIG "forage.worker.config"

/* worker_slot() -> this worker's slot in its pool (1-based), or nil outside a worker. */
static int worker_slot(lua_State *L) {
    if (current_slot == 0) lua_pushnil(L);
    else lua_pushinteger(L, current_slot);
    return 1;
}

/* worker_config() -> the pool's configuration table inside a worker, or nil. */
static int worker_config(lua_State *L) {
    if (current_slot == 0) lua_pushnil(L);
    else lua_getfield(L, LUA_REGISTRYINDEX, WORKER_CONFIG);
    return 1;
}

void forage_open_worker(lua_State *L) {
    lua_pushcfunction(L, worker_slot);
    lua_setfield(L, -2, "worker_slot");
    lua_pushcfunction(L, worker_config);
    lua_setfield(L, -2, "worker_config");
}

void worker_prepare(lua_State *L, int config) {
    /* Compiled here, once, rather than in every worker after the fork. */
    if (luaL_loadbuffer(L, RUN_ITEMS, sizeof RUN_ITEMS - 1, "=forage.worker") != LUA_OK) lua_error(L);
    lua_call(L, 0, 2);
    lua_setfield(L, config, "progress");
    lua_setfield(L, config, "run_items");
}

_Noreturn void worker_main(lua_State *L, int config, int slot_index, shared_slot *slot, pid_t parent, int task_fd,
                           int result_fd) {
    current_slot = slot_index + 1;
    child_own_os_exit(L);
    if (lua_getfield(L, config, "leases") != LUA_TNIL) current_leases = lease_check(L, -1);   /* config keeps it */
    lua_pop(L, 1);
    lua_pushvalue(L, config);
    lua_setfield(L, LUA_REGISTRYINDEX, WORKER_CONFIG);
    /* Leave with the parent, however it ends (the pipes tell too, but not mid-task). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) worker_fail("prctl");
    if (getppid() != parent) child_exit(0);
    buf out = BUF_INIT;
    run_init(L, config, result_fd, &out);
    lua_newtable(L);
    int funcs = lua_gettop(L);
    lua_getfield(L, config, "run_items");
    lua_getfield(L, config, "progress");
    int runner = funcs + 1;   /* run, then progress */
    check_put(proto_put_ready(&out), "memory");
    worker_write(result_fd, &out);

    frame_reader in = {BUF_INIT, 0};
    double last_flush = now_seconds();
    int generational = 0;
    char err[256];
    for (;;) {
        long got = frame_fill(&in, task_fd);
        if (got == 0) break;    /* the parent closed our pipe: the pool is closing */
        if (got < 0 && errno == EAGAIN) {
            if (fd_wait(task_fd, POLLIN, -1) < 0) worker_fail("poll");
            continue;
        }
        if (got < 0) worker_fail("read");
        const char *f, *blob;
        size_t n, len;
        uint32_t fn;
        int rc;
        while ((rc = frame_next(&in, &f, &n)) == 1) {
            if (n < 1) worker_fail("empty message");
            char tag = f[0];
            f++;
            n--;
            if (tag == MSG_TASK) {
                if (!generational) {
                    /* A worker inherits the parent's heap; when it is large, generational
                       mode's minor collections leave those old objects alone instead of
                       walking them all again on every cycle. The switch is a full
                       collection, which writes (copies) every page it marks: worth it for
                       a large heap only, and done at the first task, not at start. */
                    if (lua_gc(L, LUA_GCCOUNT, 0) > GENERATIONAL_HEAP_KB) lua_gc(L, LUA_GCGEN, 0, 0);
                    generational = 1;
                }
                run_task(L, funcs, runner, slot, f, n, &out);
                double now = now_seconds();
                if (out.len > FLUSH_BYTES || now - last_flush > FLUSH_EVERY_SECONDS) {
                    worker_write(result_fd, &out);
                    last_flush = now;
                }
            } else if ((tag == MSG_DEFINE || tag == MSG_FORGET) && proto_get_function(f, n, &fn, &blob, &len) == 0) {
                /* A function that cannot load here (it holds a shared object created after
                   this worker started) is kept as its error: its tasks fail with it. */
                if (tag == MSG_FORGET) lua_pushnil(L);
                else if (wire_decode(L, blob, len, WIRE_CODE, err, sizeof err) != 0) lua_pushstring(L, err);
                lua_rawseti(L, funcs, fn);
            } else {
                worker_fail("unknown message");
            }
        }
        if (rc < 0) worker_fail("corrupt message");
        /* Nothing more to run right now: send what is finished before blocking. */
        worker_write(result_fd, &out);
        last_flush = now_seconds();
    }
    worker_write(result_fd, &out);
    child_exit(0);
}
