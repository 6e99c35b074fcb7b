-- The long chaos runs of issue 9 (`make check-all`; minutes, not for `make test`): real
-- `forage crawl` processes (bin/forage of this checkout) with a state directory, stopped
-- many times in a row at random points (kill -9 of the parent, kill -9 of a worker every
-- 200 ms, SIGINT, SIGTERM, two SIGINTs), each time resumed, through bad proxies among good
-- ones; at the end the output is checked against the site's known answer: every movie
-- once, its directors right, every line whole.
--
-- The random points come from one seed, printed in each test's name: FORAGE_CHAOS_SEED=N
-- busted --pattern=_long spec/long replays the same draws (which signal, which grace,
-- which worker, how far above what is committed a run stops; what is committed when the
-- draw is made depends on the machine's timing, so a replay comes near, not exactly, to
-- the same points). Each stop comes at a point the spec waits for (N items in the output,
-- a commit of this run), never after a sleep; after each stop, the committed part of the
-- output is checked (whole lines, exactly the committed items, none twice), and that no
-- commit was lost. "Mid-crawl" is made certain, not likely: while
-- the spec stops a crawl, its proxies include one that holds every request it gets (and
-- the requests' timeout is as long), so that the crawl cannot end before the spec stops
-- it once that proxy holds one; the last run, without it, goes to the end.
--
-- What it shares with spec/crawl_state_spec.lua is in spec/crawl_chaos.lua; kept apart so
-- that `make test` does not wait for these.
local forage = require "forage"
local testing = require "forage.testing"
local cjson = require "cjson"
local helpers = require "helpers"

local LIMIT = 180         -- seconds one wait may last before the spec fails: a hang, not a slow machine
local CRAWL_LIMIT = 1200  -- seconds the 20,000-page crawl may last

local SEED = math.tointeger(tonumber(os.getenv("FORAGE_CHAOS_SEED"))) or os.time()
io.stdout:write(("\nspec/long/crawl_state_long.lua: seed %d (FORAGE_CHAOS_SEED=%d replays its draws)\n"):format(
  SEED, SEED))

-- A generator of integers from lo to hi (splitmix64), of its own so that nothing else that
-- draws from math.random changes the spec's choices for a seed.
local function generator(seed)
  local x = seed
  return function(lo, hi)
    x = x + 0x9E3779B97F4A7C15
    local z = x
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return lo + (z >> 1) % (hi - lo + 1)
  end
end

local chaos = require "crawl_chaos"
local quote, tmpdir, SPIDER, count_lines = chaos.quote, chaos.tmpdir, chaos.SPIDER, chaos.count_lines
local processes_of, children_of = chaos.processes_of, chaos.children_of
local no_process_left = chaos.no_process_left
chaos.limit = LIMIT

-- Checks items ({ url, directors, where } each, in the file's order) against the site's
-- answer: each a movie of the site, once, its directors right; with `whole`, every movie.
local function assert_items(items, site, whole)
  local answer = site:answer()
  local seen = {}
  for _, item in ipairs(items) do
    local want = answer[item.url]
    assert.is_truthy(want, ("%s: %s is not a movie of the site"):format(item.where, tostring(item.url)))
    assert.is_nil(seen[item.url], ("%s: %s written twice (first at %s)"):format(item.where, item.url,
      tostring(seen[item.url])))
    seen[item.url] = item.where
    assert.equal(table.concat(want, "|"), table.concat(item.directors, "|"), item.url)
  end
  if not whole then return end
  local missing = {}
  for url in pairs(answer) do
    if not seen[url] then missing[#missing + 1] = url end
  end
  table.sort(missing)
  assert.equal(0, #missing, ("%d movies missing, the first %s"):format(#missing, tostring(missing[1])))
end

-- The items of JSON Lines text, every line whole JSON.
local function jsonl_items(text)
  assert.is_true(text == "" or text:sub(-1) == "\n", "the items file ends inside a line")
  local items, n = {}, 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local decoded, item = pcall(cjson.decode, line)
    assert.is_true(decoded, ("line %d is not JSON: %s"):format(n, line:sub(1, 80)))
    items[n] = { url = item.url, directors = item.directors, where = "line " .. n }
  end
  return items
end

-- The rows of an RFC 4180 text (CRLF after every row, the last one too), each a list of
-- fields; nil and a message where it is malformed.
local function csv_rows(text)
  local rows, i, n = {}, 1, #text
  while i <= n do
    local row = {}
    while true do
      if text:sub(i, i) == '"' then
        local parts, j = {}, i + 1
        while true do
          local q = text:find('"', j, true)
          if not q then return nil, ("row %d: a quoted field is never closed"):format(#rows + 1) end
          parts[#parts + 1] = text:sub(j, q - 1)
          if text:sub(q + 1, q + 1) ~= '"' then
            i = q + 1
            break
          end
          parts[#parts + 1] = '"'
          j = q + 2
        end
        row[#row + 1] = table.concat(parts)
      else
        local stop = text:find("[,\r\n]", i) or n + 1
        row[#row + 1] = text:sub(i, stop - 1)
        i = stop
      end
      if text:sub(i, i) == "," then
        i = i + 1
      elseif text:sub(i, i + 1) == "\r\n" then
        i = i + 2
        break
      else
        return nil, ("row %d does not end with CRLF (byte %d of %d)"):format(#rows + 1, i, n)
      end
    end
    rows[#rows + 1] = row
  end
  return rows
end

-- A CSV cell of a list: elements joined with "|", a "|" or "\" inside one escaped with "\"
-- (lua/forage/crawl/output.lua).
local function csv_list(cell)
  local list, current, i = {}, {}, 1
  while i <= #cell do
    local c = cell:sub(i, i)
    if c == "\\" then
      current[#current + 1] = cell:sub(i + 1, i + 1)
      i = i + 2
    else
      if c == "|" then
        list[#list + 1] = table.concat(current)
        current = {}
      else
        current[#current + 1] = c
      end
      i = i + 1
    end
  end
  list[#list + 1] = table.concat(current)
  return list
end

-- The items of CSV text: its header once, at the top (none in an empty text); every row
-- whole, of the header's two columns.
local CSV_HEADER = "directors,url"
local function csv_items(text)
  local rows, err = csv_rows(text)
  assert(rows, err)
  local items = {}
  if text == "" then return items end
  assert.equal(CSV_HEADER, table.concat(rows[1] or {}, ","), "the first row is not the header")
  for n = 2, #rows do
    local row = rows[n]
    assert.are_not.equal(CSV_HEADER, table.concat(row, ","), ("row %d: the header again"):format(n))
    assert.equal(2, #row, ("row %d: %d fields: %s"):format(n, #row, table.concat(row, ","):sub(1, 80)))
    items[#items + 1] = { url = row[2], directors = csv_list(row[1]), where = "row " .. n }
  end
  return items
end

-- Checks an items file (parsed by items_of: jsonl_items or csv_items) against the site's
-- answer: every movie once, its directors right.
local function assert_answer(path, site, items_of)
  local text = assert(helpers.read(path), "no items file " .. path)
  assert_items(items_of(text), site, true)
end

local status, committed_items = chaos.status, chaos.committed_items

-- Checks what the state in dir says is committed of the items file at path (parsed by
-- items_of) while no crawl runs: the file holds at least its committed length, and those
-- bytes are whole lines holding exactly the committed items, each a movie of the site,
-- once; with `whole` (a crawl that stopped on a signal commits all it wrote), the file
-- holds nothing else. Returns the number of committed items.
local function assert_committed(dir, path, items_of, site, what, whole)
  local text, err, code = status(dir)
  if code ~= 0 then
    assert.matches("no crawl state in", err, 1, true)   -- killed before it made its state
    return 0
  end
  local items = tonumber(text:match("pages %d+, items (%d+)"))
  assert.is_truthy(items, text)
  local length = tonumber(text:match("items: [^\n]- %((%d+) bytes committed%)") or 0)
  local bytes = helpers.read(path) or ""
  assert.is_true(#bytes >= length, ("%s: %s holds %d bytes, %d committed"):format(what, path, #bytes, length))
  if whole then
    assert.equal(length, #bytes, ("%s: %s holds %d bytes, %d committed"):format(what, path, #bytes, length))
  end
  local committed = items_of(bytes:sub(1, length))
  assert.equal(items, #committed, what .. ": the committed bytes do not hold the committed items")
  assert_items(committed, site, false)
  return items
end

-- A `forage crawl` running in the background, started by start().
local crawls = {}   -- those of the running test, reaped after it

-- Starts `forage ARGS` in dir with the site's URL and pages in its environment, as a
-- crawl_chaos host.
local function start(dir, site, args)
  local crawl = chaos.host(dir, args, { CHAOS_SITE = site.url, CHAOS_PAGES = #site:start_urls() })
  crawls[#crawls + 1] = crawl
  return crawl
end

local function write_proxies(path, urls)
  helpers.write(path, table.concat(urls, "\n") .. "\n")
end

-- The "resume with:" command a stopped crawl prints, without its leading "forage".
local function resume_args(err)
  local args = err:match("resume with: forage (crawl [^\n]*)\n")
  assert.is_truthy(args, "no 'resume with:' line in:\n" .. err)
  return args
end

-- Checks that the bad proxies of a set made of MIX did their harm: requests dropped, bans.
local function assert_harm_done(set)
  assert.is_true(set[6]:counters().dropped > 0, "the flaky proxy dropped nothing")
  assert.is_true(set[7]:counters().banned > 0, "the banning proxy banned nothing")
end

-- The proxies of the kill and signal runs: the brief's mix in DIR/proxies.txt, and in
-- DIR/guarded.txt the same with a holding proxy (every request it gets is held 600 s) that
-- keeps a crawl from ending while the spec has yet to stop it. Returns the set (the holding
-- proxy is its last) and the arguments of a guarded run (a timeout as long as the hold).
local MIX = { "good", "good", "good", "good", "good", "flaky:0.2", "ban_after:30:1", "dead" }
local function proxy_files(dir)
  local list = { table.unpack(MIX) }
  list[#list + 1] = "slow:600000"
  local set = testing.proxies(list)
  local urls = set:urls()
  write_proxies(dir .. "/guarded.txt", urls)
  urls[#urls] = nil
  write_proxies(dir .. "/proxies.txt", urls)
  return set, set[#set], " -s timeout=600 --proxies guarded.txt"
end

describe("forage crawl --state, stopped again and again (long chaos runs, seed " .. SEED .. ")", function()
  local dir, state
  before_each(function()
    dir = tmpdir()
    state = dir .. "/state"
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

  -- Where round `round` of `rounds` stops: a random number of items above what the state had
  -- committed when the round began (rows of this run, since a resumed run first cuts the
  -- file back to that), spread so that the later rounds still have room; the crawl has
  -- `total` items, and the targets stay `total // 10` short of it, so that a list page held
  -- by the holding proxy never makes one unreachable. Returns the target (with no room left:
  -- what is committed, so that the stop comes as soon as the run has resumed), and whether
  -- the round may wait for a commit of this run too: a commit comes twice a second, so that
  -- it lets the crawl run past the target by up to half a second's items, which the later
  -- rounds would miss when little room is left.
  local function next_target(random, round, rounds, committed, total)
    local top = total - total // 10
    local room = top - committed
    if room < 1 then return committed, false end
    local step = math.max(1, room // (rounds - round + 1))
    return committed + random(1, math.min(room, 2 * step)), room >= 3 * total // 10
  end

  -- kill -9 of the parent `rounds` times at random points, each followed by a resume, then
  -- a last run to the end; output is out.jsonl or out.csv (items_of: its parser). After
  -- each kill, the committed part of the file is checked, and that no commit was lost.
  local function kill_parent_rounds(output, salt, items_of)
    local random = generator(SEED + salt)
    local total, rounds = 1000, 20
    local site <close> = testing.site { pages = 100, per_page = 10, latency = 20 }
    local proxies <close>, holding, guard = proxy_files(dir)
    local out = dir .. "/" .. output
    local header = output:match("%.csv$") and 1 or 0
    local args = "crawl spider.lua -o " .. output .. " --state " .. quote(state)
    local log = {}
    local before = 0
    for round = 1, rounds do
      local target, may_commit = next_target(random, round, rounds, before, total)
      -- half the rounds also wait for a commit of this run (the kill then lands after it,
      -- with rows past it written or not); the others may kill before this run commits
      local after_commit = random(0, 1) == 1 and may_commit
      local crawl = start(dir, site, args .. guard)
      crawl:wait_for(("round %d: %d items%s"):format(round, target, after_commit and " and a commit" or ""), function()
        return holding:counters().inflight >= 1
          and (round == 1 or crawl:stderr():find("resuming from", 1, true))
          and count_lines(out) - header >= target
          and (not after_commit or committed_items(state) > before)
      end)
      crawl:signal("KILL")
      local code, err = crawl:wait()
      assert.equal(128 + 9, code, ("round %d: the kill came after the end: %s"):format(round, err))
      no_process_left(state)
      local committed = assert_committed(state, out, items_of, site, "round " .. round)
      assert.is_true(committed >= before, ("round %d: %d items committed, %d before"):format(round, committed, before))
      log[#log + 1] = ("%d:%d>%d%s/%d"):format(round, before, target, after_commit and "c" or "", committed)
      before = committed
    end
    io.stdout:write(("\n%s: round:committed>target[c: and a commit]/committed after the kill: %s\n"):format(output,
      table.concat(log, " ")))
    local crawl = start(dir, site, args .. " --proxies proxies.txt")
    local code, err = crawl:wait()
    assert.equal(0, code, err)
    assert.matches("forage: resuming from", err, 1, true)
    assert_answer(out, site, items_of)
    no_process_left(state)
    local text, serr, scode = status(state)
    assert.equal(0, scode, serr)
    assert.matches("crawl 'chaos': finished", text, 1, true)
    assert.matches(("pages %d, items %d, failed 0, queued 0, in flight 0"):format(total + total // 10, total), text,
      1, true)
    assert_harm_done(proxies)
  end

  it(("1. resumes after kill -9 of the parent at 20 random points in a row, through bad proxies: every item once "
    .. "(seed %d)"):format(SEED), function()
    kill_parent_rounds("out.jsonl", 1, jsonl_items)
  end)

  it(("2. loses and repeats nothing when a worker is killed every 200 ms through a 20,000-page crawl, through bad "
    .. "proxies (seed %d)"):format(SEED), function()
    local random = generator(SEED + 2)
    local site <close> = testing.site { pages = 2000, per_page = 10 }
    local proxies <close> = testing.proxies { "good", "good", "good", "good", "good", "good", "dead", "ban_after:20",
      "flaky:0.2" }
    write_proxies(dir .. "/proxies.txt", proxies:urls())
    local args = "crawl spider.lua --proxies proxies.txt -o out.jsonl --state " .. quote(state)
    -- the first kill as soon as a worker is there, then one every 200 ms until the crawl
    -- ends; each kill a worker not killed before (a dead one not reaped yet is still a child)
    local killed, kills, runs = {}, 0, 0
    local code, err
    repeat
      runs = runs + 1
      local crawl = start(dir, site, args)
      local deadline = forage.now() + CRAWL_LIMIT
      while helpers.exists(crawl.pid) and forage.now() < deadline do
        local workers = {}
        for _, pid in ipairs(children_of(crawl.pid)) do
          if not killed[pid] then workers[#workers + 1] = pid end
        end
        if #workers > 0 then
          local pid = workers[random(1, #workers)]
          if os.execute(("kill -KILL %d 2>/dev/null"):format(pid)) then
            killed[pid] = true
            kills = kills + 1
          end
          forage.sleep(0.2)
        else
          forage.sleep(0.002)
        end
      end
      code, err = crawl:wait()
      if code ~= 0 then
        -- it should finish: a stop is reported, and resumed
        io.stdout:write(("\nrun %d stopped (exit %s), resuming; stderr:\n%s\n"):format(runs, tostring(code), err))
      end
      no_process_left(state)
    until code == 0 or runs == 5
    assert.equal(0, code, err)
    assert_answer(dir .. "/out.jsonl", site, jsonl_items)
    local stats = cjson.decode(helpers.read(dir .. "/out.stats.json"))
    io.stdout:write(("\n20,000 pages: %d runs, %d workers killed, %d worker deaths, %.1f s (last run)\n"):format(runs,
      kills, stats.worker_deaths, stats.elapsed))
    assert.is_true(kills >= 10, ("only %d workers killed: the crawl ended too soon for the spec"):format(kills))
    assert.is_true(stats.worker_deaths >= 10, ("%d kills, %d worker deaths"):format(kills, stats.worker_deaths))
    assert.equal(0, stats.failed)
    assert.equal(20000, stats.items)
  end)

  it(("3. stops on 10 random signals (SIGINT, SIGTERM, two SIGINTs) at random points, each resumed, and ends with "
    .. "every item once (seed %d)"):format(SEED), function()
    local random = generator(SEED + 3)
    local total, rounds = 1000, 10
    local site <close> = testing.site { pages = 100, per_page = 10, latency = 20 }
    local proxies <close>, holding, guard = proxy_files(dir)
    local out = dir .. "/out.jsonl"
    local args = "crawl spider.lua -o out.jsonl --state " .. quote(state)
    local log = {}
    local before = 0
    for round = 1, rounds do
      local target = next_target(random, round, rounds, before, total)
      local how = ({ "INT", "TERM", "INT INT" })[random(1, 3)]
      -- one signal: the held request keeps the drain going until its grace (0.2 to 2 s),
      -- while the others in flight finish; two: a grace that only the second signal ends
      local grace = how == "INT INT" and 600 or random(2, 20) / 10
      local crawl = start(dir, site, args .. guard .. " --grace " .. grace)
      crawl:wait_for(("round %d: %d items"):format(round, target), function()
        return holding:counters().inflight >= 1
          and (round == 1 or crawl:stderr():find("resuming from", 1, true))
          and count_lines(out) >= target
      end)
      local what = ("round %d (%s)"):format(round, how)
      crawl:signal(how == "TERM" and "TERM" or "INT")
      if how == "INT INT" then
        crawl:wait_for(what .. ": the drain's line", function()
          return crawl:stderr():find("requests in flight", 1, true)
        end)
        crawl:signal("INT")
      end
      local code, err = crawl:wait()
      assert.equal(how == "TERM" and 143 or 130, code, what .. ": " .. err)
      assert.matches(how == "TERM" and "forage: SIGTERM: finishing the %d+ requests in flight"
        or "forage: Ctrl%-C: finishing the %d+ requests in flight", err)
      assert.matches("forage: the state is saved in " .. state .. "; resume with: forage crawl", err, 1, true)
      assert.matches("--state " .. state, resume_args(err), 1, true)
      assert.is_nil(err:find("died", 1, true), what .. ": a worker died: " .. err)
      no_process_left(state)
      local committed = assert_committed(state, out, jsonl_items, site, what, true)
      assert.is_true(committed >= target, ("%s: %d items committed, %d written before"):format(what, committed, target))
      log[#log + 1] = ("%d:%s@%d>%d/%gs/%d"):format(round, how:gsub(" ", "+"), before, target, grace, committed)
      before = committed
    end
    io.stdout:write(("\nsignals: round:signal@committed>target/grace/committed after the stop: %s\n"):format(
      table.concat(log, " ")))
    local crawl = start(dir, site, args .. " --proxies proxies.txt")
    local code, err = crawl:wait()
    assert.equal(0, code, err)
    assert.matches("forage: resuming from", err, 1, true)
    assert_answer(out, site, jsonl_items)
    no_process_left(state)
    local stats = cjson.decode(helpers.read(dir .. "/out.stats.json"))
    assert.equal(0, stats.worker_deaths)
    assert.equal(total, stats.items)
    assert_harm_done(proxies)
  end)

  it(("4. resumes a CSV output after kill -9 of the parent at 20 random points: its header once, every item once "
    .. "(seed %d)"):format(SEED), function()
    kill_parent_rounds("out.csv", 4, csv_items)
  end)
end)
