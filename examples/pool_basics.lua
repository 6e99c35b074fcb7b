-- The ways to give a pool work, as in the multiprocessing tutorial the blog copies:
-- map, imap, imap_unordered, starmap, apply_async with a callback, and get with a timeout.
-- Run: eval "$(make -s env)"; lua5.4 examples/pool_basics.lua
local forage = require "forage"

local function f(x, y) return x * (y or 666) end

local function show(list)
  local parts = {}
  for i = 1, #list do parts[i] = tostring(list[i]) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local range = {}
for i = 0, 9 do range[#range + 1] = i end

local pool <close> = forage.pool(4)

-- one task, and its result within a second
print("apply_async:", pool:apply_async(f, { 20 }):get(1))

-- a task slower than the timeout: get gives up, the task keeps running
local slow = pool:apply_async(forage.sleep, { 2 })
local value, err = slow:get(0.1)
if value == nil then print("get(0.1) on a 2 s task: " .. tostring(err)) end

-- eight tasks, eight results: the pids of the workers that ran them
local results, pids = {}, {}
for i = 1, 8 do results[i] = pool:apply_async(forage.getpid, {}) end
for i = 1, 8 do pids[results[i]:get()] = true end
local distinct = 0
for pid in pairs(pids) do
  assert(pid ~= forage.getpid(), "a task ran in the parent")
  distinct = distinct + 1
end
print(("apply_async x8: ran in %d of the 4 workers"):format(distinct))

print("map:", show(pool:map(f, range)))

local ordered = {}
for i, r in pool:imap(f, range) do ordered[i] = r end
print("imap:", show(ordered))

local unordered = {}
for _, r in pool:imap_unordered(f, range) do unordered[#unordered + 1] = r end
table.sort(unordered)
print("imap_unordered (sorted):", show(unordered))

print("starmap:", show(pool:starmap(f, { { 1, 1 }, { 2, 2 }, { 3, 3 } })))

-- the callback runs here, in the parent, while the parent waits in a pool call
local done = pool:map_async(f, range, nil, { on_done = function(list) print("map_async callback:", show(list)) end })
done:wait()

-- a task that fails: its error comes back with the worker's traceback
local ok, task_err = pcall(function() return pool:apply(function() error("seven is bad") end, {}) end)
print("apply of a failing task raises:", not ok and tostring(task_err):match("seven is bad") or "nothing")

pool:terminate()   -- the 2 s sleeper need not finish
