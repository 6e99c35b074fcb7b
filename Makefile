# forage: `make demo` and `make test` are the two commands a user types.
# Everything they need is installed by `make deps` (Debian's apt-get, sudo when not root).

SHELL      := /bin/bash
LUA        ?= lua5.4
BUSTED     ?= busted
LUA_INC    ?= /usr/include/lua5.4
CC         ?= cc
PY         ?= /usr/bin/python3

WARN   = -Wall -Wextra -Wshadow -Wpedantic -Wstrict-prototypes -Wmissing-prototypes \
         -Wformat=2 -Wundef -Wvla -Wconversion -Werror
CFLAGS ?= -O2 -g
XML2_INC   ?= /usr/include/libxml2
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -I$(LUA_INC) -I$(XML2_INC) $(CFLAGS)
WEB_LIBS   = -lcurl -lxml2

# Two modules: forage.core (processes, pools, shared objects: no dependency but libc) and
# forage.web (url, html, http: libcurl and libxml2), loaded only when used.
WEB_SRC  = src/web.c src/url.c src/html.c src/http.c src/buf.c src/args.c src/hash.c src/luatype.c src/clock.c
# forage.sqlite (sqlite.c: the crawl's crash-safe state), loaded only by a crawl with a state.
SQLITE_SRC = src/sqlite.c src/args.c src/luatype.c src/buf.c
# forage.redis (redis.c: hiredis, for a crawl that several hosts share), loaded only by such a crawl.
REDIS_SRC = src/redis.c src/args.c src/luatype.c
CORE_SRC = $(filter-out src/web.c src/url.c src/html.c src/http.c src/sqlite.c src/redis.c,$(wildcard src/*.c))
SRC  = $(wildcard src/*.c)
HDR  = $(wildcard src/*.h)
SO   = forage/core.so forage/web.so forage/sqlite.so forage/redis.so

# Debian packages: what building and testing need; what benchmarks and fuzzing add.
DEPS_PKGS  = gcc make libc6-dev lua5.4 liblua5.4-dev luarocks lua-busted lua-check lua-argparse \
             libcurl4-openssl-dev libxml2-dev libsqlite3-dev libhiredis-dev redis-server \
             nginx-light tinyproxy openssl lua-socket lua-cjson python3
BENCH_PKGS = python3 python3-requests python3-lxml python3-scrapy wrk \
             golang-go golang-github-puerkitobio-goquery-dev libnginx-mod-http-echo
# Packages whose service Debian starts at install (package:service): the specs run their own
# nginx, tinyproxy and redis-server on 127.0.0.1, so none is left running system-wide.
SERVICE_PKGS = nginx-light:nginx tinyproxy:tinyproxy redis-server:redis-server
FUZZ_PKGS  = clang libclang-rt-14-dev

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/?.so;;
# A make started from a recipe (the specs run `make -s env` under make test) prints no
# "Entering directory" lines into the output it is asked for.
MAKEFLAGS += --no-print-directory

.PHONY: all deps bench-deps fuzz-deps test check check-all lint rock-check demo bench fuzz clean env

all: $(SO)

forage/core.so: $(CORE_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(CORE_SRC) -pthread

forage/web.so: $(WEB_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(WEB_SRC) $(WEB_LIBS)

forage/sqlite.so: $(SQLITE_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(SQLITE_SRC) -lsqlite3

forage/redis.so: $(REDIS_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(REDIS_SRC) -lhiredis -pthread

# Installs what is missing, and nothing when all is present. A policy-rc.d that says 101
# ("not allowed") keeps the packages' services from starting during the install; it is
# removed afterwards (when it was ours), and any service of a package installed here that
# started all the same is stopped.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    trap '$$SUDO rm -f /usr/sbin/policy-rc.d' EXIT; \
	    printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null; \
	    $$SUDO chmod 755 /usr/sbin/policy-rc.d; \
	  fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; rc=$$?; \
	  for ps in $(SERVICE_PKGS); do \
	    case " $$(echo $$missing) " in *" $${ps%%:*} "*) \
	      $$SUDO service $${ps#*:} status >/dev/null 2>&1 && $$SUDO service $${ps#*:} stop >/dev/null 2>&1; \
	    esac; \
	  done; \
	  exit $$rc; \
	fi
endef

deps:
	$(call apt_install,$(DEPS_PKGS))

bench-deps: deps
	$(call apt_install,$(BENCH_PKGS))

fuzz-deps: deps
	$(call apt_install,$(FUZZ_PKGS))

# The tests: lint, the spec suite, the rock installed offline, and the suite again
# under AddressSanitizer and UndefinedBehaviorSanitizer.
# Runs busted and ends with the plain "N passed, N failed" line CI reads.
define run_specs
	@mkdir -p build
	$(1) -o utfTerminal 2>&1 | tee build/specs.log; rc=$${PIPESTATUS[0]}; \
	  sed 's/\x1b\[[0-9;]*m//g' build/specs.log | \
	  awk '/[0-9]+ success(es)? \/ [0-9]+ failures? \/ [0-9]+ errors? / { print "$(2): " $$1 " passed, " $$4 + $$7 " failed" }'; \
	  exit $$rc
endef

test: deps all lint
	$(call run_specs,$(BUSTED),specs)
	$(MAKE) --no-print-directory rock-check
	$(MAKE) --no-print-directory check

lint: deps
	luacheck --quiet lua spec bench examples fuzz bin/forage

# Runs the README's own install commands (the blocks between its rock-install and rock-use
# markers, as a user would paste them) with HOME in a fresh directory, so that a --local
# install lands there, and none of this checkout's paths in the environment; then loads the
# rock from another directory. Fails first when a C file or a Lua module is not in the rockspec.
ROCKSPEC  = rockspec/forage-scm-1.rockspec
ROCK_HOME = $(CURDIR)/build/rockhome
# luarocks builds in the directory it runs in (objects beside the sources, the modules
# where make puts its own): the check runs the README's lines in a copy of the checkout,
# so that it never replaces this checkout's build.
ROCK_SRC  = $(CURDIR)/build/rocksrc
readme_block = sed -n '/<!-- $(1):begin -->/,/<!-- $(1):end -->/p' $(CURDIR)/README.md | grep -v '^<!--' | grep -v '^```'
ROCK_LOAD_CHECK = local f = require "forage"; assert(f.pool and f.process and f.http and f.html and f.url, "incomplete rock"); \
  local so = package.searchpath("forage.core", package.cpath); \
  assert(so and so:find(os.getenv("HOME"), 1, true) == 1, "forage.core is not from the rock: " .. tostring(so)); \
  print("rock ok:", so, f.version)
rock-check: deps
	@for f in $(SRC) $$(find lua -name '*.lua' | sort); do \
	  grep -qF "\"$$f\"" $(ROCKSPEC) || { echo "$$f is missing from $(ROCKSPEC)"; exit 1; }; \
	done
	@test -n "$$($(call readme_block,rock-install))" || { echo "README.md: no rock-install block"; exit 1; }
	rm -rf $(ROCK_HOME) $(ROCK_SRC) && mkdir -p $(ROCK_HOME) $(ROCK_SRC)
	@tar -C $(CURDIR) --exclude=./build --exclude=./forage --exclude='*.o' --exclude=./.git -cf - . | tar -C $(ROCK_SRC) -xf -
	@echo "README's install commands, in a copy of the checkout:"; $(call readme_block,rock-install)
	@cd $(ROCK_SRC) && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT HOME=$(ROCK_HOME) \
	  bash -euo pipefail -c "$$($(call readme_block,rock-install))" >$(CURDIR)/build/rock.log 2>&1 || { cat $(CURDIR)/build/rock.log; exit 1; }
	@echo "README's commands to use it, from $(ROCK_HOME):"; $(call readme_block,rock-use)
	@cd $(ROCK_HOME) && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT HOME=$(ROCK_HOME) \
	  ROCK_LOAD_CHECK='$(ROCK_LOAD_CHECK)' \
	  bash -euo pipefail -c "$$($(call readme_block,rock-use))"$$'\n''lua5.4 -e "$$ROCK_LOAD_CHECK"; test -x "$$HOME/.luarocks/bin/forage"'

# The sanitizer build: one shared object, and the whole suite run against it.
ASAN_SO = build/asan/forage/core.so build/asan/forage/web.so build/asan/forage/sqlite.so build/asan/forage/redis.so
ASAN_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -I$(LUA_INC) -I$(XML2_INC) -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined
build/asan/forage/core.so: $(CORE_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(CORE_SRC) -pthread

build/asan/forage/sqlite.so: $(SQLITE_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(SQLITE_SRC) -lsqlite3

build/asan/forage/redis.so: $(REDIS_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(REDIS_SRC) -lhiredis -pthread

build/asan/forage/web.so: $(WEB_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(WEB_SRC) $(WEB_LIBS)

SANITIZER_ENV = LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LUA_CPATH='$(CURDIR)/build/asan/?.so;;'

check: deps $(ASAN_SO)
	$(call run_specs,$(SANITIZER_ENV) $(BUSTED) --cpath='$(CURDIR)/build/asan/?.so',sanitized specs)

# make test, then the long chaos runs (spec/long/*_long.lua: crash-safe crawls stopped again
# and again; minutes, so not in make test, whose busted picks only spec/**/*_spec.lua).
check-all: test
	$(BUSTED) --pattern=_long spec/long

# Prints the exports that make this checkout's forage (and bin/forage) usable from any
# directory: eval "$$(make -s env)".
env: all
	@echo "export LUA_PATH='$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;'"
	@echo "export LUA_CPATH='$(CURDIR)/?.so;;'"
	@echo "export PATH='$(CURDIR)/bin:'\"\$$PATH\""

# A real crawl of the bundled site (forage.testing) through 20 local proxies, several bad.
demo: deps all
	$(LUA) bin/forage demo

bench: bench-deps all
	$(LUA) bench/run.lua

fuzz: fuzz-deps
	$(MAKE) -C fuzz

clean:
	rm -rf forage build
