-- `forage crawl` and `forage demo`: exit codes, messages and files, as a user runs them.
local testing = require "forage.testing"
local helpers = require "helpers"

local ROOT = assert(os.getenv("PWD"), "the specs run from the checkout")
local LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
local LUA_CPATH = ROOT .. "/?.so;;"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs bin/forage with args in dir; returns stdout, stderr, exit code.
local function forage_cli(args, dir)
  return helpers.forage_cli(args, nil, dir)
end

local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

local SPIDER = [[
return {
  name = "movies",
  start = { %s },
  workers = 2, concurrency = 4,
  parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
  detail = function(page)
    return { url = page.url, directors = page:css("div.directors p.name::text") }
  end,
}
]]

local function spider_file(dir, site, text)
  local urls = {}
  for i, u in ipairs(site:start_urls()) do urls[i] = ("%q"):format(u) end
  helpers.write(dir .. "/spider.lua", text or SPIDER:format(table.concat(urls, ", ")))
  return dir .. "/spider.lua"
end

describe("forage crawl", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("writes every item once to -o FILE, stats beside it, and exits 0", function()
    local site <close> = testing.site { pages = 2, per_page = 10 }
    spider_file(dir, site)
    local out, err, code = forage_cli("crawl spider.lua -o items.jsonl", dir)
    assert.equal(0, code, err)
    assert.equal("", out)
    assert.matches("movies: done: 22 pages, 20 items, 0 failed", err)
    local cjson, answer, n = require "cjson", site:answer(), 0
    for line in io.lines(dir .. "/items.jsonl") do
      local item = cjson.decode(line)
      assert.same(answer[item.url], item.directors)
      n = n + 1
    end
    assert.equal(20, n)
    assert.equal(22, cjson.decode(helpers.read(dir .. "/items.stats.json")).pages)
  end)

  it("takes -s key=value, --max-pages and --proxies, and writes items to stdout without -o", function()
    local site <close> = testing.site { pages = 2, per_page = 10 }
    local proxies <close> = testing.proxies { "good", "good" }
    spider_file(dir, site)
    helpers.write(dir .. "/proxies.txt", "# two local proxies\n" .. table.concat(proxies:urls(), "\n") .. "\n")
    local out, err, code = forage_cli("crawl spider.lua --proxies proxies.txt -s concurrency=2 -s proxy.slots=1 "
      .. "--max-pages 5 -q", dir)
    assert.equal(0, code, err)
    local lines = 0
    for _ in out:gmatch("[^\n]+") do lines = lines + 1 end
    assert.is_true(lines >= 1 and lines <= 3, "items of at most 5 pages, 2 of them list pages")
    assert.equal(5, proxies[1]:counters().requests + proxies[2]:counters().requests)
  end)

  it("exits 2 on a spider with a syntax error, naming the file and line", function()
    helpers.write(dir .. "/spider.lua",
      "return {\n  name = 'x',\n  start = { 'http://127.0.0.1:9/' }\n  parse = 1\n}\n")
    local out, err, code = forage_cli("crawl spider.lua", dir)
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches("^forage: spider%.lua:4: '}' expected", err)
  end)

  it("exits 2 on a file that does not return a table, an unknown setting, a missing start file", function()
    helpers.write(dir .. "/a.lua", "return 42\n")
    local _, err, code = forage_cli("crawl a.lua", dir)
    assert.equal(2, code)
    assert.matches("must return a table, got number", err)
    helpers.write(dir .. "/b.lua", "return { start = {}, parse = function() end, concurrancy = 4 }\n")
    _, err, code = forage_cli("crawl b.lua", dir)
    assert.equal(2, code)
    assert.matches("^forage: forage.crawl: unknown setting 'concurrancy'", err)
    helpers.write(dir .. "/c.lua", "return { start = 'urls.txt', parse = function() end }\n")
    _, err, code = forage_cli("crawl c.lua", dir)
    assert.equal(2, code)
    assert.matches("cannot read the start file: urls.txt", err)
    _, err, code = forage_cli("crawl b.lua -s concurrency", dir)
    assert.equal(2, code)
    assert.matches("expected KEY=VALUE", err)
  end)

  it("exits 2 on a malformed proxy, with the password masked", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    spider_file(dir, site)
    helpers.write(dir .. "/proxies.txt", "http://127.0.0.1:3128\nhttp://bob:secret@:\n")
    local _, err, code = forage_cli("crawl spider.lua --proxies proxies.txt", dir)
    assert.equal(2, code)
    assert.matches("proxies.txt:2", err)
    assert.is_nil(err:find("secret", 1, true))
    assert.equal(0, site:counters().requests)
  end)

  it("exits 3 when no proxy is left, naming each and its last error", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    local proxies <close> = testing.proxies { "dead" }
    spider_file(dir, site)
    helpers.write(dir .. "/proxies.txt", proxies:urls()[1] .. "\n")
    local _, err, code = forage_cli("crawl spider.lua --proxies proxies.txt -s proxy.cooldown=0.01 "
      .. "-s proxy.retire_after=1 -o items.jsonl", dir)
    assert.equal(3, code, err)
    assert.matches("no live proxy left", err)
    assert.matches(proxies:urls()[1]:gsub("%p", "%%%0") .. ": retired", err)
    assert.matches("page/1", helpers.read(dir .. "/items.failed.jsonl"))
  end)

  it("exits 2 when a callback follows to a callback the spider lacks", function()
    local site <close> = testing.site { pages = 1, per_page = 2 }
    helpers.write(dir .. "/spider.lua", ([[
return { start = { %q }, parse = function(page) page:follow(page:css("a.name::attr(href)"), "detial") end }
]]):format(site:start_urls()[1]))
    local _, err, code = forage_cli("crawl spider.lua -q", dir)
    assert.equal(2, code)
    assert.matches("no callback 'detial' %(from " .. site.url:gsub("%p", "%%%0") .. "/page/1%)", err)
  end)

  it("exits 2 on bad run options before any request", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    spider_file(dir, site)
    for _, case in ipairs {
      { "--log-level bogus", "setting 'log_level' must be one of debug, info, warn, error, got 'bogus'" },
      { "-o items.xml", "setting 'output' must be a .jsonl, .ndjson, .json or .csv file, or '-', got 'items.xml'" },
      { "-s cache=", "setting 'cache' must be a directory name, got ''" },
      { "-o /nonexistent/dir/items.jsonl", "forage.crawl: output: " },
    } do
      local _, err, code = forage_cli("crawl spider.lua " .. case[1], dir)
      assert.equal(2, code, case[1] .. ": " .. err)
      assert.matches(case[2], err, 1, true)
      assert.is_nil(err:find("traceback", 1, true))
    end
    assert.equal(0, site:counters().requests)
  end)

  it("reads -s values as the setting wants them", function()
    local site <close> = testing.site { pages = 1, per_page = 1 }
    helpers.write(dir .. "/spider.lua", [[
return { start = {}, parse = function() end }
]])
    local _, err, code = forage_cli("crawl spider.lua -q -s user_agent=1.0 -s name=2024 -s headers.X-Token=abc "
      .. "-s start=" .. site.url .. "/page/1 -o items.jsonl", dir)
    assert.equal(0, code, err)
    assert.equal(1, require("cjson").decode(helpers.read(dir .. "/items.stats.json")).pages)
  end)

  it("stops on Ctrl-C with exit 130, what is done written and the rest in the failed file", function()
    local site <close> = testing.site { pages = 20, per_page = 10, latency = 100 }
    spider_file(dir, site)
    -- started in its own process group, as a shell would; SIGINT goes to the whole group
    -- (the workers too) once the first item is written, and not before
    local script = ([[
cd %s
setsid env LUA_PATH=%s LUA_CPATH=%s lua5.4 %s/bin/forage crawl spider.lua -q -o items.jsonl 2>err.txt &
pid=$!
for i in $(seq 1 300); do [ -s items.jsonl ] && break; sleep 0.1; done
kill -INT -$pid
wait $pid
echo "exit=$?"
]]):format(quote(dir), quote(LUA_PATH), quote(LUA_CPATH), quote(ROOT))
    local p = assert(io.popen("bash -c " .. quote(script)))
    local out = p:read("a")
    p:close()
    assert.matches("exit=130", out)
    local err = helpers.read(dir .. "/err.txt")
    assert.equal("forage: interrupted\n", err)
    local items, failed = 0, 0
    for _ in io.lines(dir .. "/items.jsonl") do items = items + 1 end
    for line in io.lines(dir .. "/items.failed.jsonl") do
      failed = failed + 1
      assert.matches('"not done: interrupted"', line, 1, true)
    end
    assert.is_true(items >= 1)
    assert.is_true(failed >= 1)
  end)

  it("has help", function()
    local out, _, code = forage_cli("help crawl", dir)
    assert.equal(0, code)
    assert.matches("Exit codes: 0 done", out)
    assert.matches("%-%-max%-pages", out)
  end)
end)

describe("forage demo", function()
  it("crawls the bundled site through bad proxies and gets every page", function()
    -- 330 pages at 50 ms each over 13 good slots last over a second, whatever the load: time
    -- for the dead proxies' cooldown (0.2 s) and their failed probe, which retires them
    local out, err, code = forage_cli("demo", ROOT)
    assert.equal(0, code, err)
    assert.matches("Every page arrived, each director once%.", out)
    assert.matches("300 of 300 movies, 0 wrong or repeated; [1-9]%d* proxies cooled down at least once, "
      .. "[1-9]%d* retired; 0 requests failed for good", out)
  end)
end)
