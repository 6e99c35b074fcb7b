-- forage.pool: the policy of the fork pool, over the mechanism in src/pool.c.
--
-- The C core forks the workers, moves encoded tasks and results, and re-runs the tasks
-- of a worker that died. This module decides what a result means: AsyncResults,
-- callbacks, the order of imap, chunking, completion (pending/drain) and errors.
--
-- Callbacks run in the parent, and only while the parent is inside a pool call
-- (get, wait, map, an imap loop, drain, join): the parent has no hidden thread.

local core = require "forage.core"
-- forage.args is loaded at the first misuse (or options it checks in full): a program
-- of pools keeps a smaller heap, which every worker inherits and whose pages its first
-- collection copies. The checks on the hot paths test the common case inline first.
local args = setmetatable({}, { __index = function(self, name)
  setmetatable(self, nil)
  for k, v in pairs(require "forage.args") do self[k] = v end
  return self[name]
end })

local M = {}

local decode_into = core.decode_into
local CODE = { code = true }   -- results come from our own workers: functions may travel

-- The results of a task, still encoded, as a list.
local function results_list(encoded)
  return assert(decode_into(encoded, {}, 1, CODE))
end

local Pool = {}
Pool.__index = Pool

local AsyncResult = {}
AsyncResult.__index = AsyncResult

-- The error of a task, raised in the parent: the worker's message and traceback, and
-- which task (and item of a map) it was.
local TaskError = {}
TaskError.__index = TaskError
TaskError.__tostring = function(e)
  local where
  if e.item then
    where = string.format("item %d", e.item)
  else
    where = string.format("task %d", e.task)
  end
  local tb = e.traceback ~= "" and ("\nworker traceback:\n" .. e.traceback) or ""
  return string.format("%s failed in worker %d: %s%s", where, e.pid or 0, e.message, tb)
end
M.TaskError = TaskError

-- err: the table the core gives ({ value, traceback, index, pid }).
local function task_error(err, task, item)
  local value = err.value
  return setmetatable({
    value = value,
    message = type(value) == "string" and value or tostring(value),
    traceback = err.traceback or "",
    task = task,
    item = item,
    pid = err.pid,
    lost = err.lost,
  }, TaskError)
end

-- Errors that are not a task's: the pool was terminated or broken.
local function pool_error(message)
  return task_error({ value = message, pid = 0 }, 0, nil)
end

-- Argument checks blame the caller of the public method: `level` is error()'s level as
-- seen from the function that calls the check (args.lua's rule), 2 for a public method.

-- Raises "bad argument #n to 'fname' (<reason>)".
local function bad_argument(n, fname, reason, level)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, reason), level + 1)
end

local CODE_FUNCTION = { code = true, root = "function" }

-- The function, encoded once for every task that runs it. An upvalue that cannot travel
-- raises at the caller's line, not at this one.
local function encode_function(f, fname, level)
  if type(f) ~= "function" then args.check(1, f, "function", fname, level + 1) end
  local ok, blob = pcall(core.encode, f, CODE_FUNCTION)
  if not ok then error((tostring(blob):gsub("^[^\n]-:%d+: ", "", 1)), level + 1) end
  return blob
end

-- A timeout argument: nil for forever (nil, math.huge, over 1e9 s), else seconds >= 0.
local function check_timeout(t, n, fname, level)
  if t == nil then return nil end
  local ok, seconds = pcall(args.timeout, t, "timeout", 1)
  if not ok then bad_argument(n, fname, seconds, level + 1) end
  return seconds
end

-- ---------------------------------------------------------------------------------
-- Creating a pool

local POOL_OPTIONS = { workers = true, init = true, init_args = true, max_tasks = true, task_retries = true,
                       resources = true, resource = true }
local RESOURCE_OPTIONS = { max_failures = true, cooldown = true, max_cooldown = true, retire_after = true }
local MAX_WORKERS = 4096
local MANY = 1e9   -- a count or a number of seconds past any sensible setting

local function check_integer(fname, opts, key, min, max, level)
  local v = opts[key]
  if v ~= nil and (math.type(v) ~= "integer" or v < min or v > max) then
    args.bad_option(fname, key, string.format("an integer from %d to %d", min, max), v, level + 1)
  end
end

local function check_seconds(fname, opts, key, level)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or not (v >= 0 and v <= MANY)) then
    args.bad_option(fname, key, "a non-negative number of seconds", v, level + 1)
  end
end

local function check_options(opts, level)
  local fname = "forage.pool"
  for k in pairs(opts) do
    if not POOL_OPTIONS[k] then args.options(fname, opts, POOL_OPTIONS, level + 1) end
  end
  check_integer(fname, opts, "workers", 1, MAX_WORKERS, level + 1)
  check_integer(fname, opts, "max_tasks", 0, math.maxinteger, level + 1)
  check_integer(fname, opts, "task_retries", 0, 1000, level + 1)
  if opts.init ~= nil and type(opts.init) ~= "function" then
    args.bad_option(fname, "init", "a function", opts.init, level + 1)
  end
  if opts.init_args ~= nil and type(opts.init_args) ~= "table" then
    args.bad_option(fname, "init_args", "a table", opts.init_args, level + 1)
  end
  if opts.resources ~= nil and (type(opts.resources) ~= "table" or #opts.resources == 0) then
    args.bad_option(fname, "resources", "a non-empty list", opts.resources, level + 1)
  end
  local r = opts.resource
  if r ~= nil then
    if type(r) ~= "table" then args.bad_option(fname, "resource", "a table of options", r, level + 1) end
    if opts.resources == nil then error("forage.pool: option 'resource' given without 'resources'", level + 1) end
    fname = "forage.pool resource"
    args.options(fname, r, RESOURCE_OPTIONS, level + 1)
    check_integer(fname, r, "max_failures", 1, MANY, level + 1)
    check_integer(fname, r, "retire_after", 0, MANY, level + 1)
    check_seconds(fname, r, "cooldown", level + 1)
    check_seconds(fname, r, "max_cooldown", level + 1)
  end
end

-- forage.pool(n) or forage.pool{ workers, init, init_args, max_tasks, task_retries,
-- resources, resource }.
function M.new(opts)
  local t = type(opts)
  if t ~= "number" and t ~= "table" and t ~= "nil" then args.check(1, opts, "number|table", "pool", 2, true) end
  if opts == nil or type(opts) == "number" then opts = { workers = opts } end
  check_options(opts, 2)
  local workers = opts.workers or core.cpu_count()
  local self = setmetatable({
    workers = workers,
    state = "open",      -- "open", "closed" (no new tasks), "terminated"
    handlers = {},       -- task id -> handler (an AsyncResult, a map or an imap state)
    npending = 0,        -- items submitted and not yet delivered (callbacks included)
    in_callback = 0,     -- callbacks of this pool running now (nested ones included)
    events = {},         -- (id, kind, value) triples from the core, delivered from ev_pos on
    ev_pos = 1,
    ev_n = 0,
  }, Pool)
  local init_args = opts.init_args
  if init_args and init_args.n == nil then init_args = table.pack(table.unpack(init_args)) end
  local leases, resources
  if opts.resources then
    -- The lease table is shared memory made before the forks: workers and parent share it.
    resources = table.move(opts.resources, 1, #opts.resources, 1, {})
    local r = opts.resource or {}
    leases = core.leases { count = #resources, slots = workers, max_failures = r.max_failures,
                           cooldown = r.cooldown, max_cooldown = r.max_cooldown, retire_after = r.retire_after }
  end
  self.leases, self.resource_list = leases, resources
  self.core = core.pool_core {
    workers = workers,
    init = opts.init,
    init_args = init_args,
    max_tasks = opts.max_tasks,
    task_retries = opts.task_retries,
    leases = leases,
    resources = resources,
  }
  return self
end

-- ---------------------------------------------------------------------------------
-- Moving tasks and results

function Pool:_check_open(level)
  if self.state ~= "open" then error("pool is " .. self.state .. ": no new tasks", level + 1) end
end

-- Submits items[i..j] as one task for handler; start is the index of items[i] for the
-- caller (the item number in a map). The handler's deliver(id, kind, value) takes the
-- result and lowers npending by the task's items once its callbacks have run. An item
-- that cannot travel raises at `level`, as seen from the caller (args.lua's rule).
function Pool:_submit(handler, blob, star, items, i, j, root, start, all, level)
  local id = self.core:submit(blob, star, items, i, j, root, start, all, level + 1)
  self.handlers[id] = handler
  self.npending = self.npending + (j - i + 1)
  return id
end

-- Delivers what the workers finished, waiting at most timeout seconds (nil: forever) for
-- the first result. Returns the number of tasks delivered. When a callback raises, the
-- error leaves through this call and the undelivered results wait for the next one.
function Pool:_pump(timeout)
  if self.state == "terminated" then return 0 end
  local ev = self.events
  if self.ev_pos > self.ev_n then
    self.ev_pos, self.ev_n = 1, self.core:wait(timeout or -1, ev)
    if ev.broken then
      local message = "pool broken: a replacement worker's init failed: " .. ev.broken
      ev.broken = nil
      self:_fail_all(message)
      self:terminate()
      error(message, 0)
    end
  end
  local handlers, delivered = self.handlers, 0
  while self.ev_pos <= self.ev_n do
    local k = self.ev_pos
    self.ev_pos = k + 3
    local id, kind, value = ev[k], ev[k + 1], ev[k + 2]
    ev[k], ev[k + 1], ev[k + 2] = nil, nil, nil
    local handler = handlers[id]
    handlers[id] = nil
    handler:deliver(id, kind, value)
    delivered = delivered + 1
  end
  return delivered
end

-- Fails every task not yet delivered with message (terminate, broken pool).
function Pool:_fail_all(message)
  local handlers = self.handlers
  self.handlers = {}
  self.npending = 0
  local ev = self.events
  for k = self.ev_pos, self.ev_n do ev[k] = nil end
  self.ev_pos, self.ev_n = 1, 0
  local err = pool_error(message)
  local seen = {}
  for id, handler in pairs(handlers) do
    if not seen[handler] then
      seen[handler] = true
      if handler.abort then handler:abort(id, err) end
    end
  end
end

-- pool:pending() -> items submitted whose results (and callbacks) are not yet done.
function Pool:pending()
  return self.npending
end

-- A callback's own task stays pending until the callback returns: waiting there for
-- every task to finish would wait for itself.
function Pool:_check_not_in_callback(what, level)
  if self.in_callback > 0 then
    error(string.format("forage.pool: %s inside a callback of the same pool would wait for itself", what),
      level + 1)
  end
end

-- pool:drain([timeout]) -> true once nothing is pending, counting the tasks that
-- callbacks submit meanwhile; nil, "timeout", "timeout" when timeout seconds passed first.
function Pool:drain(timeout)
  timeout = check_timeout(timeout, 1, "drain", 2)
  self:_check_not_in_callback("drain()", 2)
  local ok, err, kind = self:_drain(timeout)
  return ok, err, kind
end

function Pool:_drain(timeout)
  local deadline = timeout and M.now() + timeout
  while self.npending > 0 do
    local left = deadline and deadline - M.now()
    if left and left <= 0 then return nil, "timeout", "timeout" end
    self:_pump(left)
  end
  return true
end

-- ---------------------------------------------------------------------------------
-- AsyncResult

local CALLBACK_OPTIONS = { on_done = true, on_error = true, callback = true, error_callback = true }

-- An AsyncResult whose callbacks come from opts ({ on_done, on_error }, or Python's
-- callback and error_callback), checked for the method fname.
local function new_result(pool, opts, fname, level)
  local on_done, on_error = nil, nil
  if opts ~= nil then
    args.options("pool:" .. fname, opts, CALLBACK_OPTIONS, level + 1)
    on_done, on_error = opts.on_done or opts.callback, opts.on_error or opts.error_callback
  end
  if on_done ~= nil and type(on_done) ~= "function" then
    args.bad_option("pool:" .. fname, "on_done", "a function", on_done, level + 1)
  end
  if on_error ~= nil and type(on_error) ~= "function" then
    args.bad_option("pool:" .. fname, "on_error", "a function", on_error, level + 1)
  end
  return setmetatable({ pool = pool, done = false, on_done = on_done, on_error = on_error }, AsyncResult)
end

-- Records the outcome and runs its callback; the nitems items stop being pending once
-- the callback has returned (or raised). An apply's values come as one list
-- ({ n = count, ... }): get and on_done give every one of them.
function AsyncResult:_finish(ok, value, nitems)
  self.done, self.ok = true, ok
  local callback
  if ok then
    callback = self.on_done
    if self.all then
      self.values, self.value = value, value[1]
    else
      self.value = value
    end
  else
    self.err, callback = value, self.on_error
  end
  local pool = self.pool
  if callback then
    local fine, err
    pool.in_callback = pool.in_callback + 1
    if ok and self.all then
      fine, err = pcall(callback, table.unpack(value, 1, value.n))
    else
      fine, err = pcall(callback, value)
    end
    pool.in_callback = pool.in_callback - 1
    pool.npending = pool.npending - nitems
    if not fine then error(err, 0) end
  else
    pool.npending = pool.npending - nitems
  end
end

-- One apply: a single task whose single item is the argument list.
function AsyncResult:deliver(id, kind, value)
  if kind == "ok" then
    self:_finish(true, results_list(value)[1], 1)
  else
    self:_finish(false, task_error(value, id, nil), 1)
  end
end

function AsyncResult:abort(_, err)
  if not self.done then self:_finish(false, err, 0) end
end

-- r:ready() -> true when the result (or error) is in.
function AsyncResult:ready()
  return self.done
end

-- r:successful() -> true when the task returned; raises when not ready (as Python).
function AsyncResult:successful()
  if not self.done then error("forage.pool: result is not ready", 2) end
  return self.ok
end

-- r:wait([timeout]) -> true when ready, false when timeout seconds passed first.
function AsyncResult:wait(timeout)
  return self:_wait(check_timeout(timeout, 1, "wait", 2))
end

function AsyncResult:_wait(timeout)
  local deadline = timeout and M.now() + timeout
  while not self.done do
    local left = deadline and deadline - M.now()
    if left and left <= 0 then return false end
    self.pool:_pump(left)
  end
  return true
end

-- r:get([timeout]) -> the value (every value the function returned, for an apply);
-- raises the task's error; nil, "timeout", "timeout" when not ready in time.
function AsyncResult:get(timeout)
  if not self:_wait(check_timeout(timeout, 1, "get", 2)) then return nil, "timeout", "timeout" end
  if not self.ok then error(self.err, 0) end
  local values = self.values
  if values then return table.unpack(values, 1, values.n) end
  return self.value
end

-- ---------------------------------------------------------------------------------
-- apply

local function pack_args(list, fname, level)
  if list ~= nil and type(list) ~= "table" then args.check(2, list, "table", fname, level + 1, true) end
  if list == nil then return { n = 0 } end
  if list.n == nil then return table.pack(table.unpack(list)) end
  return list
end

-- One task whose single item is the argument list; every value it returns is kept.
-- Called by the public methods (level 3 blames their caller).
function Pool:_apply_async(f, list, opts, fname)
  self:_check_open(3)
  local blob = encode_function(f, fname, 3)
  local packed = pack_args(list, fname, 3)
  local r = new_result(self, opts, fname, 3)
  r.all = true
  self:_submit(r, blob, true, { packed }, 1, 1, "args", nil, true, 3)
  return r
end

-- pool:apply_async(f, args [, { on_done = fn, on_error = fn }]) -> AsyncResult.
-- (callback / error_callback are accepted too, as in Python.)
-- Every value the function returns reaches get and on_done.
function Pool:apply_async(f, list, opts)
  local r = self:_apply_async(f, list, opts, "apply_async")
  return r
end

-- pool:apply(f, args) -> f(table.unpack(args)) run in a worker: every value it returns.
function Pool:apply(f, list)
  local r = self:_apply_async(f, list, nil, "apply")
  return r:get()
end

-- ---------------------------------------------------------------------------------
-- map and starmap

-- The default chunk size: about four chunks per worker, as Python, but at most
-- MAX_DEFAULT_CHUNK items, so that the parent decodes early chunks while workers run
-- later ones (a chunk costs a few microseconds here, not a pickled round trip).
local MAX_DEFAULT_CHUNK = 4096
function Pool:_default_chunk(n)
  local c = -(-n // (self.workers * 4))
  if c > MAX_DEFAULT_CHUNK then return MAX_DEFAULT_CHUNK end
  return c < 1 and 1 or c
end

local function check_chunk(chunk, fname, level)
  if chunk ~= nil and (math.type(chunk) ~= "integer" or chunk < 1) then
    bad_argument(3, fname, "chunk size must be a positive integer, got " .. args.show(chunk), level + 1)
  end
end

-- Materialises an iterable (a list, or an iterator function called until nil).
local function to_list(iterable)
  if type(iterable) == "table" then return iterable, #iterable end
  local list, n = {}, 0
  for v in iterable do
    n = n + 1
    list[n] = v
  end
  return list, n
end

-- The handler of a whole map: results land at their item's index.
local MapState = {}
MapState.__index = MapState

function MapState:deliver(id, kind, value)
  local start, count = self.starts[id], self.counts[id]
  self.starts[id], self.counts[id] = nil, nil
  local result, pool = self.result, self.result.pool
  if result.done then           -- an earlier chunk failed: this one is only counted
    pool.npending = pool.npending - count
  elseif kind == "ok" then
    assert(decode_into(value, self.values, start, CODE))
    self.left = self.left - 1
    if self.left == 0 then
      result:_finish(true, self.values, count)
    else
      pool.npending = pool.npending - count
    end
  else
    -- Python fails the whole map on the first error; later chunks are ignored.
    result:_finish(false, task_error(value, id, start + (value.index or 0)), count)
  end
end

function MapState:abort(_, err)
  if not self.result.done then self.result:_finish(false, err, 0) end
end

-- The checks every map and imap begins with; returns the encoded function. Called by
-- _map_async and _imap (level 4 blames the caller of their public method).
function Pool:_check_map(f, iterable, chunk, fname)
  self:_check_open(4)
  local blob = encode_function(f, fname, 4)
  local kind = type(iterable)
  if kind ~= "table" and kind ~= "function" then args.check(2, iterable, "table|function", fname, 4) end
  check_chunk(chunk, fname, 4)
  return blob
end

-- Called by the public methods (level 3 blames their caller).
function Pool:_map_async(f, iterable, chunk, opts, star, fname)
  local blob = self:_check_map(f, iterable, chunk, fname)
  local result = new_result(self, opts, fname, 3)
  local items, n = to_list(iterable)
  chunk = chunk or self:_default_chunk(n)
  local state = setmetatable({ result = result, values = core.new_table(n), left = -(-n // chunk),
                                starts = {}, counts = {} }, MapState)
  result.count = n
  if n == 0 then
    result:_finish(true, state.values, 0)
    return result
  end
  for i = 1, n, chunk do
    local j = i + chunk - 1
    if j > n then j = n end
    local id = self:_submit(state, blob, star, items, i, j, "items", i, false, 3)
    state.starts[id], state.counts[id] = i, j - i + 1
  end
  return result
end

-- pool:map(f, iterable [, chunk]) -> list of f(item), in order (and its length).
function Pool:map(f, iterable, chunk)
  local r = self:_map_async(f, iterable, chunk, nil, false, "map")
  return r:get(), r.count
end

-- pool:starmap(f, list_of_arg_lists [, chunk]) -> list of f(table.unpack(args)).
function Pool:starmap(f, iterable, chunk)
  local r = self:_map_async(f, iterable, chunk, nil, true, "starmap")
  return r:get(), r.count
end

-- pool:map_async(f, iterable [, chunk [, { on_done, on_error }]]) -> AsyncResult of the list.
-- (No tail calls to the checks' callers: a tail call would shift the level they blame.)
function Pool:map_async(f, iterable, chunk, opts)
  local r = self:_map_async(f, iterable, chunk, opts, false, "map_async")
  return r
end

function Pool:starmap_async(f, iterable, chunk, opts)
  local r = self:_map_async(f, iterable, chunk, opts, true, "starmap_async")
  return r
end

-- ---------------------------------------------------------------------------------
-- imap and imap_unordered: lazy over their input, a bounded window of tasks in flight.

local IterState = {}
IterState.__index = IterState

function IterState:deliver(id, kind, value)
  local start, count = self.starts[id], self.counts[id]
  self.starts[id], self.counts[id] = nil, nil
  local ready_ok = self.ready_ok
  if kind == "ok" then
    -- Straight into place: no table per task.
    assert(decode_into(value, self.ready_val, start, CODE))
    for i = start, start + count - 1 do ready_ok[i] = true end
    if not self.ordered then
      local fifo = self.fifo
      for i = start, start + count - 1 do fifo[#fifo + 1] = i end
    end
  else
    local results = value.results or {}
    local failed = value.index or 0
    for k = 1, failed do self:_put(start + k - 1, true, results[k]) end
    self:_put(start + failed, false, task_error(value, id, start + failed))
    -- the items after the failed one in this chunk did not run
    for k = failed + 2, count do
      self:_put(start + k - 1, false, task_error({ value = "not run: an earlier item of its chunk failed",
                                                  pid = value.pid }, id, start + k - 1))
    end
  end
  self.inflight = self.inflight - 1
  self.pool.npending = self.pool.npending - count
end

function IterState:abort(_, err)
  self.inflight = 0
  self.exhausted = true
  self:_put(self.next_out, false, err)
end

function IterState:_put(i, ok, v)
  self.ready_ok[i] = ok
  self.ready_val[i] = v
  if not self.ordered then
    self.fifo[#self.fifo + 1] = i
  end
end

-- Called by the public methods (level 3 blames their caller).
function Pool:_imap(f, iterable, chunk, star, ordered, fname)
  local blob = self:_check_map(f, iterable, chunk, fname)
  chunk = chunk or 1
  local list, n_list, pull
  if type(iterable) == "table" then
    list, n_list = iterable, #iterable
  else
    pull = iterable
  end
  local state = setmetatable({
    pool = self, ordered = ordered, ready_ok = {}, ready_val = {}, fifo = {}, fifo_pos = 1,
    next_out = 1, inflight = 0, starts = {}, counts = {},
  }, IterState)
  -- Tasks in flight: enough for every worker to hold a deep queue of small tasks (one
  -- wake-up then carries many results), bounded in items so big chunks stay lazy.
  local window = math.max(2 * self.workers, math.min(self.workers * 256, -(-65536 // chunk)))
  local next_in, exhausted = 1, false
  local buffer = {}

  -- Submits chunks until the window is full or the input ends.
  local function feed()
    while not exhausted and state.inflight < window do
      local id
      if list then
        if next_in > n_list then exhausted = true break end
        local j = math.min(next_in + chunk - 1, n_list)
        id = self:_submit(state, blob, star, list, next_in, j, "items", next_in, false, 3)
        state.starts[id], state.counts[id] = next_in, j - next_in + 1
        next_in = j + 1
      else
        local k = 0
        while k < chunk do
          local v = pull()
          if v == nil then exhausted = true break end
          k = k + 1
          buffer[k] = v
        end
        if k == 0 then break end
        id = self:_submit(state, blob, star, buffer, 1, k, "items", next_in, false, 3)
        state.starts[id], state.counts[id] = next_in, k
        next_in = next_in + k
        for x = 1, k do buffer[x] = nil end
      end
      state.inflight = state.inflight + 1
    end
  end

  local function take(i)
    local ok, v = state.ready_ok[i], state.ready_val[i]
    state.ready_ok[i], state.ready_val[i] = nil, nil
    if not ok then error(v, 0) end
    return i, v
  end

  return function()
    while true do
      if ordered then
        if state.ready_ok[state.next_out] ~= nil then
          local i = state.next_out
          state.next_out = i + 1
          return take(i)
        end
      elseif state.fifo_pos <= #state.fifo then
        local i = state.fifo[state.fifo_pos]
        state.fifo[state.fifo_pos] = nil
        state.fifo_pos = state.fifo_pos + 1
        if state.fifo_pos > #state.fifo then state.fifo, state.fifo_pos = {}, 1 end
        return take(i)
      end
      if state.exhausted then exhausted = true end
      feed()
      if state.inflight == 0 then return nil end
      self:_pump()
    end
  end
end

-- for i, r in pool:imap(f, iterable [, chunk = 1]) do ... end: results in input order.
-- The loop yields the item's index first, as ipairs does, so nil results are fine.
function Pool:imap(f, iterable, chunk)
  local it = self:_imap(f, iterable, chunk, false, true, "imap")
  return it
end

-- for i, r in pool:imap_unordered(f, iterable [, chunk = 1]): results as they finish.
function Pool:imap_unordered(f, iterable, chunk)
  local it = self:_imap(f, iterable, chunk, false, false, "imap_unordered")
  return it
end

-- ---------------------------------------------------------------------------------
-- Ending a pool

-- pool:close(): no new tasks; the ones submitted still run.
function Pool:close()
  if self.state == "open" then self.state = "closed" end
end

-- pool:join([timeout]) -> true: after close (or terminate), waits for every task,
-- callbacks included, then for the workers to exit. nil, "timeout", "timeout" when
-- timeout seconds passed first.
function Pool:join(timeout)
  timeout = check_timeout(timeout, 1, "join", 2)
  if self.state == "open" then
    error("forage.pool: pool is still open: call close() or terminate() before join()", 2)
  end
  if self.state == "terminated" then return true end
  self:_check_not_in_callback("join()", 2)
  local ok, err, kind = self:_drain(timeout)
  if not ok then return nil, err, kind end
  self.core:shutdown(5)
  self.core:terminate()
  self.state = "terminated"
  return true
end

-- pool:terminate(): kills the workers now; what is not finished fails with "pool terminated".
function Pool:terminate()
  if self.state == "terminated" then return end
  self.state = "terminated"
  self.core:terminate()
  self:_fail_all("pool terminated")
end

-- local pool <close> = forage.pool(...): close and join at the end of the scope, or
-- terminate when the scope ends by an error.
function Pool:__close(err)
  if err ~= nil then
    self:terminate()
  else
    self:close()
    self:join()
  end
end

Pool.__gc = function(self)
  if self.state ~= "terminated" and self.core then self.core:terminate() end
end

-- pool:resources() -> one table per resource, in the order given: { value, state
-- ("free", "leased", "cooling", "retired"), worker (the pid holding it), leases,
-- successes, failures, cooldowns, cooldown (seconds left), reason (the last failure) }.
function Pool:resources()
  if not self.leases then return {} end
  local snapshot, pids = self.leases:snapshot(), self.core:pids()
  for i, r in ipairs(snapshot) do
    r.value = self.resource_list[i]
    if r.holder then r.worker = pids[r.holder] end
  end
  return snapshot
end

-- pool:pids() -> the worker process ids (for monitoring, or a test that kills one).
function Pool:pids()
  return self.core:pids()
end

-- pool:stats() -> { workers, live, pending, queued, in_flight, respawns, taken_back, task_seconds, depth }.
function Pool:stats()
  local s = self.core:stats()
  local queued, inflight, live = self.core:counts()
  s.workers, s.live, s.queued, s.in_flight, s.pending = self.workers, live, queued, inflight, self.npending
  return s
end

function Pool:__tostring()
  return string.format("forage.Pool (%d workers, %s, %d pending)", self.workers, self.state, self.npending)
end

M.now = core.now
M.AsyncResult = AsyncResult
M.Pool = Pool

return M
