-- forage.manager: objects served by a process (Python's Manager and BaseManager), with the
-- blog's examples (../shared/seed/) rewritten. Real server processes, real sockets on
-- unix paths and 127.0.0.1; every wait is on an event, never on a guess of time.
local forage = require "forage"
local core = require "forage.core"
local protocol = require "forage.manager.protocol"
local helpers = require "helpers"

local function start_reaped(fn, ...)
  return helpers.reaped(finally, forage.process(fn, ...):start())
end

-- A manager shut down when the test ends, passed or failed.
local function manager(opts)
  local m = forage.manager(opts)
  helpers.on_exit(finally, function() m:shutdown() end)
  return m
end

-- Runs fn(...) in a child; returns what it returned (its results must travel) or raises
-- what it raised.
local function in_child(fn, ...)
  local rd, wr = forage.pipe(false)
  local p = start_reaped(function(...)
    wr:send(table.pack(pcall(fn, ...)))
  end, ...)
  local r = rd:recv(30)
  assert.are.equal(0, helpers.join_or_fail(p, 10))
  assert(r, "the child sent nothing")
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Waits until pred(m:stats()) is true: the server tells when a client is parked or gone.
local function until_stats(m, pred)
  for _ = 1, 5000 do
    local s = m:stats()
    if pred(s) then return s end
    forage.sleep(0.002)
  end
  error("the server never reached the state waited for")
end

-- A connection to m's server that passed the handshake, for speaking the protocol by hand.
local function raw_client(m)
  local proxy = require "forage.manager.proxy"
  return assert(proxy.open(m.where))
end

describe("forage.manager", function()
  describe("the blog's Manager example", function()
    it("a child writes a dict and reverses a list; the parent sees both", function()
      local m = manager()
      local d = m:dict()
      local l = m:list { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }
      local p = start_reaped(function()
        d[1] = "1"
        d["2"] = 2
        d[0.25] = false   -- Python's None; nil would delete
        l:reverse()
      end)
      assert.are.equal(0, helpers.join_or_fail(p, 10))
      assert.are.same({ [1] = "1", ["2"] = 2, [0.25] = false }, d:copy())
      assert.are.same({ 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 }, l:copy())
      assert.are.equal(3, #d)
      assert.are.equal(10, #l)
    end)

    it("starts a server process at once, on a unix socket, and <close> stops it", function()
      local pid, path
      do
        local m <close> = forage.manager()
        pid, path = m.process.pid, m.address
        assert.truthy(helpers.exists(pid))
        assert.are.equal("/", path:sub(1, 1))
        assert.truthy(m:dict())
      end
      assert.falsy(helpers.exists(pid))
      assert.falsy(io.open(path))
    end)
  end)

  describe("dict", function()
    it("takes any key a Lua table takes and keeps integer and float values apart", function()
      local m = manager()
      local d = m:dict { a = 1 }
      local keys = { "a", "", "bin\0ary", ("x"):rep(1000), 0, -7, math.maxinteger, 2.5, -0.5, true, false }
      for i, k in ipairs(keys) do d[k] = i end
      for i, k in ipairs(keys) do assert.are.equal(i, d[k]) end
      d[3] = 3.0
      assert.are.equal("float", math.type(d[3]))
      d[4.0] = "four"   -- a float with an integer value is the integer key, as in a Lua table
      assert.are.equal("four", d[4])
      assert.are.equal(#keys + 2, #d)
    end)

    it("has the methods of a Python dict", function()
      local m = manager()
      local d = m:dict()
      d:update { x = 1, y = 2, z = 3 }
      assert.are.equal(1, d:get("x"))
      assert.are.equal("default", d:get("nope", "default"))
      assert.is_true(d:has("y"))
      assert.is_false(d:has("nope"))
      assert.are.equal(2, d:pop("y"))
      assert.are.equal(0, d:pop("y", 0))
      assert.are.equal(1, d:setdefault("x", 100))
      assert.are.equal(100, d:setdefault("w", 100))
      local keys = d:keys()
      table.sort(keys)
      assert.are.same({ "w", "x", "z" }, keys)
      local values = d:values()
      table.sort(values)
      assert.are.same({ 1, 3, 100 }, values)
      local items = d:items()
      table.sort(items, function(a, b) return a[1] < b[1] end)
      assert.are.same({ { "w", 100 }, { "x", 1 }, { "z", 3 } }, items)
      local seen = {}
      for k, v in pairs(d) do seen[k] = v end
      assert.are.same({ w = 100, x = 1, z = 3 }, seen)
      d.x = nil
      assert.are.equal(2, #d)
      d:clear()
      assert.are.equal(0, #d)
      assert.are.same({}, d:copy())
    end)

    it("refuses a nil or NaN key with a clear error, and serves on", function()
      local m = manager()
      local d = m:dict()
      local ok, err = pcall(function() return d[nil] end)
      assert.is_false(ok)
      assert.are.equal("dict.get: key is nil", err)
      ok, err = pcall(function() d[0 / 0] = 1 end)
      assert.is_false(ok)
      assert.matches("NaN", err)
      d.ok = true
      assert.is_true(d.ok)
    end)
  end)

  describe("list", function()
    it("indexes from 1 and has append, extend, insert, remove, pop, reverse, sort, slicing", function()
      local m = manager()
      local l = m:list()
      l:append(3)
      l:extend { 1, 2 }
      l:insert(1, 10)
      l:insert(5)
      assert.are.same({ 10, 3, 1, 2, 5 }, l:copy())
      assert.are.equal(10, l[1])
      assert.are.equal(5, l[-1])
      assert.is_nil(l[6])
      assert.are.equal(5, #l)
      l[2] = 30
      l[6] = 6   -- one past the end appends
      assert.are.equal(30, l:get(2))
      assert.is_true(l:remove(30))
      assert.is_false(l:remove(999))
      assert.are.equal(6, l:pop())
      assert.are.equal(10, l:pop(1))
      assert.are.same({ 1, 2, 5 }, l:copy())
      l:extend { 4, 3 }
      l:sort()
      assert.are.same({ 1, 2, 3, 4, 5 }, l:copy())
      l:sort { reverse = true }
      assert.are.same({ 5, 4, 3, 2, 1 }, l:copy())
      l:reverse()
      assert.are.same({ 2, 3, 4 }, l:slice(2, 4))
      assert.are.same({ 4, 5 }, l:slice(-2))
      assert.are.same({}, l:slice(4, 2))
      assert.are.equal(3, l:index(3))
      assert.is_nil(l:index(99))
      l:append(3)
      assert.are.equal(2, l:count(3))
      local seen = {}
      for i, v in ipairs(l) do seen[i] = v end
      assert.are.same({ 1, 2, 3, 4, 5, 3 }, seen)
      l:clear()
      assert.are.equal(0, #l)
      assert.is_nil(l:pop())
    end)

    it("says what is wrong with an index or a value", function()
      local m = manager()
      local l = m:list { 1, 2 }
      local ok, err = pcall(function() l[5] = 1 end)
      assert.is_false(ok)
      assert.are.equal("list.set: index 5 out of range (the list has 2 items)", err)
      ok, err = pcall(function() l:append(nil) end)
      assert.is_false(ok)
      assert.are.equal("list.append: a list cannot hold nil", err)
      ok, err = pcall(function() l.x = 1 end)
      assert.is_false(ok)
      assert.matches("index must be an integer, got 'x'", err, 1, true)
      l:append("a")
      ok, err = pcall(function() l:sort() end)
      assert.is_false(ok)
      assert.matches("^list.sort: attempt to compare", err)
      assert.are.same({ 1, 2, "a" }, l:copy())
    end)
  end)

  describe("namespace, value, queue, lock, event", function()
    it("a namespace's attributes are set in one process and read in another", function()
      local m = manager()
      local ns = m:namespace { x = 1 }
      in_child(function() ns.y = "two" end)
      assert.are.equal(1, ns.x)
      assert.are.equal("two", ns.y)
      local seen = {}
      for k, v in pairs(ns) do seen[k] = v end
      assert.are.same({ x = 1, y = "two" }, seen)
    end)

    it("a value is read and written as v.value or get/set", function()
      local m = manager()
      local v = m:value(0.5)
      in_child(function() v.value = v.value * 4 end)
      assert.are.equal(2.0, v:get())
      v:set({ a = 1 })
      assert.are.same({ a = 1 }, v.value)
    end)

    it("a queue's get waits in the server for another process's put", function()
      local m = manager()
      local q = m:queue()
      local rd, wr = forage.pipe(false)
      local p = start_reaped(function() wr:send(q:get()) end)
      until_stats(m, function(s) return s.waiting == 1 end)   -- the child is parked in get
      assert.is_true(q:put({ n = 1 }))
      assert.are.same({ n = 1 }, rd:recv(10))
      assert.are.equal(0, helpers.join_or_fail(p, 10))
      local v, err, kind = q:get(0)
      assert.is_nil(v)
      assert.are.equal("timeout", kind)
      assert.are.equal("timeout", err)
      v, err, kind = q:get_nowait()
      assert.is_nil(v)
      assert.are.equal("empty", kind)
      assert.are.equal("empty", err)
    end)

    it("a bounded queue's put waits while it is full", function()
      local m = manager()
      local q = m:queue(1)
      assert.is_true(q:put("a"))
      assert.is_true(q:full())
      local _, _, kind = q:put_nowait("b")
      assert.are.equal("full", kind)
      _, _, kind = q:put("b", 0)
      assert.are.equal("timeout", kind)
      local p = start_reaped(function() assert(q:put("b")) end)
      until_stats(m, function(s) return s.waiting == 1 end)
      assert.are.equal("a", q:get())
      assert.are.equal(0, helpers.join_or_fail(p, 10))
      assert.are.equal("b", q:get(0))
      assert.are.equal(0, q:qsize())
      assert.is_true(q:empty())
    end)

    it("a lock is held by one process at a time", function()
      local m = manager()
      local lock = m:lock()
      assert.is_true(lock:acquire())
      assert.is_true(lock:locked())
      assert.is_false(in_child(function() return lock:acquire(0) end))
      local rd, wr = forage.pipe(false)
      local p = start_reaped(function() wr:send(lock:acquire()) end)
      until_stats(m, function(s) return s.waiting == 1 end)
      lock:release()
      assert.is_true(rd:recv(10))
      assert.are.equal(0, helpers.join_or_fail(p, 10))
      -- the child is gone: the lock it held was released with its connection
      assert.is_true(lock:acquire(10))
      lock:release()
      assert.are.same({ 7 }, { lock:with(function(x) return x end, 7) })
      assert.is_false(lock:locked())
      local ok, err = pcall(function() lock:release() end)
      assert.is_false(ok)
      assert.are.equal("lock.release: release unlocked lock", err)
    end)

    it("an event wakes every waiter", function()
      local m = manager()
      local ev = m:event()
      assert.is_false(ev:wait(0))
      local rd, wr = forage.pipe(false)
      local a = start_reaped(function() wr:send(ev:wait()) end)
      local b = start_reaped(function() wr:send(ev:wait(60)) end)
      until_stats(m, function(s) return s.waiting == 2 end)
      ev:set()
      assert.is_true(rd:recv(10))
      assert.is_true(rd:recv(10))
      assert.are.equal(0, helpers.join_or_fail(a, 10))
      assert.are.equal(0, helpers.join_or_fail(b, 10))
      assert.is_true(ev:is_set())
      ev:clear()
      assert.is_false(ev:is_set())
    end)
  end)

  describe("proxies travel", function()
    it("to pool tasks as arguments and as upvalues, and arrive as proxies", function()
      local m = manager()
      local d = m:dict()
      local l = m:list()
      local pool <close> = forage.pool(2)
      local results = pool:starmap(function(i, dd)
        dd[i] = i * i        -- __newindex of the proxy that arrived
        l:append(i)          -- an upvalue
        return getmetatable(dd) == require("forage.manager.proxy").Dict
      end, { { 1, d }, { 2, d }, { 3, d } })
      assert.are.same({ true, true, true }, results)
      assert.are.same({ 1, 4, 9 }, d:copy())
      local items = l:copy()
      table.sort(items)
      assert.are.same({ 1, 2, 3 }, items)
    end)

    it("a proxy is not a copy: two proxies of one object are equal", function()
      local m = manager()
      local l = m:list()
      local outer = m:list { l }
      assert.are.equal(l, outer[1])
      assert.are_not.equal(l, m:list())
      assert.matches("^forage.manager.List #%d+ %(/", tostring(l))
    end)
  end)

  describe("nested proxies and copies", function()
    it("a managed list inside a managed list (the blog's example)", function()
      local m = manager()
      local a, b = m:list(), m:list()
      a:append(b)
      assert.are.same({}, b:copy())
      b:append("hello")
      assert.are.equal("hello", a[1][1])
      assert.are.equal("hello", b[1])
      -- and from another process
      in_child(function() a[1]:append("from a child") end)
      assert.are.same({ "hello", "from a child" }, b:copy())
    end)

    it("changing a table fetched from a managed list does not write back; setting it does", function()
      local m = manager()
      local l = m:list { { count = 0 } }
      local t = l[1]
      t.count = 1
      assert.are.equal(0, l[1].count)   -- t is a copy
      l[1] = t
      assert.are.equal(1, l[1].count)
    end)

    it("a proxy inside a plain table inside a dict stays a proxy", function()
      local m = manager()
      local inner = m:dict { x = 1 }
      local d = m:dict()
      d.box = { label = "in", obj = inner }
      local box = d.box
      assert.are.equal("in", box.label)
      box.obj.x = 2
      assert.are.equal(2, inner.x)
    end)

    it("refuses a proxy of another manager", function()
      local m1, m2 = manager(), manager()
      local ok, err = pcall(function() m1:list():append(m2:list()) end)
      assert.is_false(ok)
      assert.matches("a proxy of another manager cannot be stored here", err, 1, true)
    end)
  end)

  describe("custom types", function()
    local Maths = {}
    Maths.__index = Maths
    function Maths.new() return setmetatable({ calls = 0 }, Maths) end
    function Maths:add(x, y) self.calls = self.calls + 1 return x + y end
    function Maths:mul(x, y) self.calls = self.calls + 1 return x * y end
    function Maths.fail(_, why) error("maths failed: " .. why) end
    function Maths._secret() return "secret" end
    function Maths:count() return self.calls end
    function Maths.leak() return print end

    it("the blog's Maths class: methods run on the server's instance", function()
      local m = manager { types = { Maths = Maths.new } }
      local maths = m:Maths()
      assert.are.equal(7, maths:add(4, 3))
      assert.are.equal(56, maths:mul(7, 8))
      assert.are.equal(2, maths:count())
      assert.are.equal(3, in_child(function() maths:add(1, 1) return maths:count() end))
    end)

    it("an error in a method re-raises with its message and the server's traceback", function()
      local m = manager { types = { Maths = Maths.new } }
      local maths = m:Maths()
      local ok, err = pcall(maths.fail, maths, "on purpose")
      assert.is_false(ok)
      assert.matches("manager_spec.lua:%d+: maths failed: on purpose", err)
      assert.matches("[manager server] stack traceback:", err, 1, true)
      assert.matches("\n%s*spec/manager_spec.lua:%d+: in ", err)
      assert.falsy(err:find("forage/manager", 1, true))   -- the server's own frames are left out
      assert.are.equal(7, maths:add(3, 4))   -- and it serves on
    end)

    it("nobody calls a method starting with '_', one not exposed, or one that does not exist", function()
      local m = manager { types = { Maths = Maths.new, Narrow = { new = Maths.new, exposed = { "add" } } } }
      local maths, narrow = m:Maths(), m:Narrow()
      assert.is_nil(maths._secret)   -- the proxy has no '_' methods at all
      local call = require("forage.manager.proxy").call
      local ok, err = pcall(call, maths, "_secret")
      assert.is_false(ok)
      assert.are.equal("bad request: method names starting with '_' cannot be called", err)
      ok, err = pcall(narrow.mul, narrow, 2, 3)
      assert.is_false(ok)
      assert.are.equal("Narrow does not expose 'mul'", err)
      assert.are.equal(5, narrow:add(2, 3))
      ok, err = pcall(maths.nope, maths)
      assert.is_false(ok)
      assert.are.equal("Maths has no method 'nope'", err)
      ok, err = pcall(maths.leak, maths)
      assert.is_false(ok)
      assert.matches("^the result cannot travel: value%[3%]: cannot send function in data mode", err)
      ok, err = pcall(maths.add, maths, print, 1)
      assert.is_false(ok)
      assert.matches("^Maths.add: .*cannot send function in data mode", err)
    end)

    it("says which constructor or option is wrong", function()
      local ok, err = pcall(forage.manager, { types = { Maths = 42 } })
      assert.is_false(ok)
      assert.matches("option 'types.Maths' must be a constructor function", err, 1, true)
      ok, err = pcall(forage.manager, { types = { dict = Maths.new } })
      assert.is_false(ok)
      assert.matches("'dict' is a name forage.manager already has", err, 1, true)
      ok, err = pcall(forage.manager, { typez = {} })
      assert.is_false(ok)
      assert.matches("forage.manager: unknown option 'typez'", err, 1, true)
      ok, err = pcall(forage.manager, { address = "127.0.0.1:0" })
      assert.is_false(ok)
      assert.matches("option 'authkey' is required with a TCP address", err, 1, true)
      local m = manager { types = { Number = function() return 42 end } }
      ok, err = pcall(function() return m:Number() end)
      assert.is_false(ok)
      assert.are.equal("Number: the constructor returned a number, not an object", err)
    end)
  end)

  describe("remote managers", function()
    local AUTH = "abracadabra"

    it("the blog's remote queue: one client puts, another gets", function()
      local queue = forage.manager.Queue()   -- a server-side queue: the server's copy is served
      local server = manager { address = "127.0.0.1:0", authkey = AUTH,
        types = { get_queue = function() return queue end } }
      server:start()
      local address = server.address
      assert.matches("^127%.0%.0%.1:%d+$", address)
      in_child(function()
        local m = assert(forage.manager.connect { address = address, authkey = AUTH, types = { "get_queue" } })
        m:get_queue():put("hello")
      end)
      local got = in_child(function()
        local m = assert(forage.manager.connect { address = address, authkey = AUTH, types = { "get_queue" } })
        return m:get_queue():get(10)
      end)
      assert.are.equal("hello", got)
    end)

    it("a server that is also a client: a worker of its own puts, a remote client gets", function()
      local queue = forage.manager.Queue()
      local server = manager { address = "127.0.0.1:0", authkey = AUTH,
        types = { get_queue = function() return queue end } }
      server:start()
      local q = server:get_queue()            -- this process is a client of its own server
      assert.are.equal(q, server:get_queue())  -- one queue, however often it is asked for
      local w = start_reaped(function() q:put("local hello") end)
      assert.are.equal(0, helpers.join_or_fail(w, 10))
      local address = server.address
      assert.are.equal("local hello", in_child(function()
        local c = assert(forage.manager.connect { address = address, authkey = AUTH, types = { "get_queue" } })
        return c:get_queue():get(10)
      end))
    end)

    it("serve() serves in the process that calls it, at the address listen() bound", function()
      local rd, wr = forage.pipe(false)
      local p = start_reaped(function()
        local m = forage.manager { address = "127.0.0.1:0", authkey = AUTH,
          types = { Echo = function() return { echo = function(_, x) return x end } end } }
        wr:send(m:listen())
        m:serve()
      end)
      local address = rd:recv(10)
      local c = assert(forage.manager.connect { address = address, authkey = AUTH, types = { "Echo" } })
      assert.are.same({ 1, { 2 } }, c:Echo():echo { 1, { 2 } })
      local d = c:dict()
      d.x = 1
      assert.are.equal(1, d.x)
      c:close()
      p:kill()
      helpers.join_or_kill(p, 5)
    end)

    it("proxies outlive the connected manager they came from (collected or not)", function()
      local m = manager { address = "127.0.0.1:0", authkey = AUTH }
      m:start()
      local c = assert(forage.manager.connect { address = m.address, authkey = AUTH })
      local d = c:dict()
      d.x = 1
      local connections = m:stats().connections
      c = nil   -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      d.x = 2   -- on the same connection: collecting c closed nothing a proxy uses
      assert.are.equal(2, d.x)
      assert.are.equal(connections, m:stats().connections)
    end)

    it("a wrong authkey is refused with a clear error and counted by the server", function()
      local m = manager { address = "127.0.0.1:0", authkey = AUTH }
      m:start()
      local c, err, kind = forage.manager.connect { address = m.address, authkey = "wrong" }
      assert.is_nil(c)
      assert.are.equal("auth", kind)
      assert.are.equal("manager at " .. m.address .. ": refused: authentication failed: wrong authkey", err)
      assert.falsy(err:find("wrong\"", 1, true))
      assert.are.equal(1, m:stats().auth_failures)
      assert.truthy(forage.manager.connect { address = m.address, authkey = AUTH })
    end)

    it("a client that cannot reach the server gets nil, message, kind", function()
      local dir = helpers.make_dir("manager")
      helpers.on_exit(finally, function() os.execute("rm -rf '" .. dir .. "'") end)
      local c, err, kind = forage.manager.connect { address = dir .. "/none.sock", authkey = AUTH }
      assert.is_nil(c)
      assert.are.equal("connect", kind)
      assert.matches("^manager at .*/none.sock is not reachable: connect ", err)
    end)
  end)

  describe("when a process dies", function()
    it("a dead server gives every proxy call a clear error, not a hang", function()
      local m = manager()
      local d = m:dict()
      local q = m:queue()
      d.x = 1
      local rd, wr = forage.pipe(false)
      local p = start_reaped(function()
        local ok, err = pcall(q.get, q)   -- parked in the server when it dies
        wr:send({ ok, err })
      end)
      until_stats(m, function(s) return s.waiting == 1 end)
      m.process:kill()
      m.process:join(10)
      local r = rd:recv(10)
      assert.is_false(r[1])
      assert.matches("^manager closed: .* %(Queue.get%)$", r[2])
      assert.are.equal(0, helpers.join_or_fail(p, 10))
      local ok, err = pcall(function() return d.x end)
      assert.is_false(ok)
      assert.matches("^manager closed", err)
      ok, err = pcall(function() return d.x end)   -- and again: the connection cannot be made
      assert.is_false(ok)
      assert.matches("is not reachable", err, 1, true)
    end)

    it("a client killed mid-call leaves the server serving the others, and nothing is lost", function()
      local m = manager()
      local q = m:queue()
      local lock = m:lock()
      local p = start_reaped(function()
        assert(lock:acquire())
        q:get()   -- parks for ever
      end)
      until_stats(m, function(s) return s.waiting == 1 end)
      assert.is_false(lock:acquire(0))
      p:kill()
      p:join(10)
      until_stats(m, function(s) return s.clients == 1 end)   -- only this process is left
      q:put("kept")
      assert.are.equal("kept", q:get_nowait())   -- the dead client's get took nothing
      assert.is_true(lock:acquire(0))           -- its lock was released
    end)

    it("a call that gets no reply in time raises, and the next call works", function()
      local rd, wr = forage.pipe(false)
      local m = manager { timeout = 0.2, types = { Gate = function()
        return { wait = function() return rd:recv() end, ping = function() return "pong" end }
      end } }
      local gate = m:Gate()
      local ok, err = pcall(gate.wait, gate)   -- the server waits on the pipe: no reply comes
      assert.is_false(ok)
      assert.matches("^manager call Gate.wait timed out after 0.2 s", err)
      wr:send("go")
      assert.are.equal("pong", gate:ping())
    end)
    it("forage.manager.timeout gives one proxy its own call timeout", function()
      local rd, wr = forage.pipe(false)
      local m = manager { types = { Gate = function()
        return { wait = function() return rd:recv() end, ping = function() return "pong" end }
      end } }
      local gate = m:Gate()
      local quick = forage.manager.timeout(gate, 0.1)
      assert.are.equal(gate, quick)   -- the same object
      local ok, err = pcall(quick.wait, quick)
      assert.is_false(ok)
      assert.matches("^manager call Gate.wait timed out after 0.1 s", err)
      wr:send("go")
      assert.are.equal("pong", gate:ping())   -- the manager's proxy keeps waiting for ever
      ok, err = pcall(forage.manager.timeout, gate, -1)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'timeout' (timeout must be nil or a non-negative number of seconds, got -1)",
        err, 1, true)
      ok, err = pcall(forage.manager.timeout, {}, 1)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'timeout' (a manager's proxy expected, got table)", err, 1, true)
    end)
  end)

  describe("bad input to the server", function()
    it("a client that says nothing is dropped after the handshake timeout", function()
      local m = manager { handshake_timeout = 0.05 }
      local conn = assert(core.connect(m.address))
      conn:limits { code = false }
      local hi = conn:recv(10)
      assert.are.equal(protocol.GREETING, hi[1])
      local refused = conn:recv(10)
      assert.are.same({ "refused", "handshake timed out" }, refused)
      assert.are.equal("closed", select(3, conn:recv(10)))
      assert.are.equal(1, m:stats().handshake_timeouts)
    end)

    it("malformed requests get an error each and the connection serves on", function()
      local m = manager()
      local d = m:dict { x = 1 }
      local conn = raw_client(m)
      local function ask(req)
        assert(conn:send(req))
        return conn:recv(10)
      end
      assert.are.same({ protocol.FAILED, "bad request: a request must be a table, got string" }, ask("hi"))
      assert.are.same({ protocol.FAILED, "bad request: a request's object must be an id" }, ask({ "x", "get", 0 }))
      assert.are.same({ protocol.FAILED, "bad request: a request's 'r' must be true" },
        ask({ rawget(d, "_id"), "get", 1, "x", r = 1 }))
      assert.are.same({ protocol.OK, 1, 1 }, ask({ rawget(d, "_id"), "get", 1, "x", extra = 1 }))   -- ignored
      assert.are.same({ protocol.FAILED, "no object #999 on this server" }, ask({ 999, "get", 0 }))
      assert.are.same({ protocol.FAILED, "Dict has no method 'append'" }, ask({ rawget(d, "_id"), "append", 0 }))
      assert.are.same({ protocol.FAILED, "no type 'nope' on this manager" }, ask({ 0, "create", 1, "nope" }))
      assert.are.same({ protocol.FAILED, "no object #77 on this server" },
        ask({ rawget(d, "_id"), "set", 2, "k", { [protocol.REF] = 77 }, r = true }))
      -- a function cannot be decoded in data mode: an error, and the next frame is read
      conn:limits { code = true }
      assert(conn:send({ rawget(d, "_id"), "set", 2, "f", function() end }))
      conn:limits { code = false }
      local r = conn:recv(10)
      assert.are.equal(protocol.FAILED, r[1])
      assert.matches("^bad request: wire: functions or named values in data mode", r[2])
      assert.are.same({ protocol.OK, 1, 1 }, ask({ rawget(d, "_id"), "get", 1, "x" }))
      assert.are.equal(1, d.x)
    end)

    it("a frame over the limit closes that connection only, counted", function()
      local m = manager { max_frame = 1024 }
      local d = m:dict()
      -- an honest client knows the limit from the handshake and refuses to send
      local ok, err = pcall(function() d.big = ("x"):rep(4096) end)
      assert.is_false(ok)
      assert.matches("over the limit of 1024", err, 1, true)
      -- a client that sends anyway is cut off
      local conn = raw_client(m)
      conn:limits { max_frame = 1 << 20 }
      assert(conn:send({ rawget(d, "_id"), "set", 2, "big", ("x"):rep(4096) }))
      assert.are.equal("closed", select(3, conn:recv(10)))
      assert.are.equal(1, m:stats().refused_frames)
      d.small = 1
      assert.are.equal(1, d.small)
    end)

    it("before the handshake a frame may have 4 KiB at most", function()
      local m = manager()
      local conn = assert(core.connect(m.address))
      conn:limits { code = false }
      conn:recv(10)
      assert(conn:send({ "hello", protocol.VERSION, ("x"):rep(8192), ("\0"):rep(32) }))
      assert.are.equal("closed", select(3, conn:recv(10)))
      assert.are.equal(1, m:stats().refused_frames)
    end)

    it("connections over the server's limit are closed at once, counted; the others are served", function()
      local server = require "forage.manager.server"
      local saved = server.MAX_CLIENTS
      server.MAX_CLIENTS = 2   -- the server process is forked with this
      helpers.on_exit(finally, function() server.MAX_CLIENTS = saved end)
      local m = manager()
      server.MAX_CLIENTS = saved
      local d = m:dict()   -- this process's connection: one
      local other = raw_client(m)   -- two
      local third = assert(core.connect(m.address))
      assert.are.equal("closed", select(3, third:recv(10)))
      assert.are.equal(1, m:stats().dropped)
      d.x = 1
      assert(other:send({ rawget(d, "_id"), "get", 1, "x" }))
      assert.are.same({ protocol.OK, 1, 1 }, other:recv(10))
    end)

    it("a client that only pretends to be one is refused at the handshake", function()
      local m = manager()
      local conn = assert(core.connect(m.address))
      conn:limits { code = false }
      conn:recv(10)
      assert(conn:send({ "hello", protocol.VERSION, ("\0"):rep(32), ("\0"):rep(32) }))
      assert.are.same({ "refused", "authentication failed: wrong authkey" }, conn:recv(10))
      assert.are.equal(1, m:stats().auth_failures)
    end)
  end)

  -- Attacks that the server already withstands: kept so that they go on holding.
  describe("attacks that hold", function()
    -- The fds the server process has open now (its listener, its clients' sockets, ...).
    local function server_fds(m)
      local n = 0
      for _ in io.popen("ls /proc/" .. m.process.pid .. "/fd"):lines() do n = n + 1 end
      return n
    end

    it("a dead server raises manager closed in every parked get, acquire and wait", function()
      local m = manager()
      local q, lock, ev = m:queue(), m:lock(), m:event()
      assert.is_true(lock:acquire())
      local rd, wr = forage.pipe(false)
      local calls = { get = function() return q:get() end, acquire = function() return lock:acquire() end,
        wait = function() return ev:wait() end }
      for _, name in ipairs { "get", "acquire", "wait", "get", "acquire", "wait" } do
        start_reaped(function()
          local ok, err = pcall(calls[name])
          wr:send({ name, ok, err })
        end)
      end
      until_stats(m, function(s) return s.waiting == 6 end)
      m.process:kill()
      m.process:join(10)
      local types = { get = "Queue.get", acquire = "Lock.acquire", wait = "Event.wait" }
      for _ = 1, 6 do
        local r = rd:recv(10)
        assert(r, "a parked call never heard that the server died")
        assert.is_false(r[2])
        assert.are.equal("manager closed: " .. m.address .. " (" .. types[r[1]] .. ")", r[3])
      end
    end)

    it("requests pipelined behind a parked get are answered after it, in order", function()
      local m = manager()
      local q, d = m:queue(), m:dict { x = 1 }
      local conn = raw_client(m)
      assert(conn:send({ rawget(q, "_id"), "get", 0 }))   -- parks
      until_stats(m, function(s) return s.waiting == 1 end)
      assert(conn:send({ rawget(q, "_id"), "qsize", 0 }))
      assert(conn:send({ rawget(d, "_id"), "get", 1, "x" }))
      q:put("item")   -- from this process's own connection
      assert.are.same({ protocol.OK, 1, "item" }, conn:recv(10))
      assert.are.same({ protocol.OK, 1, 0 }, conn:recv(10))
      assert.are.same({ protocol.OK, 1, 1 }, conn:recv(10))
    end)

    it("cycles and shared tables keep their shape; a proxy inside a cycle stays a proxy", function()
      local m = manager()
      local d, inner = m:dict(), m:list { "in" }
      local shared = { n = 1 }
      local v = { a = shared, b = shared, obj = inner }
      v.self = v
      d.v = v
      local got = d.v
      assert.are.equal(got, got.self)
      assert.are.equal(got.a, got.b)
      assert.are.equal(inner, got.obj)
      assert.are.equal("in", got.obj[1])
      d.me = d   -- an object stored in itself
      assert.are.equal(d, d.me.me)
    end)

    it("a value nested past the wire's limit is refused with a clear error, and the connection serves on", function()
      local m = manager()
      local d = m:dict()
      local deep = {}
      local at = deep
      for _ = 1, 1000 do
        at.x = {}
        at = at.x
      end
      local ok, err = pcall(function() d.deep = deep end)
      assert.is_false(ok)
      assert.matches("^Dict.set: .*nested deeper than %d+ levels$", err)
      d.ok = true
      assert.is_true(d.ok)
    end)

    it("odd keys and values round-trip: mininteger, huge floats, NaN, binary strings", function()
      local m = manager()
      local d, l = m:dict(), m:list()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      bytes = table.concat(bytes)
      d[math.mininteger] = "min"
      d[2 ^ 63] = "big float"
      d[bytes] = bytes
      d.nan = 0 / 0
      d.inf = -math.huge
      assert.are.equal("min", d[math.mininteger])
      assert.are.equal("big float", d[2 ^ 63])
      assert.are.equal(bytes, d[bytes])
      local nan = d.nan
      assert.is_true(nan ~= nan)
      assert.are.equal(-math.huge, d.inf)
      l:extend { 1, 2, 3 }
      assert.is_nil(l[math.mininteger])
      local ok, err = pcall(function() l[math.mininteger] = 1 end)
      assert.is_false(ok)
      assert.are.equal("list.set: index -9223372036854775808 out of range (the list has 3 items)", err)
      assert.are.same({ 1, 2, 3 }, l:slice(math.mininteger, math.maxinteger))
    end)

    it("a method that returns its own object gives a proxy equal to the caller's", function()
      local Box = {}
      Box.__index = Box
      function Box:me() return self end
      function Box.other() return setmetatable({ n = 2 }, Box) end   -- never served: a copy
      local m = manager { types = { Box = function() return setmetatable({ n = 1 }, Box) end } }
      local box = m:Box()
      local me = box:me()
      assert.are.equal(box, me)
      assert.are.equal(box, me:me())
      local other = box:other()
      assert.are.same({ n = 2 }, other)
      assert.is_nil(getmetatable(other))
    end)

    it("a type constructor that raises is that caller's error; the server serves on", function()
      local m = manager { types = { Broken = function() error("cannot build") end } }
      local ok, err = pcall(function() return m:Broken() end)
      assert.is_false(ok)
      assert.matches("cannot build", err, 1, true)
      assert.are.equal(0, m:stats().objects)
      assert.truthy(m:dict())
    end)

    it("clients that never authenticate and send garbage are refused and leave no fd behind", function()
      local m = manager()
      local d = m:dict { x = 1 }   -- this process's connection, open for the count
      local before = server_fds(m)
      for _, junk in ipairs { "hello", 42, { "hello" }, { "hello", protocol.VERSION }, { "hello", 99, "x", "y" },
        ("\0"):rep(1000) } do
        local conn = assert(core.connect(m.address))
        conn:limits { code = false }
        assert.are.equal(protocol.GREETING, conn:recv(10)[1])
        assert(conn:send(junk))
        assert.are.equal("refused", conn:recv(10)[1])
        assert.are.equal("closed", select(3, conn:recv(10)))
        conn:close()
      end
      for _ = 1, 20 do   -- connected, then gone without a word
        assert(core.connect(m.address)):close()
      end
      for _ = 1, 5000 do
        if server_fds(m) == before then break end
        forage.sleep(0.002)
      end
      assert.are.equal(before, server_fds(m))
      assert.are.equal(6, m:stats().auth_failures)
      assert.are.equal(1, d.x)
    end)

    it("hundreds of processes at once each get their own connection, and all go away", function()
      local m = manager()
      local d = m:dict()
      local procs = {}
      for i = 1, 200 do
        procs[i] = start_reaped(function()
          for k = 1, 5 do d[i * 10 + k] = k end
        end)
      end
      for _, p in ipairs(procs) do assert.are.equal(0, helpers.join_or_fail(p, 60)) end
      assert.are.equal(1000, #d)
      local s = until_stats(m, function(st) return st.clients == 1 end)
      assert.are.equal(201, s.connections)
    end)
  end)
  describe("what an attack found, fixed", function()
    it("a request parked behind one that times out does not kill the server", function()
      local m = manager()
      local q = m:queue()
      local conn = raw_client(m)
      assert(conn:send({ rawget(q, "_id"), "get", 1, 0.01 }))   -- parks, expires in the server's expire()
      assert(conn:send({ rawget(q, "_id"), "get", 1, 60 }))     -- pending; parks while expire() walks the waiters
      assert.are.equal(protocol.OK, conn:recv(10)[1])
      q:put("x")                                               -- the server must still be there to take it
      assert.are.same({ protocol.OK, 1, "x" }, conn:recv(10))
    end)

    it("a lock freed by its holder's death is handed on even when its first waiter died too", function()
      local rd, wr = forage.pipe(false)
      local entered_rd, entered_wr = forage.pipe(false)
      local m = manager { types = { Gate = function()
        return { hold = function() entered_wr:send(true) return rd:recv(10) end }
      end } }
      local lock, gate = m:lock(), m:Gate()
      local id = rawget(lock, "_id")
      local holder, w1, w2 = raw_client(m), raw_client(m), raw_client(m)
      assert(holder:send({ id, "acquire", 0 }))
      assert.is_true(holder:recv(10)[3])
      assert(w1:send({ id, "acquire", 0 }))
      until_stats(m, function(s) return s.waiting == 1 end)
      assert(w2:send({ id, "acquire", 1, 60 }))
      until_stats(m, function(s) return s.waiting == 2 end)
      local busy = start_reaped(function() gate:hold() end)   -- the server is held in a method...
      assert.is_true(entered_rd:recv(10))                      -- it is in the method now
      holder:close()
      w1:close()                                               -- ...while both go
      wr:send("go")
      assert.are.equal(0, helpers.join_or_fail(busy, 10))
      assert.are.same({ protocol.OK, 1, true }, w2:recv(10))
    end)

    it("a process killed holding a lock releases it even when a child it forked lives on", function()
      local m = manager()
      local lock = m:lock()
      local rd, wr = forage.pipe(false)
      local holder = start_reaped(function()
        assert(lock:acquire())
        local child = forage.process(function() forage.sleep(60) end):start()   -- inherits the connection
        wr:send(child.pid)
        forage.sleep(60)
      end)
      local child_pid = rd:recv(10)
      helpers.on_exit(finally, function() os.execute("kill -9 " .. child_pid) end)
      holder:kill()
      holder:join(10)
      assert.is_true(lock:acquire(10))
    end)

    it("the server survives Ctrl-C (SIGINT to the process group), as Python's does", function()
      local m = manager()
      local d = m:dict { x = 1 }
      os.execute("kill -INT " .. m.process.pid)
      assert.are.equal(1, d.x)
    end)

    it("a call that times out does not release the locks this process holds", function()
      local rd, wr = forage.pipe(false)
      local m = manager { types = { Slow = function() return { work = function() return rd:recv(10) end } end } }
      local lock, slow = m:lock(), m:Slow()
      assert.is_true(lock:acquire())
      local quick = forage.manager.timeout(slow, 0.05)
      assert.is_false(pcall(quick.work, quick))
      wr:send("done")
      assert.is_true(lock:locked())
      assert.is_false(forage.process(function() os.exit(lock:acquire(0) and 0 or 1) end):start():join(10) == 0)
    end)

    it("update/extend with a proxy of a dict/list copy its items (Python's d.update(other_proxy))", function()
      local m = manager()
      local d1, d2 = m:dict { a = 1 }, m:dict { b = 2 }
      d1:update(d2)
      assert.are.same({ a = 1, b = 2 }, d1:copy())
      local l1, l2 = m:list { 1 }, m:list { 2, 3 }
      l1:extend(l2)
      assert.are.same({ 1, 2, 3 }, l1:copy())
    end)

    it("a user's method raising an error object with a failing __tostring does not kill the server", function()
      local m = manager { types = { T = function()
        return { bad = function() error(setmetatable({}, { __tostring = function() error("no text") end })) end }
      end } }
      local t = m:T()
      assert.is_false(pcall(t.bad, t))
      assert.truthy(m:dict())
    end)

    it("a proxy keeps its manager (and so its server) alive, as Python's proxies do", function()
      local d = (function() return forage.manager():dict { n = 1 } end)()
      collectgarbage()
      collectgarbage()
      assert.are.equal(1, d.n)
    end)

    it("a method of one's own may wait on a server-side queue without holding up the others", function()
      local q = forage.manager.Queue()
      local m = manager { types = { Jobs = function()
        return { take = function(_, t) return q:get(t) end, give = function(_, v) return q:put(v) end }
      end } }
      local jobs = m:Jobs()
      assert.are.same({ nil, "timeout", "timeout" }, { jobs:take(0) })
      local rd, wr = forage.pipe(false)
      local taker = start_reaped(function() wr:send(jobs:take()) end)
      until_stats(m, function(s) return s.waiting == 1 end)   -- parked in the server, which serves on
      assert.is_true(jobs:give("job 1"))
      assert.are.equal("job 1", rd:recv(10))
      assert.are.equal(0, helpers.join_or_fail(taker, 10))
    end)

    it("before the handshake a client cannot make the server buffer a big frame", function()
      local m = manager()   -- max_frame 64 MiB, for clients that proved they know the key
      local conn = assert(core.connect(m.address))
      conn:limits { code = false }
      assert.are.equal(protocol.GREETING, conn:recv(10)[1])
      conn:send(("x"):rep(16 * 1024 * 1024))   -- no key needed to send this (may be cut off: "closed")
      assert.are.equal("closed", select(3, conn:recv(10)))
      assert.are.equal(1, m:stats().refused_frames)    -- refused from its header, never buffered
    end)
    it("a built-in object a method makes and returns comes back as a proxy, served from then on", function()
      local m = manager { types = { Factory = function()
        return { make = function() return forage.manager.List { 1, 2 } end }
      end } }
      local l = m:Factory():make()
      assert.are.equal("forage.manager.List", getmetatable(l).__name)
      l:append(3)
      assert.are.same({ 1, 2, 3 }, l:copy())
    end)

    it("l[#l] = nil and table.remove take the last item out, as on a table", function()
      local m = manager()
      local l = m:list { 1, 2, 3 }
      l[#l] = nil
      assert.are.same({ 1, 2 }, l:copy())
      assert.are.equal(2, table.remove(l))
      assert.are.same({ 1 }, l:copy())
      local ok, err = pcall(function() l[5] = nil end)
      assert.is_false(ok)
      assert.are.equal("list.set: a list cannot hold nil (pop or remove takes an item out)", err)
    end)

    it("a method called with '.' or given a function says so in the caller's words", function()
      local m = manager()
      local d = m:dict()
      local ok, err = pcall(function() return d.get("x") end)
      assert.is_false(ok)
      assert.matches("call a proxy's methods with ':' (p:get(...)), not '.'", err, 1, true)
      ok, err = pcall(function() d:set("f", print) end)
      assert.is_false(ok)
      assert.matches("Dict.set: argument #2: cannot send", err, 1, true)
    end)

  end)
end)
