/* forage.sqlite: the few SQLite calls the crawl's state needs (lua/forage/crawl/state.lua
   holds the policy: what is stored, when it is committed). A module of its own, so that
   forage.core stays free of libraries and a crawl without a state never loads libsqlite3.

     local db, message, kind = sqlite.open(path [, { readonly = false, create = true,
                                                      busy_timeout = 5 }])
     db:exec(sql)                 -> true | nil, message, kind   (several statements, no rows)
     local st = db:prepare(sql)   -> a statement | nil, message, kind
     st:run(...)                  -> rows changed | nil, message, kind   (binds, steps to the end)
     st:each(fn, ...)             -> true | nil, message, kind   (fn(col1, col2, ...) a row)
     db:close(), st:close()       -- idempotent; also __gc and __close

   Values: nil is NULL, booleans are 0 and 1, integers and floats are themselves, and a
   Lua string is bound as a BLOB: bytes as Lua has them, never reinterpreted as text. A
   TEXT or BLOB column reads back as a string. Compare strings with parameters, not with
   text literals ('a' is TEXT, which no BLOB equals).

   Failures that a correct program meets (a corrupted file, a full disk, a read-only
   directory, another writer) return nil, SQLite's message and a kind: "corrupt", "full",
   "readonly", "busy", "io", "constraint" or "error". A statement in error is reset, so it
   can run again.

   After fork(): a connection belongs to the process that opened it. SQLite must not be
   used across fork, and closing an inherited connection could checkpoint and delete the
   parent's write-ahead log (the child holds none of the parent's POSIX locks, so it would
   think itself the last connection). A child therefore gets an error from every call, and
   its __gc leaves the handle alone. */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "lauxlib.h"
#include "lua.h"
#include "luatype.h"

#define DB_TYPE "forage.sqlite.Database"
#define STMT_TYPE "forage.sqlite.Statement"

typedef struct statement statement;

typedef struct {
    sqlite3 *db;          /* NULL once closed */
    pid_t owner;          /* the process that opened it */
    statement *statements; /* open statements, finalized with the connection */
} database;

struct statement {
    sqlite3_stmt *stmt;   /* NULL once closed */
    database *db;
    statement *next, *prev;
};

int luaopen_forage_sqlite(lua_State *L);

/* This process's id, kept by a fork handler: getpid() is a system call (about 2 us on a
   virtual machine), and every call of a journaled crawl checks it. */
static pid_t current_pid;

static void note_pid(void) { current_pid = getpid(); }

static const char *kind_of(int code) {
    switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return "corrupt";
    case SQLITE_FULL: return "full";
    case SQLITE_READONLY:
    case SQLITE_PERM: return "readonly";
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return "busy";
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return "io";
    case SQLITE_CONSTRAINT: return "constraint";
    default: return "error";
    }
}

/* nil, the connection's message, its kind; 3 results. */
static int sqlite_fail(lua_State *L, sqlite3 *db, int code) {
    const char *message = db ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    int extended = db ? sqlite3_extended_errcode(db) : code;
    return args_fail(L, kind_of(extended), "%s", message);
}

static void check_owner(lua_State *L, const database *d) {
    if (d->owner != current_pid)
        luaL_error(L, "forage.sqlite: this connection was opened by process %d and cannot be used in another",
                   (int)d->owner);
}

static database *check_database(lua_State *L, int i) {
    database *d = luaL_checkudata(L, i, DB_TYPE);
    if (d->db == NULL) type_closed_error(L, DB_TYPE);
    check_owner(L, d);
    return d;
}

static statement *check_statement(lua_State *L, int i) {
    statement *s = luaL_checkudata(L, i, STMT_TYPE);
    if (s->stmt == NULL) type_closed_error(L, STMT_TYPE);
    check_owner(L, s->db);
    return s;
}

static void statement_unlink(statement *s) {
    if (s->prev) s->prev->next = s->next;
    else s->db->statements = s->next;
    if (s->next) s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* sqlite.open(path [, opts]) -> a connection, or nil, message, kind. */
static int sqlite_open(lua_State *L) {
    static const char *const options[] = {"readonly", "create", "busy_timeout", NULL};
    const char *path = luaL_checkstring(L, 1);
    int readonly = 0, create = 1;
    double busy = 5;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        args_check_options(L, 2, "forage.sqlite.open", options);
        readonly = args_opt_boolean(L, 2, "forage.sqlite.open", "readonly", 0);
        create = args_opt_boolean(L, 2, "forage.sqlite.open", "create", 1);
        busy = args_opt_number(L, 2, "forage.sqlite.open", "busy_timeout", 5, 0, 3600);
    }
    database *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->db = NULL;
    d->owner = current_pid;
    d->statements = NULL;
    luaL_setmetatable(L, DB_TYPE);
    int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    flags |= readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        int r = sqlite_fail(L, db, rc);
        sqlite3_close_v2(db);
        return r;
    }
    sqlite3_busy_timeout(db, (int)(busy * 1000));
    d->db = db;
    return 1;
}

/* db:exec(sql) -> true, or nil, message, kind. */
static int database_exec(lua_State *L) {
    database *d = check_database(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return sqlite_fail(L, d->db, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:prepare(sql) -> a statement, or nil, message, kind (a corrupted file shows here,
   when the schema is read). */
static int database_prepare(lua_State *L) {
    database *d = check_database(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    statement *s = lua_newuserdatauv(L, sizeof *s, 1);
    s->stmt = NULL;
    s->db = d;
    s->next = s->prev = NULL;
    luaL_setmetatable(L, STMT_TYPE);
    lua_pushvalue(L, 1);               /* the connection lives as long as its statements */
    lua_setiuservalue(L, -2, 1);
    int rc = sqlite3_prepare_v3(d->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &s->stmt, NULL);
    if (rc != SQLITE_OK) return sqlite_fail(L, d->db, rc);
    if (s->stmt == NULL) return luaL_argerror(L, 2, "no SQL statement in it");
    s->next = d->statements;
    if (d->statements) d->statements->prev = s;
    d->statements = s;
    return 1;
}

/* db:changes() -> rows changed by the last statement; db:total_changes(). */
static int database_changes(lua_State *L) {
    database *d = check_database(L, 1);
    lua_pushinteger(L, sqlite3_changes64(d->db));
    return 1;
}

/* db:in_transaction() -> true inside BEGIN ... COMMIT. */
static int database_in_transaction(lua_State *L) {
    database *d = check_database(L, 1);
    lua_pushboolean(L, !sqlite3_get_autocommit(d->db));
    return 1;
}

static int database_close(lua_State *L) {
    database *d = luaL_checkudata(L, 1, DB_TYPE);
    if (d->db == NULL || d->owner != current_pid) return 0;
    for (statement *s = d->statements; s; s = s->next) {
        sqlite3_finalize(s->stmt);
        s->stmt = NULL;
    }
    d->statements = NULL;
    sqlite3_close_v2(d->db);
    d->db = NULL;
    return 0;
}

static int database_tostring(lua_State *L) {
    database *d = luaL_checkudata(L, 1, DB_TYPE);
    if (d->db == NULL) lua_pushfstring(L, "%s (closed)", DB_TYPE);
    else lua_pushfstring(L, "%s (%s)", DB_TYPE, sqlite3_db_filename(d->db, "main"));
    return 1;
}

/* Binds the arguments from first on to the statement's parameters, in order. */
static void statement_bind(lua_State *L, statement *s, int first) {
    int top = lua_gettop(L);
    int count = sqlite3_bind_parameter_count(s->stmt);
    if (top - first + 1 != count)
        luaL_error(L, "forage.sqlite: the statement takes %d values, got %d", count, top - first + 1);
    for (int i = first; i <= top; i++) {
        int n = i - first + 1, rc;
        switch (lua_type(L, i)) {
        case LUA_TNIL: rc = sqlite3_bind_null(s->stmt, n); break;
        case LUA_TBOOLEAN: rc = sqlite3_bind_int(s->stmt, n, lua_toboolean(L, i)); break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i)) rc = sqlite3_bind_int64(s->stmt, n, lua_tointeger(L, i));
            else rc = sqlite3_bind_double(s->stmt, n, lua_tonumber(L, i));
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *bytes = lua_tolstring(L, i, &len);
            rc = sqlite3_bind_blob64(s->stmt, n, bytes, len, SQLITE_TRANSIENT);
            break;
        }
        default:
            luaL_typeerror(L, i, "nil, boolean, number or string");
            return;
        }
        if (rc != SQLITE_OK) luaL_error(L, "forage.sqlite: cannot bind value %d: %s", n, sqlite3_errstr(rc));
    }
}

static void push_column(lua_State *L, sqlite3_stmt *stmt, int col) {
    switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(stmt, col)); break;
    case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(stmt, col)); break;
    case SQLITE_NULL: lua_pushnil(L); break;
    default: {
        const void *bytes = sqlite3_column_blob(stmt, col);
        lua_pushlstring(L, bytes ? bytes : "", (size_t)sqlite3_column_bytes(stmt, col));
    }
    }
}

/* Makes the statement ready to run again, its values unbound. */
static void statement_rewind(statement *s) {
    sqlite3_reset(s->stmt);
    sqlite3_clear_bindings(s->stmt);
}

/* st:run(...) -> the rows it changed, or nil, message, kind. */
static int statement_run(lua_State *L) {
    statement *s = check_statement(L, 1);
    statement_bind(L, s, 2);
    int rc;
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {}
    statement_rewind(s);
    if (rc != SQLITE_DONE) return sqlite_fail(L, s->db->db, rc);
    lua_pushinteger(L, sqlite3_changes64(s->db->db));
    return 1;
}

/* st:each(fn, ...) -> true, or nil, message, kind: fn(columns...) for each row. An error
   in fn resets the statement and goes on up. */
static int statement_each(lua_State *L) {
    statement *s = check_statement(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    statement_bind(L, s, 3);
    lua_settop(L, 2);
    int columns = sqlite3_column_count(s->stmt), rc;
    luaL_checkstack(L, columns + 2, "too many columns");
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
        lua_pushvalue(L, 2);
        for (int c = 0; c < columns; c++) push_column(L, s->stmt, c);
        if (lua_pcall(L, columns, 0, 0) != LUA_OK) {
            statement_rewind(s);
            return lua_error(L);
        }
    }
    statement_rewind(s);
    if (rc != SQLITE_DONE) return sqlite_fail(L, s->db->db, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int statement_close(lua_State *L) {
    statement *s = luaL_checkudata(L, 1, STMT_TYPE);
    if (s->stmt == NULL || s->db->owner != current_pid) return 0;
    statement_unlink(s);
    sqlite3_finalize(s->stmt);
    s->stmt = NULL;
    return 0;
}

static int statement_tostring(lua_State *L) {
    statement *s = luaL_checkudata(L, 1, STMT_TYPE);
    if (s->stmt == NULL) lua_pushfstring(L, "%s (closed)", STMT_TYPE);
    else lua_pushfstring(L, "%s (%s)", STMT_TYPE, sqlite3_sql(s->stmt));
    return 1;
}

int luaopen_forage_sqlite(lua_State *L) {
    static const luaL_Reg db_methods[] = {
        {"exec", database_exec}, {"prepare", database_prepare}, {"changes", database_changes},
        {"in_transaction", database_in_transaction}, {"close", database_close}, {NULL, NULL},
    };
    static const luaL_Reg db_meta[] = {
        {"__gc", database_close}, {"__close", database_close}, {"__tostring", database_tostring}, {NULL, NULL},
    };
    static const luaL_Reg stmt_methods[] = {
        {"run", statement_run}, {"each", statement_each}, {"close", statement_close}, {NULL, NULL},
    };
    static const luaL_Reg stmt_meta[] = {
        {"__gc", statement_close}, {"__close", statement_close}, {"__tostring", statement_tostring}, {NULL, NULL},
    };
    static const luaL_Reg functions[] = {{"open", sqlite_open}, {NULL, NULL}};
    static int fork_handler;
    luaL_checkversion(L);
    if (!fork_handler) {
        note_pid();
        if (pthread_atfork(NULL, NULL, note_pid) != 0) return luaL_error(L, "forage.sqlite: pthread_atfork failed");
        fork_handler = 1;
    }
    type_register(L, DB_TYPE, db_methods, db_meta, 0);
    type_register(L, STMT_TYPE, stmt_methods, stmt_meta, 0);
    luaL_newlib(L, functions);
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "version");
    return 1;
}
