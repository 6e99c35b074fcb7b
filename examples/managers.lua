-- The blog's manager examples, one after the other: a dict and a list changed by a child,
-- the Maths class served by a manager, a remote queue that one client fills and another
-- empties, a server that is also a client, and nested managed lists.
-- Run: eval "$(make -s env)"; lua5.4 examples/managers.lua
local forage = require "forage"

-- 1. Manager(): d[1] = '1', d['2'] = 2, d[0.25] = None, l.reverse() in a child.
do
  local m <close> = forage.manager()
  local d = m:dict()
  local l = m:list { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }
  local p = forage.process(function()
    d[1] = "1"
    d["2"] = 2
    d[0.25] = false                -- Lua's tables cannot hold nil: false stands for None
    l:reverse()
  end):start()
  p:join()
  local keys = {}
  for k, v in pairs(d) do keys[#keys + 1] = string.format("%s=%s", k, v) end
  table.sort(keys)
  print("dict: " .. table.concat(keys, " "))
  print("list: " .. table.concat(l:copy(), " "))
end

-- 2. A type of one's own: MyManager.register('Maths', MathsClass).
do
  local Maths = {}
  Maths.__index = Maths
  function Maths.new() return setmetatable({}, Maths) end
  function Maths.add(_, x, y) return x + y end
  function Maths.mul(_, x, y) return x * y end

  local m <close> = forage.manager { types = { Maths = Maths.new } }
  local maths = m:Maths()
  print("maths: " .. maths:add(4, 3) .. " " .. maths:mul(7, 8))
end

-- 3. A remote queue: a server on 127.0.0.1 with an authkey; client 1 puts, client 2 gets.
-- 4. The server is also a client: a worker process of its own puts 'local hello' first.
do
  local AUTHKEY = "abracadabra"
  local queue = forage.manager.Queue()
  local server <close> = forage.manager { address = "127.0.0.1:0", authkey = AUTHKEY,
    types = { get_queue = function() return queue end } }
  server:start()                   -- server:serve() would serve in this process instead

  local q = server:get_queue()     -- this process is a client of its own server
  local worker = forage.process(function() q:put("local hello") end):start()
  worker:join()

  local function client(fn)
    local p = forage.process(function()
      local m = assert(forage.manager.connect { address = server.address, authkey = AUTHKEY,
        types = { "get_queue" } })
      fn(m:get_queue())
    end):start()
    assert(p:join() == 0, "a client failed")
  end
  client(function(remote) remote:put("hello") end)
  client(function(remote)
    print("client 2 got: " .. remote:get(5))
    print("client 2 got: " .. remote:get(5))
  end)

  local _, message, kind = forage.manager.connect { address = server.address, authkey = "wrong" }
  print("wrong key: " .. kind .. " (" .. message:gsub("^manager at [^:]+:%d+: ", "") .. ")")
end

-- 5. Nested managed lists, and the trap of changing a copy.
do
  local m <close> = forage.manager()
  local a, b = m:list(), m:list()
  a:append(b)                      -- a holds b itself, not a copy
  b:append("hello")
  print("nested: " .. a[1][1] .. " " .. b[1])
  local rows = m:list { { count = 0 } }
  local row = rows[1]              -- a copy
  row.count = 1
  print("copy changed, list says: " .. rows[1].count)
  rows[1] = row                    -- written back
  print("written back, list says: " .. rows[1].count)
end
