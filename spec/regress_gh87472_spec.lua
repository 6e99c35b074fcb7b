-- CPython gh-87472: a Pool whose initializer raises respawns workers forever.
-- forage.pool{ init = ... } fails with the init's error instead.
local forage = require "forage"
local helpers = require "helpers"

describe("an init that raises (CPython gh-87472)", function()
  it("makes forage.pool fail with that error and its traceback", function()
    local ok, err = pcall(forage.pool, { workers = 3, init = function() error("no proxy for this worker") end })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("no proxy for this worker", 1, true))
    assert.truthy(tostring(err):find("stack traceback", 1, true))
  end)

  it("leaves no worker behind", function()
    local out = helpers.run_lua([[
      local forage = require "forage"
      local ok = pcall(forage.pool, { workers = 4, init = function() error("bad init") end })
      assert(not ok)
      local pid = forage.getpid()
      local f = assert(io.open(string.format("/proc/%d/task/%d/children", pid, pid)))
      io.write("children:", f:read("a"), "\n")
      f:close()
    ]])
    local children = out:match("children:([%d ]*)")
    assert.is_not_nil(children, out)
    assert.equal("", children:gsub("%s", ""), out)
  end)
end)
