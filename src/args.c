/* The one rule for arguments, options and expected failures (see args.h). */
#include "args.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"

#define SHOW_MAX 60   /* bytes of a value repeated in an error message */

const char *args_show(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addchar(&b, '\'');
        for (size_t i = 0; i < len && i < SHOW_MAX; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
                luaL_addchar(&b, (char)c);
            } else {
                char esc[8];
                snprintf(esc, sizeof esc, "\\x%02x", c);
                luaL_addstring(&b, esc);
            }
        }
        if (len > SHOW_MAX) luaL_addstring(&b, "...");
        luaL_addchar(&b, '\'');
        luaL_pushresult(&b);
        return lua_tostring(L, -1);
    }
    if (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) != lua_tonumber(L, idx))
        return lua_pushliteral(L, "nan");   /* printf says "-nan" or "nan" as it likes */
    if (lua_type(L, idx) == LUA_TNUMBER || lua_type(L, idx) == LUA_TBOOLEAN) return luaL_tolstring(L, idx, NULL);
    if (lua_isnil(L, idx)) {
        lua_pushliteral(L, "nil");
        return lua_tostring(L, -1);
    }
    return lua_pushstring(L, luaL_typename(L, idx));
}

void args_check_options(lua_State *L, int idx, const char *fname, const char *const names[]) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) return;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *key = lua_tostring(L, -1);
            for (int i = 0; names[i] != NULL && !known; i++) known = strcmp(key, names[i]) == 0;
        }
        if (!known) {
            const char *shown = args_show(L, -1);
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; names[i] != NULL; i++) {
                if (i > 0) luaL_addstring(&b, ", ");
                luaL_addstring(&b, names[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option %s (known: %s)", fname, shown, lua_tostring(L, -1));
        }
    }
}

/* Pushes the field; returns 0 (and pushes nothing) when absent. */
static int get_option(lua_State *L, int idx, const char *key) {
    if (lua_type(L, idx) != LUA_TTABLE) return 0;
    if (lua_getfield(L, idx, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static int option_error(lua_State *L, const char *fname, const char *key, const char *what) {
    return luaL_error(L, "%s: option '%s' must be %s, got %s", fname, key, what, args_show(L, -1));
}

lua_Integer args_opt_integer(lua_State *L, int idx, const char *fname, const char *key, lua_Integer def,
                             lua_Integer min, lua_Integer max) {
    idx = lua_absindex(L, idx);
    if (!get_option(L, idx, key)) return def;
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < min || n > max) {
        lua_pushfstring(L, "an integer from %I to %I", (LUAI_UACINT)min, (LUAI_UACINT)max);
        lua_insert(L, -2);
        option_error(L, fname, key, lua_tostring(L, -2));
    }
    lua_pop(L, 1);
    return n;
}

double args_opt_number(lua_State *L, int idx, const char *fname, const char *key, double def, double min,
                       double max) {
    idx = lua_absindex(L, idx);
    if (!get_option(L, idx, key)) return def;
    int isnum;
    double d = (double)lua_tonumberx(L, -1, &isnum);
    if (!isnum || lua_type(L, -1) != LUA_TNUMBER || !(d >= min && d <= max)) {
        lua_pushfstring(L, "a number from %f to %f", (LUAI_UACNUMBER)min, (LUAI_UACNUMBER)max);
        lua_insert(L, -2);
        option_error(L, fname, key, lua_tostring(L, -2));
    }
    lua_pop(L, 1);
    return d;
}

int args_opt_boolean(lua_State *L, int idx, const char *fname, const char *key, int def) {
    idx = lua_absindex(L, idx);
    if (!get_option(L, idx, key)) return def;
    if (!lua_isboolean(L, -1)) option_error(L, fname, key, "a boolean");
    int b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

const char *args_opt_string(lua_State *L, int idx, const char *fname, const char *key, const char *def,
                            size_t *len) {
    idx = lua_absindex(L, idx);
    if (!get_option(L, idx, key)) {
        if (len != NULL) *len = def != NULL ? strlen(def) : 0;
        return def;
    }
    if (lua_type(L, -1) != LUA_TSTRING) option_error(L, fname, key, "a string");
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);   /* still referenced by the options table */
    return s;
}

/* -1 for forever, else d; 0 when d is not a valid timeout. */
static int timeout_value(double d, double *out) {
    if (isnan(d) || d < 0) return 0;
    *out = d > ARGS_FOREVER ? -1 : d;
    return 1;
}

double args_opt_timeout(lua_State *L, int idx, const char *fname, const char *key) {
    idx = lua_absindex(L, idx);
    if (!get_option(L, idx, key)) return -1;
    double t = -1;
    if (lua_type(L, -1) != LUA_TNUMBER || !timeout_value((double)lua_tonumber(L, -1), &t))
        option_error(L, fname, key, "nil or a non-negative number of seconds");
    lua_pop(L, 1);
    return t;
}

double args_timeout(lua_State *L, int arg) {
    if (lua_isnoneornil(L, arg)) return -1;
    double t = -1;
    if (lua_type(L, arg) != LUA_TNUMBER || !timeout_value((double)lua_tonumber(L, arg), &t)) {
        const char *shown = args_show(L, arg);
        luaL_argerror(L, arg, lua_pushfstring(L, "timeout must be nil or a non-negative number of seconds, got %s",
                                              shown));
    }
    return t;
}

int args_fail(lua_State *L, const char *kind, const char *fmt, ...) {
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushstring(L, kind);
    return 3;
}
