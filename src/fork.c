#include "fork.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "frame.h"
#include "lauxlib.h"

/* The registry is per process: a child that forks again only knows its own pools. */
static int *parent_fds;
static size_t parent_fds_len, parent_fds_cap;

/* Kept sorted, so that a child closes runs of them with one close_range each. */
int fork_register_fd(int fd) {
    if (parent_fds_len == parent_fds_cap) {
        size_t cap = parent_fds_cap ? parent_fds_cap * 2 : 64;
        int *p = realloc(parent_fds, cap * sizeof *p);
        if (p == NULL) return -1;
        parent_fds = p;
        parent_fds_cap = cap;
    }
    size_t i = parent_fds_len++;
    while (i > 0 && parent_fds[i - 1] > fd) {
        parent_fds[i] = parent_fds[i - 1];
        i--;
    }
    parent_fds[i] = fd;
    return 0;
}

void fork_unregister_fd(int fd) {
    for (size_t i = 0; i < parent_fds_len; i++) {
        if (parent_fds[i] == fd) {
            memmove(parent_fds + i, parent_fds + i + 1, (parent_fds_len - i - 1) * sizeof *parent_fds);
            if (--parent_fds_len == 0) {
                /* Nothing registered: give the memory back (the module may be unloaded). */
                free(parent_fds);
                parent_fds = NULL;
                parent_fds_cap = 0;
            }
            return;
        }
    }
}

/* Closes the registered fds in a new child. */
static void close_parent_fds(void) {
    size_t i = 0;
    while (i < parent_fds_len) {
        size_t j = i;
        while (j + 1 < parent_fds_len && parent_fds[j + 1] == parent_fds[j] + 1) j++;
        if (close_range((unsigned)parent_fds[i], (unsigned)parent_fds[j], 0) != 0)
            for (size_t k = i; k <= j; k++) close(parent_fds[k]);
        i = j + 1;
    }
    parent_fds_len = 0;
}

static pid_t cached_pid;

static void forget_pid(void) { cached_pid = 0; }

pid_t current_pid(void) {
    if (cached_pid == 0) {
        static int registered;
        if (!registered) registered = pthread_atfork(NULL, NULL, forget_pid) == 0;
        cached_pid = getpid();
    }
    return cached_pid;
}

pid_t fork_child(int *pidfd) {
    fflush(NULL);
    pid_t pid = fork();
    *pidfd = -1;
    if (pid > 0) *pidfd = pidfd_open(pid, 0);
    if (pid == 0) close_parent_fds();
    return pid;
}

void child_exit(int code) {
    fflush(NULL);
    _exit(code);
}

/* os.exit([code [, close]]) in a forked child: close is ignored (the parent's state is
   not this process's to tear down). */
static int child_os_exit(lua_State *L) {
    int code;
    if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
    else code = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
    child_exit(code);
}

void child_own_os_exit(lua_State *L) {
    if (lua_getglobal(L, "os") == LUA_TTABLE) {
        lua_pushcfunction(L, child_os_exit);
        lua_setfield(L, -2, "exit");
    }
    lua_pop(L, 1);
}

int traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int status_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -1;
}

void ignore_sigpipe(void) {
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction ign = {0};
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

int reap_child(pid_t pid, int pidfd, double timeout, int *status) {
    double deadline = now_seconds() + (timeout < 0 ? 0 : timeout);
    double nap = 0.0005;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 1;
        if (r < 0 && errno != EINTR) return -1;
        if (r == 0) {
            double left = deadline - now_seconds();
            if (timeout >= 0 && left <= 0) return 0;
            if (pidfd >= 0) {
                if (fd_wait(pidfd, POLLIN, timeout < 0 ? -1 : left) < 0) return -1;
            } else {
                /* No pidfd: poll the child with a growing nap. */
                double d = timeout >= 0 && left < nap ? left : nap;
                struct timespec ts = seconds_to_timespec(d);
                nanosleep(&ts, NULL);
                if (nap < 0.05) nap *= 2;
            }
        }
    }
}
