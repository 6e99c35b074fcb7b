-- The lease table for a crawl's slots (src/lease.c): resources shared by up to per_resource
-- slots, cooling that takes a resource from all its holders, half-open probation, cool with a
-- least cooldown, pacing per resource. No result here depends on timing: cooldowns and
-- delays are either 0 (due at once) or an hour (never due while a spec runs), and the one
-- revival that must wait polls next_revival with a bound.
local forage = require "forage"
local core = require "forage.core"

local HOUR = 3600
local WAIT_BOUND = 10   -- seconds: bounds a failure (a revival that never comes), never a success

local function leases(opts)
  local o = { cooldown = HOUR, max_cooldown = HOUR }
  for k, v in pairs(opts) do o[k] = v end
  return core.leases(o)
end

-- The holder count of each resource, and the same count made from the slots' held().
local function holders(t, nslots)
  local counted, from_slots = {}, {}
  for i, r in ipairs(t:snapshot()) do
    counted[i], from_slots[i] = r.holders, 0
  end
  for s = 1, nslots do
    local i = t:held(s)
    if i then from_slots[i] = from_slots[i] + 1 end
  end
  return counted, from_slots
end

local function assert_holders(t, nslots, expected)
  local counted, from_slots = holders(t, nslots)
  assert.same(expected, counted)
  assert.same(expected, from_slots)
  assert.is_true(t:stats().consistent)
end

describe("lease slots: per_resource", function()
  it("spreads 1000 slots over 10 resources, 100 holders each, free ones first", function()
    local t = leases { count = 10, slots = 1000, per_resource = 100 }
    local first = {}
    for s = 1, 10 do
      local i = t:acquire(s)
      assert.is_nil(first[i], "a held resource given while free ones were left")
      first[i] = true
    end
    for s = 11, 1000 do assert.is_not_nil(t:acquire(s)) end
    local hundred = {}
    for i = 1, 10 do hundred[i] = 100 end
    assert_holders(t, 1000, hundred)
    local st = t:stats()
    assert.equal(10, st.leased)
    assert.equal(0, st.free)
    assert.equal(100, st.per_resource)
  end)

  it("gives the resource with the fewest holders; none once all are full", function()
    local t = leases { count = 3, slots = 8, per_resource = 2 }
    for s = 1, 6 do t:acquire(s) end
    assert_holders(t, 8, { 2, 2, 2 })
    assert.is_nil(t:acquire(7))
    local i = t:held(4)
    t:release(4)
    assert.is_nil(t:held(4))
    assert.equal(i, t:acquire(7), "the one with room was not given")
    assert.is_nil(t:acquire(8))
  end)

  it("per_resource = 1 is one slot, one resource", function()
    local t = leases { count = 3, slots = 4 }
    local seen = {}
    for s = 1, 3 do
      local i = t:acquire(s)
      assert.is_nil(seen[i])
      seen[i] = true
      assert.equal(s, t:snapshot()[i].holder)
    end
    assert.is_nil(t:acquire(4))
    assert.equal(t:held(1), t:acquire(1), "acquire on a slot that holds one keeps it")
  end)

  it("among resources with equal holders, gives the least leased (as the pool always did)", function()
    local t = leases { count = 2, slots = 1 }
    local first = t:acquire(1)
    t:release(1)
    assert.equal(3 - first, t:acquire(1))
    t:release(1)
    assert.equal(first, t:acquire(1))
  end)

  it("counts failures in a row per resource, across its holders", function()
    local t = leases { count = 2, slots = 4, per_resource = 2, max_failures = 3 }
    for s = 1, 4 do t:acquire(s) end
    local shared = t:held(1)
    local mates = {}
    for s = 1, 4 do
      if t:held(s) == shared then mates[#mates + 1] = s end
    end
    assert.equal(2, #mates)
    assert.equal(shared, t:report(mates[1], false, "reset"))
    assert.equal(shared, t:report(mates[2], false, "reset"))
    assert.is_nil(t:report(mates[1], false, "reset"), "the other resource is full: nothing to lease")
    local r = t:snapshot()[shared]
    assert.equal("cooling", r.state)
    assert.equal(3, r.failures)
    assert.equal(0, r.holders)
  end)
end)

describe("lease slots: cooling takes a resource from every holder", function()
  -- 2 resources x 3 slots each, all held; returns the table, resource a (slot 1's) and
  -- its holders.
  local function full()
    local t = leases { count = 2, slots = 6, per_resource = 3 }
    for s = 1, 6 do t:acquire(s) end
    local a, on_a = t:held(1), {}
    for s = 1, 6 do
      if t:held(s) == a then on_a[#on_a + 1] = s end
    end
    assert.equal(3, #on_a)
    return t, a, on_a
  end

  for _, how in ipairs {
    { "swap", function(t, s) return t:swap(s, "banned") end, "cooling" },
    { "cool", function(t, s) return t:cool(s, 60, "429") end, "cooling" },
    { "retire", function(t, s) return t:retire(s, "gone") end, "retired" },
    { "max_failures", function(t, s)
      t:report(s, false, "refused")
      t:report(s, false, "refused")
      return t:report(s, false, "refused")
    end, "cooling" },
  } do
    it(how[1] .. " drops all holders at once, each slot then holding nothing", function()
      local t, a, on_a = full()
      assert.is_nil(how[2](t, on_a[1]), "the other resource is full")
      local r = t:snapshot()[a]
      assert.equal(how[3], r.state)
      assert.equal(0, r.holders)
      assert.is_nil(r.holder)
      for _, s in ipairs(on_a) do assert.is_nil(t:held(s)) end
      local counts = { 0, 0 }
      counts[3 - a] = 3
      assert_holders(t, 6, counts)
    end)
  end

  it("a stale entry is dropped lazily: report and release act as for a slot holding nothing", function()
    local t, a, on_a = full()
    local b = 3 - a
    t:swap(on_a[1])
    local stale = on_a[2]
    local before = t:snapshot()[a]
    assert.is_nil(t:report(stale, true), "a stale slot reported for a resource it lost")
    assert.is_nil(t:report(stale, false, "x"))
    t:release(stale)
    local after = t:snapshot()[a]
    assert.equal(before.successes, after.successes)
    assert.equal(before.failures, after.failures)
    assert.equal(0, after.holders)
    -- Room on b (one of its slots gives it back): the stale slot's acquire leases it.
    for s = 1, 6 do
      if t:held(s) == b then
        t:release(s)
        break
      end
    end
    assert.equal(b, t:acquire(stale))
    assert.is_true(t:stats().consistent)
  end)
end)

describe("lease slots: half-open probation", function()
  -- One resource (cooldown 0: due as soon as it cools), slots 1..nslots; slot 1 swaps it
  -- away, so that it is on probation at once.
  local function on_probation(opts)
    local o = { count = 1, slots = 4, per_resource = 4, cooldown = 0, max_cooldown = 0 }
    for k, v in pairs(opts or {}) do o[k] = v end
    local t = core.leases(o)
    for s = 1, 4 do t:acquire(s) end
    assert.is_nil(t:swap(1, "banned"))
    local r = t:snapshot()[1]
    assert.equal("free", r.state)
    assert.is_true(r.probation)
    return t
  end

  it("admits one slot whatever per_resource", function()
    local t = on_probation()
    assert.equal(1, t:acquire(3))
    local r = t:snapshot()[1]
    assert.equal("probing", r.state)
    assert.equal(1, r.holders)
    assert.equal(3, r.holder)
    for _, s in ipairs { 1, 2, 4 } do assert.is_nil(t:acquire(s)) end
    assert.equal(1, t:stats().probing)
  end)

  it("a success makes it normal again: cooldowns in a row back to 0, room for all", function()
    local t = on_probation()
    t:acquire(3)
    assert.equal(1, t:report(3, true))
    local r = t:snapshot()[1]
    assert.equal("leased", r.state)
    assert.is_nil(r.probation)
    assert.equal(0, r.cooldowns)
    for _, s in ipairs { 1, 2, 4 } do assert.equal(1, t:acquire(s)) end
    assert_holders(t, 4, { 4 })
  end)

  it("a probe's failure cools it at once, not after max_failures, counting a cooldown in a row", function()
    local t = on_probation { max_failures = 100 }
    t:acquire(2)
    assert.is_nil(t:report(2, false, "still banned"))
    local r = t:snapshot()[1]
    -- Cooled (cooldown 0: due again at once, so on probation again, with no holder).
    assert.equal("free", r.state)
    assert.is_true(r.probation)
    assert.equal(2, r.cooldowns)
    assert.equal(2, r.failures)
    assert.equal(0, r.holders)
    assert.equal("still banned", r.reason)
    assert.is_nil(t:held(2))
  end)

  it("retire_after counts probe failures: that many cooldowns in a row retire it", function()
    local t = on_probation { retire_after = 3 }   -- the swap was cooldown 1
    t:acquire(2)
    t:report(2, false, "probe 1")                  -- 2
    assert.is_false(t:none_left())
    assert.equal(1, t:acquire(2))
    t:report(2, false, "probe 2")                  -- 3: retired
    local r = t:snapshot()[1]
    assert.equal("retired", r.state)
    assert.equal(3, r.cooldowns)
    assert.is_true(t:none_left())
    assert.is_nil(t:acquire(2))
    assert.is_nil(t:next_revival())
  end)

  it("a probe's success between failures starts the count again", function()
    local t = on_probation { retire_after = 3 }
    t:acquire(2)
    t:report(2, false)                             -- 2 in a row
    t:acquire(2)
    t:report(2, true)                              -- 0
    t:swap(2)                                      -- 1
    t:acquire(2)
    t:report(2, false)                             -- 2
    assert.are_not.equal("retired", t:snapshot()[1].state)
    assert.equal(2, t:snapshot()[1].cooldowns)
  end)

  it("a released probe leaves it on probation for the next slot", function()
    local t = on_probation()
    t:acquire(2)
    t:release(2)
    local r = t:snapshot()[1]
    assert.equal("free", r.state)
    assert.is_true(r.probation)
    assert.equal(1, t:acquire(4))
    assert.is_nil(t:acquire(1))
  end)

  it("revives after a short cooldown, once next_revival says it is due", function()
    local t = leases { count = 1, slots = 2, per_resource = 2, cooldown = 0.05, max_cooldown = 0.05 }
    t:acquire(1)
    t:acquire(2)
    assert.is_nil(t:next_revival())
    t:swap(1)
    local left = t:next_revival()
    assert.is_true(left >= 0 and left <= 0.075)
    local deadline = forage.now() + WAIT_BOUND
    while t:next_revival() > 0 do
      assert(forage.now() < deadline, "the cooldown never ended")
      forage.sleep(0.01)
    end
    assert.is_nil(t:held(2), "the other holder lost it when it cooled")
    assert.equal(1, t:acquire(2))
    assert.equal("probing", t:snapshot()[1].state)
    assert.is_nil(t:acquire(1))
    assert.is_nil(t:next_revival())
  end)
end)

describe("lease slots: cool(slot, seconds)", function()
  it("honours seconds when longer than the exponential cooldown", function()
    local t = leases { count = 2, slots = 1, cooldown = 1, max_cooldown = 1 }
    t:acquire(1)
    local a = t:held(1)
    assert.equal(3 - a, t:cool(1, HOUR, "Retry-After: 3600"))
    local r = t:snapshot()[a]
    assert.equal("cooling", r.state)
    assert.is_true(r.cooldown > HOUR - 60, "cooled " .. r.cooldown .. " s, not Retry-After's hour")
    assert.equal("Retry-After: 3600", r.reason)
    assert.equal(1, r.failures)
  end)

  it("keeps the exponential cooldown when it is longer", function()
    local t = leases { count = 2, slots = 1 }    -- cooldown an hour, jittered: at least half
    t:acquire(1)
    local a = t:held(1)
    t:cool(1, 1, "Retry-After: 1")
    assert.is_true(t:snapshot()[a].cooldown > HOUR / 2 - 60)
    assert.is_true(t:next_revival() > HOUR / 2 - 60)
  end)

  it("refuses a negative or NaN number of seconds", function()
    local t = leases { count = 1, slots = 1 }
    assert.has_error(function() t:cool(1, -1) end,
      "bad argument #2 to 'cool' (cooldown must be a non-negative number of seconds, got -1)")
    assert.has_error(function() t:cool(1, 0 / 0) end)
    assert.has_error(function() t:cool(1, "soon") end, "bad argument #2 to 'cool' (number expected, got string)")
  end)
end)

describe("lease slots: pace", function()
  it("lets one use through, then says how long to wait, reserving nothing while waiting", function()
    local t = leases { count = 2, slots = 4, per_resource = 2 }
    assert.equal(0, t:pace(1, HOUR))
    local wait = t:pace(1, HOUR)
    assert.is_true(wait > HOUR - 60 and wait <= HOUR, wait)
    local again = t:pace(1, HOUR)
    assert.is_true(again <= wait, "a refused pace reserved more")
  end)

  it("is per resource, not per slot", function()
    local t = leases { count = 2, slots = 2 }
    assert.equal(0, t:pace(1, HOUR))
    assert.equal(0, t:pace(2, HOUR))
    assert.is_true(t:pace(2, HOUR) > 0)
  end)

  it("delay 0 always lets through", function()
    local t = leases { count = 1, slots = 1 }
    for _ = 1, 3 do assert.equal(0, t:pace(1, 0)) end
    assert.equal(0, t:pace(1, HOUR))
    assert.is_true(t:pace(1, 0) == 0, "delay 0 waits for nobody")
  end)

  it("raises on a bad index or delay", function()
    local t = leases { count = 2, slots = 1 }
    assert.has_error(function() t:pace(3, 1) end, "bad argument #1 to 'pace' (index must be from 1 to 2)")
    assert.has_error(function() t:pace(1, -0.5) end,
      "bad argument #2 to 'pace' (delay must be a non-negative number of seconds, got -0.5)")
  end)
end)

describe("lease slots: one table for all processes", function()
  it("a child's slots are the parent's; releasing a dead child's slots frees them unharmed", function()
    local t = leases { count = 5, slots = 50, per_resource = 10 }
    local child = forage.process(function()
      for s = 1, 50 do assert(t:acquire(s)) end
      t:report(1, true)
    end):start()
    finally(function()
      if child:alive() then child:kill() end
      child:join(5)
    end)
    assert.equal(0, child:join(WAIT_BOUND))
    assert_holders(t, 50, { 10, 10, 10, 10, 10 })
    for s = 1, 50 do t:release(s) end
    local successes = 0
    for _, r in ipairs(t:snapshot()) do
      assert.equal("free", r.state)
      assert.equal(0, r.failures)
      assert.equal(10, r.leases)
      successes = successes + r.successes
    end
    assert.equal(1, successes, "the child's report is not in the parent's table")
    assert.equal(5, t:stats().free)
  end)
end)

describe("lease slots: options", function()
  it("name says whose options they are", function()
    assert.has_error(function() core.leases { count = 1, slots = 1, name = "forage.crawl proxy", slot = 1 } end,
      "forage.crawl proxy: unknown option 'slot' (known: count, slots, max_failures, cooldown, "
      .. "max_cooldown, retire_after, per_resource, name)")
    assert.has_error(function() core.leases { count = 1, slots = 4, name = "forage.crawl proxy", per_resource = 5 } end,
      "forage.crawl proxy: option 'per_resource' must be an integer from 1 to 4, got 5")
    assert.has_error(function() core.leases { count = 1, slots = 4, name = false } end)
  end)

  it("takes 100000 slots in one mapping", function()
    local t = leases { count = 1000, slots = 100000, per_resource = 100 }
    for s = 1, 100000 do assert(t:acquire(s)) end
    local st = t:stats()
    assert.equal(100000, st.slots)
    assert.equal(1000, st.leased)
    assert.is_true(st.consistent)
    for _, r in ipairs(t:snapshot()) do assert.equal(100, r.holders) end
    assert.has_error(function() t:acquire(100001) end, "bad argument #1 to 'acquire' (slot must be from 1 to 100000)")
    assert.has_error(function() core.leases { count = 1, slots = 100001 } end,
      "forage.pool resource: option 'slots' must be an integer from 1 to 100000, got 100001")
  end)
end)

describe("lease slots: restore (a crawl resuming from its state)", function()
  it("cools a ready resource for the seconds given, so no slot gets it", function()
    local t = leases { count = 2, slots = 2, per_resource = 2 }
    t:restore(1, HOUR, "429 when the crawl stopped")
    local snap = t:snapshot()
    assert.equal("cooling", snap[1].state)
    assert.equal("429 when the crawl stopped", snap[1].reason)
    assert.is_true(snap[1].cooldown > HOUR - 60 and snap[1].cooldown <= HOUR)
    assert.equal(2, t:acquire(1))
    assert.equal(2, t:acquire(2), "the restored one is not leased while it cools")
    assert.is_true(t:next_revival() > HOUR - 60)
    assert.is_true(t:stats().consistent)
  end)

  it("leaves a held, cooling or retired resource, and 0 seconds, alone", function()
    local t = leases { count = 3, slots = 3 }
    assert.equal(1, t:acquire(1))
    t:restore(1, HOUR)
    assert.equal("leased", t:snapshot()[1].state)
    t:restore(2, 0)
    assert.equal("free", t:snapshot()[2].state)
    assert.equal(2, t:acquire(2))
    t:retire(2)
    t:restore(2, HOUR)
    assert.equal("retired", t:snapshot()[2].state)
    assert.has_error(function() t:restore(4, 1) end, "bad argument #1 to 'restore' (index must be from 1 to 3)")
    assert.has_error(function() t:restore(3, -1) end)
  end)
end)

describe("lease slots: disable and enable (a proxy another host holds)", function()
  it("disable takes a resource from all its holders and leases it to none until enabled", function()
    local t = leases { count = 2, slots = 4, per_resource = 2 }
    for slot = 1, 4 do t:acquire(slot) end
    t:disable(1)
    local snap = t:snapshot()
    assert.equal("off", snap[1].state)
    assert.equal(0, snap[1].holders)
    assert.is_nil(t:held(1))
    assert.is_nil(t:held(3))
    assert.equal(2, t:held(2), "the other resource's holders keep it")
    assert.is_nil(t:acquire(1), "resource 2 is full and resource 1 is off")
    assert.equal(1, t:stats().off)
    assert.is_false(t:none_left(), "off is not retired")
    assert.is_true(t:stats().consistent)
    t:enable(1)
    assert.equal(1, t:acquire(1))
    assert.equal(1, t:acquire(3))
    assert.is_true(t:stats().consistent)
  end)

  it("enable with seconds makes it cool first; neither touches a resource that is not off", function()
    local t = leases { count = 2, slots = 2 }
    t:disable(1)
    t:enable(1, HOUR, "banned on another host")
    local snap = t:snapshot()
    assert.equal("cooling", snap[1].state)
    assert.equal("banned on another host", snap[1].reason)
    assert.is_true(snap[1].cooldown > HOUR - 60)
    assert.equal(2, t:acquire(1))
    t:enable(2, HOUR)
    assert.equal("leased", t:snapshot()[2].state, "enable leaves a resource that is not off alone")
    t:retire(1)                        -- slot 1 holds resource 2: retired
    t:disable(2)
    assert.equal("retired", t:snapshot()[2].state, "a retired resource stays retired")
    assert.has_error(function() t:disable(3) end, "bad argument #1 to 'disable' (index must be from 1 to 2)")
    assert.has_error(function() t:enable(1, -1) end)
  end)
end)
