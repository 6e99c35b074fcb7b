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

-- Runs an example, which must exit 0 and print each of the lines given (plain text).
local function expect_lines(name, lines)
  local out, ok = run_example(name)
  assert.is_true(ok, out)
  for _, line in ipairs(lines) do assert.matches("\n" .. line .. "\n", out, 1, true) end
  return out
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
    local squares = "[0, 666, 1332, 1998, 2664, 3330, 3996, 4662, 5328, 5994]"
    local out = expect_lines("pool_basics.lua", {
      "apply_async:\t13320", "get(0.1) on a 2 s task: timeout",
      "map:\t" .. squares, "imap:\t" .. squares, "imap_unordered (sorted):\t" .. squares,
      "map_async callback:\t" .. squares, "starmap:\t[1, 4, 9]",
      "apply of a failing task raises:\tseven is bad",
    })
    assert.matches("\napply_async x8: ran in [1-4] of the 4 workers\n", out)
  end)

  it("producer_consumer.lua: every item handled once, join and close end the consumers", function()
    local out = expect_lines("producer_consumer.lua", {
      "50 items from 2 producers, handled by 3 consumers", "sum of squares:\t42925" })
    local handled = 0
    for n in out:gmatch("consumer %d handled (%d+)") do handled = handled + tonumber(n) end
    assert.equals(50, handled)
  end)

  it("shared_counter.lua: no add lost, with an atomic add or under a lock", function()
    expect_lines("shared_counter.lua", { "atomic add:\t40000", "under a lock:\t40000",
      "3.1415927", "0 -1 -2 -3 -4 -5 -6 -7 -8 -9" })
  end)

  it("managers.lua: the blog's manager examples, local and remote", function()
    expect_lines("managers.lua", { "dict: 0.25=false 1=1 2=2", "list: 9 8 7 6 5 4 3 2 1 0", "maths: 7 56",
      "client 2 got: local hello", "client 2 got: hello",
      "wrong key: auth (refused: authentication failed: wrong authkey)",
      "nested: hello hello", "copy changed, list says: 0", "written back, list says: 1" })
  end)

  it("crawl.lua: a list -> detail crawl of its own local site, which it stops", function()
    local lines = { "collected 12 detail pages from 3 list pages, 0 failures" }
    for n = 1, 12 do lines[#lines + 1] = ("/detail/%d,Director %s"):format(n, string.char(64 + n)) end
    local out = expect_lines("crawl.lua", lines)
    local pid = tonumber(out:match("the site %(pid (%d+)%) is stopped"))
    assert.is_number(pid)
    assert.is_false(require("helpers").exists(pid))
  end)

  it("movies_spider.lua: forage crawl writes every movie once, through its proxies", function()
    local out_file = os.tmpname() .. ".jsonl"
    local out, ok = sh('eval "$(make -s env)"; forage crawl examples/movies_spider.lua -q -o ' .. out_file)
    assert.is_true(ok, out)
    local cjson, n, urls = require "cjson", 0, {}
    for line in io.lines(out_file) do
      local item = cjson.decode(line)
      assert.is_nil(urls[item.url])
      urls[item.url] = true
      assert.is_true(#item.directors >= 1 and #item.directors <= 3)
      n = n + 1
    end
    assert.equal(50, n)
    os.remove(out_file)
    os.remove((out_file:gsub("%.jsonl$", ".stats.json")))
  end)

  it("demo.lua: the blog's examples, and its crawl collects every detail page", function()
    local out = expect_lines("demo.lua", { "hello\tbob", "starmap:\t[1, 4, 9]" })
    assert.matches("\ncollected 50 detail pages from 5 list pages in [%d.]+ s", out)
  end)
end)
