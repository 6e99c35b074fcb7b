/* forage.Value and forage.Array: numbers of a C type in shared memory, mapped before the
   fork so that every process forked later sees the same bytes. Every access is one C11
   atomic operation on the element (load, store, fetch-add, compare-exchange, exchange),
   so no lock is ever taken and a process killed at any point leaves each element holding
   either its old or its new value. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "args.h"
#include "core.h"
#include "lauxlib.h"
#include "luatype.h"
#include "shm.h"

#define VALUE_TYPE "forage.Value"
#define ARRAY_TYPE "forage.Array"

/* The largest array forage maps (elements); keeps n * size far from overflow. */
#define ARRAY_MAX_ELEMENTS ((lua_Integer)1 << 36)

typedef enum { KIND_SIGNED, KIND_UNSIGNED, KIND_FLOAT } elem_kind;

typedef struct elem_type {
    const char *name;
    unsigned size;   /* bytes: 1, 2, 4 or 8 */
    elem_kind kind;
} elem_type;

static const elem_type ELEM_TYPES[] = {
    {"int8", 1, KIND_SIGNED},    {"int16", 2, KIND_SIGNED},    {"int32", 4, KIND_SIGNED},
    {"int64", 8, KIND_SIGNED},   {"uint8", 1, KIND_UNSIGNED},  {"uint16", 2, KIND_UNSIGNED},
    {"uint32", 4, KIND_UNSIGNED}, {"uint64", 8, KIND_UNSIGNED}, {"float", 4, KIND_FLOAT},
    {"double", 8, KIND_FLOAT},
};

/* Python's array/ctypes one-letter codes, with their sizes on x86-64 Linux. */
static const struct {
    char code;
    const char *name;
} TYPE_CODES[] = {
    {'b', "int8"},   {'B', "uint8"},  {'h', "int16"}, {'H', "uint16"}, {'i', "int32"}, {'I', "uint32"},
    {'l', "int64"},  {'L', "uint64"}, {'q', "int64"}, {'Q', "uint64"}, {'f', "float"}, {'d', "double"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* One shared mapping of count elements. A Value is an array of one. */
typedef struct shared_numbers {
    unsigned char *data;   /* NULL once closed */
    size_t map_size;
    lua_Integer count;
    const elem_type *type;
} shared_numbers;

/* ---------------------------------------------------------------------------------
   Types */

static const elem_type *find_type(const char *name) {
    for (size_t i = 0; i < COUNT(ELEM_TYPES); i++)
        if (strcmp(ELEM_TYPES[i].name, name) == 0) return &ELEM_TYPES[i];
    if (name[0] != '\0' && name[1] == '\0')
        for (size_t i = 0; i < COUNT(TYPE_CODES); i++)
            if (TYPE_CODES[i].code == name[0]) return find_type(TYPE_CODES[i].name);
    return NULL;
}

/* The type named at index i, or raises naming it and listing the valid ones. */
static const elem_type *check_type(lua_State *L, int i, const char *who) {
    const char *name = luaL_checkstring(L, i);
    const elem_type *t = find_type(name);
    if (t == NULL)
        luaL_error(L, "%s: unknown type %s (expected int8, int16, int32, int64, uint8, uint16, uint32, "
                      "uint64, float, double, or a code b B h H i I l L q Q f d)", who, args_show(L, i));
    return t;
}

/* ---------------------------------------------------------------------------------
   Atomic access to one element, by its width. Values travel as 64-bit patterns: the
   element's bits, zero-extended. */

static uint64_t bits_load(void *p, unsigned size) {
    switch (size) {
    case 1: return atomic_load((_Atomic uint8_t *)p);
    case 2: return atomic_load((_Atomic uint16_t *)p);
    case 4: return atomic_load((_Atomic uint32_t *)p);
    default: return atomic_load((_Atomic uint64_t *)p);
    }
}

static void bits_store(void *p, unsigned size, uint64_t v) {
    switch (size) {
    case 1: atomic_store((_Atomic uint8_t *)p, (uint8_t)v); break;
    case 2: atomic_store((_Atomic uint16_t *)p, (uint16_t)v); break;
    case 4: atomic_store((_Atomic uint32_t *)p, (uint32_t)v); break;
    default: atomic_store((_Atomic uint64_t *)p, v); break;
    }
}

static uint64_t bits_exchange(void *p, unsigned size, uint64_t v) {
    switch (size) {
    case 1: return atomic_exchange((_Atomic uint8_t *)p, (uint8_t)v);
    case 2: return atomic_exchange((_Atomic uint16_t *)p, (uint16_t)v);
    case 4: return atomic_exchange((_Atomic uint32_t *)p, (uint32_t)v);
    default: return atomic_exchange((_Atomic uint64_t *)p, v);
    }
}

/* Returns 1 when *expected was there and desired replaced it; 0 with *expected set to
   what is there. */
static int bits_cas(void *p, unsigned size, uint64_t *expected, uint64_t desired) {
    int ok;
    switch (size) {
    case 1: {
        uint8_t e = (uint8_t)*expected;
        ok = atomic_compare_exchange_strong((_Atomic uint8_t *)p, &e, (uint8_t)desired);
        *expected = e;
        break;
    }
    case 2: {
        uint16_t e = (uint16_t)*expected;
        ok = atomic_compare_exchange_strong((_Atomic uint16_t *)p, &e, (uint16_t)desired);
        *expected = e;
        break;
    }
    case 4: {
        uint32_t e = (uint32_t)*expected;
        ok = atomic_compare_exchange_strong((_Atomic uint32_t *)p, &e, (uint32_t)desired);
        *expected = e;
        break;
    }
    default:
        ok = atomic_compare_exchange_strong((_Atomic uint64_t *)p, expected, desired);
        break;
    }
    return ok;
}

/* Integer fetch-add, wrapping modulo 2^bits as C does; returns the new bits. */
static uint64_t bits_add(void *p, unsigned size, uint64_t delta) {
    switch (size) {
    case 1: return (uint8_t)(atomic_fetch_add((_Atomic uint8_t *)p, (uint8_t)delta) + (uint8_t)delta);
    case 2: return (uint16_t)(atomic_fetch_add((_Atomic uint16_t *)p, (uint16_t)delta) + (uint16_t)delta);
    case 4: return (uint32_t)(atomic_fetch_add((_Atomic uint32_t *)p, (uint32_t)delta) + (uint32_t)delta);
    default: return atomic_fetch_add((_Atomic uint64_t *)p, delta) + delta;
    }
}

static double float_from_bits(const elem_type *t, uint64_t bits) {
    if (t->size == 4) {
        uint32_t b = (uint32_t)bits;
        float f;
        memcpy(&f, &b, sizeof f);
        return (double)f;
    }
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static uint64_t float_to_bits(const elem_type *t, double x) {
    if (t->size == 4) {
        float f = (float)x;
        uint32_t b;
        memcpy(&b, &f, sizeof b);
        return b;
    }
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* ---------------------------------------------------------------------------------
   Lua numbers <-> element bits */

/* Pushes the element whose bits are given: integers for the integer types (a uint64
   above math.maxinteger as a float, as Lua reads such a decimal numeral), floats for
   float and double. */
static void push_bits(lua_State *L, const elem_type *t, uint64_t bits) {
    switch (t->kind) {
    case KIND_SIGNED: {
        /* Sign-extend without converting an out-of-range unsigned value to a signed one. */
        uint64_t mask = t->size == 8 ? UINT64_MAX : ((uint64_t)1 << 8 * t->size) - 1;
        uint64_t sign = (uint64_t)1 << (8 * t->size - 1);
        lua_pushinteger(L, (bits & sign) ? -(lua_Integer)(~bits & mask) - 1 : (lua_Integer)bits);
        break;
    }
    case KIND_UNSIGNED:
        if (bits > (uint64_t)LUA_MAXINTEGER) lua_pushnumber(L, (lua_Number)bits);
        else lua_pushinteger(L, (lua_Integer)bits);
        break;
    case KIND_FLOAT:
        lua_pushnumber(L, float_from_bits(t, bits));
        break;
    }
}

typedef enum { BITS_OK, BITS_NOT_NUMBER, BITS_NOT_INTEGER, BITS_DOES_NOT_FIT } bits_status;

/* The bits of the number at index i as an element of type t, in *out. */
static bits_status to_bits(lua_State *L, int i, const elem_type *t, uint64_t *out) {
    if (lua_type(L, i) != LUA_TNUMBER) return BITS_NOT_NUMBER;
    if (t->kind == KIND_FLOAT) {
        double x = lua_tonumber(L, i);
        if (t->size == 4 && isfinite(x) && fabs(x) > FLT_MAX) return BITS_DOES_NOT_FIT;
        *out = float_to_bits(t, x);
        return BITS_OK;
    }
    unsigned bits = 8 * t->size;
    int isnum;
    lua_Integer n = lua_tointegerx(L, i, &isnum);
    if (!isnum) {
        double x = lua_tonumber(L, i);
        if (!isfinite(x) || floor(x) != x) return BITS_NOT_INTEGER;
        /* An integral float beyond int64: only uint64 holds some of them. */
        if (t->kind == KIND_UNSIGNED && bits == 64 && x >= 0x1p63 && x < 0x1p64) {
            *out = (uint64_t)x;
            return BITS_OK;
        }
        return BITS_DOES_NOT_FIT;
    }
    if (t->kind == KIND_SIGNED) {
        if (bits < 64) {
            lua_Integer limit = (lua_Integer)1 << (bits - 1);
            if (n < -limit || n >= limit) return BITS_DOES_NOT_FIT;
        }
    } else if (n < 0 || (bits < 64 && n >= (lua_Integer)1 << bits)) {
        return BITS_DOES_NOT_FIT;
    }
    *out = (uint64_t)n;
    return BITS_OK;
}

/* Raises the error that status describes for the value at index i, "<who>: ...<where>". */
static int raise_bits(lua_State *L, int i, bits_status status, const elem_type *t, const char *who,
                      const char *where) {
    i = lua_absindex(L, i);
    if (status == BITS_NOT_NUMBER)
        return luaL_error(L, "%s: expected a number%s, got %s", who, where, luaL_typename(L, i));
    const char *shown = luaL_tolstring(L, i, NULL);
    if (status == BITS_NOT_INTEGER) return luaL_error(L, "%s: %s has no integer representation%s", who, shown, where);
    return luaL_error(L, "%s: %s does not fit %s%s", who, shown, t->name, where);
}

/* The bits of the number at index i as an element of type t; raises when it is not a
   number, has no integer representation (integer types) or does not fit t. */
static uint64_t check_bits(lua_State *L, int i, const elem_type *t, const char *who) {
    uint64_t bits = 0;
    bits_status status = to_bits(L, i, t, &bits);
    if (status != BITS_OK) raise_bits(L, i, status, t, who, "");
    return bits;
}

/* ---------------------------------------------------------------------------------
   The shared mapping */

/* A new closed object with metatable tname, then mapped: a failure leaves nothing mapped. */
static shared_numbers *new_shared(lua_State *L, const char *tname, const elem_type *t, lua_Integer count,
                                  const char *who) {
    shared_numbers *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, tname);
    size_t bytes = (size_t)count * t->size;
    s->map_size = bytes > 0 ? bytes : 1;
    s->data = shm_map(s->map_size);
    if (s->data == NULL)
        luaL_error(L, "%s: cannot map %I bytes of shared memory: %s", who, (lua_Integer)s->map_size, strerror(errno));
    s->count = count;
    s->type = t;
    shm_share(L, -1);
    return s;
}

/* The object at index i if it is a tname, else raises "tname expected". Every function
   of the two types has its type's metatable as upvalue 1 (type_check_fast): much cheaper
   than luaL_checkudata's registry lookup, on the path of every v:add(1). */
static shared_numbers *to_numbers(lua_State *L, int i, const char *tname) {
    return type_check_fast(L, i, tname);
}

static int shared_close(lua_State *L, const char *tname) {
    shared_numbers *s = to_numbers(L, 1, tname);
    shm_unmap(s->data, s->map_size);
    s->data = NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------
   forage.Value */

static shared_numbers *check_value(lua_State *L, int i) {
    shared_numbers *s = to_numbers(L, i, VALUE_TYPE);
    if (s->data == NULL) type_closed_error(L, VALUE_TYPE);
    return s;
}

/* forage.value(type [, init = 0]) -> a Value holding init. */
static int value_new(lua_State *L) {
    const elem_type *t = check_type(L, 1, "value");
    uint64_t bits = 0;
    if (!lua_isnoneornil(L, 2)) bits = check_bits(L, 2, t, "value");
    shared_numbers *s = new_shared(L, VALUE_TYPE, t, 1, "value");
    bits_store(s->data, t->size, bits);
    return 1;
}

/* v:add(delta) -> the new value. Integer types wrap modulo 2^bits, as C's atomic_fetch_add;
   float and double add through a compare-exchange loop. */
static int numbers_add(lua_State *L, shared_numbers *s, void *p, int delta_at, const char *who) {
    const elem_type *t = s->type;
    if (t->kind == KIND_FLOAT) {
        if (lua_type(L, delta_at) != LUA_TNUMBER) return raise_bits(L, delta_at, BITS_NOT_NUMBER, t, who, "");
        double delta = lua_tonumber(L, delta_at);
        uint64_t seen = bits_load(p, t->size);
        uint64_t next;
        do {
            next = float_to_bits(t, float_from_bits(t, seen) + delta);
        } while (!bits_cas(p, t->size, &seen, next));
        push_bits(L, t, next);
        return 1;
    }
    int isnum;
    lua_Integer delta = lua_tointegerx(L, delta_at, &isnum);
    if (!isnum)
        return raise_bits(L, delta_at, lua_type(L, delta_at) == LUA_TNUMBER ? BITS_NOT_INTEGER : BITS_NOT_NUMBER,
                          t, who, "");
    push_bits(L, t, bits_add(p, t->size, (uint64_t)delta));
    return 1;
}

/* cas(expected, new) -> true, new when the element held expected (compared as the
   element's bits) and now holds new; false, current otherwise. */
static int numbers_cas(lua_State *L, shared_numbers *s, void *p, int expected_at, const char *who) {
    const elem_type *t = s->type;
    uint64_t expected = check_bits(L, expected_at, t, who);
    uint64_t desired = check_bits(L, expected_at + 1, t, who);
    int ok = bits_cas(p, t->size, &expected, desired);
    lua_pushboolean(L, ok);
    push_bits(L, t, ok ? desired : expected);
    return 2;
}

/* exchange(new) -> the old value. */
static int numbers_exchange(lua_State *L, shared_numbers *s, void *p, int new_at, const char *who) {
    const elem_type *t = s->type;
    uint64_t bits = check_bits(L, new_at, t, who);
    push_bits(L, t, bits_exchange(p, t->size, bits));
    return 1;
}

static int value_add(lua_State *L) {
    shared_numbers *s = check_value(L, 1);
    return numbers_add(L, s, s->data, 2, "value");
}

static int value_cas(lua_State *L) {
    shared_numbers *s = check_value(L, 1);
    return numbers_cas(L, s, s->data, 2, "value");
}

static int value_exchange(lua_State *L) {
    shared_numbers *s = check_value(L, 1);
    return numbers_exchange(L, s, s->data, 2, "value");
}

/* v:close(), __gc and __close: unmaps this process's view; idempotent. Other processes
   keep theirs. */
static int value_close(lua_State *L) {
    return shared_close(L, VALUE_TYPE);
}

/* v.value (an atomic load), v.type (the type's name), or a method (looked up first: it is
   what a hot loop of v:add(1) asks for). */
static int value_index(lua_State *L) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING) return 1;
    const char *key = lua_tostring(L, 2);
    if (strcmp(key, "value") == 0) {
        shared_numbers *s = check_value(L, 1);
        push_bits(L, s->type, bits_load(s->data, s->type->size));
    } else if (strcmp(key, "type") == 0) {
        shared_numbers *s = to_numbers(L, 1, VALUE_TYPE);
        lua_pushstring(L, s->type->name);
    }
    return 1;
}

/* v.value = x: one atomic store; raises when x does not fit the type. */
static int value_newindex(lua_State *L) {
    shared_numbers *s = check_value(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "value") != 0)
        return luaL_error(L, "value: cannot set field %s (only 'value')", args_show(L, 2));
    bits_store(s->data, s->type->size, check_bits(L, 3, s->type, "value"));
    return 0;
}

static int value_tostring(lua_State *L) {
    shared_numbers *s = to_numbers(L, 1, VALUE_TYPE);
    if (s->data == NULL) {
        lua_pushliteral(L, "forage.Value (closed)");
        return 1;
    }
    push_bits(L, s->type, bits_load(s->data, s->type->size));
    lua_pushfstring(L, "forage.Value (%s %s)", s->type->name, luaL_tolstring(L, -1, NULL));
    return 1;
}

/* ---------------------------------------------------------------------------------
   forage.Array */

static shared_numbers *check_array(lua_State *L, int i) {
    shared_numbers *s = to_numbers(L, i, ARRAY_TYPE);
    if (s->data == NULL) type_closed_error(L, ARRAY_TYPE);
    return s;
}

/* The element at the 1-based index at stack index i, or raises. */
static void *check_element(lua_State *L, shared_numbers *s, int i) {
    int isnum;
    lua_Integer index = lua_tointegerx(L, i, &isnum);
    if (!isnum) {
        if (lua_type(L, i) == LUA_TNUMBER) luaL_error(L, "array index %s is not an integer", luaL_tolstring(L, i, NULL));
        luaL_error(L, "array index must be an integer, got %s", luaL_typename(L, i));
    }
    if (index < 1 || index > s->count)
        luaL_error(L, "array index %I out of range (1..%I)", (LUAI_UACINT)index, (LUAI_UACINT)s->count);
    return s->data + (size_t)(index - 1) * s->type->size;
}

/* forage.array(type, n | list) -> an Array of n zeros, or of the list's #list numbers. */
static int array_new(lua_State *L) {
    const elem_type *t = check_type(L, 1, "array");
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, 2);
        luaL_argcheck(L, n <= ARRAY_MAX_ELEMENTS, 2, "too many elements");
        shared_numbers *s = new_shared(L, ARRAY_TYPE, t, n, "array");
        for (lua_Integer k = 1; k <= n; k++) {
            uint64_t bits = 0;
            lua_geti(L, 2, k);
            int at = lua_gettop(L);
            bits_status status = to_bits(L, at, t, &bits);
            if (status != BITS_OK)
                raise_bits(L, at, status, t, "array", lua_pushfstring(L, " at index %I", (LUAI_UACINT)k));
            bits_store(s->data + (size_t)(k - 1) * t->size, t->size, bits);
            lua_pop(L, 1);
        }
        return 1;
    }
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "the length must not be negative");
    luaL_argcheck(L, n <= ARRAY_MAX_ELEMENTS, 2, "too many elements");
    new_shared(L, ARRAY_TYPE, t, n, "array");
    return 1;
}

/* arr[i] (an atomic load), arr.type, or a method. Reading an integer index out of
   1..#arr gives nil, as a Lua list does, so that ipairs(arr) stops after the last element;
   a non-integer index raises. */
static int array_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        shared_numbers *s = check_array(L, 1);
        int isint;
        lua_Integer index = lua_tointegerx(L, 2, &isint);
        if (isint && (index < 1 || index > s->count)) {
            lua_pushnil(L);
            return 1;
        }
        void *p = check_element(L, s, 2);
        push_bits(L, s->type, bits_load(p, s->type->size));
        return 1;
    }
    if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "type") == 0) {
        shared_numbers *s = to_numbers(L, 1, ARRAY_TYPE);
        lua_pushstring(L, s->type->name);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    return 1;
}

/* arr[i] = x: one atomic store; raises on a bad index or a number that does not fit. */
static int array_newindex(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    void *p = check_element(L, s, 2);
    bits_store(p, s->type->size, check_bits(L, 3, s->type, "array"));
    return 0;
}

static int array_len(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    lua_pushinteger(L, s->count);
    return 1;
}

/* arr:add(i, delta) -> the new value of arr[i]. */
static int array_add(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    return numbers_add(L, s, check_element(L, s, 2), 3, "array");
}

/* arr:cas(i, expected, new) -> true, new or false, current. */
static int array_cas(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    return numbers_cas(L, s, check_element(L, s, 2), 3, "array");
}

/* arr:exchange(i, new) -> the old value of arr[i]. */
static int array_exchange(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    return numbers_exchange(L, s, check_element(L, s, 2), 3, "array");
}

/* arr:totable() -> a new list of the elements (each read atomically, not all at once). */
static int array_totable(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    lua_createtable(L, s->count > INT32_MAX ? INT32_MAX : (int)s->count, 0);
    for (lua_Integer k = 0; k < s->count; k++) {
        push_bits(L, s->type, bits_load(s->data + (size_t)k * s->type->size, s->type->size));
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* arr:fill(x) -> arr, every element set to x (each store atomic, not all at once). */
static int array_fill(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    uint64_t bits = check_bits(L, 2, s->type, "array");
    for (lua_Integer k = 0; k < s->count; k++) bits_store(s->data + (size_t)k * s->type->size, s->type->size, bits);
    lua_settop(L, 1);
    return 1;
}

static int array_next(lua_State *L) {
    shared_numbers *s = check_array(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2) + 1;
    if (k > s->count) return 0;
    lua_pushinteger(L, k);
    push_bits(L, s->type, bits_load(s->data + (size_t)(k - 1) * s->type->size, s->type->size));
    return 2;
}

/* pairs(arr) -> i, arr[i] for i = 1..#arr. */
static int array_pairs(lua_State *L) {
    check_array(L, 1);
    lua_pushcfunction(L, array_next);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}

static int array_close(lua_State *L) {
    return shared_close(L, ARRAY_TYPE);
}

static int array_tostring(lua_State *L) {
    shared_numbers *s = to_numbers(L, 1, ARRAY_TYPE);
    if (s->data == NULL) lua_pushliteral(L, "forage.Array (closed)");
    else lua_pushfstring(L, "forage.Array (%s[%I])", s->type->name, (LUAI_UACINT)s->count);
    return 1;
}

/* Registers tname (type_register, fast) and replaces its __index table of methods by an
   __index closure with the metatable as upvalue 1 (see to_numbers) and the methods as
   upvalue 2. */
static void register_type(lua_State *L, const char *tname, const luaL_Reg *meta, const luaL_Reg *methods,
                          lua_CFunction index) {
    type_register(L, tname, methods, meta, 1);
    luaL_getmetatable(L, tname);
    lua_pushvalue(L, -1);
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void forage_open_value(lua_State *L) {
    static const luaL_Reg value_methods[] = {
        {"add", value_add}, {"cas", value_cas}, {"exchange", value_exchange}, {"close", value_close}, {NULL, NULL},
    };
    static const luaL_Reg value_meta[] = {
        {"__newindex", value_newindex}, {"__gc", value_close}, {"__close", value_close},
        {"__tostring", value_tostring}, {NULL, NULL},
    };
    static const luaL_Reg array_methods[] = {
        {"add", array_add},       {"cas", array_cas},   {"exchange", array_exchange},
        {"totable", array_totable}, {"fill", array_fill}, {"close", array_close}, {NULL, NULL},
    };
    static const luaL_Reg array_meta[] = {
        {"__newindex", array_newindex}, {"__len", array_len},        {"__pairs", array_pairs},
        {"__gc", array_close},          {"__close", array_close},    {"__tostring", array_tostring},
        {NULL, NULL},
    };
    register_type(L, VALUE_TYPE, value_meta, value_methods, value_index);
    register_type(L, ARRAY_TYPE, array_meta, array_methods, array_index);
    lua_pushcfunction(L, value_new);
    lua_setfield(L, -2, "value");
    lua_pushcfunction(L, array_new);
    lua_setfield(L, -2, "array");
}
