local forage = require "forage"
local helpers = require "helpers"
local slurp = helpers.read
local show = require("forage.args").show

-- This file's name as Lua reports it in error positions.
local SOURCE = debug.getinfo(1, "S").short_src

local function reaped(p) return helpers.reaped(finally, p) end

-- A started child that blocks until told to go (go(), then it exits 0) or killed: a
-- process whose state the spec decides, never a timed busy loop.
local function blocked_child()
  local r, w = forage.pipe(false)
  local p = reaped(forage.process(function() r:recv() end):start())
  return p, function() w:send("go") end
end

describe("forage.process", function()
  it("runs a function with its arguments in a child and joins it", function()
    local path = os.tmpname()
    local p = forage.process(function(name, n)
      local f = assert(io.open(path, "w"))
      f:write("hello ", name, " ", n, " from ", forage.getpid())
      f:close()
    end, "bob", 3)
    assert.is_nil(p.pid)
    p:start()
    assert.is_true(math.type(p.pid) == "integer" and p.pid > 0)
    assert.equal(0, p:join())
    assert.equal(0, p.exitcode)
    assert.equal("hello bob 3 from " .. p.pid, slurp(path))
    os.remove(path)
  end)

  it("exits 1 and prints the traceback to stderr when the function raises", function()
    local out, ok = helpers.run_lua([[
      local forage = require "forage"
      local function inner() error("boom in child") end
      local p = forage.process(function() inner() end):start()
      io.stdout:write("exit ", p:join(), "\n")
    ]])
    assert.is_true(ok)
    assert.truthy(out:find("boom in child", 1, true))
    assert.truthy(out:find("stack traceback", 1, true))
    assert.truthy(out:find("in upvalue 'inner'", 1, true) or out:find("inner", 1, true))
    assert.truthy(out:find("exit 1", 1, true))
  end)

  it("join with a timeout returns nil, 'timeout', 'timeout' while the child runs", function()
    local p = blocked_child()
    local code, err, kind = p:join(0.05)
    assert.is_nil(code)
    assert.equal("timeout", err)
    assert.equal("timeout", kind)
    assert.is_true(p:alive())
    p:kill()
    assert.equal(-9, p:join(5))
    assert.equal(-9, p.exitcode)
  end)

  it("join(0) does not wait", function()
    local p = blocked_child()
    assert.same({ nil, "timeout", "timeout" }, { p:join(0) })
    p:kill()
    assert.equal(-9, p:join(5))
  end)

  it("join waits forever for nil, math.huge and any timeout over 1e9 seconds", function()
    for _, forever in ipairs { false, math.huge, 1e300, 1e10 } do
      local p, go = blocked_child()
      go()
      if forever then
        assert.equal(0, p:join(forever))
      else
        assert.equal(0, p:join(nil))
      end
    end
  end)

  it("join raises on a negative, NaN or non-number timeout, at the caller's line", function()
    -- An exited child: a join that wrongly accepted the timeout returns at once.
    local p = forage.process(function() end):start()
    assert.equal(0, p:join(5))
    for _, bad in ipairs { -1, -math.huge, 0 / 0, "1", {} } do
      local ok, err = pcall(function() p:join(bad) end) local line = debug.getinfo(1, "l").currentline
      assert.is_false(ok)
      assert.equal(SOURCE .. ":" .. line .. ": bad argument #1 to 'join' (timeout must be nil or a "
        .. "non-negative number of seconds, got " .. show(bad) .. ")", err)
    end
  end)

  it("terminate sends SIGTERM", function()
    local p = blocked_child()
    p:terminate()
    assert.equal(-15, p:join(5))
  end)

  it("does not print the parent's buffered output twice", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:setvbuf("full")
    f:write("parent line\n")          -- buffered, not yet written when the child forks
    local p = forage.process(function() f:write("child line\n") end):start()
    assert.equal(0, p:join(5))
    f:write("parent again\n")
    f:close()
    local text = slurp(path)
    local _, parents = text:gsub("parent line", "")
    assert.equal(1, parents)
    assert.truthy(text:find("child line", 1, true))
    os.remove(path)
  end)

  it("refuses to start twice and to join an unstarted process", function()
    local p = forage.process(function() end)
    assert.has_error(function() p:join() end, "cannot join a process that was not started")
    p:start()
    assert.has_error(function() p:start() end)
    p:join()
  end)

  it("rejects a non-function in Lua's words, at the caller's line", function()
    local ok, err = pcall(function() forage.process(42) end) local line = debug.getinfo(1, "l").currentline
    assert.is_false(ok)
    assert.equal(SOURCE .. ":" .. line .. ": bad argument #1 to 'process' (function expected, got number)", err)
    assert.falsy(err:find("init.lua", 1, true))
    ok, err = pcall(function() forage.process() end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'process' %(function expected, got no value%)$", err)
  end)

  it("has the fields pid and exitcode, and nil for other keys", function()
    local p = forage.process(function() end)
    assert.is_nil(p.nonexistent)
    assert.is_nil(p[1])
    assert.equal("function", type(p.start))
    p:start()
    assert.equal(0, p:join(5))
    assert.equal(0, p.exitcode)
  end)

  it("rejects a method called on another type", function()
    local p = forage.process(function() end)
    assert.has_error(function() p.join(42) end, "bad argument #1 to 'join' (forage.Process expected, got number)")
  end)
end)
