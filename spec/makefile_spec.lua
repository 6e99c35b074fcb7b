-- The Makefile's own checks, each run in a copy of what it needs in a temporary directory
-- (so the checkout is never changed): the summary line `make test` prints, and rock-check
-- refusing a rockspec that misses a file.
local helpers = require "helpers"

local root = assert(io.popen("pwd")):read("l")
local CLEAN_ENV = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL"

local function sh(cmd)
  local pipe = assert(io.popen(cmd .. " 2>&1"))
  local out = pipe:read("a")
  return out, pipe:close() == true
end

-- A temporary copy of the given parts of the checkout; returns its path.
local function copy(parts)
  local dir = os.tmpname()
  os.remove(dir)
  assert(sh(("mkdir -p %s/spec && cd '%s' && cp -r %s %s/"):format(dir, root, parts, dir)))
  return dir
end

describe("make test's summary line", function()
  -- make test in a copy whose only spec holds these tests; deps, all and lint are taken
  -- as done (-o), so only the spec run and its summary happen.
  local function summary(tests)
    local dir = copy("Makefile .busted")
    helpers.write(dir .. "/spec/one_spec.lua", 'describe("s", function()\n' .. tests .. "\nend)\n")
    local out, ok = sh(("cd %s && %s make -o deps -o all -o lint test"):format(dir, CLEAN_ENV))
    sh("rm -rf " .. dir)
    assert.is_false(ok)        -- a failing spec fails make test
    return out:match("\nspecs: [^\n]*")
  end

  it("counts busted's singular '1 success / 1 failure / 1 error'", function()
    assert.equals("\nspecs: 1 passed, 2 failed", summary([[
      it("passes", function() end)
      it("fails", function() assert.equals(1, 2) end)
      it("errs", function() error("boom") end)]]))
  end)

  it("counts the plurals", function()
    assert.equals("\nspecs: 2 passed, 4 failed", summary([[
      it("passes", function() end)
      it("passes too", function() end)
      it("fails", function() assert.equals(1, 2) end)
      it("fails too", function() assert.equals(1, 2) end)
      it("errs", function() error("boom") end)
      it("errs too", function() error("boom") end)]]))
  end)
end)

describe("make rock-check", function()
  local function rock_check_with(extra)
    local dir = copy("Makefile README.md rockspec src lua")
    helpers.write(dir .. "/" .. extra, "")
    local out, ok = sh(("cd %s && %s make -o deps rock-check"):format(dir, CLEAN_ENV))
    sh("rm -rf " .. dir)
    return out, ok
  end

  it("fails when a Lua module under lua/ is not in the rockspec", function()
    local out, ok = rock_check_with("lua/forage/extra.lua")
    assert.is_false(ok)
    assert.matches("lua/forage/extra.lua is missing from rockspec/forage-scm-1.rockspec", out, 1, true)
  end)

  it("fails when a C file is not in the rockspec", function()
    local out, ok = rock_check_with("src/extra.c")
    assert.is_false(ok)
    assert.matches("src/extra.c is missing from rockspec/forage-scm-1.rockspec", out, 1, true)
  end)
end)
