-- The state section of `make bench` (issue 9, crash-safe crawls): what the crawl's state
-- (lua/forage/crawl/state.lua, SQLite in DIR/state.db) costs when a big crawl resumes and
-- while it is written. No peer: the resume target is absolute; the write side is compared
-- with the memory frontier alone.
--
--   resume  a state whose frontier holds 1,000,000 queued requests (62-byte URLs on 300
--           hosts, a callback, depth, priority and the url.fingerprint of each, as the
--           frontier section's), built through the state's own API (state.open, st:frontier,
--           fr:push, st:commit every 10,000 pushes) and closed; then, in a fresh process each
--           time (the page cache warm, no Lua state reused), state.open + st:frontier: what a
--           resumed crawl does before its first request. Target: under 5 s. Reported with
--           state.db's bytes per request and, to say what bounds it, the same load taken
--           apart in one more fresh process: (a) SQLite reading the rows alone (each with an
--           empty callback; with and without the ORDER BY seq the load uses), (b) the rows
--           pushed into the memory store, (c) the seen set read and loaded.
--   write   pushes per second into the state (fingerprint, encode, the journal's SQL, a
--           commit every 10,000), against the same pushes into frontier.memory alone.
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/state_bench.lua memory|write|resume|parts [DIR] [N]` runs one
-- measurement in this fresh process and prints it as JSON (N defaults to 1,000,000).

local REQUESTS = 1000000
local COMMIT_EVERY = 10000        -- pushes between the state's commits while it is built
local HOSTS = 300
local PER_HOST = 8
local RESUME_TARGET = 5           -- seconds, at most
local NAME, HASH = "state-bench", "state-bench-1"
local WRITE_TIMEOUT = 600         -- seconds the build may take (about 60 s on 2 cores)
local TRIAL_TIMEOUT = 120

-- Request i: a 62-byte URL on one of HOSTS hosts.
local function request_url(i)
  return string.format("http://h%03d.example.org/movies/detail/%07d?ref=list-%07d", i % HOSTS, 1000000 + i % 9000000,
    i // 10)
end
assert(#request_url(1) == 62 and #request_url(999999) == 62)

local function host_of(i) return string.format("h%03d.example.org", i % HOSTS) end

local function count_arg(v)
  local n = math.tointeger(tonumber(v or REQUESTS))
  if not n or n < 1 then error("bad request count " .. tostring(v), 0) end
  return n
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

-- Pushes n requests into fr, calling every(i) after each COMMIT_EVERY-th; returns the
-- seconds of the loop and of the every() calls within it.
local function push_all(forage, fr, n, every)
  local fingerprint = forage.url.fingerprint
  local now = forage.now
  local spent = 0
  local t0 = now()
  for i = 1, n do
    local url = request_url(i)
    local req = { url = url, host = host_of(i), callback = "detail", depth = 2, priority = -2,
                  fp = fingerprint(url) }
    if not fr:push(req) then error("a distinct URL was filtered: " .. url) end
    if every and i % COMMIT_EVERY == 0 then
      local t1 = now()
      every(i)
      spent = spent + (now() - t1)
    end
  end
  return now() - t0, spent
end

-- The same pushes into frontier.memory alone.
function trials.memory(forage)
  local n = count_arg(arg[2])
  local fr = require("forage.crawl.frontier").memory { per_host = PER_HOST }
  forage.url.fingerprint(request_url(0))
  local seconds = push_all(forage, fr, n)
  if fr:counts().queued ~= n then error("queued " .. fr:counts().queued) end
  fr:close()
  return { requests = n, seconds = seconds, push_us = seconds / n * 1e6, rate = n / seconds }
end

-- Builds the state in DIR (fresh) with n queued requests, a commit every COMMIT_EVERY.
function trials.write(forage)
  local dir, n = arg[2], count_arg(arg[3])
  local state = require "forage.crawl.state"
  local now = forage.now
  forage.url.fingerprint(request_url(0))
  local t0 = now()
  local st = assert(state.open(dir, { name = NAME, hash = HASH, fresh = true }))
  local fr = assert(st:frontier { per_host = PER_HOST })
  local open_seconds = now() - t0
  local commits = 0
  local seconds, commit_seconds = push_all(forage, fr, n, function()
    assert(st:commit { start_read = 0 })
    commits = commits + 1
  end)
  local t1 = now()
  if n % COMMIT_EVERY ~= 0 then
    assert(st:commit { start_read = 0 })
    commits = commits + 1
  end
  local wal_bytes = file_size(dir .. "/state.db-wal")
  st:close()
  local close_seconds = now() - t1
  if fr:counts().queued ~= n then error("queued " .. fr:counts().queued) end
  fr:close()
  local db_bytes = file_size(dir .. "/state.db") + file_size(dir .. "/state.db-wal")
  return {
    requests = n, seconds = seconds, push_us = seconds / n * 1e6, rate = n / seconds,
    commits = commits, commit_seconds = commit_seconds, close_seconds = close_seconds, open_seconds = open_seconds,
    wal_bytes_before_close = wal_bytes, db_bytes = db_bytes, db_bytes_per_request = db_bytes / n,
  }
end

-- What a resumed crawl does before its first request: state.open + st:frontier.
function trials.resume(forage)
  local dir, n = arg[2], count_arg(arg[3])
  local now = forage.now
  local t0 = now()
  local state = require "forage.crawl.state"
  local st = assert(state.open(dir, { name = NAME, hash = HASH }))
  local t1 = now()
  local fr = assert(st:frontier { per_host = PER_HOST })
  local t2 = now()
  local counts = fr:counts()
  if counts.queued ~= n or counts.seen ~= n or not st.resumed then
    error(string.format("resumed %d queued, %d seen (want %d)", counts.queued, counts.seen, n))
  end
  -- the first request out is the first one pushed, whole
  local first = fr:pop(1)[1]
  if first.url ~= request_url(1) or first.callback ~= "detail" or first.depth ~= 2 then
    error("first request out: " .. tostring(first.url))
  end
  st:close()
  fr:close()
  return { requests = n, seconds = t2 - t0, open_seconds = t1 - t0, load_seconds = t2 - t1,
           rate = n / (t2 - t0), store_bytes = counts.bytes }
end

-- The load taken apart, on the same file: each part read with forage.sqlite directly.
function trials.parts(forage)
  local dir, n = arg[2], count_arg(arg[3])
  local now = forage.now
  local sqlite = require "forage.sqlite"
  local frontier = require "forage.crawl.frontier"
  local db = assert(sqlite.open(dir .. "/state.db", { readonly = true }))
  local function timed(sql, fn)
    local st = assert(db:prepare(sql))
    local rows = 0
    local t0 = now()
    assert(st:each(function(...) rows = rows + 1 fn(...) end))
    local seconds = now() - t0
    st:close()
    if rows ~= n then error(string.format("%s: %d rows, want %d", sql, rows, n)) end
    return seconds
  end
  local nothing = function() end
  local requests_sql = "SELECT id, seq, host, priority, record FROM request"
  local r = {}
  -- (a) the rows alone: in the load's order (a sort: seq has no index), in the table's order
  r.rows_ordered = timed(requests_sql .. " ORDER BY seq", nothing)
  r.rows_unordered = timed(requests_sql, nothing)
  r.seen_rows = timed("SELECT fp FROM seen", nothing)
  -- (b) the rows pushed into the memory store, as st:frontier does
  local fr = frontier.memory { per_host = PER_HOST }
  r.rows_restored = timed(requests_sql .. " ORDER BY seq", function(id, _, host, priority, record)
    fr:_restore(id, host, priority, record)
  end)
  -- (c) the seen set loaded
  r.seen_restored = timed("SELECT fp FROM seen", function(fp) fr:_restore_seen(fp) end)
  local counts = fr:counts()
  if counts.queued ~= n or counts.seen ~= n then error("restored " .. counts.queued .. ", " .. counts.seen) end
  fr:close()
  db:close()
  r.requests = n
  return r
end

-- ---------------------------------------------------------------------------------
-- The section

local function run_trial(h, timeout, ...)
  local saved = h.trial_timeout
  h.trial_timeout = timeout
  local forage = require "forage"
  local t0 = forage.now()
  local v, err = h.trial { h.lua, h.dir .. "/state_bench.lua", ... }
  local wall = forage.now() - t0
  h.trial_timeout = saved
  if v then v.child_wall = wall end
  return v, err
end

local function failed_row(name, err, target)
  return { name = name, forage = "-", peer = "-", target = target, pass = false, err = err,
           notes = { "ERROR " .. tostring(err) } }
end

local function section(h)
  local n = REQUESTS
  local rows = {}
  local root = h.first_line { "realpath", h.dir .. "/.." }
  assert(h.sh("mkdir -p " .. h.quote(root .. "/build")))
  local tmp = h.first_line { "mktemp", "-d", root .. "/build/state-bench.XXXXXX" }
  if not tmp:match("/build/state%-bench%.") then error("mktemp failed: " .. tmp) end
  local dir = tmp .. "/state"
  local ok, err = pcall(function()
    local resume_name = string.format("resume a crawl of %s queued requests: state.open + st:frontier",
      h.thousands(n))
    local write_name = string.format("%s pushes into the state, commit every %s, pushes/s", h.thousands(n),
      h.thousands(COMMIT_EVERY))
    -- the write side: the memory frontier alone, the state, the memory frontier again
    local mem, mem_err = run_trial(h, TRIAL_TIMEOUT, "memory", tostring(n))
    local w, w_err = run_trial(h, WRITE_TIMEOUT, "write", dir, tostring(n))
    local mem2 = run_trial(h, TRIAL_TIMEOUT, "memory", tostring(n))
    if mem2 and (not mem or mem2.rate > mem.rate) then mem = mem2 end
    if not w then
      rows[#rows + 1] = failed_row(resume_name, w_err, 1)
      rows[#rows + 1] = failed_row(write_name, w_err, 0)
      return
    end
    -- the resume, best of h.rounds fresh processes, each followed by the load taken apart
    local best, parts, runs = nil, nil, {}
    local r_err
    for _ = 1, h.rounds do
      local r, e = run_trial(h, TRIAL_TIMEOUT, "resume", dir, tostring(n))
      if not r then r_err = e break end
      runs[#runs + 1] = string.format("%.2f s", r.seconds)
      if not best or r.seconds < best.seconds then best = r end
      local p = run_trial(h, TRIAL_TIMEOUT, "parts", dir, tostring(n))
      if p and (not parts or p.rows_ordered + p.seen_rows < parts.rows_ordered + parts.seen_rows) then parts = p end
    end
    if best then
      local row = { name = resume_name, forage = string.format("%.2f s", best.seconds), peer = "-",
        ratio = RESUME_TARGET / best.seconds, target = 1, pass = best.seconds <= RESUME_TARGET, notes = {} }
      local notes = row.notes
      notes[#notes + 1] = string.format("target: under %d s (ratio = %d s / the time); runs: %s (best kept), each a "
        .. "fresh process, the page cache warm", RESUME_TARGET, RESUME_TARGET, table.concat(runs, ", "))
      notes[#notes + 1] = string.format("open %.3f s + frontier load %.2f s: %s requests; the child process "
        .. "whole (interpreter, require, exit) %.2f s", best.open_seconds, best.load_seconds, h.rate(best.rate),
        best.child_wall)
      notes[#notes + 1] = string.format("state.db %.1f MB = %.0f B/request (62-byte URL, callback, depth, priority, "
        .. "16-byte fingerprint; its seen row included); the memory store holds %.0f B/request",
        w.db_bytes / 1048576, w.db_bytes_per_request, best.store_bytes / n)
      if parts then
        local p = parts
        notes[#notes + 1] = string.format("where the time goes (forage.sqlite, one more fresh process): (a) the "
          .. "request rows alone %.2f s (%.2f s without ORDER BY seq: the sort costs %.2f s, seq has no index), "
          .. "the seen rows alone %.2f s", p.rows_ordered, p.rows_unordered, p.rows_ordered - p.rows_unordered,
          p.seen_rows)
        notes[#notes + 1] = string.format("(b) request rows + push into the memory store %.2f s (the pushes %.2f s); "
          .. "(c) seen rows + the seen set's adds %.2f s (the adds %.2f s)", p.rows_restored,
          p.rows_restored - p.rows_ordered, p.seen_restored, p.seen_restored - p.seen_rows)
      end
      rows[#rows + 1] = row
    else
      rows[#rows + 1] = failed_row(resume_name, r_err, 1)
    end
    local row = { name = write_name, forage = h.rate(w.rate), peer = mem and h.rate(mem.rate) or "-",
      ratio = mem and w.rate / mem.rate, target = 0, pass = true, notes = {} }
    row.notes[#row.notes + 1] = string.format("the 'python' column is frontier.memory alone, same pushes (best of "
      .. "two, before and after); no target: the cost of the journal")
    row.notes[#row.notes + 1] = string.format("%.2f us/push with the state (%d commits: %.2f s of the %.2f s), "
      .. "%s us/push without: the state adds %.2f us/push; close %.2f s (WAL %.1f MB before it)", w.push_us,
      w.commits, w.commit_seconds, w.seconds, mem and string.format("%.2f", mem.push_us) or "-",
      mem and w.push_us - mem.push_us or 0, w.close_seconds, w.wal_bytes_before_close / 1048576)
    if not mem then
      row.err = mem_err
      row.notes[#row.notes + 1] = "ERROR " .. tostring(mem_err)
    end
    rows[#rows + 1] = row
  end)
  if os.getenv("STATE_KEEP") ~= "1" then h.sh("rm -rf " .. h.quote(tmp)) end
  if not ok then error(err, 0) end
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("state_bench%.lua$") then
  local here = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = here .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/state_bench.lua")
end

return section
