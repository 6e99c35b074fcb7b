-- The crawl benchmark's own pieces (bench/crawl/): the site and its known answer, the check
-- that turns a wrong crawl into a WRONG row, and the stopwatch that counts the CPU of a
-- crawler's whole process tree. The crawls themselves run in `make bench`.
package.path = "bench/crawl/?.lua;" .. package.path
local forage = require "forage"
local site = require "site"
local answers = require "answer"

local PYTHON = "/usr/bin/python3"
-- without the sanitizer that make check preloads: Python is not ours to check, and its leak
-- report would change what it prints and how it exits
local RUN_PYTHON = "env -u LD_PRELOAD " .. PYTHON

local function tmpdir()
  local f = assert(io.popen("mktemp -d /tmp/forage-crawl-spec.XXXXXX"))
  local dir = f:read("l")
  f:close()
  return dir
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function capture(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("a")
  f:close()
  return out
end

describe("the crawl bench's site", function()
  it("serves detail pages of about 16 KB whose directors block holds exactly the known answer", function()
    for _, id in ipairs { 1, 7, 4999 } do
      local body = site.detail_page(id)
      assert.is_true(#body > 14 * 1024 and #body < 18 * 1024, "size " .. #body)
      local doc = forage.html.parse(body)
      assert.same(site.directors(id), doc:css("div.directors p.name::text"))
      assert.same(site.directors(id), doc:xpath('//div[@class="directors el-row"]//p/text()'))
      -- the actors use p.name too: a query not scoped to the directors finds more than the answer
      assert.is_true(#doc:css("p.name::text") >= #site.directors(id) + 12)
      doc:close()
    end
  end)

  it("gives each movie one to three directors, unique to it", function()
    local counts = {}
    for id = 1, 300 do
      local d = site.directors(id)
      counts[#d] = (counts[#d] or 0) + 1
      for i, name in ipairs(d) do assert.truthy(name:find(id .. "-" .. i, 1, true)) end
    end
    assert.same({ 1, 2, 3 }, { counts[1] and 1, counts[2] and 2, counts[3] and 3 })
    assert.equal(300, counts[1] + counts[2] + counts[3])
  end)

  it("lists ten movies a list page, linked by a.name", function()
    local doc = forage.html.parse(site.list_page(3, 500))
    local want = {}
    for id = 21, 30 do want[#want + 1] = "/detail/" .. id end
    assert.same(want, doc:xpath('//a[@class="name"]/@href'))
    doc:close()
  end)

  it("writes the files nginx serves and an answer that matches them", function()
    local dir = tmpdir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local s = site.write(dir, 2)
    assert.equal(20, s.details)
    local answer = answers.read(dir .. "/answer.tsv", 20)
    for id = 1, 20 do
      local f = assert(io.open(dir .. "/www/detail/" .. id, "rb"))
      local doc = forage.html.parse(f:read("a"))
      f:close()
      assert.equal(answer[id], table.concat(doc:css("div.directors p.name::text"), "|"))
      doc:close()
    end
    assert.is_nil(answer[21])
    assert.truthy(io.open(dir .. "/www/page/2", "rb")):close()
  end)
end)

describe("the crawl bench's answer check", function()
  local dir, answer, lines
  before_each(function()
    dir = tmpdir()
    answer = {}
    lines = {}
    for id = 1, 5 do
      answer[id] = table.concat(site.directors(id), "|")
      local names = {}
      for i, n in ipairs(site.directors(id)) do names[i] = string.format("%q", n) end
      lines[id] = string.format('{"url": "http://127.0.0.1:1/detail/%d", "directors": [%s]}', id,
        table.concat(names, ", "))
    end
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function check(list)
    write(dir .. "/items.jsonl", table.concat(list, "\n") .. "\n")
    return answers.check(dir .. "/items.jsonl", answer, 5)
  end

  it("passes every movie once with its directors, in any order", function()
    assert.is_true(check { lines[5], lines[3], lines[1], lines[2], lines[4] })
  end)

  it("says what is wrong: missing, twice, wrong directors, not a movie, no file", function()
    local ok, why = check { lines[1], lines[2], lines[3], lines[4] }
    assert.is_false(ok)
    assert.truthy(why:find("1 missing (first 5)", 1, true), why)
    ok, why = check { lines[1], lines[2], lines[3], lines[4], lines[5], lines[5] }
    assert.is_false(ok)
    assert.truthy(why:find("1 twice", 1, true), why)
    ok, why = check { lines[1], lines[2], lines[3], lines[4], '{"url": "/detail/5", "directors": ["Nobody"]}' }
    assert.is_false(ok)
    assert.truthy(why:find("1 wrong directors", 1, true) and why:find("movie 5: got 'Nobody'", 1, true), why)
    ok, why = check { lines[1], lines[2], lines[3], lines[4], lines[5], '{"url": "/detail/6", "directors": []}',
      "not json" }
    assert.is_false(ok)
    assert.truthy(why:find("2 not movies", 1, true), why)
    ok, why = answers.check(dir .. "/none.jsonl", answer, 5)
    assert.is_false(ok)
    assert.truthy(why:find("no output file", 1, true), why)
  end)
end)

describe("the crawl bench's stopwatch (bench/crawl/measure.py)", function()
  local function measure(args, script)
    if not io.open(PYTHON, "rb") then pending("needs " .. PYTHON .. " (make bench-deps)") return {} end
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    write(path, script)
    local out = capture(string.format("%s bench/crawl/measure.py %s -- %s %s", RUN_PYTHON, args, PYTHON, path))
    local m = out:match("MEASURE (%b{})")
    assert.truthy(m, out)
    return answers.decode(m), out
  end

  it("counts the CPU of the descendants the crawler waited for", function()
    -- a grandchild burns CPU and reports its own; the child waits for it and exits 3
    local m, out = measure("", [[
import os, sys, time
pid = os.fork()
if pid == 0:
    n = 0
    while time.process_time() < 0.3:
        n += 1
    print("grandchild cpu %.3f" % time.process_time(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
sys.exit(3)
]])
    local grandchild = tonumber(out:match("grandchild cpu ([%d.]+)"))
    assert.truthy(grandchild, out)
    assert.is_true(m.cpu >= grandchild, string.format("measured %s < grandchild's own %s", m.cpu, grandchild))
    assert.equal(3, m.exit)
    assert.is_false(m.timed_out)
  end)

  it("kills a crawler that outlives its timeout, with its process group", function()
    local m = measure("--timeout 0", [[
import os, signal
signal.pause()
]])
    assert.is_true(m.timed_out)
    assert.equal(-9, m.exit)
  end)
end)

describe("the state bench's trials (bench/state_bench.lua, issue 9)", function()
  -- A small state through the same trials `make bench` runs on 1,000,000 requests: the
  -- figures are not checked (speed is for the bench), what they are measured on is.
  local function trial(...)
    local words = {}
    for i, a in ipairs { ... } do words[i] = "'" .. a .. "'" end
    local out = capture(string.format("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 bench/state_bench.lua %s", package.path,
      package.cpath, table.concat(words, " ")))
    local last
    for line in out:gmatch("[^\n]+") do last = line end
    local v = last and answers.decode(last)
    assert.truthy(v, out)
    return v
  end

  it("builds a state through its API that a fresh process resumes whole, and reads the same rows apart", function()
    local dir = tmpdir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local n = 25000
    local w = trial("write", dir .. "/state", tostring(n))
    assert.equal(n, w.requests)
    assert.equal(3, w.commits)   -- every 10,000 pushes, and the rest at the end
    assert.is_true(w.db_bytes > n * 62, "state.db of " .. tostring(w.db_bytes) .. " bytes for " .. n .. " URLs")
    -- the resume counts what it loaded (queued and seen) and pops the first request pushed,
    -- whole, or fails: a JSON line is the proof
    local r = trial("resume", dir .. "/state", tostring(n))
    assert.equal(n, r.requests)
    assert.is_true(r.load_seconds > 0 and r.open_seconds > 0)
    local p = trial("parts", dir .. "/state", tostring(n))
    for _, part in ipairs { "rows_ordered", "rows_unordered", "seen_rows", "rows_restored", "seen_restored" } do
      assert.is_number(p[part], part)
    end
    -- the resume is read only: a second one finds the same state
    assert.equal(n, trial("resume", dir .. "/state", tostring(n)).requests)
  end)

  it("fails a resume that finds fewer requests than were pushed", function()
    local dir = tmpdir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    trial("write", dir .. "/state", "100")
    local out = capture(string.format("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 bench/state_bench.lua resume '%s' 101",
      package.path, package.cpath, dir .. "/state"))
    assert.truthy(out:find("resumed 100 queued, 100 seen (want 101)", 1, true), out)
  end)
end)
