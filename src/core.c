/* forage.core: the private C module. Each concern lives in its own file and adds its
   functions to this table; lua/forage/init.lua is the public face over it. */
#include "core.h"

#include <stdio.h>

#include "fixture.h"
#include "lauxlib.h"
#include "lua.h"
#include "wire.h"

int luaopen_forage_core(lua_State *L) {
    luaL_checkversion(L);
    lua_newtable(L);
    forage_open_wire(L);
    forage_open_proc(L);
    forage_open_sys(L);
    forage_open_pipe(L);
    forage_open_socket(L);
    forage_open_pool(L);
    forage_open_worker(L);
    forage_open_queue(L);
    forage_open_sync(L);
    forage_open_value(L);
    forage_open_set(L);
    forage_open_dict(L);
    forage_open_lease(L);
    forage_open_pause(L);
    forage_open_frontier(L);
    forage_open_file(L);
    forage_open_signals(L);
    forage_open_digest(L);
    forage_open_hmac(L);
    forage_open_fixture_site(L);
    forage_open_fixture_proxy(L);
    lua_pushinteger(L, WIRE_VERSION);
    lua_setfield(L, -2, "wire_version");
    return 1;
}
