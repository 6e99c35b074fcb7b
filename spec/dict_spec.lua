local forage = require "forage"

local core = require "forage.core"
local join_within = require("helpers").join_or_fail

-- Runs fn in a child and returns its exit code (0 when fn returned, 1 when it raised).
local function in_child(fn, seconds)
  return join_within(forage.process(fn):start(), seconds or 5)
end

-- A value whose every part can be checked against the others: a torn write shows.
local function value_for(key, n)
  return { key = key, n = n, half = n + 0.5, s = string.rep(string.char(97 + n % 26), n), list = { n, -n } }
end

local function valid(key, v)
  return type(v) == "table" and v.key == key and math.type(v.n) == "integer" and math.type(v.half) == "float"
    and v.half == v.n + 0.5 and v.s == string.rep(string.char(97 + v.n % 26), v.n)
    and v.list[1] == v.n and v.list[2] == -v.n
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("forage.dict", function()
  it("gets, sets, deletes and counts, keeping nested tables and integers apart from floats", function()
    local d <close> = forage.dict()
    assert.equal(0, #d)
    assert.is_nil(d:get("missing"))
    d:set("movie", { title = "Farewell My Concubine", year = 1993, score = 9.5, tags = { "drama", { nested = true } } })
    d:set("three", 3)
    d:set("three.0", 3.0)
    d:set("bytes", "a\0b\255")
    assert.equal(4, #d)
    local movie = d:get("movie")
    assert.same({ title = "Farewell My Concubine", year = 1993, score = 9.5, tags = { "drama", { nested = true } } },
      movie)
    assert.equal("integer", math.type(movie.year))
    assert.equal("integer", math.type(d:get("three")))
    assert.equal("float", math.type(d:get("three.0")))
    assert.equal("a\0b\255", d:get("bytes"))
    movie.year = 2000                             -- a copy: the dict does not change
    assert.equal(1993, d:get("movie").year)
    d:set("three", "now a string")
    assert.equal("now a string", d:get("three"))
    assert.equal(4, #d)
    assert.is_true(d:delete("three"))
    assert.is_false(d:delete("three"))
    d:set("bytes", nil)                           -- nil deletes
    assert.is_nil(d:get("bytes"))
    assert.equal(2, #d)
    d:set("", "")
    assert.equal("", d:get(""))
    local factor = 2
    d:set("double", function(x) return x * factor end)   -- functions too: the process tree is trusted
    assert.equal(42, d:get("double")(21))
    assert.equal(4, #d)
  end)

  it("copy() is a snapshot table; d:pairs() and pairs(d) iterate a snapshot taken at the call", function()
    local d <close> = forage.dict()
    for i = 1, 50 do d:set("k" .. i, i) end
    local snapshot = d:copy()
    assert.equal(50, count(snapshot))
    for i = 1, 50 do assert.equal(i, snapshot["k" .. i]) end
    snapshot.k1 = "changed"
    d:set("k51", 51)
    assert.equal(1, d:get("k1"))
    assert.equal(50, count(snapshot))
    -- for k, v in d:pairs() do: an iterator, whose snapshot later changes do not touch
    local seen = {}
    for k, v in d:pairs() do
      d:set("new" .. k, 0)                        -- not seen by this loop
      seen[k] = v
    end
    assert.equal(51, count(seen))
    for i = 1, 51 do assert.equal(i, seen["k" .. i]) end
    for i = 1, 51 do d:delete("newk" .. i) end
    seen = {}
    for k, v in pairs(d) do
      d:delete(k)                                 -- safe: the loop walks the snapshot
      seen[k] = v
    end
    assert.equal(51, count(seen))
    assert.equal(51, seen.k51)
    assert.equal(0, #d)
    assert.same({}, d:copy())
    for _ in d:pairs() do error("an empty dict has nothing to iterate") end
  end)

  it("runs the blog's Manager example with string keys, and refuses other keys", function()
    -- Python: d[1] = '1'; d['2'] = 2; d[0.25] = None in a Process, then print(d) in the parent.
    local d <close> = forage.dict()
    local p = forage.process(function()
      d:set("1", "1")
      d:set("2", 2)
      d:set("0.25", nil)                          -- a Lua dict has no None: nil deletes
    end):start()
    assert.equal(0, join_within(p, 5))
    assert.same({ ["1"] = "1", ["2"] = 2 }, d:copy())
    assert.has_error(function() d:set(1, "1") end, "bad argument #1 to 'set' (string expected, got number)")
    assert.has_error(function() d:get(0.25) end, "bad argument #1 to 'get' (string expected, got number)")
    assert.has_error(function() d:delete(true) end,
      "bad argument #1 to 'delete' (string expected, got boolean)")
    assert.has_error(function() d:update(nil, tostring) end,
      "bad argument #1 to 'update' (string expected, got nil)")
    assert.equal(2, #d)
  end)

  it("update is an atomic read-modify-write: 4 processes x 1000 increments give 4000", function()
    local d <close> = forage.dict()
    local function increment(v) return (v or 0) + 1 end
    local workers = {}
    for i = 1, 4 do
      workers[i] = forage.process(function()
        for _ = 1, 1000 do d:update("hits", increment) end
      end):start()
    end
    for i = 1, 4 do assert.equal(0, join_within(workers[i], 8)) end
    assert.equal(4000, d:get("hits"))
    assert.equal("integer", math.type(d:get("hits")))
    assert.equal(4001, d:update("hits", increment))   -- returns what it stored
    assert.is_nil(d:update("hits", function() return nil end))   -- nil deletes
    assert.equal(0, #d)
  end)

  it("leaves the value and the lock as they were when update's function raises", function()
    local d <close> = forage.dict()
    d:set("x", { 1, 2 })
    assert.has_error(function() d:update("x", function(old) old[1] = 99 error("boom", 0) end) end, "boom")
    local err = { code = 7 }
    local ok, got = pcall(d.update, d, "x", function() error(err) end)
    assert.is_false(ok)
    assert.equal(err, got)                        -- the error value itself
    assert.has_error(function() d:update("x", function() return { co = coroutine.create(print) } end) end,
      "value.co: cannot send thread")
    assert.same({ 1, 2 }, d:get("x"))
    assert.has_error(function() d:update("x", function() return d:get("x") end) end,
      "cannot use a dict inside the function of its own update")
    -- The lock is free: another process takes it at once.
    assert.equal(0, in_child(function() d:update("x", function(v) v[1] = 10 return v end) end, 5))
    assert.same({ 10, 2 }, d:get("x"))
  end)

  it("raises clear errors when full, and changes nothing then", function()
    local d <close> = forage.dict{ capacity = 2 }
    d:set("a", 1)
    d:set("b", 2)
    assert.has_error(function() d:set("c", 3) end, "dict is full (capacity 2 entries)")
    assert.has_error(function() d:update("c", function() return 3 end) end, "dict is full (capacity 2 entries)")
    d:set("a", "replaced")                        -- a full dict still replaces
    assert.same({ a = "replaced", b = 2 }, d:copy())
    d:delete("b")
    d:set("c", 3)
    assert.same({ a = "replaced", c = 3 }, d:copy())

    local default <close> = forage.dict()
    local huge = string.rep("x", 2 * 1024 * 1024)
    assert.has_error(function() default:set("huge", huge) end,
      string.format("dict heap is full: 1048576 bytes (value of %d bytes)", #forage.encode(huge)))
    assert.equal(0, #default)

    local small <close> = forage.dict{ bytes = 8192 }
    local value = string.rep("v", 2000)
    local stored = 0
    local ok, err
    repeat
      ok, err = pcall(small.set, small, "k" .. stored + 1, value)
      if ok then stored = stored + 1 end
    until not ok
    assert.equal(string.format("dict heap is full: 8192 bytes (value of %d bytes)", #forage.encode(value)), err)
    assert.equal(4, stored)                       -- 4 records of 2,032 bytes fill 8,192
    assert.equal(4, #small)
    assert.is_nil(small:get("k5"))                -- never a silent miss: it raised
    for i = 1, 4 do assert.equal(value, small:get("k" .. i)) end
  end)

  it("reclaims replaced values and deleted entries (compaction)", function()
    local d <close> = forage.dict{ capacity = 8, bytes = 4096 }
    for i = 1, 5000 do
      local key = "k" .. i % 4
      d:set(key, value_for(key, i % 300))
      d:set("gone" .. i, i)                       -- a fresh key each time: tombstones pile up
      assert.is_true(d:delete("gone" .. i))
    end
    assert.equal(4, #d)
    for k, v in d:pairs() do assert.is_true(valid(k, v)) end
  end)

  it("checks its options", function()
    assert.has_error(function() forage.dict{ capacty = 3 } end,
      "forage.dict: unknown option 'capacty' (known: bytes, capacity)")
    assert.has_error(function() forage.dict{ capacity = 0 } end,
      "forage.dict: option 'capacity' must be an integer from 1 to 268435456, got 0")
    assert.has_error(function() forage.dict{ bytes = 1.5 } end,
      "forage.dict: option 'bytes' must be an integer from 64 to 1099511627776, got 1.5")
    assert.has_error(function() forage.dict("big") end, "bad argument #1 to 'dict' (table expected, got string)")
    local d <close> = forage.dict()
    assert.has_error(function() d:update("k", tostring, -1) end,
      "bad argument #3 to 'update' (timeout must be nil or a non-negative number of seconds, got -1)")
    assert.has_error(function() d:update("k", tostring, 0 / 0) end)
    assert.equal("1", d:update("k", function() return "1" end, math.huge))
    assert.equal("11", d:update("k", function(v) return v .. "1" end, 0))
  end)

  it("closes idempotently and says so afterwards", function()
    local d = forage.dict{ capacity = 16 }
    d:set("a", 1)
    assert.equal("forage.Dict (1/16 entries, 1048576 bytes)", tostring(d))
    d:close()
    d:close()
    assert.equal("forage.Dict (closed)", tostring(d))
    assert.has_error(function() d:get("a") end, "attempt to use a closed forage.Dict")
    assert.has_error(function() return #d end, "attempt to use a closed forage.Dict")
  end)

  it("stays consistent when writers are SIGKILLed in the middle of set/update/delete", function()
    -- A small heap, so that the writers compact often and some kills land in a compaction.
    local d <close> = forage.dict{ capacity = 16, bytes = 16 * 1024 }
    local keys = { "a", "b", "c", "d", "e", "f" }
    local function writer(seed)
      math.randomseed(seed)
      while true do
        local key = keys[math.random(#keys)]
        local op = math.random(6)
        if op <= 2 then
          d:set(key, value_for(key, math.random(0, 1200)))
        elseif op == 3 then
          d:update(key, function(old) return value_for(key, ((old and old.n or 0) + 37) % 1201) end)
        elseif op == 4 then
          d:update(key, function(old)              -- holds the lock a while
            local t = forage.now() + 0.0003
            while forage.now() < t do end
            return old
          end)
        elseif op == 5 then
          d:delete(key)
        else
          d:set(key, nil)
        end
      end
    end
    -- Each round kills two writers: one stopped at a pause point inside the lock (in turn:
    -- just locked, a record appended but not referenced, the slot switched but the counters
    -- not, a delete found or committed, a compaction halfway or before its flip), the
    -- other wherever it is.
    local names = { "dict.locked", "dict.store.appended", "dict.store.committed", "dict.delete.found",
      "dict.delete.committed", "dict.rebuild.copying", "dict.rebuild.commit" }
    local points = {}
    for i, name in ipairs(names) do points[i] = core.pause_point(name) end
    local kills = 0
    for round = 1, 50 do
      local point = points[(round - 1) % #points + 1]
      local a = forage.process(function(seed) point:arm() writer(seed) end, round * 2):start()
      local b = forage.process(writer, round * 2 + 1):start()
      assert.equal(a.pid, point:wait(10), "round " .. round .. ": " .. names[(round - 1) % #points + 1])
      a:kill()
      b:kill()
      assert.equal(-9, join_within(a, 5))
      assert.equal(-9, join_within(b, 5))
      kills = kills + 2
    end
    assert.equal(100, kills)
    -- First from a child with a time limit, so that a lock left broken fails instead of hanging.
    assert.equal(0, in_child(function()
      local n = 0
      for k, v in d:pairs() do
        n = n + 1
        assert(valid(k, v), "bad value under " .. k)
      end
      assert(n == #d, "#d does not match pairs()")
      d:set("after", 1)
      assert(d:update("after", function(v) return v + 1 end) == 2)
      assert(d:delete("after"))
    end, 5))
    local snapshot = d:copy()
    assert.equal(count(snapshot), #d)
    for k, v in pairs(snapshot) do
      assert.is_true(valid(k, v), "bad value under " .. k)
      assert.same(v, d:get(k))
    end
    for _, key in ipairs(keys) do d:set(key, value_for(key, 1000)) end
    assert.equal(#keys, #d)
  end)

  it("update with a timeout returns nil, 'timeout', 'timeout' while another process holds the lock", function()
    local d = forage.dict {}
    local inside, done = forage.event(), forage.event()
    local p = forage.process(function()
      d:update("k", function() inside:set() assert(done:wait(10)) return 1 end)
    end):start()
    assert.is_true(inside:wait(5))   -- the child holds the dict's lock until done is set
    assert.same({ nil, "timeout", "timeout" }, { d:update("k", function(old) return (old or 0) + 1 end, 0.05) })
    assert.same({ nil, "timeout", "timeout" }, { d:update("k", function(old) return (old or 0) + 1 end, 0) })
    done:set()
    assert.equal(2, d:update("k", function(old) return (old or 0) + 1 end, 5))
    assert.equal(0, p:join(5))
  end)
end)
