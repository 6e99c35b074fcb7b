/* forage.url: parsing, joining, canonical forms and fingerprints of URLs, on libcurl's URL API.
   Every curl handle and every byte curl hands back lives in a url_work box (a userdata with
   __gc), so a Lua error at any point (a memory error while pushing a result) leaks nothing. */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "args.h"
#include "buf.h"
#include "core.h"
#include "hash.h"
#include "lauxlib.h"
#include "luatype.h"
#include "url.h"

#define URL_WORK_TYPE "forage.url.work"

/* What canonical takes from curl, in the order it writes them back. */
enum { P_SCHEME, P_USER, P_PASSWORD, P_HOST, P_ZONEID, P_PORT, P_PATH, P_QUERY, P_FRAGMENT, P_COUNT };

static const CURLUPart part_ids[P_COUNT] = {
    CURLUPART_SCHEME, CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_HOST, CURLUPART_ZONEID,
    CURLUPART_PORT, CURLUPART_PATH, CURLUPART_QUERY, CURLUPART_FRAGMENT,
};

typedef struct query_param {
    const char *text;   /* name[=value], already normalised, inside url_work.query */
    size_t len;
    size_t name_len;
    size_t order;       /* position in the URL: makes the sort stable */
} query_param;

typedef struct url_work {
    CURLU *handle;
    char *parts[P_COUNT];   /* strings from curl_url_get, freed with curl_free */
    buf out;                /* the canonical URL being written */
    buf query;              /* the normalised query, split into params */
    query_param *params;
    size_t param_count;
} url_work;

typedef struct drop_pattern {
    const char *text;
    size_t len;
    int prefix;   /* a trailing '*': matches names starting with text[0 .. len) */
} drop_pattern;

typedef struct canonical_opts {
    const drop_pattern *drop;
    size_t drop_count;
    int keep_fragment;
    int sort_query;
} canonical_opts;

static const drop_pattern default_drop[] = {{"utm_", 4, 1}};

/* ---- credentials ---- */

/* Where the password of u's userinfo lies: [*from, *to), or 0 when u has none. The usual
   authority ends at the first '/', '?' or '#'; a password may hold those too
   ("http://user:s3cr/t@host"), which no parser reads as a password but which is one all the
   same: when the authority has no '@' but one comes later, the text after "user:" is taken
   as a password unless it reads as a port (digits only). Erring this way masks too much,
   never too little. */
static int find_password(const char *u, size_t *from, size_t *to) {
    const char *scheme_end = strstr(u, "://");
    const char *auth = scheme_end != NULL ? scheme_end + 3 : u;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + auth_len; p++)
        if (*p == '@') at = p;
    if (at == NULL) {
        at = strrchr(auth + auth_len, '@');
        if (at == NULL) return 0;
        const char *colon = memchr(auth, ':', auth_len);
        if (colon == NULL) return 0;
        size_t digits = strspn(colon + 1, "0123456789");
        if (colon + 1 + digits == auth + auth_len) return 0;   /* host:port/...@... */
    }
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon == NULL) return 0;
    *from = (size_t)(colon + 1 - u);
    *to = (size_t)(at - u);
    return 1;
}

char *url_mask_password(const char *u, char **secret) {
    if (secret != NULL) *secret = NULL;
    size_t from, to;
    if (!find_password(u, &from, &to)) return strdup(u);
    size_t tail = strlen(u + to);
    char *out = malloc(from + 3 + tail + 1);
    if (out == NULL) return NULL;
    memcpy(out, u, from);
    memcpy(out + from, "***", 3);
    memcpy(out + from + 3, u + to, tail + 1);
    if (secret != NULL && to > from) {
        *secret = strndup(u + from, to - from);
        if (*secret == NULL) {
            free(out);
            return NULL;
        }
    }
    return out;
}

/* __gc and explicit release: frees whatever the box still holds; idempotent. */
static void work_release(url_work *w) {
    if (w->handle != NULL) curl_url_cleanup(w->handle);
    w->handle = NULL;
    for (int i = 0; i < P_COUNT; i++) {
        curl_free(w->parts[i]);
        w->parts[i] = NULL;
    }
    buf_free(&w->out);
    buf_free(&w->query);
    free(w->params);
    w->params = NULL;
    w->param_count = 0;
}

static int work_gc(lua_State *L) {
    work_release(luaL_checkudata(L, 1, URL_WORK_TYPE));
    return 0;
}

/* A new empty box on the stack top, then its curl handle: an allocation failure leaves
   nothing behind. Raises on out of memory. */
static url_work *work_new(lua_State *L) {
    url_work *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    luaL_setmetatable(L, URL_WORK_TYPE);
    w->handle = curl_url();
    if (w->handle == NULL) luaL_error(L, "not enough memory");
    return w;
}

/* Pushes nil, "bad url: <reason> (<the URL at idx>)", "malformed" for the caller to return:
   the URL with its password masked, cut to 60 bytes. Returns 3. */
static int push_bad_url(lua_State *L, const char *reason, int idx) {
    size_t len, from, to;
    const char *u = lua_tolstring(L, idx, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (find_password(u, &from, &to)) {
        luaL_addlstring(&b, u, from);
        luaL_addstring(&b, "***");
        luaL_addlstring(&b, u + to, len - to);
    } else {
        luaL_addlstring(&b, u, len);
    }
    luaL_pushresult(&b);
    const char *shown = args_show(L, -1);
    return args_fail(L, "malformed", "bad url: %s (%s)", reason, shown);
}

/* Returns the string at i, raising for a non-string (a number is no URL) and failing
   softly (NULL) on an embedded NUL, which curl would silently cut the URL at. */
static const char *check_url_arg(lua_State *L, int i) {
    luaL_checktype(L, i, LUA_TSTRING);
    size_t len;
    const char *u = lua_tolstring(L, i, &len);
    return strlen(u) == len ? u : NULL;
}

/* Returns CURLUE_OK with u parsed into w->handle, or curl's error code. */
static CURLUcode work_set(url_work *w, const char *u) {
    return curl_url_set(w->handle, CURLUPART_URL, u, CURLU_NON_SUPPORT_SCHEME);
}

/* ---- percent-encoding normalisation ---- */

static int is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char hex_upper[] = "0123456789ABCDEF";

#define SUB_DELIMS "!$&'()*+,;="
static const char RAW_PATH_SET[] = SUB_DELIMS ":@/";

/* Returns 0 or -1 (out of memory). Appends s with escapes of unreserved characters decoded,
   the hex of other escapes in upper case, and every byte that may not stand raw in this
   component (raw_ok: the characters allowed besides unreserved ones) percent-encoded.
   A '%' that starts no escape becomes "%25": kept raw, "%e%38" would decode to a new escape
   "%e8" and the result would not be a fixed point. */
static int append_normalized(buf *b, const char *s, size_t n, const char *raw_ok) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value((unsigned char)s[i + 2]) : -1;
            if (hi >= 0 && lo >= 0) {
                unsigned char decoded = (unsigned char)(hi * 16 + lo);
                i += 2;
                /* in a path, a decoded '.' could make a dot segment that curl has already
                   removed: "%2E" stays, so the result is a fixed point */
                if (is_unreserved(decoded) && !(decoded == '.' && raw_ok == RAW_PATH_SET)) {
                    if (buf_putc(b, decoded) != 0) return -1;
                    continue;
                }
                char esc[3] = {'%', hex_upper[hi], hex_upper[lo]};
                if (buf_append(b, esc, 3) != 0) return -1;
                continue;
            }
            if (buf_append(b, "%25", 3) != 0) return -1;
            continue;
        }
        if (is_unreserved(c) || (c > 0x20 && c < 0x7f && strchr(raw_ok, c) != NULL)) {
            if (buf_putc(b, c) != 0) return -1;
            continue;
        }
        char esc[3] = {'%', hex_upper[c >> 4], hex_upper[c & 15]};
        if (buf_append(b, esc, 3) != 0) return -1;
    }
    return 0;
}

#define RAW_USER SUB_DELIMS
#define RAW_PASSWORD SUB_DELIMS ":"
#define RAW_PATH RAW_PATH_SET
#define RAW_QUERY SUB_DELIMS ":@/?"
#define RAW_FRAGMENT SUB_DELIMS ":@/?"

/* ---- query parameters ---- */

/* Returns 1 when the parameter name matches a drop pattern. */
static int param_dropped(const char *name, size_t len, const canonical_opts *o) {
    for (size_t i = 0; i < o->drop_count; i++) {
        const drop_pattern *d = &o->drop[i];
        if (d->prefix ? len >= d->len && memcmp(name, d->text, d->len) == 0
                      : len == d->len && memcmp(name, d->text, len) == 0)
            return 1;
    }
    return 0;
}

/* Byte order of a and b (lengths na, nb): negative, zero or positive. */
static int compare_bytes(const char *a, size_t na, const char *b, size_t nb) {
    int c = memcmp(a, b, na < nb ? na : nb);
    if (c != 0) return c;
    return na < nb ? -1 : na > nb ? 1 : 0;
}

/* qsort order: by name, then value, then position (so equal pairs keep their order). */
static int compare_params(const void *pa, const void *pb) {
    const query_param *a = pa, *b = pb;
    int c = compare_bytes(a->text, a->name_len, b->text, b->name_len);
    if (c == 0) c = compare_bytes(a->text + a->name_len, a->len - a->name_len,
                                  b->text + b->name_len, b->len - b->name_len);
    if (c == 0) c = a->order < b->order ? -1 : a->order > b->order;
    return c;
}

/* Returns 0 or -1 (out of memory). Appends "?" and the kept parameters of query to w->out,
   or nothing when none is kept. Empty parameters ("a&&b") are dropped. */
static int append_query(url_work *w, const char *query, const canonical_opts *o) {
    if (append_normalized(&w->query, query, strlen(query), RAW_QUERY) != 0) return -1;
    /* Decoding only unreserved characters never creates an '&' or '=', so splitting the
       normalised text splits the parameters the URL has. */
    if (w->query.len == 0) return 0;
    size_t most = 1;
    for (size_t i = 0; i < w->query.len; i++) most += w->query.data[i] == '&';
    w->params = malloc(most * sizeof *w->params);
    if (w->params == NULL) return -1;
    const char *p = w->query.data, *end = w->query.data + w->query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        size_t len = amp != NULL ? (size_t)(amp - p) : (size_t)(end - p);
        const char *eq = memchr(p, '=', len);
        size_t name_len = eq != NULL ? (size_t)(eq - p) : len;
        if (len > 0 && !param_dropped(p, name_len, o)) {
            query_param *q = &w->params[w->param_count];
            q->text = p;
            q->len = len;
            q->name_len = name_len;
            q->order = w->param_count++;
        }
        if (amp == NULL) break;
        p = amp + 1;
    }
    if (w->param_count == 0) return 0;
    if (o->sort_query) qsort(w->params, w->param_count, sizeof *w->params, compare_params);
    for (size_t i = 0; i < w->param_count; i++) {
        if (buf_putc(&w->out, i == 0 ? '?' : '&') != 0) return -1;
        if (buf_append(&w->out, w->params[i].text, w->params[i].len) != 0) return -1;
    }
    return 0;
}

/* ---- the canonical form ---- */

static int append_lower(buf *b, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (buf_putc(b, c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c) != 0) return -1;
    }
    return 0;
}

/* Returns 0 or -1 (out of memory). Appends a name host lower-cased; curl hands it back
   percent-decoded, so what would not read back as itself ('%', delimiters) is re-encoded. */
static int append_host(buf *b, const char *host) {
    for (; *host; host++) {
        unsigned char c = (unsigned char)*host;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (is_unreserved(c) || c >= 0x80 || strchr(SUB_DELIMS, c) != NULL) {
            if (buf_putc(b, c) != 0) return -1;
            continue;
        }
        char esc[3] = {'%', hex_upper[c >> 4], hex_upper[c & 15]};
        if (buf_append(b, esc, 3) != 0) return -1;
    }
    return 0;
}

/* Returns 1 when port is the default of scheme and goes unwritten. */
static int default_port(const char *scheme, long port) {
    return (strcasecmp(scheme, "http") == 0 && port == 80) || (strcasecmp(scheme, "https") == 0 && port == 443);
}

/* Returns CURLUE_OK with the canonical form of u in w->out, CURLUE_OUT_OF_MEMORY, or curl's
   parse error. Calls no Lua: all it allocates is owned by w. */
static CURLUcode canonicalize(url_work *w, const char *u, const canonical_opts *o) {
    CURLUcode rc = work_set(w, u);
    if (rc != CURLUE_OK) return rc;
    for (int i = 0; i < P_COUNT; i++) {
        rc = curl_url_get(w->handle, part_ids[i], &w->parts[i], 0);
        if (rc == CURLUE_OUT_OF_MEMORY) return rc;
    }
    char **part = w->parts;
    if (part[P_SCHEME] == NULL || part[P_PATH] == NULL) return CURLUE_MALFORMED_INPUT;
    buf *out = &w->out;
    int oom = 0;
    oom |= append_lower(out, part[P_SCHEME]);
    oom |= buf_append(out, "://", 3);
    if (part[P_USER] != NULL || part[P_PASSWORD] != NULL) {
        if (part[P_USER] != NULL) oom |= append_normalized(out, part[P_USER], strlen(part[P_USER]), RAW_USER);
        if (part[P_PASSWORD] != NULL) {
            oom |= buf_putc(out, ':');
            oom |= append_normalized(out, part[P_PASSWORD], strlen(part[P_PASSWORD]), RAW_PASSWORD);
        }
        oom |= buf_putc(out, '@');
    }
    if (part[P_HOST] != NULL) {
        const char *host = part[P_HOST];
        size_t host_len = strlen(host);
        if (part[P_ZONEID] != NULL && host_len > 0 && host[host_len - 1] == ']') {
            /* curl hands the zone of an IPv6 address apart: it goes back inside the brackets */
            char *bracket = part[P_HOST] + host_len - 1;
            *bracket = '\0';
            oom |= append_lower(out, host);
            oom |= buf_append(out, "%25", 3);
            oom |= buf_append(out, part[P_ZONEID], strlen(part[P_ZONEID]));   /* curl takes it only raw */
            oom |= buf_putc(out, ']');
            *bracket = ']';
        } else {
            oom |= append_host(out, host);
        }
    }
    if (part[P_PORT] != NULL) {
        long port = strtol(part[P_PORT], NULL, 10);
        if (!default_port(part[P_SCHEME], port)) {
            char digits[24];
            int n = snprintf(digits, sizeof digits, ":%ld", port);
            oom |= buf_append(out, digits, (size_t)n);
        }
    }
    if (part[P_PATH][0] != '/') oom |= buf_putc(out, '/');   /* "file:x": curl's path lacks it */
    oom |= append_normalized(out, part[P_PATH], strlen(part[P_PATH]), RAW_PATH);
    if (part[P_QUERY] != NULL) oom |= append_query(w, part[P_QUERY], o);
    if (o->keep_fragment && part[P_FRAGMENT] != NULL) {
        oom |= buf_putc(out, '#');
        oom |= append_normalized(out, part[P_FRAGMENT], strlen(part[P_FRAGMENT]), RAW_FRAGMENT);
    }
    return oom ? CURLUE_OUT_OF_MEMORY : CURLUE_OK;
}

/* Reads canonical's options from the table at i (or none). Returns them; the drop patterns
   live in a userdata pushed on the stack, and point into strings held by the table at i.
   fname names the function for errors. */
static canonical_opts check_canonical_opts(lua_State *L, int i, const char *fname) {
    static const char *const names[] = {"drop", "keep_fragment", "sort_query", NULL};
    canonical_opts o = {default_drop, 1, 0, 1};
    lua_settop(L, i);
    if (lua_isnil(L, i)) {
        lua_pushnil(L);   /* the stack looks the same either way */
        return o;
    }
    luaL_checktype(L, i, LUA_TTABLE);
    args_check_options(L, i, fname, names);
    o.keep_fragment = args_opt_boolean(L, i, fname, "keep_fragment", 0);
    o.sort_query = args_opt_boolean(L, i, fname, "sort_query", 1);
    lua_getfield(L, i, "drop");
    if (lua_isnil(L, -1)) return o;
    if (!lua_istable(L, -1)) luaL_error(L, "%s: option 'drop' must be a table of strings, got %s", fname, args_show(L, -1));
    int drop_at = lua_gettop(L);
    size_t count = (size_t)luaL_len(L, drop_at);
    drop_pattern *drop = lua_newuserdatauv(L, (count > 0 ? count : 1) * sizeof *drop, 1);
    lua_pushvalue(L, drop_at);
    lua_setiuservalue(L, -2, 1);   /* the patterns' strings stay alive with the array */
    for (size_t k = 0; k < count; k++) {
        if (lua_geti(L, drop_at, (lua_Integer)k + 1) != LUA_TSTRING)
            luaL_error(L, "%s: option 'drop' must be a table of strings, got a %s in it", fname, luaL_typename(L, -1));
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);   /* still referenced by the drop table */
        drop[k].prefix = len > 0 && text[len - 1] == '*';
        drop[k].text = text;
        drop[k].len = drop[k].prefix ? len - 1 : len;
    }
    o.drop = drop;
    o.drop_count = count;
    return o;
}

/* Returns the canonical form of the URL at 1 on the stack top, or pushes nil, message and
   returns 3 (nil, message, "malformed"). Options at 2. */
static int push_canonical(lua_State *L, const char *fname) {
    const char *u = check_url_arg(L, 1);
    canonical_opts o = check_canonical_opts(L, 2, fname);
    if (u == NULL) return push_bad_url(L, "contains a NUL byte", 1);
    url_work *w = work_new(L);
    CURLUcode rc = canonicalize(w, u, &o);
    if (rc == CURLUE_OUT_OF_MEMORY) return luaL_error(L, "not enough memory");
    if (rc != CURLUE_OK) {
        work_release(w);
        return push_bad_url(L, curl_url_strerror(rc), 1);
    }
    lua_pushlstring(L, w->out.data, w->out.len);
    work_release(w);
    /* curl reads a few things differently the second time ("%2E" in a host, short IPv4
       forms once decoded): canonicalise the result again until it stands still. */
    for (int round = 0; round < 3; round++) {
        const char *previous = lua_tostring(L, -1);
        w = work_new(L);
        rc = canonicalize(w, previous, &o);
        if (rc == CURLUE_OUT_OF_MEMORY) return luaL_error(L, "not enough memory");
        if (rc != CURLUE_OK || (w->out.len == strlen(previous) && memcmp(w->out.data, previous, w->out.len) == 0)) {
            work_release(w);
            lua_pop(L, 1);
            break;
        }
        lua_pushlstring(L, w->out.data, w->out.len);
        work_release(w);
        lua_remove(L, -2);   /* the box */
        lua_remove(L, -2);   /* the previous form */
    }
    return 1;
}

/* url.canonical(u [, opts]) -> the canonical string, or nil, "bad url: ...", "malformed". */
static int url_canonical(lua_State *L) {
    return push_canonical(L, "forage.url.canonical");
}

/* ---- fingerprint: SipHash-2-4 with 128-bit output ---- */

/* The fixed key: fingerprints are stable across processes, runs and machines. It is the
   key of the reference test vectors (bytes 0..15): a fingerprint names, it does not protect. */
static const unsigned char fingerprint_key[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* url.fingerprint(u [, opts]) -> 16 bytes: SipHash-2-4-128 of canonical(u, opts), the
   digest's two halves written little-endian; or nil, message, "malformed". */
static int url_fingerprint(lua_State *L) {
    int n = push_canonical(L, "forage.url.fingerprint");
    if (n != 1) return n;
    size_t len;
    const char *canonical = lua_tolstring(L, -1, &len);
    const uint64_t key[2] = {load_le64(fingerprint_key), load_le64(fingerprint_key + 8)};
    uint64_t halves[2];
    siphash128(key, canonical, len, halves);
    unsigned char digest[16];
    store_le64(digest, halves[0]);
    store_le64(digest + 8, halves[1]);
    lua_pushlstring(L, (const char *)digest, sizeof digest);
    return 1;
}

/* ---- parse and join ---- */

/* Sets field name of the table on the stack top to part of w's URL, or leaves it nil. */
static void set_part_field(lua_State *L, url_work *w, CURLUPart which, const char *name) {
    char **slot = &w->parts[0];   /* held by the box while Lua copies it */
    CURLUcode rc = curl_url_get(w->handle, which, slot, 0);
    if (rc == CURLUE_OUT_OF_MEMORY) luaL_error(L, "not enough memory");
    if (*slot == NULL) return;
    if (which == CURLUPART_PORT) lua_pushinteger(L, strtol(*slot, NULL, 10));
    else lua_pushstring(L, *slot);
    curl_free(*slot);
    *slot = NULL;
    lua_setfield(L, -2, name);
}

/* url.parse(u) -> { scheme, user, password, host, zoneid, port, path, query, fragment }
   (absent parts nil, port an integer), or nil, "bad url: <reason> (<u>)", "malformed". */
static int url_parse(lua_State *L) {
    const char *u = check_url_arg(L, 1);
    if (u == NULL) return push_bad_url(L, "contains a NUL byte", 1);
    url_work *w = work_new(L);
    CURLUcode rc = work_set(w, u);
    if (rc == CURLUE_OUT_OF_MEMORY) return luaL_error(L, "not enough memory");
    if (rc != CURLUE_OK) {
        work_release(w);
        return push_bad_url(L, curl_url_strerror(rc), 1);
    }
    lua_createtable(L, 0, 9);
    set_part_field(L, w, CURLUPART_SCHEME, "scheme");
    set_part_field(L, w, CURLUPART_USER, "user");
    set_part_field(L, w, CURLUPART_PASSWORD, "password");
    set_part_field(L, w, CURLUPART_HOST, "host");
    set_part_field(L, w, CURLUPART_ZONEID, "zoneid");
    set_part_field(L, w, CURLUPART_PORT, "port");
    set_part_field(L, w, CURLUPART_PATH, "path");
    set_part_field(L, w, CURLUPART_QUERY, "query");
    set_part_field(L, w, CURLUPART_FRAGMENT, "fragment");
    work_release(w);
    return 1;
}

/* Returns curl's code for resolving href against the URL w's handle holds. curl 7.88 drops
   the base's path and query for "" and "#f", where RFC 3986 keeps them: those two only touch
   the fragment. "http:g" (href in the base's scheme, without "//") is read as "g", the
   backward-compatible reading of RFC 3986 section 5.4.2. */
static CURLUcode resolve(url_work *w, const char *href) {
    if (href[0] == '\0') return curl_url_set(w->handle, CURLUPART_FRAGMENT, NULL, 0);
    if (href[0] == '#') return curl_url_set(w->handle, CURLUPART_FRAGMENT, href + 1, 0);
    CURLUcode rc = curl_url_get(w->handle, CURLUPART_SCHEME, &w->parts[P_SCHEME], 0);
    if (rc == CURLUE_OUT_OF_MEMORY) return rc;
    if (w->parts[P_SCHEME] != NULL) {
        size_t n = strlen(w->parts[P_SCHEME]);
        if (strncasecmp(href, w->parts[P_SCHEME], n) == 0 && href[n] == ':' &&
            !(href[n + 1] == '/' && href[n + 2] == '/'))
            href += n + 1;
    }
    return work_set(w, href);   /* on a handle holding a URL, a relative one is resolved */
}

/* url.join(base, href) -> href resolved against base (RFC 3986 section 5.2), or nil,
   "bad url: ...", "malformed" naming the side that is bad. */
static int url_join(lua_State *L) {
    const char *base = check_url_arg(L, 1);
    const char *href = check_url_arg(L, 2);
    if (base == NULL) return push_bad_url(L, "contains a NUL byte", 1);
    if (href == NULL) return push_bad_url(L, "contains a NUL byte", 2);
    url_work *w = work_new(L);
    CURLUcode rc = work_set(w, base);
    int culprit = 1;
    if (rc == CURLUE_OK) {
        culprit = 2;
        rc = resolve(w, href);
    }
    if (rc == CURLUE_OK) rc = curl_url_get(w->handle, CURLUPART_URL, &w->parts[P_PATH], 0);
    if (rc == CURLUE_OUT_OF_MEMORY) return luaL_error(L, "not enough memory");
    if (rc != CURLUE_OK) {
        work_release(w);
        return push_bad_url(L, curl_url_strerror(rc), culprit);
    }
    lua_pushstring(L, w->parts[P_PATH]);
    work_release(w);
    return 1;
}

void forage_open_url(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"parse", url_parse}, {"join", url_join}, {"canonical", url_canonical},
        {"fingerprint", url_fingerprint}, {NULL, NULL},
    };
    static const luaL_Reg work_meta[] = {{"__gc", work_gc}, {NULL, NULL}};
    type_register(L, URL_WORK_TYPE, NULL, work_meta, 0);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "url");
}
