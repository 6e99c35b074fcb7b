-- CPython gh-66587: a Pool worker killed in the middle of a task hangs the pool forever.
-- forage re-runs the task on a new worker, and fails only that task once its retries are spent.
local forage = require "forage"
local helpers = require "helpers"

-- How long a spec waits for a task whose worker dies and is replaced: a bound that only
-- catches a hang. Each replacement worker's first task makes it collect the heap it
-- inherited (busted's, large after hundreds of specs): seconds under AddressSanitizer
-- on a loaded machine.
local RESPAWN_BOUND = 120

local function kill(pid, sig)
  os.execute(string.format("kill -%d %d", sig or 9, pid))
end

describe("a worker killed mid-task (CPython gh-66587)", function()
  it("never hangs: every result still arrives when workers are SIGKILLed under load", function()
    local p <close> = forage.pool(3)
    local n = 300
    local results = {}
    local killed = 0
    local kills_at = { [20] = true, [100] = true, [200] = true }
    for i, r in p:imap_unordered(function(x) helpers.spin(0.002) return x * 2 end, (function()
      local k = 0
      return function() k = k + 1 if k <= n then return k end end
    end)()) do
      results[i] = r
      local count = 0
      for _ in pairs(results) do count = count + 1 end
      if kills_at[count] then
        kill(p:pids()[1 + killed % 3])
        killed = killed + 1
      end
    end
    assert.equal(3, killed)
    for i = 1, n do assert.equal(i * 2, results[i], "item " .. i) end
    assert.is_true(p:stats().respawns >= 3)
  end)

  it("re-runs the task that was running when its worker died", function()
    local p <close> = forage.pool { workers = 1 }
    local marker = os.tmpname()
    os.remove(marker)
    -- The first run kills its own worker; the second run finds the marker and returns.
    local r = p:apply_async(function(path)
      local f = io.open(path)
      if f then f:close() return "second run" end
      f = assert(io.open(path, "w"))
      f:close()
      os.execute("kill -9 " .. forage.getpid())
      helpers.spin(10)
    end, { marker })
    assert.equal("second run", r:get(RESPAWN_BOUND))
    os.remove(marker)
  end)

  it("fails that task alone with 'worker died (signal 9)' after task_retries", function()
    local p <close> = forage.pool { workers = 2, task_retries = 1 }
    local bad = p:apply_async(function() os.execute("kill -9 " .. forage.getpid()) helpers.spin(10) end, {})
    local good = p:map(function(x) return x + 1 end, { 1, 2, 3 })
    assert.is_false(bad:wait(RESPAWN_BOUND) and bad:successful())
    assert.equal("worker died (signal 9)", bad.err.message)
    assert.same({ 2, 3, 4 }, good)
    assert.same({ 11 }, p:map(function(x) return x + 1 end, { 10 }))
  end)

  it("os.exit in a task leaves its worker without running the parent's finalisers", function()
    local marker = os.tmpname()
    os.remove(marker)
    -- A finaliser of the parent's, inherited by the worker: os.exit(code, true) would close
    -- the worker's copy of the state and run it there (and exit() would run every atexit
    -- handler inherited, such as a sanitizer's scan of the whole heap).
    local guard <close> = setmetatable({}, { __close = function() end, __gc = function()
      local f = io.open(marker, "a")
      if f then f:write(forage.getpid(), "\n") f:close() end
    end })
    local p <close> = forage.pool { workers = 1, task_retries = 0 }
    local codes = {}
    for _, arg in ipairs { { 3, true }, { false }, { true, true } } do
      local r = p:apply_async(function(code, close) os.exit(code, close) end, arg)
      assert.is_true(r:wait(RESPAWN_BOUND))
      codes[#codes + 1] = r.err.message
    end
    assert.same({ "worker died (exit 3)", "worker died (exit 1)", "worker died (exit 0)" }, codes)
    assert.is_nil(io.open(marker), "a finaliser of the parent's ran in a worker")
    assert.is_table(guard)   -- alive to here: no collection in this process explains the marker
    finally(function() os.remove(marker) end)
  end)

  it("a task calling os.exit cannot loop forever", function()
    local p <close> = forage.pool { workers = 1, task_retries = 2 }
    local r = p:apply_async(function() os.exit(0) end, {})
    assert.is_true(r:wait(RESPAWN_BOUND))
    assert.equal("worker died (exit 0)", r.err.message)
  end)
end)
