/* Userdata types, one way (see luatype.h). */
#include "luatype.h"

void type_register(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta, int fast) {
    luaL_newmetatable(L, name);
    int nup = fast ? 1 : 0;
    if (fast) lua_pushvalue(L, -1);
    luaL_setfuncs(L, meta, nup);
    if (methods != NULL) {
        lua_newtable(L);
        if (fast) lua_pushvalue(L, -2);
        luaL_setfuncs(L, methods, nup);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

void *type_check_fast(lua_State *L, int i, const char *name) {
    void *p = lua_touserdata(L, i);
    if (p != NULL && lua_getmetatable(L, i)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
        if (same) return p;
    }
    return luaL_checkudata(L, i, name);
}

int type_closed_error(lua_State *L, const char *name) {
    return luaL_error(L, "attempt to use a closed %s", name);
}
