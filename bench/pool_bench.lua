-- The pool section of `make bench`: forage's fork pool against Python's multiprocessing.Pool
-- (bench/pool_peer.py), both with two workers unless said otherwise, on the same machine.
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/pool_bench.lua NAME` runs one forage measurement in this fresh
-- process and prints it as JSON, as pool_peer.py does for Python.

local function square(x) return x * x end

local IMAP_ITEMS = 100000
local MAP_ITEMS = 1000000
local START_WORKERS = 100
local PSS_WORKERS = 4
local PSS_SETTLE = 0.3 -- seconds the pool sits idle before its workers are measured

local function range(n)
  local list = {}
  for i = 1, n do list[i] = i end
  return list
end

-- A trivial map so every worker has run a task before the clock starts.
local function warm_up(pool, n)
  pool:map(square, range(n), 1)
end

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

function trials.imap_unordered(forage)
  local list = range(IMAP_ITEMS)
  local pool = forage.pool(2)
  warm_up(pool, 100)
  local count, total = 0, 0
  local t0 = forage.now()
  for _, r in pool:imap_unordered(square, list, 1) do
    count = count + 1
    total = total + r
  end
  local seconds = forage.now() - t0
  pool:close()
  pool:join()
  local n = IMAP_ITEMS
  local expect = n * (n + 1) * (2 * n + 1) // 6
  if count ~= n or total ~= expect then
    error(string.format("imap_unordered: got %d results summing to %d, expected %d / %d", count, total, n, expect))
  end
  return { seconds = seconds, items = n, rate = n / seconds }
end

function trials.map(forage)
  local list = range(MAP_ITEMS)
  local pool = forage.pool(2)
  warm_up(pool, 100)
  local t0 = forage.now()
  local results, n = pool:map(square, list) -- default chunking: about four chunks a worker
  local seconds = forage.now() - t0
  pool:close()
  pool:join()
  if n ~= MAP_ITEMS or #results ~= MAP_ITEMS or results[MAP_ITEMS] ~= MAP_ITEMS * MAP_ITEMS then
    error(string.format("map: got %s results (n = %s), expected %d", #results, tostring(n), MAP_ITEMS))
  end
  return { seconds = seconds, items = MAP_ITEMS, rate = MAP_ITEMS / seconds }
end

function trials.start_stop(forage)
  -- Without an init, forage.pool returns once the workers are forked, as Python's Pool() does.
  local t0 = forage.now()
  local pool = forage.pool(START_WORKERS)
  local t1 = forage.now()
  local pids = pool:pids()
  pool:close()
  pool:join()
  local t2 = forage.now()
  local live = 0
  for _, pid in ipairs(pids) do
    if pid > 0 then live = live + 1 end
  end
  if live ~= START_WORKERS then
    error(string.format("start_stop: %d of %d workers had a pid", live, START_WORKERS))
  end
  return { seconds = t2 - t0, start = t1 - t0, stop = t2 - t1, workers = START_WORKERS }
end

function trials.pss(forage, h)
  local pool = forage.pool(PSS_WORKERS)
  warm_up(pool, PSS_WORKERS * 4)
  h.sleep(PSS_SETTLE)
  local pids = pool:pids()
  local each, sum = {}, 0
  for i, pid in ipairs(pids) do
    each[i] = assert(h.pss_kb(pid))
    sum = sum + each[i]
  end
  pool:close()
  pool:join()
  return { pss_kb = sum / #each, pss_each = each, pids = pids }
end

-- ---------------------------------------------------------------------------------
-- The section

local function section(h)
  local me = h.dir .. "/pool_bench.lua"
  local peer = h.dir .. "/pool_peer.py"
  local rows = {}
  -- field: the figure in each trial's JSON; better: "high" (a rate) or "low" (a time, a size).
  -- notes: lines under the row; a function(res) -> line among them is called with the result.
  local function add(label, name, field, better, format, target, notes)
    local res = h.pairs({ h.lua, me, name }, { h.python, peer, name }, field, better)
    local row = h.row(label, res, { format = format, better = better, target = target })
    for i, note in ipairs(notes or {}) do
      if type(note) == "function" then note = note(res) end
      table.insert(row.notes, i, note)
    end
    rows[#rows + 1] = row
  end
  local function split(r)
    return r and r.start and string.format("%s + %s", h.ms(r.start), h.ms(r.stop)) or "-"
  end

  add(string.format("imap_unordered(square, 1..%d, chunk 1), tasks/s", IMAP_ITEMS),
    "imap_unordered", "rate", "high", h.rate, 10)
  add(string.format("map(square, 1..%d), default chunks, items/s", MAP_ITEMS),
    "map", "rate", "high", h.rate, 3)
  add(string.format("pool of %d: start + close + join", START_WORKERS),
    "start_stop", "seconds", "low", h.ms, 10, {
      "both return once the workers are forked; close + join waits for every worker to exit",
      function(res)
        return string.format("start + stop: forage %s, python %s", split(res.forage_best), split(res.peer_best))
      end,
    })
  add(string.format("Pss of an idle worker (mean of %d)", PSS_WORKERS),
    "pss", "pss_kb", "low", h.kb, 10, {
      string.format("/proc/PID/smaps_rollup, read by the parent after a warm-up map and %.1f s idle", PSS_SETTLE),
    })
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("pool_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/pool_bench.lua")
end

return section
