/* core.digest(bytes) -> 32 hex digits: SipHash-2-4-128 of bytes under a fixed key. A stable
   name for some bytes (a crawl state records its spider's code by it, to refuse another
   spider's), the same in every process and every run; not a defence against someone who
   crafts collisions (nothing here needs one). */
#include "core.h"
#include "hash.h"
#include "lauxlib.h"

static int digest(lua_State *L) {
    static const uint64_t key[2] = {0x666f726167652e64ULL, 0x6967657374000001ULL};   /* "forage.digest" */
    size_t len;
    const char *bytes = luaL_checklstring(L, 1, &len);
    uint64_t h[2];
    siphash128(key, bytes, len, h);
    char hex[33];
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        unsigned byte = (unsigned)(h[i / 8] >> (8 * (i % 8))) & 0xffu;
        hex[2 * i] = digits[byte >> 4];
        hex[2 * i + 1] = digits[byte & 0xfu];
    }
    lua_pushlstring(L, hex, 32);
    return 1;
}

void forage_open_digest(lua_State *L) {
    static const luaL_Reg functions[] = {{"digest", digest}, {NULL, NULL}};
    luaL_setfuncs(L, functions, 0);
}
