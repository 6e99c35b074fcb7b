-- Every example runs exactly as the README says: in a shell where `eval "$(make -s env)"`
-- ran, with none of the checkout's paths set beforehand, from the checkout.
local root = assert(io.popen("pwd")):read("l")

-- The environment of a user's fresh shell: no Lua paths, and none of a parent make's
-- variables (this spec also runs under `make test`).
local CLEAN_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT " ..
  "-u MAKEFLAGS -u MFLAGS -u MAKELEVEL"

-- Runs a shell script from dir in that environment; returns its output and whether it exited 0.
local function sh(script, dir)
  local quoted = "'" .. script:gsub("'", "'\\''") .. "'"
  local cmd = string.format("cd '%s' && %s bash -c %s 2>&1", dir or root, CLEAN_ENV, quoted)
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("a")
  return out, pipe:close() == true
end

local function run_example(name)
  local out, ok = sh('eval "$(make -s env)"; lua5.4 examples/' .. name)
  return "\n" .. out, ok
end

describe("the README's recipe for the checkout", function()
  it("lua5.4 finds forage only after eval \"$(make -s env)\", from any directory", function()
    local out, ok = sh("lua5.4 -e 'require \"forage\"'", "/")
    assert.is_false(ok)
    assert.matches("module 'forage' not found", out, 1, true)

    out, ok = sh('cd "' .. root .. '" && eval "$(make -s env)" && cd / && ' ..
      [[lua5.4 -e 'require "forage"; print(package.searchpath("forage.core", package.cpath))' && ]] ..
      "command -v forage", "/")
    assert.is_true(ok, out)
    assert.matches(root .. "/forage/core.so", out, 1, true)
    assert.matches(root .. "/bin/forage", out, 1, true)
  end)
end)

describe("examples", function()
  it("pool_basics.lua: map, imap, imap_unordered, starmap, apply_async, get with a timeout", function()
    local out, ok = run_example("pool_basics.lua")
    assert.is_true(ok, out)
    assert.matches("apply_async:\t13320", out, 1, true)
    assert.matches("get(0.1) on a 2 s task: timeout", out, 1, true)
    assert.matches("apply_async x8: ran in %d of the 4 workers", out)
    local squares = "[0, 666, 1332, 1998, 2664, 3330, 3996, 4662, 5328, 5994]"
    for _, what in ipairs { "map:", "imap:", "imap_unordered (sorted):", "map_async callback:" } do
      assert.matches(what .. "\t" .. squares, out, 1, true)
    end
    assert.matches("starmap:\t[1, 4, 9]", out, 1, true)
    assert.matches("apply of a failing task raises:\tseven is bad", out, 1, true)
  end)

  it("producer_consumer.lua: every item handled once, join and close end the consumers", function()
    local out, ok = run_example("producer_consumer.lua")
    assert.is_true(ok, out)
    assert.matches("50 items from 2 producers, handled by 3 consumers", out, 1, true)
    assert.matches("sum of squares:\t42925", out, 1, true)
    local handled = 0
    for n in out:gmatch("consumer %d handled (%d+)") do handled = handled + tonumber(n) end
    assert.equals(50, handled)
  end)

  it("shared_counter.lua: no add lost, with an atomic add or under a lock", function()
    local out, ok = run_example("shared_counter.lua")
    assert.is_true(ok, out)
    assert.matches("atomic add:\t40000", out, 1, true)
    assert.matches("under a lock:\t40000", out, 1, true)
    assert.matches("\n3.1415927\n0 -1 -2 -3 -4 -5 -6 -7 -8 -9\n", out, 1, true)
  end)

  it("crawl.lua: a list -> detail crawl of its own local site, which it stops", function()
    local out, ok = run_example("crawl.lua")
    assert.is_true(ok, out)
    assert.matches("collected 12 detail pages from 3 list pages, 0 failures", out, 1, true)
    for n = 1, 12 do
      assert.matches(("\n/detail/%d,Director %s\n"):format(n, string.char(64 + n)), out, 1, true)
    end
    local pid = tonumber(out:match("the site %(pid (%d+)%) is stopped"))
    assert.is_number(pid)
    assert.is_false(require("helpers").exists(pid))
  end)

  it("demo.lua (make demo): the blog's crawl collects every detail page", function()
    local out, ok = run_example("demo.lua")
    assert.is_true(ok, out)
    assert.matches("hello\tbob", out, 1, true)
    assert.matches("collected 50 detail pages from 5 list pages", out, 1, true)
  end)
end)
