-- Writes a few encoded messages (data mode) as fuzzing seeds: lua5.4 make_seeds.lua DIR
local core = require "forage.core"
local dir = assert(arg[1], "usage: make_seeds.lua DIR")

local shared = { "shared" }
local cyclic = { name = "cycle" }
cyclic.self = cyclic
local values = {
  scalars = { nil, true, false, 0, 127, 128, -32, -33, math.maxinteger, math.mininteger, 3.0, -0.0, 0 / 0,
              math.huge, "", "x", ("s"):rep(64), "a\0b" },
  task = { 1, 2, "x" },
  record = { id = 7, url = "https://example.com/p/1", tags = { "a", "b" }, score = 0.5, ok = true },
  sharing = { shared, shared, [shared] = cyclic, cyclic = cyclic },
  holes = { 1, nil, 3, [10] = 10, [-1] = -1, [1.5] = 1.5, [true] = false },
  nested = { { { { { "deep" } } } } },
  big = (function() local t = {} for i = 1, 200 do t[i] = i * 1000; t["k" .. i] = -i end return t end)(),
}
for name, v in pairs(values) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(core.encode(v))
  f:close()
end
