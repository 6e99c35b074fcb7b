local forage = require "forage"

local core = require "forage.core"
local reap = require("helpers").join_or_fail

-- The size of v's record payload, as the queue counts it.
local function encoded_size(v)
  return #forage.encode(v, { code = true })
end

describe("forage.queue", function()
  it("is created with a default of 1 MiB, or the bytes asked for", function()
    local q = forage.queue()
    assert.equal("forage.Queue (0 messages, 0 of 1048576 bytes)", tostring(q))
    q = forage.queue { bytes = 4096 }
    assert.equal("forage.Queue (0 messages, 0 of 4096 bytes)", tostring(q))
    assert.equal(0, #q)
    assert.is_true(q:empty())
    assert.is_false(q:full())
  end)

  it("refuses bad options, naming the option and the function", function()
    assert.has_error(function() forage.queue { bytes = 10 } end,
      "forage.queue: option 'bytes' must be an integer from 64 to 2147483648, got 10")
    assert.has_error(function() forage.queue { bytes = 1.5 } end,
      "forage.queue: option 'bytes' must be an integer from 64 to 2147483648, got 1.5")
    assert.has_error(function() forage.queue { byts = 1 } end,
      "forage.queue: unknown option 'byts' (known: bytes)")
    assert.has_error(function() forage.queue { [string.rep("k", 1000)] = 1 } end,
      "forage.queue: unknown option '" .. string.rep("k", 60) .. "...' (known: bytes)")
    assert.has_error(function() forage.queue(1000) end,
      "bad argument #1 to 'queue' (table expected, got number)")
  end)

  it("takes timeouts by the one rule: nil or math.huge wait, 0 does not, negative or NaN raise", function()
    local q = forage.queue { bytes = 64 }
    assert.same({ nil, "timeout", "timeout" }, { q:get(0) })
    assert.has_error(function() q:get(-1) end,
      "bad argument #1 to 'get' (timeout must be nil or a non-negative number of seconds, got -1)")
    assert.has_error(function() q:get(0 / 0) end)
    assert.has_error(function() q:join(-0.5) end,
      "bad argument #1 to 'join' (timeout must be nil or a non-negative number of seconds, got -0.5)")
    assert.has_error(function() q:put(1, "soon") end,
      "bad argument #2 to 'put' (timeout must be nil or a non-negative number of seconds, got 'soon')")
    assert.is_true(q:put(1, math.huge))
    assert.equal(1, q:get(math.huge))
    assert.is_true(q:put(2, nil))
    assert.equal(2, q:get(nil))
  end)

  it("raises Lua's own message for a wrong object", function()
    local q = forage.queue()
    assert.has_error(function() q.put(io.stdout, 1) end, "bad argument #1 to 'put' (forage.Queue expected, got FILE*)")
    assert.has_error(function() q.get({}) end, "bad argument #1 to 'get' (forage.Queue expected, got table)")
  end)

  it("keeps FIFO order and carries any value that can travel", function()
    local q = forage.queue()
    local values = { 1, 2.0, "three", true, false, { 1, nil, 3, n = 3 }, { nested = { deep = "x" } } }
    for _, v in ipairs(values) do assert.is_true(q:put(v)) end
    assert.equal(#values, #q)
    for i = 1, 100 do q:put(i) end
    for _, v in ipairs(values) do
      local got = q:get(1)
      assert.same(v, got)
      assert.equal(math.type(v), math.type(got))
    end
    for i = 1, 100 do assert.equal(i, q:get_nowait()) end
    assert.is_true(q:empty())
    local add = function(a) return a + 1 end
    q:put(add)
    assert.equal(42, q:get(1)(41))
  end)

  it("carries nil as a value", function()
    local q = forage.queue()
    assert.is_true(q:put(nil))
    assert.equal(1, #q)
    local v, err = q:get(1)
    assert.is_nil(v)
    assert.is_nil(err)
    assert.equal(0, #q)
  end)

  it("put_nowait says full and get_nowait says empty", function()
    local q = forage.queue { bytes = 128 }
    assert.same({ nil, "empty", "empty" }, { q:get_nowait() })
    local x20 = string.rep("x", 20)   -- a record of 4 bytes of length and 23 of message
    assert.equal(23, encoded_size(x20))
    local n = 0
    while q:put_nowait(x20) do n = n + 1 end
    assert.equal(4, n)
    assert.same({ nil, "full", "full" }, { q:put_nowait(x20) })
    assert.is_true(q:full())
    assert.is_true(q:put_nowait("x"))   -- 20 bytes were free
    assert.equal(x20, q:get_nowait())
    assert.is_true(q:put_nowait("y"))
  end)

  it("full() means fewer than 64 bytes are free: a small message might not fit", function()
    local x50 = string.rep("x", 50)   -- a record of 57 bytes
    local q = forage.queue { bytes = 57 + 64 }
    q:put(x50)
    assert.is_false(q:full())
    q = forage.queue { bytes = 57 + 63 }
    q:put(x50)
    assert.is_true(q:full())
    assert.is_true(q:put_nowait(string.rep("x", 50)))   -- full, yet this one fits
  end)

  it("wraps records around the end of the ring", function()
    local q = forage.queue { bytes = 100 }
    for i = 1, 500 do
      local v = string.rep(string.char(97 + i % 26), i % 37)
      assert.is_true(q:put_nowait(v))
      if i % 2 == 0 then assert.is_true(q:put_nowait(i)) end
      assert.equal(v, q:get_nowait())
      if i % 2 == 0 then assert.equal(i, q:get_nowait()) end
    end
    assert.equal("forage.Queue (0 messages, 0 of 100 bytes)", tostring(q))
  end)

  it("times out: get on an empty queue, put on a full one", function()
    local q = forage.queue { bytes = 64 }
    local t0 = forage.now()
    assert.same({ nil, "timeout", "timeout" }, { q:get(0.05) })
    assert.is_true(forage.now() - t0 >= 0.05)
    assert.same({ nil, "timeout", "timeout" }, { q:get(0) })
    assert.is_true(q:put(string.rep("x", 50)))
    t0 = forage.now()
    assert.same({ nil, "timeout", "timeout" }, { q:put(string.rep("x", 10), 0.05) })
    assert.is_true(forage.now() - t0 >= 0.05)
    assert.has_error(function() q:get(-1) end)
    assert.has_error(function() q:put(1, "soon") end)
  end)

  it("refuses a message larger than the ring at once", function()
    local q = forage.queue()
    local big = string.rep("x", 2000000)
    assert.has_error(function() q:put(big) end,
      string.format("queue: message of %d bytes does not fit a queue of 1048576 bytes", encoded_size(big)))
    assert.has_error(function() q:put_nowait(big) end)
    local small = forage.queue { bytes = 64 }
    assert.is_true(small:put(string.rep("x", 57), 1))   -- 4 + 60 bytes: exactly the ring
    assert.equal("forage.Queue (1 messages, 64 of 64 bytes)", tostring(small))
    assert.has_error(function() small:put(string.rep("x", 58)) end,
      "queue: message of 61 bytes does not fit a queue of 64 bytes")
    assert.equal(1, #small)
  end)

  it("raises the wire's error for a value that cannot travel", function()
    local q = forage.queue()
    assert.has_error(function() q:put({ conn = io.tmpfile() }) end, "value.conn: cannot send userdata (FILE*)")
    assert.has_error(function() q:put(coroutine.create(print)) end, "value: cannot send thread")
    assert.equal(0, #q)
  end)

  it("task_done and join count as Python's JoinableQueue", function()
    local q = forage.queue()
    assert.is_true(q:join(0))
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
    q:put("a")
    q:put("b")
    assert.same({ nil, "timeout", "timeout" }, { q:join(0.02) })
    q:get()
    q:task_done()
    assert.same({ nil, "timeout", "timeout" }, { q:join(0) })
    q:get()
    q:task_done()
    assert.is_true(q:join(1))
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
  end)

  it("close: puts say closed, gets drain what remains and then say closed", function()
    local q = forage.queue()
    q:put(1)
    q:put(2)
    q:close()
    q:close()
    assert.same({ nil, "closed", "closed" }, { q:put(3) })
    assert.same({ nil, "closed", "closed" }, { q:put_nowait(3) })
    assert.equal("forage.Queue (2 messages, 14 of 1048576 bytes, closed)", tostring(q))
    assert.equal(1, q:get(1))
    assert.equal(2, q:get_nowait())
    assert.same({ nil, "closed", "closed" }, { q:get(1) })
    assert.same({ nil, "closed", "closed" }, { q:get_nowait() })
    q:task_done()
    q:task_done()
    assert.is_true(q:join(0))
  end)

  it("close wakes a get blocked in another process, and a put blocked on a full queue", function()
    local q = forage.queue { bytes = 64 }
    local full = forage.queue { bytes = 64 }
    full:put(string.rep("x", 50))
    local reports = forage.queue()
    local getter = forage.process(function()
      local t0 = forage.now()
      local v, err = q:get(10)
      reports:put({ "get", v, err, forage.now() - t0 })
    end):start()
    local putter = forage.process(function()
      local t0 = forage.now()
      local v, err = full:put("more", 10)
      reports:put({ "put", v, err, forage.now() - t0 })
    end):start()
    forage.sleep(0.1)
    q:close()
    full:close()
    local got = {}
    for _ = 1, 2 do
      local r = assert(reports:get(5))
      got[r[1]] = r
    end
    assert.equal("closed", got.get[3])
    assert.is_nil(got.get[2])
    assert.is_true(got.get[4] < 5)
    assert.equal("closed", got.put[3])
    assert.is_true(got.put[4] < 5)
    assert.equal(0, reap(getter))
    assert.equal(0, reap(putter))
  end)

  it("a closed (released) queue raises; __close and __gc are idempotent", function()
    local q
    do
      local inner <close> = forage.queue()
      q = inner
      q:put(1)
    end
    assert.equal("forage.Queue (closed)", tostring(q))
    assert.has_error(function() q:put(1) end, "attempt to use a closed forage.Queue")
    assert.has_error(function() q:get() end, "attempt to use a closed forage.Queue")
    assert.has_error(function() return #q end, "attempt to use a closed forage.Queue")
    getmetatable(q).__gc(q)
    assert.has_error(function() q.put(io.stdout, 1) end)
  end)

  it("carries values between processes, each received exactly once", function()
    local q = forage.queue { bytes = 8192 }   -- small: producers wait for room often
    local results = forage.queue()
    local producers, consumers, each = 3, 3, 2000
    local procs = {}
    for c = 1, consumers do
      procs[#procs + 1] = forage.process(function()
        local got = {}
        while true do
          local m = assert(q:get(10))
          if m == "stop" then break end
          got[#got + 1] = m[1] * 100000 + m[2]
          assert(m[3] == string.rep("p", m[2] % 50))
        end
        results:put({ c, got })
      end):start()
    end
    for p = 1, producers do
      procs[#procs + 1] = forage.process(function()
        for i = 1, each do assert(q:put({ p, i, string.rep("p", i % 50) }, 10)) end
      end):start()
    end
    for i = consumers + 1, consumers + producers do assert.equal(0, reap(procs[i], 20)) end
    for _ = 1, consumers do assert.is_true(q:put("stop", 5)) end
    local seen, total = {}, 0
    for _ = 1, consumers do
      local r = assert(results:get(10))
      local last = {}
      for _, key in ipairs(r[2]) do
        assert.is_nil(seen[key], "received twice: " .. key)
        seen[key] = true
        total = total + 1
        -- FIFO per producer, as seen by one consumer
        local p, i = key // 100000, key % 100000
        assert.is_true(i > (last[p] or 0))
        last[p] = i
      end
    end
    for i = 1, consumers do assert.equal(0, reap(procs[i], 10)) end
    assert.equal(producers * each, total)
    assert.equal(0, #q)
  end)

  it("join waits for the task_done of consumers in other processes", function()
    local q = forage.queue()
    for i = 1, 40 do q:put(i) end
    local procs = {}
    for w = 1, 2 do
      procs[w] = forage.process(function()
        while true do
          local v = q:get(0.2)
          if v == nil then break end
          forage.sleep(0.002)
          q:task_done()
        end
      end):start()
    end
    assert.is_true(q:join(10))
    assert.equal(0, #q)
    for w = 1, 2 do assert.equal(0, reap(procs[w])) end
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
  end)

  it("reaches pool workers by reference when created before the pool", function()
    local q = forage.queue()
    local pool <close> = forage.pool(1)
    assert.is_true(pool:apply(function() return q:put("upvalue", 5) end, {}))
    assert.is_true(pool:apply(function(x) return x:put("argument", 5) end, { q }))
    assert.equal("upvalue", q:get(5))
    assert.equal("argument", q:get(5))
    -- and a queue travels through a queue, by reference too
    local inner = forage.queue()
    q:put({ reply_to = inner })
    local p = forage.process(function() q:get(5).reply_to:put("answer") end):start()
    assert.equal(0, reap(p))
    assert.equal("answer", inner:get(5))
  end)

  it("cannot reach a worker forked before it was created", function()
    local pool <close> = forage.pool(1)
    local late = forage.queue()
    local ok, err = pcall(pool.apply, pool, function(x) return x end, { late })
    assert.is_false(ok)
    assert.truthy(err.message:find("forage.Queue was created after this process started " ..
      "(create it before the pool or process)", 1, true), err.message)
    ok, err = pcall(pool.apply, pool, function() return #late end, {})
    assert.is_false(ok)
    assert.truthy(err.message:find("forage.Queue was created after this process started", 1, true))
    assert.has_error(function() forage.encode(late) end,
      "value: cannot send forage.Queue in data mode (only inside the process tree)")
  end)

  it("survives a process killed at each point of a large put and get inside the lock", function()
    -- Each child stops at a pause point inside the lock (after taking it, halfway through
    -- its copy, just before its commit) and is killed there: a put killed anywhere leaves
    -- nothing behind, a get killed anywhere leaves the message for the next consumer.
    local q = forage.queue { bytes = 24 << 20 }
    local big = string.rep("z", 20 << 20)
    local kills = 0
    for _, op in ipairs({ "put", "get" }) do
      for _, at in ipairs({ "locked", "copy", "commit" }) do
        local point = core.pause_point("queue." .. op .. "." .. at)
        if op == "get" then assert.is_true(q:put(big, 1)) end
        local p = forage.process(function()
          point:arm()
          if op == "put" then q:put(big) else q:get() end
          os.exit(3)   -- never reached: the point stops it
        end):start()
        assert.equal(p.pid, point:wait(10), op .. "." .. at)
        p:kill()
        assert.equal(-9, reap(p))
        kills = kills + 1
        if op == "put" then
          assert.equal(0, #q, "a put killed at " .. at .. " left a message")
        else
          assert.equal(1, #q, "a get killed at " .. at .. " took the message")
          assert.equal(big, q:get(1))
        end
        assert.equal(0, #q)
      end
    end
    assert.equal(string.format("forage.Queue (0 messages, 0 of %d bytes, recovered %d times)", 24 << 20, kills),
      tostring(q))
    assert.is_true(q:put("after", 1))
    assert.equal("after", q:get(1))
  end)

  it("stays consistent when processes are SIGKILLed at random in put/get loops", function()
    local q = forage.queue { bytes = 16384 }   -- small: the ring wraps and fills all the time
    local function message(id, seq)
      return { id, seq, string.rep(string.char(97 + seq % 26), (seq * 7919) % 300) }
    end
    local function valid(m)
      return type(m) == "table" and math.type(m[1]) == "integer" and math.type(m[2]) == "integer" and
          m[3] == message(m[1], m[2])[3]
    end
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    -- Each child logs, unbuffered, every put and get it completed: a child killed between an
    -- operation and its log line leaves at most one put and one get unlogged.
    local function child(id, point)
      local log = assert(io.open(dir .. "/" .. id, "w"))
      log:setvbuf("no")
      math.randomseed(id)
      if point then point:arm() end
      local seq = 0
      while true do
        if math.random() < 0.5 then
          -- short timeouts: all four may be putting to a full queue, or getting from an empty one
          if q:put(message(id, seq + 1), 0.001) then
            seq = seq + 1
            log:write(string.format("P %d\n", seq))
          end
        else
          local m = q:get(0.001)
          if m ~= nil then
            if not valid(m) then
              log:write("BAD\n")
              os.exit(3)
            end
            q:task_done()
            log:write(string.format("G %d %d\n", m[1], m[2]))
          end
        end
      end
    end
    -- Three children put and get all along; a fourth, armed with one of the pause points
    -- inside the lock (in turn), stops there and is killed there, and another replaces it.
    local names = { "queue.put.locked", "queue.put.copy", "queue.put.commit", "queue.get.locked",
      "queue.get.copy", "queue.get.commit", "queue.task_done.locked" }
    local points = {}
    for i, name in ipairs(names) do points[i] = core.pause_point(name) end
    local live, next_id, kills = {}, 1, 64
    local function spawn(point)
      local c = { id = next_id, p = forage.process(child, next_id, point):start() }
      next_id = next_id + 1
      return c
    end
    for _ = 1, 3 do live[#live + 1] = spawn() end
    for k = 1, kills do
      local point = points[(k - 1) % #points + 1]
      local victim = spawn(point)
      assert.equal(victim.p.pid, point:wait(10),
        "child " .. victim.id .. " never reached " .. names[(k - 1) % #points + 1])
      victim.p:kill()
      assert.equal(-9, reap(victim.p), "child " .. victim.id .. " died of something else")
    end
    for _, c in ipairs(live) do
      c.p:kill()
      assert.equal(-9, reap(c.p))
    end
    local killed = next_id - 1

    -- The queue works: no lock left held, no waiter stuck, every message whole.
    local remaining = {}
    local n = #q
    for i = 1, n do
      local m, err = q:get(1)
      assert.is_true(valid(m), "message " .. i .. " of " .. n .. ": " .. tostring(err))
      remaining[#remaining + 1] = m
      q:task_done()
    end
    assert.same({ nil, "empty", "empty" }, { q:get_nowait() })
    assert.is_true(q:put("probe", 1))
    assert.equal("probe", q:get(1))
    assert.equal(0, #q)
    -- Every kill at a point held the lock, and the next taker recovered it.
    local recoveries = tonumber(tostring(q):match("recovered (%d+) times"))
    assert.is_true(recoveries >= kills, tostring(q))

    -- The accounts: what was put was got or is still there, but for the operations a kill
    -- left unlogged (at most one put and one get per killed child).
    local put, last_put, got = {}, {}, {}
    for id = 1, killed do
      local f = io.open(dir .. "/" .. id)   -- none when the child was killed before it opened it
      local text = f and f:read("a") or ""
      for line in text:gmatch("([^\n]*)\n") do   -- whole lines only
        assert.is_nil(line:match("BAD"), "child " .. id .. " received garbage")
        local seq = line:match("^P (%d+)$")
        if seq then
          put[id .. ":" .. seq] = true
          last_put[id] = math.max(last_put[id] or 0, tonumber(seq))
        end
        local gid, gseq = line:match("^G (%d+) (%d+)$")
        if gid then
          local key = gid .. ":" .. gseq
          assert.is_nil(got[key], "got twice: " .. key)
          got[key] = true
        end
      end
      if f then f:close() end
      os.remove(dir .. "/" .. id)
    end
    os.remove(dir)
    local unlogged_puts = 0
    local function check_origin(key)
      if put[key] then return end
      local id, seq = key:match("^(%d+):(%d+)$")
      -- the one put its child completed but was killed before logging
      assert.equal((last_put[tonumber(id)] or 0) + 1, tonumber(seq), "never put: " .. key)
      unlogged_puts = unlogged_puts + 1
    end
    for key in pairs(got) do check_origin(key) end
    for _, m in ipairs(remaining) do
      local key = m[1] .. ":" .. m[2]
      assert.is_nil(got[key], "got and still queued: " .. key)
      check_origin(key)
      got[key] = true
    end
    local lost = 0
    for key in pairs(put) do
      if not got[key] then lost = lost + 1 end
    end
    assert.is_true(unlogged_puts <= killed)
    assert.is_true(lost <= killed, lost .. " messages lost for " .. killed .. " kills")

    -- The unfinished count: only the gets whose task_done a kill prevented are left.
    local extra = 0
    while pcall(q.task_done, q) do extra = extra + 1 end
    assert.is_true(extra <= killed)
    assert.is_true(q:join(0))
  end)
end)
