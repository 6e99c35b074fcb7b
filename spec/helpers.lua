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

return M
