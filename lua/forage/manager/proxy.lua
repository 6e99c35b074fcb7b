-- The client side of a manager: proxies and the connections they call through.
--
-- A proxy is a table { _m = where, _id = object id, _type = type name } whose metatable is
-- one of this module's classes (Dict, List, ...). Being a field of a loaded module, the
-- metatable travels by name (docs/wire.md, "Tables with a class"): a proxy passed to a
-- pool task or sent on a pipe arrives as a proxy. `where` is a plain table (address,
-- authkey, timeout, key), copied with it. Each process opens its own connection on first
-- use and keeps one per server: a forked child never uses its parent's.
local args = require "forage.args"
local core = require "forage.core"
local protocol = require "forage.manager.protocol"

local OK, OK_REFS, FAILED, REF = protocol.OK, protocol.OK_REFS, protocol.FAILED, protocol.REF
local unpack, select, type, rawget, getmetatable = table.unpack, select, type, rawget, getmetatable
local getpid = core.getpid

local M = {}

M.CONNECT_TIMEOUT = 5   -- seconds to connect and shake hands
-- Seconds a caller looks for its reply before it sleeps (conn:spin): most replies come
-- within tens of microseconds, and being woken costs more than that on most machines.
M.SPIN = 50e-6

-- key -> { pid, conn, owed }: this process's connection to each server.
local conns = {}

-- proxy -> the manager that started its server: a proxy keeps it alive, as Python's
-- proxies hold their manager (weak keys: an ephemeron, the manager lives while the proxy does).
M.keep = setmetatable({}, { __mode = "k" })

-- where(address, authkey, timeout) -> the table a proxy carries.
function M.where(address, authkey, timeout)
  return { address = address, authkey = authkey, timeout = timeout, key = address .. "\0" .. authkey }
end

-- open(where) -> a connection that passed the handshake, or nil, message, kind
-- ("connect", "timeout", "auth", "closed").
function M.open(where)
  local address = where.address
  local conn, err, kind = core.connect(address, { timeout = M.CONNECT_TIMEOUT })
  if not conn then
    return nil, string.format("manager at %s is not reachable: %s", address, err), kind == "timeout" and kind or
      "connect"
  end
  conn:limits { code = false, max_frame = 4096 }   -- a handshake's frames are small
  local function failed(message, k)
    conn:close()
    return nil, string.format("manager at %s: %s", address, message), k
  end
  local hi, why, k = conn:recv(M.CONNECT_TIMEOUT)
  if hi == nil then return failed("no greeting (" .. tostring(why) .. ")", k == "timeout" and k or "closed") end
  if type(hi) ~= "table" or hi[1] ~= protocol.GREETING or type(hi[3]) ~= "string" then
    return failed("not a forage manager", "connect")
  end
  if hi[2] ~= protocol.VERSION then
    return failed(string.format("protocol version %s, this forage speaks %d", tostring(hi[2]), protocol.VERSION),
      "connect")
  end
  local mine = protocol.challenge()
  if not conn:send({ "hello", protocol.VERSION, protocol.answer(where.authkey, hi[3]), mine }) then
    return failed("closed during the handshake", "closed")
  end
  local ok = conn:recv(M.CONNECT_TIMEOUT)
  if type(ok) == "table" and ok[1] == "refused" then
    return failed("refused: " .. tostring(ok[2]), "auth")
  end
  if type(ok) ~= "table" or ok[1] ~= "welcome" then return failed("closed during the handshake", "closed") end
  if not protocol.verify(where.authkey, mine, ok[2]) then
    return failed("the server does not know the authkey", "auth")
  end
  conn:limits { max_frame = math.type(ok[3]) == "integer" and ok[3] > 0 and ok[3] or 1 << 31 }
  conn:spin(M.SPIN)
  conn:own()   -- the server tracks this process by it: children it forks must not hold it open
  return conn
end

-- The connection to where's server for this process, opened when there is none.
-- This process's connection to where's server ({ pid, conn, owed }), opened when there is
-- none. owed counts replies of calls that timed out, still to come: they are read and
-- dropped before the next call's, so a timeout never closes the connection (the server
-- would take that for this process gone, and release its locks).
local function connection(where, what, timeout)
  local c = conns[where.key]
  if not c or c.pid ~= getpid() then
    local conn, err = M.open(where)
    if not conn then error(err, 0) end
    c = { pid = getpid(), conn = conn, owed = 0 }
    conns[where.key] = c
  end
  while c.owed > 0 do
    local r, _, kind = c.conn:recv(timeout)
    if r == nil then
      if kind == "timeout" then
        error(string.format("manager call %s timed out after %g s waiting for an earlier call's reply (%s)", what,
          timeout, where.address), 0)
      end
      M.forget(where)
      error(string.format("manager closed: %s (%s)", where.address, what), 0)
    end
    c.owed = c.owed - 1
  end
  return c
end

-- adopt(where, conn): conn (just opened) becomes this process's connection to that server.
function M.adopt(where, conn)
  M.forget(where)
  conns[where.key] = { pid = getpid(), conn = conn, owed = 0 }
end

-- forget(where): closes this process's connection to that server, if any.
function M.forget(where)
  local c = conns[where.key]
  conns[where.key] = nil
  if c and c.pid == getpid() then c.conn:close() end
end

local CLASSES = {}    -- type name -> proxy class
local IS_CLASS = {}   -- proxy class -> true

-- make(where, id, type_name [, custom]) -> a proxy; a custom type's is an Auto.
local function make(where, id, type_name, custom)
  return setmetatable({ _m = where, _id = id, _type = type_name }, not custom and CLASSES[type_name] or M.Auto)
end
M.make = make

local function describe(p, method)
  return string.format("%s.%s", rawget(p, "_type"), method)
end

-- Calls method on p's object in the server and returns its results; waiting is how long
-- the method itself may wait in the server (nil: it does not wait), added to the timeout.
local function call_waiting(p, waiting, method, ...)
  if not IS_CLASS[getmetatable(p)] then
    error(string.format("forage.manager: call a proxy's methods with ':' (p:%s(...)), not '.'", method), 3)
  end
  local where = rawget(p, "_m")
  local timeout = where.timeout
  if waiting == true then
    timeout = nil
  elseif waiting and timeout then
    timeout = timeout + waiting
  end
  local c = connection(where, describe(p, method), where.timeout)
  local conn = c.conn
  local n = select("#", ...)
  local req = { rawget(p, "_id"), method, n, ... }
  for i = 4, n + 3 do
    local a = req[i]
    if type(a) == "table" then
      local swapped = protocol.copy_swapping(a, function(t)
        if IS_CLASS[getmetatable(t)] then
          local other = rawget(t, "_m")
          if type(other) ~= "table" or other.key ~= where.key then
            error(string.format("%s: a proxy of another manager cannot be stored here", describe(p, method)), 0)
          end
          return { [REF] = rawget(t, "_id") }
        end
      end)
      if swapped ~= a then
        req[i] = swapped
        req.r = true
      end
    end
  end
  local ok, sent = pcall(conn.send, conn, req)
  if not ok then
    -- "value[5]: cannot send function" names a slot of the request: say which argument
    local why = tostring(sent):gsub("^.-:%d+: ", ""):gsub("^value%[(%d+)%]", function(i)
      return "argument #" .. (tonumber(i) - 3)
    end)
    error(string.format("%s: %s", describe(p, method), why), 0)
  end
  if not sent then
    M.forget(where)
    error(string.format("manager closed: %s (%s)", where.address, describe(p, method)), 0)
  end
  local r, _, kind = conn:recv(timeout)
  if r == nil then
    if kind == "timeout" then
      c.owed = c.owed + 1   -- its reply is still to come: the next call drops it
      error(string.format("manager call %s timed out after %g s (%s)", describe(p, method), timeout,
        where.address), 0)
    end
    M.forget(where)
    error(string.format("manager closed: %s (%s)", where.address, describe(p, method)), 0)
  end
  local status = r[1]
  if status == OK then return unpack(r, 3, r[2] + 2) end
  if status == OK_REFS then
    for i = 3, r[2] + 2 do
      r[i] = protocol.swap_in_place(r[i], function(t)
        local id = rawget(t, REF)
        if id ~= nil then
          local q = make(where, id, t.t, t.c)
          M.keep[q] = M.keep[p]
          return q
        end
      end)
    end
    return unpack(r, 3, r[2] + 2)
  end
  if status == FAILED then
    local message = tostring(r[2])
    if r[3] then message = message .. "\n[manager server] " .. tostring(r[3]) end
    error(message, 0)
  end
  M.forget(where)
  error(string.format("manager at %s sent a reply this forage does not know", where.address), 0)
end
M.call_waiting = call_waiting

local function call(p, method, ...)
  return call_waiting(p, nil, method, ...)
end
M.call = call

-- The time a waiting method may take: its timeout argument (true: for ever).
local function waits(timeout)
  if timeout == nil then return true end
  if type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then return 0 end   -- the server says why
  return timeout > 1e9 and true or timeout
end

-- ------------------------------------------------------------------ classes

local function tostring_proxy(p)
  return string.format("forage.manager.%s #%d (%s)", rawget(p, "_type"), rawget(p, "_id"), rawget(p, "_m").address)
end

local function eq(a, b)
  return rawget(a, "_id") == rawget(b, "_id") and rawget(a, "_m").key == rawget(b, "_m").key
end

local function class(name, method_names)
  local methods = {}
  for _, m in ipairs(method_names) do
    methods[m] = function(p, ...) return call(p, m, ...) end
  end
  local c = { __name = "forage.manager." .. name, __tostring = tostring_proxy, __eq = eq, methods = methods }
  CLASSES[name], IS_CLASS[c] = c, true
  M[name] = c
  return c, methods
end

-- Dict: d[k], d[k] = v, #d, pairs(d) (over a copy), and the methods.
local Dict, dict_methods = class("Dict", { "get", "set", "pop", "has", "len", "keys", "values", "items", "copy",
  "update", "clear", "setdefault" })
Dict.__index = function(p, k)
  local m = dict_methods[k]
  if m ~= nil then return m end
  return call(p, "get", k)
end
Dict.__newindex = function(p, k, v) call(p, "set", k, v) end
Dict.__len = function(p) return call(p, "len") end
Dict.__pairs = function(p) return next, call(p, "copy"), nil end

-- List: l[i] (nil past the end), l[i] = v, #l, ipairs/pairs, and the methods.
local List, list_methods = class("List", { "get", "set", "append", "extend", "insert", "remove", "pop", "reverse",
  "sort", "len", "slice", "copy", "index", "count", "clear" })
List.__index = function(p, k)
  local m = list_methods[k]
  if m ~= nil then return m end
  if math.type(k) == "integer" then return call(p, "get", k) end
  return nil
end
List.__newindex = function(p, k, v)
  if math.type(k) ~= "integer" then
    error("forage.manager.List: index must be an integer, got " .. args.show(k), 2)
  end
  call(p, "set", k, v)
end
List.__len = function(p) return call(p, "len") end
List.__pairs = function(p) return next, call(p, "copy"), nil end

-- Namespace: ns.name, ns.name = v, pairs(ns) (over a copy). No methods: every name is
-- an attribute.
local Namespace = class("Namespace", {})
Namespace.__index = function(p, k)
  if type(k) ~= "string" then return nil end
  return call(p, "get", k)
end
Namespace.__newindex = function(p, k, v)
  if type(k) ~= "string" then
    error("forage.manager.Namespace: attribute names are strings, got " .. args.show(k), 2)
  end
  call(p, "set", k, v)
end
Namespace.__pairs = function(p) return next, call(p, "copy"), nil end

-- Value: v.value, v.value = x, v:get(), v:set(x).
local Value, value_methods = class("Value", { "get", "set" })
Value.__index = function(p, k)
  if k == "value" then return call(p, "get") end
  return value_methods[k]
end
Value.__newindex = function(p, k, v)
  if k ~= "value" then error("forage.manager.Value: only .value can be set, not " .. args.show(k), 2) end
  call(p, "set", v)
end

-- Queue, Lock, Event: methods only; those that wait in the server wait here as long.
local Queue, queue_methods = class("Queue", { "put_nowait", "get_nowait", "qsize", "empty", "full" })
Queue.__index = queue_methods
function queue_methods.put(p, v, timeout) return call_waiting(p, waits(timeout), "put", v, timeout) end
function queue_methods.get(p, timeout) return call_waiting(p, waits(timeout), "get", timeout) end

local Lock, lock_methods = class("Lock", { "release", "locked" })
Lock.__index = lock_methods
function lock_methods.acquire(p, timeout) return call_waiting(p, waits(timeout), "acquire", timeout) end
-- lock:with(fn, ...) -> fn's results: acquires, calls, releases even when fn raises.
function lock_methods.with(p, fn, ...)
  args.check(1, fn, "function", "with")
  call_waiting(p, true, "acquire")
  local r = table.pack(pcall(fn, ...))
  call(p, "release")
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

local Event, event_methods = class("Event", { "set", "clear", "is_set" })
Event.__index = event_methods
function event_methods.wait(p, timeout) return call_waiting(p, waits(timeout), "wait", timeout) end

-- Auto: a custom type's proxy (forage.manager{ types = ... }): any name not starting with
-- '_' is a method; the server says which exist.
local Auto = class("Auto", {})
local auto_methods = {}
Auto.__index = function(_, k)
  if type(k) ~= "string" or k:sub(1, 1) == "_" then return nil end
  local m = auto_methods[k]
  if m == nil then
    m = function(p, ...) return call(p, k, ...) end
    auto_methods[k] = m
  end
  return m
end

return M
