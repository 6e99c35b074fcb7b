rockspec_format = "3.0"
package = "forage"
version = "scm-1"
-- There is no public repository yet: this URL is a placeholder to replace when forage
-- is published. `luarocks make` builds from the checkout and never fetches it.
source = {
   url = "git+https://github.com/forage-placeholder/forage.git",
   branch = "main",
}
description = {
   summary = "Fork pools, shared objects and sticky proxies for crawling, with a C core",
   detailed = [[
forage runs Lua functions in a pool of forked workers (the whole of Python's
multiprocessing.Pool API, robust to killed workers), shares queues, locks, values,
a seen-set and a dict between processes (robust to SIGKILL), and fetches and
parses pages with forage.http (libcurl), forage.html (libxml2) and forage.url.
]],
   homepage = "https://github.com/forage-placeholder/forage",
   license = "MIT",
}
dependencies = {
   "lua >= 5.4",
   "argparse",
   "lua-cjson",
}
-- CURL is declared by its library only: Debian keeps curl/curl.h under
-- /usr/include/<multiarch>, where the compiler looks by itself but luarocks' header check
-- does not. CURL_DIR or CURL_INCDIR still point luarocks at a curl installed elsewhere.
external_dependencies = {
   CURL = { library = "curl" },
   LIBXML2 = { header = "libxml2/libxml/HTMLparser.h", library = "xml2" },
   SQLITE = { header = "sqlite3.h", library = "sqlite3" },
   HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
}
test = {
   type = "busted",
}
build = {
   type = "builtin",
   install = {
      bin = { forage = "bin/forage" },
   },
   modules = {
      ["forage.core"] = {
         sources = {
            "src/args.c", "src/buf.c", "src/clock.c", "src/core.c", "src/dict.c", "src/digest.c", "src/file.c",
            "src/fork.c", "src/frame.c",
            "src/frontier.c",
            "src/fixture_net.c", "src/fixture_proxy.c", "src/fixture_site.c",
            "src/hash.c", "src/hmac.c", "src/lease.c", "src/luatype.c", "src/pause.c", "src/pipe.c", "src/pool.c",
            "src/pool_proto.c",
            "src/proc.c",
            "src/queue.c", "src/set.c", "src/shm.c", "src/signals.c", "src/socket.c", "src/sync.c", "src/sys.c",
            "src/value.c",
            "src/wire.c",
            "src/worker.c",
         },
         defines = { "_GNU_SOURCE" },
         libraries = { "pthread" },   -- forage.testing's servers (in libc itself since glibc 2.34)
      },
      ["forage.web"] = {
         sources = { "src/web.c", "src/url.c", "src/html.c", "src/http.c", "src/buf.c", "src/args.c", "src/hash.c",
                     "src/luatype.c", "src/clock.c" },
         defines = { "_GNU_SOURCE" },
         incdirs = { "$(CURL_INCDIR)", "$(LIBXML2_INCDIR)/libxml2" },
         libdirs = { "$(CURL_LIBDIR)", "$(LIBXML2_LIBDIR)" },
         libraries = { "curl", "xml2" },
      },
      ["forage.sqlite"] = {
         sources = { "src/sqlite.c", "src/args.c", "src/luatype.c", "src/buf.c" },
         defines = { "_GNU_SOURCE" },
         incdirs = { "$(SQLITE_INCDIR)" },
         libdirs = { "$(SQLITE_LIBDIR)" },
         libraries = { "sqlite3" },
      },
      ["forage.redis"] = {
         sources = { "src/redis.c", "src/args.c", "src/luatype.c" },
         defines = { "_GNU_SOURCE" },
         incdirs = { "$(HIREDIS_INCDIR)" },
         libdirs = { "$(HIREDIS_LIBDIR)" },
         libraries = { "hiredis", "pthread" },
      },
      ["forage"] = "lua/forage/init.lua",
      ["forage.pool"] = "lua/forage/pool.lua",
      ["forage.worker"] = "lua/forage/worker.lua",
      ["forage.css"] = "lua/forage/css.lua",
      ["forage.args"] = "lua/forage/args.lua",
      ["forage.crawl.frontier"] = "lua/forage/crawl/frontier.lua",
      ["forage.testing"] = "lua/forage/testing.lua",
      ["forage.cli"] = "lua/forage/cli/init.lua",
      ["forage.cli.fetch"] = "lua/forage/cli/fetch.lua",
      ["forage.cli.help"] = "lua/forage/cli/help.lua",
      ["forage.cli.page"] = "lua/forage/cli/page.lua",
      ["forage.cli.shell"] = "lua/forage/cli/shell.lua",
      ["forage.cli.version"] = "lua/forage/cli/version.lua",
      ["forage.cli.crawl"] = "lua/forage/cli/crawl.lua",
      ["forage.cli.demo"] = "lua/forage/cli/demo.lua",
      ["forage.manager"] = "lua/forage/manager/init.lua",
      ["forage.manager.objects"] = "lua/forage/manager/objects.lua",
      ["forage.manager.protocol"] = "lua/forage/manager/protocol.lua",
      ["forage.manager.proxy"] = "lua/forage/manager/proxy.lua",
      ["forage.manager.server"] = "lua/forage/manager/server.lua",
      ["forage.crawl"] = "lua/forage/crawl/init.lua",
      ["forage.crawl.engine"] = "lua/forage/crawl/engine.lua",
      ["forage.crawl.page"] = "lua/forage/crawl/page.lua",
      ["forage.crawl.spider"] = "lua/forage/crawl/spider.lua",
      ["forage.crawl.worker"] = "lua/forage/crawl/worker.lua",
      ["forage.crawl.cache"] = "lua/forage/crawl/cache.lua",
      ["forage.crawl.cookies"] = "lua/forage/crawl/cookies.lua",
      ["forage.crawl.log"] = "lua/forage/crawl/log.lua",
      ["forage.crawl.output"] = "lua/forage/crawl/output.lua",
      ["forage.crawl.progress"] = "lua/forage/crawl/progress.lua",
      ["forage.crawl.retry_after"] = "lua/forage/crawl/retry_after.lua",
      ["forage.crawl.robots"] = "lua/forage/crawl/robots.lua",
      ["forage.crawl.sink"] = "lua/forage/crawl/sink.lua",
      ["forage.crawl.state"] = "lua/forage/crawl/state.lua",
      ["forage.crawl.redis"] = "lua/forage/crawl/redis.lua",
      ["forage.crawl.redis_scripts"] = "lua/forage/crawl/redis_scripts.lua",
      ["forage.cli.status"] = "lua/forage/cli/status.lua",
      ["forage.cli.merge"] = "lua/forage/cli/merge.lua",
   },
}
