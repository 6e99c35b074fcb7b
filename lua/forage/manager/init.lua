-- forage.manager: Python's multiprocessing.Manager and BaseManager. A server process holds
-- Lua objects of any shape (dicts, lists, queues, locks, a user's own types); proxies call
-- their methods from any process of the tree, or from other hosts over TCP with an auth
-- key. docs/manager.md is the reference; the pieces are in lua/forage/manager/.
local args = require "forage.args"
local core = require "forage.core"
local objects = require "forage.manager.objects"
local protocol = require "forage.manager.protocol"
local proxy = require "forage.manager.proxy"
local server = require "forage.manager.server"

local M = {}

M.MAX_FRAME = 64 * 1024 * 1024
M.HANDSHAKE_TIMEOUT = 5
M.START_TIMEOUT = 10

-- The server-side objects, for a server's own types (types = { get_queue = function()
-- return queue end } with queue = forage.manager.Queue()).
M.Dict, M.List, M.Namespace = objects.dict, objects.list, objects.namespace
M.Queue, M.Lock, M.Event, M.Value = objects.queue, objects.lock, objects.event, objects.value

local BUILTIN = { "dict", "list", "namespace", "queue", "lock", "event", "value" }

local Manager = {}
local methods = {}
Manager.__name = "forage.Manager"

local function create(self, type_name, ...)
  if not self.where then error(string.format("forage.manager: %s: the manager is not started (call start)",
    type_name), 3) end
  local p = proxy.call(setmetatable({ _m = self.where, _id = 0, _type = "Manager" }, proxy.Auto), "create",
    type_name, ...)
  if rawget(self, "process") then proxy.keep[p] = self end   -- the server lives while its proxies do
  return p
end

for _, name in ipairs(BUILTIN) do
  methods[name] = function(self, ...) return create(self, name, ...) end
end

Manager.__index = function(self, k)
  local m = methods[k]
  if m ~= nil then return m end
  if rawget(self, "type_names")[k] then
    return function(me, ...) return create(me, k, ...) end
  end
  return nil
end

Manager.__tostring = function(self)
  return string.format("forage.Manager (%s)", self.where and self.where.address or "not started")
end

-- types: name -> constructor or { new = constructor, exposed = { "m1", ... } }.
local function check_types(fname, types)
  local out, names = {}, {}
  if types == nil then return out, names end
  if type(types) ~= "table" then args.bad_option(fname, "types", "a table", types, 3) end
  for name, t in pairs(types) do
    if type(name) ~= "string" or not protocol.method_name_ok(name) then
      args.bad_option(fname, "types", "a table whose keys are names (identifiers not starting with '_')", name, 3)
    end
    if methods[name] then
      error(string.format("%s: option 'types': '%s' is a name forage.manager already has", fname, name), 3)
    end
    local new, exposed = t, nil
    if type(t) == "table" then
      args.options(fname .. ": types." .. name, t, { new = true, exposed = true }, 3)
      new = t.new
      if t.exposed ~= nil then
        if type(t.exposed) ~= "table" then
          args.bad_option(fname, "types." .. name .. ".exposed", "a list", t.exposed, 3)
        end
        exposed = {}
        for _, m in ipairs(t.exposed) do
          if not protocol.method_name_ok(m) then
            args.bad_option(fname, "types." .. name .. ".exposed", "a list of method names", m, 3)
          end
          exposed[m] = true
        end
      end
    end
    if type(new) ~= "function" then
      args.bad_option(fname, "types." .. name, "a constructor function or { new = f, exposed = {...} }", new, 3)
    end
    out[name] = { new = new, exposed = exposed }
    names[name] = true
  end
  return out, names
end

local function check_common(fname, opts)
  if opts.address ~= nil and type(opts.address) ~= "string" then
    args.bad_option(fname, "address", "a string (\"HOST:PORT\" or a unix socket path)", opts.address, 3)
  end
  if opts.authkey ~= nil and (type(opts.authkey) ~= "string" or opts.authkey == "") then
    args.bad_option(fname, "authkey", "a non-empty string", opts.authkey, 3)
  end
  return args.timeout(opts.timeout, fname .. ": option 'timeout'", 3)
end

local function is_tcp(address) return address:find("/", 1, true) == nil end

-- forage.manager([opts]) -> a Manager. With no address its server starts at once, as
-- Python's Manager(), on a unix socket of its own; with an address it waits for
-- m:start() (a server process) or m:serve() (this process), as BaseManager.
local function new(opts)
  local fname = "forage.manager"
  opts = args.options(fname, opts, { address = true, authkey = true, types = true, timeout = true,
    max_frame = true, handshake_timeout = true }, 2)
  local timeout = check_common(fname, opts)
  if opts.address and is_tcp(opts.address) and opts.authkey == nil then
    error(fname .. ": option 'authkey' is required with a TCP address (anyone who can connect could call)", 2)
  end
  local max_frame = opts.max_frame or M.MAX_FRAME
  if math.type(max_frame) ~= "integer" or max_frame < 1 or max_frame > 2 ^ 31 then
    args.bad_option(fname, "max_frame", "an integer from 1 to 2^31", max_frame, 2)
  end
  local handshake = args.timeout(opts.handshake_timeout, fname .. ": option 'handshake_timeout'", 2)
    or M.HANDSHAKE_TIMEOUT
  local types, names = check_types(fname, opts.types)
  local self = setmetatable({
    address = opts.address, authkey = opts.authkey or core.random_bytes(32), timeout = timeout,
    max_frame = max_frame, handshake_timeout = handshake, types = types, type_names = names,
    owner = core.getpid(),
  }, Manager)
  if not opts.address then
    self.own_path = os.tmpname()   -- a name only this process has: mkstemp made the file
    os.remove(self.own_path)
    self.address = self.own_path
    self:start()
  end
  return self
end

local function listen(self)
  local listener, err = core.listen(self.address)
  if not listener then return nil, err end
  self.address = listener.address
  return listener
end

local function server_options(self, listener, parent)
  return { listener = listener, authkey = self.authkey, types = self.types, max_frame = self.max_frame,
    handshake_timeout = self.handshake_timeout, parent = parent }
end

-- m:start() -> m: forks the server process; m.address is where it listens (the port the
-- kernel chose for port 0). Raises when it cannot listen there.
function methods.start(self)
  if self.process or self.serving then error("forage.manager: start: already started", 2) end
  if self.listener then error("forage.manager: start: after listen, serve in this process (serve)", 2) end
  local parent = core.getpid()
  local rd, wr = core.pipe(false)
  local proc = core.process(function()
    rd:close()
    local listener, err = listen(self)
    wr:send(listener and { true, self.address } or { false, err })
    wr:close()
    -- Ctrl-C is for the program, which stops its server with SIGTERM (as Python's)
    core.ignore_interrupts("SIGINT")
    if listener then server.new(server_options(self, listener, parent)):run() end
  end)
  proc:start()
  wr:close()
  local r = rd:recv(M.START_TIMEOUT)
  rd:close()
  if type(r) ~= "table" or not r[1] then
    if proc:join(1) == nil then
      proc:kill()
      proc:join()
    end
    error(string.format("forage.manager: start: %s", type(r) == "table" and r[2] or
      "the server did not start (" .. tostring(proc.exitcode) .. ")"), 2)
  end
  self.process, self.address = proc, r[2]
  self.where = proxy.where(self.address, self.authkey, self.timeout)
  return self
end

-- m:listen() -> the address: binds now, so that a server started with serve() can say
-- where it listens first (the port the kernel chose for port 0).
function methods.listen(self)
  if self.process or self.serving then error("forage.manager: listen: already started", 2) end
  if not self.listener then
    local listener, err = listen(self)
    if not listener then error("forage.manager: listen: " .. err, 2) end
    self.listener = listener
  end
  return self.address
end

-- m:serve() serves in this process until it is killed.
function methods.serve(self)
  if self.process or self.serving then error("forage.manager: serve: already started", 2) end
  local listener = self.listener
  if not listener then
    local err
    listener, err = listen(self)
    if not listener then error("forage.manager: serve: " .. err, 2) end
  end
  self.listener, self.serving = nil, true
  self.where = proxy.where(self.address, self.authkey, self.timeout)
  server.new(server_options(self, listener, nil)):run()
end

-- m:stats() -> the server's counters (connections, clients, calls, errors, auth_failures, ...).
function methods.stats(self)
  if not self.where then error("forage.manager: stats: the manager is not started", 2) end
  return proxy.call(setmetatable({ _m = self.where, _id = 0, _type = "Manager" }, proxy.Auto), "stats")
end

-- m:shutdown(): stops the server (the process that started it only; a child's copy just
-- closes its connection). Also __close and __gc. Idempotent.
function methods.shutdown(self)
  if self.where then proxy.forget(self.where) end
  if self.owner ~= core.getpid() or not self.process then return end
  local proc = self.process
  self.process = nil
  if proc:alive() then
    proc:terminate()
    if proc:join(5) == nil then
      proc:kill()
      proc:join()
    end
  end
  if self.own_path then os.remove(self.own_path) end
end
methods.close = methods.shutdown
Manager.__close = methods.shutdown
-- Collected: the server it started stops (as Python's); a connected manager's proxies may
-- outlive it, so its connection stays for them.
Manager.__gc = function(self)
  if self.process and self.owner == core.getpid() then methods.shutdown(self) end
end

-- forage.manager.timeout(proxy, seconds) -> a proxy of the same object whose calls wait
-- at most seconds for their reply (nil: for ever), whatever the manager's timeout.
function M.timeout(p, seconds)
  local where = type(p) == "table" and rawget(p, "_m")
  if type(where) ~= "table" or not rawget(p, "_id") then
    error("bad argument #1 to 'timeout' (a manager's proxy expected, got " .. type(p) .. ")", 2)
  end
  if seconds ~= nil and (type(seconds) ~= "number" or seconds ~= seconds or seconds < 0) then
    error("bad argument #2 to 'timeout' (timeout must be nil or a non-negative number of seconds, got " ..
      args.show(seconds) .. ")", 2)
  end
  if seconds and seconds > 1e9 then seconds = nil end
  local w = {}
  for k, v in pairs(where) do w[k] = v end
  w.timeout = seconds
  return setmetatable({ _m = w, _id = rawget(p, "_id"), _type = rawget(p, "_type") }, getmetatable(p))
end

-- forage.manager.connect{ address, authkey, types = { "get_queue", ... }, timeout }
--   -> a Manager connected to a server elsewhere, or nil, message, kind ("connect",
--   "timeout", "auth", "closed").
function M.connect(opts)
  local fname = "forage.manager.connect"
  opts = args.options(fname, opts, { address = true, authkey = true, types = true, timeout = true }, 2)
  if opts.address == nil then error(fname .. ": option 'address' is required", 2) end
  if opts.authkey == nil then error(fname .. ": option 'authkey' is required", 2) end
  local timeout = check_common(fname, opts)
  local names = {}
  if opts.types ~= nil then
    if type(opts.types) ~= "table" then args.bad_option(fname, "types", "a list of type names", opts.types, 2) end
    for k, v in pairs(opts.types) do
      local name = math.type(k) == "integer" and v or k
      if not protocol.method_name_ok(name) or methods[name] then
        args.bad_option(fname, "types", "a list of type names", name, 2)
      end
      names[name] = true
    end
  end
  local self = setmetatable({ address = opts.address, authkey = opts.authkey, timeout = timeout,
    type_names = names, owner = core.getpid() }, Manager)
  self.where = proxy.where(self.address, self.authkey, timeout)
  local conn, err, kind = proxy.open(self.where)
  if not conn then return nil, err, kind end
  proxy.adopt(self.where, conn)   -- this process's; a child opens its own on first use
  return self
end

return setmetatable(M, { __call = function(_, opts) return new(opts) end })
