-- The managers section of `make bench` (issue 11): forage.manager against Python's
-- multiprocessing managers (bench/manager_peer.py), one client round trip at a time.
--
-- As a module (run.lua): returns a function(h [, sizes]) -> rows, h being bench/harness.lua;
-- sizes ({ dict = N, queue = N }) replaces the sizes below (the spec's tiny runs).
-- As a script: `lua5.4 bench/manager_bench.lua NAME [N]` runs one forage measurement in this
-- fresh process and prints it as JSON, as manager_peer.py does for Python.

-- Sized for about 1-2 s a run on Python on the 2-core bench machine; both sides get them
-- from here (the peer's own defaults are only for running it by hand).
local DICT_ITERATIONS = 12000 -- d[i % 100] = i, then d[i % 100]: two round trips each
local QUEUE_MESSAGES = 15000  -- "msg-0" .. "msg-14999"
local AUTHKEY = "abracadabra"
local TARGET = 5              -- issue 11: at least 5x Python on each

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

-- N from the command line (`manager_bench.lua NAME N`), else the default.
local function size(default)
  return math.tointeger(tonumber(arg and arg[2])) or default
end

-- One client (this process) writes a key of an in-tree manager's dict and reads it back.
function trials.dict_roundtrip(forage)
  local n = size(DICT_ITERATIONS)
  local m <close> = forage.manager()
  local d = m:dict()
  local wrong = 0
  local t0 = forage.now()
  for i = 0, n - 1 do
    d[i % 100] = i
    if d[i % 100] ~= i then wrong = wrong + 1 end
  end
  local seconds = forage.now() - t0
  if wrong > 0 then
    error(string.format("dict_roundtrip: %d reads of %d did not return what was written", wrong, n))
  end
  return { seconds = seconds, n = n, round_trips = 2 * n, reads_checked = n, rate = 2 * n / seconds }
end

-- A remote manager's server process serves one queue; a producer process and a consumer
-- process connect to it over TCP and pass n messages through it.
function trials.queue_remote(forage)
  local n = size(QUEUE_MESSAGES)
  local queue -- made in the server process, at the first client's get_queue
  local server <close> = forage.manager { address = "127.0.0.1:0", authkey = AUTHKEY,
    types = { get_queue = function()
      queue = queue or forage.manager.Queue()
      return queue
    end } }
  server:start()
  local address = server.address
  local function connect()
    return forage.manager.connect { address = address, authkey = AUTHKEY, types = { "get_queue" } }
  end
  -- The clock starts when both clients have connected and hold their proxy.
  local ready = forage.barrier(3)
  local result = forage.queue()
  local producer = forage.process(function()
    local client <close> = connect()
    local q = client:get_queue()
    assert(ready:wait(30))
    for i = 0, n - 1 do q:put("msg-" .. i) end
  end):start()
  local consumer = forage.process(function()
    local client <close> = connect()
    local q = client:get_queue()
    assert(ready:wait(30))
    local in_order = 0
    for i = 0, n - 1 do
      if q:get() == "msg-" .. i then in_order = in_order + 1 end
    end
    result:put { n, in_order }
  end):start()
  assert(ready:wait(30), "the producer or the consumer did not connect")
  local t0 = forage.now()
  local got = assert(result:get(60))
  local seconds = forage.now() - t0
  local producer_exit, consumer_exit = producer:join(10), consumer:join(10)
  if producer_exit ~= 0 or consumer_exit ~= 0 then
    error(string.format("queue_remote: producer exit %s, consumer exit %s", producer_exit, consumer_exit))
  end
  local received, in_order = got[1], got[2]
  if received ~= n or in_order ~= n then
    error(string.format("queue_remote: %d messages received, %d of %d in order", received, in_order, n))
  end
  return { seconds = seconds, n = n, received = received, in_order = in_order, rate = n / seconds }
end

-- ---------------------------------------------------------------------------------
-- The section

local function section(h, sizes)
  sizes = sizes or {}
  local me = h.dir .. "/manager_bench.lua"
  local peer = h.dir .. "/manager_peer.py"
  local rows = {}
  local function add(label, name, n, notes)
    -- env -u LD_PRELOAD: under make check's sanitizer preload (the spec), Python is not ours to check
    local res = h.pairs({ h.lua, me, name, tostring(n) },
      { "env", "-u", "LD_PRELOAD", h.python, peer, name, tostring(n) }, "rate", "high")
    local row = h.row(label, res, { format = h.rate, better = "high", target = TARGET })
    for i, note in ipairs(notes) do table.insert(row.notes, i, note) end
    rows[#rows + 1] = row
  end
  local dict_n = sizes.dict or DICT_ITERATIONS
  add(string.format("dict: %s x (d[i %% 100] = i; d[i %% 100]), one client, round trips/s", h.thousands(dict_n)),
    "dict_roundtrip", dict_n, {
      "forage: forage.manager() (unix socket) | python: multiprocessing.Manager().dict()",
    })
  local queue_n = sizes.queue or QUEUE_MESSAGES
  add(string.format('remote queue: %s x "msg-N", producer -> server -> consumer, msgs/s', h.thousands(queue_n)),
    "queue_remote", queue_n, {
      "server process on 127.0.0.1 TCP with an authkey; producer and consumer processes connect to it",
      "the clock runs from both connected to the consumer's last message",
    })
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("manager_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/manager_bench.lua")
end

return section
