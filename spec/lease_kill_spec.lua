-- The lease table survives a process killed at any of its pause points: every resource is
-- held only by slots that know they hold it, its holder count is their number (at most
-- per_resource, at most one on probation, none when cooling or retired); an operation cut
-- short has happened entirely or not at all; nothing is lost or over-leased.
-- Each kill is deterministic: the child stops at a named pause point (src/pause.h), the
-- parent waits for it to be there, then kills it.
local forage = require "forage"
local core = require "forage.core"

local STOP_WAIT = 10   -- seconds: bounds a failure (a point never reached), never a success

-- The pause points written in src/lease.c, so that a point added there without a kill here
-- fails the spec.
local function points_in_source()
  local here = debug.getinfo(1, "S").source:match("^@(.*)spec/[^/]*$") or ""
  local f = assert(io.open(here .. "src/lease.c"))
  local src = f:read("a")
  f:close()
  local names = {}
  for name in src:gmatch('PAUSE_POINT%("([%w%._]+)"%)') do names[name] = true end
  return names
end

local kills, covered = 0, {}

-- Runs op in a child that stops at the point `name`, kills it there and reaps it. The child
-- is polled only so that a child that never stops fails at once instead of after STOP_WAIT.
local function kill_at(name, op)
  local point = core.pause_point(name)
  local child = forage.process(function()
    point:arm()
    op()
  end):start()
  local deadline, pid = forage.now() + STOP_WAIT
  repeat
    pid = point:wait(0.05)
  until pid or not child:alive() or forage.now() > deadline
  pid = pid or point:wait(0)
  child:kill()
  child:join(5)
  assert(pid, string.format("the child never stopped at %s", name))
  assert.equal(child.pid, pid)
  assert.equal(-9, child.exitcode)
  kills = kills + 1
  covered[name] = (covered[name] or 0) + 1
end

-- The table's resources with the fields an operation changes (not the seconds left).
local function state_of(t)
  local out = {}
  for i, r in ipairs(t:snapshot()) do
    out[i] = { state = r.state, holder = r.holder, holders = r.holders, probation = r.probation, leases = r.leases,
               successes = r.successes, failures = r.failures, cooldowns = r.cooldowns, reason = r.reason }
  end
  return out
end

-- The invariant: every slot that holds a resource knows it (held names it), each
-- resource's holder count is the number of slots whose held names it, at most
-- per_resource, at most one on probation, none when cooling or retired.
local function assert_consistent(t, nslots, per_resource)
  local snapshot, count = t:snapshot(), {}
  for slot = 1, nslots do
    local i = t:held(slot)
    if i then
      assert(snapshot[i], "a slot holds a resource that does not exist")
      count[i] = (count[i] or 0) + 1
    end
  end
  for i, r in ipairs(snapshot) do
    assert.equal(count[i] or 0, r.holders, "a holder count is not the number of slots holding it")
    assert.is_true(r.holders <= (per_resource or 1), "a resource over per_resource holders")
    if r.probation then assert.is_true(r.holders <= 1, "a probing resource with two holders") end
    if r.state == "cooling" or r.state == "retired" or r.state == "free" then
      assert.equal(0, r.holders)
      assert.is_nil(r.holder)
    else
      assert.truthy(({ leased = true, probing = true })[r.state], r.state)
      assert.equal(i, t:held(r.holder), "a resource's holder does not know it")
    end
  end
  assert.is_true(t:stats().consistent)
end

-- After the checks of a kill: release every slot, then lease to every slot again; the
-- slots get resources up to what is not cooling or retired (per_resource each, one on
-- probation), never one over its bound.
local function assert_all_come_back(t, nslots, per_resource)
  per_resource = per_resource or 1
  for slot = 1, nslots do t:release(slot) end
  for slot = 1, nslots do assert.is_nil(t:held(slot)) end
  local room = 0
  for _, r in ipairs(t:snapshot()) do
    assert.equal(0, r.holders, "a resource still held after every slot released")
    if r.state == "free" then room = room + (r.probation and 1 or per_resource) end
  end
  for slot = 1, nslots do
    local i = t:acquire(slot)
    if slot <= room then assert(i, "a free resource was not leased") else assert.is_nil(i) end
  end
  assert_consistent(t, nslots, per_resource)
end

local function new_table(opts)
  local o = { count = 3, slots = 2, cooldown = 0, max_cooldown = 0, max_failures = 3 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return core.leases(o), o.slots, o.per_resource
end

local ACQUIRE = { "lease.acquire.holders", "lease.acquire.count", "lease.acquire.slot" }
local COOL = { "lease.cool.generation", "lease.cool.holders", "lease.cool.failures", "lease.cool.count",
               "lease.cool.reason", "lease.cool.until", "lease.cool.state" }
local RETIRE = { "lease.cool.generation", "lease.cool.holders", "lease.cool.failures", "lease.cool.count",
                 "lease.cool.reason", "lease.retire.state" }

-- The names of each list, in order, in one list.
local function concat(...)
  local out = {}
  for _, list in ipairs { ... } do
    for _, name in ipairs(list) do out[#out + 1] = name end
  end
  return out
end

-- A table of 2 resources and 2 slots (cooldown 0) where resource 1 is on probation, held
-- by slot 2 as its probe, and slot 1 holds resource 2.
local function probing(t)
  t:acquire(1)
  t:swap(1)
  assert.equal(1, t:acquire(2))
  assert.equal("probing", t:snapshot()[1].state)
end

-- op: what the child does; setup: what the parent does first; the points op passes, in order.
local cases = {
  { name = "acquire", op = function(t) t:acquire(1) end, points = concat({ "lease.undo.written" }, ACQUIRE) },
  { name = "acquire of a resource another slot holds (per_resource 3)",
    options = { count = 1, slots = 3, per_resource = 3 }, setup = function(t) t:acquire(2) end,
    op = function(t) t:acquire(1) end, points = concat({ "lease.undo.written" }, ACQUIRE) },
  { name = "release", setup = function(t) t:acquire(1) t:acquire(2) end, op = function(t) t:release(1) end,
    points = { "lease.undo.written", "lease.release.holders", "lease.release.slot" } },
  { name = "release of a shared resource (per_resource 2)", options = { count = 1, slots = 2, per_resource = 2 },
    setup = function(t) t:acquire(1) t:acquire(2) end, op = function(t) t:release(2) end,
    points = { "lease.undo.written", "lease.release.holders", "lease.release.slot" } },
  { name = "swap", setup = function(t) t:acquire(1) end, op = function(t) t:swap(1, "banned") end,
    points = concat({ "lease.undo.written", "lease.swap.failures" }, COOL, ACQUIRE) },
  { name = "swap of a shared resource, no other free (per_resource 3)",
    options = { count = 1, slots = 3, per_resource = 3 },
    setup = function(t) for s = 1, 3 do t:acquire(s) end end,
    op = function(t) t:swap(2, "banned") end,
    points = concat({ "lease.undo.written", "lease.swap.failures" }, COOL, { "lease.cool.slot" }) },
  { name = "cool(slot, seconds)", options = { count = 2, slots = 4, per_resource = 2 },
    setup = function(t) t:acquire(1) t:acquire(2) t:acquire(3) end, op = function(t) t:cool(1, 3600, "429") end,
    points = concat({ "lease.undo.written", "lease.swap.failures" }, COOL, ACQUIRE) },
  { name = "retire", setup = function(t) t:acquire(1) end, op = function(t) t:retire(1, "gone") end,
    points = concat({ "lease.undo.written" }, RETIRE, ACQUIRE) },
  { name = "report(true)", setup = function(t) t:acquire(1) t:report(1, false) end,
    op = function(t) t:report(1, true) end,
    points = { "lease.undo.written", "lease.report.successes", "lease.report.consecutive",
               "lease.report.cooldowns" } },
  { name = "report(false)", setup = function(t) t:acquire(1) end, op = function(t) t:report(1, false, "slow") end,
    points = { "lease.undo.written", "lease.report.failures", "lease.report.reason",
               "lease.report.consecutive" } },
  { name = "report(false) reaching max_failures", options = { max_failures = 1 },
    setup = function(t) t:acquire(1) end, op = function(t) t:report(1, false, "refused") end,
    points = concat({ "lease.undo.written", "lease.report.failures", "lease.report.reason" }, COOL, ACQUIRE) },
  { name = "report(false) reaching max_failures on a shared resource (per_resource 2)",
    options = { count = 2, slots = 4, per_resource = 2, max_failures = 2 },
    setup = function(t)
      for s = 1, 4 do t:acquire(s) end
      t:report(3, false)
    end,
    op = function(t) t:report(1, false, "refused") end,
    points = concat({ "lease.undo.written", "lease.report.failures", "lease.report.reason" }, COOL,
                    { "lease.cool.slot" }) },
  { name = "disable of a shared resource (per_resource 2)", options = { count = 2, slots = 4, per_resource = 2 },
    setup = function(t) for s = 1, 4 do t:acquire(s) end end, op = function(t) t:disable(1) end,
    points = { "lease.undo.written", "lease.disable.generation", "lease.disable.holders", "lease.disable.state" } },
  { name = "a probe's success", options = { count = 2, slots = 2 }, setup = probing,
    op = function(t) t:report(2, true) end,
    points = { "lease.undo.written", "lease.report.successes", "lease.report.consecutive",
               "lease.report.cooldowns", "lease.probe.passed" } },
  { name = "a probe's failure", options = { count = 2, slots = 2, retire_after = 5 }, setup = probing,
    op = function(t) t:report(2, false, "still refused") end,
    points = concat({ "lease.undo.written", "lease.report.failures", "lease.report.reason" }, COOL,
                    { "lease.cool.slot" }) },
  { name = "a probe's failure reaching retire_after", options = { count = 2, slots = 2, retire_after = 2 },
    setup = probing, op = function(t) t:report(2, false, "still refused") end,
    points = concat({ "lease.undo.written", "lease.report.failures", "lease.report.reason" }, RETIRE,
                    { "lease.cool.slot" }) },
}

describe("lease table killed at each pause point", function()
  for _, case in ipairs(cases) do
    it(case.name .. " happens entirely or not at all", function()
      for _, name in ipairs(case.points) do
        local t, nslots, per_resource = new_table(case.options)
        if case.setup then case.setup(t) end
        local before = state_of(t)
        kill_at(name, function() case.op(t) end)
        assert_consistent(t, nslots, per_resource)
        assert.same(before, state_of(t), "not rolled back after a kill at " .. name)
        assert.is_true(t:stats().recoveries >= 1)
        assert_all_come_back(t, nslots, per_resource)
      end
    end)
  end

  it("a revival cut short leaves each cooling resource cooling or on probation", function()
    local t, nslots = new_table { count = 4, slots = 3, cooldown = 0.05, max_cooldown = 0.05 }
    t:acquire(1)
    t:acquire(2)
    t:swap(1)
    t:swap(2)
    -- Polled, not slept: next_revival (which revives nothing itself) says when the first
    -- cooldown is over; the child's acquire then revives it, and is killed doing so.
    local deadline = forage.now() + STOP_WAIT
    while t:next_revival() > 0 and forage.now() < deadline do forage.sleep(0.01) end
    kill_at("lease.revive.probing", function() t:acquire(3) end)
    assert_consistent(t, nslots)
    assert.is_nil(t:held(3))
    assert_all_come_back(t, nslots)
  end)

  it("a stale entry's drop cut short leaves the slot holding nothing either way", function()
    local t, nslots, per_resource = new_table { count = 1, slots = 2, per_resource = 2 }
    t:acquire(1)
    t:acquire(2)
    t:swap(1)     -- resource 1 cools: slot 2's entry is stale
    kill_at("lease.stale.dropped", function() t:held(2) end)
    assert_consistent(t, nslots, per_resource)
    assert.is_nil(t:held(2))
    assert_all_come_back(t, nslots, per_resource)
  end)

  it("pace cut short reserved the gap entirely or not at all", function()
    local t, nslots = new_table { count = 2, slots = 1 }
    kill_at("lease.pace.due", function() t:pace(1, 3600) end)
    assert.equal(0, t:pace(1, 3600), "a pace killed before its store reserved")
    kill_at("lease.pace.reserved", function() t:pace(2, 3600) end)
    assert.is_true(t:pace(2, 3600) > 3000, "a pace killed after its store did not reserve")
    assert_consistent(t, nslots)
    assert_all_come_back(t, nslots)
  end)

  it("a repair cut short is finished by the next holder of the lock", function()
    local t, nslots = new_table()
    t:acquire(2)
    local before = state_of(t)
    kill_at("lease.acquire.count", function() t:acquire(1) end)
    kill_at("lease.repair.restored", function() t:held(1) end)
    assert_consistent(t, nslots)
    assert.same(before, state_of(t))
    assert_all_come_back(t, nslots)
  end)
end)

-- The same kills inside a pool worker calling forage.worker.swap_resource / retire_resource:
-- the pool notices the death, releases the slot (repairing the table), and runs the task
-- again in a new worker, where it succeeds; exactly one swap (or retirement) per task counts.
describe("a pool worker killed inside swap_resource or retire_resource", function()
  local function run(method, points)
    local paused = {}
    for i, name in ipairs(points) do paused[i] = core.pause_point(name) end
    local token = forage.value("int32", 0)   -- 1: the next task arms its pause point, once
    local resources = {}
    for i = 1, #points + 2 do resources[i] = "proxy" .. i end
    local pool <close> = forage.pool { workers = 1, resources = resources,
                                       resource = { cooldown = 0, max_cooldown = 0 } }
    for round, point in ipairs(paused) do
      token.value = 1
      local r = pool:apply_async(function(p, tok, m)
        if tok:add(-1) == 0 then p:arm() end
        return forage.worker[m]("round")
      end, { point, token, method })
      -- The parent pumps the pool (to send the task) until the worker stops at the point.
      local deadline, pid = forage.now() + STOP_WAIT
      repeat
        r:wait(0.02)
        pid = point:wait(0)
      until pid or r:ready() or forage.now() > deadline
      if not pid then
        for _, p in ipairs(pool:pids()) do os.execute("kill -KILL " .. p) end
        error("the worker never stopped at " .. points[round])
      end
      os.execute("kill -KILL " .. pid)
      assert.is_not_nil(r:get(120))
      kills, covered[points[round]] = kills + 1, (covered[points[round]] or 0) + 1

      local live, leased, counted = {}, 0, 0
      for _, p in ipairs(pool:pids()) do live[p] = true end
      for i, res in ipairs(pool:resources()) do
        if res.state == "leased" or res.state == "probing" then   -- probing: leased to its probe
          leased = leased + 1
          assert.is_true(live[res.worker], "a resource leased to a dead worker")
          assert.equal(i, pool.leases:held(res.holder))
        end
        counted = counted + (method == "retire_resource" and (res.state == "retired" and 1 or 0) or res.failures)
      end
      assert.equal(1, leased)
      assert.equal(round, counted, "a killed " .. method .. " counted, or one counted twice")
      assert.is_true(pool.leases:stats().consistent)
    end
  end

  it("swap_resource", function()
    run("swap_resource", concat({ "lease.undo.written", "lease.swap.failures" }, COOL, ACQUIRE))
  end)

  it("retire_resource", function()
    run("retire_resource", concat({ "lease.undo.written" }, RETIRE, ACQUIRE))
  end)
end)

describe("the lease table's options and type", function()
  it("refuses unknown options, values out of range and NaN, naming the option", function()
    assert.has_error(function() core.leases { count = 1, slots = 1, cooldwn = 1 } end,
      "forage.pool resource: unknown option 'cooldwn' (known: count, slots, "
      .. "max_failures, cooldown, max_cooldown, retire_after, per_resource, name)")
    for _, bad in ipairs {
      { cooldown = 0 / 0 }, { cooldown = -1 }, { max_cooldown = math.huge }, { max_failures = 0 },
      { max_failures = 2.5 }, { retire_after = -1 }, { count = 0 }, { slots = 100001 }, { per_resource = 2 },
      { per_resource = 0 }, { cooldown = "1" }, { name = 1 },
    } do
      local key = next(bad)
      local o = { count = 1, slots = 1 }
      o[key] = bad[key]
      local ok, err = pcall(core.leases, o)
      assert.is_false(ok)
      assert.truthy(err:find("forage.pool resource: option '" .. key .. "' must be ", 1, true), err)
    end
    assert.has_error(function() core.leases { slots = 1 } end,
      "forage.pool resource: options 'count' and 'slots' are required")
  end)

  it("raises in Lua's words on a bad slot, a wrong type or a closed table", function()
    local t = core.leases { count = 1, slots = 2 }
    assert.has_error(function() t:acquire(3) end, "bad argument #1 to 'acquire' (slot must be from 1 to 2)")
    assert.has_error(function() t.held("x", 1) end, "bad argument #1 to 'held' (forage.Leases expected, got string)")
    getmetatable(t).__close(t)
    assert.has_error(function() t:acquire(1) end, "attempt to use a closed forage.Leases")
  end)
end)

describe("lease_kill_spec itself", function()
  it("killed at least 50 times, at every pause point of src/lease.c", function()
    assert.is_true(kills >= 50, "only " .. kills .. " kills")
    for name in pairs(points_in_source()) do
      assert.is_true((covered[name] or 0) >= 1, "no kill at " .. name)
    end
    for name in pairs(covered) do assert.is_true(points_in_source()[name], name .. " is not in src/lease.c") end
  end)
end)
