-- The objects a manager's server holds: Dict, List, Namespace, Queue, Lock, Event, Value.
-- Plain Lua classes, usable anywhere; served by forage.manager, their methods run in the
-- server process, one request at a time. A method that must wait (a queue's get on an
-- empty queue, a lock's acquire, an event's wait) runs in a coroutine and parks it with
-- M.wait: the server goes on serving everyone else and resumes it when another request
-- notifies, or when its deadline passes (lua/forage/manager/server.lua).
local args = require "forage.args"
local core = require "forage.core"

local M = {}

-- The waits. A wait list is an array of waiters, oldest first; M.ready holds the woken
-- ones for the server to resume (with true), M.waiting every parked one (for deadlines).
M.ready = {}
M.waiting = {}
M.caller = nil    -- the client the running method serves (set by the server), for locks

-- wait(list, deadline) -> true when notified, false when the deadline (forage.now()
-- seconds, nil for none) passed. Only inside a method the server runs as a coroutine.
function M.wait(list, deadline)
  if deadline and core.now() >= deadline then return false end
  local w = { co = coroutine.running(), list = list, deadline = deadline }
  list[#list + 1] = w
  M.waiting[w] = true
  return coroutine.yield(w)
end

-- notify(list [, n]) wakes up to n waiters of list (all when n is nil), oldest first.
function M.notify(list, n)
  n = n or #list
  for _ = 1, math.min(n, #list) do
    local w = table.remove(list, 1)
    M.waiting[w] = nil
    M.ready[#M.ready + 1] = w
  end
end

-- forget(w): a parked waiter that will never be resumed (its deadline passed: the server
-- resumes it with false; its client went away: dropped).
function M.forget(w)
  M.waiting[w] = nil
  for i, x in ipairs(w.list) do
    if x == w then
      table.remove(w.list, i)
      break
    end
  end
end

local function deadline_of(timeout, what)
  timeout = args.timeout(timeout, what, 3)
  return timeout and core.now() + timeout or nil
end

-- A class: its methods, which of them clients may call, which may wait.
local function class(name, exposed, blocking)
  local c = { __name = "forage.manager." .. name, type_name = name, exposed = {}, blocking = {} }
  c.__index = c
  for _, m in ipairs(exposed) do c.exposed[m] = true end
  for _, m in ipairs(blocking or {}) do c.blocking[m] = true end
  return c
end

local function bad_key(k, fname)
  if k == nil then error(fname .. ": key is nil", 2) end
  if k ~= k then error(fname .. ": key is NaN", 2) end
end

-- ------------------------------------------------------------------------ Dict

local Dict = class("Dict", { "get", "set", "pop", "has", "len", "keys", "values", "items", "copy", "update",
  "clear", "setdefault" })
M.Dict = Dict

function M.dict(t)
  local self = setmetatable({ t = {}, n = 0 }, Dict)
  if t ~= nil then self:update(t) end
  return self
end

function Dict:get(k, default)
  bad_key(k, "dict.get")
  local v = self.t[k]
  if v == nil then return default end
  return v
end

function Dict:set(k, v)
  bad_key(k, "dict.set")
  local old = self.t[k]
  if old == nil and v ~= nil then self.n = self.n + 1 end
  if old ~= nil and v == nil then self.n = self.n - 1 end
  self.t[k] = v
end

function Dict:pop(k, default)
  bad_key(k, "dict.pop")
  local v = self.t[k]
  if v == nil then return default end
  self:set(k, nil)
  return v
end

function Dict:has(k)
  return k ~= nil and self.t[k] ~= nil
end

function Dict:len() return self.n end

function Dict:keys()
  local out = {}
  for k in next, self.t do out[#out + 1] = k end
  return out
end

function Dict:values()
  local out = {}
  for _, v in next, self.t do out[#out + 1] = v end
  return out
end

-- items() -> { {k, v}, ... }
function Dict:items()
  local out = {}
  for k, v in next, self.t do out[#out + 1] = { k, v } end
  return out
end

function Dict:copy()
  local out = {}
  for k, v in next, self.t do out[k] = v end
  return out
end

-- The plain contents of t, or of the managed dict, list or namespace t is (a proxy passed
-- as an argument arrives as the object itself).
local function contents(t)
  local mt = getmetatable(t)
  if mt == M.Dict or mt == M.Namespace then return t.t end
  if mt == M.List then return table.move(t.a, 1, t.n, 1, {}) end
  return t
end

function Dict:update(t)
  if type(t) ~= "table" then error("dict.update: a table expected, got " .. type(t), 2) end
  for k, v in next, contents(t) do self:set(k, v) end
end

function Dict:clear()
  self.t, self.n = {}, 0
end

function Dict:setdefault(k, v)
  bad_key(k, "dict.setdefault")
  local old = self.t[k]
  if old ~= nil then return old end
  self:set(k, v)
  return v
end

-- ------------------------------------------------------------------------ List

local List = class("List", { "get", "set", "append", "extend", "insert", "remove", "pop", "reverse", "sort",
  "len", "slice", "copy", "index", "count", "clear" })
M.List = List

function M.list(t)
  local self = setmetatable({ a = {}, n = 0 }, List)
  if t ~= nil then self:extend(t) end
  return self
end

-- A position: 1..n, or -1 for the last, -n for the first (as string.sub).
local function position(self, i, fname, extra)
  if math.type(i) ~= "integer" then
    error(string.format("%s: index must be an integer, got %s", fname, args.show(i)), 3)
  end
  local n = self.n + (extra or 0)
  local p = i < 0 and self.n + 1 + i or i
  if p < 1 or p > n then
    error(string.format("%s: index %d out of range (the list has %d items)", fname, i, self.n), 3)
  end
  return p
end

local function no_nil(v, fname)
  if v == nil then error(fname .. ": a list cannot hold nil", 3) end
end

function List:get(i)
  if math.type(i) ~= "integer" then error("list.get: index must be an integer, got " .. args.show(i), 2) end
  local p = i < 0 and self.n + 1 + i or i
  return self.a[p]
end

-- set(i, v): i from 1 to n replaces, n + 1 appends; nil at n removes the last item (as
-- t[#t] = nil, so table.remove works on a proxy); nil elsewhere is refused.
function List:set(i, v)
  if v == nil and (i == self.n or i == -1) and self.n > 0 then
    self.a[self.n] = nil
    self.n = self.n - 1
    return
  end
  if v == nil then error("list.set: a list cannot hold nil (pop or remove takes an item out)", 2) end
  local p = position(self, i, "list.set", 1)
  self.a[p] = v
  if p > self.n then self.n = p end
end

function List:append(v)
  no_nil(v, "list.append")
  self.n = self.n + 1
  self.a[self.n] = v
end

function List:extend(t)
  if type(t) ~= "table" then error("list.extend: a table expected, got " .. type(t), 2) end
  t = contents(t)
  local a, n = self.a, self.n
  for i = 1, #t do
    a[n + i] = t[i]
  end
  self.n = n + #t
end

-- insert([pos,] v), as table.insert.
function List:insert(pos, v, ...)
  if select("#", ...) > 0 then error("list.insert: wrong number of arguments (at most 2)", 2) end
  if v == nil then
    v = pos
    pos = self.n + 1
  end
  no_nil(v, "list.insert")
  local p = position(self, pos, "list.insert", 1)
  table.insert(self.a, p, v)
  self.n = self.n + 1
end

-- remove(v): the first item equal to v, as Python's list.remove; false when there is none.
function List:remove(v)
  for i = 1, self.n do
    if self.a[i] == v then
      table.remove(self.a, i)
      self.n = self.n - 1
      return true
    end
  end
  return false
end

-- pop([i]) -> the item at i (the last by default), removed; nil when the list is empty.
function List:pop(i)
  if self.n == 0 then return nil end
  local p = i == nil and self.n or position(self, i, "list.pop")
  local v = table.remove(self.a, p)
  self.n = self.n - 1
  return v
end

function List:reverse()
  local a, n = self.a, self.n
  for i = 1, n // 2 do
    a[i], a[n + 1 - i] = a[n + 1 - i], a[i]
  end
end

-- sort([{ reverse = true }]): by Lua's <; items that Lua cannot compare raise.
function List:sort(opts)
  opts = args.options("list.sort", opts, { reverse = true }, 2)
  local ok, err = pcall(table.sort, self.a, opts.reverse and function(x, y) return x > y end or nil)
  if not ok then error("list.sort: " .. tostring(err):gsub("^.-:%d+: ", ""), 2) end
end

function List:len() return self.n end

-- slice([i [, j]]) -> a plain table of items i..j (negative counts from the end, as string.sub).
function List:slice(i, j)
  local n = self.n
  i = i or 1
  j = j or n
  if math.type(i) ~= "integer" or math.type(j) ~= "integer" then
    error("list.slice: bounds must be integers", 2)
  end
  if i < 0 then i = math.max(n + 1 + i, 1) end
  if j < 0 then j = n + 1 + j end
  if i < 1 then i = 1 end
  if j > n then j = n end
  return table.move(self.a, i, j, 1, {})
end

function List:copy()
  return table.move(self.a, 1, self.n, 1, {})
end

function List:index(v)
  for i = 1, self.n do
    if self.a[i] == v then return i end
  end
  return nil
end

function List:count(v)
  local c = 0
  for i = 1, self.n do
    if self.a[i] == v then c = c + 1 end
  end
  return c
end

function List:clear()
  self.a, self.n = {}, 0
end

-- ------------------------------------------------------------------------ Namespace

local Namespace = class("Namespace", { "get", "set", "copy" })
M.Namespace = Namespace

function M.namespace(t)
  local self = setmetatable({ t = {} }, Namespace)
  if t ~= nil then
    if type(t) ~= "table" then error("namespace: a table expected, got " .. type(t), 2) end
    for k, v in next, contents(t) do self:set(k, v) end
  end
  return self
end

local function attribute(k, fname)
  if type(k) ~= "string" then error(fname .. ": attribute names are strings, got " .. type(k), 3) end
end

function Namespace:get(k)
  attribute(k, "namespace.get")
  return self.t[k]
end

function Namespace:set(k, v)
  attribute(k, "namespace.set")
  self.t[k] = v
end

function Namespace:copy()
  local out = {}
  for k, v in next, self.t do out[k] = v end
  return out
end

-- ------------------------------------------------------------------------ Value

local Value = class("Value", { "get", "set" })
M.Value = Value

function M.value(v)
  return setmetatable({ v = v }, Value)
end

function Value:get() return self.v end
function Value:set(v) self.v = v end

-- ------------------------------------------------------------------------ Queue

local Queue = class("Queue", { "put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full" },
  { "put", "get" })
M.Queue = Queue

-- queue([maxsize]): maxsize 0 or nil is unbounded, as Python's.
function M.queue(maxsize)
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
    error("queue: maxsize must be a non-negative integer, got " .. args.show(maxsize), 2)
  end
  return setmetatable({ items = {}, head = 1, tail = 0, maxsize = maxsize or 0, getters = {}, putters = {} },
    Queue)
end

function Queue:qsize() return self.tail - self.head + 1 end
function Queue:empty() return self:qsize() == 0 end
function Queue:full() return self.maxsize > 0 and self:qsize() >= self.maxsize end

local function push(self, v)
  self.tail = self.tail + 1
  self.items[self.tail] = v
  M.notify(self.getters, 1)
end

local function take(self)
  local v = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  if self.head > self.tail then self.head, self.tail = 1, 0 end
  M.notify(self.putters, 1)
  return v
end

-- put(v [, timeout]) -> true, or nil, message, "timeout" (it waits while the queue is full).
function Queue:put(v, timeout)
  if v == nil then error("queue.put: cannot put nil", 2) end
  local deadline = deadline_of(timeout, "queue.put: timeout")
  while self:full() do
    if not M.wait(self.putters, deadline) then return nil, "timeout", "timeout" end
  end
  push(self, v)
  return true
end

function Queue:put_nowait(v)
  if v == nil then error("queue.put_nowait: cannot put nil", 2) end
  if self:full() then return nil, "full", "full" end
  push(self, v)
  return true
end

-- get([timeout]) -> the oldest value, or nil, message, "timeout".
function Queue:get(timeout)
  local deadline = deadline_of(timeout, "queue.get: timeout")
  while self:empty() do
    if not M.wait(self.getters, deadline) then return nil, "timeout", "timeout" end
  end
  return take(self)
end

function Queue:get_nowait()
  if self:empty() then return nil, "empty", "empty" end
  return take(self)
end

-- ------------------------------------------------------------------------ Lock

-- A lock, as Python's manager Lock (threading.Lock): any client may release it. The one
-- that holds it is remembered, so that a client that goes away (killed) releases it.
local Lock = class("Lock", { "acquire", "release", "locked" }, { "acquire" })
M.Lock = Lock
M.held = {}   -- client -> { [lock] = true }

function M.lock()
  return setmetatable({ owner = nil, waiters = {} }, Lock)
end

local function hold(self, who)
  self.owner = who or true
  if who then
    M.held[who] = M.held[who] or {}
    M.held[who][self] = true
  end
end

-- acquire([timeout]) -> true, or false when timeout passed first.
function Lock:acquire(timeout)
  local deadline = deadline_of(timeout, "lock.acquire: timeout")
  if self.owner ~= nil and self.owner == M.caller and deadline == nil then
    error("lock.acquire: this client already holds the lock (acquire without a timeout would wait for ever)", 2)
  end
  while self.owner ~= nil do
    if not M.wait(self.waiters, deadline) then return false end
  end
  hold(self, M.caller)
  return true
end

function Lock:release()
  if self.owner == nil then error("lock.release: release unlocked lock", 2) end
  local who = self.owner
  if M.held[who] then M.held[who][self] = nil end
  self.owner = nil
  M.notify(self.waiters, 1)
end

function Lock:locked() return self.owner ~= nil end

-- released_by(client): what a client that went away held is released.
function M.release_all(who)
  local held = M.held[who]
  M.held[who] = nil
  for lock in pairs(held or {}) do
    if lock.owner == who then
      lock.owner = nil
      M.notify(lock.waiters, 1)
    end
  end
end

-- ------------------------------------------------------------------------ Event

local Event = class("Event", { "set", "clear", "is_set", "wait" }, { "wait" })
M.Event = Event

function M.event()
  return setmetatable({ flag = false, waiters = {} }, Event)
end

function Event:set()
  self.flag = true
  M.notify(self.waiters)
end

function Event:clear() self.flag = false end
function Event:is_set() return self.flag end

-- wait([timeout]) -> true once set, false when timeout passed first.
function Event:wait(timeout)
  local deadline = deadline_of(timeout, "event.wait: timeout")
  while not self.flag do
    if not M.wait(self.waiters, deadline) then return false end
  end
  return true
end

-- The built-in types by the name a client creates them with, and each class by its name.
M.builtin = { dict = M.dict, list = M.list, namespace = M.namespace, queue = M.queue, lock = M.lock,
  event = M.event, value = M.value }
M.classes = { Dict = Dict, List = List, Namespace = Namespace, Queue = Queue, Lock = Lock, Event = Event,
  Value = Value }

-- class_of(obj) -> the built-in class obj is an instance of, or nil.
function M.class_of(obj)
  local mt = getmetatable(obj)
  if type(mt) == "table" and M.classes[mt.type_name] == mt then return mt end
  return nil
end

return M
