-- The chaos specs of issue 9: real `forage crawl` processes (bin/forage of this checkout)
-- with a state directory, stopped in every way a crawl stops (kill -9 of the parent, of a
-- worker, SIGINT, SIGTERM, a second SIGINT, no live proxy left) and resumed; after each,
-- the items file is checked against the site's known answer: every movie once, its
-- directors right. Each stop is put at a point the spec waits for (N lines in the items
-- file, a line on stderr, a request held by a proxy), never after a sleep; every wait is
-- bounded, so that a hang fails the spec instead of hanging the suite.
local forage = require "forage"
local testing = require "forage.testing"
local cjson = require "cjson"
local helpers = require "helpers"

local LIMIT = 60   -- seconds a wait may last before the spec fails: a hang, not a slow machine

local chaos = require "crawl_chaos"
local quote, tmpdir, SPIDER, count_lines = chaos.quote, chaos.tmpdir, chaos.SPIDER, chaos.count_lines
local processes_of, children_of = chaos.processes_of, chaos.children_of
local no_process_left = chaos.no_process_left
local has_open = chaos.has_open
chaos.limit = LIMIT

-- Checks the items file against the site's answer: every movie once, its directors right,
-- every line whole JSON.
local function assert_answer(path, site)
  local answer = site:answer()
  local text = assert(helpers.read(path), "no items file " .. path)
  assert.equal("\n", text:sub(-1), "the items file ends inside a line")
  local seen, n = {}, 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local decoded, item = pcall(cjson.decode, line)
    assert.is_true(decoded, ("line %d is not JSON: %s"):format(n, line:sub(1, 80)))
    local want = answer[item.url]
    assert.is_truthy(want, ("line %d: %s is not a movie of the site"):format(n, tostring(item.url)))
    assert.is_nil(seen[item.url], ("line %d: %s written twice (first on line %s)"):format(n, item.url,
      tostring(seen[item.url])))
    seen[item.url] = n
    assert.equal(table.concat(want, "|"), table.concat(item.directors, "|"), item.url)
  end
  local missing = {}
  for url in pairs(answer) do
    if not seen[url] then missing[#missing + 1] = url end
  end
  table.sort(missing)
  assert.equal(0, #missing, ("%d movies missing, the first %s"):format(#missing, tostring(missing[1])))
end

local status, committed_items = chaos.status, chaos.committed_items

local crawls = {}   -- those of the running test, reaped after it

-- Starts `forage ARGS` in dir with the site's URL and pages in its environment, as a
-- crawl_chaos host (in a process group of its own, as a shell starts a job).
local function start(dir, site, args)
  local crawl = chaos.host(dir, args, { CHAOS_SITE = site.url, CHAOS_PAGES = #site:start_urls() })
  crawls[#crawls + 1] = crawl
  return crawl
end

-- Stops the crawl with two SIGINTs, the second once it says it drains (during its grace);
-- returns its exit code and stderr.
local function interrupt_twice(crawl)
  crawl:signal("INT")
  crawl:wait_for("the drain's line", function() return crawl:stderr():find("requests in flight", 1, true) end)
  crawl:signal("INT")
  return crawl:wait()
end

-- Waits until the crawl has written at least n lines to path, in this run: a resumed run
-- cuts the file back first, so that lines an earlier run wrote past its last commit count
-- only once it says it resumes. With state, also until the state in that directory holds
-- more than `committed` items (a commit of this run).
local function wait_for_lines(crawl, path, n, resumed, state, committed)
  crawl:wait_for(("%d lines in %s%s"):format(n, path, state and " and a commit" or ""), function()
    return (not resumed or crawl:stderr():find("resuming from", 1, true)) and count_lines(path) >= n
      and (not state or committed_items(state) > committed)
  end)
end

local function write_proxies(path, urls)
  helpers.write(path, table.concat(urls, "\n") .. "\n")
end

-- Three good proxies and one (set[4]) that holds every request it gets for 600 s, written
-- to path; a crawl through them with a timeout as long (HOLDING_ARGS) cannot end, nor
-- finish draining before its grace, while that proxy holds one of its requests.
local HOLDING_ARGS = " -s timeout=600 --grace 600 --proxies "
local function holding_proxies(path)
  local set = testing.proxies { "good", "good", "good", "slow:600000" }
  write_proxies(path, set:urls())
  return set
end

-- Good proxies only, written to path: the run that ends a spec whose earlier runs went
-- through holding_proxies (proxies change through --proxies: the spider's hash is its file's).
local function good_proxies(path)
  local set = testing.proxies { "good", "good", "good" }
  write_proxies(path, set:urls())
  return set
end

-- The "resume with:" command a stopped crawl prints, without its leading "forage".
local function resume_args(err)
  local args = err:match("resume with: forage (crawl [^\n]*)\n")
  assert.is_truthy(args, "no 'resume with:' line in:\n" .. err)
  return args
end

describe("forage crawl --state, stopped in every way", function()
  local dir, state, out
  before_each(function()
    dir = tmpdir()
    state = dir .. "/state"
    out = dir .. "/out.jsonl"
    helpers.write(dir .. "/spider.lua", SPIDER)
  end)
  after_each(function()
    for i, crawl in ipairs(crawls) do
      crawl:close()
      crawls[i] = nil
    end
    -- a failed spec may leave workers of a killed parent: they go, whatever happened
    for _, pid in ipairs(processes_of(dir)) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    os.execute("rm -rf " .. quote(dir))
  end)

  it("resumes after kill -9 of the parent five times in a row: every item once", function()
    -- 440 pages at 50 ms over 8 slots last about 3 s: the last kill, at 270 lines of 400,
    -- comes long before the end
    local site <close> = testing.site { pages = 40, per_page = 10, latency = 50 }
    -- every killed run goes through the holding proxy, so that it cannot end before its kill
    -- however slow the machine; the last run through good proxies only
    local holding <close> = holding_proxies(dir .. "/holding.txt")
    local good <close> = good_proxies(dir .. "/good.txt")
    local base = "crawl spider.lua -o out.jsonl --state " .. quote(state)
    local args = base .. HOLDING_ARGS .. "holding.txt"
    for round, lines in ipairs { 30, 90, 150, 210, 270 } do
      local before = round > 1 and committed_items(state)
      local crawl = start(dir, site, args)
      if round == 1 then
        wait_for_lines(crawl, out, lines)   -- before its first commit, or after: either way
      else
        -- after a commit of this run: what was committed before is resumed, and more added
        wait_for_lines(crawl, out, lines, true, state, before)
      end
      crawl:signal("KILL")
      local code, err = crawl:wait()
      assert.equal(128 + 9, code, ("round %d: the kill came after the end: %s"):format(round, err))
      no_process_left(state)
    end
    assert.is_true(holding[4]:counters().requests >= 1, "the killed runs held a request")
    local crawl = start(dir, site, base .. " --proxies good.txt")
    local code, err = crawl:wait()
    assert.equal(0, code, err)
    assert.matches("forage: resuming from", err, 1, true)
    assert_answer(out, site)
    assert.is_true(good[1]:counters().requests + good[2]:counters().requests + good[3]:counters().requests > 0)
    no_process_left(state)
  end)

  it("loses and repeats nothing when a random worker is killed every 200 ms, through bad proxies", function()
    local site <close> = testing.site { pages = 200, per_page = 10 }
    local proxies <close> = testing.proxies { "good", "good", "good", "good", "good", "good", "dead", "ban_after:20" }
    write_proxies(dir .. "/proxies.txt", proxies:urls())
    local crawl = start(dir, site, "crawl spider.lua --proxies proxies.txt -o out.jsonl --state " .. quote(state))
    -- the first kill as soon as a worker is there (the crawl cannot end without one), then
    -- one every 200 ms while at least 200 of its 2,000 items are still to come; what the spec
    -- asserts holds at any interval. Never near its end: what runs at its exit must not be
    -- killed (under make check, LeakSanitizer's tracer is a child of the process; killed, it
    -- leaves the process waiting for it for ever), and a check of the summary before each
    -- kill left a window (the summary printed between the check and the kill) that a loaded
    -- machine widens; 200 items are a second of crawling at least, and the crawl cannot end
    -- before writing them.
    local kills, deadline = 0, forage.now() + LIMIT
    while helpers.exists(crawl.pid) and forage.now() < deadline and count_lines(out) < 1800 do
      local workers = children_of(crawl.pid)
      if #workers > 0 then
        os.execute(("kill -KILL %d 2>/dev/null"):format(workers[math.random(#workers)]))
        kills = kills + 1
        forage.sleep(0.2)
      else
        forage.sleep(0.002)
      end
    end
    local code, err = crawl:wait()
    assert.equal(0, code, err)
    assert_answer(out, site)
    local stats = cjson.decode(helpers.read(dir .. "/out.stats.json"))
    assert.is_true(kills >= 1)
    assert.is_true(stats.worker_deaths >= 1, ("%d kills, %d worker deaths"):format(kills, stats.worker_deaths))
    assert.equal(0, stats.failed)
    no_process_left(state)
  end)

  it("stops on SIGINT, SIGTERM and a second SIGINT, each resumable, and ends with every item once", function()
    local site <close> = testing.site { pages = 40, per_page = 10, latency = 50 }
    -- a proxy that holds every request it gets: while one is there, a drain cannot end
    -- before its grace, so that a second SIGINT surely comes during the grace
    local proxies <close> = holding_proxies(dir .. "/holding.txt")
    local good <close> = good_proxies(dir .. "/good.txt")
    -- every stopped run goes through it: none can end before its signal, however slow the
    -- machine; a one-second grace ends the drain of a single signal (the held request stays
    -- in the state), the run stopped by two signals has 600 s
    local base = "crawl spider.lua -o out.jsonl --state " .. quote(state)
    local short = " -s timeout=600 --grace 1 --proxies holding.txt"
    local args = base .. short
    local function stopped(code, err, want, what)
      assert.equal(want, code, what .. ": " .. err)
      assert.matches("forage: the state is saved in " .. state .. "; resume with: forage crawl", err, 1, true)
      assert.matches("--state " .. state, resume_args(err), 1, true)
      assert.is_nil(err:find("died", 1, true), what .. ": a worker died: " .. err)
      no_process_left(state)
    end

    -- SIGINT to the parent alone
    local crawl = start(dir, site, args)
    wait_for_lines(crawl, out, 40)
    crawl:signal("INT")
    local code, err = crawl:wait()
    stopped(code, err, 130, "SIGINT")
    assert.matches("forage: Ctrl%-C: finishing the %d+ requests in flight", err)
    assert.equal("crawl spider.lua -o out.jsonl --state " .. state .. short, resume_args(err))

    -- SIGTERM
    crawl = start(dir, site, args)
    wait_for_lines(crawl, out, 100, true)
    crawl:signal("TERM")
    code, err = crawl:wait()
    stopped(code, err, 143, "SIGTERM")
    assert.matches("forage: SIGTERM: finishing the %d+ requests in flight", err)

    -- SIGINT, and a second one during the grace (600 s: only the second signal ends this
    -- run before LIMIT), while the holding proxy has a request
    crawl = start(dir, site, base .. HOLDING_ARGS .. "holding.txt")
    wait_for_lines(crawl, out, 160, true)
    crawl:wait_for("a request held by the holding proxy", function() return proxies[4]:counters().inflight >= 1 end)
    code, err = interrupt_twice(crawl)
    stopped(code, err, 130, "a second SIGINT")

    -- Ctrl-C in a terminal: SIGINT to the whole process group; the workers go on until the
    -- parent has drained them (a worker dead of the signal would be logged, and charged)
    crawl = start(dir, site, args)
    wait_for_lines(crawl, out, 220, true)
    local stat = helpers.read("/proc/" .. crawl.pid .. "/stat")
    assert.equal(crawl.pid, tonumber(stat:match("^%d+ %b() %a %d+ (%d+)")), "not a process group of its own")
    local workers = children_of(crawl.pid)
    assert.is_true(#workers >= 1)
    crawl:signal("INT", true)
    code, err = crawl:wait()
    stopped(code, err, 130, "SIGINT to the process group")
    assert.matches("forage: Ctrl%-C: finishing the %d+ requests in flight", err)

    -- the command it printed resumes it (to the end once through good proxies)
    local resume = resume_args(err)
    assert.equal("crawl spider.lua -o out.jsonl --state " .. state .. short, resume)
    crawl = start(dir, site, (resume:gsub("holding%.txt$", "good.txt")))
    code, err = crawl:wait()
    assert.equal(0, code, err)
    assert.matches("forage: resuming from", err, 1, true)
    assert_answer(out, site)
    assert.is_true(good[1]:counters().requests + good[2]:counters().requests + good[3]:counters().requests > 0)
    assert.equal(0, cjson.decode(helpers.read(dir .. "/out.stats.json")).worker_deaths)
  end)

  it("exits 130 on a Ctrl-C that comes while it opens its state, and resumes", function()
    local site <close> = testing.site { pages = 20, per_page = 10, latency = 50 }
    local holding <close> = holding_proxies(dir .. "/holding.txt")
    local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
    local crawl = start(dir, site, args .. HOLDING_ARGS .. "holding.txt")   -- it cannot end before the kill
    crawl:wait_for("a request held by the holding proxy", function() return holding[4]:counters().inflight >= 1 end)
    wait_for_lines(crawl, out, 30)
    crawl:signal("KILL")
    assert.equal(128 + 9, crawl:wait())
    no_process_left(state)
    -- another program holds state.db (an exclusive SQLite lock): the next run waits in its
    -- open, before the crawl catches signals, until the lock is released after the SIGINT
    local db_path = state .. "/state.db"
    local db = assert(require("forage.sqlite").open(db_path))
    assert(db:exec("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE"))
    crawl = start(dir, site, args)
    local ok, err = pcall(crawl.wait_for, crawl, "the crawl to open its state", function()
      return has_open(crawl.pid, db_path)
    end)
    if ok then crawl:signal("INT") end
    db:exec("COMMIT")
    db:close()
    assert(ok, err)
    local code
    code, err = crawl:wait()
    assert.equal(130, code, err)
    assert.matches("forage: interrupted", err, 1, true)
    assert.is_nil(err:find("traceback", 1, true), err)
    no_process_left(state)
    code, err = start(dir, site, args):wait()
    assert.equal(0, code, err)
    assert_answer(out, site)
  end)

  it("keeps the state when no proxy is left (exit 3) and resumes with live ones", function()
    local site <close> = testing.site { pages = 3, per_page = 10 }
    local dead <close> = testing.proxies { "dead", "dead" }
    local good <close> = testing.proxies { "good", "good" }
    write_proxies(dir .. "/dead.txt", dead:urls())
    write_proxies(dir .. "/good.txt", good:urls())
    local crawl = start(dir, site, "crawl spider.lua --proxies dead.txt -s proxy.cooldown=0.01 "
      .. "-s proxy.retire_after=1 -o out.jsonl --state " .. quote(state))
    local code, err = crawl:wait()
    assert.equal(3, code, err)
    assert.matches("no live proxy left", err, 1, true)
    for _, url in ipairs(dead:urls()) do assert.matches(url .. ": retired", err, 1, true) end
    assert.equal(0, site:counters().requests)

    local text, serr, scode = status(state)
    assert.equal(0, scode, serr)
    assert.matches("crawl 'chaos': stopped", text, 1, true)
    assert.matches("pages 0, items 0, failed 0, queued 3, in flight 0", text, 1, true)

    crawl = start(dir, site, "crawl spider.lua --proxies good.txt -o out.jsonl --state " .. quote(state))
    code, err = crawl:wait()
    assert.equal(0, code, err)
    assert_answer(out, site)
  end)

  it("says a finished crawl is finished, touching nothing, and starts over with --fresh", function()
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
    local code, err = start(dir, site, args):wait()
    assert.equal(0, code, err)
    assert_answer(out, site)
    local bytes, requests = helpers.read(out), site:counters().requests

    code, err = start(dir, site, args):wait()
    assert.equal(0, code, err)
    assert.matches("forage: this crawl finished before (55 pages, 50 items; state " .. state .. "): --fresh starts "
      .. "it over", err, 1, true)
    assert.equal(bytes, helpers.read(out))
    assert.equal(requests, site:counters().requests)

    code, err = start(dir, site, args .. " --fresh"):wait()
    assert.equal(0, code, err)
    assert_answer(out, site)
    assert.equal(requests + 55, site:counters().requests)   -- 5 list pages and 50 movies, again
  end)

  describe("refuses a state it cannot use, with exit 2, and changes nothing", function()
    it("a state of another spider file, naming both hashes", function()
      local site <close> = testing.site { pages = 2, per_page = 10 }
      local code, err = start(dir, site, "crawl spider.lua -o out.jsonl --state " .. quote(state)):wait()
      assert.equal(0, code, err)
      helpers.write(dir .. "/other.lua", (SPIDER:gsub('name = "chaos"', 'name = "other"')))
      local db = helpers.read(state .. "/state.db")
      code, err = start(dir, site, "crawl other.lua -o out.jsonl --state " .. quote(state)):wait()
      assert.equal(2, code, err)
      -- the hashes as the crawl computes them, of each file loaded with a stand-in environment
      local spider_mod = require "forage.crawl.spider"
      local env = setmetatable({ os = { getenv = function() return "1" end } }, { __index = _G })
      for _, file in ipairs { "spider.lua", "other.lua" } do
        local hash = spider_mod.hash(assert(loadfile(dir .. "/" .. file, "t", env))())
        assert.matches(hash, err, 1, true)
      end
      assert.matches("'chaos'", err, 1, true)
      assert.matches("'other'", err, 1, true)
      assert.matches("--fresh", err, 1, true)
      assert.equal(db, helpers.read(state .. "/state.db"))
    end)

    it("a corrupted or truncated state.db, with SQLite's message, the file left as it was", function()
      local site <close> = testing.site { pages = 2, per_page = 10 }
      local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
      local db = state .. "/state.db"
      local code, err = start(dir, site, args):wait()
      assert.equal(0, code, err)
      local whole = helpers.read(db)
      assert.is_true(#whole > 8192, "a state of more than two pages")
      local garbage = {}
      for i = 1, 8192 do garbage[i] = string.char((i * 7919) % 251) end
      local requests = site:counters().requests
      for _, case in ipairs {
        { "garbage", table.concat(garbage), "file is not a database" },
        -- cut inside its second page: the first (SQLite's header, the schema) reads well
        { "truncated", whole:sub(1, 6000), "database disk image is malformed" },
      } do
        local what, bytes, message = case[1], case[2], case[3]
        helpers.write(db, bytes)
        code, err = start(dir, site, args):wait()
        assert.equal(2, code, what .. ": " .. err)
        assert.matches("state " .. db .. ": " .. message, err, 1, true)
        assert.is_nil(err:find("traceback", 1, true))
        assert.equal(bytes, helpers.read(db), what)
      end
      assert.equal(requests, site:counters().requests)
    end)

    it("a state whose crawl runs, naming its pid; the running crawl goes on unharmed", function()
      local site <close> = testing.site { pages = 20, per_page = 10 }
      local proxies <close> = holding_proxies(dir .. "/holding.txt")
      local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
      -- the first cannot end while the holding proxy has its request
      local first = start(dir, site, args .. HOLDING_ARGS .. "holding.txt")
      wait_for_lines(first, out, 20)
      first:wait_for("a request held by the holding proxy", function() return proxies[4]:counters().inflight >= 1 end)
      local code, err = start(dir, site, args):wait()
      assert.equal(2, code, err)
      assert.matches("in use by another crawl", err, 1, true)
      assert.matches("%f[%d]" .. first.pid .. "%f[%D]", err)
      wait_for_lines(first, out, 150)
      code, err = interrupt_twice(first)
      assert.equal(130, code, err)
      code, err = start(dir, site, args):wait()
      assert.equal(0, code, err)
      assert_answer(out, site)
    end)

    it("items to stdout with a state", function()
      local site <close> = testing.site { pages = 1, per_page = 10 }
      for _, output in ipairs { " -o -", "" } do
        local crawl = start(dir, site, "crawl spider.lua --state " .. quote(state) .. output)
        local code, err = crawl:wait()
        assert.equal(2, code, err)
        assert.matches("a crawl with a state needs an output file (-o FILE)", err, 1, true)
        assert.equal("", helpers.read(crawl.out))
      end
      assert.equal(0, site:counters().requests)
    end)

    it("another output file than the state's, naming the state's", function()
      local site <close> = testing.site { pages = 20, per_page = 10, latency = 50 }
      local holding <close> = holding_proxies(dir .. "/holding.txt")
      local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
      local crawl = start(dir, site, args .. HOLDING_ARGS .. "holding.txt")   -- it cannot end before the kill
      crawl:wait_for("a request held by the holding proxy", function()
        return holding[4]:counters().inflight >= 1
      end)
      wait_for_lines(crawl, out, 30, false, state, 0)   -- the state names out.jsonl
      crawl:signal("KILL")
      assert.equal(128 + 9, crawl:wait())
      no_process_left(state)
      local bytes = helpers.read(out)
      local code, err = start(dir, site, "crawl spider.lua -o other.jsonl --state " .. quote(state)):wait()
      assert.equal(2, code, err)
      assert.matches("this crawl's items go to out.jsonl", err, 1, true)
      assert.is_nil(helpers.read(dir .. "/other.jsonl"))
      assert.equal(bytes, helpers.read(out))
      code, err = start(dir, site, args):wait()
      assert.equal(0, code, err)
      assert_answer(out, site)
    end)
  end)

  describe("forage status", function()
    it("shows a running crawl with its pid and what it has committed, then that it finished", function()
      local site <close> = testing.site { pages = 20, per_page = 10 }
      local proxies <close> = holding_proxies(dir .. "/holding.txt")
      local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
      -- it cannot end while the holding proxy has its request
      local crawl = start(dir, site, args .. HOLDING_ARGS .. "holding.txt")
      wait_for_lines(crawl, out, 50)
      crawl:wait_for("a request held by the holding proxy", function() return proxies[4]:counters().inflight >= 1 end)
      local text, err, code
      crawl:wait_for("a commit with items", function()
        text, err, code = status(state)
        assert.equal(0, code, err)
        return tonumber(text:match("items (%d+)") or 0) > 0
      end)
      assert.matches(("crawl 'chaos': running (pid %d)"):format(crawl.pid), text, 1, true)
      local pages, items = text:match("pages (%d+), items (%d+), failed 0, queued %d+, in flight %d+")
      pages, items = tonumber(pages), tonumber(items)
      assert.is_truthy(pages, text)
      assert.is_true(pages >= items, text)
      -- the committed length of the items file holds exactly the committed items, whole lines
      local length = tonumber(text:match("items: out%.jsonl %((%d+) bytes committed%)"))
      assert.is_truthy(length, text)
      local committed = helpers.read(out):sub(1, length)
      assert.equal(length, #committed)
      assert.equal("\n", committed:sub(-1))
      assert.equal(items, select(2, committed:gsub("\n", "")))

      code, err = interrupt_twice(crawl)
      assert.equal(130, code, err)
      text, err, code = status(state)
      assert.equal(0, code, err)
      assert.matches("crawl 'chaos': stopped", text, 1, true)
      code, err = start(dir, site, args):wait()
      assert.equal(0, code, err)
      text, err, code = status(state)
      assert.equal(0, code, err)
      assert.matches("crawl 'chaos': finished", text, 1, true)
      assert.matches("pages 220, items 200, failed 0, queued 0, in flight 0", text, 1, true)
      assert.matches(("items: out.jsonl (%d bytes committed)"):format(#helpers.read(out)), text, 1, true)
    end)

    it("exits 2 on a directory with no state, and does not make one", function()
      local _, err, code = status(dir .. "/nothing")
      assert.equal(2, code)
      assert.matches("no crawl state in " .. dir .. "/nothing", err, 1, true)
      assert.is_nil(io.open(dir .. "/nothing"))
    end)
  end)
end)

describe("forage.crawl with a state, from Lua", function()
  it("refuses to resume from another start, which would skip the wrong start requests", function()
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local dir = tmpdir()
    local out = dir .. "/out.jsonl"
    local spider = {
      name = "start", start = site:start_urls(), workers = 1, concurrency = 4, state = dir .. "/state",
      parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
      detail = function(page) return { url = page.url, directors = page:css("div.directors p.name::text") } end,
    }
    local stats = forage.crawl(spider, { output = out, quiet = true, max_pages = 5 })
    assert.equal("max_pages", stats.finished)
    local ok, err = pcall(forage.crawl, spider, { output = out, quiet = true, start = { site.url .. "/page/1" } })
    assert.is_false(ok)
    assert.equal(require("forage.crawl").BadInput, getmetatable(err))
    assert.matches("this crawl started from a list of 5 URLs; it cannot resume from a list of 1 URLs", err.message,
      1, true)
    -- the same start resumes, and the items are the answer, each once
    stats = forage.crawl(spider, { output = out, quiet = true })
    assert.equal("done", stats.finished)
    assert.is_true(stats.resumed)
    assert_answer(out, site)
    os.execute("rm -rf " .. quote(dir))
  end)
end)

describe("forage.crawl with a state: what the attack found", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. quote(dir)) end)

  local function lines_of(path)
    local list = {}
    for line in (helpers.read(path) or ""):gmatch("([^\n]*)\n") do list[#list + 1] = cjson.decode(line) end
    return list
  end

  it("keeps the failed file's committed records through resumes that fail nothing", function()
    local site <close> = testing.site { pages = 3, per_page = 10 }
    local bad = site.url .. "/detail/1"
    local spider = {
      name = "failing", start = site:start_urls(), workers = 1, concurrency = 1, retries = 0, state = dir .. "/state",
      parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
      detail = function(page)
        if page.url:match("/detail/1$") then error("no directors here") end
        return { url = page.url, directors = page:css("div.directors p.name::text") }
      end,
    }
    local out = dir .. "/out.jsonl"
    local failed = dir .. "/out.failed.jsonl"
    local stats = forage.crawl(spider, { output = out, quiet = true, max_pages = 12 })
    assert.equal(1, stats.failed)
    assert.equal(1, #lines_of(failed))
    -- a run that fails nothing, then one to the end: the record stays, once
    stats = forage.crawl(spider, { output = out, quiet = true, max_pages = 14 })
    assert.equal("max_pages", stats.finished)
    stats = forage.crawl(spider, { output = out, quiet = true })
    assert.equal("done", stats.finished)
    local records = lines_of(failed)
    assert.equal(1, #records)
    assert.equal(bad, records[1].url)
    assert.equal(1, stats.failed)
    local items = lines_of(out)
    assert.equal(29, #items)
    for _, item in ipairs(items) do assert.are_not.equal(bad, item.url) end
  end)

  it("writes the items past max_items instead of dropping them, so a resume with a larger limit misses none", function()
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local spider = {
      name = "limited", start = site:start_urls(), workers = 2, concurrency = 8, state = dir .. "/state",
      parse = function(page) page:follow(page:css("a.name::attr(href)"), "detail") end,
      detail = function(page) return { url = page.url, directors = page:css("div.directors p.name::text") } end,
    }
    local out = dir .. "/out.jsonl"
    local stats = forage.crawl(spider, { output = out, quiet = true, max_items = 12 })
    assert.equal("max_items", stats.finished)
    assert.equal(0, stats.items_dropped)
    assert.is_true(stats.items >= 12)
    stats = forage.crawl(spider, { output = out, quiet = true })
    assert.equal("done", stats.finished)
    assert_answer(out, site)
  end)

  it("refuses to resume from a start that yields other requests than the ones it skips", function()
    local site <close> = testing.site { pages = 2, per_page = 10 }
    local first = true
    local function start_fn()
      -- 12,000 entries: more than the crawl reads ahead, so that a resume skips some
      local i, n, offset = 0, 12000, first and 0 or 1
      return function()
        i = i + 1
        if i > n then return nil end
        return site.url .. "/page/" .. ((i + offset) % 2 + 1) .. "?n=" .. i
      end
    end
    local spider = {
      name = "generated", start = start_fn, workers = 1, concurrency = 2, state = dir .. "/state",
      parse = function() end,
    }
    local out = dir .. "/out.jsonl"
    local stats = forage.crawl(spider, { output = out, quiet = true, max_pages = 3 })
    assert.equal("max_pages", stats.finished)
    first = false
    local ok, err = pcall(forage.crawl, spider, { output = out, quiet = true })
    assert.is_false(ok)
    assert.matches("start requests are not the ones this crawl read before (a function changed)", err.message, 1,
      true)
    first = true
    stats = forage.crawl(spider, { output = out, quiet = true, max_pages = 5 })
    assert.equal("max_pages", stats.finished)
    assert.is_true(stats.resumed)
  end)
end)
