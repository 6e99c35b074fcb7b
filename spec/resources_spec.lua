-- Sticky resources: each worker keeps one (a proxy) until it breaks (the blog's question).
local forage = require "forage"
local helpers = require "helpers"

local function by_value(pool)
  local out = {}
  for _, r in ipairs(pool:resources()) do out[r.value] = r end
  return out
end

describe("pool resources", function()
  it("each worker keeps one resource, and workers without one get no task", function()
    local pool <close> = forage.pool { workers = 5, resources = { "p1", "p2", "p3" } }
    local got = pool:map(function()
      helpers.spin(0.002)
      return { forage.getpid(), forage.worker.resource() }
    end, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, 1)
    local resource_of, workers = {}, 0
    for _, g in ipairs(got) do
      assert.is_not_nil(g[2], "a task ran without a resource")
      if resource_of[g[1]] == nil then
        workers = workers + 1
        resource_of[g[1]] = g[2]
      end
      assert.equal(resource_of[g[1]], g[2], "a worker changed resource without a failure")
    end
    assert.is_true(workers <= 3)
    for _, r in ipairs(pool:resources()) do
      assert.equal("leased", r.state)
      assert.is_true(helpers.exists(r.worker))
    end
  end)

  it("max_failures failures in a row cool the resource and lease another", function()
    local pool <close> = forage.pool { workers = 1, resources = { "a", "b" },
                                       resource = { max_failures = 2, cooldown = 60 } }
    local first = pool:apply(function() return forage.worker.resource() end)
    local after = pool:apply(function()
      local held = forage.worker.report(false, "timeout")   -- 1 of 2: kept
      assert(held == forage.worker.resource())
      return { held, forage.worker.report(false, "timeout again") }
    end)
    assert.equal(first, after[1])
    assert.are_not.equal(first, after[2])
    local state = by_value(pool)
    assert.equal("cooling", state[first].state)
    assert.equal("timeout again", state[first].reason)
    assert.equal(2, state[first].failures)
    assert.is_true(state[first].cooldown > 20)
    assert.equal("leased", state[after[2]].state)
  end)

  it("a success resets the count of failures in a row", function()
    local pool <close> = forage.pool { workers = 1, resources = { "a", "b" }, resource = { max_failures = 2 } }
    local kept = pool:apply(function()
      local r = forage.worker.resource()
      forage.worker.report(false)
      forage.worker.report(true)
      forage.worker.report(false)
      return forage.worker.resource() == r
    end)
    assert.is_true(kept)
    local counts = pool:resources()[1]
    assert.equal(1, counts.successes)
    assert.equal(2, counts.failures)
  end)

  -- A pool of one worker and two resources whose worker swaps its resource once; returns
  -- the pool and { old, new }. Two cooldowns: one long enough that no slow machine sees it
  -- end before the check, and one short enough to wait out.
  local function swapped_once(cooldown)
    local pool = forage.pool { workers = 1, resources = { "a", "b" },
                               resource = { cooldown = cooldown, max_cooldown = cooldown } }
    local swapped = pool:apply(function()
      local old = forage.worker.resource()
      return { old, forage.worker.swap_resource("banned by the site") }
    end)
    assert.are_not.equal(swapped[1], swapped[2])
    return pool, swapped
  end

  it("swap_resource cools the held one at once", function()
    local pool <close>, swapped = swapped_once(600)
    local state = by_value(pool)
    assert.equal("cooling", state[swapped[1]].state)
    assert.equal("banned by the site", state[swapped[1]].reason)
  end)

  it("a swapped resource comes back after its cooldown", function()
    local pool <close>, swapped = swapped_once(0.2)
    forage.sleep(0.35)    -- the jittered cooldown is at most 1.5 x 0.2 s: it has ended
    assert.equal("free", by_value(pool)[swapped[1]].state)
  end)

  it("with fewer live resources than workers, tasks wait for one instead of running without", function()
    local pool <close> = forage.pool { workers = 4, resources = { "only" },
                                       resource = { max_failures = 1, cooldown = 0.05, max_cooldown = 0.05 } }
    local seen = pool:map(function(i)
      local r = forage.worker.resource()
      if i % 3 == 0 then forage.worker.report(false, "flaky") end   -- cools "only" for a moment
      return r
    end, { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 1)
    for i = 1, 9 do assert.equal("only", seen[i]) end
  end)

  it("fails pending tasks with 'no resource left' once every resource is retired", function()
    local pool <close> = forage.pool { workers = 2, resources = { "x", "y" } }
    local results = {}
    for i = 1, 6 do
      results[i] = pool:apply_async(function() forage.worker.retire_resource("banned") return "ran" end, {})
    end
    local t0 = forage.now()
    assert.is_true(pool:drain(10))
    assert.is_true(forage.now() - t0 < 5, "waited instead of failing")
    local ran, failed = 0, 0
    for _, r in ipairs(results) do
      if r:successful() then
        ran = ran + 1
      else
        failed = failed + 1
        assert.equal("no resource left", r.err.message)
      end
    end
    assert.equal(2, ran)     -- one task per resource, then both are retired
    assert.equal(4, failed)
    for _, r in ipairs(pool:resources()) do assert.equal("retired", r.state) end
  end)

  it("retire_after cools a resource that keeps failing into retirement", function()
    local pool <close> = forage.pool { workers = 1, resources = { "bad" },
                                       resource = { max_failures = 1, cooldown = 0.01, retire_after = 2 } }
    pool:apply(function() forage.worker.report(false, "1") end)
    forage.sleep(0.05)
    pool:apply(function() forage.worker.report(false, "2") end)
    local r = pool:resources()[1]
    assert.equal("retired", r.state)
    assert.equal(2, r.cooldowns)
  end)

  it("a worker killed mid-task frees its resource without penalty", function()
    local runs = forage.value("int32", 0)   -- before the pool: its workers inherit it
    local pool <close> = forage.pool { workers = 2, resources = { "a", "b" } }
    local pids = pool:pids()
    pool:map(function() return forage.worker.resource() end, { 1, 2 }, 1)
    -- The first run waits to be killed; the run after the kill returns at once.
    local r = pool:apply_async(function() if runs:add(1) == 1 then helpers.spin(10) end return "rerun" end, {})
    local deadline = forage.now() + 10   -- kill only once the task runs: a kill before it would prove nothing
    while runs.value == 0 and forage.now() < deadline do forage.sleep(0.001) end
    assert.equal(1, runs.value)
    for _, pid in ipairs(pids) do os.execute("kill -9 " .. pid) end
    assert.equal("rerun", r:get(120))
    assert.equal(2, runs.value)
    for _, res in ipairs(pool:resources()) do
      assert.are_not.equal("cooling", res.state)
      assert.equal(0, res.failures)
    end
  end)

  it("a task queued behind one that lost the worker's resource runs with another worker's", function()
    local pool <close> = forage.pool { workers = 2, resources = { "a", "b" } }
    local list = {}
    for i = 1, 200 do list[i] = i end
    local got = pool:map(function(i)
      if i == 1 then
        local held = forage.worker.resource()
        forage.worker.retire_resource("banned")
        return held
      end
      return forage.worker.resource() or "none"
    end, list, 1)
    -- Which worker ran task 1, and whether the other held its resource yet, is up to the
    -- scheduler; what may never happen is a task run without a resource.
    for i = 2, 200 do assert.are_not.equal("none", got[i], "task " .. i .. " ran without a resource") end
    local state = by_value(pool)
    assert.equal("retired", state[got[1]].state)
  end)

  it("refuses bad resource options", function()
    assert.has_error(function() forage.pool { resources = {} } end,
      "forage.pool: option 'resources' must be a non-empty list, got table")
    assert.has_error(function() forage.pool { resources = { "a" }, resource = { retries = 1 } } end,
      "forage.pool resource: unknown option 'retries' (known: cooldown, max_cooldown, max_failures, retire_after)")
    assert.has_error(function() forage.pool { resource = { cooldown = 1 } } end,
      "forage.pool: option 'resource' given without 'resources'")
    assert.has_error(function() forage.pool { resources = { "a" }, resource = { cooldown = -1 } } end,
      "forage.pool resource: option 'cooldown' must be a non-negative number of seconds, got -1")
    assert.has_error(function() forage.pool { resources = { "a" }, resource = { max_failures = 0 } } end,
      "forage.pool resource: option 'max_failures' must be an integer from 1 to 1000000000, got 0")
  end)

  it("forage.worker answers nil outside a pool worker", function()
    assert.is_nil(forage.worker.slot())
    assert.is_nil(forage.worker.resource())
    assert.is_nil(forage.worker.report(true))
  end)
end)
