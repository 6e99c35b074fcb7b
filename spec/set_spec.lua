local forage = require "forage"

local core = require "forage.core"
local helpers = require "helpers"
local slurp, join_or_kill = helpers.read, helpers.join_or_kill

describe("forage.set", function()
  it("add says whether a string is new; has and # see it", function()
    local seen = forage.set { capacity = 100 }
    assert.equal(0, #seen)
    assert.is_true(seen:add("https://example.com/a"))
    assert.is_false(seen:add("https://example.com/a"))
    assert.is_true(seen:add("https://example.com/b"))
    assert.is_true(seen:has("https://example.com/a"))
    assert.is_false(seen:has("https://example.com/c"))
    assert.equal(2, #seen)
    -- Binary-safe, the empty string included.
    assert.is_true(seen:add("a\0b"))
    assert.is_true(seen:add("a\0c"))
    assert.is_false(seen:has("a"))
    assert.is_true(seen:add(""))
    assert.is_false(seen:add(""))
    assert.equal(5, #seen)
    assert.equal(100, seen:capacity())
  end)

  it("takes its capacity as an option or a number, and refuses bad ones", function()
    assert.equal(10000000, forage.set { capacity = 1e7 }:capacity())
    assert.equal(5, forage.set(5):capacity())
    assert.equal(1000000, forage.set():capacity())
    assert.equal(1000000, forage.set {}:capacity())
    assert.has_error(function() forage.set { capacty = 1 } end,
      "forage.set: unknown option 'capacty' (known: capacity)")
    assert.has_error(function() forage.set { capacity = 0 } end,
      "forage.set: option 'capacity' must be an integer from 1 to 2147483648, got 0")
    assert.has_error(function() forage.set { capacity = 2.5 } end,
      "forage.set: option 'capacity' must be an integer from 1 to 2147483648, got 2.5")
    assert.has_error(function() forage.set(0) end, "bad argument #1 to 'set' (capacity must be from 1 to 2147483648)")
    assert.has_error(function() forage.set(2.5) end,
      "bad argument #1 to 'set' (number has no integer representation)")
    assert.has_error(function() forage.set "big" end,
      "bad argument #1 to 'set' (table of options or capacity expected, got string)")
    assert.has_error(function() forage.set(1):add({}) end, "bad argument #1 to 'add' (string expected, got table)")
  end)

  it("uses 32 bytes of shared memory per place", function()
    local s = forage.set { capacity = 1000000 }
    local per_place = s:bytes() / 1000000
    assert.is_true(per_place >= 32 and per_place < 32.01, per_place)
  end)

  it("raises a clear error when full, and still answers for what it holds", function()
    local s = forage.set { capacity = 1000 }
    for i = 1, 1000 do assert.is_true(s:add("key" .. i)) end
    assert.has_error(function() s:add("key1001") end, "set is full (capacity 1000)")
    assert.has_error(function() s:add("another") end, "set is full (capacity 1000)")
    assert.is_false(s:add("key1"))
    assert.is_false(s:add("key1000"))
    assert.is_true(s:has("key500"))
    assert.is_false(s:has("key1001"))
    assert.equal(1000, #s)
    local tiny = forage.set(1)
    assert.is_true(tiny:add("x"))
    assert.has_error(function() tiny:add("y") end, "set is full (capacity 1)")
  end)

  it("is shared with child processes", function()
    local s = forage.set { capacity = 1000 }
    s:add("parent")
    local p = forage.process(function()
      assert(not s:add("parent"))
      for i = 1, 100 do assert(s:add("child" .. i)) end
    end):start()
    assert.equal(0, join_or_kill(p, 10))
    assert.equal(101, #s)
    for i = 1, 100 do assert.is_true(s:has("child" .. i)) end
    assert.is_false(s:add("child50"))
  end)

  it("reports each key new to exactly one of several processes adding it at once", function()
    local keys, workers = 20000, 4
    local s = forage.set { capacity = keys }
    local paths, procs = {}, {}
    for k = 1, workers do
      paths[k] = os.tmpname()
      procs[k] = forage.process(function()
        local new = {}
        -- Each worker walks the keys from its own starting point, so they meet everywhere.
        for n = 0, keys - 1 do
          local key = "https://example.com/item/" .. ((n + k * 5000) % keys)
          if s:add(key) then new[#new + 1] = key end
        end
        local f = assert(io.open(paths[k], "w"))
        f:write(table.concat(new, "\n"), "\n")
        f:close()
      end):start()
    end
    local count = {}
    for k = 1, workers do
      assert.equal(0, join_or_kill(procs[k], 20))
      for key in slurp(paths[k]):gmatch("[^\n]+") do count[key] = (count[key] or 0) + 1 end
      os.remove(paths[k])
    end
    for n = 0, keys - 1 do
      local key = "https://example.com/item/" .. n
      assert.equal(1, count[key], key)
    end
    assert.equal(keys, #s)
  end)

  it("never holds more than its capacity when processes fill it at once", function()
    local s = forage.set { capacity = 1000 }
    local a, b = forage.pipe()
    local procs = {}
    for k = 1, 4 do
      procs[k] = forage.process(function()
        local added, full = 0, 0
        for n = 1, 500 do
          local ok, new = pcall(s.add, s, k .. ":" .. n)
          if not ok then
            assert(new:find("set is full (capacity 1000)", 1, true), new)
            full = full + 1
          elseif new then
            added = added + 1
          end
        end
        b:send({ added, full })
      end):start()
    end
    local added, full = 0, 0
    for _ = 1, 4 do
      local r = assert(a:recv(20))
      added, full = added + r[1], full + r[2]
    end
    for k = 1, 4 do assert.equal(0, join_or_kill(procs[k], 10)) end
    assert.equal(1000, added)
    assert.equal(1000, full)
    assert.equal(1000, #s)
  end)

  it("survives processes SIGKILLed in the middle of adds: no hang, nothing reported lost", function()
    local s = forage.set { capacity = 200000 }
    local log = os.tmpname()
    local rounds = 50
    -- In each round one child stops at one of the pause points inside an add (a place
    -- reserved, the slot claimed, the fingerprint written: in turn) and is killed there,
    -- while the other, racing it for the same keys, is killed wherever it is.
    local names = { "set.add.reserved", "set.add.claimed", "set.add.written" }
    local points = {}
    for i, name in ipairs(names) do points[i] = core.pause_point(name) end
    for round = 1, rounds do
      local point = points[(round - 1) % #points + 1]
      local procs = {}
      for k = 1, 2 do
        procs[k] = forage.process(function()
          local f = assert(io.open(log, "a"))
          f:setvbuf("no")
          -- Both children add the same keys, racing for each; a key is reported with one
          -- write, after add returned true. From its 1000th key on the armed child stops at
          -- the first new key it adds (its own last key at the latest); the other waits to
          -- be killed. So each round reports its first 999 keys, but one in flight.
          for n = 1, 3000 do
            if k == 1 and n == 1000 then point:arm() end
            local key = "r" .. round .. "/" .. n
            if s:add(key) then f:write(key .. "\n") end
          end
          if s:add("own" .. round .. "/" .. k) then f:write("own" .. round .. "/" .. k .. "\n") end
          forage.sleep(60)
        end):start()
      end
      assert.equal(procs[1].pid, point:wait(10), "round " .. round .. ": " .. names[(round - 1) % #points + 1])
      for _, p in ipairs(procs) do p:kill() end
      for _, p in ipairs(procs) do assert.equal(-9, p:join(5)) end
    end
    local reported, lines = {}, 0
    for key in slurp(log):gmatch("[^\n]+") do
      assert.is_nil(reported[key], "reported new twice: " .. key)
      reported[key] = true
      lines = lines + 1
    end
    os.remove(log)
    assert.is_true(lines >= 998 * rounds, "the children added too little to test anything: " .. lines)
    for key in pairs(reported) do assert.is_true(s:has(key), key) end
    assert.is_true(#s >= lines)
    -- Fresh adds and lookups still work, in a child given a deadline so a hang fails the test.
    local p = forage.process(function()
      local deadline = forage.now() + 5
      for n = 1, 10000 do
        assert(s:add("fresh" .. n), "fresh key not new")
        assert(s:has("fresh" .. n))
        assert(forage.now() < deadline, "too slow")
      end
      for key in pairs(reported) do assert(not s:add(key), "a reported key was added again") end
    end):start()
    assert.equal(0, join_or_kill(p, 10))
    assert.is_true(s:has("fresh10000"))
  end)

  it("travels by reference, never by copy", function()
    local a, b = forage.pipe()
    local seen = forage.set(1)
    a:send({ seen = seen })
    assert.equal(seen, b:recv(1).seen)
    assert.has_error(function() forage.encode({ seen = seen }) end,
      "value.seen: cannot send forage.Set in data mode (only inside the process tree)")
  end)

  it("has __tostring and an idempotent close", function()
    local s = forage.set(10)
    s:add("a")
    assert.equal("forage.Set (1 of 10)", tostring(s))
    s:close()
    s:close()
    assert.equal("forage.Set (closed)", tostring(s))
    assert.has_error(function() s:add("a") end, "attempt to use a closed forage.Set")
    assert.has_error(function() return #s end, "attempt to use a closed forage.Set")
    do
      local scoped <close> = forage.set(1)
      assert.is_true(scoped:add("x"))
    end
  end)
end)
