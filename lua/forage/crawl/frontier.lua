-- The crawl's frontier: its queued requests and its seen set, behind one small interface
-- that every backend provides (docs/frontier.md says what each call guarantees, and what
-- the SQLite and Redis backends of the next issues must do for it).
--
--   local frontier = require "forage.crawl.frontier"
--   local fr = frontier.memory{ per_host = 8 }
--   fr:push(req)   -> true, or false when req.fp was seen (and not req.dont_filter)
--   fr:pop(n)      -> a list of up to n requests, each with its backend id req.id
--   fr:ack(req)    -- done for good (a success or a final failure)
--   fr:retry(req)  -- back to the queue, same id, its fields as the engine left them
--   fr:seen(fp)    -> true when fp is new (and now seen)
--   fr:counts()    -> { queued, inflight, seen, hosts, bytes }
--   fr:close()
--
-- The memory backend keeps the requests in forage.core's Frontier (src/frontier.c): each
-- one an encoded string in a per-host, per-priority FIFO, about its encoded size in bytes,
-- never a Lua table per queued request.
local core = require "forage.core"
local args = require "forage.args"

local M = {}

local encode, decode = core.encode, core.decode
local ENCODE_OPTS = { root = "request" }
local TYPE = "forage.crawl.frontier"

local Memory = {}
Memory.__index = Memory
Memory.__name = TYPE

local function store_of(self, level)
  local store = self._store
  if store == nil then error("attempt to use a closed " .. TYPE, (level or 2) + 1) end
  return store
end

-- "scheme://user:pass@Host:port/..." -> "host:port" (lowercase), or nil.
local function host_of_url(url)
  if type(url) ~= "string" then return nil end
  local authority = url:match("^%a[%w+.-]*://([^/?#]*)")
  if authority == nil then return nil end
  authority = authority:gsub("^.*@", "")
  if authority == "" then return nil end
  return authority:lower()
end

local function bad_request(fname, what, level)
  error(string.format("bad argument #1 to '%s' (%s)", fname, what), level + 1)
end

-- The host and priority of req, checked; raises at the caller of the method.
local function host_priority(req, fname)
  local host = req.host
  if host == nil then host = host_of_url(req.url) end
  if type(host) ~= "string" or host == "" then
    bad_request(fname, "request needs a host, or a url with one; got host " .. args.show(req.host)
      .. ", url " .. args.show(req.url), 3)
  end
  local priority = req.priority
  if priority == nil then
    priority = 0
  else
    priority = math.type(priority) and math.tointeger(priority)
    if priority == nil then
      bad_request(fname, "request priority must be an integer, got " .. args.show(req.priority), 3)
    end
  end
  return host, priority
end

-- A request travels as one flat record: its usual fields by position, without their
-- names (a million requests would otherwise carry 40 MB of "url", "callback", "priority"
-- ...), the host as `true` when it is the url's own, and every other field (meta,
-- headers, attempts ...) encoded on its own, with the field names in its errors
-- ("request.meta.cb"). A usual field of an unusual type (a false callback, a table url)
-- travels with the others, so every request comes back as it went.
local FIELDS = { "url", "fp", "callback", "depth", "priority", "id" }
local FIELD_TYPE = { url = "string", fp = "string", callback = "string", depth = "number", priority = "number",
                     id = "number" }
local HOST_SLOT, REST_SLOT = #FIELDS + 1, #FIELDS + 2
local USUAL, FIELDS_AT = { host = true }, {}
for i, name in ipairs(FIELDS) do USUAL[name], FIELDS_AT[name] = true, i end

local function encoded(req, fname)
  local record = {}
  for i, name in ipairs(FIELDS) do
    local v = req[name]
    record[i] = type(v) == FIELD_TYPE[name] and v or false
  end
  local host = req.host
  if host == nil then
    record[HOST_SLOT] = false
  elseif type(host) == "string" and host == host_of_url(req.url) then
    record[HOST_SLOT] = true
  else
    record[HOST_SLOT] = host
  end
  local rest
  for k, v in pairs(req) do
    if not USUAL[k] or (k ~= "host" and record[FIELDS_AT[k]] == false and v ~= nil) then
      rest = rest or {}
      rest[k] = v
    end
  end
  record[REST_SLOT] = false
  if rest then
    local ok, blob = pcall(encode, rest, ENCODE_OPTS)
    if not ok then bad_request(fname, blob, 3) end
    record[REST_SLOT] = blob
  end
  return encode(record)
end

local function decoded(blob)
  local record = assert(decode(blob))
  local rest = record[REST_SLOT]
  local req = rest and assert(decode(rest)) or {}
  for i, name in ipairs(FIELDS) do
    local v = record[i]
    if v ~= false then req[name] = v end
  end
  local host = record[HOST_SLOT]
  if host == true then req.host = host_of_url(req.url)
  elseif host then req.host = host end
  return req
end

-- For the Redis backend (lua/forage/crawl/redis.lua), which keeps the same records.


-- frontier.memory{ per_host = 0 } -> an empty in-memory frontier; per_host: the most
-- requests of one host in flight at once (0: no limit).
function M.memory(opts)
  args.options("forage.crawl.frontier.memory", opts, { per_host = true })
  local per_host = opts and opts.per_host or 0
  if math.type(per_host) ~= "integer" or per_host < 0 or per_host > 0x7fffffff then
    args.bad_option("forage.crawl.frontier.memory", "per_host", "an integer from 0 to 2147483647", per_host)
  end
  return setmetatable({
    _store = core.frontier { per_host = per_host },
    _inflight = {},   -- id -> host of each request popped and not yet acked or retried
    _inflight_n = 0,
    _next_id = 0,
  }, Memory)
end

-- fr:push(req) -> true when queued; false when req.fp was seen before (req.dont_filter
-- skips the check and leaves the seen set alone). Gives req a new id (req.id). Raises
-- when req cannot be encoded in data mode, naming the field ("request.meta.cb").
function Memory:push(req)
  local store = store_of(self)
  args.check(1, req, "table", "push")
  local host, priority = host_priority(req, "push")
  local fp = req.fp
  local filter = not req.dont_filter
  if filter then
    if type(fp) ~= "string" then
      bad_request("push", "request needs a string fp (or dont_filter), got " .. args.show(fp), 2)
    end
    if store:seen_has(fp) then return false end
  end
  local id = self._next_id + 1
  req.id = id
  local blob = encoded(req, "push")
  self._next_id = id
  -- Seen only once encoded: a request that raised is neither queued nor marked seen.
  if filter then store:seen_add(fp) end
  store:push(host, priority, blob)
  local journal = self._journal_to
  if journal then journal:pushed(id, host, priority, blob, filter and fp or nil) end
  return true
end

-- fr:pop([n = 1]) -> a list of up to n requests (fresh tables), round robin over hosts,
-- highest priority first, FIFO within one; each is in flight until ack or retry. Empty
-- when nothing may be served now (nothing queued, or every host at per_host).
function Memory:pop(n)
  local store = store_of(self)
  if n == nil then n = 1 end
  if math.type(n) ~= "integer" or n < 1 then
    error(string.format("bad argument #1 to 'pop' (count must be a positive integer, got %s)", args.show(n)), 2)
  end
  local blobs = store:pop(n)
  local inflight = self._inflight
  for i = 1, #blobs do
    local req = decoded(blobs[i])
    inflight[req.id] = req.host or host_of_url(req.url)
    blobs[i] = req
  end
  self._inflight_n = self._inflight_n + #blobs
  return blobs
end

-- Takes req's in-flight mark away; raises when req is not in flight.
local function settle(self, store, req, fname)
  args.check(1, req, "table", fname, 3)
  local id = req.id
  local host = id ~= nil and self._inflight[id]
  if not host then
    bad_request(fname, "request " .. args.show(id) .. " is not in flight", 3)
  end
  self._inflight[id] = nil
  self._inflight_n = self._inflight_n - 1
  store:done(host)
  return host
end

-- For the Redis backend (lua/forage/crawl/redis.lua), which keeps the same records and the
-- same in-flight marks (_inflight, _inflight_n) in a store of its own.
M._encoded, M._decoded, M._host_priority, M._host_of_url, M._settle = encoded, decoded, host_priority, host_of_url,
  settle

-- fr:ack(req): req is done for good (a success or a final failure).
function Memory:ack(req)
  settle(self, store_of(self), req, "ack")
  local journal = self._journal_to
  if journal then journal:acked(req.id) end
end

-- fr:retry(req): req goes back to the queue with its id and its fields as they are now
-- (attempts, switches, reasons...), at its host and priority; no dedupe check.
function Memory:retry(req)
  local store = store_of(self)
  args.check(1, req, "table", "retry")
  local host, priority = host_priority(req, "retry")
  local blob = encoded(req, "retry")   -- before settle: a request that raises stays in flight
  settle(self, store, req, "retry")
  store:push(host, priority, blob)
  local journal = self._journal_to
  if journal then journal:retried(req.id, host, priority, blob) end
end

-- fr:seen(fp) -> true when fp is new (and now seen), false when seen before.
function Memory:seen(fp)
  local store = store_of(self)
  args.check(1, fp, "string", "seen")
  local new = store:seen_add(fp)
  local journal = self._journal_to
  if new and journal then journal:seen(fp) end
  return new
end

-- For a durable backend built on this one (lua/forage/crawl/state.lua): what it saved is
-- put back without a new id nor a journal entry, then every change goes to the journal
-- (an object with pushed(id, host, priority, record, fp), retried(id, host, priority,
-- record), acked(id) and seen(fp)).
function Memory:_restore(id, host, priority, record)
  store_of(self):push(host, priority, record)
  if id > self._next_id then self._next_id = id end
end

function Memory:_restore_seen(fp)
  store_of(self):seen_add(fp)
end

function Memory:_journal(journal, next_id)
  if next_id > self._next_id then self._next_id = next_id end
  self._journal_to = journal
end

function Memory:_last_id()
  return self._next_id
end

-- fr:counts() -> { queued, inflight, seen, hosts (with something queued or in flight),
-- bytes (what the store allocated) }.
function Memory:counts()
  return store_of(self):counts()
end

-- fr:close(): frees the store; idempotent. Also __close.
function Memory:close()
  local store = self._store
  if store ~= nil then
    self._store = nil
    self._inflight = {}
    store:close()
  end
end

Memory.__close = Memory.close

function Memory:__tostring()
  local store = self._store
  if store == nil then return TYPE .. " (memory, closed)" end
  local c = store:counts()
  return string.format("%s (memory, %d queued, %d in flight, %d seen)", TYPE, c.queued, c.inflight, c.seen)
end

return M
