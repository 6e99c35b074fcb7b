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
      local f = io.popen("ps -o pid= --ppid " .. forage.getpid())
      io.write("children:", f:read("a"):gsub("%s+", " "), "\n")
      f:close()
    ]])
    -- the only child left is the ps itself
    local children = out:match("children:([%d ]*)")
    local n = 0
    for _ in children:gmatch("%d+") do n = n + 1 end
    assert.is_true(n <= 1, out)
  end)
end)
