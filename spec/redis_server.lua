-- A real redis-server for a spec (not a spec itself): spec/redis_spec.lua, the multi-host
-- crawl specs and the benchmark start their own, on a free loopback port, in a fresh
-- directory, with arguments only (no configuration file).
--
--   local redis_server = require "redis_server"
--   local srv = redis_server.start { appendonly = false, password = nil, acl_user = nil, dir = nil,
--                                    args = nil, finally = finally }
--   srv.port, srv.pid, srv.dir, srv.url ("redis://127.0.0.1:PORT/0", "redis://:PASSWORD@..." with a
--   password, "redis://USER:PASSWORD@..." with an ACL user)
--   srv:stop()      SIGTERM, waits for the pid to leave (redis writes its AOF on a clean stop), removes
--                   the directory when the helper made it; idempotent
--   srv:kill()      SIGKILL, waits; the directory stays, for restart()
--   srv:restart()   starts it again on the same port and directory, with the same arguments, and waits
--                   until it answers PING (a running server is stopped with SIGTERM first)
--   srv:client()    a forage.redis connection, authenticated (AUTH sent when the server wants one)
--   srv:info(s)     INFO s as a table (numbers where the value is one, strings otherwise)
--
-- Options: appendonly (AOF with appendfsync always), password (requirepass, or the ACL user's
-- password with acl_user: then the default user is off), dir (a directory of the caller's, kept by
-- stop()), args (a list of more arguments, such as { "--maxmemory", "10mb" }), finally (busted's
-- `finally`, passed in by the spec file: the server is then stopped when the test ends, passed or
-- failed). Whatever is still running when the Lua state closes is stopped too, and every server dies
-- with the process that started it (setpriv --pdeathsig), so a busted killed mid-test leaves none.
--
-- The server runs as a child: the shell prints its pid and execs redis-server, without the
-- sanitizer's LD_PRELOAD (make check runs the specs under it; redis-server is not what is tested).
local forage = require "forage"
local redis = require "forage.redis"
local socket = require "socket"
local helpers = require "helpers"

local M = {}

M.SERVER = "/usr/bin/redis-server"
local SETPRIV = "/usr/bin/setpriv"
local READY_TRIES = 1000       -- 10 ms apart: a server not answering after about 10 s fails the spec
local STOP_TRIES = 1000
local PORT_TRIES = 10

local OPTIONS = { appendonly = true, password = true, acl_user = true, dir = true, args = true, finally = true }

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function executable(path)
  return os.execute("test -x " .. quote(path)) == true
end

-- A port nothing listens on right now (the kernel's pick, released at once): another process may
-- take it before redis-server binds it, so start() tries again on a new one when binding fails.
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return assert(tonumber(port))
end

-- The servers started and not stopped yet (M.stop_all; each also has a guard, below).
local live = {}

local Server = {}
Server.__index = Server

function Server:_arguments()
  local list = {
    "--bind", "127.0.0.1", "--port", self.port, "--dir", self.dir, "--save", "''",
    "--appendonly", self.appendonly and "yes" or "no", "--appendfsync", "always",
    "--daemonize", "no", "--protected-mode", "yes", "--logfile", "''",
  }
  local function add(...)
    for _, v in ipairs({ ... }) do list[#list + 1] = v end
  end
  if self.user then
    add("--user", self.user, "on", ">" .. self.password, "~*", "&*", "+@all")
    add("--user", "default", "off")
  elseif self.password then
    add("--requirepass", self.password)
  end
  for _, v in ipairs(self.extra) do add(v) end
  for i, v in ipairs(list) do
    if v ~= "''" then list[i] = quote(v) end
  end
  return table.concat(list, " ")
end

-- Starts the process; self.pid is redis-server's own (the shell execs it).
function Server:_spawn()
  local prefix = executable(SETPRIV) and (SETPRIV .. " --pdeathsig KILL ") or ""
  local cmd = ("cd %s && echo $$ && exec env -u LD_PRELOAD %s%s %s </dev/null >>%s 2>&1"):format(
    quote(self.dir), prefix, M.SERVER, self:_arguments(), quote(self.log))
  self.pipe = assert(io.popen(cmd))
  self.pid = assert(tonumber(self.pipe:read("l")), "redis_server: no pid from the shell")
  self.running = true
  -- Stops the server when the Lua state closes. Made after the pipe, so that its finalizer runs
  -- before the pipe's (Lua calls them in the reverse order of their marking): the pipe's own
  -- would pclose, that is wait for ever for a server still running.
  -- Only the current spawn's guard acts: the one of a spawn before a restart() is garbage then,
  -- and its finalizer, run at some later collection, must not stop the server started since.
  local guard
  guard = setmetatable({}, {
    __gc = function()
      if self.guard == guard and self.running and forage.getpid() == self.owner then pcall(self.stop, self) end
    end,
  })
  self.guard = guard
end

-- Reaps the process once it has left.
function Server:_reap()
  if self.pipe then
    self.pipe:close()
    self.pipe = nil
  end
  self.running = false
end

-- Sends signal (TERM or KILL) and waits for the process to leave (after STOP_TRIES, SIGKILL).
function Server:_terminate(signal)
  if not self.running then return end
  if forage.getpid() ~= self.owner then
    error(("redis_server: server %d was started by process %d, not this one"):format(self.pid, self.owner), 3)
  end
  os.execute(("kill -%s %d 2>/dev/null"):format(signal, self.pid))
  for _ = 1, STOP_TRIES do
    if not helpers.exists(self.pid) then break end
    forage.sleep(0.01)
  end
  if helpers.exists(self.pid) then os.execute(("kill -KILL %d 2>/dev/null"):format(self.pid)) end
  self:_reap()
end

-- A connection to this server, authenticated; nil, message, kind when it cannot connect, and a
-- raised error when AUTH fails.
function Server:_connect(timeout)
  local r, message, kind = redis.connect { host = "127.0.0.1", port = self.port, timeout = timeout or 5 }
  if not r then return nil, message, kind end
  local ok, err
  if self.user then
    ok, err = r:call("AUTH", self.user, self.password)
  elseif self.password then
    ok, err = r:call("AUTH", self.password)
  else
    ok = true
  end
  if not ok then
    r:close()
    return nil, "AUTH: " .. tostring(err), "auth"
  end
  return r
end

-- Waits until the process answers PING as itself (INFO's process_id: not another server that took
-- the port first). Returns true, or false when it left because the port was taken; raises when it
-- left for another reason or never answered.
function Server:_wait_ready()
  for _ = 1, READY_TRIES do
    if not helpers.exists(self.pid) then
      self:_reap()
      local log = helpers.read(self.log) or ""
      if log:find("Address already in use", 1, true) then return false end
      error(("redis_server: %s (pid %d, port %d) left at start; its log:\n%s"):format(M.SERVER, self.pid,
        self.port, log), 0)
    end
    local r = self:_connect(1)
    if r then
      local info = r:call("INFO", "server")
      local pong = r:call("PING")
      r:close()
      local pid = type(info) == "string" and tonumber(info:match("process_id:(%d+)"))
      if pid == self.pid and pong == "PONG" then return true end
    end
    forage.sleep(0.01)
  end
  self:_terminate("KILL")
  error(("redis_server: %s (pid %d, port %d) did not answer PING; its log:\n%s"):format(M.SERVER, self.pid,
    self.port, helpers.read(self.log) or ""), 0)
end

-- srv:stop(): SIGTERM, waits; removes the directory the helper made. Idempotent.
function Server:stop()
  self:_terminate("TERM")
  live[self] = nil
  if self.own_dir and not self.removed then
    os.execute("rm -rf " .. quote(self.dir))
    self.removed = true
  end
end

-- srv:kill(): SIGKILL, waits. The directory stays (restart() uses it; stop() removes it).
function Server:kill()
  self:_terminate("KILL")
end

-- srv:restart(): the same server again (port, directory, arguments), ready.
function Server:restart()
  if self.removed then error("redis_server: restart() after stop(): its directory is gone", 2) end
  self:_terminate("TERM")
  self:_spawn()
  live[self] = true
  if not self:_wait_ready() then
    error(("redis_server: port %d was taken while the server was down"):format(self.port), 2)
  end
  return self
end

-- srv:client() -> an authenticated forage.redis connection (raises when it cannot connect).
function Server:client(timeout)
  local r, message = self:_connect(timeout)
  if not r then error("redis_server: " .. message, 2) end
  return r
end

-- srv:info(section) -> { key = value }: numbers where the value is one.
function Server:info(section)
  local r = self:client()
  local text, message = r:call("INFO", section or "default")
  r:close()
  if not text then error("redis_server: INFO: " .. tostring(message), 2) end
  local t = {}
  for line in text:gmatch("[^\r\n]+") do
    local key, value = line:match("^([^#:][^:]*):(.*)$")
    if key then t[key] = tonumber(value) or value end
  end
  return t
end

function M.start(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not OPTIONS[k] then error(("redis_server.start: unknown option '%s'"):format(tostring(k)), 2) end
  end
  if not executable(M.SERVER) then
    error(M.SERVER .. " is missing: install the Debian package redis-server (`make deps` does)", 2)
  end
  if opts.acl_user and not opts.password then error("redis_server.start: acl_user needs a password", 2) end
  local srv = setmetatable({
    appendonly = opts.appendonly and true or false, password = opts.password, user = opts.acl_user,
    extra = opts.args or {}, owner = forage.getpid(), own_dir = opts.dir == nil,
  }, Server)
  srv.dir = opts.dir or helpers.make_dir("redis")
  if not srv.own_dir then assert(os.execute("mkdir -p " .. quote(srv.dir))) end
  srv.log = srv.dir .. "/redis.log"
  if opts.finally then helpers.on_exit(opts.finally, function() srv:stop() end) end
  live[srv] = true
  local ok, err = pcall(function()
    for _ = 1, PORT_TRIES do
      srv.port = free_port()
      srv:_spawn()
      if srv:_wait_ready() then return end
    end
    error(("redis_server: no free port after %d tries"):format(PORT_TRIES), 0)
  end)
  if not ok then
    srv:stop()
    error(err, 2)
  end
  local auth = srv.user and (srv.user .. ":" .. srv.password .. "@") or srv.password and (":" .. srv.password .. "@")
    or ""
  srv.url = ("redis://%s127.0.0.1:%d/0"):format(auth, srv.port)
  return srv
end

-- Stops every server this process started and has not stopped (for a describe's teardown).
function M.stop_all()
  for srv in pairs(live) do srv:stop() end
end

return M
