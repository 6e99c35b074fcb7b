/* libFuzzer target for forage.url, through the Lua bindings so the curl handles' boxes and
   their __gc are exercised too. Arbitrary bytes go to parse, canonical and fingerprint, and
   split in two to join. None may raise; a canonical form must parse, and canonicalising it
   again must give it back unchanged (the canonical form is a fixed point). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

static lua_State *L;

/* Returns nothing; prints what went wrong and aborts, which libFuzzer reports as a crash. */
static void fail(const char *what, const char *detail) {
    fprintf(stderr, "url_fuzz: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* Returns nothing; creates the Lua state and the url table (global "url") once per run. */
static void setup(void) {
    L = luaL_newstate();
    if (L == NULL) fail("setup", "no Lua state");
    luaL_openlibs(L);
    lua_newtable(L);
    forage_open_url(L);
    lua_getfield(L, -1, "url");
    lua_setglobal(L, "url");
    lua_settop(L, 0);
}

/* Returns the number of results of url.<name>(args...) with nargs arguments on the stack;
   aborts when the call raises. */
static int call(const char *name, int nargs) {
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "url");
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) fail(name, lua_tostring(L, -1));
    return lua_gettop(L) - base;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *bytes = (const char *)data;
    if (L == NULL) setup();
    lua_settop(L, 0);

    lua_pushlstring(L, bytes, size);
    call("parse", 1);
    lua_settop(L, 0);

    lua_pushlstring(L, bytes, size);
    call("fingerprint", 1);
    if (lua_type(L, 1) == LUA_TSTRING && lua_rawlen(L, 1) != 16) fail("fingerprint", "not 16 bytes");
    lua_settop(L, 0);

    lua_pushlstring(L, bytes, size);
    call("canonical", 1);
    if (lua_type(L, 1) == LUA_TSTRING) {
        size_t first_len;
        const char *first = lua_tolstring(L, 1, &first_len);
        lua_pushvalue(L, 1);
        call("parse", 1);
        if (!lua_istable(L, 2)) fail("a canonical form does not parse", first);
        lua_settop(L, 1);
        lua_pushvalue(L, 1);
        call("canonical", 1);
        size_t second_len;
        const char *second = lua_tolstring(L, 2, &second_len);
        if (second == NULL) fail("a canonical form is not canonicalisable", first);
        if (second_len != first_len || memcmp(first, second, first_len) != 0) {
            fprintf(stderr, "first:  %s\nsecond: %s\n", first, second);
            fail("canonical is not a fixed point", first);
        }
    }
    lua_settop(L, 0);

    size_t half = size / 2;
    lua_pushlstring(L, bytes, half);
    lua_pushlstring(L, bytes + half, size - half);
    call("join", 2);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
