/* The wire format: Lua values <-> bytes. See docs/wire.md. */
#ifndef FORAGE_WIRE_H
#define FORAGE_WIRE_H

#include <stddef.h>

#include "buf.h"
#include "lua.h"

#define WIRE_VERSION 1
#define WIRE_MAX_DEPTH 200

/* Flags for encode and decode. */
#define WIRE_DATA 0   /* plain data only: functions are refused */
#define WIRE_CODE 1   /* Lua functions travel (trusted peers: the local process tree) */

/* Appends the value at stack index idx, preceded by the version byte, to b.
   root names the value in error messages ("args" gives "args[2].conn: cannot send userdata").
   Returns 0, or -1 with a message in err (the buffer is truncated back to its old length).
   Raises only on memory errors. */
int wire_encode(lua_State *L, int idx, buf *b, int flags, const char *root, char *err, size_t errsz);

/* The same for the items t[i..j] (read with lua_geti) written as one list, as if they were
   a table { t[i], ..., t[j] } of j - i + 1 array values: no table is built. */
int wire_encode_list(lua_State *L, int t, lua_Integer i, lua_Integer j, buf *b, int flags, const char *root,
                     char *err, size_t errsz);

/* Decodes one message from p[0..len) and pushes its value.
   Returns 0, or -1 with a message in err and nothing pushed.
   In WIRE_DATA mode any bytes are safe to decode: nothing is executed or loaded. */
int wire_decode(lua_State *L, const char *p, size_t len, int flags, char *err, size_t errsz);

/* Decodes a message holding a list and stores its items in the table at index t:
   item k goes to t[offset + k - 1]. Returns 0; -1 with a message in err when the bytes
   are not a valid list message; -2 with a message in err, nothing stored, when an item
   would go past math.maxinteger. Lists without shared references go straight into t,
   without an intermediate table. */
int wire_decode_into(lua_State *L, const char *p, size_t len, int flags, int t, lua_Integer offset, char *err,
                     size_t errsz);

/* Adds encode/decode to the table on top of the stack. */
void forage_open_wire(lua_State *L);

#endif
