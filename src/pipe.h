/* forage.Connection over any connected stream fd (pipe.c), for the files that make
   connections of their own (socket.c). */
#ifndef FORAGE_PIPE_H
#define FORAGE_PIPE_H

#include "lua.h"

typedef struct connection connection;

/* Pushes a new, closed, duplex forage.Connection (raises only on memory errors, before any
   fd is at stake): open it with connection_open once the fd exists. */
connection *connection_push(lua_State *L);

/* Gives c the connected stream fd (a blocking, close-on-exec socket): closed with c. */
void connection_open(connection *c, int fd);

#endif
