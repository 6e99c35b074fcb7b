-- A manager's server: one process, one loop, every client served in turn. Requests are
-- decoded in the wire's data mode (no code travels) and checked before anything is looked
-- up; a method that waits (a queue's get, a lock's acquire) parks as a coroutine while the
-- loop serves the others (lua/forage/manager/objects.lua). Nothing a client sends or fails
-- to send stops the server: each mistake is an error to that client, or its connection
-- closed when the stream cannot go on (a frame over the limit, a failed handshake).
local core = require "forage.core"
local objects = require "forage.manager.objects"
local protocol = require "forage.manager.protocol"

local OK, OK_REFS, FAILED, REF = protocol.OK, protocol.OK_REFS, protocol.FAILED, protocol.REF
local unpack = table.unpack

local M = {}
local Server = {}
Server.__index = Server

M.OUTPUT_LIMIT = 64 * 1024 * 1024   -- replies a client leaves unread before it is dropped
M.PENDING_LIMIT = 64                -- requests a client may send while one of its calls waits
M.TURN = 32                         -- requests served from one client before the next client's
M.MAX_CLIENTS = 4000                -- connections at once (forage.wait takes 4096 in all)
M.HELLO_FRAME = 4096                -- bytes a frame may have before the handshake is done
M.ACCEPT_PAUSE = 0.1                -- seconds without accepting after accept failed (out of fds)
M.CHECK_PARENT = 0.5                -- seconds between checks that the owner is alive
M.SPIN = 50e-6   -- seconds looking for the next request before sleeping

-- new{ listener, authkey, types, max_frame, handshake_timeout, parent } -> a Server.
-- types: name -> { new = constructor, exposed = set or nil }, checked by forage.manager.
function M.new(opts)
  local self = setmetatable({
    listener = opts.listener, authkey = opts.authkey, types = opts.types or {},
    max_frame = opts.max_frame, handshake_timeout = opts.handshake_timeout, parent = opts.parent,
    clients = {}, by_conn = {}, handshaking = {}, watch = { opts.listener }, flushing = {}, next_client = 0,
    objects = {}, kinds = {}, ids = {}, next_id = 1,
    stats = { connections = 0, clients = 0, calls = 0, errors = 0, auth_failures = 0, handshake_timeouts = 0,
      bad_requests = 0, refused_frames = 0, dropped = 0, objects = 0, connections_open = 0 },
  }, Server)
  self.admin = { server = self }
  self.swap_out = function(t)
    local id = self.ids[t]
    if id == nil then
      -- a built-in object a method made and returned (or stored) is served from now on
      local class = objects.class_of(t)
      if class == nil then return nil end
      id = self:register(t, class)
    end
    return { [REF] = id, t = self.kinds[id].type_name, c = self.kinds[id].custom }
  end
  self.swap_in = function(t)
    local id = rawget(t, REF)
    if id == nil then return nil end
    local obj = self.objects[id]
    if obj == nil then error(string.format("no object #%s on this server", tostring(id)), 0) end
    return obj
  end
  return self
end

-- ------------------------------------------------------------------ the administrator (object 0)

local Admin = { type_name = "Manager", exposed = { create = true, stats = true, ping = true }, blocking = {} }

function Admin.ping() return true end

function Admin.stats(admin)
  local s = {}
  for k, v in pairs(admin.server.stats) do s[k] = v end
  s.waiting = 0
  for _ in pairs(objects.waiting) do s.waiting = s.waiting + 1 end
  return s
end

-- create(type, ...) -> the new object (a REF in the reply).
function Admin.create(admin, type_name, ...)
  local self = admin.server
  if type(type_name) ~= "string" then error("create: a type name expected", 0) end
  local builtin = objects.builtin[type_name]
  local custom = not builtin and self.types[type_name]
  if not builtin and not custom then
    error(string.format("no type '%s' on this manager", type_name:sub(1, 60)), 0)
  end
  local obj = (builtin or custom.new)(...)
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then
    error(string.format("%s: the constructor returned a %s, not an object", type_name, t), 0)
  end
  if self.ids[obj] == nil then
    self:register(obj, objects.class_of(obj) or
      { type_name = type_name, exposed = custom and custom.exposed, custom = true })
  end
  return obj
end

-- register(obj, kind) -> the id obj is served under from now on.
function Server:register(obj, kind)
  local id = self.next_id
  self.next_id = id + 1
  self.objects[id], self.ids[obj], self.kinds[id] = obj, id, kind
  self.stats.objects = self.stats.objects + 1
  return id
end

-- ------------------------------------------------------------------ clients

-- tostring that cannot raise: an error object of a user's may have a __tostring that does.
local function text(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "(an error object that tostring cannot show)"
end

local function short(s) return text(s):sub(1, 200) end

function Server:rewatch()
  local w = { self.accept_after == nil and self.listener or nil }
  for _, rec in pairs(self.clients) do w[#w + 1] = rec.conn end
  self.watch = w
end

function Server:drop(rec)
  if rec.closed then return end
  rec.closed = true
  if rec.waiter then objects.forget(rec.waiter) end
  rec.waiter, rec.co = nil, nil
  objects.release_all(rec.id)
  rec.conn:close()
  self.clients[rec.id] = nil
  self.stats.connections_open = self.stats.connections_open - 1
  self.by_conn[rec.conn] = nil
  self.handshaking[rec] = nil
  self.flushing[rec] = nil
  if rec.ready then self.stats.clients = self.stats.clients - 1 end
  self:rewatch()
end

-- Sends msg to a client without waiting: what it does not read stays queued, up to a limit.
function Server:send(rec, msg)
  if rec.closed then return end
  local ok, queued = pcall(rec.conn.send_nowait, rec.conn, msg)
  if not ok then
    -- the value cannot travel: say so instead (this one always can)
    queued = rec.conn:send_nowait({ FAILED, "the result cannot travel: " .. short(queued):gsub("^.-:%d+: ", "") })
  end
  if queued == nil then return self:drop(rec) end
  if queued > 0 then
    if queued > M.OUTPUT_LIMIT then
      self.stats.dropped = self.stats.dropped + 1
      return self:drop(rec)
    end
    self.flushing[rec] = true
  end
end

function Server:accept()
  for _ = 1, 64 do
    local conn, _, kind = self.listener:accept(0)
    if not conn then
      if kind ~= "timeout" then
        -- out of fds, say: the listener stays readable; look again in a while, not at once
        self.accept_after = core.now() + M.ACCEPT_PAUSE
        self:rewatch()
      end
      return
    end
    if self.stats.connections_open >= M.MAX_CLIENTS then
      self.stats.dropped = self.stats.dropped + 1
      conn:close()
      return
    end
    -- a stranger's frames are small until it has shown it knows the key
    conn:limits { max_frame = M.HELLO_FRAME, code = false }
    self.next_client = self.next_client + 1
    local rec = { id = self.next_client, conn = conn, challenge = protocol.challenge(),
      deadline = core.now() + self.handshake_timeout, pending = {} }
    self.clients[rec.id] = rec
    self.stats.connections_open = self.stats.connections_open + 1
    self.by_conn[conn] = rec
    self.handshaking[rec] = true
    self.stats.connections = self.stats.connections + 1
    self:rewatch()
    self:send(rec, { protocol.GREETING, protocol.VERSION, rec.challenge })
  end
end

function Server:handshake(rec, v)
  local ok = type(v) == "table" and v[1] == "hello" and v[2] == protocol.VERSION and
    protocol.verify(self.authkey, rec.challenge, v[3]) and type(v[4]) == "string" and #v[4] == 32
  if not ok then
    local why = "authentication failed: wrong authkey"
    if type(v) ~= "table" or v[1] ~= "hello" then
      why = "handshake expected"
    elseif v[2] ~= protocol.VERSION then
      why = "protocol version " .. tostring(v[2]) .. " is not " .. protocol.VERSION
    end
    self.stats.auth_failures = self.stats.auth_failures + 1
    pcall(rec.conn.send, rec.conn, { "refused", why })
    return self:drop(rec)
  end
  rec.ready, rec.challenge, rec.deadline = true, nil, nil
  self.handshaking[rec] = nil
  rec.conn:limits { max_frame = self.max_frame }
  self.stats.clients = self.stats.clients + 1
  self:send(rec, { "welcome", protocol.answer(self.authkey, v[4]), self.max_frame })
end

-- ------------------------------------------------------------------ calls

local function fail(self, rec, message, traceback)
  self.stats.errors = self.stats.errors + 1
  self:send(rec, { FAILED, message, traceback })
end

-- A built-in object's error names itself ("dict.get: key is nil"): where in forage it
-- was raised is no news to the caller.
local function clean(message)
  return (text(message):gsub("^[^\n]-forage/manager/[%w_]+%.lua:%d+: ", ""))
end

-- reply(rec, n, ...): the results of a call, served objects among them turned to REFs.
function Server:reply(rec, n, ...)
  local msg = { OK, n, ... }
  for i = 3, n + 2 do
    local v = msg[i]
    local t = type(v)
    if t == "table" or t == "userdata" then
      local swapped
      if t == "userdata" then
        swapped = self.swap_out(v)
      else
        swapped = protocol.copy_swapping(v, self.swap_out)
      end
      if swapped ~= nil and swapped ~= v then
        msg[1] = OK_REFS
        msg[i] = swapped
      end
    end
  end
  self:send(rec, msg)
end

-- Methods that may wait run in coroutines, each a loop that runs one call after another:
-- a call that ends yields DONE and its results, and waits for the next (f, ...). One that
-- waits yields its waiter (objects.wait). Idle ones are kept, as a thread pool keeps threads.
local DONE = {}
local function calls(f, ...)
  return calls(coroutine.yield(DONE, f(...)))
end
local idle = {}

local function settle(self, rec, co, ok, first, ...)
  objects.caller = nil
  if ok and first == DONE then
    rec.co, rec.waiter = nil, nil
    idle[#idle + 1] = co
    self:reply(rec, select("#", ...), ...)
    return self:run_pending(rec)
  end
  if ok and objects.waiting[first] and first.co == co then
    rec.co, rec.waiter = co, first
    first.rec = rec
    return
  end
  if ok then
    -- a method of the user's yielded something else: it cannot be resumed
    first = "a method yielded outside a coroutine of its own"
    co = coroutine.create(function() end)
  end
  rec.co, rec.waiter = nil, nil   -- a coroutine that raised is dead: not kept
  if rec.kind and rec.kind.custom then
    -- the user's frames only: the loop that ran the call is the server's
    local traceback = debug.traceback(co):gsub("\n[^\n]*forage/manager/[^\n]*", "")
    fail(self, rec, text(first), traceback)
  else
    fail(self, rec, clean(first))
  end
  return self:run_pending(rec)
end

-- Runs a waiting method's call (f, obj, args...) or resumes a parked one (true/false).
function Server:resume(rec, co, ...)
  objects.caller = rec.id
  return settle(self, rec, co, coroutine.resume(co, ...))
end

function Server:run_pending(rec)
  while not rec.closed and not rec.co and #rec.pending > 0 do
    self:call(rec, table.remove(rec.pending, 1))
  end
end

local function finish(self, rec, kind, ok, ...)
  objects.caller = nil
  if ok then return self:reply(rec, select("#", ...), ...) end
  local message = text((...))
  local traceback = message:match("\n(stack traceback:\n.*)$")
  message = message:gsub("\nstack traceback:\n.*$", "")
  -- the user's frames only: from xpcall down it is the server's loop
  if traceback then traceback = traceback:gsub("\n%s*%[C%]: in function 'xpcall'.*$", "") end
  if kind.custom then return fail(self, rec, message, traceback) end
  return fail(self, rec, clean(message))
end

function Server:call(rec, v)
  local req, why = protocol.check_request(v)
  if not req then
    self.stats.bad_requests = self.stats.bad_requests + 1
    return fail(self, rec, "bad request: " .. why)
  end
  self.stats.calls = self.stats.calls + 1
  local id, method, n = req[1], req[2], req[3]
  local obj, kind
  if id == 0 then
    obj, kind = self.admin, Admin
  else
    obj, kind = self.objects[id], self.kinds[id]
    if obj == nil then return fail(self, rec, string.format("no object #%d on this server", id)) end
  end
  local f
  if kind.custom then
    if kind.exposed and not kind.exposed[method] then
      return fail(self, rec, string.format("%s does not expose '%s'", kind.type_name, method))
    end
    local ok, g = pcall(function() return obj[method] end)
    if ok then f = g end
  elseif kind.exposed[method] then
    f = kind == Admin and Admin[method] or kind[method]
  end
  if type(f) ~= "function" then
    return fail(self, rec, string.format("%s has no method '%s'", kind.type_name, method))
  end
  if req.r then
    local ok, err = pcall(function()
      for i = 4, n + 3 do req[i] = protocol.swap_in_place(req[i], self.swap_in) end
    end)
    if not ok then return fail(self, rec, text(err)) end
  end
  if kind.custom or kind.blocking[method] then
    -- a method of the user's may wait too (on a server-side queue or lock it holds)
    rec.kind = kind
    return self:resume(rec, table.remove(idle) or coroutine.create(calls), f, obj, unpack(req, 4, n + 3))
  end
  objects.caller = rec.id
  return finish(self, rec, kind, xpcall(f, debug.traceback, obj, unpack(req, 4, n + 3)))
end

-- Reads what a client sent, frame by frame, without waiting for more.
function Server:read(rec)
  for _ = 1, M.TURN do   -- then the others: what is left is still buffered, forage.wait says so
    if rec.closed then return end
    local v, err, kind = rec.conn:recv(0)
    if kind == "timeout" then return end
    if kind == "closed" then return self:drop(rec) end
    if kind == "limit" then
      -- recv closed it: a stream cut inside a frame cannot go on
      self.stats.refused_frames = self.stats.refused_frames + 1
      return self:drop(rec)
    end
    if kind == "malformed" then
      self.stats.bad_requests = self.stats.bad_requests + 1
      if not rec.ready then return self:handshake(rec, nil) end
      fail(self, rec, "bad request: " .. short(err):gsub("^recv: ", ""))
    elseif not rec.ready then
      self:handshake(rec, v)
    elseif rec.co then
      if #rec.pending >= M.PENDING_LIMIT then
        self.stats.dropped = self.stats.dropped + 1
        return self:drop(rec)
      end
      rec.pending[#rec.pending + 1] = v
    else
      self:call(rec, v)
    end
    self:wake()
  end
end

-- Resumes the waiters notified so far: true to those woken, false to those whose time ran out.
function Server:wake()
  while #objects.ready > 0 do
    local w = table.remove(objects.ready, 1)
    if w.rec and not w.rec.closed then
      self:resume(w.rec, w.co, true)
    elseif w.list then
      -- woken, but its client is gone (killed with the lock's holder, say): the next one
      -- of the list gets the wake-up, or a free lock would stay unclaimed
      objects.notify(w.list, 1)
    end
  end
end

-- Returns the seconds until the next deadline (nil: none), after expiring those passed.
function Server:expire(now)
  local next_at, expired
  for w in pairs(objects.waiting) do
    if w.deadline then
      if w.deadline <= now then
        expired = expired or {}
        expired[#expired + 1] = w
      elseif not next_at or w.deadline < next_at then
        next_at = w.deadline
      end
    end
  end
  -- resumed after the walk: a resumed call may park again (a request it left pending)
  for _, w in ipairs(expired or {}) do
    objects.forget(w)
    if w.rec and not w.rec.closed then self:resume(w.rec, w.co, false) end
  end
  for rec in pairs(self.handshaking) do
    if rec.deadline then
      if rec.deadline <= now then
        self.stats.handshake_timeouts = self.stats.handshake_timeouts + 1
        pcall(rec.conn.send, rec.conn, { "refused", "handshake timed out" })
        self:drop(rec)
      elseif not next_at or rec.deadline < next_at then
        next_at = rec.deadline
      end
    end
  end
  self:wake()
  return next_at and next_at - now or nil
end

function Server:flush()
  for rec in pairs(self.flushing) do
    local left = rec.conn:flush()
    if left == nil then
      self:drop(rec)
    elseif left == 0 then
      self.flushing[rec] = nil
    end
  end
end

-- run(): serves until the owner (opts.parent) is gone or self.stopping is set.
function Server:run()
  local next_check = core.now() + M.CHECK_PARENT
  while not self.stopping do
    local now = core.now()
    if self.accept_after and now >= self.accept_after then
      self.accept_after = nil
      self:rewatch()
    end
    local wait = self:expire(now)
    if self.accept_after and (wait == nil or wait > self.accept_after - now) then wait = self.accept_after - now end
    local cap = next(self.flushing) and 0.01 or M.CHECK_PARENT
    if wait == nil or wait > cap then wait = cap end
    local ready = core.wait(self.watch, wait, M.SPIN)
    for _, c in ipairs(ready) do
      if c == self.listener then
        self:accept()
      else
        local rec = self.by_conn[c]
        if rec then self:read(rec) end
      end
    end
    if next(self.flushing) then self:flush() end
    if self.parent and core.now() >= next_check then
      next_check = core.now() + M.CHECK_PARENT
      if core.getppid() ~= self.parent then self.stopping = true end
    end
  end
  for _, rec in pairs(self.clients) do self:drop(rec) end
  self.listener:close()
end

return M
