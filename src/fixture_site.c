/* forage.testing.site: a deterministic copy of the blog's movie site (ssr1.scrape.center)
   served by a forked process on 127.0.0.1 (fixture.h says how the process lives and dies).

   /page/N (and /) list movies, /detail/ID shows one with its directors, /robots.txt,
   /files/brochure.pdf (bytes that are not HTML), /status/CODE[?retry_after=S] answers that
   status (for retry specs), /cookie/set?NAME=VALUE and /cookie/show (for cookie specs);
   anything else is a 404. Every title and
   name derives from the seed and the movie id through fixture_mix, so the parent computes
   the known answer (answer()) from the same functions the server writes its pages with. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "core.h"
#include "fixture.h"
#include "lauxlib.h"
#include "luatype.h"

#define SITE_TYPE "forage.testing.Site"
#define SITE_FNAME "forage.testing.site"
#define SITE_MAX_MOVIES 10000000

enum { C_REQUESTS, C_CONNECTIONS, C_LIST, C_DETAIL, C_ROBOTS, C_OTHER, C_COUNT };

typedef struct site_config {
    lua_Integer pages, per_page, latency_ms, page_bytes, seed;
    char *robots;             /* NULL: /robots.txt is a 404 */
    size_t robots_len;
    _Atomic uint64_t *counters;
} site_config;

typedef struct site {
    fixture_server srv;
    site_config cfg;
} site;

/* ---- the data: titles and names from (seed, id) ---- */

static const char *const FIRST[] = {"Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana",
                                    "Ivo", "Jun", "Kira", "Lev", "Mia", "Nico", "Omar", "Pia",
                                    "Quin", "Rosa", "Sami", "Tove", "Uma", "Vera", "Wes", "Yuki"};
static const char *const LAST[] = {"Lee", "Park", "Okafor", "Novak", "Silva", "Haddad", "Berg", "Costa",
                                   "Dubois", "Ivanova", "Kowalski", "Moreau", "Nakamura", "O'Neil", "Petrov",
                                   "Quispe", "Rossi", "Santos", "Tanaka", "Varga", "Weber", "Young", "Zhou",
                                   "Abara"};
static const char *const ADJ[] = {"Quiet", "Last", "Silver", "Hidden", "Broken", "Golden", "Distant", "Burning",
                                  "Frozen", "Secret", "Endless", "Crimson"};
static const char *const NOUN[] = {"Harbor", "Summer", "Garden", "Train", "Letter", "Mountain", "River", "Window",
                                   "Kingdom", "Voyage", "Orchard", "Signal"};
static const char *const GENRE[] = {"Drama", "Comedy", "Crime", "Romance", "War", "Animation", "Thriller",
                                    "Fantasy"};
static const char *const WORDS[] = {"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing",
                                    "elit", "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore",
                                    "et", "dolore", "magna", "aliqua"};
#define COUNT(a) (sizeof(a) / sizeof(a)[0])

/* The streams of fixture_mix's third argument, one per choice. */
enum { S_DIRECTORS = 1, S_ACTORS, S_AMP, S_WORDS, S_TITLE, S_GENRE, S_NAME = 100, S_ACTOR_NAME = 200 };

static uint64_t pick(const site_config *cfg, lua_Integer id, uint64_t stream) {
    return fixture_mix((uint64_t)cfg->seed, (uint64_t)id, stream);
}

static int director_count(const site_config *cfg, lua_Integer id) { return 1 + (int)(pick(cfg, id, S_DIRECTORS) % 3); }
static int actor_count(const site_config *cfg, lua_Integer id) { return 2 + (int)(pick(cfg, id, S_ACTORS) % 4); }

/* A page being written: appends that fail (out of memory) are remembered, not checked
   one by one. */
typedef struct page {
    buf b;
    int failed;
    char extra[64];           /* an extra header line of this answer */
} page;

static void put(page *p, const char *s, size_t n) {
    if (!p->failed && buf_append(&p->b, s, n) != 0) p->failed = 1;
}
static void puts_(page *p, const char *s) { put(p, s, strlen(s)); }

static void printf_(page *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_(page *p, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(p, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Text as HTML: &, <, > and " escaped. */
static void put_escaped(page *p, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&': puts_(p, "&amp;"); break;
        case '<': puts_(p, "&lt;"); break;
        case '>': puts_(p, "&gt;"); break;
        case '"': puts_(p, "&quot;"); break;
        default: put(p, s + i, 1);
        }
    }
}

/* The k-th (1-based) director's name, as text (not escaped): "Ana Lee 17-2". About one
   movie in 20 has a first director with an ampersand ("Ana & Bo Lee 17-1"): a spider must
   decode &amp; to match the answer. */
static void director_name(page *p, const site_config *cfg, lua_Integer id, int k) {
    uint64_t h = pick(cfg, id, S_NAME + (uint64_t)k);
    if (k == 1 && pick(cfg, id, S_AMP) % 20 == 0)
        printf_(p, "%s & %s %s %lld-%d", FIRST[h % COUNT(FIRST)], FIRST[(h >> 8) % COUNT(FIRST)],
                LAST[(h >> 16) % COUNT(LAST)], (long long)id, k);
    else
        printf_(p, "%s %s %lld-%d", FIRST[h % COUNT(FIRST)], LAST[(h >> 16) % COUNT(LAST)], (long long)id, k);
}

static void actor_name(page *p, const site_config *cfg, lua_Integer id, int k) {
    uint64_t h = pick(cfg, id, S_ACTOR_NAME + (uint64_t)k);
    printf_(p, "%s %s %lld-a%d", FIRST[h % COUNT(FIRST)], LAST[(h >> 16) % COUNT(LAST)], (long long)id, k);
}

static void title(page *p, const site_config *cfg, lua_Integer id) {
    uint64_t h = pick(cfg, id, S_TITLE);
    printf_(p, "The %s %s %lld", ADJ[h % COUNT(ADJ)], NOUN[(h >> 16) % COUNT(NOUN)], (long long)id);
}

static void categories(page *p, const site_config *cfg, lua_Integer id) {
    uint64_t h = pick(cfg, id, S_GENRE);
    int n = 1 + (int)(h % 3);
    puts_(p, "<div class=\"categories\">");
    for (int i = 0; i < n; i++)
        printf_(p, "<button type=\"button\" class=\"el-button category\"><span>%s</span></button>",
                GENRE[((h >> 8) + (uint64_t)i * 3) % COUNT(GENRE)]);   /* distinct */
    puts_(p, "</div>");
}

/* ---- the pages ---- */

static const char FOOTER[] =
    "<footer id=\"footer\"><a href=\"javascript:void(0)\" class=\"top\">Top</a> "
    "<a href=\"mailto:info@example.invalid\">Contact</a> <a href=\"#top\">Back to top</a> "
    "<a href=\"/files/brochure.pdf\" class=\"brochure\">Brochure (PDF)</a></footer>\n</body>\n</html>\n";

static void page_start(page *p, const char *what) {
    puts_(p, "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>");
    puts_(p, what);
    puts_(p, "Scrape | Movie</title></head>\n<body>\n<a id=\"top\"></a>\n");
}

static void list_page(page *p, const site_config *cfg, lua_Integer n) {
    page_start(p, "");
    puts_(p, "<div id=\"index\"><div class=\"el-row\">\n");
    for (lua_Integer i = 1; i <= cfg->per_page; i++) {
        lua_Integer id = (n - 1) * cfg->per_page + i;
        printf_(p, "<div class=\"el-card item\"><a class=\"name\" href=\"/detail/%lld\"><h2>", (long long)id);
        title(p, cfg, id);
        puts_(p, "</h2></a>");
        categories(p, cfg, id);
        puts_(p, "</div>\n");
    }
    puts_(p, "</div>\n<div class=\"pagination\">");
    if (n < cfg->pages) printf_(p, "<a class=\"next\" href=\"/page/%lld\">Next</a>", (long long)n + 1);
    puts_(p, "</div></div>\n");
    puts_(p, FOOTER);
}

static void detail_page(page *p, const site_config *cfg, lua_Integer id) {
    page_start(p, "");
    puts_(p, "<div id=\"detail\"><div class=\"el-card item\">\n<h2 class=\"m-b-sm\">");
    title(p, cfg, id);
    puts_(p, "</h2>\n");
    categories(p, cfg, id);
    printf_(p, "\n<p class=\"score\">%d.%d</p>\n", 5 + (int)(pick(cfg, id, S_TITLE) % 5),
            (int)(pick(cfg, id, S_GENRE) % 10));
    puts_(p, "<div class=\"directors el-row\"><h3>Directors</h3>");
    int nd = director_count(cfg, id);
    for (int k = 1; k <= nd; k++) {
        page name = {BUF_INIT, 0, {0}};
        director_name(&name, cfg, id, k);
        puts_(p, "<div class=\"director el-col\"><p class=\"name\">");
        put_escaped(p, name.b.data, name.b.len);
        puts_(p, "</p></div>");
        p->failed |= name.failed;
        buf_free(&name.b);
    }
    puts_(p, "</div>\n<div class=\"actors el-row\"><h3>Actors</h3>");
    int na = actor_count(cfg, id);
    for (int k = 1; k <= na; k++) {
        puts_(p, "<div class=\"actor el-col\"><p class=\"name\">");
        actor_name(p, cfg, id, k);
        printf_(p, "</p><p class=\"role\">Role: Character %d</p></div>", k);
    }
    puts_(p, "</div>\n<div class=\"drama\"><h3>Plot</h3><p class=\"description\">");
    /* The padding: words until the page is about page_bytes long (the tail is ~600 bytes). */
    size_t tail = strlen(FOOTER) + 40;
    size_t target = (size_t)cfg->page_bytes > p->b.len + tail ? (size_t)cfg->page_bytes - tail : 0;
    uint64_t w = pick(cfg, id, S_WORDS);
    int words = 0;
    while (!p->failed && (words < 8 || p->b.len < target)) {
        puts_(p, WORDS[(w + (uint64_t)words) % COUNT(WORDS)]);
        puts_(p, ++words % 12 == 0 ? ". " : " ");
    }
    puts_(p, "end.</p></div>\n</div></div>\n");
    puts_(p, FOOTER);
}

/* A few KB of bytes that are not HTML (NULs and bytes over 0x7f included). */
static void brochure(page *p) {
    puts_(p, "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\nstream\n");
    for (int i = 0; i < 3072; i++) {
        unsigned char c = (unsigned char)(fixture_mix(7, (uint64_t)i, 9) & 0xff);
        put(p, (const char *)&c, 1);
    }
    puts_(p, "\nendstream\n%%EOF\n");
}

/* The number in path after prefix, when path is prefix then only digits; else -1. */
static lua_Integer path_number(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0 || path[n] == '\0' || strlen(path + n) > 12) return -1;
    lua_Integer v = 0;
    for (const char *s = path + n; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static void count(const site_config *cfg, int which) { atomic_fetch_add(&cfg->counters[which], 1); }

/* Answers one request; 0, or -1 when the connection is to be closed. */
static int site_answer(int fd, const site_config *cfg, const fixture_request *r, page *p) {
    int head_only = strcmp(r->method, "HEAD") == 0;
    char path[sizeof r->target];
    memcpy(path, r->target, sizeof path);
    path[strcspn(path, "?#")] = '\0';
    lua_Integer n = 0;
    int status = 200;
    const char *reason = "OK", *type = "text/html; charset=utf-8", *extra = NULL;
    buf_reset(&p->b);
    p->failed = 0;
    if (!head_only && strcmp(r->method, "GET") != 0) {
        count(cfg, C_OTHER);
        status = 405, reason = "Method Not Allowed", extra = "Allow: GET, HEAD\r\n";
        puts_(p, "<html><body><h1>405 Method Not Allowed</h1></body></html>\n");
    } else if (strcmp(path, "/") == 0 || ((n = path_number(path, "/page/")) >= 1 && n <= cfg->pages)) {
        count(cfg, C_LIST);
        list_page(p, cfg, strcmp(path, "/") == 0 ? 1 : n);
    } else if ((n = path_number(path, "/detail/")) >= 1 && n <= cfg->pages * cfg->per_page) {
        count(cfg, C_DETAIL);
        detail_page(p, cfg, n);
    } else if (strcmp(path, "/robots.txt") == 0) {
        count(cfg, C_ROBOTS);
        if (cfg->robots != NULL) {
            type = "text/plain; charset=utf-8";
            put(p, cfg->robots, cfg->robots_len);
        } else {
            status = 404, reason = "Not Found";
            puts_(p, "<html><body><h1>404 Not Found</h1></body></html>\n");
        }
    } else if (strcmp(path, "/cookie/set") == 0 || strcmp(path, "/cookie/show") == 0) {
        /* /cookie/set?NAME=VALUE sets a cookie; /cookie/show shows the Cookie header sent,
           in <p id="cookie">, for the specs of a crawl slot's cookie jar */
        count(cfg, C_OTHER);
        if (path[8] == 's' && path[9] == 'e') {
            const char *q = strchr(r->target, '?');
            size_t len = q == NULL ? 0 : strcspn(q + 1, "#;\r\n ");
            if (len == 0 || len > 40) {
                status = 400, reason = "Bad Request";
            } else {
                snprintf(p->extra, sizeof p->extra, "Set-Cookie: %.*s; Path=/\r\n", (int)len, q + 1);
                extra = p->extra;
            }
            puts_(p, "<html><body><p>set</p></body></html>\n");
        } else {
            size_t len = 0;
            const char *cookie = fixture_header(r, "Cookie", &len);
            puts_(p, "<html><body><p id=\"cookie\">");
            if (cookie != NULL) put(p, cookie, len);
            puts_(p, "</p></body></html>\n");
        }
    } else if ((n = path_number(path, "/status/")) >= 200 && n <= 599) {
        /* /status/CODE[?retry_after=S]: that status (and Retry-After), for retry specs */
        count(cfg, C_OTHER);
        status = (int)n, reason = "Status";
        const char *ra = strstr(r->target, "retry_after=");
        if (ra != NULL) {
            long seconds = strtol(ra + strlen("retry_after="), NULL, 10);
            snprintf(p->extra, sizeof p->extra, "Retry-After: %ld\r\n", seconds < 0 ? 0 : seconds);
            extra = p->extra;
        }
        printf_(p, "<html><body><h1>%d</h1></body></html>\n", (int)n);
    } else if (strcmp(path, "/files/brochure.pdf") == 0) {
        count(cfg, C_OTHER);
        type = "application/pdf";
        brochure(p);
    } else {
        count(cfg, C_OTHER);
        status = 404, reason = "Not Found";
        puts_(p, "<html><body><h1>404 Not Found</h1><p>No such page.</p></body></html>\n");
    }
    if (p->failed) {
        status = 500, reason = "Internal Server Error", type = "text/plain", extra = NULL;
        buf_reset(&p->b);
        p->failed = 0;
    }
    if (cfg->latency_ms > 0) fixture_sleep_ms((long)cfg->latency_ms);
    return fixture_respond(fd, status, reason, type, extra, p->b.data, p->b.len, head_only, r->keep_alive);
}

static void site_handle(int fd, void *arg) {
    const site_config *cfg = arg;
    fixture_conn c = {fd, BUF_INIT};
    page p = {BUF_INIT, 0, {0}};
    for (;;) {
        fixture_request r;
        int rc = fixture_read_request(&c, &r);
        if (rc == 0) break;
        count(cfg, C_REQUESTS);
        if (rc < 0 || r.chunked) {
            count(cfg, C_OTHER);
            static const char bad[] = "<html><body><h1>400 Bad Request</h1></body></html>\n";
            fixture_respond(fd, 400, "Bad Request", "text/html; charset=utf-8", NULL, bad, sizeof bad - 1, 0, 0);
            break;
        }
        if (fixture_read_body(&c, &r) != 0) break;
        if (site_answer(fd, cfg, &r, &p) != 0 || !r.keep_alive) break;
    }
    close(fd);
    buf_free(&c.in);
    buf_free(&p.b);
}

static void site_serve(int listen_fd, void *arg) {
    site_config *cfg = arg;
    fixture_accept_loop(listen_fd, site_handle, cfg, &cfg->counters[C_CONNECTIONS]);
}

/* ---- the Lua side ---- */

static site *check_site(lua_State *L, int i) { return type_check_fast(L, i, SITE_TYPE); }

static site *check_open_site(lua_State *L, int i) {
    site *s = check_site(L, i);
    if (s->srv.closed) type_closed_error(L, SITE_TYPE);
    return s;
}

static const char *const site_options[] = {"pages", "per_page", "latency", "page_bytes", "robots", "seed", NULL};

/* core.fixture_site([opts]) -> a Site serving on 127.0.0.1. Raises on a bad option, or
   when the socket, the mapping or the fork fails. */
static int site_new(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    else {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    args_check_options(L, 1, SITE_FNAME, site_options);
    site_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.pages = args_opt_integer(L, 1, SITE_FNAME, "pages", 10, 1, 100000);
    cfg.per_page = args_opt_integer(L, 1, SITE_FNAME, "per_page", 10, 1, 1000);
    cfg.latency_ms = args_opt_integer(L, 1, SITE_FNAME, "latency", 0, 0, 600000);
    cfg.page_bytes = args_opt_integer(L, 1, SITE_FNAME, "page_bytes", 0, 0, 64 << 20);
    cfg.seed = args_opt_integer(L, 1, SITE_FNAME, "seed", 1, LUA_MININTEGER, LUA_MAXINTEGER);
    size_t robots_len = 0;
    const char *robots = args_opt_string(L, 1, SITE_FNAME, "robots", NULL, &robots_len);
    if (cfg.pages * cfg.per_page > SITE_MAX_MOVIES)
        return luaL_error(L, "%s: pages * per_page must be at most %d, got %I", SITE_FNAME, SITE_MAX_MOVIES,
                          cfg.pages * cfg.per_page);

    /* Created stopped (nothing to release), then given each resource in turn, so that a
       failure part way leaves an object its __gc releases. */
    site *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->srv.owner = getpid();
    s->srv.pidfd = s->srv.reserved_fd = -1;
    s->cfg = cfg;
    luaL_setmetatable(L, SITE_TYPE);
    if (robots != NULL) {
        s->cfg.robots = malloc(robots_len + 1);
        if (s->cfg.robots == NULL) return luaL_error(L, "not enough memory");
        memcpy(s->cfg.robots, robots, robots_len);
        s->cfg.robots_len = robots_len;
    }
    if (fixture_counters_map(&s->srv, C_COUNT) != 0)
        return luaL_error(L, "%s: cannot map counters: %s", SITE_FNAME, strerror(errno));
    s->cfg.counters = s->srv.counters;
    int listen_fd = fixture_bind(&s->srv.port, 1);
    if (listen_fd < 0) return luaL_error(L, "%s: cannot listen on 127.0.0.1: %s", SITE_FNAME, strerror(errno));
    if (fixture_spawn(&s->srv, listen_fd, site_serve, &s->cfg) != 0)
        return luaL_error(L, "%s: cannot fork: %s", SITE_FNAME, strerror(errno));
    return 1;
}

static void push_url(lua_State *L, const site *s) { lua_pushfstring(L, "http://127.0.0.1:%d", s->srv.port); }

/* site:start_urls() -> { url .. "/page/1", ..., url .. "/page/N" } */
static int site_start_urls(lua_State *L) {
    site *s = check_open_site(L, 1);
    lua_createtable(L, (int)s->cfg.pages, 0);
    for (lua_Integer n = 1; n <= s->cfg.pages; n++) {
        lua_pushfstring(L, "http://127.0.0.1:%d/page/%I", s->srv.port, n);
        lua_rawseti(L, -2, n);
    }
    return 1;
}

/* site:answer() -> { [url .. "/detail/ID"] = { director, ... } } for every movie: the
   names as text (&amp; decoded), in page order. */
static int site_answer_table(lua_State *L) {
    site *s = check_open_site(L, 1);
    lua_Integer movies = s->cfg.pages * s->cfg.per_page;
    lua_createtable(L, 0, movies > INT32_MAX ? INT32_MAX : (int)movies);
    page name = {BUF_INIT, 0, {0}};
    for (lua_Integer id = 1; id <= movies; id++) {
        lua_pushfstring(L, "http://127.0.0.1:%d/detail/%I", s->srv.port, id);
        int nd = director_count(&s->cfg, id);
        lua_createtable(L, nd, 0);
        for (int k = 1; k <= nd; k++) {
            buf_reset(&name.b);
            name.failed = 0;
            director_name(&name, &s->cfg, id, k);
            if (name.failed) {
                buf_free(&name.b);
                return luaL_error(L, "not enough memory");
            }
            lua_pushlstring(L, name.b.data, name.b.len);
            lua_rawseti(L, -2, k);
        }
        lua_rawset(L, -3);
    }
    buf_free(&name.b);
    return 1;
}

static void set_count(lua_State *L, const char *key, _Atomic uint64_t *c) {
    lua_pushinteger(L, (lua_Integer)atomic_load(c));
    lua_setfield(L, -2, key);
}

/* site:counters() -> { requests, connections, by_kind = { list, detail, robots, other } },
   read live from the server's shared mapping. */
static int site_counters(lua_State *L) {
    site *s = check_open_site(L, 1);
    _Atomic uint64_t *c = s->srv.counters;
    lua_createtable(L, 0, 3);
    set_count(L, "requests", &c[C_REQUESTS]);
    set_count(L, "connections", &c[C_CONNECTIONS]);
    lua_createtable(L, 0, 4);
    set_count(L, "list", &c[C_LIST]);
    set_count(L, "detail", &c[C_DETAIL]);
    set_count(L, "robots", &c[C_ROBOTS]);
    set_count(L, "other", &c[C_OTHER]);
    lua_setfield(L, -2, "by_kind");
    return 1;
}

/* site:close(): stops the server (in the process that made it). Idempotent; also __gc
   and __close. */
static int site_close(lua_State *L) {
    site *s = check_site(L, 1);
    fixture_stop(&s->srv);
    free(s->cfg.robots);
    s->cfg.robots = NULL;
    s->cfg.counters = NULL;
    return 0;
}

/* Fields: url, port, pid (nil once closed); then the methods (upvalue 2). */
static int site_index(lua_State *L) {
    site *s = check_site(L, 1);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "url") == 0) push_url(L, s);
    else if (strcmp(key, "port") == 0) lua_pushinteger(L, s->srv.port);
    else if (strcmp(key, "pid") == 0) {
        if (s->srv.pid > 0) lua_pushinteger(L, s->srv.pid);
        else lua_pushnil(L);
    } else {
        lua_getfield(L, lua_upvalueindex(2), key);
    }
    return 1;
}

static int site_tostring(lua_State *L) {
    site *s = check_site(L, 1);
    lua_pushfstring(L, "%s (http://127.0.0.1:%d%s)", SITE_TYPE, s->srv.port, s->srv.closed ? ", closed" : "");
    return 1;
}

void forage_open_fixture_site(lua_State *L) {
    static const luaL_Reg methods[] = {{"start_urls", site_start_urls},
                                       {"answer", site_answer_table},
                                       {"counters", site_counters},
                                       {"close", site_close},
                                       {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", site_close}, {"__close", site_close}, {"__tostring", site_tostring}, {NULL, NULL}};
    type_register(L, SITE_TYPE, methods, meta, 1);
    /* The fields are computed: __index becomes a function that falls back on the methods. */
    luaL_getmetatable(L, SITE_TYPE);
    lua_pushvalue(L, -1);
    lua_getfield(L, -2, "__index");
    lua_pushcclosure(L, site_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, site_new);
    lua_setfield(L, -2, "fixture_site");
}
