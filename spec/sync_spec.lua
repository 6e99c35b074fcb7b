-- Locks, semaphores, events, conditions and barriers shared by forked processes.
-- No shared value exists here: processes count in files, bumped under the lock.
local forage = require "forage"
local core = require "forage.core"
local helpers = require "helpers"

local children = {}

-- Starts fn(...) in a child process, reaped by after_each whatever happens.
local function spawn(fn, ...)
  local p = forage.process(fn, ...):start()
  children[#children + 1] = p
  return p
end

local read, write = helpers.read, helpers.write
local function join(p) return helpers.join_or_kill(p, 5) end

-- One write(2) per line (O_APPEND): lines from several processes never interleave.
local function append(path, line)
  local f = assert(io.open(path, "a"))
  f:write(line .. "\n")
  f:close()
end

local function lines(path)
  local t = {}
  for line in (read(path) or ""):gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- Reads, then rewrites the number in path: updates get lost unless the caller holds a lock.
local function bump(path)
  local n = tonumber(read(path)) or 0
  write(path, tostring(n + 1))
end

-- Waits up to timeout seconds for pred() to be true; returns whether it became true.
local function wait_until(pred, timeout)
  local deadline = forage.now() + (timeout or 5)
  while not pred() do
    if forage.now() > deadline then return false end
    forage.sleep(0.002)
  end
  return true
end

local function exists(path) return read(path) ~= nil end

-- True when process pid sleeps in a futex wait, as the kernel's wchan says: a condition
-- waiter asleep there has its notification counted, so a notify made now is neither
-- missed nor given to a waiter still on its way to sleep.
local function in_futex(pid)
  return (read("/proc/" .. pid .. "/wchan") or ""):find("futex", 1, true) ~= nil
end

-- The largest number of "+" lines not yet matched by "-" lines.
local function max_depth(path)
  local depth, max = 0, 0
  for _, line in ipairs(lines(path)) do
    depth = depth + (line == "+" and 1 or -1)
    if depth > max then max = depth end
  end
  return max
end

local temps = {}
local function tmp()
  local path = os.tmpname()
  os.remove(path)
  temps[#temps + 1] = path
  return path
end

after_each(function()
  for _, p in ipairs(children) do
    if p:alive() then p:kill() end
    p:join(5)
  end
  children = {}
  for _, path in ipairs(temps) do os.remove(path) end
  temps = {}
end)

describe("forage.lock", function()
  it("excludes other processes: 4 processes bump a file counter 150 times each", function()
    local lock, counter = forage.lock(), tmp()
    write(counter, "0")
    local procs = {}
    for i = 1, 4 do
      procs[i] = spawn(function()
        for _ = 1, 150 do
          lock:acquire()
          bump(counter)
          lock:release()
        end
      end)
    end
    for _, p in ipairs(procs) do assert.equal(0, join(p)) end
    assert.equal("600", read(counter))
  end)

  it("serialises the workers of a pool created after it", function()
    local counter = tmp()
    write(counter, "0")
    package.loaded["sync_spec.shared"] = { lock = forage.lock() }
    local pool <close> = forage.pool(3)
    local done = pool:map(function()
      local lock = require("sync_spec.shared").lock
      for _ = 1, 20 do lock:with(bump, counter) end
      return true
    end, { 1, 2, 3, 4, 5, 6 }, 1)
    package.loaded["sync_spec.shared"] = nil
    assert.same({ true, true, true, true, true, true }, done)
    assert.equal("120", read(counter))
  end)

  it("acquire(timeout) returns false while another process holds it, true once released", function()
    local lock, held, done = forage.lock(), tmp(), forage.event()
    spawn(function()
      lock:acquire()
      write(held, "yes")
      assert(done:wait(10))   -- holds the lock until the parent has seen its acquires fail
      lock:release()
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    assert.is_true(lock:locked())
    local t = forage.now()
    assert.is_false(lock:acquire(0.1))
    local waited = forage.now() - t
    assert.is_true(waited >= 0.09 and waited < 5, "waited " .. waited)
    assert.is_false(lock:acquire(0))
    done:set()
    t = forage.now()
    assert.is_true(lock:acquire(5))
    assert.is_true(forage.now() - t < 2)
    lock:release()
    assert.is_false(lock:locked())
  end)

  it("raises on misuse, with Python's messages", function()
    local lock, held = forage.lock(), tmp()
    assert.has_error(function() lock:release() end, "release unlocked lock")
    assert.has_error(function() lock:acquire(-1) end,
      "bad argument #1 to 'acquire' (timeout must be nil or a non-negative number of seconds, got -1)")
    assert.has_error(function() lock:acquire(0 / 0) end)
    assert.has_error(function() lock:acquire("1") end,
      "bad argument #1 to 'acquire' (timeout must be nil or a non-negative number of seconds, got '1')")
    assert.is_true(lock:acquire(math.huge))
    lock:release()
    assert.is_true(lock:acquire())
    assert.has_error(function() lock:acquire() end, "lock: acquire would deadlock: already held by this process")
    assert.is_false(lock:acquire(0.02))   -- with a timeout, as Python: waits it out
    lock:release()
    spawn(function()
      lock:acquire()
      write(held, "yes")
      forage.sleep(10)
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    assert.has_error(function() lock:release() end, "cannot release un-acquired lock")
    assert.has_error(function() lock.acquire(forage.rlock()) end)
    local ok, err = pcall(lock.acquire, forage.rlock())
    assert.is_false(ok)
    assert.truthy(err:find("forage.Lock expected, got forage.RLock", 1, true))
  end)

  it("a child cannot release the lock its parent holds", function()
    local lock, out = forage.lock(), tmp()
    lock:acquire()
    local p = spawn(function()
      local ok, err = pcall(lock.release, lock)
      write(out, tostring(ok) .. " " .. err .. " " .. tostring(lock:acquire(0.02)))
    end)
    assert.equal(0, join(p))
    assert.equal("false cannot release un-acquired lock false", read(out))
    lock:release()
  end)

  it("with returns fn's results, releases on error and raises the error itself", function()
    local lock = forage.lock()
    local a, b, c = lock:with(function(x, y) return x + y, nil, "z" end, 1, 2)
    assert.same({ 3, nil, "z" }, { a, b, c })
    assert.is_false(lock:locked())
    local e = { code = 7 }
    local ok, err = pcall(lock.with, lock, function()
      assert.is_true(lock:locked())
      error(e)
    end)
    assert.is_false(ok)
    assert.equal(e, err)
    assert.is_false(lock:locked())
    ok, err = pcall(lock.with, lock, function() error("boom") end)
    assert.is_false(ok)
    assert.truthy(err:find("boom", 1, true))
    assert.is_false(lock:locked())
    -- fn's error wins over the release that fails because fn released the lock itself.
    ok, err = pcall(lock.with, lock, function() lock:release() error("first") end)
    assert.is_false(ok)
    assert.truthy(err:find("first", 1, true))
    assert.has_error(function() lock:with(function() lock:release() end) end, "release unlocked lock")
  end)

  it("guard holds until the end of its scope, an error included", function()
    local lock, held = forage.lock(), tmp()
    do
      local g <close> = lock:guard()
      assert.is_true(lock:locked())
      assert.equal("forage.Guard (forage.Lock, held)", tostring(g))
    end
    assert.is_false(lock:locked())
    local ok, err = pcall(function()
      local _ <close> = lock:guard(1)
      error("inside")
    end)
    assert.is_false(ok)
    assert.truthy(err:find("inside", 1, true))
    assert.is_false(lock:locked())
    do   -- released early by hand: the end of the scope does nothing more
      local g <close> = lock:guard()
      g:release()
      assert.is_false(lock:locked())
    end
    spawn(function()
      lock:acquire()
      write(held, "yes")
      forage.sleep(10)
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    assert.has_error(function()
      local _ <close> = lock:guard(0.05)
    end, "lock: acquire timed out")
  end)

  it("a holder killed while holding it: the next acquire recovers it", function()
    local lock, held = forage.lock(), tmp()
    local p = spawn(function()
      lock:acquire()
      write(held, "yes")
      forage.sleep(10)
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    assert.equal("forage.Lock (locked by " .. p.pid .. ")", tostring(lock))
    p:kill()
    assert.equal(-9, join(p))
    assert.equal("forage.Lock (unlocked: its holder died)", tostring(lock))
    assert.is_true(lock:acquire(1))
    lock:release()
    assert.equal("forage.Lock (unlocked)", tostring(lock))
  end)

  it("stays usable through 50 SIGKILLs of processes looping acquire/release", function()
    local lock, progress = forage.lock(), tmp()
    local function looper(n, point)
      if point then point:arm() end
      local i = 0
      while true do
        lock:acquire()
        helpers.spin(0.0002)
        lock:release()
        i = i + 1
        if i % 20 == 0 then append(progress, n) end
      end
    end
    -- Each victim stops at a pause point while it holds the lock (just acquired, or about
    -- to release: in turn) and is killed there, while the other looper waits for the lock.
    local names = { "lock.acquired", "lock.releasing" }
    local points = { core.pause_point(names[1]), core.pause_point(names[2]) }
    local procs = { spawn(looper, 1), spawn(looper, 2) }
    for i = 1, 50 do
      local k = i % 2 + 1
      local point = points[i % 2 + 1]
      procs[k]:kill()   -- an unarmed looper, killed wherever it is
      assert.equal(-9, join(procs[k]))
      local victim = spawn(looper, k, point)
      procs[k] = victim
      assert.equal(victim.pid, point:wait(10), "kill " .. i .. ": " .. names[i % 2 + 1])
      assert.equal("forage.Lock (locked by " .. victim.pid .. ")", tostring(lock))
      victim:kill()
      assert.equal(-9, join(victim))
      procs[k] = spawn(looper, k)
    end
    -- The survivors still take turns: both make progress after the last kill.
    write(progress, "")
    assert.is_true(wait_until(function()
      local text = read(progress) or ""
      return text:find("1", 1, true) and text:find("2", 1, true)
    end, 5))
    for _, p in ipairs(procs) do p:kill() assert.equal(-9, join(p)) end
    assert.is_true(lock:acquire(1))
    lock:release()
    local fresh = spawn(function()
      assert(lock:acquire(1))
      lock:release()
      assert(not lock:locked())
    end)
    assert.equal(0, join(fresh))
  end)
end)

describe("forage.rlock", function()
  it("is re-entrant for its holder, counted, and released by its holder only", function()
    local rlock, out = forage.rlock(), tmp()
    assert.is_true(rlock:acquire())
    assert.is_true(rlock:acquire(0))
    assert.equal("forage.RLock (locked by " .. forage.getpid() .. ", count 2)", tostring(rlock))
    local p = spawn(function()
      local ok, err = pcall(rlock.release, rlock)
      local got = rlock:acquire(0.02)
      local after = rlock:acquire(5)   -- once the parent released it twice
      rlock:release()
      write(out, table.concat({ tostring(ok), err, tostring(got), tostring(after) }, "|"))
    end)
    forage.sleep(0.1)
    rlock:release()
    assert.equal("forage.RLock (locked by " .. forage.getpid() .. ", count 1)", tostring(rlock))
    forage.sleep(0.05)
    assert.is_true(p:alive())   -- still waiting: one release to go
    rlock:release()
    assert.equal(0, join(p))
    assert.equal("false|cannot release un-acquired lock|false|true", read(out))
    assert.has_error(function() rlock:release() end, "cannot release un-acquired lock")
  end)

  it("a holder killed with count 3: recovered, and the count starts again at 1", function()
    local rlock, held = forage.rlock(), tmp()
    local p = spawn(function()
      for _ = 1, 3 do rlock:acquire() end
      write(held, "yes")
      forage.sleep(10)
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    p:kill()
    join(p)
    assert.is_true(rlock:acquire(1))
    assert.equal("forage.RLock (locked by " .. forage.getpid() .. ", count 1)", tostring(rlock))
    rlock:release()
    assert.equal("forage.RLock (unlocked)", tostring(rlock))
  end)

  it("with and guard nest", function()
    local rlock = forage.rlock()
    local r = rlock:with(function()
      local _ <close> = rlock:guard()
      return rlock:with(function() return tostring(rlock) end)
    end)
    assert.equal("forage.RLock (locked by " .. forage.getpid() .. ", count 3)", r)
    assert.equal("forage.RLock (unlocked)", tostring(rlock))
  end)
end)

describe("forage.semaphore", function()
  it("admits at most n processes at once", function()
    local sem, log = forage.semaphore(2), tmp()
    local procs = {}
    for i = 1, 4 do
      procs[i] = spawn(function()
        for _ = 1, 15 do
          sem:with(function()
            append(log, "+")
            helpers.spin(0.001)
            append(log, "-")
          end)
        end
      end)
    end
    for _, p in ipairs(procs) do assert.equal(0, join(p)) end
    assert.equal(120, #lines(log))
    assert.is_true(max_depth(log) <= 2)
    assert.equal(2, sem:get_value())
  end)

  it("signals between processes: acquire waits for another process's release", function()
    local sem = forage.semaphore(0)
    assert.is_false(sem:acquire(0.05))
    local p = spawn(function() forage.sleep(0.05) sem:release(2) end)
    local t = forage.now()
    assert.is_true(sem:acquire(5))
    assert.is_true(sem:acquire(0))
    assert.is_true(forage.now() - t < 2)
    assert.is_false(sem:acquire(0))
    assert.equal(0, join(p))
    sem:release(5)   -- unbounded
    assert.equal(5, sem:get_value())
    assert.equal("forage.Semaphore (value 5)", tostring(sem))
  end)

  it("guard raises 'semaphore: acquire timed out'", function()
    local sem = forage.semaphore(0)
    assert.has_error(function() local _ <close> = sem:guard(0.02) end, "semaphore: acquire timed out")
    assert.equal(0, sem:get_value())
  end)

  it("refuses bad values", function()
    assert.has_error(function() forage.semaphore(-1) end,
      "bad argument #1 to 'semaphore' (initial value must not be negative)")
    assert.has_error(function() forage.semaphore(1):release(0) end,
      "bad argument #1 to 'release' (n must be at least 1)")
  end)

  it("permits held by a killed process are not returned; its internal lock never stays locked", function()
    local sem = forage.semaphore(100)
    -- A looper stopped at a pause point (in turn: holding the inner lock before taking a
    -- permit, holding it after taking one, holding it to give one back) is killed there.
    -- Killed at the first, it held no permit; at the other two, one, which is lost.
    local names = { "semaphore.acquire.locked", "semaphore.acquire.taken", "semaphore.release.locked" }
    local loses = { 0, 1, 1 }
    local points = {}
    for i, name in ipairs(names) do points[i] = core.pause_point(name) end
    local other = spawn(function() while true do sem:acquire() sem:release() end end)
    local lost = 0
    for i = 1, 21 do
      local k = (i - 1) % #points + 1
      local p = spawn(function()
        points[k]:arm()
        while true do sem:acquire() sem:release() end
      end)
      assert.equal(p.pid, points[k]:wait(10), names[k])
      p:kill()
      assert.equal(-9, join(p))
      lost = lost + loses[k]
    end
    -- The other looper holds one permit or none when it is stopped: stop it outside.
    other:kill()
    join(other)
    local value = sem:get_value()   -- recovers the inner lock if the other died holding it
    assert.is_true(value == 100 - lost or value == 100 - lost - 1, "value " .. value .. ", lost " .. lost)
    assert.is_true(sem:acquire(1))
    sem:release()
  end)
end)

describe("forage.bounded_semaphore", function()
  it("raises when released above its initial value", function()
    local sem = forage.bounded_semaphore(2)
    assert.has_error(function() sem:release() end, "semaphore released too many times")
    assert.is_true(sem:acquire())
    assert.is_true(sem:acquire())
    assert.is_false(sem:acquire(0.01))
    assert.equal("forage.BoundedSemaphore (value 0/2)", tostring(sem))
    assert.has_error(function() sem:release(3) end, "semaphore released too many times")
    sem:release(2)
    assert.has_error(function() sem:release() end, "semaphore released too many times")
    assert.equal(2, sem:get_value())
  end)

  it("with releases its permit, also from another process", function()
    local sem, out = forage.bounded_semaphore(1), tmp()
    local p = spawn(function()
      local ok = pcall(sem.with, sem, function() error("x") end)
      write(out, tostring(ok) .. " " .. sem:get_value())
    end)
    assert.equal(0, join(p))
    assert.equal("false 1", read(out))
    assert.equal(1, sem:get_value())
  end)
end)

describe("forage.event", function()
  it("set wakes waiters in several processes; wait(timeout) is false until then", function()
    local ev, log = forage.event(), tmp()
    assert.is_false(ev:is_set())
    assert.is_false(ev:wait(0.02))
    local procs = {}
    for i = 1, 3 do
      procs[i] = spawn(function() append(log, tostring(ev:wait(5))) end)
    end
    forage.sleep(0.05)
    assert.equal(0, #lines(log))
    local t = forage.now()
    ev:set()
    for _, p in ipairs(procs) do assert.equal(0, join(p)) end
    assert.is_true(forage.now() - t < 2)
    assert.same({ "true", "true", "true" }, lines(log))
    assert.is_true(ev:is_set())
    assert.is_true(ev:wait(0))
    assert.equal("forage.Event (set)", tostring(ev))
    ev:clear()
    assert.is_false(ev:is_set())
    assert.is_false(ev:wait(0))
    assert.has_error(function() ev:wait(-1) end,
      "bad argument #1 to 'wait' (timeout must be nil or a non-negative number of seconds, got -1)")
  end)

  it("has no acquire: it is waited on", function()
    assert.is_nil(forage.event().acquire)
  end)
end)

describe("forage.condition", function()
  -- Starts a child that takes cond, marks it is waiting, and logs what wait returned.
  local function waiter(cond, log, mark, timeout)
    return spawn(function()
      cond:acquire()
      append(mark, "w")   -- still holding: the parent's acquire means we are in wait
      local got = cond:wait(timeout or 5)
      append(log, tostring(got))
      cond:release()
    end)
  end

  it("wait in one process, notify in another", function()
    local cond, log, mark = forage.condition(), tmp(), tmp()
    local p = waiter(cond, log, mark)
    assert.is_true(wait_until(function() return exists(mark) end))
    assert.is_true(cond:acquire(5))
    cond:notify()
    cond:release()
    assert.equal(0, join(p))
    assert.same({ "true" }, lines(log))
  end)

  it("notify(1) wakes one waiter, notify_all the others", function()
    local cond, log, mark = forage.condition(forage.lock()), tmp(), tmp()
    for _ = 1, 3 do waiter(cond, log, mark) end
    assert.is_true(wait_until(function() return #lines(mark) == 3 end))
    assert.is_true(wait_until(function()   -- all three are asleep in wait
      for _, p in ipairs(children) do
        if not in_futex(p.pid) then return false end
      end
      return true
    end))
    cond:with(cond.notify, cond, 1)
    assert.is_true(wait_until(function() return #lines(log) == 1 end))
    forage.sleep(0.1)
    assert.equal(1, #lines(log))
    cond:with(cond.notify_all, cond)
    assert.is_true(wait_until(function() return #lines(log) == 3 end))
    assert.same({ "true", "true", "true" }, lines(log))
    for _, p in ipairs(children) do assert.equal(0, join(p)) end
  end)

  it("wait(timeout) returns false and holds the lock again", function()
    local cond = forage.condition()
    local _ <close> = cond:guard()
    local t = forage.now()
    assert.is_false(cond:wait(0.05))
    assert.is_true(forage.now() - t >= 0.045)
    assert.truthy(tostring(cond):find("rlock locked by " .. forage.getpid() .. ", count 1", 1, true))
  end)

  it("wait_for waits for a predicate another process makes true, or times out", function()
    local cond, state = forage.condition(), tmp()
    spawn(function()
      forage.sleep(0.05)
      cond:with(function()
        write(state, "ready")
        cond:notify_all()
      end)
    end)
    local got = cond:with(cond.wait_for, cond, function() return read(state) end, 5)
    assert.equal("ready", got)
    cond:acquire()
    local t = forage.now()
    assert.is_nil(cond:wait_for(function() return nil end, 0.05))
    assert.is_true(forage.now() - t >= 0.045)
    cond:release()
  end)

  it("a wait on an rlock held twice lets other processes in, then restores the count", function()
    local rlock, out = forage.rlock(), tmp()
    local cond = forage.condition(rlock)
    rlock:acquire()
    rlock:acquire()
    spawn(function()
      rlock:acquire()
      cond:notify()
      write(out, "in")
      rlock:release()
    end)
    assert.is_true(cond:wait(5))
    assert.equal("in", read(out))
    rlock:release()
    rlock:release()
    assert.has_error(function() rlock:release() end, "cannot release un-acquired lock")
  end)

  it("raises when waiting or notifying without holding its lock", function()
    local lock, held = forage.lock(), tmp()
    local cond = forage.condition(lock)
    assert.has_error(function() cond:wait(0) end, "cannot wait on un-acquired lock")
    assert.has_error(function() cond:wait_for(function() return false end, 0) end, "cannot wait on un-acquired lock")
    assert.has_error(function() cond:notify() end, "cannot notify on un-acquired lock")
    assert.has_error(function() cond:notify_all() end, "cannot notify on un-acquired lock")
    assert.has_error(function() cond:release() end, "release unlocked lock")
    spawn(function()
      lock:acquire()
      write(held, "yes")
      forage.sleep(10)
    end)
    assert.is_true(wait_until(function() return exists(held) end))
    assert.has_error(function() cond:notify() end, "cannot notify on un-acquired lock")
    assert.has_error(function() cond:wait(0) end, "cannot wait on un-acquired lock")
    assert.is_false(cond:acquire(0.02))
    assert.has_error(function() local _ <close> = cond:guard(0) end, "condition: acquire timed out")
    assert.has_error(function() forage.condition(forage.semaphore()) end,
      "bad argument #1 to 'condition' (forage.Lock or forage.RLock expected, got forage.Semaphore)")
  end)

  it("a waiter killed in wait leaves the condition working", function()
    local cond, log, mark = forage.condition(), tmp(), tmp()
    local doomed = waiter(cond, tmp(), mark)
    assert.is_true(wait_until(function() return #lines(mark) == 1 end))
    doomed:kill()
    join(doomed)
    local p = waiter(cond, log, mark)
    assert.is_true(wait_until(function() return #lines(mark) == 2 end))
    assert.is_true(wait_until(function() return in_futex(p.pid) end))
    cond:with(cond.notify, cond)
    assert.equal(0, join(p))
    assert.same({ "true" }, lines(log))
  end)
end)

describe("forage.barrier", function()
  it("gives each of n processes its arrival index, round after round", function()
    local barrier, log = forage.barrier(3), tmp()
    assert.equal(3, barrier.parties)
    assert.equal(0, barrier.n_waiting)
    local procs = {}
    for i = 1, 2 do
      procs[i] = spawn(function()
        for round = 1, 3 do append(log, round .. ":" .. assert(barrier:wait(5))) end
      end)
    end
    local mine = {}
    for round = 1, 3 do mine[round] = assert(barrier:wait(5)) end
    for _, p in ipairs(procs) do assert.equal(0, join(p)) end
    for round = 1, 3 do
      local seen = { [mine[round]] = true }
      for _, line in ipairs(lines(log)) do
        local r, index = line:match("^(%d+):(%d+)$")
        if tonumber(r) == round then seen[tonumber(index)] = true end
      end
      assert.same({ [0] = true, [1] = true, [2] = true }, seen)
    end
  end)

  it("counts its waiters", function()
    local barrier = forage.barrier(2)
    local p = spawn(function() barrier:wait(5) end)
    assert.is_true(wait_until(function() return barrier.n_waiting == 1 end))
    assert.equal("forage.Barrier (1/2 waiting)", tostring(barrier))
    assert.equal(1, barrier:wait(5))
    assert.equal(0, join(p))
    assert.equal(0, barrier.n_waiting)
  end)

  it("a timeout breaks it for everyone until reset", function()
    local barrier, log = forage.barrier(3), tmp()
    local p = spawn(function() append(log, table.concat({ tostring(barrier:wait(5)) }, ",")) end)
    assert.is_true(wait_until(function() return barrier.n_waiting == 1 end))
    assert.same({ nil, "broken", "broken" }, { barrier:wait(0.05) })
    assert.equal(0, join(p))
    assert.same({ "nil" }, lines(log))
    assert.is_true(barrier.broken)
    assert.equal(0, barrier.n_waiting)
    assert.equal("forage.Barrier (broken)", tostring(barrier))
    local index, err = barrier:wait(5)   -- at once
    assert.is_nil(index)
    assert.equal("broken", err)
    barrier:reset()
    assert.is_false(barrier.broken)
    local q = spawn(function() assert(barrier:wait(5)) end)
    local r = spawn(function() assert(barrier:wait(5)) end)
    assert.is_truthy(barrier:wait(5))
    assert.equal(0, join(q))
    assert.equal(0, join(r))
  end)

  it("its own timeout is the default of wait", function()
    local barrier = forage.barrier(2, 0.05)
    local t = forage.now()
    local index, err = barrier:wait()
    assert.is_nil(index)
    assert.equal("broken", err)
    assert.is_true(forage.now() - t < 1)
    barrier:reset()
    assert.is_false(barrier.broken)
  end)

  it("abort and reset break the wait of those waiting", function()
    for _, how in ipairs({ "abort", "reset" }) do
      local barrier, log = forage.barrier(2), tmp()
      local p = spawn(function()
        local index, err = barrier:wait(5)
        append(log, tostring(index) .. " " .. tostring(err))
      end)
      assert.is_true(wait_until(function() return barrier.n_waiting == 1 end))
      barrier[how](barrier)
      assert.equal(0, join(p))
      assert.same({ "nil broken" }, lines(log))
      assert.equal(how == "abort", barrier.broken)
      barrier:reset()
      local q = spawn(function() assert(barrier:wait(5)) end)
      assert.is_truthy(barrier:wait(5))
      assert.equal(0, join(q))
    end
  end)

  it("refuses bad arguments and has no acquire", function()
    assert.has_error(function() forage.barrier(0) end, "bad argument #1 to 'barrier' (parties must be at least 1)")
    assert.has_error(function() forage.barrier(2, -1) end,
      "bad argument #2 to 'barrier' (timeout must be nil or a non-negative number of seconds, got -1)")
    local barrier = forage.barrier(1)
    assert.equal(0, barrier:wait())
    assert.is_nil(barrier.acquire)
    assert.is_nil(barrier.nonsense)
  end)
end)

describe("every type", function()
  local constructors = {
    { "forage.Lock", forage.lock }, { "forage.RLock", forage.rlock },
    { "forage.Semaphore", forage.semaphore }, { "forage.BoundedSemaphore", forage.bounded_semaphore },
    { "forage.Event", forage.event }, { "forage.Condition", forage.condition },
    { "forage.Barrier", function() return forage.barrier(2) end },
  }

  it("is named, closes idempotently, and refuses use once closed", function()
    for _, c in ipairs(constructors) do
      local name, new = c[1], c[2]
      local obj = new()
      assert.truthy(tostring(obj):find("^" .. name:gsub("%.", "%%.") .. " %("))
      do local _ <close> = obj end
      getmetatable(obj).__gc(obj)
      assert.equal(name .. " (closed)", tostring(obj))
      local method = obj.acquire and "acquire" or "wait"
      assert.has_error(function() obj[method](obj, 0) end, "attempt to use a closed " .. name)
    end
  end)

  it("closing a lock this process holds releases it; closing it in a child leaves it to the others", function()
    local lock = forage.lock()
    local copy_holds = forage.lock()
    local p = spawn(function()
      copy_holds:acquire()
      getmetatable(lock).__close(lock)   -- only this child's view goes
      getmetatable(copy_holds).__close(copy_holds)
      assert(not pcall(lock.acquire, lock, 0))
    end)
    assert.equal(0, join(p))
    assert.is_true(lock:acquire(0))
    lock:release()
    assert.is_true(copy_holds:acquire(0))   -- released by the child's close
    copy_holds:release()
  end)

  it("lockables share acquire, release, with and guard", function()
    for _, c in ipairs(constructors) do
      local obj = c[2]()
      if obj.acquire then
        assert.is_true(obj:acquire(1))
        obj:release()
        assert.equal(5, obj:with(function(x) return x end, 5))
        do local _ <close> = obj:guard(1) end
        assert.is_true(obj:acquire(0))
        obj:release()
      end
    end
  end)
end)
