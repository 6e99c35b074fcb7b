-- The crawl's state (lua/forage/crawl/state.lua) through its API: a real SQLite file in a
-- fresh directory per test, reopened as a resumed crawl reopens it; crashes are real
-- SIGKILLs of forked children, the full disk a real small tmpfs. Every child is reaped.
local forage = require "forage"
local core = require "forage.core"
local sqlite = require "forage.sqlite"
local state = require "forage.crawl.state"
local helpers = require "helpers"

local WAIT = 5   -- seconds: bounds a failure, never a success
local SPIDER = { name = "spider", hash = "h1" }

local function on_exit(fn) helpers.on_exit(finally, fn) end

local function reaped(p) return helpers.reaped(finally, p) end

local function make_dir() return helpers.make_dir("state-spec") end

-- Runs a shell command; returns whether it succeeded and what it printed.
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

-- A request as the engine pushes it; label names it, and is its url's path.
local function request(label, host, priority, pad)
  local url = ("http://%s.test/%s?q=1"):format(host or "h", label)
  return {
    url = url, fp = forage.url.fingerprint(url), callback = "parse_" .. label, depth = #label,
    priority = priority, meta = { label = label, list = { 1, "two", { deep = true } }, bytes = "\0\255" .. label,
      pad = pad and string.rep("p", pad) or nil },
  }
end

local function label_of(req) return req.meta.label end

-- Every request the frontier serves now, in the order it serves them.
local function pop_all(fr)
  local all = {}
  while true do
    local got = fr:pop(64)
    if #got == 0 then return all end
    for _, req in ipairs(got) do all[#all + 1] = req end
  end
end

-- The labels of reqs, per host, each host's in the order served.
local function by_host(reqs)
  local hosts = {}
  for _, req in ipairs(reqs) do
    local host = req.url:match("^http://([^/]+)")
    hosts[host] = hosts[host] or {}
    table.insert(hosts[host], label_of(req))
  end
  return hosts
end

-- The sorted labels of reqs.
local function labels(reqs)
  local list = {}
  for _, req in ipairs(reqs) do list[#list + 1] = label_of(req) end
  table.sort(list)
  return list
end

local function sorted_keys(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  table.sort(list)
  return list
end

-- Opens the state and its frontier; both are closed at the end of the test.
local function open(dir, opts)
  local st = assert(state.open(dir, opts or SPIDER))
  local fr = assert(st:frontier())
  on_exit(function() fr:close() st:close() end)
  return st, fr
end

-- The bytes of every file of dir, by name.
local function snapshot(dir)
  local files = {}
  local ls = assert(io.popen("ls -A '" .. dir .. "'"))
  for name in ls:lines() do files[name] = helpers.read(dir .. "/" .. name) end
  ls:close()
  return files
end

-- Mounts a tmpfs of size at mnt (made), unmounted at the end of the test; marks the test
-- pending (and returns nil) when this machine does not allow it.
local function tmpfs(mnt, size)
  assert(core.mkdir(mnt))
  local ok, out = sh(("mount -t tmpfs -o size=%s tmpfs '%s'"):format(size, mnt))
  if not ok then
    pending("cannot mount a tmpfs here (" .. out:gsub("%s+$", "") .. "): needs root and CAP_SYS_ADMIN")
    return nil
  end
  on_exit(function() sh("umount -l '" .. mnt .. "'") end)
  return mnt
end

describe("forage.crawl.state", function()
  local base, dir
  before_each(function()
    base = make_dir()
    dir = base .. "/state"   -- not there yet: open makes it
  end)
  after_each(function() os.execute("rm -rf '" .. base .. "'") end)

  it("keeps every request not acked, its fields, order, ids and the seen set across a close", function()
    local st, fr = open(dir)
    -- pushed in this order; per host, the higher priority is served first, FIFO within one
    local plan = {
      { "a1", "a", 0 }, { "a2", "a", 0 }, { "a3", "a", 2 }, { "b1", "b", 0 }, { "a4", "a", 0 },
      { "a5", "a", 2 }, { "a6", "a", 0 }, { "a7", "a", 2 }, { "b2", "b", 0 }, { "b3", "b", 1 },
    }
    local pushed, ids = {}, {}
    for i, p in ipairs(plan) do
      local req = request(p[1], p[2], p[3])
      assert.is_true(fr:push(req))
      assert.equal(i, req.id)
      ids[p[1]] = req.id
      pushed[p[1]] = copy(req)
    end
    -- round robin over the hosts, the highest priority first: a3, a5 of a; b3, b1 of b
    local popped = {}
    for _, req in ipairs(fr:pop(4)) do popped[label_of(req)] = req end
    assert.same({ "a3", "a5", "b1", "b3" }, sorted_keys(popped))
    fr:ack(popped.a3)
    fr:ack(popped.b3)   -- the last pushed: the highest id, which no row holds any more
    popped.a5.attempts = 1
    popped.a5.reasons = { "timeout" }
    fr:retry(popped.a5)   -- behind a7, the other of a's priority 2
    -- b1 stays in flight, popped and never acked
    assert.is_true(fr:seen("a fingerprint seen, never pushed"))
    assert.is_true(st:commit({ stats = { pages = 2 } }))
    st:close()
    fr:close()
    assert.equal(8, state.read(dir).requests)

    local st2, fr2 = open(dir)
    local counts = fr2:counts()
    assert.equal(8, counts.queued)
    assert.equal(0, counts.inflight)
    assert.equal(11, counts.seen)
    assert.same({ pages = 2 }, st2:saved("stats"))
    local again = pop_all(fr2)
    assert.same({ ["a.test"] = { "a7", "a5", "a1", "a2", "a4", "a6" }, ["b.test"] = { "b1", "b2" } }, by_host(again))
    local seen_ids = {}
    for _, req in ipairs(again) do
      local label = label_of(req)
      local want = pushed[label]
      assert.equal(ids[label], req.id)
      assert.is_nil(seen_ids[req.id])
      seen_ids[req.id] = true
      for _, field in ipairs { "url", "fp", "callback", "depth", "priority" } do
        assert.equal(want[field], req[field], label .. "." .. field)
      end
      assert.same(want.meta, req.meta)
      if label == "a5" then
        assert.equal(1, req.attempts)
        assert.same({ "timeout" }, req.reasons)
      else
        assert.is_nil(req.attempts, label)
      end
    end
    -- the seen set came back: acked, queued and in-flight fingerprints alike
    assert.is_false(fr2:seen("a fingerprint seen, never pushed"))
    for _, label in ipairs { "a1", "a3", "b1", "b3" } do
      assert.is_false(fr2:push(request(label, label:sub(1, 1), 0)), label)
    end
    -- a new request gets an id above every id given before, the acked last one included
    local new = request("c1", "c", 0)
    assert.is_true(fr2:push(new))
    assert.equal(11, new.id)
    for _, req in ipairs(again) do fr2:ack(req) end
    assert.is_true(st2:commit())
    st2:close()
    fr2:close()

    local _, fr3 = open(dir)
    local last = pop_all(fr3)
    assert.same({ "c1" }, labels(last))
    assert.equal(11, last[1].id)
    local newer = request("c2", "c", 0)
    assert.is_true(fr3:push(newer))
    assert.equal(12, newer.id)
  end)

  it("forgets what was not committed when closed without a commit", function()
    local st, fr = open(dir)
    for i = 1, 4 do assert.is_true(fr:push(request("r" .. i))) end
    assert.is_true(st:commit())
    local got = fr:pop(2)
    assert.same({ "r1", "r2" }, labels(got))
    fr:ack(got[1])
    got[2].attempts = 5
    fr:retry(got[2])
    assert.is_true(fr:push(request("r5")))
    assert.is_true(fr:seen("a fingerprint seen after the commit"))
    st:close()
    fr:close()

    local _, fr2 = open(dir)
    assert.equal(4, fr2:counts().queued)
    assert.equal(4, fr2:counts().seen)
    local again = pop_all(fr2)
    assert.same({ "r1", "r2", "r3", "r4" }, labels(again))
    for _, req in ipairs(again) do assert.is_nil(req.attempts) end
    assert.is_true(fr2:push(request("r5")))   -- not seen: its push was not committed
    assert.is_true(fr2:seen("a fingerprint seen after the commit"))
    assert.is_false(fr2:push(request("r4")))
  end)

  -- A child opens the state, commits 20 requests (acking 5), then pushes 600 more with
  -- 4 kB of meta each without committing (more than SQLite's page cache: they spill into
  -- the WAL as uncommitted frames) and acks 5 more; then it dies by SIGKILL.
  local function crash(kill_self)
    local r, w = forage.pipe(false)
    local hold_r, hold_w = forage.pipe(false)
    local wal = dir .. "/" .. state.FILE .. "-wal"
    local function wal_size()
      local f = io.open(wal, "rb")
      if not f then return 0 end
      local size = f:seek("end")
      f:close()
      return size
    end
    local p = reaped(forage.process(function()
      local st = assert(state.open(dir, SPIDER))
      local fr = assert(st:frontier())
      for i = 1, 20 do assert(fr:push(request("c" .. i, "h" .. i % 3, i % 2))) end
      local acked = {}
      for _, req in ipairs(fr:pop(5)) do
        fr:ack(req)
        acked[label_of(req)] = true
      end
      assert(st:commit())
      local committed_wal = wal_size()
      for i = 1, 600 do assert(fr:push(request("u" .. i, "h" .. i % 3, 0, 4000))) end
      for _, req in ipairs(fr:pop(5)) do fr:ack(req) end
      w:send({ committed_wal = committed_wal, wal = wal_size(), pid = forage.getpid(), acked = acked })
      assert(hold_r:recv() == "die")
      if kill_self then
        local kill = io.popen("kill -9 " .. forage.getpid())
        kill:read("a")   -- dies here
      end
      hold_r:recv()   -- never comes: waits here until killed
    end):start())
    local report = assert(r:recv(WAIT))
    assert.equal(p.pid, report.pid)
    assert.is_true(report.wal > report.committed_wal + 1000000, "the uncommitted pushes did not reach the WAL")
    assert.equal(p.pid, state.read(dir).running_pid)
    hold_w:send("die")
    if not kill_self then p:kill() end
    assert.equal(-9, helpers.join_or_fail(p, WAIT))
    assert.is_nil(state.read(dir).running_pid)

    local _, fr = open(dir)
    local expected = {}
    for i = 1, 20 do
      if not report.acked["c" .. i] then expected[#expected + 1] = "c" .. i end
    end
    table.sort(expected)
    assert.equal(15, #expected)
    assert.same(expected, labels(pop_all(fr)))
    assert.equal(20, fr:counts().seen)
    assert.is_true(fr:push(request("u1", "h1", 0)))   -- its push died uncommitted
  end

  it("after a SIGKILL holds exactly what was committed (killed by its parent)", function()
    crash(false)
  end)

  it("after a SIGKILL holds exactly what was committed (killed by itself)", function()
    crash(true)
  end)

  it("keeps an output file's committed length, synced first, and not a length it was not told", function()
    local st = open(dir)
    local path = base .. "/items.jsonl"
    local out = assert(io.open(path, "wb"))
    out:setvbuf("full", 1 << 20)   -- nothing reaches the file until flushed
    local lines = {}
    for i = 1, 100 do lines[i] = ('{"n": %d}\n'):format(i) end
    local text = table.concat(lines)
    out:write(text)
    assert.equal("", helpers.read(path))
    assert.is_true(st:commit({ outputs = { items = { path = path, length = #text } } }, { out }))
    assert.equal(text, helpers.read(path))   -- the commit wrote the file out before saying so
    out:write('{"n": "after the commit"}\n')
    out:flush()
    st:commit({ stats = { items = 100 } })   -- no outputs entry: the saved one stays
    out:write('{"n": "never committed"}\n')
    out:close()
    st:close()

    local st2 = open(dir)
    assert.same({ items = { path = path, length = #text } }, st2:saved("outputs"))
    assert.same({ items = 100 }, st2:saved("stats"))
    assert.is_nil(st2:saved("no such key"))
  end)

  describe("the lock", function()
    -- state.open(dir) in a child: { opened = bool, message }.
    local function open_elsewhere()
      local r, w = forage.pipe(false)
      local p = reaped(forage.process(function()
        local st, message = state.open(dir, SPIDER)
        if st then st:close() end
        w:send({ opened = st ~= nil, message = message })
      end):start())
      local reply = assert(r:recv(WAIT))
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      return reply
    end

    it("refuses a second open, naming the first's pid, until it is closed", function()
      local st = assert(state.open(dir, SPIDER))
      local pid = forage.getpid()
      local other = open_elsewhere()
      assert.is_false(other.opened)
      assert.truthy(other.message:find(dir, 1, true), other.message)
      assert.truthy(other.message:find("held by process " .. pid, 1, true), other.message)
      -- this process too is refused a second state on it, and keeps the first
      local again, message = state.open(dir, SPIDER)
      assert.is_nil(again)
      assert.truthy(message:find("held by process " .. pid, 1, true), message)
      assert.is_false(open_elsewhere().opened)
      assert.equal(pid, state.read(dir).running_pid)
      st:close()
      st:close()   -- idempotent
      assert.is_nil(state.read(dir).running_pid)
      local reply = open_elsewhere()
      assert.is_true(reply.opened, reply.message)
      st = assert(state.open(dir, SPIDER))
      st:close()
    end)
  end)

  describe("refuses a state it must not resume, and leaves it as it was", function()
    it("another spider's: naming both names and both hashes and --fresh; fresh starts empty", function()
      local st, fr = open(dir, { name = "a", hash = "h1" })
      for i = 1, 3 do fr:push(request("x" .. i)) end
      assert.is_true(st:commit())
      st:close()
      local before = snapshot(dir)
      local others = { { name = "b", hash = "h2" }, { name = "b", hash = "h1" }, { name = "a", hash = "h2" } }
      for _, other in ipairs(others) do
        local refused, message = state.open(dir, other)
        assert.is_nil(refused)
        for _, word in ipairs { "'a'", "'" .. other.name .. "'", "h1", other.hash, "--fresh" } do
          assert.truthy(message:find(word, 1, true), word .. " not in: " .. message)
        end
        assert.equal(before[state.FILE], snapshot(dir)[state.FILE])
      end
      local kept, kept_fr = open(dir, { name = "a", hash = "h1" })
      assert.equal(3, kept_fr:counts().queued)
      kept:close()
      kept_fr:close()

      local fresh, fresh_fr = open(dir, { name = "b", hash = "h2", fresh = true })
      assert.same({ queued = 0, seen = 0 }, { queued = fresh_fr:counts().queued, seen = fresh_fr:counts().seen })
      assert.is_true(fresh_fr:push(request("x1")))
      assert.is_true(fresh:commit())
      fresh:close()
      local reopened, reopened_fr = open(dir, { name = "b", hash = "h2" })
      assert.same({ "x1" }, labels(pop_all(reopened_fr)))
      reopened:close()
    end)

    it("an older schema's: naming both schema versions", function()
      local st, fr = open(dir)
      fr:push(request("x"))
      assert.is_true(st:commit())
      st:close()
      local db = assert(sqlite.open(dir .. "/" .. state.FILE))
      local update = assert(db:prepare("UPDATE meta SET value = ? WHERE key = ?"))
      assert.equal(1, update:run(core.encode(0), "schema"))
      update:close()
      db:close()
      local before = snapshot(dir)
      local refused, message = state.open(dir, SPIDER)
      assert.is_nil(refused)
      assert.truthy(message:find("schema 0", 1, true), message)
      assert.truthy(message:find("schema " .. state.SCHEMA, 1, true), message)
      assert.truthy(message:find("--fresh", 1, true), message)
      assert.equal(before[state.FILE], snapshot(dir)[state.FILE])
    end)

    it("a file that is not a database: SQLite's message, the bytes unchanged", function()
      assert(core.mkdir(dir))
      local path = dir .. "/" .. state.FILE
      local garbage = string.rep("garbage\0\1\2", 2000)
      helpers.write(path, garbage)
      local refused, message = state.open(dir, SPIDER)
      assert.is_nil(refused)
      assert.truthy(message:find("file is not a database", 1, true), message)
      assert.truthy(message:find(path, 1, true), message)
      assert.equal(garbage, helpers.read(path))
      assert.is_false(exists(path .. "-wal"))
      local info, read_message = state.read(dir)
      assert.is_nil(info)
      assert.truthy(read_message:find("file is not a database", 1, true), read_message)
      assert.equal(garbage, helpers.read(path))
      -- the refusal released the lock: a fresh start is possible at once
      local fresh, fresh_fr = open(dir, { name = "spider", hash = "h1", fresh = true })
      assert.equal(0, fresh_fr:counts().queued)
      fresh:close()
    end)

    it("a valid state truncated to half its size: SQLite's message, the bytes unchanged", function()
      local st, fr = open(dir)
      for i = 1, 400 do fr:push(request("t" .. i, "h", 0, 500)) end
      assert.is_true(st:commit())
      st:close()   -- a clean close checkpoints: everything is in state.db, no WAL
      local path = dir .. "/" .. state.FILE
      assert.is_false(exists(path .. "-wal"))
      local whole = helpers.read(path)
      assert.is_true(#whole > 100000)
      assert.is_true(core.truncate(path, #whole // 2))
      local half = helpers.read(path)
      local refused, message = state.open(dir, SPIDER)
      assert.is_nil(refused)
      assert.truthy(message:find("database disk image is malformed", 1, true), message)
      assert.truthy(message:find("--fresh", 1, true), message)
      assert.equal(half, helpers.read(path))
    end)

    -- A crawl killed while its state was being created leaves a database without tables
    -- (sqlite3_open creates an empty file, the WAL pragma writes its header): nothing was
    -- ever committed there, and the next run must not be refused for it.
    it("a state killed before its first commit (a database with no tables) opens as a new one", function()
      assert(core.mkdir(dir))
      local path = dir .. "/" .. state.FILE
      for _, leftover in ipairs { "empty file", "WAL header only" } do
        os.remove(path)
        helpers.write(path, "")
        if leftover == "WAL header only" then
          local db = assert(sqlite.open(path))
          assert.is_true(db:exec("PRAGMA journal_mode = WAL"))
          db:close()
        end
        local st, message = state.open(dir, SPIDER)
        assert.is_not_nil(st, leftover .. ": " .. tostring(message))
        local fr = assert(st:frontier())
        assert.equal(0, fr:counts().queued)
        assert.is_true(fr:push(request("n1")))
        assert.is_true(st:commit())
        st:close()
        fr:close()
        local again, again_fr = open(dir)
        assert.same({ "n1" }, labels(pop_all(again_fr)))
        again:close()
        again_fr:close()
      end
    end)
  end)

  describe("on a small disk", function()
    it("a full disk fails a commit with a clear message; reopened, exactly the last commit's requests", function()
      local mnt = tmpfs(base .. "/mnt", "256k")
      if not mnt then return end
      dir = mnt .. "/state"
      local filler = mnt .. "/filler"
      local n = 0
      -- Pushes batches of requests with 3 kB of meta (acking one and retrying one of each)
      -- and commits each, until a commit fails. model: label -> attempts (false when none)
      -- of every request not acked (as committed when called), kept up to date; returns
      -- the model as of the last commit that succeeded, the failure, and the number of
      -- commits that succeeded.
      local function fill_up(st, fr, model)
        local committed, commits = copy(model), 0
        for _ = 1, 200 do
          for _ = 1, 5 do
            n = n + 1
            local label = "big" .. n
            assert.is_true(fr:push(request(label, "h" .. n % 2, n % 3, 3000)))
            model[label] = false
          end
          local got = fr:pop(2)
          fr:ack(got[1])
          model[label_of(got[1])] = nil
          got[2].attempts = (got[2].attempts or 0) + 1
          fr:retry(got[2])
          model[label_of(got[2])] = got[2].attempts
          local ok, message, kind = st:commit({ stats = { pushed = n } })
          if not ok then return committed, { message = message, kind = kind }, commits end
          committed = copy(model)
          commits = commits + 1
        end
        error("the disk never filled up")
      end
      local function check_reopened(expected)
        local st, fr = open(dir)
        local got = {}
        for _, req in ipairs(pop_all(fr)) do got[label_of(req)] = req.attempts or false end
        assert.same(expected, got)
        st:close()
        fr:close()
      end

      helpers.write(filler, string.rep("f", 64 * 1024))
      local st, fr = open(dir)
      local model = {}
      local committed, failure, commits = fill_up(st, fr, model)
      assert.is_true(commits > 0, "not even the first commit fitted")
      assert.equal("full", failure.kind)
      assert.truthy(failure.message:find("disk is full", 1, true), failure.message)
      assert.truthy(failure.message:find(dir, 1, true), failure.message)
      st:close()
      fr:close()
      check_reopened(committed)   -- as it is, the disk still full
      assert(os.remove(filler))
      check_reopened(committed)

      -- With room again it goes on, until the disk is full again. Then the disk grows while
      -- the failed batch is still in memory: a commit now either fails again or holds the
      -- whole of it, never a state without the batch the failed commit lost.
      local st2, fr2 = open(dir)
      model = copy(committed)
      assert.is_true(fr2:push(request("after")))
      assert.is_true(st2:commit())
      model.after = false
      committed, failure = fill_up(st2, fr2, model)
      assert.equal("full", failure.kind)
      local grown, out = sh("mount -o remount,size=4m '" .. mnt .. "'")
      assert(grown, out)
      if st2:commit() then committed = copy(model) end
      st2:close()
      fr2:close()
      check_reopened(committed)
    end)

    -- A transaction larger than SQLite's page cache (2 MB) spills into the WAL before its
    -- commit: there it is a push, not the commit, that meets the full disk.
    it("a disk that fills up under a large transaction: the commit fails; the state is the last commit", function()
      local mnt = tmpfs(base .. "/mnt", "2m")
      if not mnt then return end
      dir = mnt .. "/state"
      local st, fr = open(dir)
      local model = {}
      for i = 1, 10 do
        assert.is_true(fr:push(request("small" .. i)))
        model["small" .. i] = true
      end
      assert.is_true(st:commit())
      local committed = copy(model)
      for i = 1, 1000 do   -- 4 MB, twice the disk: pushes never raise, the journal keeps the error
        assert.is_true(fr:push(request("large" .. i, "h", 0, 4000)))
        model["large" .. i] = true
      end
      local ok, message, kind = st:commit()
      assert.is_nil(ok)
      assert.equal("full", kind)
      assert.truthy(message:find("disk is full", 1, true), message)
      -- room enough now: a commit either fails again or holds every push
      local grown, out = sh("mount -o remount,size=16m '" .. mnt .. "'")
      assert(grown, out)
      if st:commit() then committed = copy(model) end
      st:close()
      fr:close()
      local _, fr2 = open(dir)
      local got = {}
      for _, req in ipairs(pop_all(fr2)) do got[label_of(req)] = true end
      assert.same(sorted_keys(committed), sorted_keys(got))
    end)

    it("a read-only disk: a clear error, nothing changed", function()
      local mnt = tmpfs(base .. "/mnt", "1m")
      if not mnt then return end
      dir = mnt .. "/state"
      local st, fr = open(dir)
      for i = 1, 5 do fr:push(request("ro" .. i)) end
      assert.is_true(st:commit())
      st:close()
      fr:close()
      local ok, out = sh("mount -o remount,ro '" .. mnt .. "'")
      assert(ok, out)
      local before = snapshot(dir)
      local refused, message = state.open(dir, SPIDER)
      assert.is_nil(refused)
      assert.truthy(message:find(dir, 1, true), message)
      assert.truthy(message:find("Read-only file system", 1, true), message)
      assert.same(before, snapshot(dir))
      ok, out = sh("mount -o remount,rw '" .. mnt .. "'")
      assert(ok, out)
      local _, fr2 = open(dir)
      assert.same({ "ro1", "ro2", "ro3", "ro4", "ro5" }, labels(pop_all(fr2)))
    end)
  end)

  describe("state.read", function()
    it("on a missing directory: nil and a message", function()
      local info, message = state.read(base .. "/nowhere")
      assert.is_nil(info)
      assert.truthy(message:find(base .. "/nowhere", 1, true), message)
    end)

    it("on a live state shows its running pid; after its crawl exits, none", function()
      local r, w = forage.pipe(false)
      local go_r, go_w = forage.pipe(false)
      local p = reaped(forage.process(function()
        local st = assert(state.open(dir, { name = "live", hash = "hx" }))
        local fr = assert(st:frontier())
        for i = 1, 3 do fr:push(request("l" .. i)) end
        assert(st:commit())
        w:send("ready")
        go_r:recv()
        st:close()
        fr:close()
      end):start())
      assert.equal("ready", r:recv(WAIT))
      local info = assert(state.read(dir))
      assert.equal(p.pid, info.running_pid)
      assert.equal(3, info.requests)
      assert.equal("live", info.meta.name)
      assert.equal("hx", info.meta.hash)
      assert.equal(state.SCHEMA, info.meta.schema)
      go_w:send("go")
      assert.equal(0, helpers.join_or_fail(p, WAIT))
      info = assert(state.read(dir))
      assert.is_nil(info.running_pid)
      assert.equal(3, info.requests)
    end)
  end)
end)
