rockspec_format = "3.0"
package = "forage"
version = "scm-1"
source = {
   url = "git+file:///dev/null",
}
description = {
   summary = "Fork pools, shared objects and sticky proxies for crawling, with a C core",
   detailed = [[
forage runs Lua functions in a pool of forked workers (the whole of Python's
multiprocessing.Pool API, robust to killed workers), moves Lua values between
processes with a versioned wire format, and is the base of a proxy-aware crawler.
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.4",
}
-- Debian keeps curl's headers under /usr/include/<multiarch>: pass
-- CURL_INCDIR=/usr/include/$(gcc -print-multiarch) to luarocks (make rock-check does).
external_dependencies = {
   CURL = { header = "curl/curl.h", library = "curl" },
   LIBXML2 = { header = "libxml2/libxml/HTMLparser.h", library = "xml2" },
}
build = {
   type = "builtin",
   install = {
      bin = { forage = "bin/forage" },
   },
   modules = {
      ["forage.core"] = {
         sources = {
            "src/args.c", "src/buf.c", "src/core.c", "src/dict.c", "src/fork.c", "src/frame.c", "src/hash.c",
            "src/clock.c",
            "src/lease.c", "src/luatype.c",
            "src/pause.c", "src/pipe.c", "src/pool.c", "src/proc.c", "src/queue.c", "src/set.c", "src/shm.c",
            "src/sync.c", "src/sys.c", "src/value.c", "src/wire.c", "src/worker.c",
         },
         defines = { "_GNU_SOURCE" },
      },
      ["forage.web"] = {
         sources = { "src/web.c", "src/url.c", "src/html.c", "src/http.c", "src/buf.c", "src/args.c", "src/hash.c",
                     "src/luatype.c", "src/clock.c" },
         defines = { "_GNU_SOURCE" },
         incdirs = { "$(CURL_INCDIR)", "$(LIBXML2_INCDIR)/libxml2" },
         libdirs = { "$(CURL_LIBDIR)", "$(LIBXML2_LIBDIR)" },
         libraries = { "curl", "xml2" },
      },
      ["forage"] = "lua/forage/init.lua",
      ["forage.pool"] = "lua/forage/pool.lua",
      ["forage.worker"] = "lua/forage/worker.lua",
      ["forage.css"] = "lua/forage/css.lua",
      ["forage.args"] = "lua/forage/args.lua",
   },
}
