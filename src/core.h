/* Declarations shared by the files of forage.core. */
#ifndef FORAGE_CORE_H
#define FORAGE_CORE_H

#include "lua.h"

int luaopen_forage_core(lua_State *L);

/* Each adds its functions and types to the table on top of the stack. */
void forage_open_proc(lua_State *L);
void forage_open_sys(lua_State *L);
void forage_open_pipe(lua_State *L);
void forage_open_pool(lua_State *L);

#endif
