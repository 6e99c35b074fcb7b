-- The lease table survives a process killed at any of its pause points: every resource is
-- free, cooling, retired, or held by exactly one slot that knows it holds it; an operation
-- cut short has happened entirely or not at all; nothing is lost or leased twice.
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
    out[i] = { state = r.state, holder = r.holder, leases = r.leases, successes = r.successes,
               failures = r.failures, cooldowns = r.cooldowns, reason = r.reason }
  end
  return out
end

-- Every resource is free, cooling or retired with no holder, or leased to one slot whose
-- entry names it back; every slot entry names a resource leased to that slot.
local function assert_consistent(t, nslots)
  local snapshot, holding = t:snapshot(), {}
  for i, r in ipairs(snapshot) do
    if r.state == "leased" then
      assert(r.holder and r.holder >= 1 and r.holder <= nslots, "a leased resource without a holder")
      assert(holding[r.holder] == nil, string.format("slot %d holds two resources", r.holder))
      holding[r.holder] = i
      assert.equal(i, t:held(r.holder), "a slot does not know the resource it holds")
    else
      assert.truthy(({ free = true, cooling = true, retired = true })[r.state])
      assert.is_nil(r.holder)
    end
  end
  for slot = 1, nslots do assert.equal(holding[slot], t:held(slot)) end
  assert.is_true(t:stats().consistent)
end

-- After the checks of a kill: release every slot, then lease to every slot again; each one
-- gets a resource as long as some is not retired or cooling, and never one held twice.
local function assert_all_come_back(t, nslots)
  for slot = 1, nslots do t:release(slot) end
  for slot = 1, nslots do assert.is_nil(t:held(slot)) end
  local usable = 0
  for _, r in ipairs(t:snapshot()) do
    assert.are_not.equal("leased", r.state, "a resource still leased after every slot released")
    if r.state == "free" then usable = usable + 1 end
  end
  local seen = {}
  for slot = 1, nslots do
    local i = t:acquire(slot)
    if slot <= usable then
      assert(i, "a free resource was not leased")
      assert(not seen[i], "a resource leased twice")
      seen[i] = true
    else
      assert.is_nil(i)
    end
  end
  assert_consistent(t, nslots)
end

local function new_table(opts)
  local o = { count = 3, slots = 2, cooldown = 0, max_cooldown = 0, max_failures = 3 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return core.leases(o), o.slots
end

-- op: what the child does; setup: what the parent does first; the points op passes, in order.
local cases = {
  { name = "acquire", op = function(t) t:acquire(1) end,
    points = { "lease.undo.written", "lease.acquire.state", "lease.acquire.holder", "lease.acquire.count",
               "lease.acquire.slot" } },
  { name = "release", setup = function(t) t:acquire(1) t:acquire(2) end, op = function(t) t:release(1) end,
    points = { "lease.undo.written", "lease.release.state", "lease.release.holder", "lease.release.slot" } },
  { name = "swap", setup = function(t) t:acquire(1) end, op = function(t) t:swap(1, "banned") end,
    points = { "lease.undo.written", "lease.swap.failures", "lease.cool.slot", "lease.cool.holder",
               "lease.cool.failures", "lease.cool.count", "lease.cool.reason", "lease.cool.until",
               "lease.cool.state", "lease.acquire.state", "lease.acquire.holder", "lease.acquire.count",
               "lease.acquire.slot" } },
  { name = "retire", setup = function(t) t:acquire(1) end, op = function(t) t:retire(1, "gone") end,
    points = { "lease.undo.written", "lease.cool.slot", "lease.cool.holder", "lease.cool.failures",
               "lease.cool.count", "lease.cool.reason", "lease.retire.state", "lease.acquire.state",
               "lease.acquire.holder", "lease.acquire.count", "lease.acquire.slot" } },
  { name = "report(true)", setup = function(t) t:acquire(1) t:report(1, false) end,
    op = function(t) t:report(1, true) end,
    points = { "lease.undo.written", "lease.report.successes", "lease.report.consecutive",
               "lease.report.cooldowns" } },
  { name = "report(false)", setup = function(t) t:acquire(1) end, op = function(t) t:report(1, false, "slow") end,
    points = { "lease.undo.written", "lease.report.failures", "lease.report.reason",
               "lease.report.consecutive" } },
  { name = "report(false) reaching max_failures", options = { max_failures = 1 },
    setup = function(t) t:acquire(1) end, op = function(t) t:report(1, false, "refused") end,
    points = { "lease.undo.written", "lease.report.failures", "lease.report.reason", "lease.cool.slot",
               "lease.cool.holder", "lease.cool.failures", "lease.cool.count", "lease.cool.reason",
               "lease.cool.until", "lease.cool.state", "lease.acquire.state", "lease.acquire.holder",
               "lease.acquire.count", "lease.acquire.slot" } },
}

describe("lease table killed at each pause point", function()
  for _, case in ipairs(cases) do
    it(case.name .. " happens entirely or not at all", function()
      for _, name in ipairs(case.points) do
        local t, nslots = new_table(case.options)
        if case.setup then case.setup(t) end
        local before = state_of(t)
        kill_at(name, function() case.op(t) end)
        assert_consistent(t, nslots)
        assert.same(before, state_of(t), "not rolled back after a kill at " .. name)
        assert.is_true(t:stats().recoveries >= 1)
        assert_all_come_back(t, nslots)
      end
    end)
  end

  it("a revival cut short leaves each cooling resource cooling or free", function()
    local t, nslots = new_table { count = 4, slots = 3, cooldown = 0.05, max_cooldown = 0.05 }
    t:acquire(1)
    t:acquire(2)
    t:swap(1)
    t:swap(2)
    forage.sleep(0.2)    -- both cooldowns (at most 1.5 x 0.05 s) are over: the next lock revives
    kill_at("lease.revive.freed", function() t:acquire(3) end)
    assert_consistent(t, nslots)
    assert.is_nil(t:held(3))
    assert_all_come_back(t, nslots)
  end)

  it("a repair cut short is finished by the next holder of the lock", function()
    local t, nslots = new_table()
    t:acquire(2)
    local before = state_of(t)
    kill_at("lease.acquire.holder", function() t:acquire(1) end)
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
        if res.state == "leased" then
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
    run("swap_resource", { "lease.undo.written", "lease.swap.failures", "lease.cool.slot", "lease.cool.holder",
                           "lease.cool.failures", "lease.cool.count", "lease.cool.reason", "lease.cool.until",
                           "lease.cool.state", "lease.acquire.state", "lease.acquire.holder",
                           "lease.acquire.count", "lease.acquire.slot" })
  end)

  it("retire_resource", function()
    run("retire_resource", { "lease.undo.written", "lease.cool.slot", "lease.cool.holder", "lease.cool.failures",
                             "lease.cool.count", "lease.cool.reason", "lease.retire.state",
                             "lease.acquire.state", "lease.acquire.holder", "lease.acquire.count",
                             "lease.acquire.slot" })
  end)
end)

describe("the lease table's options and type", function()
  it("refuses unknown options, values out of range and NaN, naming the option", function()
    assert.has_error(function() core.leases { count = 1, slots = 1, cooldwn = 1 } end,
      "forage.pool resource: unknown option 'cooldwn' (known: count, slots, "
      .. "max_failures, cooldown, max_cooldown, retire_after)")
    for _, bad in ipairs {
      { cooldown = 0 / 0 }, { cooldown = -1 }, { max_cooldown = math.huge }, { max_failures = 0 },
      { max_failures = 2.5 }, { retire_after = -1 }, { count = 0 }, { slots = 4097 }, { cooldown = "1" },
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
