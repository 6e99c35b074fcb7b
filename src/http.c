/* forage.http: HTTP(S) requests on libcurl, one at a time (request, get) or many at once
   (client, on the multi interface). No Lua runs inside libcurl: the write and header
   callbacks only fill C buffers, and a client's Lua callbacks run under lua_pcall after
   curl_multi_socket_action has returned. Every easy handle lives in a request box (a userdata
   with __gc) that records the pid that made it: a forked child never touches it. */
#include <ctype.h>
#include <errno.h>
#include <curl/curl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "args.h"
#include "buf.h"
#include "clock.h"
#include "core.h"
#include "lauxlib.h"
#include "luatype.h"
#include "url.h"

#define REQUEST_TYPE "forage.http.Request"
#define CLIENT_TYPE "forage.http.Client"
#define ERROR_TYPE "forage.http.Error"

#define DEFAULT_MAX_BYTES ((size_t)10 << 20)
#define MAX_HEADER_BYTES ((size_t)1 << 20)
#define MAX_URL_BYTES ((size_t)8000000)   /* libcurl's CURL_MAX_INPUT_LENGTH */

typedef struct http_request {
    CURL *easy;                  /* NULL once released */
    struct curl_slist *headers;
    pid_t pid;                   /* the process that made easy */
    buf body;
    buf head;                    /* header lines of the last response only */
    size_t max_bytes;
    int too_large;
    int out_of_memory;
    int attempts;                /* transfers run: a dead reused connection earns one more */
    int has_proxy;
    int tunnel;                  /* an https origin through an HTTP proxy (CONNECT) */
    int in_multi;
    CURLcode result;             /* set when a client's transfer is done */
    double elapsed;
    char *url;                   /* as asked, credentials masked */
    char *proxy;                 /* masked, or NULL */
    char *proxy_secret;          /* the proxy password, scrubbed from messages, or NULL */
    char *url_secret;            /* a password in the request URL, the same */
    char *final_url;             /* the URL of the response, credentials masked, or NULL */
    const char *refused;         /* why the request was not sent (a bad URL), or NULL */
    char error[CURL_ERROR_SIZE];
} http_request;

/* ---- credentials ---- */

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Replaces in place every occurrence of needle[0 .. n) in s by '*'s. */
static void scrub_bytes(char *s, const char *needle, size_t n) {
    if (n == 0) return;
    for (char *p = s; *p != '\0'; p++)
        if (strncmp(p, needle, n) == 0) {
            memset(p, '*', n);
            p += n - 1;
        }
}

/* Replaces in place every occurrence of secret in s by '*'s: as written, and percent-decoded
   (curl decodes the userinfo before it may quote it back). */
static void scrub(char *s, const char *secret) {
    if (secret == NULL || secret[0] == '\0') return;
    scrub_bytes(s, secret, strlen(secret));
    char decoded[CURL_ERROR_SIZE];
    size_t n = 0;
    for (const char *p = secret; *p != '\0' && n < sizeof decoded; p++) {
        int hi = p[0] == '%' ? hex_digit(p[1]) : -1, lo = hi >= 0 ? hex_digit(p[2]) : -1;
        if (hi >= 0 && lo >= 0) {
            decoded[n++] = (char)(hi * 16 + lo);
            p += 2;
        } else {
            decoded[n++] = *p;
        }
    }
    if (n < sizeof decoded && memchr(decoded, '\0', n) == NULL) scrub_bytes(s, decoded, n);
}

/* ---- the request box ---- */

/* Frees what the box holds; in a process other than its maker it only forgets the handle
   (cleaning it up there could close a TLS session the parent still uses). Idempotent. */
static void request_release(http_request *r) {
    if (r->easy != NULL && r->pid == getpid()) curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    buf_free(&r->body);
    buf_free(&r->head);
    free(r->url);
    free(r->proxy);
    free(r->proxy_secret);
    free(r->url_secret);
    free(r->final_url);
    r->url = r->proxy = r->proxy_secret = r->url_secret = r->final_url = NULL;
}

static int request_gc(lua_State *L) {
    http_request *r = luaL_checkudata(L, 1, REQUEST_TYPE);
    if (!r->in_multi) request_release(r);   /* a client releases what it holds itself */
    return 0;
}

/* Counts decoded body bytes; past max_bytes the transfer stops (CURLE_WRITE_ERROR). */
static size_t on_body(char *data, size_t size, size_t count, void *userdata) {
    http_request *r = userdata;
    size_t n = size * count;
    if (n > r->max_bytes - r->body.len) {
        r->too_large = 1;
        return 0;
    }
    if (buf_append(&r->body, data, n) != 0) {
        r->out_of_memory = 1;
        return 0;
    }
    return n;
}

/* Keeps the header lines of the last response: a status line (after a redirect, a 100 or a
   proxy's CONNECT answer) starts over. */
static size_t on_header(char *data, size_t size, size_t count, void *userdata) {
    http_request *r = userdata;
    size_t n = size * count;
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) buf_reset(&r->head);
    if (n > MAX_HEADER_BYTES - r->head.len) {
        r->too_large = 1;
        return 0;
    }
    if (buf_append(&r->head, data, n) != 0) {
        r->out_of_memory = 1;
        return 0;
    }
    return n;
}

/* ---- options ---- */

/* The options of http.request and client:submit; http.get takes the same but url. */
static const char *const request_options[] = {
    "url", "method", "headers", "body", "proxy", "timeout", "connect_timeout", "max_bytes",
    "follow", "cookies", "insecure", "cainfo", "user_agent", NULL,
};
static const char *const *const get_options = request_options + 1;   /* all but "url" */

#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_CONNECT_TIMEOUT 10.0

/* Returns 1 when s[0 .. len) would break out of its line of the request: a CR, LF or NUL
   (a NUL would also cut the string where libcurl reads it). */
static int splits_request(const char *s, size_t len) {
    return strlen(s) != len || strpbrk(s, "\r\n") != NULL;
}

/* A string option that becomes part of the request, or NULL when absent. Raises on a line
   break or a NUL (request splitting); the value is not repeated: it may hold a password. */
static const char *opt_request_line(lua_State *L, int t, const char *fname, const char *key) {
    size_t len;
    const char *s = args_opt_string(L, t, fname, key, NULL, &len);
    if (s != NULL && splits_request(s, len))
        luaL_error(L, "%s: option '%s' contains a line break or a NUL byte", fname, key);
    return s;
}

/* A timeout option in milliseconds for libcurl: def seconds when absent, 0 (libcurl's "no
   limit") for math.huge or anything over ARGS_FOREVER, at least 1 ms otherwise (a timeout
   of 0 allows no time, as everywhere in forage). Raises on a negative number or NaN. */
static long opt_timeout_ms(lua_State *L, int t, const char *fname, const char *key, double def) {
    lua_getfield(L, t, key);
    int absent = lua_isnil(L, -1);
    lua_pop(L, 1);
    double seconds = absent ? def : args_opt_timeout(L, t, fname, key);
    if (seconds < 0) return 0;
    double ms = ceil(seconds * 1000);
    return ms < 1 ? 1 : (long)ms;
}

/* max_bytes: a number of bytes >= 0 (math.huge: no cap). */
static size_t opt_max_bytes(lua_State *L, int t, const char *fname) {
    if (lua_getfield(L, t, "max_bytes") == LUA_TNIL) {
        lua_pop(L, 1);
        return DEFAULT_MAX_BYTES;
    }
    double v = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
    if (!(v >= 0))   /* NaN too */
        luaL_error(L, "%s: option 'max_bytes' must be a non-negative number of bytes, got %s", fname,
                   args_show(L, -1));
    lua_pop(L, 1);
    return v >= (double)SIZE_MAX ? SIZE_MAX : (size_t)v;
}

/* Appends "Name: value" to the box's header list. */
static void add_header(lua_State *L, http_request *r, const char *line) {
    struct curl_slist *grown = curl_slist_append(r->headers, line);
    if (grown == NULL) luaL_error(L, "not enough memory");
    r->headers = grown;
}

/* headers = { ["Name"] = "v" } or { "Name: v", ... }. Raises on a line break or a NUL in a
   name or a value (header injection), naming the header but not showing its value. */
static void set_headers(lua_State *L, http_request *r, int t, const char *fname) {
    if (lua_getfield(L, t, "headers") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: option 'headers' must be a table, got %s", fname, luaL_typename(L, -1));
    int h = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h) != 0) {
        int key_is_name = lua_type(L, -2) == LUA_TSTRING;
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: header values must be strings, got %s", fname, luaL_typename(L, -1));
        if (!key_is_name && lua_type(L, -2) != LUA_TNUMBER)
            luaL_error(L, "%s: header names must be strings, got %s", fname, luaL_typename(L, -2));
        if (key_is_name) {
            lua_pushvalue(L, -2);
            lua_pushliteral(L, ": ");
            lua_pushvalue(L, -3);
            lua_concat(L, 3);
        } else {
            lua_pushvalue(L, -1);
        }
        size_t len;
        const char *line = lua_tolstring(L, -1, &len);
        if (splits_request(line, len)) {
            const char *name = key_is_name ? lua_tostring(L, -3) : line;
            lua_pushlstring(L, name, strcspn(name, ":\r\n"));
            luaL_error(L, "%s: header %s contains a line break or a NUL byte", fname, args_show(L, -1));
        }
        add_header(L, r, line);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* An HTTP method is a token (RFC 9110): no space, no separator. */
static int is_method_token(const char *m) {
    if (*m == '\0') return 0;
    for (; *m; m++)
        if (!(isalnum((unsigned char)*m) || strchr("!#$%&'*+-.^_`|~", *m) != NULL)) return 0;
    return 1;
}

#define SETOPT(opt, value) \
    do { if (curl_easy_setopt(r->easy, opt, value) != CURLE_OK) bad = #opt; } while (0)

/* Makes the box's easy handle and configures it from the options table at t (whose keys
   are checked by the caller). Raises on a bad option (a programmer error); the box owns
   everything made so far. A URL that cannot be sent leaves r->refused set. */
static void request_setup(lua_State *L, http_request *r, int t, const char *fname) {
    const char *bad = NULL;
    size_t url_len;
    const char *url = args_opt_string(L, t, fname, "url", NULL, &url_len);
    if (url == NULL) luaL_error(L, "%s: option 'url' is required", fname);
    size_t method_len;
    const char *method = args_opt_string(L, t, fname, "method", NULL, &method_len);
    if (method != NULL && (strlen(method) != method_len || !is_method_token(method))) {
        lua_getfield(L, t, "method");
        luaL_error(L, "%s: option 'method' must be an HTTP method (a token), got %s", fname, args_show(L, -1));
    }
    const char *proxy = opt_request_line(L, t, fname, "proxy");
    const char *cainfo = opt_request_line(L, t, fname, "cainfo");
    const char *user_agent = opt_request_line(L, t, fname, "user_agent");
    long timeout_ms = opt_timeout_ms(L, t, fname, "timeout", DEFAULT_TIMEOUT);
    long connect_timeout_ms = opt_timeout_ms(L, t, fname, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
    r->max_bytes = opt_max_bytes(L, t, fname);
    long follow = (long)args_opt_integer(L, t, fname, "follow", 5, 0, INT_MAX);
    int insecure = args_opt_boolean(L, t, fname, "insecure", 0);
    const char *cookies = NULL;
    int cookie_engine = 0;
    int cookie_type = lua_getfield(L, t, "cookies");
    if (cookie_type == LUA_TBOOLEAN) cookie_engine = lua_toboolean(L, -1);
    else if (cookie_type != LUA_TNIL && cookie_type != LUA_TSTRING)
        luaL_error(L, "%s: option 'cookies' must be a string or a boolean, got %s", fname, args_show(L, -1));
    lua_pop(L, 1);
    if (cookie_type == LUA_TSTRING) cookies = opt_request_line(L, t, fname, "cookies");
    size_t body_len = 0;
    const char *body = args_opt_string(L, t, fname, "body", NULL, &body_len);

    r->url = url_mask_password(url, &r->url_secret);
    if (r->url == NULL) luaL_error(L, "not enough memory");
    if (splits_request(url, url_len)) r->refused = "URL contains a line break or a NUL byte";
    else if (url_len > MAX_URL_BYTES) r->refused = "URL longer than libcurl takes (8 MB)";
    if (proxy != NULL && proxy[0] != '\0') {
        r->proxy = url_mask_password(proxy, &r->proxy_secret);
        if (r->proxy == NULL) luaL_error(L, "not enough memory");
        r->has_proxy = 1;
        r->tunnel = strncasecmp(url, "https:", 6) == 0 && strncasecmp(proxy, "socks", 5) != 0;
    }
    set_headers(L, r, t, fname);

    r->pid = getpid();
    r->easy = curl_easy_init();
    if (r->easy == NULL) luaL_error(L, "forage.http: cannot make a curl handle");
    SETOPT(CURLOPT_URL, r->refused != NULL ? "" : url);   /* "": curl fails it, sending nothing */
    SETOPT(CURLOPT_PRIVATE, (void *)r);
    SETOPT(CURLOPT_ERRORBUFFER, r->error);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, (void *)r);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)r);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_USERAGENT, user_agent != NULL ? user_agent : "forage");
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    SETOPT(CURLOPT_FOLLOWLOCATION, follow >= 1 ? 1L : 0L);
    SETOPT(CURLOPT_MAXREDIRS, follow);
    if (r->headers != NULL) SETOPT(CURLOPT_HTTPHEADER, r->headers);
    if (r->has_proxy) SETOPT(CURLOPT_PROXY, proxy);
    else SETOPT(CURLOPT_PROXY, "");   /* no proxy from the environment either */
    if (cainfo != NULL) SETOPT(CURLOPT_CAINFO, cainfo);
    if (insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
        SETOPT(CURLOPT_PROXY_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_PROXY_SSL_VERIFYHOST, 0L);
    }

    /* cookies: a string is sent as the Cookie header; either a string or true turns the cookie
       engine on for this request, so cookies set along a redirect chain are kept. */
    if (cookies != NULL) SETOPT(CURLOPT_COOKIE, cookies);
    if (cookies != NULL || cookie_engine) SETOPT(CURLOPT_COOKIEFILE, "");

    if (method == NULL) method = body != NULL ? "POST" : "GET";
    if (body != NULL) {
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SETOPT(CURLOPT_COPYPOSTFIELDS, body);
        if (strcmp(method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }
    if (bad != NULL) luaL_error(L, "forage.http: curl refused %s", bad);
}

/* A new, empty request box on the stack top, configured from the options at t. */
static http_request *request_new(lua_State *L, int t, const char *fname) {
    http_request *r = lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REQUEST_TYPE);
    request_setup(L, r, t, fname);
    return r;
}

/* Clears what a transfer left, before it runs (again). */
static void request_reset(http_request *r) {
    buf_reset(&r->body);
    buf_reset(&r->head);
    r->too_large = 0;
    r->out_of_memory = 0;
    r->error[0] = '\0';
}

/* Returns 1 when a transfer that ended with rc should run once more: the connection broke
   before any response header came back. It is what a reused keep-alive connection that the
   far end closed looks like (Debian's tinyproxy 1.11 closes after every response without
   saying so, and a reused connection races that close); curl retries most of these itself,
   this catches the rest. A request the server may have acted on without answering is sent
   twice: acceptable for a crawler's GETs, said in the README for other methods. */
static int request_should_retry(http_request *r, CURLcode rc) {
    if (r->attempts > 1) return 0;
    if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR && rc != CURLE_GOT_NOTHING) return 0;
    return r->head.len == 0;
}

/* ---- results ---- */

/* Returns 1 when a transfer through a CONNECT tunnel failed on a new connection before the
   TLS session with the origin was up: while the proxy was answering CONNECT (closing, or
   speaking garbage), or in the TLS handshake just after (whose own failures are classed
   tls before this is asked). A reused connection's tunnel was up already. */
static int tunnel_unfinished(http_request *r) {
    long new_connections = 0;
    curl_off_t appconnect = 0;
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &new_connections);
    curl_easy_getinfo(r->easy, CURLINFO_APPCONNECT_TIME_T, &appconnect);
    return new_connections > 0 && appconnect == 0;
}

/* The kind of a failed transfer, for the crawl to tell a bad proxy from a bad origin. */
static const char *error_kind(http_request *r, CURLcode rc) {
    long connect_code = 0, proxy_error = 0;
    curl_easy_getinfo(r->easy, CURLINFO_HTTP_CONNECTCODE, &connect_code);
    curl_easy_getinfo(r->easy, CURLINFO_PROXY_ERROR, &proxy_error);
    if (r->too_large) return "too_large";
    if (r->has_proxy && connect_code != 0 && connect_code / 100 != 2) {
        /* The proxy refused the tunnel. 407 and 403 are the proxy's own doing; a 502/503/504
           may mean the proxy could not reach the origin: ambiguous, blamed on the proxy
           (curl cannot tell us more). */
        return "proxy";
    }
    switch (proxy_error) {   /* a SOCKS proxy saying what happened to the origin */
    case CURLPX_REPLY_CONNECTION_REFUSED:
    case CURLPX_REPLY_HOST_UNREACHABLE:
    case CURLPX_REPLY_NETWORK_UNREACHABLE:
        return "connect";
    case CURLPX_RESOLVE_HOST:
        return "dns";
    case CURLPX_REPLY_TTL_EXPIRED:
        return "timeout";
    default:
        break;
    }
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        /* ambiguous with a proxy: a stalled proxy and a stalled origin look the same */
        return "timeout";
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_PROXY:
        return "proxy";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "dns";
    case CURLE_COULDNT_CONNECT:
        return r->has_proxy ? "proxy" : "connect";   /* with a proxy, curl only connects to it */
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED: {
        long proxy_verify = 0;
        curl_easy_getinfo(r->easy, CURLINFO_PROXY_SSL_VERIFYRESULT, &proxy_verify);
        /* an https:// proxy whose certificate fails; other TLS failures with an https://
           proxy are ambiguous and blamed on the origin */
        return proxy_verify != 0 ? "proxy" : "tls";
    }
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_WEIRD_SERVER_REPLY: {
        /* Through a plain HTTP proxy the connection is to the proxy, and an origin failure
           comes back as the proxy's 5xx response: a broken connection or garbage is the
           proxy's. Through a tunnel, a failure before the proxy answered CONNECT on a new
           connection is the proxy's too (it closed or spoke garbage); inside an established
           tunnel (answered, or a reused connection) it is ambiguous, and blamed on the origin. */
        if (!r->has_proxy) return "http";
        return !r->tunnel || tunnel_unfinished(r) ? "proxy" : "http";
    }
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* what curl says of an answer that is not HTTP at all: through a plain proxy, the
           proxy's garbage (otherwise a refused scheme, the origin's) */
        return r->has_proxy && !r->tunnel && strstr(r->error, "HTTP/0.9") != NULL ? "proxy" : "http";
    case CURLE_TOO_MANY_REDIRECTS:
        return "too_many_redirects";
    default:
        return r->tunnel && tunnel_unfinished(r) ? "proxy" : "http";
    }
}

/* Pushes the failure of a request: nil, the message "kind: what (url)" (the URL cut to 60
   bytes, its password masked), the kind, and an error object { kind, message = what, url }
   whose tostring is the same message. Returns 4. */
static int push_failure(lua_State *L, const char *kind, const char *what, const char *url) {
    int top = lua_gettop(L);
    lua_pushstring(L, url);
    const char *shown = args_show(L, -1);
    args_fail(L, kind, "%s: %s (%s)", kind, what, shown);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, what);
    lua_setfield(L, -2, "message");
    lua_pushvalue(L, top + 1);
    lua_setfield(L, -2, "url");
    luaL_setmetatable(L, ERROR_TYPE);
    lua_rotate(L, top + 1, -2);   /* the url and its shown form to the top, then gone */
    lua_pop(L, 2);
    return 4;
}

/* tostring(err) -> "kind: message (url)", as the message returned with it. */
static int error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "url");
    const char *shown = args_show(L, 4);
    lua_pushfstring(L, "%s: %s (%s)", luaL_optstring(L, 2, "?"), luaL_optstring(L, 3, "?"), shown);
    return 1;
}

/* Pushes the header table of the last response: lower-case names, repeats joined ", ". */
static void push_headers(lua_State *L, http_request *r) {
    lua_newtable(L);
    const char *p = r->head.data, *end = r->head.data + r->head.len;
    if (p == NULL) return;
    luaL_Buffer name;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol != NULL ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p && p[0] != ' ' && p[0] != '\t' && memcmp(p, "HTTP/", 5) != 0) {
            luaL_buffinit(L, &name);
            for (const char *c = p; c < colon; c++) {
                char ch = *c;
                luaL_addchar(&name, ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch);
            }
            luaL_pushresult(&name);
            const char *v = colon + 1, *v_end = line_end;
            while (v < v_end && (*v == ' ' || *v == '\t')) v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' ' || v_end[-1] == '\t')) v_end--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(v_end - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(v_end - v));
            }
            lua_rawset(L, -3);
        }
        p = line_end + 1;
    }
}

/* Returns 1 when the last response's header lines contain needle (lower case), ignoring case. */
static int head_has(http_request *r, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= r->head.len; i++)
        if (strncasecmp(r->head.data + i, needle, n) == 0) return 1;
    return 0;
}

/* Pushes the result of a finished transfer: the response, or nil and an error. Returns the
   number of values pushed. Raises only on out of memory. */
static int request_push_result(lua_State *L, http_request *r, CURLcode rc) {
    if (r->out_of_memory) return luaL_error(L, "not enough memory");
    long status = 0, redirects = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && r->has_proxy && !r->tunnel &&
        (status == 407 || (status == 401 && r->proxy_secret != NULL && head_has(r, "\nserver: tinyproxy")))) {
        /* Only a proxy answers 407. tinyproxy answers wrong credentials with a 401 of its own:
           told apart from an origin's 401 by its Server header (a heuristic: other proxies
           that do this are reported as the response they sent). */
        return push_failure(L, "proxy", status == 407 ? "proxy authentication required (407)"
                                                      : "proxy refused the credentials (401)", r->url);
    }
    if (rc != CURLE_OK) {
        char message[CURL_ERROR_SIZE + 64];
        if (r->refused != NULL)
            return push_failure(L, "http", r->refused, r->url);
        if (r->too_large)
            snprintf(message, sizeof message, "response larger than max_bytes (%zu)", r->max_bytes);
        else
            snprintf(message, sizeof message, "%s", r->error[0] != '\0' ? r->error : curl_easy_strerror(rc));
        scrub(message, r->proxy_secret);
        scrub(message, r->url_secret);
        return push_failure(L, error_kind(r, rc), message, r->url);
    }
    char *final_url = NULL;
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &final_url);
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    if (final_url != NULL) {
        free(r->final_url);
        r->final_url = url_mask_password(final_url, NULL);
        if (r->final_url == NULL) return luaL_error(L, "not enough memory");
    }
    lua_pushstring(L, r->final_url != NULL ? r->final_url : r->url);
    lua_setfield(L, -2, "url");
    push_headers(L, r);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.data != NULL ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, r->elapsed);
    lua_setfield(L, -2, "elapsed");
    if (r->proxy != NULL) {
        lua_pushstring(L, r->proxy);
        lua_setfield(L, -2, "proxy");
    }
    lua_pushinteger(L, redirects);
    lua_setfield(L, -2, "redirects");
    return 1;
}

/* Adds the time the last transfer took to the box's total. */
static void request_add_time(http_request *r) {
    double t = 0;
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &t);
    r->elapsed += t;
}

/* ---- one at a time ---- */

/* Runs the request of the box on the stack top to its end, then frees the box's handle. */
static int request_run(lua_State *L, http_request *r) {
    CURLcode rc;
    do {
        request_reset(r);
        r->attempts++;
        rc = curl_easy_perform(r->easy);
        request_add_time(r);
    } while (rc != CURLE_OK && request_should_retry(r, rc));
    int n = request_push_result(L, r, rc);
    request_release(r);
    return n;
}

/* http.request(opts) -> response, or nil, message, kind, err (an error object { kind,
   message, url }). A 4xx/5xx is a response. Raises on bad options. */
static int http_request_fn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    args_check_options(L, 1, "forage.http.request", request_options);
    return request_run(L, request_new(L, 1, "forage.http.request"));
}

/* http.get(url [, opts]) -> as http.request. */
static int http_get(lua_State *L) {
    luaL_checktype(L, 1, LUA_TSTRING);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    args_check_options(L, 2, "forage.http.get", get_options);
    /* the options, copied, with url = arg 1 */
    lua_newtable(L);
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, 3);
        }
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, 3, "url");
    return request_run(L, request_new(L, 3, "forage.http.get"));
}

/* ---- many at once: the client ---- */

/* The client drives its transfers with curl's socket interface: curl says which sockets it
   waits on (on_socket) and when it wants a timeout handled (on_timer); one epoll set holds
   those sockets (and the descriptor step may be given), and a round hands curl only the
   sockets that are ready. curl_multi_perform would walk every transfer at each wake-up (and
   poll each socket once more), which is what a worker driving hundreds of slots cannot
   afford. */
typedef struct http_client {
    CURLM *multi;         /* NULL once closed */
    pid_t pid;
    int max;
    int active;           /* transfers in the multi handle */
    lua_Integer head, tail;   /* the waiting list: uservalue 2, [head, tail) */
    int running;          /* inside step: no re-entry from a callback */
    int epfd;             /* curl's sockets and step's descriptor; -1 once closed */
    int wake_fd;          /* step's descriptor in the set, or -1 */
    double timer_at;      /* when curl wants CURL_SOCKET_TIMEOUT handled (monotonic), or -1 */
} http_client;

#define EVENTS_PER_ROUND 256

/* curl's socket callback: keeps the epoll set in step with what curl waits for. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    (void)socketp;
    http_client *c = userp;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = 0, .data.fd = fd};
    if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
    if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* curl's timer callback: when to call socket_action(CURL_SOCKET_TIMEOUT) next. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    http_client *c = userp;
    c->timer_at = timeout_ms < 0 ? -1 : now_seconds() + (double)timeout_ms / 1000.0;
    return 0;
}

/* Waits up to timeout_ms (less when curl's timer is due sooner) for curl's sockets, and
   wake_fd when >= 0, then lets curl act on what is ready. Returns whether wake_fd is
   readable. */
static int client_wait_and_act(http_client *c, int timeout_ms, int wake_fd) {
    if (wake_fd != c->wake_fd) {
        if (c->wake_fd >= 0) epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->wake_fd, NULL);
        c->wake_fd = -1;
    }
    if (wake_fd >= 0 && wake_fd != c->wake_fd) {
        /* added once, not at every step (a syscall per round). A descriptor closed and
           reused under the same number between two steps is not seen until a step
           without it: the wait then ends at its timeout, it never hangs. */
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = wake_fd};
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, wake_fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(c->epfd, EPOLL_CTL_MOD, wake_fd, &ev);
        c->wake_fd = wake_fd;
    }
    int wait_ms = timeout_ms;
    if (c->active == 0 && wake_fd < 0) wait_ms = 0;   /* nothing to wait for */
    if (c->timer_at >= 0) {
        double left = (c->timer_at - now_seconds()) * 1000.0;
        if (left < wait_ms) wait_ms = left <= 0 ? 0 : (int)ceil(left);
    }
    struct epoll_event events[EVENTS_PER_ROUND];
    int n = epoll_wait(c->epfd, events, EVENTS_PER_ROUND, wait_ms);
    int running = 0, woken = 0;
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        if (fd == wake_fd) {
            woken = 1;
            continue;
        }
        int flags = 0;
        if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(c->multi, fd, flags, &running);
    }
    if (c->timer_at >= 0 && now_seconds() >= c->timer_at) {
        c->timer_at = -1;   /* before acting: curl may set the next one meanwhile */
        curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    return woken;
}

/* Uservalue 1 of a client: active[lightuserdata box] = box. Uservalue 2: waiting boxes.
   A box's uservalue 1 is its callback. */

static http_client *check_client(lua_State *L, int i) {
    http_client *c = type_check_fast(L, i, CLIENT_TYPE);
    if (c->multi == NULL) type_closed_error(L, CLIENT_TYPE);
    if (c->pid != getpid()) luaL_error(L, "http client used in a process other than the one that made it");
    return c;
}

/* Takes the box on the stack top into the multi handle (it stays in active). Pops it. */
static void client_start(lua_State *L, http_client *c, int self) {
    http_request *r = lua_touserdata(L, -1);
    lua_getiuservalue(L, self, 1);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, r);
    lua_pop(L, 2);
    request_reset(r);
    r->attempts++;
    if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) luaL_error(L, "forage.http: cannot add a transfer");
    r->in_multi = 1;
    c->active++;
}

/* Starts waiting transfers while there is room. */
static void client_fill(lua_State *L, http_client *c, int self) {
    while (c->active < c->max && c->head < c->tail) {
        lua_getiuservalue(L, self, 2);
        lua_rawgeti(L, -1, c->head);
        lua_pushnil(L);
        lua_rawseti(L, -3, c->head);
        c->head++;
        lua_remove(L, -2);
        client_start(L, c, self);
    }
}

/* http.client{ max = 100 } -> a client running up to max transfers at once. */
static int http_client_new(lua_State *L) {
    static const char *const client_options[] = {"max", NULL};
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    args_check_options(L, 1, "forage.http.client", client_options);
    lua_Integer max = args_opt_integer(L, 1, "forage.http.client", "max", 100, 1, 100000);
    http_client *c = lua_newuserdatauv(L, sizeof *c, 2);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, CLIENT_TYPE);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 2);
    c->max = (int)max;
    c->head = c->tail = 1;
    c->pid = getpid();
    c->epfd = -1;
    c->wake_fd = -1;
    c->timer_at = -1;
    c->multi = curl_multi_init();
    if (c->multi == NULL) return luaL_error(L, "forage.http.client: cannot make a curl multi handle");
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0) return luaL_error(L, "forage.http.client: cannot make an epoll set: %s", strerror(errno));
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return 1;
}

/* c:submit(opts, cb): cb(response) or cb(nil, message, kind, err) runs later from c:step / c:run. Raises on
   bad options. */
static int client_submit(lua_State *L) {
    http_client *c = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    args_check_options(L, 2, "forage.http.Client:submit", request_options);
    request_new(L, 2, "forage.http.Client:submit");
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, 4, 1);
    if (c->active < c->max && c->head == c->tail) {
        client_start(L, c, 1);
    } else {
        lua_getiuservalue(L, 1, 2);
        lua_pushvalue(L, 4);
        lua_rawseti(L, -2, c->tail++);
    }
    return 0;
}

/* c:pending() -> transfers submitted whose callback has not run yet. */
static int client_pending(lua_State *L) {
    http_client *c = check_client(L, 1);
    lua_pushinteger(L, c->active + (int)(c->tail - c->head));
    return 1;
}

/* Runs one round: waits up to timeout_ms for activity, lets curl work, and runs the callbacks
   of finished transfers under lua_pcall. Returns with the first callback error on the stack
   top (and 1), or 0. */
static int client_round(lua_State *L, http_client *c, int timeout_ms, int wake_fd, int *woken) {
    /* with a descriptor to watch, an idle client still waits for it (a crawl worker waits
       for its transfers and for its parent's messages in one wait) */
    int ready = client_wait_and_act(c, timeout_ms, wake_fd);
    if (woken != NULL) *woken = ready;
    /* collect the finished boxes first: no Lua error can come between reading a message and
       taking its handle out */
    lua_newtable(L);
    int done = lua_gettop(L);
    lua_getiuservalue(L, 1, 1);
    int active = done + 1;
    lua_Integer count = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        http_request *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        r->result = msg->data.result;
        curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = 0;
        c->active--;
        lua_rawgetp(L, active, r);
        lua_rawseti(L, done, ++count);
    }
    lua_pushnil(L);   /* the first callback error, at done + 2 */
    int first_error = done + 2;
    for (lua_Integer i = 1; i <= count; i++) {
        lua_rawgeti(L, done, i);
        http_request *r = lua_touserdata(L, -1);
        request_add_time(r);
        if (r->result != CURLE_OK && request_should_retry(r, r->result)) {
            client_start(L, c, 1);
            continue;
        }
        lua_pushnil(L);
        lua_rawsetp(L, active, r);
        lua_getiuservalue(L, -1, 1);
        int n = request_push_result(L, r, r->result);
        request_release(r);
        if (lua_pcall(L, n, 0, 0) != LUA_OK) {
            if (lua_isnil(L, first_error)) lua_replace(L, first_error);
            else lua_pop(L, 1);
        }
        lua_pop(L, 1);   /* the box */
    }
    client_fill(L, c, 1);
    int failed = !lua_isnil(L, first_error);
    lua_settop(L, first_error);
    lua_replace(L, done);
    lua_settop(L, failed ? done : done - 1);
    return failed;
}

/* Milliseconds of the timeout argument at i: none waits not at all (step's default), a
   timeout as everywhere in forage otherwise, forever (or anything over a day) a day. */
static int check_timeout_ms(lua_State *L, int i) {
    if (lua_isnoneornil(L, i)) return 0;
    double t = args_timeout(L, i);
    return t < 0 || t > 86400 ? 86400000 : (int)ceil(t * 1000);
}

/* Runs a round under the re-entry guard; raises the first callback error after it. */
static void client_guarded_round(lua_State *L, http_client *c, int timeout_ms, int wake_fd, int *woken) {
    if (c->running)
        luaL_error(L, "forage.http.Client: step() or run() inside a callback of the same client would wait for itself");
    c->running = 1;
    int failed = client_round(L, c, timeout_ms, wake_fd, woken);
    c->running = 0;
    if (failed) lua_error(L);
}

/* c:step([timeout = 0 [, fd]]) -> pending count after one round of work, waiting up to
   timeout seconds for activity; with fd (a descriptor, e.g. a Connection's fileno()), the
   wait also ends when fd is readable, even with no transfer, and a second result says
   whether it is. Re-raises the first callback error of the round. */
static int client_step(lua_State *L) {
    http_client *c = check_client(L, 1);
    int timeout_ms = check_timeout_ms(L, 2);
    int wake_fd = -1;
    int has_fd = !lua_isnoneornil(L, 3);
    if (has_fd) {
        lua_Integer fd = luaL_checkinteger(L, 3);
        luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 3, "not a file descriptor");
        wake_fd = (int)fd;
    }
    lua_settop(L, 1);
    int woken = 0;
    client_guarded_round(L, c, timeout_ms, wake_fd, &woken);
    lua_pushinteger(L, c->active + (int)(c->tail - c->head));
    if (!has_fd) return 1;
    lua_pushboolean(L, woken);
    return 2;
}

/* c:run() -> true once every submitted transfer has run its callback (callbacks may submit
   more). Re-raises the first callback error, after the round it happened in. */
static int client_run(lua_State *L) {
    http_client *c = check_client(L, 1);
    lua_settop(L, 1);
    while (c->active > 0 || c->head < c->tail) client_guarded_round(L, c, 1000, -1, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* __gc and __close, idempotent: drops every transfer (their callbacks never run). In a forked
   child it only forgets the handles. */
static int client_close(lua_State *L) {
    http_client *c = type_check_fast(L, 1, CLIENT_TYPE);
    if (c->multi == NULL) return 0;
    int mine = c->pid == getpid();
    lua_getiuservalue(L, 1, 1);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        http_request *r = lua_touserdata(L, -1);
        if (mine && r->in_multi) curl_multi_remove_handle(c->multi, r->easy);
        r->in_multi = 0;
        request_release(r);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (mine) curl_multi_cleanup(c->multi);
    if (c->epfd >= 0) close(c->epfd);
    c->epfd = -1;
    c->wake_fd = -1;
    c->multi = NULL;
    c->active = 0;
    c->head = c->tail;
    return 0;
}

void forage_open_http(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"request", http_request_fn}, {"get", http_get}, {"client", http_client_new}, {NULL, NULL},
    };
    static const luaL_Reg client_methods[] = {
        {"submit", client_submit}, {"step", client_step}, {"run", client_run},
        {"pending", client_pending}, {"close", client_close}, {NULL, NULL},
    };
    static const luaL_Reg client_meta[] = {{"__gc", client_close}, {"__close", client_close}, {NULL, NULL}};
    static const luaL_Reg request_meta[] = {{"__gc", request_gc}, {NULL, NULL}};
    static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
    /* once per process, before any fork: libcurl's global state is not fork-safe to set up */
    static int curl_ready = 0;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "forage.http: curl_global_init failed");
        curl_ready = 1;
    }
    type_register(L, REQUEST_TYPE, NULL, request_meta, 0);
    type_register(L, ERROR_TYPE, NULL, error_meta, 0);
    type_register(L, CLIENT_TYPE, client_methods, client_meta, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "http");
}
