-- A counter several processes increment at once, in shared memory: Python's
-- Value('i', 0) with get_lock(), done with one atomic add instead. Also the blog's
-- "shared memory" example: a Value and an Array changed by a child process.
-- Run: eval "$(make -s env)"; lua5.4 examples/shared_counter.lua
local forage = require "forage"

local counter = forage.value("int64", 0)
local lost = forage.value("int64", 0)       -- read, then write: updates can be lost
local lock = forage.lock()
local locked = forage.value("int64", 0)      -- read, then write, under a lock: none lost
local PROCESSES, ADDS = 4, 10000

local procs = {}
for i = 1, PROCESSES do
  procs[i] = forage.process(function()
    for _ = 1, ADDS do
      counter:add(1)                        -- one atomic operation
      lost.value = lost.value + 1           -- a load and a store: another process may come between
      lock:with(function() locked.value = locked.value + 1 end)
    end
  end):start()
end
for _, p in ipairs(procs) do assert(p:join() == 0) end

print("atomic add:", counter.value)          --> 40000
print("under a lock:", locked.value)         --> 40000
print("load + store (may lose some):", lost.value)

local num = forage.value("d", 0.0)
local arr = forage.array("i", { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 })
forage.process(function()
  num.value = 3.1415927
  for i = 1, #arr do arr[i] = -arr[i] end
end):start():join()
print(num.value)                             --> 3.1415927
print(table.concat(arr:totable(), " "))      --> 0 -1 -2 -3 -4 -5 -6 -7 -8 -9
