-- Shared objects travel by reference inside the process tree: a task (or a pipe message)
-- that names a queue, lock, value, set or dict created before the receiver was forked gets
-- that very object; one created later is a clear error, never a copy.
local forage = require "forage"

describe("shared objects sent to processes", function()
  it("reach pool tasks as upvalues and as arguments", function()
    local seen = forage.set { capacity = 100 }
    local hits = forage.value("int64", 0)
    local lock = forage.lock()
    local d = forage.dict { capacity = 16 }
    local pool <close> = forage.pool(2)
    local new = pool:map(function(url)
      hits:add(1)
      lock:with(function() d:update("n", function(n) return (n or 0) + 1 end) end)
      return seen:add(url)
    end, { "a", "b", "a", "c", "b" }, 1)
    local count = 0
    for _, v in ipairs(new) do if v then count = count + 1 end end
    assert.equal(3, count)
    assert.equal(5, hits.value)
    assert.equal(5, d:get("n"))
    assert.equal(3, #seen)
    assert.is_true(pool:apply(function(s, key) return s:has(key) end, { seen, "c" }))
  end)

  it("a shared object created after the pool fails its task with a clear error", function()
    local pool <close> = forage.pool(1)
    local late = forage.value("int64", 5)
    local ok, err = pcall(pool.apply, pool, function() return late.value end, {})
    assert.is_false(ok)
    assert.truthy(err.message:find("forage.Value was created after this process started", 1, true), err.message)
    ok, err = pcall(pool.apply, pool, function(v) return v.value end, { late })
    assert.is_false(ok)
    assert.truthy(err.message:find("create it before the pool or process", 1, true))
    assert.same({ 2 }, pool:map(function(x) return x + 1 end, { 1 }))   -- the worker lives on
  end)

  it("cross a pipe to a process forked after their creation", function()
    local a, b = forage.pipe()
    local v = forage.value("int32", 0)
    local p = forage.process(function()
      local got = b:recv(5)
      got:add(42)
      b:send(true)
    end):start()
    a:send(v)
    assert.is_true(a:recv(5))
    assert.equal(42, v.value)
    assert.equal(0, p:join(5))
  end)

  it("are refused in data mode", function()
    local v = forage.value("int32", 0)
    assert.has_error(function() forage.encode({ v }) end,
      "value[1]: cannot send forage.Value in data mode (only inside the process tree)")
  end)
end)
