/* forage.PoolCore: the parent side of the fork pool. Workers, their pipes, dispatch of
   encoded tasks, collection of results, and recovery when a worker dies. The workers' loop
   is in worker.c, the messages between them in pool_proto.h. Policy (what a result means,
   callbacks, ordering, AsyncResult) lives in lua/forage/pool.lua.

   Each worker has its own pair of pipes, so the parent always knows which tasks a worker
   holds: when it dies, exactly those are re-queued, and the one it was running (read from
   its shared slot) counts an attempt. Nothing hangs on a dead worker (CPython gh-66587). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fork.h"
#include "frame.h"
#include "hash.h"
#include "lauxlib.h"
#include "luatype.h"
#include "lease.h"
#include "pool.h"
#include "pool_proto.h"
#include "wire.h"

#define POOL_TYPE "forage.PoolCore"
#define MAX_WORKERS 4096
#define FUNCS_KEPT 64              /* unused functions kept in workers before forgetting */
#define OUT_HIGH_WATER (1u << 20)  /* bytes queued to one worker before it counts as full */
#define MAX_DEPTH 256              /* tasks in flight per worker, at most */
#define TARGET_QUEUE_SECONDS 0.002 /* work queued ahead in each worker */

typedef struct func_entry {
    struct func_entry *next;   /* hash chain */
    uint64_t hash;
    uint32_t id;
    uint32_t refs;             /* tasks pending or in flight that use it */
    char *blob;
    size_t len;
    uint32_t *known;           /* per slot: the worker generation that has it */
} func_entry;

typedef struct task {
    struct task *next;
    uint64_t id;
    func_entry *fn;
    uint64_t seq;              /* its number among the tasks sent to its worker (see shared_slot) */
    int attempts;              /* deaths of a worker while it ran this task */
    char *frame;               /* the whole MSG_TASK frame (in the same allocation), kept until the result */
    size_t len;
} task;

typedef struct task_list {
    task *head, *tail;
    size_t n;
} task_list;

enum { W_EMPTY, W_STARTING, W_READY, W_RETIRING };

typedef struct worker {
    int state;
    pid_t pid;
    int pidfd;
    int task_fd;               /* parent writes tasks */
    int result_fd;             /* parent reads results */
    uint32_t gen;              /* incarnation of this slot */
    frame_reader in;
    buf out;
    size_t out_pos;            /* bytes of out already written */
    task_list inflight;        /* in the order sent, so in seq order */
    uint64_t dispatched;       /* tasks given to this incarnation (and not taken back) */
    uint64_t seq;              /* the seq of the last task sent */
    int taken_back;            /* its queue was taken back: no more tasks until its running one ends */
} worker;

typedef struct pool {
    pid_t owner;
    int nworkers;
    int shut;                  /* no respawns: closing or terminated */
    int broken;                /* a respawned worker's init failed */
    worker *workers;
    shared_slot *slots;
    task_list pending;
    uint64_t next_task;
    uint32_t next_func;
    func_entry **buckets;
    size_t nbuckets, nfuncs;
    lua_Integer max_tasks;     /* 0: unlimited */
    int task_retries;
    double task_seconds;       /* moving average of one task's run time */
    int rotor;                 /* where dispatch starts, for fairness */
    uint64_t respawns;
    uint64_t taken_back;       /* tasks taken back from a busy worker to give to an idle one */
    int has_init;              /* workers run an init that may fail: wait for them to be ready */
    int start_deaths;          /* workers in a row that died before saying ready */
    char *broken_message;
    lease_table *leases;       /* sticky resources, or NULL (the table lives in the config) */
    buf scratch;               /* where submit encodes a task */
    struct {                   /* pool_wait's poll set: up to 3 fds a worker, made once */
        struct pollfd *fds;
        int *owner;            /* the worker slot of each fd */
        uint32_t *gen;         /* that worker's incarnation when the set was built */
    } poll;
    const char *last_blob;     /* the function of the last submit (kept alive in uservalue 2) */
    func_entry *last_fn;
} pool;

/* ---------- small helpers ---------- */

static void list_push(task_list *l, task *t) {
    t->next = NULL;
    if (l->tail) l->tail->next = t;
    else l->head = t;
    l->tail = t;
    l->n++;
}

static task *list_pop(task_list *l) {
    task *t = l->head;
    if (!t) return NULL;
    l->head = t->next;
    if (!l->head) l->tail = NULL;
    l->n--;
    t->next = NULL;
    return t;
}


/* ---------- functions known to workers ---------- */

static func_entry *func_find(pool *p, const char *blob, size_t len, uint64_t h) {
    if (p->nbuckets == 0) return NULL;
    for (func_entry *f = p->buckets[h & (p->nbuckets - 1)]; f; f = f->next)
        if (f->hash == h && f->len == len && memcmp(f->blob, blob, len) == 0) return f;
    return NULL;
}

static int func_grow(pool *p) {
    size_t n = p->nbuckets ? p->nbuckets * 2 : 64;
    func_entry **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < p->nbuckets; i++) {
        func_entry *f = p->buckets[i];
        while (f) {
            func_entry *next = f->next;
            f->next = b[f->hash & (n - 1)];
            b[f->hash & (n - 1)] = f;
            f = next;
        }
    }
    free(p->buckets);
    p->buckets = b;
    p->nbuckets = n;
    return 0;
}

/* Returns the entry for this encoded function, adding it when new; NULL when out of memory. */
static func_entry *func_intern(pool *p, const char *blob, size_t len) {
    uint64_t h = fnv1a_mixed(blob, len);
    func_entry *f = func_find(p, blob, len, h);
    if (f) return f;
    if (p->nfuncs >= p->nbuckets && func_grow(p) != 0) return NULL;
    f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->blob = malloc(len);
    f->known = calloc((size_t)p->nworkers, sizeof *f->known);
    if (!f->blob || !f->known) {
        free(f->blob);
        free(f->known);
        free(f);
        return NULL;
    }
    memcpy(f->blob, blob, len);
    f->len = len;
    f->hash = h;
    f->id = ++p->next_func;
    f->next = p->buckets[h & (p->nbuckets - 1)];
    p->buckets[h & (p->nbuckets - 1)] = f;
    p->nfuncs++;
    return f;
}

static void func_free(func_entry *f) {
    free(f->blob);
    free(f->known);
    free(f);
}

static int worker_live(const worker *w) { return w->state == W_READY || w->state == W_RETIRING; }

/* Drops a task's hold on its function; forgets it everywhere once unused and many are kept. */
static void func_release(pool *p, func_entry *f) {
    if (--f->refs > 0 || p->nfuncs <= FUNCS_KEPT) return;
    func_entry **at = &p->buckets[f->hash & (p->nbuckets - 1)];
    while (*at != f) at = &(*at)->next;
    *at = f->next;
    p->nfuncs--;
    if (p->last_fn == f) p->last_fn = NULL;
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        /* Out of memory, the worker keeps a function it no longer needs: harmless. */
        if (worker_live(w) && f->known[i] == w->gen) (void)proto_put_function(&w->out, MSG_FORGET, f->id, NULL, 0);
    }
    func_free(f);
}

static void task_free(pool *p, task *t) {
    if (t->fn) func_release(p, t->fn);
    free(t);
}

/* ---------- the parent side ---------- */

static void close_fd(int *fd) {
    if (*fd >= 0) {
        fork_unregister_fd(*fd);
        close(*fd);
    }
    *fd = -1;
}

/* Forks the worker of slot i. Returns 0, or -1 with errno set. The pool is at index 1. */
static int worker_spawn(lua_State *L, pool *p, int i) {
    worker *w = &p->workers[i];
    int tfd[2], rfd[2];
    /* Non-blocking at both ends: the parent never blocks on a worker, and a worker
       waits in poll (worker.c), which saves four fcntl calls per worker here. */
    if (pipe2(tfd, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    if (pipe2(rfd, O_CLOEXEC | O_NONBLOCK) != 0) {
        close(tfd[0]);
        close(tfd[1]);
        return -1;
    }
    atomic_store(&p->slots[i].running_task, 0);
    atomic_store(&p->slots[i].gate, 0);
    pid_t parent = current_pid();
    int pidfd;
    pid_t pid = fork_child(&pidfd);
    if (pid < 0) {
        int e = errno;
        close(tfd[0]); close(tfd[1]); close(rfd[0]); close(rfd[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(tfd[1]);
        close(rfd[0]);
        lua_getiuservalue(L, 1, 1);
        worker_main(L, lua_gettop(L), i, &p->slots[i], parent, tfd[0], rfd[1]);
    }
    close(tfd[0]);
    close(rfd[1]);
    fork_register_fd(tfd[1]);
    fork_register_fd(rfd[0]);
    if (pidfd >= 0) fork_register_fd(pidfd);
    w->state = W_STARTING;
    w->pid = pid;
    w->pidfd = pidfd;
    w->task_fd = tfd[1];
    w->result_fd = rfd[0];
    w->gen++;
    w->dispatched = 0;
    w->seq = 0;
    w->taken_back = 0;
    w->out_pos = 0;
    buf_reset(&w->out);
    w->in.pos = 0;
    buf_reset(&w->in.in);
    return 0;
}

/* Tasks a worker may hold at once: about TARGET_QUEUE_SECONDS of work, at least one. */
static size_t pool_depth(const pool *p) {
    if (p->task_seconds <= 0) return 2;
    double d = TARGET_QUEUE_SECONDS / p->task_seconds;
    if (d < 1) return 1;
    if (d > MAX_DEPTH) return MAX_DEPTH;
    return (size_t)d;
}

/* Writes what a worker's out buffer holds, without blocking. */
static void worker_flush(worker *w) {
    while (w->out_pos < w->out.len) {
        ssize_t n = write(w->task_fd, w->out.data + w->out_pos, w->out.len - w->out_pos);
        if (n > 0) {
            w->out_pos += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return;   /* EAGAIN: later; EPIPE: its death is noticed through the pidfd */
        }
    }
    w->out_pos = 0;
    buf_reset(&w->out);
}

static int worker_can_take(pool *p, int i, size_t depth) {
    worker *w = &p->workers[i];
    /* A starting worker takes tasks too: they wait in its pipe until its init is done. */
    if (w->state != W_READY && w->state != W_STARTING) return 0;
    if (w->inflight.n >= depth) return 0;
    /* A worker whose queue was taken back is busy with a long task: nothing more waits behind it. */
    if (w->taken_back) {
        if (w->inflight.n > 0) return 0;
        w->taken_back = 0;
    }
    if (w->out.len - w->out_pos > OUT_HIGH_WATER) return 0;
    if (p->max_tasks > 0 && w->dispatched >= (uint64_t)p->max_tasks) return 0;
    /* With resources, a worker runs a task only while it holds one: fewer live resources than
       workers leaves the extra workers idle, never running without. */
    if (p->leases && lease_acquire(p->leases, i) < 0) return 0;   /* what it holds, or a free one */
    return 1;
}

/* Puts a list of tasks back at the front of the pending ones, in its order: they are older. */
static void pending_push_front(pool *p, task_list *l) {
    if (l->n == 0) return;
    l->tail->next = p->pending.head;
    if (!p->pending.head) p->pending.tail = l->tail;
    p->pending.head = l->head;
    p->pending.n += l->n;
    l->head = l->tail = NULL;
    l->n = 0;
}

/* Takes back the tasks worker i has been sent and not started (see shared_slot). Returns
   how many went back to the pending ones. */
static size_t worker_take_back(pool *p, int i) {
    worker *w = &p->workers[i];
    _Atomic uint64_t *gate = &p->slots[i].gate;
    uint64_t started = atomic_load(gate);
    do {
        if (started >= w->seq) return 0;   /* it started all it was sent */
    } while (!atomic_compare_exchange_weak(gate, &started, w->seq));
    /* Every task after seq `started` is the parent's again; the worker skips them. */
    task_list back = {NULL, NULL, 0};
    task **at = &w->inflight.head, *last = NULL;
    size_t kept = 0;
    while (*at && (*at)->seq <= started) {
        last = *at;
        at = &(*at)->next;
        kept++;
    }
    back.head = *at;
    back.tail = w->inflight.tail;
    back.n = w->inflight.n - kept;
    *at = NULL;
    w->inflight.tail = last;
    w->inflight.n -= back.n;
    w->dispatched -= back.n;
    w->taken_back = 1;
    p->taken_back += back.n;
    size_t n = back.n;
    pending_push_front(p, &back);
    return n;
}

/* True when worker i has nothing in flight and could be given a task now. */
static int worker_idle(pool *p, int i, size_t depth) {
    return p->workers[i].inflight.n == 0 && worker_can_take(p, i, depth);
}

/* True when worker i may hold tasks it has not started: some behind its running one, or
   any behind its init while it starts. */
static int worker_has_queue(const worker *w) {
    return w->state != W_EMPTY && (w->inflight.n > 1 || (w->state == W_STARTING && w->inflight.n > 0));
}

/* With no task pending and a worker idle, the tasks queued behind another worker's running
   one (or behind its init, while it starts) would wait for it: take them back, to be given
   to the idle ones. Returns how many. */
static size_t pool_rebalance(pool *p, size_t depth) {
    if (p->pending.n > 0) return 0;
    int queued = 0, idle = 0;
    for (int i = 0; i < p->nworkers && !queued; i++) queued = worker_has_queue(&p->workers[i]);
    /* Looked for only now: worker_can_take leases a resource to the worker it accepts. */
    for (int i = 0; i < p->nworkers && queued && !idle; i++) idle = worker_idle(p, i, depth);
    if (!idle) return 0;
    size_t n = 0;
    for (int i = 0; i < p->nworkers; i++)
        if (worker_has_queue(&p->workers[i])) n += worker_take_back(p, i);
    return n;
}

/* True when a ready or starting worker has nothing to do. */
static int pool_has_idle(const pool *p) {
    for (int i = 0; i < p->nworkers; i++) {
        const worker *w = &p->workers[i];
        if ((w->state == W_READY || w->state == W_STARTING) && w->inflight.n == 0) return 1;
    }
    return 0;
}

/* Gives pending tasks to workers with room, round robin, then writes. */
static void pool_dispatch(pool *p) {
    size_t depth = pool_depth(p);
    int progress = 1;
    pool_rebalance(p, depth);
    while (p->pending.n > 0 && progress) {
        progress = 0;
        for (int k = 0; k < p->nworkers && p->pending.n > 0; k++) {
            int i = (p->rotor + k) % p->nworkers;
            worker *w = &p->workers[i];
            if (!worker_can_take(p, i, depth)) continue;
            task *t = p->pending.head;
            func_entry *f = t->fn;
            if (f->known[i] != w->gen) {
                if (proto_put_function(&w->out, MSG_DEFINE, f->id, f->blob, f->len) != 0) continue;
                f->known[i] = w->gen;
            }
            proto_task_set_seq(t->frame, w->seq + 1);
            if (buf_append(&w->out, t->frame, t->len) != 0) continue;   /* out of memory: later */
            list_pop(&p->pending);
            t->seq = ++w->seq;
            list_push(&w->inflight, t);
            w->dispatched++;
            progress = 1;
        }
        p->rotor = (p->rotor + 1) % p->nworkers;
    }
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        /* A starting worker's tasks are written too: a caller that waits for something else
           than the pool (an event, a pipe) must not leave them here. */
        if (w->task_fd >= 0 && w->out.len > w->out_pos) worker_flush(w);
        /* A worker at its task limit leaves once it has nothing in flight. */
        if (w->state == W_READY && p->max_tasks > 0 && w->dispatched >= (uint64_t)p->max_tasks &&
            w->inflight.n == 0) {
            w->state = W_RETIRING;
            close_fd(&w->task_fd);
        }
    }
}

/* Appends one event (id, kind, value on the stack top) to the table at ev. */
static void push_event(lua_State *L, int ev, int *nev, uint64_t id, const char *kind) {
    lua_pushinteger(L, (lua_Integer)id);
    lua_rawseti(L, ev, ++*nev);
    lua_pushstring(L, kind);
    lua_rawseti(L, ev, ++*nev);
    lua_rawseti(L, ev, ++*nev);   /* the value pushed by the caller */
}


/* Takes the task with this id out of a worker's in-flight list (it is normally the first). */
static task *take_inflight(worker *w, uint64_t id) {
    task **at = &w->inflight.head;
    task *prev = NULL;
    while (*at && (*at)->id != id) {
        prev = *at;
        at = &(*at)->next;
    }
    task *t = *at;
    if (!t) return NULL;
    *at = t->next;
    if (w->inflight.tail == t) w->inflight.tail = prev;
    w->inflight.n--;
    t->next = NULL;
    return t;
}

/* Handles one message from worker w (f, n: the frame's payload). */
static void handle_frame(lua_State *L, pool *p, worker *w, const char *f, size_t n, int ev, int *nev) {
    if (n < 1) luaL_error(L, "pool: empty message from worker %d", (int)w->pid);
    int tag = f[0];
    const char *q = f + 1;
    size_t qn = n - 1;
    char err[256];
    if (tag == MSG_READY) {
        if (w->state == W_STARTING) w->state = W_READY;
        p->start_deaths = 0;
        return;
    }
    if (tag == MSG_BOUNCED) {
        /* Not run: its worker holds no resource. It goes first again, to another worker. */
        uint64_t id;
        if (proto_get_bounced(q, qn, &id) != 0) luaL_error(L, "pool: bad message from worker %d", (int)w->pid);
        task *t = take_inflight(w, id);
        if (!t) luaL_error(L, "pool: unknown task bounced by worker %d", (int)w->pid);
        w->dispatched--;
        task_list back = {t, t, 1};
        pending_push_front(p, &back);
        return;
    }
    if (tag == MSG_INIT_FAILED) {
        /* Init failed: the worker exits; its death is reported through the pool's state. */
        if (wire_decode(L, q, qn, WIRE_DATA, err, sizeof err) != 0) proto_push_error_message(L, err);
        lua_getfield(L, -1, "traceback");
        const char *tb = lua_tostring(L, -1);
        free(p->broken_message);
        p->broken_message = strdup(tb ? tb : "init failed");
        lua_pop(L, 2);
        p->broken = 1;
        return;
    }
    result_header rh;
    const char *body;
    size_t body_len;
    if ((tag != MSG_DONE && tag != MSG_FAILED) || proto_get_result_header(q, qn, &rh, &body, &body_len) != 0)
        luaL_error(L, "pool: bad message from worker %d", (int)w->pid);
    task *t = take_inflight(w, rh.task);
    if (!t) luaL_error(L, "pool: result for unknown task %I", (lua_Integer)rh.task);
    double secs = (double)rh.ns * 1e-9;
    p->task_seconds = p->task_seconds <= 0 ? secs : p->task_seconds * 0.9 + secs * 0.1;
    task_free(p, t);
    if (tag == MSG_DONE) {
        /* The results stay encoded: Lua decodes them where they belong (decode_into). */
        lua_pushlstring(L, body, rh.list_len);
        push_event(L, ev, nev, rh.task, "ok");
        return;
    }
    lua_newtable(L);
    if (wire_decode_into(L, body, rh.list_len, WIRE_CODE, -1, 1, err, sizeof err) != 0)
        luaL_error(L, "pool: bad results: %s", err);
    /* The error, with results = { those of the items before index }, index and pid. */
    if (wire_decode(L, body + rh.list_len, body_len - rh.list_len, WIRE_DATA, err, sizeof err) != 0)
        proto_push_error_message(L, err);
    lua_insert(L, -2);
    lua_setfield(L, -2, "results");
    proto_error_origin(L, -1, rh.index, w->pid);
    push_event(L, ev, nev, rh.task, "error");
}

/* Reads every frame a worker has sent so far. Returns 0 at end of stream, 1 otherwise. */
static int worker_read(lua_State *L, pool *p, worker *w, int ev, int *nev) {
    for (;;) {
        long got = frame_fill(&w->in, w->result_fd);
        const char *f;
        size_t n;
        int rc;
        while ((rc = frame_next(&w->in, &f, &n)) == 1) handle_frame(L, p, w, f, n, ev, nev);
        if (rc < 0) luaL_error(L, "pool: corrupt stream from worker %d", (int)w->pid);
        if (got == 0) return 0;
        if (got < 0) return errno == EAGAIN ? 1 : 0;
    }
}

/* A worker ended: collect what it sent, reap it, re-queue or fail its tasks, replace it. */
static void worker_ended(lua_State *L, pool *p, int i, int ev, int *nev) {
    worker *w = &p->workers[i];
    worker_read(L, p, w, ev, nev);
    int status = 0;
    reap_child(w->pid, w->pidfd, -1, &status);
    int code = status_code(status);
    close_fd(&w->task_fd);
    close_fd(&w->result_fd);
    close_fd(&w->pidfd);
    if (p->leases) lease_release(p->leases, i);   /* the resource did nothing wrong */
    int was_starting = w->state == W_STARTING;
    w->state = W_EMPTY;

    uint64_t running = atomic_load(&p->slots[i].running_task);
    /* Re-queue in order at the front, so the oldest tasks go first again. */
    task *t;
    task_list requeue = {NULL, NULL, 0};
    while ((t = list_pop(&w->inflight)) != NULL) {
        if (t->id == running) {   /* even a clean exit (os.exit in a task) counts */
            t->attempts++;
            if (t->attempts > p->task_retries) {
                if (code < 0) lua_pushfstring(L, "worker died (signal %d)", -code);
                else lua_pushfstring(L, "worker died (exit %d)", code);
                proto_push_error(L, -1, NULL);
                lua_remove(L, -2);
                proto_error_origin(L, -1, 0, w->pid);   /* the task as a whole: which item died is not tracked */
                push_event(L, ev, nev, t->id, "lost");
                task_free(p, t);
                continue;
            }
        }
        list_push(&requeue, t);
    }
    pending_push_front(p, &requeue);
    if (p->broken) return;   /* an init failed: no worker is started again */
    if (was_starting && ++p->start_deaths >= 3) {
        /* Workers that die before they are ready would be replaced forever (gh-87472). */
        char msg[96];
        if (code < 0) snprintf(msg, sizeof msg, "workers die while starting (signal %d)", -code);
        else snprintf(msg, sizeof msg, "workers die while starting (exit %d)", code);
        free(p->broken_message);
        p->broken_message = strdup(msg);
        p->broken = 1;
        return;
    }
    if (!p->shut) {
        if (worker_spawn(L, p, i) != 0) luaL_error(L, "pool: cannot start a worker: %s", strerror(errno));
        p->respawns++;
    }
}

static pool *check_pool(lua_State *L) {
    pool *p = luaL_checkudata(L, 1, POOL_TYPE);
    if (p->workers == NULL) luaL_error(L, "attempt to use a closed pool");
    if (p->owner != current_pid()) luaL_error(L, "a pool can only be used by the process that created it");
    return p;
}

/* Fails every task not yet given to a worker with message (a "lost" event each). */
static void fail_pending(lua_State *L, pool *p, int ev, int *nev, const char *message) {
    task *t;
    while ((t = list_pop(&p->pending)) != NULL) {
        proto_push_error_message(L, message);
        proto_error_origin(L, -1, 0, 0);
        push_event(L, ev, nev, t->id, "lost");
        task_free(p, t);
    }
}

/* True when nothing can produce an event: no task anywhere, no worker changing state. */
static int pool_idle(const pool *p) {
    if (p->pending.n > 0) return 0;
    for (int i = 0; i < p->nworkers; i++) {
        const worker *w = &p->workers[i];
        if (w->inflight.n > 0 || w->state == W_STARTING || w->state == W_RETIRING) return 0;
    }
    return 1;
}

/* Waits for events for at most timeout seconds (< 0: until one happens); fills ev.
   Returns the number of values added to ev (three per event). */
static int pool_wait(lua_State *L, pool *p, double timeout, int ev) {
    int nev = 0;
    double deadline = now_seconds() + (timeout < 0 ? 0 : timeout);
    struct pollfd *fds = p->poll.fds;
    int *owner = p->poll.owner;
    uint32_t *gen = p->poll.gen;
    for (;;) {
        pool_dispatch(p);
        int nfds = 0;
        for (int i = 0; i < p->nworkers; i++) {
            worker *w = &p->workers[i];
            if (w->state == W_EMPTY) continue;
            fds[nfds] = (struct pollfd){.fd = w->result_fd, .events = POLLIN};
            gen[nfds] = w->gen;
            owner[nfds++] = i;
            if (w->pidfd >= 0) {
                fds[nfds] = (struct pollfd){.fd = w->pidfd, .events = POLLIN};
                gen[nfds] = w->gen;
                owner[nfds++] = i;
            }
            if (w->task_fd >= 0 && w->out.len > w->out_pos) {
                fds[nfds] = (struct pollfd){.fd = w->task_fd, .events = POLLOUT};
                gen[nfds] = w->gen;
                owner[nfds++] = i;
            }
        }
        if (nfds == 0 || pool_idle(p)) break;
        int ms = -1;
        if (timeout >= 0) {
            double left = deadline - now_seconds();
            /* poll takes an int: a longer wait is several polls (the loop comes back here). */
            ms = left <= 0 ? 0 : left > 1e6 ? 1000000000 : (int)(left * 1000.0 + 0.999);
        }
        int capped = 0;
        if (p->leases && p->pending.n > 0) {
            /* Tasks wait for a resource: fail them when none can ever come back, and
               otherwise wake up when the next one leaves its cooldown. */
            if (lease_none_left(p->leases)) {
                fail_pending(L, p, ev, &nev, "no resource left");
                continue;
            }
            double next = lease_next_revival(p->leases);
            if (next >= 0 && (ms < 0 || next * 1000.0 < ms)) {
                ms = (int)(next * 1000.0) + 1;
                capped = 1;
            }
        }
        int rc = poll(fds, (nfds_t)nfds, nev > 0 ? 0 : ms);
        if (rc < 0 && errno != EINTR) luaL_error(L, "pool: poll: %s", strerror(errno));
        if (rc == 0 && capped && nev == 0) continue;
        if (rc <= 0) break;
        for (int k = 0; k < nfds; k++) {
            if (!fds[k].revents) continue;
            worker *w = &p->workers[owner[k]];
            /* A slot whose worker ended in this round has a new worker (or none), whose
               fds may reuse the numbers polled: those events are not its. */
            if (w->state == W_EMPTY || w->gen != gen[k]) continue;
            if (fds[k].fd == w->task_fd) {
                if (fds[k].revents & POLLOUT) worker_flush(w);
                continue;
            }
            int ended = fds[k].fd == w->pidfd;
            if (!ended && worker_read(L, p, w, ev, &nev) == 0) ended = 1;
            if (ended) worker_ended(L, p, owner[k], ev, &nev);
        }
        if (nev > 0 || p->broken) break;
    }
    pool_dispatch(p);
    return nev;
}

static void pool_release(pool *p);

/* ---------- Lua bindings ---------- */

/* pool_new{ workers, init, init_args, max_tasks, task_retries } -> core pool, with every
   worker's init done; raises with the init error (traceback included) when one fails. */
static int pool_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    /* forage.pool (pool.lua) has checked the user's options: these guard the core itself. */
    lua_Integer n = args_opt_integer(L, 1, "forage.pool", "workers", 0, 1, MAX_WORKERS);
    lua_Integer max_tasks = args_opt_integer(L, 1, "forage.pool", "max_tasks", 0, 0, LUA_MAXINTEGER);
    lua_Integer retries = args_opt_integer(L, 1, "forage.pool", "task_retries", 1, 0, 1000);
    lua_settop(L, 1);

    pool *p = lua_newuserdatauv(L, sizeof *p, 2);   /* 2 */
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, POOL_TYPE);
    worker_prepare(L, 1);
    if (lua_getfield(L, 1, "leases") != LUA_TNIL) {
        p->leases = lease_check(L, -1);
        if (lease_slots(p->leases) != n) return luaL_error(L, "lease table has %d slots for %d workers",
                                                          (int)lease_slots(p->leases), (int)n);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "init");
    p->has_init = !lua_isnil(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, 2, 1);
    lua_replace(L, 1);           /* the pool is at 1, as worker_main expects */
    lua_settop(L, 1);
    p->owner = current_pid();
    p->max_tasks = max_tasks;
    p->task_retries = (int)retries;
    p->nworkers = (int)n;
    p->slots = mmap(NULL, sizeof *p->slots * (size_t)n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->slots == MAP_FAILED) {
        p->slots = NULL;
        return luaL_error(L, "cannot map pool slots: %s", strerror(errno));
    }
    p->workers = calloc((size_t)n, sizeof *p->workers);
    p->poll.fds = calloc((size_t)n * 3, sizeof *p->poll.fds);
    p->poll.owner = calloc((size_t)n * 3, sizeof *p->poll.owner);
    p->poll.gen = calloc((size_t)n * 3, sizeof *p->poll.gen);
    if (!p->workers || !p->poll.fds || !p->poll.owner || !p->poll.gen) {
        if (!p->workers) {   /* pool_release frees the rest once workers is set */
            free(p->poll.fds);
            free(p->poll.owner);
            free(p->poll.gen);
            p->poll.fds = NULL;
            p->poll.owner = NULL;
            p->poll.gen = NULL;
        }
        return luaL_error(L, "not enough memory");
    }
    for (int i = 0; i < n; i++) {
        worker *w = &p->workers[i];
        w->pidfd = w->task_fd = w->result_fd = -1;
    }
    ignore_sigpipe();
    for (int i = 0; i < n; i++)
        if (worker_spawn(L, p, i) != 0) return luaL_error(L, "cannot start worker: %s", strerror(errno));
    /* With an init, wait until every worker is ready or one failed (its error is the
       pool's); without one, nothing can fail there and the workers start meanwhile. */
    lua_newtable(L);
    while (p->has_init && !p->broken) {
        int ready = 0;
        for (int i = 0; i < n; i++) ready += p->workers[i].state == W_READY;
        if (ready == n) break;
        pool_wait(L, p, 1.0, 2);
    }
    if (p->broken) {
        lua_pushstring(L, p->broken_message ? p->broken_message : "worker init failed");
        pool_release(p);
        return lua_error(L);
    }
    lua_settop(L, 1);
    return 1;
}

/* Raises the formatted message (lua_pushfstring's formats) located at call level `level`
   (luaL_where's numbering: 1 is the Lua function that called this binding), so that an
   item that cannot travel blames the user's line rather than forage's own Lua. */
static int raise_at(lua_State *L, int level, const char *fmt, ...) {
    va_list ap;
    luaL_where(L, level);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* P:submit(fn_blob, star, items, i, j, root [, offset [, all [, level]]]) -> task id.
   Encodes items[i..j] as one task. root names the items in errors: root[offset + k - i],
   or root itself when offset is nil. With all (star implied), each result is the list of
   every value the function returned. Errors are raised at call level `level` (1: the
   caller). */
static int pool_submit(lua_State *L) {
    pool *p = check_pool(L);
    size_t blen;
    const char *blob = luaL_checklstring(L, 2, &blen);
    int all = lua_toboolean(L, 9);
    int level = (int)luaL_optinteger(L, 10, 1);
    int star = lua_toboolean(L, 3) || all;
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer i = luaL_checkinteger(L, 5), j = luaL_checkinteger(L, 6);
    const char *root = luaL_optstring(L, 7, "items");
    int has_offset = !lua_isnoneornil(L, 8);
    lua_Integer offset = luaL_optinteger(L, 8, 0);
    if (p->shut) return raise_at(L, level, "pool is closed");
    if (j < i || j - i >= 0x7fffffff) return raise_at(L, level, "bad item range %d..%d", (int)i, (int)j);

    /* The items travel as one list: one encode here, one decode in the worker. */
    lua_Integer count = j - i + 1;
    for (lua_Integer k = i; star && k <= j; k++) {
        if (lua_geti(L, 4, k) != LUA_TTABLE)
            return raise_at(L, level, "%s[%d]: arguments must be a table (got %s)", root, (int)(offset + k - i),
                              luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    buf *b = &p->scratch;   /* owned by the pool: an error raised mid-encode leaks nothing */
    buf_reset(b);
    uint64_t id = ++p->next_task;
    /* fn and seq are set when the task is sent (proto_task_set_fn, proto_task_set_seq). */
    task_header th = {id, 0, (uint8_t)((star ? TASK_STAR : 0) | (all ? TASK_ALL_VALUES : 0)), (uint32_t)count, 0};
    size_t at;
    char err[300], name[200];
    if (proto_begin(b, MSG_TASK, &at) != 0 || proto_put_task_header(b, &th) != 0)
        return raise_at(L, level, "not enough memory");
    /* No message from the list encoder (its path of a refused value does not name the item
       it is in); on failure each item is encoded alone, which names it. */
    if (wire_encode_list(L, 4, i, j, b, WIRE_CODE, root, NULL, 0) != 0) {
        /* Only now are the items' names worth formatting: find the one that cannot travel. */
        for (lua_Integer k = 1; k <= count; k++) {
            if (has_offset) snprintf(name, sizeof name, "%s[%lld]", root, (long long)(offset + k - 1));
            else snprintf(name, sizeof name, "%s", root);
            lua_geti(L, 4, i + k - 1);
            if (wire_encode(L, -1, b, WIRE_CODE, name, err, sizeof err) != 0) break;
            lua_pop(L, 1);
        }
        return raise_at(L, level, "%s", err);
    }
    if (proto_end(b, at) != 0) return raise_at(L, level, "task too large to send (%I bytes)", (lua_Integer)b->len);
    /* The same function as last time (the same string object): no need to hash it. */
    func_entry *f = p->last_fn;
    if (f == NULL || p->last_blob != blob) {
        f = func_intern(p, blob, blen);
        if (!f) return raise_at(L, level, "not enough memory");
        p->last_fn = f;
        p->last_blob = blob;
        lua_pushvalue(L, 2);
        lua_setiuservalue(L, 1, 2);
    }
    task *t = malloc(sizeof *t + b->len);
    if (!t) return raise_at(L, level, "not enough memory");
    f->refs++;
    proto_task_set_fn(b->data + at, f->id);
    memset(t, 0, sizeof *t);
    t->id = id;
    t->fn = f;
    t->frame = (char *)(t + 1);
    t->len = b->len;
    memcpy(t->frame, b->data, b->len);
    if (b->cap > (1u << 20)) buf_free(b);
    list_push(&p->pending, t);
    /* Start idle workers on it now, while the caller encodes more; otherwise let tasks
       gather so that one write carries many. */
    if (p->pending.n >= 64 || pool_has_idle(p)) pool_dispatch(p);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

/* P:wait(timeout, ev) -> number of values put in ev: (id, kind, value) per finished task,
   kind "ok" (value: list of results), "error" or "lost" (value: error table). Dispatches. */
static int pool_wait_events(lua_State *L) {
    pool *p = check_pool(L);
    double timeout = luaL_optnumber(L, 2, -1);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    int nev = pool_wait(L, p, timeout, 3);
    if (p->broken) {
        lua_pushstring(L, p->broken_message ? p->broken_message : "a worker failed to start");
        lua_setfield(L, 3, "broken");
    }
    lua_pushinteger(L, nev);
    return 1;
}

/* P:counts() -> pending (not yet given to a worker), in flight, live workers. */
static int pool_counts(lua_State *L) {
    pool *p = check_pool(L);
    size_t inflight = 0;
    int live = 0;
    for (int i = 0; i < p->nworkers; i++) {
        inflight += p->workers[i].inflight.n;
        live += p->workers[i].state != W_EMPTY;
    }
    lua_pushinteger(L, (lua_Integer)p->pending.n);
    lua_pushinteger(L, (lua_Integer)inflight);
    lua_pushinteger(L, live);
    return 3;
}

/* P:pids() -> list of worker pids (0 for an empty slot). */
static int pool_pids(lua_State *L) {
    pool *p = check_pool(L);
    lua_createtable(L, p->nworkers, 0);
    for (int i = 0; i < p->nworkers; i++) {
        lua_pushinteger(L, p->workers[i].state == W_EMPTY ? 0 : p->workers[i].pid);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* P:stats() -> { respawns, taken_back, task_seconds, depth }. */
static int pool_stats(lua_State *L) {
    pool *p = check_pool(L);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)p->respawns);
    lua_setfield(L, -2, "respawns");
    lua_pushinteger(L, (lua_Integer)p->taken_back);
    lua_setfield(L, -2, "taken_back");
    lua_pushnumber(L, p->task_seconds);
    lua_setfield(L, -2, "task_seconds");
    lua_pushinteger(L, (lua_Integer)pool_depth(p));
    lua_setfield(L, -2, "depth");
    return 1;
}

static void free_tasks(pool *p, task_list *l) {
    task *t;
    while ((t = list_pop(l)) != NULL) task_free(p, t);
}

/* Ends every worker: politely (close their pipes, wait up to grace seconds), then SIGKILL. */
static void pool_stop(pool *p, int polite, double grace) {
    p->shut = 1;
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        if (w->state == W_EMPTY) continue;
        close_fd(&w->task_fd);
        if (!polite) kill(w->pid, SIGKILL);
    }
    double deadline = now_seconds() + grace;
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        if (w->state == W_EMPTY) continue;
        int status;
        double left = deadline - now_seconds();
        if (reap_child(w->pid, w->pidfd, left > 0 ? left : 0, &status) != 1) {
            kill(w->pid, SIGKILL);
            reap_child(w->pid, w->pidfd, -1, &status);
        }
        close_fd(&w->result_fd);
        close_fd(&w->pidfd);
        w->state = W_EMPTY;
        free_tasks(p, &w->inflight);
    }
    free_tasks(p, &p->pending);
}

/* Releases everything; safe to call twice and in any process (a child only unmaps). */
static void pool_release(pool *p) {
    if (p->workers == NULL) return;
    if (p->owner == current_pid()) {
        pool_stop(p, 0, 0);
        for (int i = 0; i < p->nworkers; i++) {
            frame_reader_free(&p->workers[i].in);
            buf_free(&p->workers[i].out);
        }
        for (size_t b = 0; b < p->nbuckets; b++) {
            func_entry *f = p->buckets[b];
            while (f) {
                func_entry *next = f->next;
                func_free(f);
                f = next;
            }
        }
        free(p->buckets);
        free(p->broken_message);
        buf_free(&p->scratch);
        free(p->poll.fds);
        free(p->poll.owner);
        free(p->poll.gen);
        free(p->workers);
    }
    if (p->slots) munmap(p->slots, sizeof *p->slots * (size_t)p->nworkers);
    p->slots = NULL;
    p->buckets = NULL;
    p->workers = NULL;
}

/* P:shutdown([grace = 5]): workers finish what they hold and exit; those that do not
   within grace seconds are killed. Tasks not finished are dropped. */
static int pool_shutdown(lua_State *L) {
    pool *p = check_pool(L);
    double grace = luaL_optnumber(L, 2, 5);
    pool_stop(p, 1, grace);
    return 0;
}

/* P:terminate(), __gc, __close: kill the workers now and free everything. */
static int pool_terminate(lua_State *L) {
    pool *p = luaL_checkudata(L, 1, POOL_TYPE);
    pool_release(p);
    return 0;
}

void forage_open_pool(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"submit", pool_submit}, {"wait", pool_wait_events}, {"counts", pool_counts},
        {"pids", pool_pids}, {"stats", pool_stats}, {"shutdown", pool_shutdown},
        {"terminate", pool_terminate}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", pool_terminate}, {"__close", pool_terminate}, {NULL, NULL},
    };
    type_register(L, POOL_TYPE, methods, meta, 0);
    lua_pushcfunction(L, pool_new);
    lua_setfield(L, -2, "pool_core");
}
