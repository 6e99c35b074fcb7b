-- What the crawl's crash-safe state stands on (issue "crash-safe crawls"): an exclusive
-- lock file that names its holder and dies with it (src/file.c), truncation and durability
-- of files, and SIGINT / SIGTERM as counted events for a graceful stop (src/signals.c).
-- Children report back through pipes; every child is reaped (helpers.reaped).
local forage = require "forage"
local core = require "forage.core"
local helpers = require "helpers"

local WAIT = 5   -- seconds: bounds a failure, never a success

local function on_exit(fn) helpers.on_exit(finally, fn) end

local function reaped(p) return helpers.reaped(finally, p) end

local function make_dir() return helpers.make_dir("file-spec") end

-- Runs fn in a child; returns what it sent back (one value) and its exit code.
local function in_child(fn)
  local r, w = forage.pipe(false)
  local p = reaped(forage.process(function() w:send(fn()) end):start())
  local reply = r:recv(WAIT)
  return reply, helpers.join_or_fail(p, WAIT)
end

-- What lock_file returns in another process: { taken = bool, message, kind }. A lock taken
-- there is released when the child leaves.
local function lock_elsewhere(path)
  local reply = in_child(function()
    local lock, message, kind = core.lock_file(path)
    return { taken = lock ~= nil, message = message, kind = kind }
  end)
  return reply
end

-- Sends the signal to this process from a child process and returns once it is handled.
-- Through io.popen, not os.execute: system(3) ignores SIGINT in its caller while the
-- command runs, which would discard the very signal under test. pclose returns after the
-- kill command has exited, so the signal was delivered by then.
local function signal_self(name)
  local cmd = assert(io.popen("kill -" .. name .. " " .. core.getpid()))
  cmd:read("a")
  assert(cmd:close())
end

-- True when the process pid has a descriptor open on path.
local function has_open(pid, path)
  local ls = assert(io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null"))
  local listing = ls:read("a")
  ls:close()
  return listing:find("-> " .. path, 1, true) ~= nil
end

-- "bad argument ..." raised by fn, with the position cut off.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

describe("core.lock_file", function()
  local dir, path
  before_each(function()
    dir = make_dir()
    path = dir .. "/lock"
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("takes the lock and writes the holder's pid, replacing what the file held", function()
    helpers.write(path, "a much longer line than any pid\nand a second one\n")
    local lock = assert(core.lock_file(path))
    assert.equal(core.getpid() .. "\n", helpers.read(path))
    assert.equal(path, lock.path)
    assert.is_true(lock.held)
    assert.equal("forage.FileLock '" .. path .. "' (taken by process " .. core.getpid() .. ")", tostring(lock))
    lock:release()
    assert.is_false(lock.held)
    assert.equal("forage.FileLock '" .. path .. "' (released)", tostring(lock))
    assert.equal(core.getpid() .. "\n", helpers.read(path))   -- the file stays: only the lock goes
  end)

  it("is exclusive: another process gets nil, a message naming the holder's pid, 'locked'", function()
    local lock = assert(core.lock_file(path))
    local other = lock_elsewhere(path)
    assert.is_false(other.taken)
    assert.equal("locked", other.kind)
    assert.equal("'" .. path .. "' is held by process " .. core.getpid(), other.message)
    lock:release()
  end)

  it("refuses a second lock on the same file in the same process, and keeps the first", function()
    local lock = assert(core.lock_file(path))
    local again, message, kind = core.lock_file(path)
    assert.is_nil(again)
    assert.equal("locked", kind)
    assert.equal("'" .. path .. "' is held by process " .. core.getpid(), message)
    -- Had the second call opened and closed the file, the first lock would be gone.
    assert.equal("locked", lock_elsewhere(path).kind)
    assert.is_true(lock.held)
    lock:release()
    assert.is_true(lock_elsewhere(path).taken)
  end)

  it("is released by release(), which can be called again", function()
    local lock = assert(core.lock_file(path))
    lock:release()
    lock:release()
    assert.is_true(lock_elsewhere(path).taken)
    local again = assert(core.lock_file(path))   -- and this process can take it again
    again:release()
  end)

  it("is released at the end of a <close> scope", function()
    do
      local lock <close> = assert(core.lock_file(path))
      assert.is_true(lock.held)
      assert.equal("locked", lock_elsewhere(path).kind)
    end
    assert.is_true(lock_elsewhere(path).taken)
  end)

  it("is released when the lock object is collected", function()
    local lock = assert(core.lock_file(path))
    assert.is_true(lock.held)
    lock = nil   -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.is_true(lock_elsewhere(path).taken)
  end)

  it("is released when its holder is killed with SIGKILL", function()
    local r, w = forage.pipe(false)
    local block = forage.pipe(false)
    local holder = reaped(forage.process(function()
      local lock = core.lock_file(path)
      w:send(lock ~= nil)
      block:recv()   -- never comes: the child waits here until killed
    end):start())
    assert.is_true(r:recv(WAIT))
    local none, message, kind = core.lock_file(path)
    assert.is_nil(none)
    assert.equal("locked", kind)
    assert.equal("'" .. path .. "' is held by process " .. holder.pid, message)
    holder:kill()
    assert.equal(-9, holder:join(WAIT))
    local lock = assert(core.lock_file(path))
    assert.equal(core.getpid() .. "\n", helpers.read(path))
    lock:release()
  end)

  it("is not held by a process forked while it is held: the holder's death frees it", function()
    local r, w = forage.pipe(false)
    local block = forage.pipe(false)
    local grandchild
    on_exit(function()
      if grandchild and helpers.exists(grandchild) then os.execute("kill -9 " .. grandchild) end
    end)
    local holder = reaped(forage.process(function()
      local lock = assert(core.lock_file(path))
      -- The grandchild inherits the lock object, not the lock (nor the descriptor: the fork
      -- closes it there).
      local g = forage.process(function()
        w:send({ role = "grandchild", pid = core.getpid(), held = lock.held })
        block:recv()
      end):start()
      w:send({ role = "holder", pid = core.getpid(), grandchild = g.pid, held = lock.held })
      block:recv()
    end):start())
    local reports = {}
    for _ = 1, 2 do
      local report = assert(r:recv(WAIT))
      reports[report.role] = report
      grandchild = grandchild or report.grandchild or (report.role == "grandchild" and report.pid)
    end
    assert.equal(grandchild, reports.holder.grandchild)
    assert.equal(holder.pid, reports.holder.pid)
    assert.is_true(reports.holder.held)
    assert.equal(grandchild, reports.grandchild.pid)
    assert.is_false(reports.grandchild.held)
    assert.is_true(has_open(holder.pid, path))
    assert.is_false(has_open(grandchild, path))
    local none, message = core.lock_file(path)
    assert.is_nil(none)
    assert.equal("'" .. path .. "' is held by process " .. holder.pid, message)

    holder:kill()
    assert.equal(-9, holder:join(WAIT))
    assert.is_true(helpers.exists(grandchild))
    local lock = assert(core.lock_file(path))   -- free, although the grandchild lives on
    lock:release()

    -- The grandchild is an orphan now: it is killed here, and reaped by init.
    os.execute("kill -9 " .. grandchild)
    local deadline = forage.now() + WAIT
    while helpers.exists(grandchild) and forage.now() < deadline do forage.sleep(0.01) end
    assert.is_false(helpers.exists(grandchild))
  end)

  it("in a forked child: release only closes the child's copy, the parent keeps the lock", function()
    local lock = assert(core.lock_file(path))
    local reply = in_child(function()
      local held_before = lock.held
      lock:release()
      local again, message, kind = core.lock_file(path)
      return { held_before = held_before, taken = again ~= nil, message = message, kind = kind }
    end)
    assert.is_false(reply.held_before)
    assert.is_false(reply.taken)
    assert.equal("locked", reply.kind)
    assert.equal("'" .. path .. "' is held by process " .. core.getpid(), reply.message)
    assert.is_true(lock.held)
    assert.equal("locked", lock_elsewhere(path).kind)
    lock:release()
  end)

  it("a child's own lock on the file survives the release of the copy it inherited", function()
    local lock = assert(core.lock_file(path))
    local r, w = forage.pipe(false)
    local go_r, go_w = forage.pipe(false)
    local block = forage.pipe(false)
    local child = reaped(forage.process(function()
      go_r:recv()   -- the parent has let go
      local own = assert(core.lock_file(path))
      lock:release()   -- the inherited copy: closing a descriptor of the file would drop `own`
      w:send(own.held)
      block:recv()
    end):start())
    lock:release()
    go_w:send("go")
    assert.is_true(r:recv(WAIT))
    local none, message, kind = core.lock_file(path)
    assert.is_nil(none)
    assert.equal("locked", kind)
    assert.equal("'" .. path .. "' is held by process " .. child.pid, message)
  end)

  it("returns nil, message, 'io' when the file cannot be opened or created", function()
    local none, message, kind = core.lock_file(dir .. "/missing/lock")
    assert.is_nil(none)
    assert.equal("io", kind)
    assert.equal("cannot open '" .. dir .. "/missing/lock': No such file or directory", message)
    none, message, kind = core.lock_file(dir)   -- a directory
    assert.is_nil(none)
    assert.equal("io", kind)
    assert.equal("cannot open '" .. dir .. "': Is a directory", message)
  end)

  it("raises on a bad path, naming the argument", function()
    assert.equal("bad argument #1 to 'lock_file' (string expected, got no value)",
      raised(function() core.lock_file() end))
    assert.equal("bad argument #1 to 'lock_file' (path contains zeros)",
      raised(function() core.lock_file(path .. "\0tail") end))
  end)
end)

describe("core.truncate", function()
  local path
  before_each(function()
    path = os.tmpname()
    helpers.write(path, "0123456789")
  end)
  after_each(function() os.remove(path) end)

  it("cuts a file to a length, and to nothing", function()
    assert.is_true(core.truncate(path, 4))
    assert.equal("0123", helpers.read(path))
    assert.is_true(core.truncate(path, 0))
    assert.equal("", helpers.read(path))
  end)

  it("returns nil, message, 'io' for a missing file", function()
    local ok, message, kind = core.truncate(path .. ".missing", 0)
    assert.is_nil(ok)
    assert.equal("io", kind)
    assert.equal("cannot truncate '" .. path .. ".missing': No such file or directory", message)
  end)

  it("raises on a bad length or path, naming the argument", function()
    assert.equal("bad argument #2 to 'truncate' (length must be a non-negative integer)",
      raised(function() core.truncate(path, -1) end))
    assert.equal("bad argument #2 to 'truncate' (number has no integer representation)",
      raised(function() core.truncate(path, 1.5) end))
    assert.equal("bad argument #2 to 'truncate' (number expected, got no value)",
      raised(function() core.truncate(path) end))
    assert.equal("bad argument #1 to 'truncate' (string expected, got table)",
      raised(function() core.truncate({}, 0) end))
    assert.equal("0123456789", helpers.read(path))
  end)
end)

describe("core.fsync and core.fsync_dir", function()
  local dir
  before_each(function() dir = make_dir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("fsync flushes a Lua file's buffer and syncs it", function()
    local f = assert(io.open(dir .. "/data", "w"))
    f:setvbuf("full")
    f:write("hello")
    assert.equal("", helpers.read(dir .. "/data"))   -- still in stdio's buffer
    assert.is_true(core.fsync(f))
    assert.equal("hello", helpers.read(dir .. "/data"))
    f:close()
  end)

  it("fsync returns nil, message, 'io' for a file that cannot be synced (a pipe)", function()
    local f = assert(io.popen("true"))
    local ok, message, kind = core.fsync(f)
    assert.is_nil(ok)
    assert.equal("io", kind)
    assert.equal("cannot sync file: Invalid argument", message)
    f:close()
  end)

  it("fsync raises on a closed file and on a non-file", function()
    local f = assert(io.open(dir .. "/data", "w"))
    f:close()
    assert.equal("attempt to use a closed file", raised(function() core.fsync(f) end))
    assert.equal("bad argument #1 to 'fsync' (FILE* expected, got number)", raised(function() core.fsync(42) end))
  end)

  it("fsync_dir syncs a directory, and fails with 'io' on a missing one or a file", function()
    helpers.write(dir .. "/file", "x")
    assert.is_true(core.fsync_dir(dir))
    local ok, message, kind = core.fsync_dir(dir .. "/missing")
    assert.is_nil(ok)
    assert.equal("io", kind)
    assert.equal("cannot open directory '" .. dir .. "/missing': No such file or directory", message)
    ok, message, kind = core.fsync_dir(dir .. "/file")
    assert.is_nil(ok)
    assert.equal("io", kind)
    assert.equal("cannot open directory '" .. dir .. "/file': Not a directory", message)
  end)
end)

describe("core.catch_signals", function()
  after_each(function() core.restore_signals() end)

  it("counts SIGTERM and SIGINT sent to this process and names the last", function()
    core.catch_signals()
    assert.same({ 0, 0, nil }, { core.caught_signals() })
    signal_self("TERM")
    assert.same({ 0, 1, "TERM" }, { core.caught_signals() })
    signal_self("INT")
    assert.same({ 1, 1, "INT" }, { core.caught_signals() })
    signal_self("TERM")
    signal_self("TERM")
    assert.same({ 1, 3, "TERM" }, { core.caught_signals() })   -- and this process lives on
    core.catch_signals()   -- again, while installed: the counts start over
    assert.same({ 0, 0, nil }, { core.caught_signals() })
    signal_self("INT")
    assert.same({ 1, 0, "INT" }, { core.caught_signals() })
    core.restore_signals()
    core.restore_signals()   -- idempotent
    assert.same({ 1, 0, "INT" }, { core.caught_signals() })   -- the counts stay readable
  end)

  it("restore_signals puts back the default: a SIGTERM then kills the process", function()
    local r, w = forage.pipe(false)
    local child = reaped(forage.process(function()
      core.catch_signals()
      signal_self("TERM")
      w:send({ core.caught_signals() })
      core.restore_signals()
      signal_self("TERM")
      w:send("survived")
    end):start())
    assert.same({ 0, 1, "TERM" }, r:recv(WAIT))
    assert.equal(-15, helpers.join_or_fail(child, WAIT))
    assert.same({ nil, "timeout", "timeout" }, { r:recv(0) })   -- "survived" never came
  end)

  it("restore_signals puts back the previous disposition, not the default", function()
    local reply, code = in_child(function()
      core.ignore_interrupts()   -- SIGINT ignored, as in a crawl's worker
      core.catch_signals()
      signal_self("INT")
      local counts = { core.caught_signals() }
      core.restore_signals()
      signal_self("INT")   -- ignored again: the child lives on
      return counts
    end)
    assert.same({ 1, 0, "INT" }, reply)
    assert.equal(0, code)
  end)
end)
