/* Files: an exclusive lock naming its holder, truncation, durability. What a crawl's
   crash-safe state (its SQLite file and the files beside it) needs beyond io.open.

   The lock. core.lock_file(path) takes a classic POSIX record lock (fcntl F_SETLK, a write
   lock over the whole file) and writes the holder's pid into the file for a human to read.
   Classic record locks, not flock(2) or open file description locks (F_OFD_SETLK), because:
   - they belong to a process and are not inherited by fork: the crawl's workers, forked
     while the parent holds the lock, do not keep it alive when the parent is killed;
   - the kernel drops them when the holder dies, however it dies (SIGKILL included): a stale
     lock file never blocks the next run, and no pid in it is ever trusted;
   - F_GETLK reports the holder's pid, so "locked" can say who holds it.
   Their trap: a process holds such a lock through the file, not through the descriptor,
   and closing ANY descriptor of the file in that process releases it. So the file must not
   be opened by other means (io.open) in the process that holds the lock, and lock_file
   refuses a second lock on a file this process already holds ("locked", naming this very
   process) without opening it: a second open followed by a close would drop the first.
   The files this process holds are listed in a registry table, keyed by device and inode,
   with the holder's pid as value (a forked child inherits the table but not the locks: the
   pid tells them apart).

   After fork, a child has a copy of the lock object but not the lock. Nor does it keep the
   descriptor: it is registered with fork_register_fd, so that fork_child (forage.process,
   the pool's workers) closes it in every child. A child that kept it would hold the trap
   above: were it to take the same lock itself one day, a close of the inherited
   descriptor (its copy of the object collected) would drop the child's own lock. The
   object remembers the process that took the lock (owner): a release, __gc or __close in
   any other process closes nothing (the number may name another file there by now) and
   only marks the object released. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fork.h"
#include "lauxlib.h"
#include "luatype.h"

#define FILE_LOCK_TYPE "forage.FileLock"
#define HELD_LOCKS "forage.FileLock.held"   /* registry field: "dev:ino" -> holder pid */
#define LOCK_TRIES 10   /* F_SETLK refused, then F_GETLK finds no holder: it just let go */

typedef struct file_lock {
    int fd;         /* -1 once released */
    pid_t owner;    /* the process that took the lock */
    dev_t dev;      /* the locked file, for the registry of held locks */
    ino_t ino;
} file_lock;

/* The path argument at arg: a string without zero bytes (a NUL would cut the path short
   and name another file). */
static const char *check_path(lua_State *L, int arg) {
    size_t len;
    const char *path = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(path) == len, arg, "path contains zeros");
    return path;
}

/* Pushes the registry key of a file: "dev:ino". */
static const char *push_file_key(lua_State *L, dev_t dev, ino_t ino) {
    return lua_pushfstring(L, "%I:%I", (lua_Integer)dev, (lua_Integer)ino);
}

/* 1 when this process holds a lock_file lock on the file (dev, ino). */
static int held_here(lua_State *L, dev_t dev, ino_t ino) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, HELD_LOCKS);
    push_file_key(L, dev, ino);
    lua_rawget(L, -2);
    int held = lua_tointeger(L, -1) == (lua_Integer)getpid();
    lua_pop(L, 2);
    return held;
}

/* Records (holder > 0) or forgets (holder 0) this process's lock on the file. */
static void set_held(lua_State *L, dev_t dev, ino_t ino, pid_t holder) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, HELD_LOCKS);
    push_file_key(L, dev, ino);
    if (holder > 0) lua_pushinteger(L, holder);
    else lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* In the owner, closes the descriptor, which releases the lock; in another process, whose
   copy of the descriptor fork_child closed, only marks the object released. Idempotent. */
static void release_lock(lua_State *L, file_lock *lock) {
    if (lock->fd < 0) return;
    int fd = lock->fd;
    lock->fd = -1;
    if (lock->owner != getpid()) return;
    set_held(L, lock->dev, lock->ino, 0);
    fork_unregister_fd(fd);
    close(fd);
}

/* Takes the lock on fd. Returns 0 when taken; else -1 with errno set, and *holder the
   holder's pid when the lock is held (0 when the kernel does not say, as for a holder in
   another pid namespace), -1 for another error. */
static int take_lock(int fd, pid_t *holder) {
    for (int i = 0; i < LOCK_TRIES; i++) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        if (fcntl(fd, F_SETLK, &fl) == 0) return 0;
        if (errno == EINTR) continue;
        if (errno != EACCES && errno != EAGAIN) {
            *holder = -1;
            return -1;
        }
        struct flock probe = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        if (fcntl(fd, F_GETLK, &probe) != 0) {
            *holder = -1;
            return -1;
        }
        if (probe.l_type != F_UNLCK) {
            *holder = probe.l_pid > 0 ? probe.l_pid : 0;
            errno = EAGAIN;
            return -1;
        }
    }
    *holder = 0;   /* taken and let go, again and again: someone holds it most of the time */
    errno = EAGAIN;
    return -1;
}

/* Replaces the file's contents with "<pid>\n". Returns 0, or -1 with errno set. */
static int write_pid(int fd) {
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0) return -1;
    ssize_t written;
    do written = pwrite(fd, line, (size_t)n, 0);
    while (written < 0 && errno == EINTR);
    if (written < 0) return -1;
    if (written != n) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

static int locked_failure(lua_State *L, int path_arg, pid_t holder) {
    const char *shown = args_show(L, path_arg);
    if (holder > 0) return args_fail(L, "locked", "%s is held by process %d", shown, (int)holder);
    return args_fail(L, "locked", "%s is held by another process", shown);
}

static int io_failure(lua_State *L, const char *what, int path_arg, int err) {
    const char *shown = args_show(L, path_arg);
    return args_fail(L, "io", "cannot %s %s: %s", what, shown, strerror(err));
}

/* lock_file(path) -> a FileLock; nil, "<path> is held by process N", "locked" when another
   process (or this one, through another FileLock) holds it; nil, message, "io" when the
   file cannot be opened, created, locked or written. */
static int lock_file(lua_State *L) {
    const char *path = check_path(L, 1);
    struct stat st;
    if (stat(path, &st) == 0 && held_here(L, st.st_dev, st.st_ino)) return locked_failure(L, 1, getpid());
    file_lock *lock = lua_newuserdatauv(L, sizeof *lock, 1);
    memset(lock, 0, sizeof *lock);
    lock->fd = -1;
    luaL_setmetatable(L, FILE_LOCK_TYPE);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return io_failure(L, "open", 1, errno);
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);   /* not locked yet: closing drops nothing */
        return io_failure(L, "open", 1, err);
    }
    if (fork_register_fd(fd) != 0) {
        close(fd);
        return luaL_error(L, "not enough memory");
    }
    lock->fd = fd;
    lock->owner = getpid();
    lock->dev = st.st_dev;
    lock->ino = st.st_ino;
    pid_t holder;
    if (take_lock(fd, &holder) != 0) {
        int err = errno;
        release_lock(L, lock);
        if (holder >= 0) return locked_failure(L, 1, holder);
        return io_failure(L, "lock", 1, err);
    }
    set_held(L, lock->dev, lock->ino, lock->owner);
    if (write_pid(fd) != 0) {
        int err = errno;
        release_lock(L, lock);
        return io_failure(L, "write", 1, err);
    }
    return 1;
}

/* lock:release(), __gc, __close: lets the lock go (in the process that took it); idempotent. */
static int lock_release(lua_State *L) {
    file_lock *lock = type_check_fast(L, 1, FILE_LOCK_TYPE);
    release_lock(L, lock);
    return 0;
}

/* Fields: path (the path given to lock_file), held (true until released, and only in the
   process that took the lock), then the methods (upvalue 2). */
static int lock_index(lua_State *L) {
    file_lock *lock = type_check_fast(L, 1, FILE_LOCK_TYPE);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "path") == 0) lua_getiuservalue(L, 1, 1);
    else if (strcmp(key, "held") == 0) lua_pushboolean(L, lock->fd >= 0 && lock->owner == getpid());
    else lua_getfield(L, lua_upvalueindex(2), key);
    return 1;
}

static int lock_tostring(lua_State *L) {
    file_lock *lock = type_check_fast(L, 1, FILE_LOCK_TYPE);
    lua_getiuservalue(L, 1, 1);
    const char *shown = args_show(L, -1);
    if (lock->fd < 0) lua_pushfstring(L, "%s %s (released)", FILE_LOCK_TYPE, shown);
    else lua_pushfstring(L, "%s %s (taken by process %d)", FILE_LOCK_TYPE, shown, (int)lock->owner);
    return 1;
}

/* truncate(path, length) -> true; nil, message, "io" when the file cannot be truncated. */
static int truncate_file(lua_State *L) {
    const char *path = check_path(L, 1);
    lua_Integer length = luaL_checkinteger(L, 2);
    luaL_argcheck(L, length >= 0, 2, "length must be a non-negative integer");
    if (truncate(path, (off_t)length) != 0) return io_failure(L, "truncate", 1, errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* realpath(path) -> the canonical absolute path (symbolic links, "." and ".." resolved), or
   nil, message, "io" when it does not exist or cannot be resolved. */
static int real_path(lua_State *L) {
    const char *path = check_path(L, 1);
    char *resolved = realpath(path, NULL);
    if (resolved == NULL) return io_failure(L, "resolve", 1, errno);
    lua_pushstring(L, resolved);
    free(resolved);
    return 1;
}

/* fsync(file) -> true, once what was written to the Lua file is on the disk (stdio's
   buffer flushed, then fdatasync); nil, message, "io" when it cannot be. Raises on a
   closed file, as io's methods do. */
static int fsync_file(lua_State *L) {
    luaL_Stream *stream = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    if (stream->closef == NULL) return luaL_error(L, "attempt to use a closed file");
    if (fflush(stream->f) != 0) return args_fail(L, "io", "cannot flush file: %s", strerror(errno));
    if (fdatasync(fileno(stream->f)) != 0) return args_fail(L, "io", "cannot sync file: %s", strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

/* lock_holder(path) -> the pid of the process holding a lock_file lock on path, or nil
   when none does (or the file does not exist); never takes the lock (forage status asks
   while a crawl runs, and must not make it fail to start). nil, message, "io" when the
   file cannot be read. */
static int lock_holder(lua_State *L) {
    const char *path = check_path(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            lua_pushnil(L);
            return 1;
        }
        return io_failure(L, "stat", 1, errno);
    }
    if (held_here(L, st.st_dev, st.st_ino)) {   /* an open and close here would drop our own lock */
        lua_pushinteger(L, getpid());
        return 1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_failure(L, "open", 1, errno);
    struct flock probe = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    int rc = fcntl(fd, F_GETLK, &probe);
    int err = errno;
    close(fd);
    if (rc != 0) return io_failure(L, "probe the lock of", 1, err);
    if (probe.l_type == F_UNLCK) lua_pushnil(L);
    else lua_pushinteger(L, probe.l_pid);
    return 1;
}

/* mkdir(path) -> true once path is a directory (made with its parents, 0755, as mkdir -p);
   nil, message, "io" when it cannot be. */
static int make_directory(lua_State *L) {
    const char *path = check_path(L, 1);
    size_t len = strlen(path);
    luaL_argcheck(L, len > 0, 1, "empty path");
    char *copy = lua_newuserdatauv(L, len + 1, 0);
    memcpy(copy, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (copy[i] != '/' && copy[i] != '\0') continue;
        char saved = copy[i];
        copy[i] = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) return io_failure(L, "make directory", 1, errno);
        copy[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) return io_failure(L, "make directory", 1, errno);
    if (!S_ISDIR(st.st_mode)) return io_failure(L, "make directory", 1, ENOTDIR);
    lua_pushboolean(L, 1);
    return 1;
}

/* fsync_dir(path) -> true, once the directory's entries (a rename, a new file) are on the
   disk; nil, message, "io" when they cannot be. */
static int fsync_dir(lua_State *L) {
    const char *path = check_path(L, 1);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_failure(L, "open directory", 1, errno);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) return io_failure(L, "sync directory", 1, err);
    lua_pushboolean(L, 1);
    return 1;
}

void forage_open_file(lua_State *L) {
    static const luaL_Reg methods[] = {{"release", lock_release}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", lock_release}, {"__close", lock_release}, {"__tostring", lock_tostring}, {NULL, NULL},
    };
    type_register(L, FILE_LOCK_TYPE, methods, meta, 1);
    /* The fields path and held are computed: __index becomes a function that falls back on
       the methods table type_register made. */
    luaL_getmetatable(L, FILE_LOCK_TYPE);
    lua_pushvalue(L, -1);
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, lock_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg functions[] = {
        {"lock_file", lock_file}, {"truncate", truncate_file}, {"fsync", fsync_file},
        {"fsync_dir", fsync_dir}, {"lock_holder", lock_holder}, {"mkdir", make_directory},
        {"realpath", real_path}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
