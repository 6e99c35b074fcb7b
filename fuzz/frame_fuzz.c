/* libFuzzer target for what a manager server (issue 11) does with the bytes of an untrusted
   client. The input's first byte picks the connection's max_frame (16 << (b % 12): 16 bytes to
   32 KiB), the second the size of the chunks the client's bytes arrive in (1..64); the rest is
   the byte stream the client sends. Each chunk goes through a socketpair and frame_fill, the real
   read path; after each one, every complete frame is taken with frame_next_limited as pipe.c's
   recv does. A frame over the limit or a corrupt stream ends the input (the server closes that
   connection); a frame is decoded in WIRE_DATA mode and, when it decodes, handed to the server's
   validator, forage.manager.protocol's check_request, which must answer the request or
   nil, message and never raise: a raise would be a server crash, so it aborts here.
   The system's liblua is not instrumented: the validator's line-to-line steps are counted in
   libFuzzer's extra counters, so inputs that reach new paths of check_request are kept. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "frame.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "wire.h"

#ifndef PROTOCOL_LUA
#error "build with -DPROTOCOL_LUA='\"/path/to/lua/forage/manager/protocol.lua\"' (fuzz/Makefile does)"
#endif

/* libFuzzer reads this section as coverage, next to the compiler's own counters. */
#define LINE_COUNTERS 4096
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t line_counters[LINE_COUNTERS];
static int previous_line;

static lua_State *L;
static int check_request_ref;
static int client_fd = -1;   /* the client's end of the socketpair: the input is written here */
static int server_fd = -1;   /* the server's end: frame_fill reads it */

/* Returns nothing; prints what went wrong and aborts, which libFuzzer reports as a crash. */
static void fail(const char *what, const char *detail) {
    fprintf(stderr, "frame_fuzz: %s: %s\n", what, detail ? detail : "");
    abort();
}

/* Message handler: the error with the validator's stack, for the crash report. */
static int traceback(lua_State *thread) {
    const char *message = lua_tostring(thread, 1);
    luaL_traceback(thread, thread, message ? message : "(error object is not a string)", 1);
    return 1;
}

/* __index of the forage.core stand-in: what the fuzzer does not link raises, by name. */
static int core_missing(lua_State *thread) {
    return luaL_error(thread, "forage.core.%s is not in frame_fuzz's stand-in for forage.core",
                      luaL_tolstring(thread, 2, NULL));
}

/* protocol.lua requires forage.core, the whole C core as a shared library built without the
   sanitizers. The fuzzer preloads a stand-in: the wire's encode and decode (linked here), and a
   raise for anything else, so a check_request that came to need more would abort, not pass. */
static int open_core_stand_in(lua_State *thread) {
    lua_newtable(thread);
    forage_open_wire(thread);
    lua_newtable(thread);
    lua_pushcfunction(thread, core_missing);
    lua_setfield(thread, -2, "__index");
    lua_setmetatable(thread, -2);
    return 1;
}

/* Line hook: counts the step from the previous line to this one (AFL's edges, by line). */
static void count_line(lua_State *thread, lua_Debug *ar) {
    unsigned line = (unsigned)ar->currentline;
    unsigned step = (line * 7919u) ^ (unsigned)previous_line;
    previous_line = (int)(line >> 1);
    uint8_t *counter = &line_counters[step % LINE_COUNTERS];
    if (*counter < UINT8_MAX) (*counter)++;
    (void)thread;
}

/* Returns nothing; creates the socketpair and the Lua state, with check_request in the
   registry, once for the whole run. */
static void setup(void) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fail("socketpair", strerror(errno));
    client_fd = fds[0];
    server_fd = fds[1];
    L = luaL_newstate();
    if (L == NULL) fail("setup", "no Lua state");
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open_core_stand_in);
    lua_setfield(L, -2, "forage.core");
    lua_pop(L, 1);
    if (luaL_loadfile(L, PROTOCOL_LUA) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
        fail("loading " PROTOCOL_LUA, lua_tostring(L, -1));
    if (!lua_istable(L, -1)) fail(PROTOCOL_LUA, "did not return a module table");
    lua_getfield(L, -1, "check_request");
    if (!lua_isfunction(L, -1)) fail(PROTOCOL_LUA, "has no check_request function");
    check_request_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, count_line, LUA_MASKLINE, 0);   /* set after loading: the module's own lines are no input's */
}

/* Returns nothing; the client sends n bytes and the server reads all of them into r. */
static void deliver(frame_reader *r, const char *p, size_t n) {
    if (fd_write_all(client_fd, p, n) != 0) fail("write", strerror(errno));
    size_t got = 0;
    while (got < n) {
        long rc = frame_fill(r, server_fd);
        if (rc <= 0) fail("frame_fill", rc == 0 ? "end of stream" : strerror(errno));
        got += (size_t)rc;
    }
}

/* Returns nothing; decodes one frame's payload as the server's recv does and hands what
   decodes to check_request, which must not raise. */
static void serve_frame(const char *p, size_t n) {
    char err[256];
    lua_settop(L, 0);
    if (wire_decode(L, p, n, WIRE_DATA, err, sizeof err) != 0) {
        if (lua_gettop(L) != 0) fail("a failed decode left values on the stack", err);
        return;   /* recv answers nil, message, "malformed": the connection stays usable */
    }
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_request_ref);
    lua_pushvalue(L, 1);
    previous_line = 0;
    if (lua_pcall(L, 1, 2, 2) != LUA_OK) fail("check_request raised", lua_tostring(L, -1));
    if (lua_isnil(L, -2) && lua_type(L, -1) != LUA_TSTRING) fail("check_request returned nil without a message", NULL);
    lua_settop(L, 0);
}

/* Takes every complete frame r holds. Returns 1 while the connection stays open, 0 when the
   server would close it (the next frame is over max_frame, or the stream is corrupt). */
static int serve_frames(frame_reader *r, size_t max_frame) {
    for (;;) {
        const char *p;
        size_t n, over = 0;
        int got = frame_next_limited(r, max_frame, &p, &n, &over);
        if (got == 0) return 1;
        if (got == -3 && over <= max_frame) fail("frame_next_limited", "refused a frame within the limit");
        if (got != 1) return 0;
        if (n > max_frame) fail("frame_next_limited", "passed a frame over the limit");
        serve_frame(p, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (L == NULL) setup();
    if (size < 2) return 0;
    size_t max_frame = (size_t)16 << (data[0] % 12);
    size_t chunk = 1 + (size_t)data[1] % 64;
    const char *stream = (const char *)data + 2;
    size_t left = size - 2;
    frame_reader reader = {BUF_INIT, 0};
    int open = 1;
    while (open && left > 0) {
        size_t n = left < chunk ? left : chunk;
        deliver(&reader, stream, n);
        stream += n;
        left -= n;
        open = serve_frames(&reader, max_frame);
    }
    frame_reader_free(&reader);
    lua_settop(L, 0);
    return 0;
}
