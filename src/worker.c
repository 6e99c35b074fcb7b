/* The worker side of the pool: the loop a forked worker runs (see pool.h). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "fork.h"
#include "frame.h"
#include "lauxlib.h"
#include "core.h"
#include "lease.h"
#include "pool.h"
#include "wire.h"

#define FLUSH_EVERY_NS 2000000      /* finished results wait at most this long to be sent */
#define FLUSH_BYTES (256u << 10)
#define MAX_TASK_ARGS 250
#define GENERATIONAL_HEAP_KB (8 * 1024)   /* inherited heaps above this: generational GC */

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static _Noreturn void worker_fail(const char *what) {
    fprintf(stderr, "forage: pool worker %ld: %s: %s\n", (long)getpid(), what, strerror(errno));
    child_exit(70);
}

/* The message handler of a task: { value = error, traceback = "..." }. */
static int task_error_handler(lua_State *L) {
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "value");
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
    lua_setfield(L, -2, "traceback");
    return 1;
}

void push_task_error(lua_State *L, const char *msg) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "value");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "traceback");
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
    push_task_error(L, k < done ? err : "results cannot be sent");
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

/* Runs one 'T' message and appends its 'D' or 'E' message to out; or appends 'B' when it
   holds no resource to run it with; or nothing when the parent has taken the task back. */
static void run_task(lua_State *L, int funcs, int runner, shared_slot *slot, const char *p, size_t n, buf *out) {
    if (n < TASK_HEADER) worker_fail("short task message");
    uint64_t id = get_u64(p);
    uint32_t fn = get_u32(p + 8);
    int star = (p[12] & TASK_STAR) != 0, all = (p[12] & TASK_ALL_VALUES) != 0;
    uint32_t count = get_u32(p + 13);
    uint64_t seq = get_u64(p + 17);
    uint64_t expect = seq - 1;
    if (!atomic_compare_exchange_strong(&slot->gate, &expect, seq)) return;   /* taken back */
    if (current_leases && lease_held(current_leases, current_slot - 1) < 0) {
        /* The resource went (swapped, retired) while this task waited here: it goes back
           to the parent, which gives it to a worker that holds one. */
        size_t at;
        char body[1 + 8];
        body[0] = 'B';
        put_u64(body + 1, id);
        if (frame_begin(out, &at) != 0 || buf_append(out, body, sizeof body) != 0 || frame_end(out, at) != 0)
            worker_fail("memory");
        return;
    }
    uint64_t t0 = monotonic_ns();
    atomic_store_explicit(&slot->running_task, id, memory_order_relaxed);

    int base = lua_gettop(L);
    char err[256];
    lua_createtable(L, (int)count, 0);          /* base + 1: results */
    int results = base + 1;
    lua_pushcfunction(L, task_error_handler);   /* base + 2 */
    lua_pushvalue(L, runner);
    int fn_type = lua_rawgeti(L, funcs, fn);
    if (fn_type != LUA_TFUNCTION && fn_type != LUA_TSTRING) worker_fail("a task names an unknown function");
    int failed = 0;
    uint32_t done = count;
    if (fn_type == LUA_TSTRING) {
        snprintf(err, sizeof err, "function: %s", lua_tostring(L, -1));
        lua_settop(L, results);
        push_task_error(L, err);
        failed = 1;
        done = 0;
    } else if (wire_decode(L, p + TASK_HEADER, n - TASK_HEADER, WIRE_CODE, err, sizeof err) != 0) {
        lua_settop(L, results);
        push_task_error(L, err);
        failed = 1;
        done = 0;
    } else {
        lua_pushvalue(L, results);
        lua_pushinteger(L, count);
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
    uint64_t ns = monotonic_ns() - t0;

    size_t at, header;
    if (frame_begin(out, &at) != 0) worker_fail("memory");
    header = out->len;
    char zero[1 + RESULT_HEADER] = {0};
    buf_append(out, zero, sizeof zero);
    size_t list_at = out->len;
    /* The message is made by drop_bad_result, which encodes the results one by one. */
    if (wire_encode_list(L, results, 1, done, out, WIRE_CODE, "result", NULL, 0) != 0) {
        if (failed) lua_pop(L, 1);   /* this error is older: the bad result comes first */
        done = drop_bad_result(L, results, done);
        failed = 1;
        if (wire_encode_list(L, results, 1, done, out, WIRE_CODE, "result", NULL, 0) != 0)
            worker_fail("results");
    }
    size_t list_len = out->len - list_at;
    if (failed) encode_error(L, lua_gettop(L), out);
    char *h = out->data + header;
    h[0] = failed ? 'E' : 'D';
    put_u64(h + 1, id);
    put_u64(h + 9, ns);
    put_u32(h + 17, done);
    put_u32(h + 21, done);
    put_u32(h + 25, (uint32_t)list_len);
    if (frame_end(out, at) != 0) {
        /* Over 2 GiB of results: say so instead of sending them. */
        out->len = at;
        frame_begin(out, &at);
        lua_settop(L, base);
        lua_newtable(L);
        zero[0] = 'E';
        put_u64(zero + 1, id);
        put_u64(zero + 9, ns);
        buf_append(out, zero, sizeof zero);
        list_at = out->len;
        wire_encode(L, -1, out, WIRE_CODE, "result", err, sizeof err);
        put_u32(out->data + at + FRAME_HEADER + 25, (uint32_t)(out->len - list_at));
        push_task_error(L, "results too large for one message (over 2 GiB)");
        encode_error(L, -1, out);
        frame_end(out, at);
    }
    lua_settop(L, base);
    atomic_store_explicit(&slot->running_task, 0, memory_order_relaxed);
}

/* Runs init(init_args...) from the config table; on failure sends 'I' and exits. */
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
        if (nargs < 0) push_task_error(L, "init: too many init_args");
        size_t at;
        frame_begin(out, &at);
        buf_putc(out, 'I');
        encode_error(L, lua_gettop(L), out);
        frame_end(out, at);
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
    if (lua_getfield(L, config, "leases") != LUA_TNIL) current_leases = lease_check(L, -1);   /* config keeps it */
    lua_pop(L, 1);
    lua_pushvalue(L, config);
    lua_setfield(L, LUA_REGISTRYINDEX, WORKER_CONFIG);
    /* Leave with the parent, however it ends (the pipes tell too, but not mid-task). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) child_exit(0);
    buf out = BUF_INIT;
    run_init(L, config, result_fd, &out);
    lua_newtable(L);
    int funcs = lua_gettop(L);
    lua_getfield(L, config, "run_items");
    lua_getfield(L, config, "progress");
    int runner = funcs + 1;   /* run, then progress */
    size_t at;
    frame_begin(&out, &at);
    buf_putc(&out, 'R');
    frame_end(&out, at);
    worker_write(result_fd, &out);

    frame_reader in = {BUF_INIT, 0};
    uint64_t last_flush = monotonic_ns();
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
        const char *f;
        size_t n;
        int rc;
        while ((rc = frame_next(&in, &f, &n)) == 1) {
            if (n < 1) worker_fail("empty message");
            char tag = f[0];
            f++;
            n--;
            if (tag == 'T') {
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
                uint64_t now = monotonic_ns();
                if (out.len > FLUSH_BYTES || now - last_flush > FLUSH_EVERY_NS) {
                    worker_write(result_fd, &out);
                    last_flush = now;
                }
            } else if (tag == 'F' && n >= 4) {
                /* A function that cannot load here (it holds a shared object created after
                   this worker started) is kept as its error: its tasks fail with it. */
                if (wire_decode(L, f + 4, n - 4, WIRE_CODE, err, sizeof err) != 0) lua_pushstring(L, err);
                lua_rawseti(L, funcs, get_u32(f));
            } else if (tag == 'U' && n >= 4) {
                lua_pushnil(L);
                lua_rawseti(L, funcs, get_u32(f));
            } else {
                worker_fail("unknown message");
            }
        }
        if (rc < 0) worker_fail("corrupt message");
        /* Nothing more to run right now: send what is finished before blocking. */
        worker_write(result_fd, &out);
        last_flush = monotonic_ns();
    }
    worker_write(result_fd, &out);
    child_exit(0);
}
