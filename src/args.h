/* One rule for arguments, options tables, timeouts and expected failures, used by every
   binding of forage.core and forage.web (docs/conventions.md is the user's side of it).

   - Misuse raises, in Lua's own words, at the caller's line: a wrong type
     ("bad argument #1 to 'parse' (string expected, got number)"), an unknown option
     ("forage.http.get: unknown option 'proxies' (known: ...)"), an impossible value
     ("forage.queue: option 'bytes' must be an integer from 4096 to ..., got 12").
   - An expected outcome (timeout, closed, full, empty, a failed fetch, a malformed URL
     string) returns nil, message, kind: luaL_fileresult's shape, with a short kind
     string in place of errno ("timeout", "closed", "proxy", ...).
   - A timeout is nil or math.huge (wait forever), or a number of seconds >= 0 (0: do not
     wait); a negative number or NaN raises. Anything over ARGS_FOREVER waits forever. */
#ifndef FORAGE_ARGS_H
#define FORAGE_ARGS_H

#include <stddef.h>

#include "lua.h"

#define ARGS_FOREVER 1e9   /* seconds (31 years): longer timeouts mean "no timeout" */

/* Raises unless every key of the table at idx is a string in names (NULL-terminated):
   "<fname>: unknown option 'key' (known: a, b, c)". fname names the function as the
   user calls it ("forage.http.get"). A non-table at idx is left to the caller. */
void args_check_options(lua_State *L, int idx, const char *fname, const char *const names[]);

/* The option key of the table at idx, checked, or def when absent (nil). Each raises
   "<fname>: option 'key' must be ..., got <value>" for a value of the wrong type or out of
   the range [min, max] (NaN is out of every range). */
lua_Integer args_opt_integer(lua_State *L, int idx, const char *fname, const char *key, lua_Integer def,
                             lua_Integer min, lua_Integer max);
double args_opt_number(lua_State *L, int idx, const char *fname, const char *key, double def, double min,
                       double max);
int args_opt_boolean(lua_State *L, int idx, const char *fname, const char *key, int def);
/* The string stays valid while the options table holds it. *len may be NULL. */
const char *args_opt_string(lua_State *L, int idx, const char *fname, const char *key, const char *def,
                            size_t *len);
/* A timeout option: -1 for forever (absent, nil, math.huge, over ARGS_FOREVER). */
double args_opt_timeout(lua_State *L, int idx, const char *fname, const char *key);

/* The timeout argument at index arg: -1 for forever (none, nil, math.huge, over
   ARGS_FOREVER), else seconds >= 0. Raises "bad argument #arg to 'f' (timeout must be nil
   or a non-negative number of seconds, got -1)". */
double args_timeout(lua_State *L, int arg);

/* Pushes nil, the formatted message and kind; returns 3 (for `return args_fail(...)`). */
int args_fail(lua_State *L, const char *kind, const char *fmt, ...);

/* A printable copy of the value at idx for an error message, at most 60 bytes (longer
   strings are cut with "..."): error messages never repeat a 10 MB input. Pushed on the
   stack; the pointer is valid while it stays there. */
const char *args_show(lua_State *L, int idx);

#endif
