local forage = require "forage"

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

  it("refuses bad options", function()
    assert.has_error(function() forage.queue { bytes = 10 } end,
      "forage.queue: bytes must be an integer from 64 to 2147483648")
    assert.has_error(function() forage.queue { bytes = 1.5 } end,
      "forage.queue: bytes must be an integer from 64 to 2147483648")
    assert.has_error(function() forage.queue { size = 10 } end, "forage.queue: unknown option 'size'")
    assert.has_error(function() forage.queue(1000) end)
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
    assert.same({ nil, "empty" }, { q:get_nowait() })
    local x20 = string.rep("x", 20)   -- a record of 4 bytes of length and 23 of message
    assert.equal(23, encoded_size(x20))
    local n = 0
    while q:put_nowait(x20) do n = n + 1 end
    assert.equal(4, n)
    assert.same({ nil, "full" }, { q:put_nowait(x20) })
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
    assert.same({ nil, "timeout" }, { q:get(0.05) })
    assert.is_true(forage.now() - t0 >= 0.05)
    assert.same({ nil, "timeout" }, { q:get(0) })
    assert.is_true(q:put(string.rep("x", 50)))
    t0 = forage.now()
    assert.same({ nil, "timeout" }, { q:put(string.rep("x", 10), 0.05) })
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
    assert.same({ nil, "timeout" }, { q:join(0.02) })
    q:get()
    q:task_done()
    assert.same({ nil, "timeout" }, { q:join(0) })
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
    assert.same({ nil, "closed" }, { q:put(3) })
    assert.same({ nil, "closed" }, { q:put_nowait(3) })
    assert.equal("forage.Queue (2 messages, 14 of 1048576 bytes, closed)", tostring(q))
    assert.equal(1, q:get(1))
    assert.equal(2, q:get_nowait())
    assert.same({ nil, "closed" }, { q:get(1) })
    assert.same({ nil, "closed" }, { q:get_nowait() })
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
    assert.has_error(function() q:put(1) end, "attempt to use a closed queue")
    assert.has_error(function() q:get() end, "attempt to use a closed queue")
    assert.has_error(function() return #q end, "attempt to use a closed queue")
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

  it("survives a process killed while copying a large message inside the lock", function()
    local q = forage.queue { bytes = 24 << 20 }
    local big = string.rep("z", 20 << 20)
    local attempts, recovered = 0, false
    while not recovered and attempts < 40 do
      attempts = attempts + 1
      local p = forage.process(function()
        while true do
          q:put(big)
          q:get()
        end
      end):start()
      forage.sleep(0.005 + math.random() * 0.03)
      p:kill()
      assert.equal(-9, reap(p))
      recovered = tostring(q):match("recovered") ~= nil
      local n = #q
      assert.is_true(n == 0 or n == 1)
      if n == 1 then assert.equal(big, q:get(1)) end
      assert.equal(0, #q)
    end
    assert.is_true(recovered, "no kill landed inside the lock in " .. attempts .. " attempts")
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
    local function child(id)
      local log = assert(io.open(dir .. "/" .. id, "w"))
      log:setvbuf("no")
      math.randomseed(id)
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
    local live, next_id, kills = {}, 1, 60
    local function spawn()
      live[#live + 1] = { id = next_id, p = forage.process(child, next_id):start() }
      next_id = next_id + 1
    end
    for _ = 1, 4 do spawn() end
    math.randomseed(7)
    for _ = 1, kills do
      forage.sleep(0.001 + math.random() * 0.008)
      local victim = table.remove(live, math.random(#live))
      victim.p:kill()
      assert.equal(-9, reap(victim.p), "child " .. victim.id .. " died of something else")
      spawn()
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
    assert.same({ nil, "empty" }, { q:get_nowait() })
    assert.is_true(q:put("probe", 1))
    assert.equal("probe", q:get(1))
    assert.equal(0, #q)

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
