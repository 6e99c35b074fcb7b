/* Forking a Lua process safely: what the parent flushes first, how a child leaves. */
#ifndef FORAGE_FORK_H
#define FORAGE_FORK_H

#include <sys/types.h>

#include "lua.h"

/* Flushes stdio (so no buffered output is printed twice) and forks.
   In the parent, *pidfd is a pidfd for the child (or -1 where the kernel has none).
   Returns what fork returns. */
pid_t fork_child(int *pidfd);

/* Parent-side file descriptors (a pool's ends of its worker pipes) that no forked child
   may keep open: a sibling holding them would hide a worker's end of stream.
   fork_child closes them all in the child. Returns 0, or -1 when memory runs out. */
int fork_register_fd(int fd);
void fork_unregister_fd(int fd);

/* This process's id, without a system call (kept current across forks). */
pid_t current_pid(void);

/* Leaves a child: flushes only what the child wrote, then _exit (no atexit handlers,
   no Lua finalisers: nothing the parent owns is torn down here). */
_Noreturn void child_exit(int code);

/* Makes os.exit in this (forked) Lua state leave through child_exit, with os.exit's
   codes (true, false or an integer; default true): a task or process that calls os.exit
   runs none of the atexit handlers it inherited from its parent (a library's cleanup, a
   sanitizer's leak scan of the whole inherited heap). Call it in the child after fork. */
void child_own_os_exit(lua_State *L);

/* A lua_pcall message handler: the message with a traceback appended. */
int traceback_handler(lua_State *L);

/* The exit code of a waitpid status: the code, or -N for a death by signal N. */
int status_code(int status);

/* Ignores SIGPIPE when it still has its default action, so that writing to a dead
   peer is an EPIPE error instead of the death of the process (as Python does). */
void ignore_sigpipe(void);

/* Reaps pid, waiting at most timeout seconds (forever when < 0) using pidfd when >= 0.
   Returns 1 and the status in *status, 0 on timeout, -1 on error. */
int reap_child(pid_t pid, int pidfd, double timeout, int *status);

#endif
