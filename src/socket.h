/* forage.Listener (socket.c), as forage.wait (pipe.c) sees it. */
#ifndef FORAGE_SOCKET_H
#define FORAGE_SOCKET_H

#include "lua.h"

#define LISTENER_TYPE "forage.Listener"

/* The fd of the forage.Listener at idx: -1 when it is closed, -2 when idx holds no Listener. */
int listener_fd(lua_State *L, int idx);

#endif
