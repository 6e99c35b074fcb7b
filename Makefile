# forage: `make demo` and `make test` are the two commands a user types.
# Everything they need is installed by `make deps` (Debian's apt-get, sudo when not root).

SHELL      := /bin/bash
LUA        ?= lua5.4
BUSTED     ?= busted
LUA_INC    ?= /usr/include/lua5.4
CC         ?= cc
PY         ?= /usr/bin/python3

WARN   = -Wall -Wextra -Wshadow -Wpedantic -Wstrict-prototypes -Wmissing-prototypes \
         -Wformat=2 -Wundef -Wvla -Werror
CFLAGS ?= -O2 -g
XML2_INC   ?= /usr/include/libxml2
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -I$(LUA_INC) -I$(XML2_INC) $(CFLAGS)
WEB_LIBS   = -lcurl -lxml2

# Two modules: forage.core (processes, pools, shared objects: no dependency but libc) and
# forage.web (url, html, http: libcurl and libxml2), loaded only when used.
WEB_SRC  = src/web.c src/url.c src/html.c src/http.c src/buf.c src/args.c src/hash.c src/luatype.c src/clock.c
CORE_SRC = $(filter-out src/web.c src/url.c src/html.c src/http.c,$(wildcard src/*.c))
SRC  = $(wildcard src/*.c)
HDR  = $(wildcard src/*.h)
SO   = forage/core.so forage/web.so

# Debian packages: what building and testing need; what benchmarks and fuzzing add.
DEPS_PKGS  = gcc make libc6-dev lua5.4 liblua5.4-dev luarocks lua-busted lua-check \
             libcurl4-openssl-dev libxml2-dev nginx-light tinyproxy openssl lua-socket
BENCH_PKGS = python3 python3-requests python3-lxml python3-scrapy
FUZZ_PKGS  = clang libclang-rt-14-dev

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH := $(CURDIR)/?.so;;

.PHONY: all deps bench-deps fuzz-deps test check lint rock-check demo bench fuzz clean

all: $(SO)

forage/core.so: $(CORE_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(CORE_SRC)

forage/web.so: $(WEB_SRC) $(HDR) Makefile
	@mkdir -p forage
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(WEB_SRC) $(WEB_LIBS)

# Installs what is missing, and nothing when all is present.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
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
	  awk '/successes \/ .* failures \/ .* errors/ { print "$(2): " $$1 " passed, " $$4 + $$7 " failed" }'; \
	  exit $$rc
endef

test: deps all lint
	$(call run_specs,$(BUSTED),specs)
	$(MAKE) --no-print-directory rock-check
	$(MAKE) --no-print-directory check

lint: deps
	luacheck --quiet lua spec bench examples fuzz bin/forage

# Installs the rock offline into a private tree and loads it from another directory.
rock-check: deps
	@for f in $(SRC); do grep -q "\"$$f\"" rockspec/forage-scm-1.rockspec || { echo "$$f is missing from the rockspec"; exit 1; }; done
	rm -rf build/rocktree
	luarocks --lua-version 5.4 make --tree=build/rocktree --deps-mode=none rockspec/forage-scm-1.rockspec \
	  CURL_INCDIR=/usr/include/$$(gcc -print-multiarch) >build/rock.log 2>&1 || { cat build/rock.log; exit 1; }
	cd /tmp && LUA_PATH='$(CURDIR)/build/rocktree/share/lua/5.4/?.lua;$(CURDIR)/build/rocktree/share/lua/5.4/?/init.lua;;' \
	  LUA_CPATH='$(CURDIR)/build/rocktree/lib/lua/5.4/?.so;;' \
	  $(LUA) -e 'local f = require "forage"; assert(f.pool and f.process, "incomplete rock"); print("rock ok:", f, f.version)'

# The sanitizer build: one shared object, and the whole suite run against it.
ASAN_SO = build/asan/forage/core.so build/asan/forage/web.so
ASAN_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -I$(LUA_INC) -I$(XML2_INC) -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined
build/asan/forage/core.so: $(CORE_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(CORE_SRC)

build/asan/forage/web.so: $(WEB_SRC) $(HDR) Makefile
	@mkdir -p build/asan/forage
	$(CC) $(ASAN_CFLAGS) -shared -o $@ $(WEB_SRC) $(WEB_LIBS)

SANITIZER_ENV = LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LUA_CPATH='$(CURDIR)/build/asan/?.so;;'

check: deps $(ASAN_SO)
	$(call run_specs,$(SANITIZER_ENV) $(BUSTED) --cpath='$(CURDIR)/build/asan/?.so',sanitized specs)

demo: deps all
	$(LUA) examples/demo.lua

bench: bench-deps all
	$(LUA) bench/run.lua

fuzz: fuzz-deps
	$(MAKE) -C fuzz

clean:
	rm -rf forage build
