-- The queue section of `make bench`: forage.queue against Python's multiprocessing.Queue
-- (bench/queue_peer.py): one producer process, one consumer process, on the same machine.
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/queue_bench.lua NAME` runs one forage measurement in this fresh
-- process and prints it as JSON, as queue_peer.py does for Python.

local SMALL_ITEMS = 1000000   -- { i, i + 1, "x" }
local BIG_ITEMS = 100000      -- a 10 KB string
local BIG_BYTES = 10 * 1024

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

-- The parent puts n values made by make(i); a consumer process gets them, folds each with
-- fold(acc, v) and sends the result back. The clock runs from the first put to that result.
local function producer_consumer(forage, n, make, fold)
  local q = forage.queue()
  local result = forage.queue()
  local consumer = forage.process(function()
    local acc = 0
    for _ = 1, n do acc = fold(acc, q:get()) end
    result:put(acc)
  end):start()
  local t0 = forage.now()
  for i = 1, n do q:put(make(i)) end
  local acc = result:get(60)
  local seconds = forage.now() - t0
  assert(consumer:join(10) == 0, "the consumer failed")
  return seconds, acc
end

function trials.small(forage)
  local n = SMALL_ITEMS
  local seconds, sum = producer_consumer(forage, n,
    function(i) return { i, i + 1, "x" } end,
    function(acc, m) return acc + m[1] end)
  if sum ~= n * (n + 1) // 2 then error(string.format("small: the consumer's sum is %s", tostring(sum))) end
  return { seconds = seconds, items = n, rate = n / seconds }
end

function trials.big(forage)
  local n = BIG_ITEMS
  local s = string.rep("x", BIG_BYTES)
  local seconds, total = producer_consumer(forage, n,
    function() return s end,
    function(acc, v) return acc + #v end)
  if total ~= n * BIG_BYTES then error(string.format("big: the consumer got %s bytes", tostring(total))) end
  return { seconds = seconds, items = n, rate = n / seconds, mb_per_s = n * BIG_BYTES / seconds / 1e6 }
end

-- ---------------------------------------------------------------------------------
-- The section

local function section(h)
  local me = h.dir .. "/queue_bench.lua"
  local peer = h.dir .. "/queue_peer.py"
  local rows = {}
  local function add(label, name, target, notes)
    local res = h.pairs({ h.lua, me, name }, { h.python, peer, name }, "rate", "high")
    local row = h.row(label, res, { format = h.rate, better = "high", target = target })
    for i, note in ipairs(notes or {}) do
      if type(note) == "function" then note = note(res) end
      table.insert(row.notes, i, note)
    end
    rows[#rows + 1] = row
  end
  local clock = "one producer, one consumer process; the clock stops when the consumer has the last message"
  add(string.format('%s x {i, i + 1, "x"}, producer -> consumer, msgs/s', h.thousands(SMALL_ITEMS)),
    "small", 10, { clock })
  add(string.format("%s x %d KB string, producer -> consumer, msgs/s", h.thousands(BIG_ITEMS), BIG_BYTES // 1024),
    "big", 3, {
      function(res)
        local f, p = res.forage_best, res.peer_best
        return string.format("MB/s: forage %s, python %s",
          f and string.format("%.0f", f.mb_per_s) or "-", p and string.format("%.0f", p.mb_per_s) or "-")
      end,
    })
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("queue_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/queue_bench.lua")
end

return section
