/* libFuzzer target for forage.html (src/html.c through its Lua API): arbitrary bytes are
   parsed, queried with the XPath a crawler runs (elements, attributes, text, numbers),
   walked node by node (text, attr, html, relative xpath), their links resolved, and the
   document closed while nodes are still referenced. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char run_source[] =
    "local html = ...\n"
    "return function(body)\n"
    "  local doc, err, kind = html.parse(body, 'http://h.example/a/b?c')\n"
    "  if not doc then assert(kind == 'malformed' and err:find('^html: '), err) return end\n"
    "  local nodes = doc:xpath('//*')\n"
    "  for i = 1, math.min(#nodes, 64) do\n"
    "    local n = nodes[i]\n"
    "    local _ = n.tag, n:text(), n:attr('class'), n:html(), n:xpath('@*|text()|..')\n"
    "  end\n"
    "  doc:xpath('//a/@href')\n"
    "  doc:xpath(\"//*[contains(concat(' ', normalize-space(@class), ' '), ' name ')]//text()\")\n"
    "  doc:xpath('count(//p) + string-length(string(//title))')\n"
    "  doc:xpath('//comment()|//processing-instruction()|/node()|//namespace::*')\n"
    "  doc:links()\n"
    "  doc:close()\n"
    "  if nodes[1] then assert(not pcall(nodes[1].text, nodes[1])) end\n"
    "end\n";

static lua_State *state;

/* The Lua function that runs one input, made once. */
static lua_State *fuzz_state(void) {
    if (state != NULL) return state;
    state = luaL_newstate();
    luaL_openlibs(state);
    if (luaL_loadstring(state, run_source) != LUA_OK) abort();
    lua_newtable(state);
    forage_open_html(state);
    lua_getfield(state, -1, "html");
    lua_remove(state, -2);
    lua_call(state, 1, 1);
    return state;
}

/* 0: every input is acceptable; a Lua error is a bug (html.parse never raises on bytes; it
   returns nil, message, "malformed" only when libxml2 gives up before the end). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    lua_State *L = fuzz_state();
    lua_pushvalue(L, -1);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "html_fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
