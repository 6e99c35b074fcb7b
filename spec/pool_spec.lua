local forage = require "forage"
local helpers = require "helpers"

local function square(x) return x * x end

describe("forage.pool", function()
  local pool
  before_each(function() pool = forage.pool(2) end)
  after_each(function() pool:terminate() end)

  describe("map and starmap", function()
    it("maps in order, with the default chunking", function()
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local r, n = pool:map(square, list)
      assert.equal(1000, n)
      for i = 1, 1000 do assert.equal(i * i, r[i]) end
    end)

    it("maps an iterator function and an explicit chunk size", function()
      local i = 0
      local r = pool:map(square, function() i = i + 1 if i <= 10 then return i end end, 3)
      assert.same({ 1, 4, 9, 16, 25, 36, 49, 64, 81, 100 }, r)
    end)

    it("maps an empty list", function()
      local r, n = pool:map(square, {})
      assert.same({}, r)
      assert.equal(0, n)
    end)

    it("starmaps argument lists", function()
      local r = pool:starmap(function(a, b) return a * b end, { { 1, 1 }, { 2, 2 }, { 3, 3 } })
      assert.same({ 1, 4, 9 }, r)
    end)

    it("keeps integers and floats apart through workers", function()
      local r = pool:map(function(x) return x end, { 3, 3.0 })
      assert.equal("integer", math.type(r[1]))
      assert.equal("float", math.type(r[2]))
    end)

    it("raises the first failing item's error with its index and the worker's traceback", function()
      local ok, err = pcall(pool.map, pool, function(x)
        if x == 7 then error("seven is bad") end
        return x
      end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 2)
      assert.is_false(ok)
      assert.equal(7, err.item)
      assert.truthy(err.message:find("seven is bad", 1, true))
      assert.truthy(err.traceback:find("stack traceback", 1, true))
      assert.truthy(tostring(err):find("item 7 failed in worker", 1, true))
    end)

    it("refuses a bad chunk size and a bad iterable with clear messages", function()
      assert.has_error(function() pool:map(square, { 1 }, 0) end,
        "bad argument #3 to 'map' (chunk size must be a positive integer, got 0)")
      assert.has_error(function() pool:map(square, 42) end,
        "bad argument #2 to 'map' (table or function expected, got number)")
      assert.has_error(function() pool:map(42, {}) end, "bad argument #1 to 'map' (function expected, got number)")
    end)
  end)

  describe("imap and imap_unordered", function()
    it("imap yields (index, result) in order, nil results included", function()
      local got = {}
      for i, r in pool:imap(function(x) if x % 2 == 0 then return nil end return x end, { 1, 2, 3, 4, 5 }) do
        got[#got + 1] = { i, r }
      end
      assert.same({ { 1, 1 }, { 2, nil }, { 3, 3 }, { 4, nil }, { 5, 5 } }, got)
    end)

    it("imap_unordered yields every result once", function()
      local seen, count = {}, 0
      for i, r in pool:imap_unordered(square, function()
        count = count + 1
        if count <= 500 then return count end
      end, 7) do
        assert.is_nil(seen[i])
        seen[i] = r
      end
      for i = 1, 500 do assert.equal(i * i, seen[i]) end
    end)

    it("is lazy over a huge iterator: only a window is pulled ahead", function()
      local pulled = 0
      local it = pool:imap(square, function() pulled = pulled + 1 return pulled end)
      for _ = 1, 10 do it() end
      assert.is_true(pulled < 10000, "pulled " .. pulled)
    end)

    it("raises an item's error at its place in the sequence", function()
      local got = {}
      local ok, err = pcall(function()
        for i, r in pool:imap(function(x) if x == 3 then error("three") end return x end, { 1, 2, 3, 4 }) do
          got[i] = r
        end
      end)
      assert.is_false(ok)
      assert.same({ 1, 2 }, got)
      assert.equal(3, err.item)
    end)
  end)

  describe("apply and AsyncResult", function()
    it("apply runs a function with arguments in a worker", function()
      local pid = pool:apply(function(a, b) return { a + b, forage.getpid() } end, { 20, 22 })
      assert.equal(42, pid[1])
      assert.are_not.equal(forage.getpid(), pid[2])
    end)

    it("apply_async gives an AsyncResult with get, wait, ready, successful", function()
      local r = pool:apply_async(function(x) helpers.spin(0.2) return x end, { "late" })
      assert.is_false(r:ready())
      assert.has_error(function() r:successful() end, "forage.pool: result is not ready")
      local v, err = r:get(0.01)
      assert.is_nil(v)
      assert.equal("timeout", err)
      assert.is_true(r:wait(5))
      assert.is_true(r:ready())
      assert.is_true(r:successful())
      assert.equal("late", r:get())
    end)

    it("runs on_done and on_error in the parent", function()
      local parent = forage.getpid()
      local done, failed
      pool:apply_async(function() return 1 end, {}, { on_done = function(v) done = { v, forage.getpid() } end })
      pool:apply_async(function() error("nope") end, {}, { on_error = function(e) failed = { e, forage.getpid() } end })
      assert.is_true(pool:drain(5))
      assert.same({ 1, parent }, done)
      assert.equal(parent, failed[2])
      assert.truthy(failed[1].message:find("nope", 1, true))
    end)

    it("map_async and starmap_async call back with the whole list", function()
      local got
      local r = pool:map_async(square, { 1, 2, 3 }, nil, { on_done = function(v) got = v end })
      assert.same({ 1, 4, 9 }, r:get(5))
      assert.same({ 1, 4, 9 }, got)
      assert.same({ 2, 12 }, pool:starmap_async(function(a, b) return a * b end, { { 1, 2 }, { 3, 4 } }):get(5))
    end)

    it("apply and apply_async's get return every value the task returns", function()
      local hrefs, titles = pool:apply(function() return { "/a", "/b" }, { "A", "B" } end)
      assert.same({ "/a", "/b" }, hrefs)
      assert.same({ "A", "B" }, titles)
      local n = select("#", pool:apply(function() return 1, nil, 3, nil end))
      assert.equal(4, n)
      assert.same({ 1, nil, 3 }, { pool:apply(function() return 1, nil, 3 end) })
      assert.equal(0, select("#", pool:apply(function() end)))
      local r = pool:apply_async(function(a, b) return b, a end, { "x", "y" })
      local first, second = r:get(10)
      assert.equal("y", first)
      assert.equal("x", second)
    end)

    it("on_done receives every value of an apply", function()
      local got
      pool:apply_async(function() return "hrefs", nil, "titles" end, {},
        { on_done = function(...) got = table.pack(...) end })
      assert.is_true(pool:drain(10))
      assert.same({ n = 3, "hrefs", nil, "titles" }, got)
    end)

    it("map, starmap and imap keep one value per item", function()
      local function two(x) return x, "extra" end
      assert.same({ 1, 2, 3 }, pool:map(two, { 1, 2, 3 }))
      assert.same({ 1, 2 }, pool:starmap(two, { { 1 }, { 2 } }))
      local got = {}
      for i, v, extra in pool:imap(two, { 1, 2 }) do got[i] = { v, extra } end
      assert.same({ { 1 }, { 2 } }, got)
      local whole
      pool:map_async(two, { 5 }, nil, { on_done = function(...) whole = table.pack(...) end })
      assert.is_true(pool:drain(10))
      assert.same({ n = 1, { 5 } }, whole)
    end)

    it("passes nil arguments in the middle of an argument list", function()
      assert.equal("nil 3", pool:apply(function(a, b) return tostring(a) .. " " .. b end, table.pack(nil, 3)))
    end)

    it("refuses a userdata argument, naming where it sits", function()
      local f = io.tmpfile()
      assert.has_error(function() pool:apply(function() end, { 1, { conn = f } }) end,
        "args[2].conn: cannot send userdata (FILE*)")
      f:close()
    end)

    it("sends a function defined after the pool started, with its upvalues", function()
      local offset = 1000
      local function late(x) return x + offset end
      assert.same({ 1001, 1002 }, pool:map(late, { 1, 2 }))
      offset = 2000
      assert.same({ 2001 }, pool:map(late, { 1 }))
    end)

    it("fails clearly when an upvalue cannot travel", function()
      local handle = io.tmpfile()
      local function uses_handle() return handle end
      assert.has_error(function() pool:apply(uses_handle, {}) end,
        "function<upvalue handle>: cannot send userdata (FILE*)")
      handle:close()
    end)
  end)

  describe("completion", function()
    it("pending and drain count tasks that callbacks submit", function()
      local details = {}
      local function detail(x) return x * 10 end
      local function list_page(n) local out = {} for i = 1, n do out[i] = i end return out end
      pool:apply_async(list_page, { 5 }, {
        on_done = function(ids)
          for _, id in ipairs(ids) do
            pool:apply_async(detail, { id }, { on_done = function(v) details[#details + 1] = v end })
          end
        end,
      })
      assert.equal(1, pool:pending())
      assert.is_true(pool:drain(10))
      assert.equal(0, pool:pending())
      table.sort(details)
      assert.same({ 10, 20, 30, 40, 50 }, details)
    end)

    it("a callback that raises loses no other result", function()
      local got = {}
      for i = 1, 20 do
        pool:apply_async(function(x) return x end, { i }, { on_done = function(v)
          if v == 5 then error("callback failed on 5") end
          got[#got + 1] = v
        end })
      end
      local ok, err = pcall(pool.drain, pool, 10)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("callback failed on 5", 1, true))
      assert.is_true(pool:drain(10))
      assert.equal(0, pool:pending())
      assert.equal(19, #got)
    end)

    it("drain with a timeout returns nil, 'timeout' while work remains", function()
      pool:apply_async(function() helpers.spin(0.3) end, {})
      local ok, err = pool:drain(0.01)
      assert.is_nil(ok)
      assert.equal("timeout", err)
      assert.is_true(pool:drain(5))
    end)
  end)

  describe("closing", function()
    it("close stops new tasks; join waits for the submitted ones", function()
      local r = pool:apply_async(function() helpers.spin(0.1) return "done" end, {})
      pool:close()
      assert.has_error(function() pool:apply(square, { 1 }) end, "pool is closed: no new tasks")
      assert.is_true(pool:join())
      assert.equal("done", r:get())
      assert.is_true(pool:join())
    end)

    it("join before close is an error", function()
      assert.has_error(function() pool:join() end,
        "forage.pool: pool is still open: call close() or terminate() before join()")
    end)

    it("terminate fails the unfinished results and leaves no worker", function()
      local pids = pool:pids()
      local r = pool:apply_async(function() helpers.spin(5) end, {})
      pool:terminate()
      assert.is_true(r:ready())
      assert.is_false(r:successful())
      assert.equal("pool terminated", r.err.message)
      for _, pid in ipairs(pids) do assert.is_false(helpers.exists(pid)) end
    end)

    it("a <close> variable closes and joins at the end of the scope", function()
      local pids
      do
        local p <close> = forage.pool(2)
        pids = p:pids()
        assert.same({ 1, 4 }, p:map(square, { 1, 2 }))
      end
      for _, pid in ipairs(pids) do assert.is_false(helpers.exists(pid)) end
    end)

    it("a <close> variable terminates when the scope ends by an error", function()
      local pids
      local ok = pcall(function()
        local p <close> = forage.pool(2)
        pids = p:pids()
        p:apply_async(function() helpers.spin(10) end, {})
        error("leaving")
      end)
      assert.is_false(ok)
      for _, pid in ipairs(pids) do assert.is_false(helpers.exists(pid)) end
    end)
  end)

  describe("arguments, options and timeouts", function()
    -- The message of the error f raises, with its location.
    local function raised(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return tostring(err)
    end
    local here = "^spec/pool_spec%.lua:%d+: "

    it("blames the caller's line, never forage's own files", function()
      local cases = {
        function() forage.pool(0) end,
        function() forage.pool("x") end,
        function() forage.pool { workers = 2.5 } end,
        function() forage.pool { max_tasks = -1 } end,
        function() pool:apply(1) end,
        function() pool:apply(square, 5) end,
        function() pool:apply_async(square, {}, { ondone = print }) end,
        function() pool:apply_async(square, {}, { on_done = 1 }) end,
        function() pool:map(square, { 1 }, 0) end,
        function() pool:map_async(square, 42) end,
        function() pool:starmap_async(square, {}, 1.5) end,
        function() pool:imap(square, 42) end,
        function() pool:imap_unordered(42, {}) end,
        function() pool:drain(-1) end,
        function() pool:apply_async(square, { 1 }):get(0 / 0) end,
        function() pool:apply_async(square, { 1 }):wait("soon") end,
        function() pool:apply(square, { 1, { conn = io.stderr, f = io.tmpfile() } }) end,
        function() local h = io.tmpfile() pool:apply(function() return h end) end,
        function() pool:starmap(square, { 1 }) end,
        function() pool:map(square, { io.tmpfile() }) end,
        function() for _ in pool:imap(square, { 1, io.tmpfile() }) do end end,
        function() for _ in pool:imap_unordered(square, function() return io.tmpfile() end) do end end,
      }
      for i, f in ipairs(cases) do
        local err = raised(f)
        assert.truthy(err:find(here), "case " .. i .. ": " .. err)
        assert.falsy(err:find("forage/", 1, true), "case " .. i .. ": " .. err)
      end
      local p <close> = forage.pool(1)
      p:close()
      assert.truthy(raised(function() p:map(square, { 1 }) end):find(here .. "pool is closed: no new tasks$"))
      assert.truthy(raised(function() p:join(-1) end):find(here .. "bad argument #1 to 'join'"))
    end)

    it("says what is wrong in Lua's words", function()
      assert.truthy(raised(function() forage.pool("x") end):find(
        "bad argument #1 to 'pool' (number or table expected, got string)", 1, true))
      assert.truthy(raised(function() forage.pool(0) end):find(
        "forage.pool: option 'workers' must be an integer from 1 to 4096, got 0", 1, true))
      assert.truthy(raised(function() pool:apply(square, 5) end):find(
        "bad argument #2 to 'apply' (table expected, got number)", 1, true))
      assert.truthy(raised(function() pool:apply_async(square, {}, { ondone = print }) end):find(
        "pool:apply_async: unknown option 'ondone' (known: callback, error_callback, on_done, on_error)", 1, true))
      local r = pool:apply_async(square, { 3 })
      assert.truthy(raised(function() r:get(-1) end):find(
        "bad argument #1 to 'get' (timeout must be nil or a non-negative number of seconds, got -1)", 1, true))
      assert.truthy(raised(function() r:wait(0 / 0) end):find("bad argument #1 to 'wait' (timeout must be", 1, true))
      assert.truthy(raised(function() pool:drain(-0.5) end):find(
        "bad argument #1 to 'drain' (timeout must be", 1, true))
      assert.equal(9, r:get())
    end)

    it("a timeout is nil or math.huge for forever, seconds otherwise; timing out is nil, message, kind", function()
      local release = forage.event()
      local p <close> = forage.pool(1)
      local r = p:apply_async(function() release:wait(10) return "done" end, {})
      local v, err, kind = r:get(0)
      assert.is_nil(v)
      assert.equal("timeout", err)
      assert.equal("timeout", kind)
      assert.is_false(r:wait(0.01))
      local ok
      ok, err, kind = p:drain(0)
      assert.is_nil(ok)
      assert.equal("timeout", err)
      assert.equal("timeout", kind)
      p:close()
      ok, err, kind = p:join(0)
      assert.same({ nil, "timeout", "timeout" }, { ok, err, kind })
      release:set()
      assert.equal("done", r:get(math.huge))
      assert.is_true(r:wait(1e300))
      assert.is_true(p:join(math.huge))
    end)
  end)

  describe("workers", function()
    it("runs init with init_args in each worker", function()
      local function init(tag) rawset(_G, "WORKER_TAG", tag .. forage.getpid()) end
      local p <close> = forage.pool { workers = 3, init = init, init_args = { "w" } }
      local tags = p:map(function() return rawget(_G, "WORKER_TAG") end, { 1, 2, 3, 4, 5, 6 }, 1)
      for _, t in ipairs(tags) do assert.truthy(t:match("^w%d+$")) end
    end)

    it("max_tasks replaces a worker after that many tasks", function()
      local p <close> = forage.pool { workers = 1, max_tasks = 2 }
      local pids = p:map(function() return forage.getpid() end, { 1, 2, 3, 4, 5, 6 }, 1)
      local distinct = {}
      for _, pid in ipairs(pids) do distinct[pid] = (distinct[pid] or 0) + 1 end
      local n = 0
      for _, count in pairs(distinct) do
        n = n + 1
        assert.equal(2, count)
      end
      assert.equal(3, n)
    end)

    it("refuses unknown options and bad values", function()
      assert.has_error(function() forage.pool { worker = 2 } end, "forage.pool: unknown option 'worker' (known: init, "
        .. "init_args, max_tasks, resource, resources, task_retries, workers)")
      assert.has_error(function() forage.pool { workers = 0 } end,
        "forage.pool: option 'workers' must be an integer from 1 to 4096, got 0")
      assert.has_error(function() forage.pool { init = 1 } end, "forage.pool: option 'init' must be a function, got 1")
    end)

    it("workers exit when the parent dies", function()
      local out = helpers.run_lua([[
        local forage = require "forage"
        local p = forage.pool(3)
        print(table.concat(p:pids(), " "))
        io.stdout:flush()
        os.exit(0, false)   -- no finaliser runs: the workers must notice by themselves
      ]])
      local pids = {}
      for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
      assert.equal(3, #pids)
      local deadline = forage.now() + 5
      local alive
      repeat
        alive = 0
        for _, pid in ipairs(pids) do if helpers.exists(pid) then alive = alive + 1 end end
      until alive == 0 or forage.now() > deadline
      assert.equal(0, alive)
    end)
  end)
end)

-- No task waits behind a slow one while another worker is idle: a worker holds at most a
-- small prefetch beyond what it runs, and what it has not started goes to a free worker.
describe("forage.pool head-of-line blocking", function()
  -- 4 workers, one busy for up to 3 s (until released), then 40 fast tasks: the last
  -- fast result must arrive within a second of their submission.
  local function check(opts)
    local started, release = forage.event(), forage.event()   -- before the pool: inherited
    local pool <close> = forage.pool(opts)
    -- Every worker has run a task, so that none is still starting.
    pool:map(function(x) return x end, { 1, 2, 3, 4, 5, 6, 7, 8 }, 1)
    local slow = pool:apply_async(function()
      started:set()
      release:wait(3)
      return "slow"
    end, {})
    assert.is_true(started:wait(10), "the slow task never started")
    local t0 = forage.now()
    local fast = {}
    for i = 1, 40 do fast[i] = pool:apply_async(function(x) return x * 2 end, { i }) end
    for i = 1, 40 do assert.equal(i * 2, fast[i]:get(10)) end
    local waited = forage.now() - t0
    release:set()
    assert.equal("slow", slow:get(10))
    assert.is_true(waited < 1, string.format("the last fast task arrived after %.2f s", waited))
  end

  it("gives no fast task to the busy worker's queue", function()
    check { workers = 4 }
  end)

  it("holds with sticky resources too", function()
    check { workers = 4, resources = { "a", "b", "c", "d" } }
  end)

  it("leaves no task behind a replacement worker's slow init", function()
    local inits, release = forage.value("int32", 0), forage.event()
    local pool <close> = forage.pool { workers = 2, max_tasks = 1, init = function()
      -- The first two inits are the pool's own workers'; a replacement in slot 1 is slow.
      if inits:add(1) > 2 and forage.worker.slot() == 1 then release:wait(3) end
    end }
    local t0 = forage.now()
    local got = pool:map(function(x) return x * 10 end, { 1, 2, 3, 4, 5, 6 }, 1)
    local waited = forage.now() - t0
    release:set()
    assert.same({ 10, 20, 30, 40, 50, 60 }, got)
    assert.is_true(waited < 1.5, string.format("the map waited %.2f s for a worker's init", waited))
  end)

  it("after a burst of tiny tasks has made the prefetch deep", function()
    local started, release = forage.event(), forage.event()
    local pool <close> = forage.pool(4)
    local list = {}
    for i = 1, 2000 do list[i] = i end
    pool:map(function(x) return x end, list, 1)   -- the measured task time is now tiny
    local slow = pool:apply_async(function() started:set() release:wait(3) return "slow" end, {})
    assert.is_true(started:wait(10), "the slow task never started")
    local t0 = forage.now()
    local got = pool:map(function(x) return x + 1 end, list, 1)
    local waited = forage.now() - t0
    release:set()
    assert.equal(2001, got[2000])
    assert.equal("slow", slow:get(10))
    assert.is_true(waited < 1.5, string.format("the map waited %.2f s for the busy worker", waited))
  end)
end)

-- A callback runs while its own task still counts as pending: a call in it that waits for
-- every task of the pool would wait for itself. Each case runs in a child process joined
-- with a bound, so that a deadlock fails the spec instead of hanging the suite.
describe("forage.pool calls inside its own callbacks", function()
  -- Runs call(pool) inside an on_done callback, in a child; returns what pcall gave there.
  local function inside_callback(call)
    local here, there = forage.pipe()
    local child = forage.process(function()
      local pool = forage.pool(2)
      local r = pool:apply_async(function() return 1 end, {}, { on_done = function()
        local ok, err = pcall(call, pool)
        there:send({ ok, tostring(err) })
      end })
      r:get(10)
      pool:terminate()
    end):start()
    local got, err = here:recv(15)
    local code = helpers.join_or_kill(child, 5)
    assert.is_not_nil(got, "the call inside the callback never returned: " .. tostring(err))
    assert.equal(0, code)
    return got[1], got[2]
  end

  it("drain raises instead of waiting for itself", function()
    local ok, err = inside_callback(function(pool) pool:drain() end)
    assert.is_false(ok)
    assert.truthy(err:find("forage.pool: drain() inside a callback of the same pool would wait for itself", 1, true),
      err)
    assert.truthy(err:find("pool_spec.lua:%d+:"), err)   -- the caller's line
  end)

  it("drain with a timeout raises too: it could never succeed", function()
    local ok, err = inside_callback(function(pool) pool:drain(0.5) end)
    assert.is_false(ok)
    assert.truthy(err:find("drain() inside a callback", 1, true), err)
  end)

  it("close and join raise instead of waiting for itself", function()
    local ok, err = inside_callback(function(pool) pool:close() pool:join() end)
    assert.is_false(ok)
    assert.truthy(err:find("forage.pool: join() inside a callback of the same pool would wait for itself", 1, true),
      err)
  end)

  it("get, wait, apply and map on other tasks still work there", function()
    local ok, err = inside_callback(function(pool)
      assert(pool:apply(function() return 2 end) == 2)
      assert(pool:apply_async(function() return 3 end):get(10) == 3)
      assert(pool:apply_async(function() return 4 end):wait(10))
      assert(pool:map(function(x) return x + 1 end, { 1, 2 })[2] == 3)
    end)
    assert.is_true(ok, err)
  end)
end)
