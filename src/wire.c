/* The wire format: Lua values <-> bytes. docs/wire.md describes the layout byte by byte;
   keep the two in step and bump WIRE_VERSION whenever the bytes change meaning.

   Encoding walks the value with raw accesses only (no metamethod ever runs). Tables and
   Lua functions are numbered in the order they are first met so that a second meeting
   becomes a reference; the identity map lives in a small C array and moves to a Lua
   table only when a message holds many objects, so small messages allocate nothing
   but their bytes. Decoding trusts nothing in WIRE_DATA mode: every length is checked
   against the bytes left before anything is allocated. */
#include "wire.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "lauxlib.h"
#include "lua.h"
#include "luatype.h"
#include "shm.h"

_Static_assert(sizeof(lua_Number) == 8, "the wire carries floats as IEEE 754 binary64");
_Static_assert(sizeof(lua_Integer) == 8, "the wire carries 64-bit integers");

enum {
    TAG_FIXINT_MAX = 0x7f,  /* 0x00..0x7f: the integers 0..127 */
    TAG_FIXSTR = 0x80,      /* 0x80..0xbf: strings of 0..63 bytes, the bytes follow */
    TAG_FIXSTR_MAX = 0xbf,
    TAG_NIL = 0xc0,
    TAG_FALSE = 0xc1,
    TAG_TRUE = 0xc2,
    TAG_INT = 0xc3,         /* zig-zag varint */
    TAG_FLOAT = 0xc4,       /* 8 bytes, binary64, little-endian */
    TAG_STR = 0xc5,         /* varint length, bytes */
    TAG_TABLE = 0xc6,       /* varint narr, varint nhash, narr values, nhash key/value pairs */
    TAG_REF = 0xc7,         /* varint object number */
    TAG_FUNCTION = 0xc8,    /* varint length, bytecode, byte nups, nups upvalues */
    TAG_UPVAL_JOIN = 0xc9,  /* upvalue slots only: varint object number, byte upvalue number */
    TAG_GLOBALS = 0xca,     /* the receiver's global table */
    TAG_MODULE = 0xcb,      /* name: package.loaded[name] */
    TAG_FIELD = 0xcc,       /* module name, field name: package.loaded[module][field] */
    TAG_SHARED = 0xcd,      /* varint id, type name: a shared object the receiver inherited */
    TAG_CLASS = 0xce,       /* a TAG_MODULE or TAG_FIELD name, then a TAG_TABLE: the table's metatable */
    TAG_NEGINT = 0xe0       /* 0xe0..0xff: the integers -32..-1 */
};

/* The header's second byte. */
enum { FLAG_REFS = 1, FLAG_CODE = 2, FLAGS_KNOWN = FLAG_REFS | FLAG_CODE };

#define VARINT_MAX 10
#define SEEN_INLINE 32

/* Shown key strings and upvalue names are cut to this many bytes in error paths, and
   the caller's root name to ROOT_SHOWN. */
#define PATH_NAME_MAX 40
#define ROOT_SHOWN 60

/* The registry key of the reverse index of loaded modules (value -> name). */
static const char names_key = 0;

/* ---------------------------------------------------------------- varints */

/* Returns how many bytes the varint of v takes. */
static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Returns the position after the varint of v written at p. */
static unsigned char *put_varint(unsigned char *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* Returns nothing; writes v as a varint of exactly width bytes (v must fit), so that a
   count written before it was known can shrink in place. */
static void put_varint_padded(unsigned char *p, uint64_t v, size_t width) {
    for (size_t i = 0; i + 1 < width; i++) {
        p[i] = (unsigned char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    p[width - 1] = (unsigned char)v;
}

/* Returns the zig-zag form of n: small magnitudes of either sign give small varints. */
static uint64_t zigzag(lua_Integer n) {
    return ((uint64_t)n << 1) ^ (n < 0 ? UINT64_MAX : 0);
}

/* Returns the integer whose zig-zag form is z. */
static lua_Integer unzigzag(uint64_t z) {
    return (lua_Integer)(z >> 1) ^ -(lua_Integer)(z & 1);
}

/* ---------------------------------------------------------------- encoder */

/* What the encoding functions return. */
enum { ENCODE_OK = 0, ENCODE_REFUSED = -1, ENCODE_RESTART = -2 };

enum { STEP_FIELD, STEP_KEY, STEP_UPVALUE };

/* One step of the path from the root to a refused value, filled in while unwinding. */
typedef struct step {
    int kind;
    int index;       /* stack index of the key (STEP_FIELD) or of the function (STEP_UPVALUE) */
    int upvalue;     /* the upvalue number (STEP_UPVALUE) */
} step;

typedef struct encoder {
    lua_State *L;
    buf *b;
    size_t start;            /* offset of this message in b */
    int code;                /* WIRE_CODE: functions and named values may travel */
    int depth;               /* tables and functions open */
    lua_Integer objects;     /* tables and functions numbered so far */
    int flags;               /* FLAG_* for the header */
    int nseen;               /* entries in seen_inline; the Lua map takes over past SEEN_INLINE */
    struct { const void *p; lua_Integer v; } seen_inline[SEEN_INLINE];
    int seen_slot;           /* stack slot of the identity map (nil until needed) */
    int globals_slot;        /* code mode only: the global table, */
    int names_slot;          /* the reverse index of package.loaded (nil until needed), */
    int loaded_slot;         /* and package.loaded (nil until needed) */
    int names_rebuilt;       /* the reverse index was rebuilt during this call */
    int names_checked;       /* the index was checked against package.loaded during this call */
    int trusted_miss;        /* a table was judged "not a module" by an index not checked yet */
    char reason[128];
    int path_len;
    step path[WIRE_MAX_DEPTH + 1];
} encoder;

/* Returns nothing: raises a memory error after giving the caller its buffer back. */
static void encode_out_of_memory(encoder *e) {
    e->b->len = e->start;
    luaL_error(e->L, "wire: not enough memory");
}

/* Returns the write position with room for n more bytes (raises when memory runs out). */
static unsigned char *reserve(encoder *e, size_t n) {
    if (n > e->b->cap - e->b->len && buf_reserve(e->b, n) != 0) encode_out_of_memory(e);
    return (unsigned char *)e->b->data + e->b->len;
}

/* Returns nothing; records that q is the new end of the written bytes. */
static void commit(encoder *e, const unsigned char *q) {
    e->b->len = (size_t)(q - (const unsigned char *)e->b->data);
}

/* Returns nothing; appends one byte. */
static void put_byte(encoder *e, unsigned char c) {
    unsigned char *p = reserve(e, 1);
    *p++ = c;
    commit(e, p);
}

/* Returns nothing; appends a tag followed by a varint. */
static void put_tag_varint(encoder *e, unsigned char tag, uint64_t v) {
    unsigned char *p = reserve(e, 1 + VARINT_MAX);
    *p++ = tag;
    commit(e, put_varint(p, v));
}

/* Returns nothing; appends n in the shortest of the integer forms. */
static void put_integer(encoder *e, lua_Integer n) {
    if (n >= 0 && n <= TAG_FIXINT_MAX) put_byte(e, (unsigned char)n);
    else if (n < 0 && n >= -32) put_byte(e, (unsigned char)(n + 256));
    else put_tag_varint(e, TAG_INT, zigzag(n));
}

/* Returns nothing; appends the float's bits, so NaN payloads, infinities and -0.0 survive. */
static void put_float(encoder *e, lua_Number x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    unsigned char *p = reserve(e, 9);
    p[0] = TAG_FLOAT;
    for (int i = 0; i < 8; i++) p[1 + i] = (unsigned char)(bits >> (8 * i));
    commit(e, p + 9);
}

/* Returns nothing; appends a string value. */
static void put_string(encoder *e, const char *s, size_t len) {
    if (len > SIZE_MAX - 1 - VARINT_MAX) encode_out_of_memory(e);
    unsigned char *p = reserve(e, 1 + VARINT_MAX + len);
    if (len <= TAG_FIXSTR_MAX - TAG_FIXSTR) {
        *p++ = (unsigned char)(TAG_FIXSTR + len);
    } else {
        *p++ = TAG_STR;
        p = put_varint(p, len);
    }
    if (len > 0) memcpy(p, s, len);
    commit(e, p + len);
}

/* Returns nothing; appends the string at idx as a length-prefixed name. */
static void put_name(encoder *e, int idx) {
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);
    if (len > SIZE_MAX - VARINT_MAX) encode_out_of_memory(e);
    unsigned char *p = put_varint(reserve(e, VARINT_MAX + len), len);
    if (len > 0) memcpy(p, s, len);
    commit(e, p + len);
}

/* Returns nothing; inserts the varint of v at offset at, moving what follows. */
static void insert_varint(encoder *e, size_t at, uint64_t v) {
    size_t width = varint_size(v);
    reserve(e, width);
    char *d = e->b->data;
    memmove(d + at + width, d + at, e->b->len - at);
    put_varint((unsigned char *)d + at, v);
    e->b->len += width;
}

/* Returns ENCODE_REFUSED: the value at the current depth is refused for reason. */
static int refuse(encoder *e, const char *reason) {
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    e->path_len = e->depth;
    return ENCODE_REFUSED;
}

/* Returns rc, after noting the step through which the container being left failed. */
static int fail_step(encoder *e, int rc, int kind, int index, int upvalue) {
    e->depth--;
    e->path[e->depth].kind = kind;
    e->path[e->depth].index = index;
    e->path[e->depth].upvalue = upvalue;
    return rc;
}

/* Returns the number recorded for pointer p (an object or an upvalue cell), 0 if none. */
static lua_Integer seen_get(encoder *e, const void *p) {
    if (e->nseen <= SEEN_INLINE) {
        for (int i = 0; i < e->nseen; i++)
            if (e->seen_inline[i].p == p) return e->seen_inline[i].v;
        return 0;
    }
    lua_State *L = e->L;
    lua_Integer v = lua_rawgetp(L, e->seen_slot, p) == LUA_TNIL ? 0 : lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Returns nothing; records v for pointer p. The pointers stay unique while encoding:
   everything met is reachable from the value being encoded, which the caller holds. */
static void seen_put(encoder *e, const void *p, lua_Integer v) {
    lua_State *L = e->L;
    if (e->nseen < SEEN_INLINE) {
        e->seen_inline[e->nseen].p = p;
        e->seen_inline[e->nseen].v = v;
        e->nseen++;
        return;
    }
    if (e->nseen == SEEN_INLINE) {
        lua_createtable(L, 0, 4 * SEEN_INLINE);
        for (int i = 0; i < SEEN_INLINE; i++) {
            lua_pushinteger(L, e->seen_inline[i].v);
            lua_rawsetp(L, -2, e->seen_inline[i].p);
        }
        lua_replace(L, e->seen_slot);
        e->nseen++;
    }
    lua_pushinteger(L, v);
    lua_rawsetp(L, e->seen_slot, p);
}

/* ------------------------------------------------- values sent by name (code mode) */

/* Returns nothing; makes room for the index work below (up to a dozen slots), raising in
   the practically impossible case that the Lua stack cannot grow. */
static void names_stack(encoder *e) {
    if (!lua_checkstack(e->L, 24)) {
        e->b->len = e->start;
        luaL_error(e->L, "wire: Lua stack overflow");
    }
}

/* Returns the stack slot holding package.loaded (an empty table if there is none). */
static int loaded_slot(encoder *e) {
    lua_State *L = e->L;
    if (lua_isnil(L, e->loaded_slot)) {
        if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
        }
        lua_replace(L, e->loaded_slot);
    }
    return e->loaded_slot;
}

/* Returns 1 when the string at a sorts before the one at b. When a value is reachable
   under two names, the choice must not depend on table traversal order. */
static int name_before(lua_State *L, int a, int b) {
    size_t la, lb;
    const char *sa = lua_tolstring(L, a, &la);
    const char *sb = lua_tolstring(L, b, &lb);
    int c = memcmp(sa, sb, la < lb ? la : lb);
    return c < 0 || (c == 0 && la < lb);
}

/* Returns nothing; records in names (a stack index) that the field at stack index fv, under
   the string key just below it, of the module at stack index module, under the name just
   below that, can be sent by name, unless a module or a smaller name already claims it. */
static void index_field(lua_State *L, int names, int module, int fv) {
    lua_pushvalue(L, fv);
    int known = lua_rawget(L, names);
    int better = known == LUA_TNIL;
    if (known == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        better = name_before(L, module - 1, -2) ||
                 (lua_rawequal(L, module - 1, -2) && name_before(L, fv - 1, -1));
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (!better) return;
    lua_pushvalue(L, fv);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, module - 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, fv - 1);
    lua_rawseti(L, -2, 2);
    lua_rawset(L, names);
}

/* Returns nothing; builds the reverse index of package.loaded (value -> "module" for
   modules, value -> {module, field} for their C functions, userdata and tables), stores
   it in the registry and in the encoder's slot. A table field's entry serves only to name
   it as a metatable (encode_class): as a value, such a table travels by copy. The keys are
   weak: the index never keeps an unloaded module alive. */
static void names_build(encoder *e) {
    lua_State *L = e->L;
    int loaded = loaded_slot(e);
    lua_createtable(L, 0, 256);
    int names = lua_gettop(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, names);

    /* Modules first, so that a field entry never hides a module entry. */
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING &&
            (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA)) {
            lua_pushvalue(L, -1);
            if (lua_rawget(L, names) != LUA_TSTRING || name_before(L, -3, -1)) {
                lua_pushvalue(L, -2);
                lua_pushvalue(L, -4);
                lua_rawset(L, names);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }

    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
            int module = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, module)) {
                int fv = lua_gettop(L);
                if (lua_type(L, fv - 1) == LUA_TSTRING && (lua_iscfunction(L, fv) ||
                    lua_type(L, fv) == LUA_TUSERDATA || lua_type(L, fv) == LUA_TTABLE))
                    index_field(L, names, module, fv);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, names);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
    lua_replace(L, e->names_slot);
    e->names_rebuilt = 1;
    e->names_checked = 1;
}

/* Returns ENCODE_OK, or ENCODE_RESTART when the index was rebuilt after some table had
   already been judged by the old one: the message is then encoded again from the start. */
static int names_rebuild(encoder *e) {
    names_build(e);
    return e->trusted_miss ? ENCODE_RESTART : ENCODE_OK;
}

/* Returns nothing; makes sure the encoder's names slot holds an index. */
static void names_fetch(encoder *e) {
    lua_State *L = e->L;
    if (!lua_isnil(L, e->names_slot)) return;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key) == LUA_TTABLE) {
        lua_replace(L, e->names_slot);
    } else {
        lua_pop(L, 1);
        names_build(e);
    }
}

/* Returns ENCODE_OK, or ENCODE_RESTART. Checks, once per call, that every module in
   package.loaded is in the index, and rebuilds it otherwise. The walk costs about as much
   as the message itself for small ones, so it waits for the first value that needs names
   to be right: a Lua function (whose upvalues are where modules usually sit, and which
   costs a lua_dump anyway), a C function, a userdata or a table with a metatable. */
static int names_check(encoder *e) {
    lua_State *L = e->L;
    if (e->names_checked) return ENCODE_OK;
    e->names_checked = 1;
    names_stack(e);
    names_fetch(e);
    if (e->names_rebuilt) return ENCODE_OK;
    int loaded = loaded_slot(e);
    int stale = 0;
    lua_pushnil(L);
    while (!stale && lua_next(L, loaded)) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TSTRING && (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA))
            stale = lua_rawget(L, e->names_slot) != LUA_TSTRING;  /* replaces the value */
        lua_pop(L, 1);
    }
    if (stale) {
        lua_pop(L, 1);  /* the key lua_next left behind */
        return names_rebuild(e);
    }
    return ENCODE_OK;
}

/* Returns 1 when the index entry on top still names the value at v in package.loaded. */
static int name_entry_valid(encoder *e, int v) {
    lua_State *L = e->L;
    int loaded = loaded_slot(e);
    int ok;
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        lua_rawget(L, loaded);
        ok = lua_rawequal(L, -1, v);
        lua_pop(L, 1);
        return ok;
    }
    lua_rawgeti(L, -1, 1);
    if (lua_rawget(L, loaded) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_rawgeti(L, -2, 2);
    lua_rawget(L, -2);
    ok = lua_rawequal(L, -1, v);
    lua_pop(L, 2);
    return ok;
}

/* Returns 1 and pushes the index entry (a module name, or {module, field}) when the value
   at v travels by name; 0, nothing pushed, when it has no name; or ENCODE_RESTART. The
   index is rebuilt at most once per call: when an entry no longer matches, or when a value
   that must have a name (required: a C function, a userdata) has none. */
static int name_lookup(encoder *e, int v, int required) {
    lua_State *L = e->L;
    names_stack(e);
    names_fetch(e);
    if (required) {
        int rc = names_check(e);
        if (rc != ENCODE_OK) return rc;
    }
    for (;;) {
        lua_pushvalue(L, v);
        int found = lua_rawget(L, e->names_slot) != LUA_TNIL;
        if (found && name_entry_valid(e, v)) return 1;
        lua_pop(L, 1);
        if (e->names_rebuilt) return 0;
        if (!found && !required) {
            if (!e->names_checked) e->trusted_miss = 1;
            return 0;
        }
        int rc = names_rebuild(e);
        if (rc != ENCODE_OK) return rc;
    }
}

/* Returns nothing; writes the index entry on top (a module name, or {module, field}) as
   TAG_MODULE or TAG_FIELD, and pops it. */
static void put_name_entry(encoder *e) {
    lua_State *L = e->L;
    if (lua_type(L, -1) == LUA_TSTRING) {
        put_byte(e, TAG_MODULE);
        put_name(e, -1);
    } else {
        put_byte(e, TAG_FIELD);
        lua_rawgeti(L, -1, 1);
        put_name(e, -1);
        lua_rawgeti(L, -2, 2);
        put_name(e, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    e->flags |= FLAG_CODE;
}

/* Returns 1 when the value at v was written by name, 0 when it has none, or ENCODE_RESTART. */
static int encode_by_name(encoder *e, int v, int required) {
    int rc = name_lookup(e, v, required);
    if (rc != 1) return rc;
    put_name_entry(e);
    return 1;
}

/* Returns 1 when the table at t was written by name (it is a loaded module), 0 when it
   travels by value, or ENCODE_RESTART. A table that is only a field of a module is
   named as a class, never in place of its contents: it is data, as it always was. */
static int encode_table_by_name(encoder *e, int t) {
    lua_State *L = e->L;
    int rc = name_lookup(e, t, 0);
    if (rc != 1) return rc;
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        if (!e->names_checked) e->trusted_miss = 1;
        return 0;
    }
    put_name_entry(e);
    return 1;
}

/* Returns ENCODE_OK, or ENCODE_RESTART. Writes TAG_CLASS and the name of the metatable of
   the table at t when that metatable is a loaded module or a field of one, as pickle sends
   an instance's class by its qualified name; a metatable without a name is not sent. The
   index is checked against package.loaded first, as for functions: a class module is
   often loaded after the index was built. */
static int encode_class(encoder *e, int t) {
    lua_State *L = e->L;
    if (!lua_getmetatable(L, t)) return ENCODE_OK;
    int rc = names_check(e);
    if (rc == ENCODE_OK) rc = name_lookup(e, lua_gettop(L), 0);
    if (rc == 1) {
        put_byte(e, TAG_CLASS);
        put_name_entry(e);
        rc = ENCODE_OK;
    }
    lua_pop(L, 1);
    return rc;
}

/* ------------------------------------------------------------- tables, functions */

/* Returns nothing; writes a reference to object number ref. */
static void put_ref(encoder *e, lua_Integer ref) {
    put_tag_varint(e, TAG_REF, (uint64_t)ref);
    e->flags |= FLAG_REFS;
}

/* Returns ENCODE_OK when a container may be opened one level deeper, ENCODE_REFUSED when
   it would pass the depth cap or the Lua stack cannot grow. */
static int open_container(encoder *e) {
    if (e->depth >= WIRE_MAX_DEPTH) {
        snprintf(e->reason, sizeof e->reason, "nested deeper than %d levels", WIRE_MAX_DEPTH);
        e->path_len = e->depth;
        return ENCODE_REFUSED;
    }
    if (!lua_checkstack(e->L, 8)) return refuse(e, "Lua stack overflow");
    e->depth++;
    return ENCODE_OK;
}

static int encode_value(encoder *e, int idx);

/* Returns nothing; writes the hash-part count reserved as one byte at offset at, making
   room when it needs more (128 entries or more, where the move is small beside them). */
static void patch_count(encoder *e, size_t at, uint64_t count) {
    if (count < 0x80) {
        e->b->data[at] = (char)count;
        return;
    }
    size_t width = varint_size(count);
    reserve(e, width - 1);
    char *d = e->b->data;
    memmove(d + at + width, d + at + 1, e->b->len - at - 1);
    put_varint((unsigned char *)d + at, count);
    e->b->len += width - 1;
}

/* Returns ENCODE_OK, or the first failure inside the table at t.
   One lua_next pass: Lua traverses the array part first, in order, so the keys 1, 2, 3...
   that come first are the array part; everything after them is the hash part. The array
   count's varint is sized from lua_rawlen, which no such prefix exceeds, and padded when
   the prefix is shorter; the hash count gets one byte until it is known. */
static int encode_table(encoder *e, int t) {
    lua_State *L = e->L;
    int rc;
    if (e->code) {
        if (lua_rawequal(L, t, e->globals_slot)) {
            put_byte(e, TAG_GLOBALS);
            e->flags |= FLAG_CODE;
            return ENCODE_OK;
        }
        rc = encode_table_by_name(e, t);
        if (rc != 0) return rc < 0 ? rc : ENCODE_OK;
    }
    const void *self = lua_topointer(L, t);
    lua_Integer ref = seen_get(e, self);
    if (ref != 0) {
        put_ref(e, ref);
        return ENCODE_OK;
    }
    if (e->code && (rc = encode_class(e, t)) != ENCODE_OK) return rc;
    if ((rc = open_container(e)) != ENCODE_OK) return rc;
    seen_put(e, self, ++e->objects);

    lua_Unsigned n = lua_rawlen(L, t);
    size_t width = varint_size(n);
    unsigned char *p = reserve(e, 2 + width);
    p[0] = TAG_TABLE;
    put_varint(p + 1, n);
    size_t narr_at = e->b->len + 1;
    size_t count_at = narr_at + width;
    e->b->len += 2 + width;

    lua_Unsigned narr = 0;
    uint64_t count = 0;
    int key = lua_gettop(L) + 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (count == 0 && narr < n && lua_isinteger(L, key) &&
            lua_tointeger(L, key) == (lua_Integer)narr + 1) {
            if ((rc = encode_value(e, key + 1)) != ENCODE_OK) return fail_step(e, rc, STEP_FIELD, key, 0);
            narr++;
        } else {
            if ((rc = encode_value(e, key)) != ENCODE_OK) return fail_step(e, rc, STEP_KEY, 0, 0);
            if ((rc = encode_value(e, key + 1)) != ENCODE_OK) return fail_step(e, rc, STEP_FIELD, key, 0);
            count++;
        }
        lua_pop(L, 1);
    }
    if (narr < n) put_varint_padded((unsigned char *)e->b->data + narr_at, narr, width);
    patch_count(e, count_at, count);
    e->depth--;
    return ENCODE_OK;
}

/* Returns 0, or 1 when memory ran out (lua_dump then stops). */
static int dump_writer(lua_State *L, const void *p, size_t size, void *ud) {
    (void)L;
    return buf_append(ud, p, size) != 0;
}

/* Returns ENCODE_OK, or the first failure in the function at f or among its upvalues. */
static int encode_function(encoder *e, int f) {
    lua_State *L = e->L;
    int rc;
    if (!e->code) return refuse(e, "cannot send function in data mode");
    if (lua_iscfunction(L, f)) {
        rc = encode_by_name(e, f, 1);
        if (rc != 0) return rc < 0 ? rc : ENCODE_OK;
        return refuse(e, "cannot send C function");
    }
    const void *self_ptr = lua_topointer(L, f);
    lua_Integer ref = seen_get(e, self_ptr);
    if (ref != 0) {
        put_ref(e, ref);
        return ENCODE_OK;
    }
    if ((rc = names_check(e)) != ENCODE_OK) return rc;
    if ((rc = open_container(e)) != ENCODE_OK) return rc;
    lua_Integer self = ++e->objects;
    seen_put(e, self_ptr, self);
    e->flags |= FLAG_CODE;

    put_byte(e, TAG_FUNCTION);
    size_t at = e->b->len;
    lua_pushvalue(L, f);
    if (lua_dump(L, dump_writer, e->b, 0) != 0) encode_out_of_memory(e);
    lua_pop(L, 1);
    insert_varint(e, at, e->b->len - at);

    lua_Debug ar;
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    put_byte(e, ar.nups);

    /* Upvalue cells are tracked too: two closures sharing a local still share it after
       the trip. A cell is numbered (function << 8 | upvalue - 1), never 0. */
    int value = lua_gettop(L) + 1;
    for (int i = 1; i <= ar.nups; i++) {
        void *cell = lua_upvalueid(L, f, i);
        lua_Integer owner = seen_get(e, cell);
        if (owner != 0) {
            unsigned char *p = reserve(e, 2 + VARINT_MAX);
            *p++ = TAG_UPVAL_JOIN;
            p = put_varint(p, (uint64_t)(owner >> 8));
            *p++ = (unsigned char)((owner & 0xff) + 1);
            commit(e, p);
            e->flags |= FLAG_REFS;
            continue;
        }
        seen_put(e, cell, self << 8 | (i - 1));
        const char *name = lua_getupvalue(L, f, i);
        if (name != NULL && strcmp(name, "_ENV") == 0) {
            /* Whatever environment the function had here (often _G, or a table whose
               __index leads there), it runs against the receiver's globals. */
            put_byte(e, TAG_GLOBALS);
        } else if ((rc = encode_value(e, value)) != ENCODE_OK) {
            return fail_step(e, rc, STEP_UPVALUE, f, i);
        }
        lua_pop(L, 1);
    }
    e->depth--;
    return ENCODE_OK;
}

/* Returns ENCODE_OK, or the first failure in the value at idx (absolute) or inside it. */
static int encode_value(encoder *e, int idx) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put_byte(e, TAG_NIL);
        return ENCODE_OK;
    case LUA_TBOOLEAN:
        put_byte(e, lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE);
        return ENCODE_OK;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) put_integer(e, lua_tointeger(L, idx));
        else put_float(e, lua_tonumber(L, idx));
        return ENCODE_OK;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_string(e, s, len);
        return ENCODE_OK;
    }
    case LUA_TTABLE:
        return encode_table(e, idx);
    case LUA_TFUNCTION:
        return encode_function(e, idx);
    case LUA_TUSERDATA:
        if (e->code) {
            lua_Integer id;
            if (shm_shared_id(L, idx, &id)) {
                /* A queue, lock, value...: the receiver, forked after its creation, has it. */
                put_tag_varint(e, TAG_SHARED, (uint64_t)id);
                if (luaL_getmetafield(L, idx, "__name") != LUA_TSTRING) lua_pushliteral(L, "shared object");
                size_t len;
                const char *name = lua_tolstring(L, -1, &len);
                unsigned char *p = reserve(e, VARINT_MAX + len);
                p = put_varint(p, len);
                memcpy(p, name, len);
                commit(e, p + len);
                lua_pop(L, 1);
                e->flags |= FLAG_CODE;
                return ENCODE_OK;
            }
            int rc = encode_by_name(e, idx, 1);
            if (rc != 0) return rc < 0 ? rc : ENCODE_OK;
        }
        if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
            /* forage's shared objects are shared by inheritance, not by copy: say so. */
            const char *name = lua_tostring(L, -1);
            char reason[128];
            if (strncmp(name, "forage.", 7) == 0 && !e->code)
                snprintf(reason, sizeof reason, "cannot send %.60s in data mode (only inside the process tree)", name);
            else if (strncmp(name, "forage.", 7) == 0)
                snprintf(reason, sizeof reason, "cannot send %.60s", name);
            else
                snprintf(reason, sizeof reason, "cannot send userdata (%.60s)", name);
            lua_pop(L, 1);
            return refuse(e, reason);
        }
        return refuse(e, "cannot send userdata");
    case LUA_TLIGHTUSERDATA:
        return refuse(e, "cannot send light userdata");
    case LUA_TTHREAD:
        return refuse(e, "cannot send thread");
    default:
        return refuse(e, "cannot send this value");
    }
}

/* Returns 1 when s[0..len) can follow a dot in Lua source: an identifier, not a keyword. */
static int is_identifier(const char *s, size_t len) {
    static const char *const keywords[] = {
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    };
    if (len == 0 || len > PATH_NAME_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!letter && !(i > 0 && c >= '0' && c <= '9')) return 0;
    }
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
        if (strlen(keywords[i]) == len && memcmp(keywords[i], s, len) == 0) return 0;
    return 1;
}

/* Returns the length written to out: s as a quoted Lua string, cut after PATH_NAME_MAX bytes. */
static size_t quote(const char *s, size_t len, char *out, size_t outsz) {
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && i < PATH_NAME_MAX && o + 8 < outsz; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outsz - o, "\\%d", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (len > PATH_NAME_MAX && o + 4 < outsz) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

/* Returns the length written to out: one step of an error path, as Lua source would say it. */
static size_t render_step(encoder *e, const step *s, char *out, size_t outsz) {
    lua_State *L = e->L;
    int n = 0;
    switch (s->kind) {
    case STEP_KEY:
        n = snprintf(out, outsz, "<key>");
        break;
    case STEP_UPVALUE: {
        const char *name = lua_getupvalue(L, s->index, s->upvalue);
        n = snprintf(out, outsz, "<upvalue %.*s>", PATH_NAME_MAX, name ? name : "?");
        if (name) lua_pop(L, 1);
        break;
    }
    case STEP_FIELD:
        switch (lua_type(L, s->index)) {
        case LUA_TSTRING: {
            size_t len;
            const char *k = lua_tolstring(L, s->index, &len);
            if (is_identifier(k, len)) {
                n = snprintf(out, outsz, ".%.*s", (int)len, k);
            } else {
                out[0] = '[';
                size_t q = 1 + quote(k, len, out + 1, outsz - 3);
                out[q++] = ']';
                out[q] = '\0';
                n = (int)q;
            }
            break;
        }
        case LUA_TNUMBER:
            if (lua_isinteger(L, s->index)) {
                n = snprintf(out, outsz, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)lua_tointeger(L, s->index));
            } else {
                char num[48];
                snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, s->index));
                int looks_int = num[strspn(num, "-0123456789")] == '\0';
                n = snprintf(out, outsz, "[%s%s]", num, looks_int ? ".0" : "");
            }
            break;
        case LUA_TBOOLEAN:
            n = snprintf(out, outsz, "[%s]", lua_toboolean(L, s->index) ? "true" : "false");
            break;
        default:
            n = snprintf(out, outsz, "[<%s>]", luaL_typename(L, s->index));
            break;
        }
        break;
    }
    if (n < 0) n = 0;
    return (size_t)n < outsz ? (size_t)n : outsz - 1;
}

/* Returns nothing; writes "<root><path>: <reason>" to err, eliding the middle of long paths. */
static void format_refusal(encoder *e, const char *root, char *err, size_t errsz) {
    enum { SHOWN = 120, HEAD = 48, TAIL = 64 };
    char path[SHOWN + 8 + 2 * 128];
    char piece[128];
    size_t lens[WIRE_MAX_DEPTH + 1];
    size_t total = 0;
    for (int i = 0; i < e->path_len; i++) {
        lens[i] = render_step(e, &e->path[i], piece, sizeof piece);
        total += lens[i];
    }
    int head_end = e->path_len, tail_start = e->path_len;
    if (total > SHOWN) {
        size_t used = 0;
        head_end = 0;
        while (head_end < e->path_len && used + lens[head_end] <= HEAD) used += lens[head_end++];
        used = 0;
        tail_start = e->path_len;
        while (tail_start > head_end && used + lens[tail_start - 1] <= TAIL)
            used += lens[--tail_start];
    }
    size_t o = 0;
    for (int i = 0; i < e->path_len; i++) {
        if (i == head_end && i < tail_start) {
            memcpy(path + o, "...", 3);
            o += 3;
            i = tail_start - 1;
            continue;
        }
        size_t len = render_step(e, &e->path[i], piece, sizeof piece);
        if (o + len >= sizeof path) break;
        memcpy(path + o, piece, len);
        o += len;
    }
    path[o] = '\0';
    size_t root_len = strlen(root);
    snprintf(err, errsz, "%.*s%s%s: %s", ROOT_SHOWN, root, root_len > ROOT_SHOWN ? "..." : "", path, e->reason);
}

/* Returns nothing; readies e for a (first or repeated) pass over the value. */
static void encoder_reset(encoder *e) {
    e->b->len = e->start;
    e->depth = 0;
    e->objects = 0;
    e->flags = 0;
    e->nseen = 0;
    e->trusted_miss = 0;
    e->path_len = 0;
    e->reason[0] = '\0';
    lua_pushnil(e->L);
    lua_replace(e->L, e->seen_slot);
    unsigned char *p = reserve(e, 2);
    p[0] = WIRE_VERSION;
    p[1] = 0;
    commit(e, p + 2);
}

/* Returns ENCODE_OK or the first failure: one pass over the value at idx or, when list is
   not 0, over the items list[i..j] written as one list (a table of j - i + 1 array values). */
static int encode_pass(encoder *e, int idx, int list, lua_Integer i, lua_Integer j) {
    if (list == 0) return encode_value(e, idx);
    unsigned char *p = reserve(e, 2 + VARINT_MAX);
    *p++ = TAG_TABLE;
    p = put_varint(p, (uint64_t)(j - i + 1));
    *p++ = 0;
    commit(e, p);
    e->objects++;   /* the list is object 1 for the decoder, though it has no Lua identity */
    e->depth++;
    lua_State *L = e->L;
    int raw = !lua_getmetatable(L, list);
    if (!raw) lua_pop(L, 1);
    int top = lua_gettop(L);
    for (lua_Integer k = i; k <= j; k++) {
        int type = raw ? lua_rawgeti(L, list, k) : lua_geti(L, list, k);
        /* Numbers are most items of a big map: write them without the general dispatch. */
        if (type == LUA_TNUMBER) {
            int isint;
            lua_Integer n = lua_tointegerx(L, top + 1, &isint);
            if (isint && lua_isinteger(L, top + 1)) put_integer(e, n);
            else put_float(e, lua_tonumber(L, top + 1));
        } else {
            int rc = encode_value(e, top + 1);
            if (rc != ENCODE_OK) {
                /* The list's own step: its key k, kept on the stack (as a table's keys are)
                   until the refusal is formatted. */
                lua_pushinteger(L, k);
                return fail_step(e, rc, STEP_FIELD, lua_gettop(L), 0);
            }
        }
        lua_settop(L, top);
    }
    e->depth--;
    return ENCODE_OK;
}

/* Returns 0 or -1: wire_encode and wire_encode_list. */
static int encode_message(lua_State *L, int idx, int list, lua_Integer i, lua_Integer j, buf *b, int flags,
                          const char *root, char *err, size_t errsz) {
    encoder e;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 16)) {
        if (err != NULL && errsz > 0) snprintf(err, errsz, "%s: Lua stack overflow", root ? root : "value");
        return -1;
    }
    e.L = L;
    e.b = b;
    e.start = b->len;
    e.code = (flags & WIRE_CODE) != 0;
    e.names_rebuilt = e.names_checked = 0;
    lua_pushnil(L);
    e.seen_slot = top + 1;
    e.globals_slot = e.names_slot = e.loaded_slot = 0;
    if (e.code) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        e.globals_slot = top + 2;
        lua_pushnil(L);
        e.names_slot = top + 3;
        lua_pushnil(L);
        e.loaded_slot = top + 4;
    }
    encoder_reset(&e);
    int rc = encode_pass(&e, idx, list, i, j);
    if (rc == ENCODE_RESTART) {
        /* The index is fresh now and will not be rebuilt again in this call. */
        lua_settop(L, e.code ? top + 4 : top + 1);
        encoder_reset(&e);
        rc = encode_pass(&e, idx, list, i, j);
    }
    if (rc != ENCODE_OK) {
        if (err != NULL && errsz > 0) format_refusal(&e, root ? root : "value", err, errsz);
        b->len = e.start;
        lua_settop(L, top);
        return -1;
    }
    b->data[e.start + 1] = (char)e.flags;
    lua_settop(L, top);
    return 0;
}

int wire_encode(lua_State *L, int idx, buf *b, int flags, const char *root, char *err, size_t errsz) {
    return encode_message(L, lua_absindex(L, idx), 0, 0, 0, b, flags, root, err, errsz);
}

int wire_encode_list(lua_State *L, int t, lua_Integer i, lua_Integer j, buf *b, int flags, const char *root,
                     char *err, size_t errsz) {
    return encode_message(L, 0, lua_absindex(L, t), i, j, b, flags, root, err, errsz);
}

/* ---------------------------------------------------------------- decoder */

typedef struct decoder {
    lua_State *L;
    const unsigned char *start, *p, *end;
    int code;
    int depth;
    int refs_slot;           /* stack slot of the object table, 0 when the message has no refs */
    lua_Integer objects;
    size_t promised;         /* values announced by open containers and not yet begun */
    char *err;
    size_t errsz;
} decoder;

/* Returns -1 after writing "wire: <what> at byte <offset>" to err. */
static int bad(decoder *d, const unsigned char *where, const char *what) {
    if (d->err != NULL && d->errsz > 0)
        snprintf(d->err, d->errsz, "wire: %s at byte %zu", what, (size_t)(where - d->start));
    return -1;
}

/* Returns -1: the input ended early. */
static int truncated(decoder *d) {
    return bad(d, d->end, "truncated input");
}

/* Returns 0 with *out set, or -1 on a truncated or overlong varint. */
static int get_varint(decoder *d, uint64_t *out) {
    const unsigned char *at = d->p;
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        if (d->p >= d->end) return truncated(d);
        unsigned c = *d->p++;
        if (shift == 63 && c > 1) return bad(d, at, "varint overflows 64 bits");
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) break;
    }
    *out = v;
    return 0;
}

/* Returns 0 with the next len-prefixed byte run in *s, *len, or -1 when truncated. */
static int get_bytes(decoder *d, const char **s, size_t *len) {
    uint64_t n;
    if (get_varint(d, &n) != 0) return -1;
    if (n > (uint64_t)(d->end - d->p)) return truncated(d);
    *s = (const char *)d->p;
    *len = (size_t)n;
    d->p += n;
    return 0;
}

/* Returns bytes left in the input. */
static size_t left(const decoder *d) {
    return (size_t)(d->end - d->p);
}

/* Returns 0 when a container opening at `at` announcing more values fits the input and the
   depth cap (so allocation stays proportional to the input), else -1. */
static int open_decoded(decoder *d, const unsigned char *at, uint64_t more) {
    if (more > left(d) || d->promised > left(d) - more)
        return bad(d, at, "more values announced than bytes left");
    if (d->depth >= WIRE_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nested deeper than %d levels", WIRE_MAX_DEPTH);
        return bad(d, at, what);
    }
    if (!lua_checkstack(d->L, 8)) return bad(d, at, "Lua stack overflow");
    d->promised += (size_t)more;
    d->depth++;
    return 0;
}

/* Returns nothing; numbers the object on top so that later references can find it. */
static void register_object(decoder *d) {
    d->objects++;
    if (d->refs_slot != 0) {
        lua_pushvalue(d->L, -1);
        lua_rawseti(d->L, d->refs_slot, d->objects);
    }
}

static int decode_value(decoder *d);

/* Returns 0 with the table pushed, or -1. */
static int decode_table(decoder *d, const unsigned char *at) {
    lua_State *L = d->L;
    uint64_t narr, nhash;
    if (get_varint(d, &narr) != 0 || get_varint(d, &nhash) != 0) return -1;
    if (narr > left(d) || nhash > (left(d) - narr) / 2)
        return bad(d, at, "more values announced than bytes left");
    if (open_decoded(d, at, narr + 2 * nhash) != 0) return -1;
    lua_createtable(L, narr > INT_MAX ? INT_MAX : (int)narr, nhash > INT_MAX ? INT_MAX : (int)nhash);
    register_object(d);
    for (uint64_t i = 1; i <= narr; i++) {
        if (decode_value(d) != 0) return -1;
        lua_rawseti(L, -2, (lua_Integer)i);
    }
    for (uint64_t i = 0; i < nhash; i++) {
        const unsigned char *key_at = d->p;
        if (decode_value(d) != 0) return -1;
        if (lua_isnil(L, -1)) return bad(d, key_at, "nil table key");
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) && isnan(lua_tonumber(L, -1)))
            return bad(d, key_at, "NaN table key");
        if (decode_value(d) != 0) return -1;
        lua_rawset(L, -3);
    }
    d->depth--;
    return 0;
}

/* Returns the next chunk for lua_load: the whole bytecode at once, then nothing. */
static const char *chunk_reader(lua_State *L, void *ud, size_t *size) {
    const char **chunk = ud;
    (void)L;
    if (chunk[0] == chunk[1]) {
        *size = 0;
        return NULL;
    }
    const char *p = chunk[0];
    *size = (size_t)(chunk[1] - chunk[0]);
    chunk[0] = chunk[1];
    return p;
}

/* Returns the number of upvalues of the Lua function at idx. */
static int count_upvalues(lua_State *L, int idx) {
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">u", &ar);
    return ar.nups;
}

/* Returns 0 when upvalue i of the function at f now shares the cell named by the join that
   follows, or -1. */
static int decode_join(decoder *d, int f, int i) {
    lua_State *L = d->L;
    const unsigned char *at = d->p++;
    uint64_t owner;
    if (get_varint(d, &owner) != 0) return -1;
    if (d->p >= d->end) return truncated(d);
    int n = *d->p++;
    if (d->refs_slot == 0 || owner == 0 || owner > (uint64_t)d->objects)
        return bad(d, at, "bad upvalue reference");
    lua_rawgeti(L, d->refs_slot, (lua_Integer)owner);
    int g = lua_gettop(L);
    if (lua_type(L, g) != LUA_TFUNCTION || lua_iscfunction(L, g) || n < 1 || n > count_upvalues(L, g))
        return bad(d, at, "bad upvalue reference");
    lua_upvaluejoin(L, f, i, g, n);
    lua_pop(L, 1);
    return 0;
}

/* Returns 0 with the function pushed, or -1. Only reached in code mode: the bytecode is
   trusted, as Lua 5.4 cannot verify it. */
static int decode_function(decoder *d, const unsigned char *at) {
    lua_State *L = d->L;
    const char *code;
    size_t len;
    if (get_bytes(d, &code, &len) != 0) return -1;
    if (d->p >= d->end) return truncated(d);
    int nups = *d->p++;
    if (open_decoded(d, at, (uint64_t)nups) != 0) return -1;
    const char *chunk[2] = {code, code + len};
    if (lua_load(L, chunk_reader, chunk, "=wire", "b") != LUA_OK) {
        char what[160];
        snprintf(what, sizeof what, "cannot load function (%s)", lua_tostring(L, -1));
        return bad(d, at, what);
    }
    int f = lua_gettop(L);
    if (count_upvalues(L, f) != nups) return bad(d, at, "upvalue count does not match the bytecode");
    register_object(d);
    for (int i = 1; i <= nups; i++) {
        if (d->p < d->end && *d->p == TAG_UPVAL_JOIN) {
            d->promised--;
            if (decode_join(d, f, i) != 0) return -1;
        } else {
            if (decode_value(d) != 0) return -1;
            lua_setupvalue(L, f, i);
        }
    }
    d->depth--;
    return 0;
}

/* Returns 0 with package.loaded[name] (and its field, for TAG_FIELD) pushed, or -1. */
static int decode_name(decoder *d, const unsigned char *at, int with_field) {
    lua_State *L = d->L;
    const char *module, *field = NULL;
    size_t module_len, field_len = 0;
    if (get_bytes(d, &module, &module_len) != 0) return -1;
    if (with_field && get_bytes(d, &field, &field_len) != 0) return -1;
    int mlen = module_len > 60 ? 60 : (int)module_len, flen = field_len > 60 ? 60 : (int)field_len;
    char what[160];
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE)
        return bad(d, at, "no package.loaded");
    lua_pushlstring(L, module, module_len);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        snprintf(what, sizeof what, "module \"%.*s\" is not loaded", mlen, module);
        return bad(d, at, what);
    }
    if (with_field) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            snprintf(what, sizeof what, "module \"%.*s\" is not a table", mlen, module);
            return bad(d, at, what);
        }
        lua_pushlstring(L, field, field_len);
        if (lua_rawget(L, -2) == LUA_TNIL) {
            snprintf(what, sizeof what, "%.*s.%.*s not found", mlen, module, flen, field);
            return bad(d, at, what);
        }
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
    return 0;
}

/* Returns 0 with the table that follows pushed, its metatable set to the class named
   before it, or -1. The name, the class and the table are one value (d->promised was
   counted once, for TAG_CLASS); the metatable is set once the table is filled, so no
   metamethod runs while it is built. */
static int decode_class(decoder *d) {
    lua_State *L = d->L;
    if (d->p >= d->end) return truncated(d);
    const unsigned char *name_at = d->p;
    if (*name_at != TAG_MODULE && *name_at != TAG_FIELD) return bad(d, name_at, "class without a name");
    d->p++;
    if (decode_name(d, name_at, *name_at == TAG_FIELD) != 0) return -1;
    if (!lua_istable(L, -1)) return bad(d, name_at, "class is not a table");
    if (d->p >= d->end) return truncated(d);
    const unsigned char *table_at = d->p;
    if (*table_at != TAG_TABLE) return bad(d, table_at, "class without a table");
    d->p++;
    if (decode_table(d, table_at) != 0) return -1;
    lua_insert(L, -2);
    lua_setmetatable(L, -2);
    return 0;
}

/* Returns 0 with the next value pushed, or -1 with the error in d->err. */
static int decode_value(decoder *d) {
    lua_State *L = d->L;
    if (d->p >= d->end) return truncated(d);
    d->promised--;
    const unsigned char *at = d->p;
    unsigned c = *d->p++;
    if (c <= TAG_FIXINT_MAX) {
        lua_pushinteger(L, (lua_Integer)c);
        return 0;
    }
    if (c <= TAG_FIXSTR_MAX) {
        size_t len = c - TAG_FIXSTR;
        if (len > left(d)) return truncated(d);
        lua_pushlstring(L, (const char *)d->p, len);
        d->p += len;
        return 0;
    }
    if (c >= TAG_NEGINT) {
        lua_pushinteger(L, (lua_Integer)c - 256);
        return 0;
    }
    switch (c) {
    case TAG_NIL:
        lua_pushnil(L);
        return 0;
    case TAG_FALSE:
        lua_pushboolean(L, 0);
        return 0;
    case TAG_TRUE:
        lua_pushboolean(L, 1);
        return 0;
    case TAG_INT: {
        uint64_t z;
        if (get_varint(d, &z) != 0) return -1;
        lua_pushinteger(L, unzigzag(z));
        return 0;
    }
    case TAG_FLOAT: {
        if (left(d) < 8) return truncated(d);
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits |= (uint64_t)d->p[i] << (8 * i);
        d->p += 8;
        lua_Number x;
        memcpy(&x, &bits, sizeof x);
        lua_pushnumber(L, x);
        return 0;
    }
    case TAG_STR: {
        const char *s;
        size_t len;
        if (get_bytes(d, &s, &len) != 0) return -1;
        lua_pushlstring(L, s, len);
        return 0;
    }
    case TAG_TABLE:
        return decode_table(d, at);
    case TAG_REF: {
        uint64_t n;
        if (get_varint(d, &n) != 0) return -1;
        if (d->refs_slot == 0 || n == 0 || n > (uint64_t)d->objects) return bad(d, at, "bad reference");
        lua_rawgeti(L, d->refs_slot, (lua_Integer)n);
        return 0;
    }
    case TAG_SHARED: {
        if (!d->code) return bad(d, at, "shared object in data mode");
        uint64_t id;
        const char *name;
        size_t len;
        if (get_varint(d, &id) != 0 || get_bytes(d, &name, &len) != 0) return -1;
        if (shm_push_shared(L, (lua_Integer)id)) return 0;
        char what[160];
        snprintf(what, sizeof what, "%.*s was created after this process started (create it before the pool or process)",
                 (int)(len > 60 ? 60 : len), name);
        if (d->err != NULL && d->errsz > 0) snprintf(d->err, d->errsz, "wire: %s", what);
        return -1;
    }
    case TAG_FUNCTION:
    case TAG_GLOBALS:
    case TAG_MODULE:
    case TAG_FIELD:
    case TAG_CLASS:
        if (!d->code) return bad(d, at, "function or named value in data mode");
        if (c == TAG_FUNCTION) return decode_function(d, at);
        if (c == TAG_CLASS) return decode_class(d);
        if (c == TAG_GLOBALS) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
            return 0;
        }
        return decode_name(d, at, c == TAG_FIELD);
    default: {
        char what[32];
        snprintf(what, sizeof what, "unknown tag 0x%02x", c);
        return bad(d, at, what);
    }
    }
}

int wire_decode(lua_State *L, const char *p, size_t len, int flags, char *err, size_t errsz) {
    decoder d;
    int top = lua_gettop(L);
    d.L = L;
    d.start = d.p = (const unsigned char *)p;
    d.end = d.start + len;
    d.code = (flags & WIRE_CODE) != 0;
    d.depth = 0;
    d.refs_slot = 0;
    d.objects = 0;
    d.promised = 1;
    d.err = err;
    d.errsz = errsz;
    if (len == 0) return truncated(&d);
    if (d.start[0] != WIRE_VERSION) {
        if (err != NULL && errsz > 0) snprintf(err, errsz, "wire: unsupported version %u", d.start[0]);
        return -1;
    }
    if (len < 2) return truncated(&d);
    unsigned header = d.start[1];
    if (header & ~(unsigned)FLAGS_KNOWN) return bad(&d, d.start + 1, "unknown flags");
    if ((header & FLAG_CODE) && !d.code)
        return bad(&d, d.start + 1, "functions or named values in data mode");
    if (!lua_checkstack(L, 8)) return bad(&d, d.start, "Lua stack overflow");
    d.p += 2;
    if (header & FLAG_REFS) {
        lua_newtable(L);
        d.refs_slot = top + 1;
    }
    if (decode_value(&d) != 0 || (d.p != d.end && bad(&d, d.p, "trailing bytes") != 0)) {
        lua_settop(L, top);
        return -1;
    }
    if (d.refs_slot != 0) lua_replace(L, d.refs_slot);
    return 0;
}

/* Returns 1 when t[offset + k] is an index Lua can hold (offset + k <= math.maxinteger);
   unsigned arithmetic: no sum of the two is ever computed in a signed type. */
static int index_fits(lua_Integer offset, uint64_t k) {
    return k <= (uint64_t)LUA_MAXINTEGER - (uint64_t)offset;
}

/* Returns offset + k, which index_fits has accepted. */
static lua_Integer index_at(lua_Integer offset, uint64_t k) {
    return (lua_Integer)((uint64_t)offset + k);
}

/* Returns -2 after writing why count items do not fit from offset to err. */
static int list_does_not_fit(uint64_t count, lua_Integer offset, char *err, size_t errsz) {
    if (err != NULL && errsz > 0)
        snprintf(err, errsz, "a list of %llu items does not fit in a table from index %lld",
                 (unsigned long long)count, (long long)offset);
    return -2;
}

int wire_decode_into(lua_State *L, const char *p, size_t len, int flags, int t, lua_Integer offset, char *err,
                     size_t errsz) {
    t = lua_absindex(L, t);
    const unsigned char *u = (const unsigned char *)p;
    /* The fast path: a list without references goes straight into t. */
    if (len >= 4 && u[0] == WIRE_VERSION && (u[1] & ~(unsigned)FLAG_CODE) == 0 && u[2] == TAG_TABLE &&
        ((u[1] & FLAG_CODE) == 0 || (flags & WIRE_CODE))) {
        decoder d;
        d.L = L;
        d.start = u;
        d.p = u + 3;
        d.end = u + len;
        d.code = (flags & WIRE_CODE) != 0;
        d.depth = 0;
        d.refs_slot = 0;
        d.objects = 1;
        d.promised = 0;
        d.err = err;
        d.errsz = errsz;
        const unsigned char *at = d.p;
        uint64_t narr, nhash;
        int top = lua_gettop(L);
        if (get_varint(&d, &narr) != 0 || get_varint(&d, &nhash) != 0) return -1;
        if (nhash == 0) {
            if (open_decoded(&d, at, narr) != 0) return -1;
            if (narr > 0 && !index_fits(offset, narr - 1)) return list_does_not_fit(narr, offset, err, errsz);
            for (uint64_t k = 0; k < narr; k++) {
                if (decode_value(&d) != 0) {
                    lua_settop(L, top);
                    return -1;
                }
                lua_rawseti(L, t, index_at(offset, k));
            }
            if (d.p != d.end) return bad(&d, d.p, "trailing bytes");
            return 0;
        }
    }
    /* Anything else: decode the whole value, then copy its integer keys, once all of
       them are known to fit. */
    if (wire_decode(L, p, len, flags, err, errsz) != 0) return -1;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        if (err != NULL && errsz > 0) snprintf(err, errsz, "wire: a list was expected");
        return -1;
    }
    uint64_t last = 0;   /* the largest key - 1 */
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && (uint64_t)lua_tointeger(L, -2) - 1 > last)
            last = (uint64_t)lua_tointeger(L, -2) - 1;
        lua_pop(L, 1);
    }
    if (!index_fits(offset, last)) {
        lua_pop(L, 1);
        return list_does_not_fit(last + 1, offset, err, errsz);
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, t, index_at(offset, (uint64_t)lua_tointeger(L, -3) - 1));
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* ---------------------------------------------------------------- Lua API */

#define WIRE_BUFFER "forage.wire.buffer"

/* Buffers larger than this are released after use rather than kept for the next call. */
#define BUFFER_KEEP (1u << 20)

/* The encode buffer, owned by a userdata so that an error never leaks it. busy guards
   against reentry from a finalizer run by an allocation in the middle of an encode. */
typedef struct wire_buffer {
    buf b;
    int busy;
} wire_buffer;

/* Returns 0; frees the buffer (idempotent). */
static int buffer_gc(lua_State *L) {
    wire_buffer *w = type_check_fast(L, 1, WIRE_BUFFER);
    buf_free(&w->b);
    return 0;
}

/* Returns a new empty buffer, pushed. */
static wire_buffer *buffer_new(lua_State *L) {
    wire_buffer *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    luaL_setmetatable(L, WIRE_BUFFER);
    return w;
}

static const char *const encode_options[] = {"code", "root", NULL};
static const char *const decode_options[] = {"code", NULL};

/* Returns the flags chosen in the options table at idx (none or nil: data mode) after
   checking its keys against names; sets *root when root is not NULL, the string staying
   valid while the options table holds it. */
static int check_options(lua_State *L, int idx, const char *fname, const char *const names[], const char **root) {
    if (lua_isnoneornil(L, idx)) return WIRE_DATA;
    luaL_checktype(L, idx, LUA_TTABLE);
    args_check_options(L, idx, fname, names);
    if (root != NULL) *root = args_opt_string(L, idx, fname, "root", *root, NULL);
    return args_opt_boolean(L, idx, fname, "code", 0) ? WIRE_CODE : WIRE_DATA;
}

/* encode(v [, opts]) returns the encoded string; raises when v cannot be sent. */
static int l_encode(lua_State *L) {
    const char *root = "value";
    luaL_checkany(L, 1);
    int flags = check_options(L, 2, "forage.encode", encode_options, &root);
    wire_buffer *w = lua_touserdata(L, lua_upvalueindex(1));
    if (w->busy) {
        /* A reentrant call, or one that raised half-way: the old buffer stays with
           whoever holds it, and this call and later ones use a fresh one. */
        w = buffer_new(L);
        lua_replace(L, lua_upvalueindex(1));
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    char err[512];
    w->busy = 1;
    buf_reset(&w->b);
    if (wire_encode(L, 1, &w->b, flags, root, err, sizeof err) != 0) {
        w->busy = 0;
        return luaL_error(L, "%s", err);
    }
    lua_pushlstring(L, w->b.data, w->b.len);
    if (w->b.cap > BUFFER_KEEP) buf_free(&w->b);
    w->busy = 0;
    return 1;
}

/* decode(s [, opts]) returns the value, or nil, a message and "malformed" when s is not
   a valid message. */
static int l_decode(lua_State *L) {
    luaL_checktype(L, 1, LUA_TSTRING);
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    int flags = check_options(L, 2, "forage.decode", decode_options, NULL);
    char err[256];
    if (wire_decode(L, s, len, flags, err, sizeof err) != 0) return args_fail(L, "malformed", "%s", err);
    return 1;
}

/* decode_into(s, t, offset [, opts]) stores the items of the list message s in t from
   t[offset] on and returns t; nil, a message and "malformed" when s is not a valid list
   message. Raises when the items would go past math.maxinteger. */
static int l_decode_into(lua_State *L) {
    size_t len;
    luaL_checktype(L, 1, LUA_TSTRING);
    const char *s = lua_tolstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer offset = luaL_checkinteger(L, 3);
    int flags = check_options(L, 4, "decode_into", decode_options, NULL);
    char err[256];
    int rc = wire_decode_into(L, s, len, flags, 2, offset, err, sizeof err);
    if (rc == -2) return luaL_argerror(L, 3, err);
    if (rc != 0) return args_fail(L, "malformed", "%s", err);
    lua_settop(L, 2);
    return 1;
}

void forage_open_wire(lua_State *L) {
    static const luaL_Reg buffer_meta[] = {{"__gc", buffer_gc}, {NULL, NULL}};
    type_register(L, WIRE_BUFFER, NULL, buffer_meta, 1);
    buffer_new(L);
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_decode_into);
    lua_setfield(L, -2, "decode_into");
}
