/* forage.web: the private C module of the crawl layer's building blocks (url.c, html.c,
   http.c), apart from forage.core so that a program that only uses pools and shared
   objects never loads libcurl and libxml2: its forks stay small and fast.
   lua/forage/init.lua loads it on the first use of forage.http, forage.html or
   forage.url. */
#include "core.h"

#include "lauxlib.h"

int luaopen_forage_web(lua_State *L);

int luaopen_forage_web(lua_State *L) {
    luaL_checkversion(L);
    lua_newtable(L);
    forage_open_url(L);
    forage_open_html(L);
    forage_open_http(L);
    return 1;
}
