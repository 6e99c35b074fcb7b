local forage = require "forage"
local show = require("forage.args").show
local helpers = require "helpers"

-- This file's name as Lua reports it in error positions.
local SOURCE = debug.getinfo(1, "S").short_src

-- Starts fn in a child that is killed and reaped when the test ends, passed or failed.
local function start_reaped(fn)
  return helpers.reaped(finally, forage.process(fn):start())
end

describe("forage.pipe", function()
  it("carries values between processes, both ways", function()
    local parent, child = forage.pipe()
    local p = start_reaped(function()
      local v = child:recv()
      child:send({ got = v, answer = 42, list = { 1, 2.5, "three", true } })
      child:close()
    end)
    parent:send({ 42, nil, "hello" })
    local reply = parent:recv(5)
    assert.same({ 42, nil, "hello" }, reply.got)
    assert.equal(42, reply.answer)
    assert.equal("float", math.type(reply.list[2]))
    assert.equal(0, p:join(5))
  end)

  it("recv times out, and says closed once the far end is gone, with kinds", function()
    local a, b = forage.pipe()
    assert.same({ nil, "timeout", "timeout" }, { a:recv(0.02) })
    assert.same({ nil, "timeout", "timeout" }, { a:recv(0) })
    b:close()
    assert.same({ nil, "closed", "closed" }, { a:recv(1) })
    assert.same({ nil, "closed", "closed" }, { a:recv() })
  end)

  it("recv waits forever for nil, math.huge and timeouts over 1e9 seconds", function()
    local a, b = forage.pipe()
    for _, forever in ipairs { math.huge, 1e300, 1e10, 1e9 } do
      b:send(forever)
      assert.equal(forever, a:recv(forever))
    end
    b:send("nil")
    assert.equal("nil", a:recv(nil))
    b:close()
    assert.same({ nil, "closed", "closed" }, { a:recv(1e300) })
  end)

  it("recv and poll raise on a negative, NaN or non-number timeout, at the caller's line", function()
    local a, b = forage.pipe()
    -- A message is waiting: a recv that wrongly accepted the timeout returns it at once.
    b:send("waiting")
    local function expect(method, bad, ok, err, line)
      assert.is_false(ok)
      assert.equal(SOURCE .. ":" .. line .. ": bad argument #1 to '" .. method .. "' (timeout must be nil or a "
        .. "non-negative number of seconds, got " .. show(bad) .. ")", err)
    end
    for _, bad in ipairs { -1, -math.huge, 0 / 0, "1", {} } do
      local ok, err = pcall(function() a:recv(bad) end) local line = debug.getinfo(1, "l").currentline
      expect("recv", bad, ok, err, line)
      ok, err = pcall(function() a:poll(bad) end) line = debug.getinfo(1, "l").currentline
      expect("poll", bad, ok, err, line)
    end
    assert.equal("waiting", a:recv(0))
  end)

  it("send says closed, with its kind, once the far end is gone", function()
    local a, b = forage.pipe()
    b:close()
    assert.same({ nil, "closed", "closed" }, { a:send("lost") })
  end)

  it("poll tells whether recv would block, without taking the message", function()
    local a, b = forage.pipe()
    assert.is_false(a:poll(0))
    assert.is_false(a:poll())
    b:send("x")
    assert.is_true(a:poll(1))
    assert.is_true(a:poll(0))
    assert.equal("x", a:recv(0))
    assert.is_false(a:poll(0))
  end)

  it("poll(nil) waits forever, as Python's poll(None)", function()
    local a, b = forage.pipe()
    b:send("x")
    assert.is_true(a:poll(nil))
    assert.equal("x", a:recv(0))
    b:close()
    assert.is_true(a:poll(nil))   -- the far end's close: recv would not block
  end)

  it("carries a message larger than the pipe's buffer", function()
    local a, b = forage.pipe()
    local big = string.rep("0123456789", 500000)   -- 5 MB
    local p = start_reaped(function() b:send(big) end)
    assert.equal(big, a:recv(10))
    assert.equal(0, p:join(5))
  end)

  it("a one-way pipe only receives on its first end", function()
    local r, w = forage.pipe(false)
    w:send(1)
    assert.equal(1, r:recv(1))
    assert.has_error(function() r:send(1) end, "connection is receive-only")
    assert.has_error(function() w:recv(0) end, "connection is send-only")
  end)

  it("checks the type of duplex", function()
    local ok, err = pcall(function() forage.pipe("no") end) local line = debug.getinfo(1, "l").currentline
    assert.is_false(ok)
    assert.equal(SOURCE .. ":" .. line .. ": bad argument #1 to 'pipe' (boolean expected, got string)", err)
    local a, b = forage.pipe(nil)
    b:send(1)
    assert.equal(1, a:recv(0))
    a:send(2)   -- duplex by default
    assert.equal(2, b:recv(0))
  end)

  it("refuses a userdata, naming where it sits", function()
    local a = forage.pipe()
    assert.has_error(function() a:send({ conn = io.tmpfile() }) end, "value.conn: cannot send userdata (FILE*)")
  end)

  it("raises on a closed connection", function()
    local a = forage.pipe()
    a:close()
    a:close()
    assert.has_error(function() a:send(1) end, "attempt to use a closed forage.Connection")
    assert.has_error(function() a:recv(0) end, "attempt to use a closed forage.Connection")
    assert.equal("forage.Connection (closed)", tostring(a))
  end)

  it("rejects a method called on another type", function()
    local a = forage.pipe()
    assert.has_error(function() a.recv(42) end, "bad argument #1 to 'recv' (forage.Connection expected, got number)")
  end)
end)

describe("forage.wait", function()
  it("returns the connections whose recv would not block, in their order", function()
    local a1, b1 = forage.pipe()
    local a2, b2 = forage.pipe()
    local a3, b3 = forage.pipe()
    assert.same({}, forage.wait({ a1, a2, a3 }, 0))
    b3:send("three")
    b1:send("one")
    local ready = forage.wait({ a1, a2, a3 }, 5)
    assert.equal(2, #ready)
    assert.equal(a1, ready[1])
    assert.equal(a3, ready[2])
    assert.equal("one", a1:recv(0))
    assert.same({ a3 }, forage.wait({ a1, a2, a3 }, 0))
    b2:close()
    local closed = forage.wait({ a2 }, 5)
    assert.same({ a2 }, closed)
    assert.same({ nil, "closed", "closed" }, { a2:recv(0) })
  end)

  it("sees a message already buffered by an earlier recv, which poll(2) would not", function()
    local a, b = forage.pipe()
    -- two messages in one write reach the reader's buffer together: the first recv takes
    -- both off the socket, the second sits in the buffer with nothing left to read
    b:send("first")
    b:send("second")
    assert.equal("first", a:recv(5))
    assert.same({ a }, forage.wait({ a }, 0))
    assert.equal("second", a:recv(0))
  end)

  it("wakes when a child sends, and waits no longer than its timeout otherwise", function()
    local a, b = forage.pipe()
    local go_a, go_b = forage.pipe()
    local p = start_reaped(function()
      go_b:recv()
      b:send("late")
    end)
    assert.same({}, forage.wait({ a }, 0.05))
    go_a:send(true)
    assert.same({ a }, forage.wait({ a }, nil))
    assert.equal("late", a:recv(0))
    assert.equal(0, p:join(5))
  end)

  it("raises on bad arguments, closed and send-only connections", function()
    local a, b = forage.pipe()
    assert.has_error(function() forage.wait(a) end)
    assert.has_error(function() forage.wait({ a }, -1) end,
      "bad argument #2 to 'wait' (timeout must be nil or a non-negative number of seconds, got -1)")
    assert.has_error(function() forage.wait({ 42 }) end)
    local r, w = forage.pipe(false)
    assert.has_error(function() forage.wait({ w }, 0) end, "connection 1 is send-only")
    b:close()
    a:close()
    assert.has_error(function() forage.wait({ a }, 0) end, "attempt to use a closed forage.Connection")
    r:close()
  end)
end)

describe("Connection:send_nowait", function()
  it("never waits: what does not fit stays queued, in order, and flush or send writes it", function()
    local a, b = forage.pipe()
    local big = ("x"):rep(4 << 20)               -- far more than a socket buffer holds
    local queued = a:send_nowait(big)
    assert.is_true(queued > 0)
    assert.equal(queued, a:flush())              -- nobody reads: still queued, nothing lost
    a:send_nowait("second")
    local p = start_reaped(function()
      assert(b:recv(10) == big)
      assert(b:recv(10) == "second")
      assert(b:recv(10) == "third")
      b:send("ok")
    end)
    while a:flush() > 0 do forage.wait({ a }, 0.01) end
    a:send("third")                              -- send goes after what was queued
    assert.equal("ok", a:recv(10))
    assert.equal(0, p:join(10))
  end)

  it("says closed when the far end is gone, and raises on what cannot travel", function()
    local a, b = forage.pipe()
    b:close()
    assert.same({ nil, "closed", "closed" }, { a:send_nowait("x") })
    local c = forage.pipe()
    assert.has_error(function() c:send_nowait({ f = io.tmpfile() }) end, "value.f: cannot send userdata (FILE*)")
  end)
end)

describe("spinning before sleeping (conn:spin, forage.wait's third argument)", function()
  it("recv and poll still take a frame sent while they spin or sleep, and keep their timeouts", function()
    local a, b = forage.pipe()
    assert.equal(a, a:spin(0.005))
    assert.same({ nil, "timeout", "timeout" }, { a:recv(0.02) })   -- spun 5 ms, then slept the rest
    assert.same({ nil, "timeout", "timeout" }, { a:recv(0) })      -- no time: no spin
    assert.is_false(a:poll(0.001))
    local go_a, go_b = forage.pipe()
    local p = start_reaped(function()
      go_b:recv()
      b:send("late")     -- after the parent is surely asleep, or spinning: either way taken
      b:send("next")
    end)
    go_a:send("go")
    assert.equal("late", a:recv(10))
    assert.is_true(a:poll(10))
    assert.equal("next", a:recv(10))
    assert.equal(0, p:join(5))
  end)

  it("forage.wait(list, timeout, spin) returns what is ready, as without spin", function()
    local a1, b1 = forage.pipe()
    local a2 = forage.pipe()
    assert.same({}, forage.wait({ a1, a2 }, 0.01, 0.005))
    b1:send("x")
    assert.same({ a1 }, forage.wait({ a1, a2 }, 5, 0.005))
    assert.same({ a1 }, forage.wait({ a1, a2 }, nil, 0.001))
  end)

  it("refuses a spin that is negative or longer than 10 ms", function()
    local a = forage.pipe()
    assert.has_error(function() a:spin(-1) end, "bad argument #1 to 'spin' (spin must be from 0 to 0.01 seconds)")
    assert.has_error(function() a:spin(1) end, "bad argument #1 to 'spin' (spin must be from 0 to 0.01 seconds)")
    assert.has_error(function() forage.wait({ a }, 0, 0.5) end,
      "bad argument #3 to 'wait' (spin must be from 0 to 0.01 seconds)")
  end)
end)
