-- Producers and consumers on a forage.queue: the queue lives in shared memory, so the
-- processes forked after it was created all use the same one. task_done/join tell the
-- producer side when every item has been handled (Python's JoinableQueue).
-- Run: eval "$(make -s env)"; lua5.4 examples/producer_consumer.lua
local forage = require "forage"

local queue = forage.queue()           -- create shared objects before the processes
local results = forage.queue()
local PRODUCERS, CONSUMERS, ITEMS = 2, 3, 50

local consumers = {}
for c = 1, CONSUMERS do
  consumers[c] = forage.process(function()
    while true do
      local item = queue:get()          -- waits; nil once the queue is closed and drained
      if item == nil then break end
      results:put({ n = item.n, square = item.n * item.n, by = c })
      queue:task_done()
    end
  end):start()
end

local producers = {}
for p = 1, PRODUCERS do
  producers[p] = forage.process(function()
    for i = p, ITEMS, PRODUCERS do queue:put({ n = i }) end
  end):start()
end

for _, p in ipairs(producers) do p:join() end
assert(queue:join(30), "the consumers did not finish in 30 s")   -- every item had its task_done
queue:close()                           -- wakes the consumers: their next get returns nil
for _, c in ipairs(consumers) do c:join() end

local sum, by = 0, {}
for _ = 1, ITEMS do
  local r = assert(results:get(5))
  sum = sum + r.square
  by[r.by] = (by[r.by] or 0) + 1
end
print(string.format("%d items from %d producers, handled by %d consumers", ITEMS, PRODUCERS, CONSUMERS))
for c = 1, CONSUMERS do print(string.format("  consumer %d handled %d", c, by[c] or 0)) end
print("sum of squares:", sum)          --> 42925
