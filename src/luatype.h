/* Userdata types, one way: registering a type's metatable and checking its objects
   (in the spirit of cqueues' cqs_newmetatable / cqs_checkudata). */
#ifndef FORAGE_LUATYPE_H
#define FORAGE_LUATYPE_H

#include "lauxlib.h"
#include "lua.h"

/* Registers the metatable `name` (luaL_newmetatable): meta's functions as metamethods,
   and methods (may be NULL) as its __index table. With fast set, every one of those
   functions gets the metatable itself as upvalue 1, for type_check_fast. Leaves the stack
   as it was. */
void type_register(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta, int fast);

/* The userdata at i when it is of type name, else raises "bad argument #i to 'f' (name
   expected, got T)". For functions registered with fast: comparing the metatable with
   upvalue 1 is much cheaper than luaL_checkudata's registry lookup, on hot paths. */
void *type_check_fast(lua_State *L, int i, const char *name);

/* Raises "attempt to use a closed <name>". */
int type_closed_error(lua_State *L, const char *name);

#endif
