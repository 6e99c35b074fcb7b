local core = require "forage.core"
local frontier = require "forage.crawl.frontier"

-- Calls fn, which must raise; the message must contain text (plain).
local function raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "did not raise: expected " .. text)
  err = tostring(err)
  assert(err:find(text, 1, true), string.format("expected %q in %q", text, err))
  return err
end

-- Pops everything poppable now, one pop(n) call.
local function pop_all(f, n)
  return f:pop(n or 1000000)
end

describe("forage.core.frontier (the C store)", function()
  it("serves the highest priority first, FIFO within a priority", function()
    local f = core.frontier()
    f:push("h", 0, "a0")
    f:push("h", 5, "b5")
    f:push("h", -3, "c-3")
    f:push("h", 0, "d0")
    f:push("h", 5, "e5")
    f:push("h", math.maxinteger, "top")
    f:push("h", math.mininteger, "bottom")
    assert.same({ "top", "b5", "e5", "a0", "d0", "c-3", "bottom" }, pop_all(f))
    -- Breadth first: depth d+1 pushed after depth d comes out after it.
    for depth = 1, 3 do
      for i = 1, 3 do f:push("h", 0, depth .. ":" .. i) end
    end
    assert.same({ "1:1", "1:2", "1:3", "2:1", "2:2", "2:3", "3:1", "3:2", "3:3" }, pop_all(f))
  end)

  it("takes hosts round robin, so a huge host does not hold back the others", function()
    local f = core.frontier()
    for i = 1, 1000 do f:push("huge", 0, "huge" .. i) end
    f:push("small", 0, "small1")
    f:push("small", 0, "small2")
    f:push("tiny", 0, "tiny1")
    assert.same({ "huge1", "small1", "tiny1", "huge2", "small2", "huge3", "huge4" }, f:pop(7))
    -- A host that appears mid-round joins just behind the cursor: after every host already
    -- waiting, then in turn.
    local f2 = core.frontier()
    for _, h in ipairs { "a", "b", "c" } do
      for i = 1, 3 do f2:push(h, 0, h .. i) end
    end
    assert.same({ "a1" }, f2:pop(1))
    f2:push("d", 0, "d1")
    assert.same({ "b1", "c1", "a2", "d1", "b2", "c2", "a3", "b3", "c3" }, pop_all(f2))
    -- Priority is per host: a host's low-priority work still gets its turn.
    local f3 = core.frontier()
    f3:push("low", -10, "low1")
    f3:push("high", 10, "high1")
    f3:push("high", 10, "high2")
    assert.same({ "low1", "high1", "high2" }, pop_all(f3))
  end)

  it("holds a host at per_host in flight until done(host)", function()
    local f = core.frontier { per_host = 2 }
    for i = 1, 5 do f:push("a", 0, "a" .. i) end
    for i = 1, 3 do f:push("b", 0, "b" .. i) end
    assert.same({ "a1", "b1", "a2", "b2" }, pop_all(f))
    assert.same({}, f:pop(10))
    assert.same({ queued = 4, inflight = 4, hosts = 2 },
      (function(c) return { queued = c.queued, inflight = c.inflight, hosts = c.hosts } end)(f:counts()))
    f:done("a")
    assert.same({ "a3" }, pop_all(f))
    assert.same({}, f:pop(10))
    f:done("b")
    f:done("b")
    assert.same({ "b3" }, pop_all(f))
    f:done("a")
    f:done("a")
    assert.same({ "a4", "a5" }, pop_all(f))
    f:done("a")
    f:done("a")
    f:done("b")
    assert.equal(0, f:counts().inflight)
    assert.equal(0, f:counts().hosts)   -- nothing queued, nothing in flight: the hosts are gone
    raises("bad argument #1 to 'done' (host 'a' has nothing in flight)", function() f:done("a") end)
    raises("host 'nobody' has nothing in flight", function() f:done("nobody") end)
    -- per_host = 0: no limit.
    local free = core.frontier { per_host = 0 }
    for i = 1, 100 do free:push("a", 0, tostring(i)) end
    assert.equal(100, #free:pop(1000))
    assert.equal(100, free:counts().inflight)
  end)

  it("keeps thousands of hosts apart as hosts come and go (its host table grows and shrinks)", function()
    local f = core.frontier { per_host = 1 }
    local hosts = 5000
    for round = 1, 3 do
      for h = 1, hosts do f:push("host" .. h, 0, round .. "@" .. h) end
    end
    assert.equal(hosts, f:counts().hosts)
    local order = {}
    for h = 1, hosts do order[h] = h end
    for round = 1, 3 do
      -- One round: each host once (per_host = 1), in the order they came back to the ring.
      local got = f:pop(hosts * 3)
      assert.equal(hosts, #got)
      for k = 1, hosts do
        local want = round .. "@" .. order[k]
        if got[k] ~= want then error(string.format("round %d: %s where %s", round, got[k], want)) end
      end
      -- Ended in a scrambled order: the hosts that leave the table (round 3) leave holes
      -- all over it, and the others come back to the ring in this order.
      for k = 0, hosts - 1 do
        order[k + 1] = k * 7919 % hosts + 1
        f:done("host" .. order[k + 1])
      end
    end
    assert.same({ 0, 0, 0 }, { f:counts().queued, f:counts().inflight, f:counts().hosts })
    -- Every host is gone, and a new push of any of them starts afresh.
    for h = hosts, 1, -1 do f:push("host" .. h, 0, "again" .. h) end
    local again = f:pop(hosts)
    assert.equal(hosts, #again)
    assert.equal("again" .. hosts, again[1])
    assert.equal("again1", again[hosts])
    raises("host 'host1' has nothing in flight", function()
      f:done("host1")
      f:done("host1")
    end)
  end)

  it("keeps every entry's bytes, small, empty, binary and larger than a chunk, past many chunks", function()
    local f = core.frontier()
    local big = string.rep("\0\255x", 100000)   -- 300 KB: bigger than the largest chunk
    local expect = {}
    for i = 1, 100000 do
      local blob
      if i % 10007 == 0 then blob = big
      elseif i % 101 == 0 then blob = ""
      else blob = string.format("%d\0%s", i, string.rep("u", i % 300)) end
      expect[i] = blob
      f:push("h", 0, blob)
    end
    assert.equal(100000, #f)
    local got = {}
    while #f > 0 do
      for _, b in ipairs(f:pop(777)) do got[#got + 1] = b end
    end
    assert.equal(#expect, #got)
    for i = 1, #expect do
      if got[i] ~= expect[i] then error("entry " .. i .. " differs") end
    end
  end)

  it("counts queued, in flight, hosts, seen and its bytes; # is queued", function()
    local f = core.frontier()
    local empty = f:counts().bytes
    assert.same({ queued = 0, inflight = 0, hosts = 0, seen = 0, bytes = empty }, f:counts())
    for i = 1, 1000 do f:push("h" .. i % 10, 0, string.rep("r", 150)) end
    f:seen_add("x")
    local c = f:counts()
    assert.equal(1000, #f)
    assert.same({ 1000, 0, 10, 1 }, { c.queued, c.inflight, c.hosts, c.seen })
    assert.is_true(c.bytes > empty + 1000 * 150 and c.bytes < empty + 1000 * 200, c.bytes)
    f:pop(10)
    c = f:counts()
    assert.same({ 990, 10, 10 }, { c.queued, c.inflight, c.hosts })
    pop_all(f)
    for i = 1, 1000 do f:done("h" .. i % 10) end
    c = f:counts()
    assert.same({ 0, 0, 0, 1 }, { c.queued, c.inflight, c.hosts, c.seen })
    assert.equal(empty, c.bytes)   -- every chunk, level and host given back
  end)

  it("costs at most 200 bytes per queued ~150-byte encoded request", function()
    local f = core.frontier()
    local req = { url = "", host = "127.0.0.1:8080", callback = "detail", depth = 2, priority = 0, fp = "" }
    local sample = 0
    for i = 1, 100000 do
      req.url = string.format("http://127.0.0.1:8080/detail/%06d?ref=list-%d", i, i // 10)
      req.fp = string.format("%032x", i)
      req.id = i
      local blob = core.encode(req)
      sample = sample + #blob
      f:push(req.host, req.priority, blob)
    end
    local per_request = f:counts().bytes / 100000
    assert.is_true(per_request <= 200, per_request)
    assert.is_true(per_request < sample / 100000 + 8, per_request)   -- the blob and a few bytes, no more
  end)

  it("adds and finds seen keys as the table grows, with no false negative", function()
    local f = core.frontier()
    assert.is_true(f:seen_add("a"))
    assert.is_false(f:seen_add("a"))
    assert.is_true(f:seen_has("a"))
    assert.is_false(f:seen_has("b"))
    assert.is_true(f:seen_add(""))
    assert.is_true(f:seen_add("a\0b"))
    assert.is_false(f:seen_has("a\0c"))
    local before = f:counts().bytes
    for i = 1, 200000 do
      assert(f:seen_add("k" .. i), i)
    end
    assert.is_true(f:counts().bytes > before)   -- grown far past its first 1,024 slots
    for i = 1, 200000 do
      if not f:seen_has("k" .. i) then error("lost k" .. i) end
    end
    assert.equal(200003, f:counts().seen)
  end)

  it("gives 1,000,000 distinct fingerprints 1,000,000 places: no collision", function()
    local f = core.frontier()
    local fmt = string.format
    local new = 0
    for i = 1, 1000000 do
      if f:seen_add(fmt("%032x", i * 7919)) then new = new + 1 end
    end
    assert.equal(1000000, new)
    assert.equal(1000000, f:counts().seen)
    local again, others = 0, 0
    for i = 1, 1000000 do
      if not f:seen_add(fmt("%032x", i * 7919)) then again = again + 1 end
      if f:seen_has(fmt("%032x", i * 7919 + 1)) then others = others + 1 end
    end
    assert.equal(1000000, again)
    assert.equal(0, others)   -- a million keys never added: none reported seen
  end)

  it("refuses bad arguments and options in Lua's words", function()
    raises("forage.frontier: unknown option 'per_hosts' (known: per_host)",
      core.frontier, { per_hosts = 1 })
    raises("forage.frontier: option 'per_host' must be an integer from 0 to 2147483647, got -1",
      core.frontier, { per_host = -1 })
    raises("frontier' (table expected, got number)", core.frontier, 3)
    local f = core.frontier()
    raises("bad argument #2 to 'push' (number has no integer representation)", function() f:push("h", 1.5, "x") end)
    raises("bad argument #2 to 'push' (integer expected, got string)", function() f:push("h", "1", "x") end)
    raises("bad argument #1 to 'push' (host must not be empty)", function() f:push("", 0, "x") end)
    raises("bad argument #1 to 'push' (string expected, got nil)", function() f:push(nil, 0, "x") end)
    raises("bad argument #3 to 'push' (string expected, got table)", function() f:push("h", 0, {}) end)
    raises("bad argument #1 to 'pop' (count must be at least 1)", function() f:pop(0) end)
    raises("bad argument #1 to 'seen_add' (string expected, got no value)", function() f:seen_add() end)
    raises("bad argument #1 to 'seen_has' (string expected, got table)", function() f:seen_has({}) end)
    raises("forage.Frontier expected", function() f.pop({}) end)
    assert.equal(0, #f)
  end)

  it("closes once, by close, __close or __gc, and refuses use after", function()
    local f = core.frontier()
    f:push("h", 0, "x")
    f:seen_add("k")
    f:close()
    f:close()
    assert.equal("forage.Frontier (closed)", tostring(f))
    for _, call in ipairs {
      function() f:push("h", 0, "x") end, function() f:pop(1) end, function() f:done("h") end,
      function() f:seen_add("k") end, function() f:seen_has("k") end, function() f:counts() end,
      function() return #f end,
    } do
      raises("attempt to use a closed forage.Frontier", call)
    end
    local g
    do
      local scoped <close> = core.frontier()
      scoped:push("h", 0, "x")
      g = scoped
    end
    raises("attempt to use a closed forage.Frontier", function() g:pop(1) end)
  end)
end)

describe("forage.crawl.frontier.memory (the backend interface)", function()
  local function req(url, extra)
    local r = { url = url, fp = "fp:" .. url, callback = "parse", depth = 0 }
    for k, v in pairs(extra or {}) do r[k] = v end
    return r
  end
  local function urls(list)
    local out = {}
    for i, r in ipairs(list) do out[i] = r.url end
    return out
  end

  it("round-trips a request with all its data, and gives it an id", function()
    local fr <close> = frontier.memory()
    local r = req("http://a.test/x", {
      host = "a.test", priority = 3, depth = 2, method = "POST", body = "q=1\0",
      headers = { ["User-Agent"] = "forage" }, meta = { page = 7, tags = { "x", "y" } },
      attempts = 0, switches = 1, reasons = { "timeout" },
    })
    assert.is_true(fr:push(r))
    local got = fr:pop(10)
    assert.equal(1, #got)
    assert.is_not.equal(r, got[1])   -- a fresh table
    assert.is_not_nil(got[1].id)
    assert.same(r, got[1])           -- push gave r its id too
  end)

  it("gives back every field as it went, the unusual ones too", function()
    local fr <close> = frontier.memory()
    local cases = {
      { url = "http://a.test/1", fp = "1" },                                -- host from the url
      { url = "http://A.test/2", fp = "2", host = "a.test" },               -- the url's own host
      { url = "http://a.test/3", fp = "3", host = "cdn.a.test" },           -- another host
      { url = "http://a.test/4", fp = "4", callback = false, depth = "deep", priority = 2.0 },
      { url = "http://a.test/5", fp = "5", id = "theirs", meta = { url = "inner", [1] = true } },
      { url = "http://a.test/6", dont_filter = true, body = "", attempts = 0 },
    }
    for _, r in ipairs(cases) do assert.is_true(fr:push(r)) end
    local got = {}
    for _, r in ipairs(fr:pop(100)) do got[r.id] = r end
    for _, r in ipairs(cases) do
      assert.same(r, got[r.id])
    end
  end)

  it("queues a realistic request in at most 200 bytes, its seen entry included", function()
    local fr <close> = frontier.memory { per_host = 8 }
    local n = 100000
    local before = fr:counts().bytes
    for i = 1, n do
      local url = string.format("http://127.0.0.1:8080/detail/%d?ref=list-%d&sort=rating", 100000 + i, i // 10)
      assert(fr:push { url = url, host = "127.0.0.1:8080", callback = "detail", depth = 2, priority = -2,
                       fp = string.format("%032x", i) })
    end
    local per_request = (fr:counts().bytes - before) / n
    assert.is_true(per_request <= 200, per_request)
  end)

  it("dedupes by fp before queueing; dont_filter passes and marks nothing", function()
    local fr <close> = frontier.memory()
    assert.is_true(fr:push(req("http://a.test/1")))
    assert.is_false(fr:push(req("http://a.test/1")))
    assert.is_true(fr:push(req("http://a.test/1", { dont_filter = true })))
    assert.is_true(fr:push(req("http://a.test/2", { dont_filter = true })))
    assert.is_true(fr:push(req("http://a.test/2")))   -- dont_filter did not mark fp:…/2 seen
    assert.is_false(fr:seen("fp:http://a.test/1"))
    assert.is_true(fr:seen("fp:http://a.test/3"))
    assert.is_false(fr:push(req("http://a.test/3")))  -- seen() marks it for push too
    assert.same({ "http://a.test/1", "http://a.test/1", "http://a.test/2", "http://a.test/2" }, urls(fr:pop(10)))
    local c = fr:counts()
    assert.same({ 0, 4, 3, 1 }, { c.queued, c.inflight, c.seen, c.hosts })
    -- Without fp a request must say dont_filter.
    raises("bad argument #1 to 'push' (request needs a string fp (or dont_filter), got nil)",
      function() fr:push { url = "http://a.test/4" } end)
  end)

  it("orders by priority, FIFO, round robin over hosts, and holds per_host until ack or retry", function()
    local fr <close> = frontier.memory { per_host = 2 }
    fr:push(req("http://a.test/1"))
    fr:push(req("http://a.test/2"))
    fr:push(req("http://a.test/3"))
    fr:push(req("http://a.test/urgent", { priority = 10 }))
    fr:push(req("http://b.test/1"))
    fr:push(req("http://B.test:81/1"))   -- host from the url, port kept, lowercased
    local first = fr:pop(10)
    assert.same({ "http://a.test/urgent", "http://b.test/1", "http://B.test:81/1", "http://a.test/1" }, urls(first))
    assert.same({}, fr:pop(10))   -- a.test has 2 in flight
    fr:ack(first[1])
    local second = fr:pop(10)
    assert.same({ "http://a.test/2" }, urls(second))
    -- retry: back of its queue, same id, the engine's counters kept, in-flight mark gone.
    first[4].attempts = 1
    first[4].reasons = { "timeout" }
    fr:retry(first[4])
    local third = fr:pop(10)
    assert.same({ "http://a.test/3" }, urls(third))
    fr:ack(second[1])
    local fourth = fr:pop(10)
    assert.same({ "http://a.test/1" }, urls(fourth))
    assert.equal(first[4].id, fourth[1].id)
    assert.equal(1, fourth[1].attempts)
    assert.same({ "timeout" }, fourth[1].reasons)
    for _, r in ipairs { first[2], first[3], third[1], fourth[1] } do fr:ack(r) end
    local c = fr:counts()
    assert.same({ 0, 0, 0 }, { c.queued, c.inflight, c.hosts })
    raises("bad argument #1 to 'ack' (request " .. fourth[1].id .. " is not in flight)",
      function() fr:ack(fourth[1]) end)
    raises("bad argument #1 to 'retry' (request " .. fourth[1].id .. " is not in flight)",
      function() fr:retry(fourth[1]) end)
    raises("bad argument #1 to 'ack' (request nil is not in flight)", function() fr:ack {} end)
  end)

  it("raises naming the key that cannot be encoded, and queues and marks nothing", function()
    local fr <close> = frontier.memory()
    local r = req("http://a.test/x", { meta = { on_done = function() end } })
    raises("bad argument #1 to 'push' (request.meta.on_done: cannot send function in data mode)",
      function() fr:push(r) end)
    assert.same({ 0, 0 }, { fr:counts().queued, fr:counts().seen })
    r.meta.on_done = "done"
    assert.is_true(fr:push(r))
    local popped = fr:pop(1)[1]
    popped.meta.cb = print
    raises("bad argument #1 to 'retry' (request.meta.cb: cannot send function in data mode)",
      function() fr:retry(popped) end)
    assert.equal(1, fr:counts().inflight)   -- still in flight: the engine may fix and retry it
    popped.meta.cb = nil
    fr:retry(popped)
    assert.same({ 1, 0 }, { fr:counts().queued, fr:counts().inflight })
  end)

  it("refuses bad requests, arguments and options", function()
    local fr <close> = frontier.memory()
    raises("forage.crawl.frontier.memory: unknown option 'per_hots' (known: per_host)",
      frontier.memory, { per_hots = 1 })
    raises("forage.crawl.frontier.memory: option 'per_host' must be an integer from 0 to 2147483647, got 1.5",
      frontier.memory, { per_host = 1.5 })
    raises("bad argument #1 to 'push' (table expected, got string)", function() fr:push("http://a.test/") end)
    raises("bad argument #1 to 'push' (request priority must be an integer, got 0.5)",
      function() fr:push(req("http://a.test/", { priority = 0.5 })) end)
    raises("bad argument #1 to 'push' (request needs a host, or a url with one; got host nil, url 'a.test/x')",
      function() fr:push(req("a.test/x")) end)
    raises("bad argument #1 to 'pop' (count must be a positive integer, got 0)", function() fr:pop(0) end)
    raises("bad argument #1 to 'seen' (string expected, got no value)", function() fr:seen() end)
    -- The error names the caller's line, not this module's.
    local err = raises("priority", function() fr:push(req("http://a.test/", { priority = "high" })) end)
    assert.truthy(err:find("frontier_spec.lua", 1, true), err)
    assert.is_true(fr:push(req("http://a.test/", { priority = 2.0 })))   -- a float with an integer value is one
  end)

  it("closes once and refuses use after", function()
    local fr = frontier.memory()
    fr:push(req("http://a.test/1"))
    fr:close()
    fr:close()
    assert.equal("forage.crawl.frontier (memory, closed)", tostring(fr))
    for _, call in ipairs {
      function() fr:push(req("http://a.test/2")) end, function() fr:pop(1) end, function() fr:ack({ id = 1 }) end,
      function() fr:retry({ id = 1 }) end, function() fr:seen("x") end, function() fr:counts() end,
    } do
      local err = raises("attempt to use a closed forage.crawl.frontier", call)
      assert.truthy(err:find("frontier_spec.lua", 1, true), err)
    end
  end)
end)
