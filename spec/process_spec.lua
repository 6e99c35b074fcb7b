local forage = require "forage"

-- Reads everything a child wrote to a temporary file.
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
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
    local helpers = require "helpers"
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

  it("join with a timeout returns nil, 'timeout' while the child runs", function()
    local p = forage.process(function() local t = forage.now() + 5 while forage.now() < t do end end)
    p:start()
    local code, err = p:join(0.05)
    assert.is_nil(code)
    assert.equal("timeout", err)
    assert.is_true(p:alive())
    p:kill()
    assert.equal(-9, p:join(5))
    assert.equal(-9, p.exitcode)
  end)

  it("terminate sends SIGTERM", function()
    local p = forage.process(function() local t = forage.now() + 5 while forage.now() < t do end end):start()
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

  it("rejects a non-function", function()
    assert.has_error(function() forage.process(42) end, "forage.process: expected a function, got number")
  end)
end)
