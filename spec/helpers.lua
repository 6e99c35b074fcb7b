-- Shared by the specs: running a Lua script in a fresh lua5.4 process.
local M = {}

-- Runs source in a new lua5.4 with the repo's paths; returns its stdout+stderr and
-- whether it exited 0.
function M.run_lua(source)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(source)
  f:close()
  local cmd = string.format("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 %s 2>&1", package.path, package.cpath, path)
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("a")
  local ok = pipe:close()
  os.remove(path)
  return out, ok == true
end

-- Busy-waits for seconds of CPU (a task that takes time without sleeping).
function M.spin(seconds)
  local clock = require("forage").now
  local t = clock() + seconds
  while clock() < t do end
end

-- True when a process with this pid exists.
function M.exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return not stat:match("^%d+ %b() Z")   -- a zombie has exited
end

-- The bytes of a file, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Joins p within seconds; returns its exit code, or nil after killing (and reaping) it
-- when it overstays.
function M.join_or_kill(p, seconds)
  local code = p:join(seconds)
  if code == nil then
    p:kill()
    p:join(5)
  end
  return code
end

-- Runs fn when the running test ends, passed or failed, after every fn registered later
-- (reverse order). busted keeps one `finally` per test (a second call replaces the first),
-- so every cleanup of a test goes into one list that one finally runs. `finally` is
-- busted's, passed in: busted gives it to spec files, not to the modules they require.
local cleanups
function M.on_exit(finally, fn)
  if not cleanups then
    cleanups = {}
    finally(function()
      local list = cleanups
      cleanups = nil
      for i = #list, 1, -1 do pcall(list[i]) end
    end)
  end
  cleanups[#cleanups + 1] = fn
end

-- Kills and reaps p when the running test ends, passed or failed: a failed assertion
-- never leaves a child behind (holding busted's output open). Returns p.
function M.reaped(finally, p)
  M.on_exit(finally, function()
    if p:alive() then p:kill() end
    p:join(5)
  end)
  return p
end

-- A new directory under /tmp (mktemp -d), named after what made it.
function M.make_dir(name)
  local f = assert(io.popen("mktemp -d /tmp/forage-" .. name .. ".XXXXXX"))
  local dir = f:read("l")
  f:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  return dir
end

-- Joins p within seconds, like join_or_kill, but a process that overstays fails the spec.
function M.join_or_fail(p, seconds)
  local code = M.join_or_kill(p, seconds or 5)
  if code == nil then error(string.format("process %d still running after %g s", p.pid, seconds or 5), 2) end
  return code
end

-- Runs bin/forage of this checkout with args (a shell string) in cwd (default the
-- checkout), stdin from the string input (default empty); returns its stdout, stderr and
-- exit code.
function M.forage_cli(args, input, cwd)
  local root = assert(os.getenv("PWD"), "the specs run from the checkout")
  local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  local err, inp = os.tmpname(), os.tmpname()
  M.write(inp, input or "")
  local cmd = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s lua5.4 %s/bin/forage %s <%s 2>%s",
    quote(cwd or root), quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"), quote(root .. "/?.so;;"),
    quote(root), args, inp, err)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  local stderr = M.read(err)
  os.remove(err)
  os.remove(inp)
  return out, stderr, code
end

return M
