-- The cost of one lease-table call, from Lua (binding, lock and all), in one process:
--   lua5.4 bench/lease_ops.lua [N]
-- Not part of `make bench`: a per-operation figure for docs/leases.md, printed as
-- "<operation>  <ns per call>". Runs on a table built before pace and per_resource exist too
-- (the rows it cannot run say so), so that a before/after comparison uses one script.
local core = require "forage.core"
local forage = require "forage"

local N = tonumber(arg and arg[1]) or 1000000

local function per_call(name, n, f)
  local t0 = forage.now()
  f(n)
  local ns = (forage.now() - t0) / n * 1e9
  print(string.format("%-44s %8.0f ns", name, ns))
end

local function table_of(opts)
  local ok, t = pcall(core.leases, opts)
  return ok and t or nil
end

-- The pool's shape: 4 workers, 8 proxies, one each.
local pool_table = core.leases { count = 8, slots = 4, cooldown = 600 }
pool_table:acquire(1)
per_call("acquire (slot already holds one)", N, function(n)
  for _ = 1, n do pool_table:acquire(1) end
end)
per_call("report(slot, true)", N, function(n)
  for _ = 1, n do pool_table:report(1, true) end
end)
per_call("acquire + release, 8 resources", N // 2, function(n)
  for _ = 1, n do
    pool_table:acquire(2)
    pool_table:release(2)
  end
end)

-- The crawl's shape with one slot a proxy: 1000 proxies, 1000 slots (acquire scans them all).
local wide = core.leases { count = 1000, slots = 1000, cooldown = 600 }
for s = 1, 999 do wide:acquire(s) end
per_call("acquire + release, 1000 x 1", N // 20, function(n)
  for _ = 1, n do
    wide:acquire(1000)
    wide:release(1000)
  end
end)

-- The crawl's shape: 10 proxies x 100 slots each.
local crawl = table_of { count = 10, slots = 1000, per_resource = 100, cooldown = 600 }
if not crawl then
  print("per_resource: not in this build")
  return
end
for s = 1, 1000 do crawl:acquire(s) end
per_call("acquire, 1000 slots on 10 x 100 (held)", N, function(n)
  for k = 1, n do crawl:acquire(k % 1000 + 1) end
end)
per_call("report(slot, true), 1000 slots", N, function(n)
  for k = 1, n do crawl:report(k % 1000 + 1, true) end
end)
per_call("acquire + release, 10 x 100", N // 2, function(n)
  for _ = 1, n do
    crawl:release(7)
    crawl:acquire(7)
  end
end)
per_call("pace(index, 0)", N, function(n)
  for k = 1, n do crawl:pace(k % 10 + 1, 0) end
end)
per_call("pace(index, 1e6) (reserved: wait figure)", N, function(n)
  for k = 1, n do crawl:pace(k % 10 + 1, 1e6) end
end)
