/* Declarations shared by the files of forage.core. */
#ifndef FORAGE_CORE_H
#define FORAGE_CORE_H

#include "lua.h"

int luaopen_forage_core(lua_State *L);

/* Each adds its functions and types to the table on top of the stack. */
void forage_open_proc(lua_State *L);
void forage_open_sys(lua_State *L);
void forage_open_pipe(lua_State *L);
void forage_open_socket(lua_State *L); /* socket.c: listen, connect (forage.Listener) */
void forage_open_pool(lua_State *L);
void forage_open_worker(lua_State *L); /* worker.c: what a task knows of its worker */
void forage_open_queue(lua_State *L);   /* queue.c: forage.queue */
void forage_open_sync(lua_State *L);    /* sync.c: lock, rlock, semaphores, event, condition, barrier */
void forage_open_value(lua_State *L);   /* value.c: forage.value, forage.array */
void forage_open_set(lua_State *L);     /* set.c: forage.set */
void forage_open_dict(lua_State *L);    /* dict.c: forage.dict */
void forage_open_lease(lua_State *L);   /* lease.c: the sticky resource table */
void forage_open_pause(lua_State *L);   /* pause.c: pause points for the specs */
void forage_open_frontier(lua_State *L); /* frontier.c: the crawl's queue and seen set */
void forage_open_file(lua_State *L);    /* file.c: lock_file, truncate, fsync, fsync_dir */
void forage_open_signals(lua_State *L); /* signals.c: SIGINT and SIGTERM counted, for a graceful stop */
void forage_open_digest(lua_State *L);  /* digest.c: a stable hash of bytes */
void forage_open_hmac(lua_State *L);    /* hmac.c: sha256, hmac_sha256, random_bytes, secret_equal */
/* The crawl layer's bindings, in their own module forage.web (web.c): */
void forage_open_url(lua_State *L);     /* url.c: forage.url (curl's URL API) */
void forage_open_html(lua_State *L);    /* html.c: forage.html (libxml2) */
void forage_open_http(lua_State *L);    /* http.c: forage.http (libcurl) */

#endif
