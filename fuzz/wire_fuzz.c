/* libFuzzer target for the wire decoder. Arbitrary bytes are decoded in WIRE_DATA mode;
   whatever decodes must encode again, and that encoding must decode to a value of the
   same shape (types, integer/float subtypes, float bits, sharing and cycles). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "wire.h"

/* same(a, b): structural equality that also requires the same sharing (a bijection
   between the tables of a and of b). Tables used as keys are paired by trial. */
static const char same_source[] =
    "local mtype, pack, next, type, rawget = math.type, string.pack, next, type, rawget\n"
    "local function copy(t) local c = {} for k, v in next, t do c[k] = v end return c end\n"
    "return function(a, b)\n"
    "  local ab, ba = {}, {}\n"
    "  local same\n"
    "  local function scalar_same(x, y)\n"
    "    if mtype(x) == 'float' then return mtype(y) == 'float' and pack('<d', x) == pack('<d', y) end\n"
    "    return mtype(x) == mtype(y) and x == y\n"
    "  end\n"
    "  function same(x, y)\n"
    "    if type(x) ~= type(y) then return false end\n"
    "    if type(x) ~= 'table' then return scalar_same(x, y) end\n"
    "    if ab[x] ~= nil or ba[y] ~= nil then return ab[x] == y and ba[y] == x end\n"
    "    ab[x], ba[y] = y, x\n"
    "    local nx, ny, pending = 0, 0, {}\n"
    "    for _ in next, y do ny = ny + 1 end\n"
    "    for k, v in next, x do\n"
    "      nx = nx + 1\n"
    "      if type(k) == 'table' then pending[#pending + 1] = k\n"
    "      else\n"
    "        local w = rawget(y, k)\n"
    "        if w == nil or not same(v, w) then return false end\n"
    "      end\n"
    "    end\n"
    "    if nx ~= ny then return false end\n"
    "    for _, k in ipairs(pending) do\n"
    "      if ab[k] ~= nil then\n"
    "        local w = rawget(y, ab[k])\n"
    "        if w == nil or not same(x[k], w) then return false end\n"
    "      else\n"
    "        local found = false\n"
    "        for k2, w in next, y do\n"
    "          if type(k2) == 'table' and ba[k2] == nil then\n"
    "            local sab, sba = copy(ab), copy(ba)\n"
    "            if same(k, k2) and same(x[k], w) then found = true break end\n"
    "            ab, ba = sab, sba\n"
    "          end\n"
    "        end\n"
    "        if not found then return false end\n"
    "      end\n"
    "    end\n"
    "    return true\n"
    "  end\n"
    "  return same(a, b)\n"
    "end\n";

static lua_State *L;
static int same_ref;

/* Returns nothing; prints what went wrong and aborts, which libFuzzer reports as a crash. */
static void fail(const char *what, const char *detail) {
    fprintf(stderr, "wire_fuzz: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* Returns nothing; creates the Lua state once for the whole run. */
static void setup(void) {
    L = luaL_newstate();
    if (L == NULL) fail("setup", "no Lua state");
    luaL_openlibs(L);
    if (luaL_loadstring(L, same_source) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        fail("setup", lua_tostring(L, -1));
    same_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    buf first = BUF_INIT, second = BUF_INIT;
    if (L == NULL) setup();
    lua_settop(L, 0);
    if (wire_decode(L, (const char *)data, size, WIRE_DATA, err, sizeof err) != 0) {
        if (lua_gettop(L) != 0) fail("failed decode left values on the stack", err);
        return 0;
    }
    if (lua_gettop(L) != 1) fail("decode pushed other than one value", NULL);
    if (wire_encode(L, 1, &first, WIRE_DATA, "value", err, sizeof err) != 0) fail("re-encode", err);
    if (wire_decode(L, first.data, first.len, WIRE_DATA, err, sizeof err) != 0) fail("re-decode", err);
    if (wire_encode(L, 2, &second, WIRE_DATA, "value", err, sizeof err) != 0) fail("second encode", err);
    lua_rawgeti(L, LUA_REGISTRYINDEX, same_ref);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) fail("same()", lua_tostring(L, -1));
    if (!lua_toboolean(L, -1)) fail("decoded value changed shape across encode/decode", NULL);
    buf_free(&first);
    buf_free(&second);
    lua_settop(L, 0);
    return 0;
}
