-- The shared-objects section of `make bench`: forage.value's lock-free add against Python's
-- multiprocessing.Value under its lock (bench/shared_peer.py), and forage.set, the crawl's
-- seen-set, on its own (Python has no shared set to compare with).
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/shared_bench.lua NAME` runs one forage measurement in this fresh
-- process and prints it as JSON, as shared_peer.py does for Python.

local ADD_PROCS = 4
local ADD_EACH = 1000000
local SET_PROCS = 2
local SET_URLS = 10000000

-- Runs fn(k) in n processes at once; raises unless every one exits 0 within timeout.
local function run_all(forage, n, timeout, fn)
  local procs = {}
  for k = 1, n do procs[k] = forage.process(fn, k):start() end
  for k, p in ipairs(procs) do
    local code = p:join(timeout)
    if code ~= 0 then
      for _, q in ipairs(procs) do
        if q:alive() then q:kill() end
      end
      error(string.format("process %d of %d: %s", k, n, code == nil and "timed out" or "exit " .. code))
    end
  end
end

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

function trials.value_add(forage)
  local v = forage.value("i", 0)
  local t0 = forage.now()
  run_all(forage, ADD_PROCS, 60, function()
    for _ = 1, ADD_EACH do v:add(1) end
  end)
  local seconds = forage.now() - t0
  local total = ADD_PROCS * ADD_EACH
  if v.value ~= total then error(string.format("value_add: got %d, expected %d", v.value, total)) end
  return { seconds = seconds, ops = total, rate = total / seconds }
end

function trials.set_add(forage)
  local seen = forage.set { capacity = SET_URLS }
  local per = SET_URLS // SET_PROCS
  local t0 = forage.now()
  run_all(forage, SET_PROCS, 60, function(k)
    for i = (k - 1) * per + 1, k * per do
      if not seen:add("https://example.com/item/" .. i) then error("not new: " .. i) end
    end
  end)
  local seconds = forage.now() - t0
  local entries = #seen
  if entries ~= SET_URLS then error(string.format("set_add: %d entries, expected %d", entries, SET_URLS)) end
  return { seconds = seconds, ops = SET_URLS, rate = SET_URLS / seconds, bytes = seen:bytes(),
           bytes_per_entry = seen:bytes() / entries }
end

-- ---------------------------------------------------------------------------------
-- The section

-- Best of h.rounds runs of a forage measurement with no Python peer; same shape as h.pairs.
local function forage_only(h, argv, field, better)
  local res = { forage_runs = {}, peer_runs = {} }
  for _ = 1, h.rounds do
    local v, err = h.trial(argv)
    if not v then
      res.err = "forage: " .. err
      break
    end
    local x = tonumber(v[field])
    table.insert(res.forage_runs, x)
    if res.forage == nil or (better == "high" and x > res.forage) or (better == "low" and x < res.forage) then
      res.forage, res.forage_best = x, v
    end
  end
  return res
end

-- A row without a Python figure: no ratio and no target, met when it ran.
local function forage_row(name, res, field, format, notes)
  local best = res.forage_best and res.forage_best[field]
  local row = { name = name, forage = best and format(best) or "-", peer = "-", target = 0,
                pass = best ~= nil and not res.err, err = res.err, notes = notes or {} }
  if res.err then row.notes[#row.notes + 1] = "ERROR " .. res.err end
  return row
end

local function section(h)
  local me = h.dir .. "/shared_bench.lua"
  local peer = h.dir .. "/shared_peer.py"
  local rows = {}

  local add = h.pairs({ h.lua, me, "value_add" }, { h.python, peer, "value_add" }, "rate", "high")
  local row = h.row(string.format("%d processes x %s add(1) on one shared int32, adds/s",
    ADD_PROCS, h.thousands(ADD_EACH)), add, { format = h.rate, better = "high", target = 20 })
  table.insert(row.notes, 1, "forage: v:add(1), one atomic fetch-add | python: with v.get_lock(): v.value += 1")
  rows[#rows + 1] = row

  local set = forage_only(h, { h.lua, me, "set_add" }, "rate", "high")
  local runs = {}
  for i, x in ipairs(set.forage_runs) do runs[i] = h.rate(x) end
  rows[#rows + 1] = forage_row(string.format("set:add of %s distinct URLs from %d processes, adds/s",
    h.thousands(SET_URLS), SET_PROCS), set, "rate", h.rate, {
      "no Python peer: multiprocessing has no shared set",
      "runs: forage " .. (#runs > 0 and table.concat(runs, ", ") or "-"),
    })
  rows[#rows + 1] = forage_row(string.format("set: shared memory per entry (capacity %s, full)",
    h.thousands(SET_URLS)), set, "bytes_per_entry", function(x) return string.format("%.1f B", x) end, {
      "128-bit fingerprints in a table of twice the capacity, plus 4 kB of counters",
    })
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("shared_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/shared_bench.lua")
end

return section
