-- One crawl on several hosts sharing one Redis (docs/redis.md says it for users).
--
-- Each host runs `forage crawl SPIDER.lua --redis URL -o FILE` with its own workers and
-- slots; Redis holds what they share (lua/forage/crawl/redis_scripts.lua has the keys):
-- the queue, the seen set, which host holds which request, which host holds which proxy,
-- the proxies' cooldowns, the counters, and how far each host's output is complete.
--
-- How it stays right:
-- - A host takes a batch of requests (one script: ZPOPMIN into its held set) and keeps
--   them in a local queue (the memory frontier's store: round robin, per_host). Its pushes
--   (follows), acks and counters are buffered and sent together every COMMIT_EVERY seconds
--   in one script, pushes before acks: a page is acked only with the requests it found.
-- - Before each commit the host syncs its output file; the commit stores the file's new
--   length with the acks of the pages whose items it holds. Items past that length belong
--   to pages not acked, which another host (or this one, rejoining) fetches again: the
--   committed part of each host's file holds each item once across all hosts, and
--   `forage merge` (or a host that runs again with the same output) cuts the rest.
-- - A host's lease (the deadline of its entry in :consumers) is renewed by each of its
--   commits and pops; when it runs out (the host was killed, or cut off), any host's next
--   commit gives its requests back to the queue and its proxies to the others. A host that
--   finds it lost its lease stops (exit 1): what it held was given to others, and what it
--   wrote since its last commit is not counted.
-- - Commits and pops carry a sequence number: one sent again after a lost reply (Redis
--   restarted, the connection dropped) is applied once.
-- - The crawl is over when nothing is queued and no host holds anything; the host that
--   sees it first marks it finished, the others see the mark, and every host exits 0.
local core = require "forage.core"
local args = require "forage.args"
local frontier_mod = require "forage.crawl.frontier"
local scripts = require "forage.crawl.redis_scripts"

local M = {}

M.LEASE = 30            -- seconds a host's lease lasts without a commit (a dead host's work returns then)
M.COMMIT_EVERY = 0.1    -- seconds between a host's commits while it has results to send (each one script)
M.IDLE_COMMIT_EVERY = 0.3   -- seconds between its commits when it has nothing to send (a heartbeat)
M.TIMEOUT = 5           -- seconds to connect, and for each reply
local MAX_PRIORITY = 1048575   -- |priority| kept in the queue's score (seq + priority * 2^32 < 2^53)
local RETRY_MIN, RETRY_MAX = 0.2, 5   -- backoff between reconnects, seconds

-- ---------------------------------------------------------------- URLs

-- redis.parse_url(url) -> { host, port, db, user, password, path } or nil, message.
-- redis://[[user]:password@]host[:port][/db], or unix:///path/to/socket[?db=N].
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "expected a redis:// URL, got " .. args.show(url) end
  local shown = M.mask(url)
  local path, query = url:match("^unix://(/[^?]*)%??(.*)$")
  if path then
    local db = query:match("db=(%d+)")
    return { path = path, db = tonumber(db) or 0 }
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme == "rediss" then
    return nil, ("%s: TLS (rediss://) is not supported by this build (Debian's hiredis 0.14 has no TLS); "
      .. "reach Redis through a TLS tunnel (stunnel, spiped) on loopback"):format(shown)
  end
  if scheme ~= "redis" then return nil, ("%s: expected redis://[user:password@]host:port/db"):format(shown) end
  -- the user info ends at the last '@' (a password may hold '/' or '@')
  local userinfo, after = rest:match("^(.*)@([^@]*)$")
  local hostport, db = (after or rest):match("^([^/]*)/?(.*)$")
  local t = {}
  if userinfo then
    local user, password = userinfo:match("^([^:]*):(.*)$")
    if not user then user, password = "", userinfo end
    local function unescape(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
    t.user = user ~= "" and unescape(user) or nil
    t.password = unescape(password)
  end
  local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
  if not host or host == "" then return nil, ("%s: no host"):format(shown) end
  t.host, t.port = host, tonumber(port ~= "" and port or "6379")
  if t.port < 1 or t.port > 65535 then return nil, ("%s: port must be from 1 to 65535"):format(shown) end
  if db ~= "" then
    t.db = tonumber(db:match("^(%d+)$"))
    if not t.db then return nil, ("%s: the database must be a number (redis://host:port/0)"):format(shown) end
  else
    t.db = 0
  end
  return t
end

-- The URL with its password masked, for messages and logs: everything between the scheme
-- (if any) and the last '@' is the user info, of which only a plain user name is shown.
function M.mask(url)
  if type(url) ~= "string" then return args.show(url) end
  local at = url:match("^.*()@")
  if not at then return url end
  local scheme, start = url:match("^(%a[%w+.-]*://)()")
  start = start or 1
  if at < start then return url end
  local user = url:sub(start, at - 1):match("^([%w_.-]*):")
  return (scheme or "") .. ((user and user ~= "") and user .. ":***" or "***") .. url:sub(at)
end

-- ---------------------------------------------------------------- the connection

local Conn = {}
Conn.__index = Conn

local function client_lib()
  local ok, mod = pcall(require, "forage.redis")
  if not ok then error("forage.crawl: --redis needs forage.redis (built with libhiredis): " .. tostring(mod), 0) end
  return mod
end

-- A connection that re-dials after a failure, re-authenticates and reloads the scripts.
-- call() returns the reply, or nil, message, kind; kind "io"/"timeout" means "not now"
-- (the caller tries again later), any other kind a real refusal.
local function new_conn(where, shown, timeout)
  return setmetatable({ where = where, shown = shown, timeout = timeout or M.TIMEOUT, shas = {},
    wait = RETRY_MIN, next_try = 0 }, Conn)
end

-- A Redis that restarts answers -LOADING until its data is read back (AOF or RDB): that is
-- "not now", as a refused connection is, never a fatal reply.
local function loading(message)
  return tostring(message):find("^LOADING") ~= nil
end

function Conn:_dial()
  local lib = client_lib()
  local w = self.where
  local r, message, kind = lib.connect { host = w.host, port = w.port, path = w.path, timeout = self.timeout }
  if not r then return nil, message, kind end
  local ok
  if w.password then
    if w.user then ok, message, kind = r:call("AUTH", w.user, w.password)
    else ok, message, kind = r:call("AUTH", w.password) end
    if not ok then
      r:close()
      if kind == "reply" then kind = "auth" end
      return nil, ("authentication failed: %s"):format(tostring(message)), kind
    end
  end
  if w.db and w.db ~= 0 then
    ok, message, kind = r:call("SELECT", w.db)
    if not ok then r:close() return nil, ("SELECT %d: %s"):format(w.db, tostring(message)), kind end
  end
  for name, source in pairs(scripts) do
    local sha
    sha, message, kind = r:call("SCRIPT", "LOAD", source)
    if not sha then
      r:close()
      if loading(message) then return nil, message, "io" end
      if tostring(message):find("^NOAUTH") then
        return nil, "authentication required: this Redis wants a password (redis://[user]:PASSWORD@host:port/db, "
          .. "or FORAGE_REDIS_PASSWORD)", "auth"
      end
      return nil, ("cannot load the crawl's script '%s': %s"):format(name, tostring(message)), kind
    end
    self.shas[name] = sha
  end
  self.r = r
  return true
end

-- The connection, dialled if needed; nil, message, kind when it cannot be had now.
function Conn:get(now)
  if self.r then return self.r end
  if now and now < self.next_try then return nil, self.last_error or "waiting to reconnect", "io" end
  local ok, message, kind = self:_dial()
  if not ok then
    self.last_error = message
    if now then
      self.next_try = now + self.wait
      self.wait = math.min(self.wait * 2, RETRY_MAX)
    end
    return nil, message, kind
  end
  self.wait = RETRY_MIN
  return self.r
end

function Conn:broken(message)
  if self.r then self.r:close() self.r = nil end
  self.last_error = message
end

-- Runs script name with KEYS[1] = key and argv; the reply, or nil, message, kind.
function Conn:script(now, name, key, argv)
  local r, message, kind = self:get(now)
  if not r then return nil, message, kind end
  local reply
  reply, message, kind = r:call("EVALSHA", self.shas[name], 1, key, table.unpack(argv))
  if not reply and kind == "reply" and tostring(message):find("^NOSCRIPT") then
    -- Redis restarted without its script cache: load them again, once
    self:broken(message)
    r, message, kind = self:get()
    if not r then return nil, message, kind end
    reply, message, kind = r:call("EVALSHA", self.shas[name], 1, key, table.unpack(argv))
  end
  if not reply and kind ~= "reply" then self:broken(message) end
  if not reply and kind == "reply" and loading(message) then kind = "io" end
  return reply, message, kind
end

function Conn:close()
  if self.r then self.r:close() self.r = nil end
end

-- ---------------------------------------------------------------- the crawl's coordinator

local Crawl = {}
Crawl.__index = Crawl

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local name = f and f:read("l")
  if f then f:close() end
  return name or os.getenv("HOSTNAME") or "localhost"
end

-- The path as one file has one name on this machine: symbolic links, "." and ".." resolved
-- (the file's own when it exists, else its directory's), so that two hosts given one file
-- under two spellings are seen writing the same file.
local function canonical(path)
  local real = core.realpath(path)
  if real then return real end
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", path end
  local real_dir = core.realpath(dir == "" and "/" or dir)
  if real_dir then return (real_dir == "/" and "" or real_dir) .. "/" .. base end
  if path:sub(1, 1) == "/" then return path end
  return (os.getenv("PWD") or ".") .. "/" .. path
end

-- A connection to url, dialled: conn, or nil and a message naming the URL (password masked).
local function connect(url)
  local where, err = M.parse_url(url)
  if not where then return nil, "--redis " .. err end
  if not where.password then
    local env = os.getenv("FORAGE_REDIS_PASSWORD")
    if env and env ~= "" then where.password = env end
  end
  local shown = M.mask(url)
  local conn = new_conn(where, shown)
  local ok, message, kind = conn:get()
  if not ok then
    if kind == "io" or kind == "timeout" then
      return nil, ("cannot reach Redis at %s: %s"):format(shown, (tostring(message):gsub("^redis ", "")))
    end
    return nil, ("Redis at %s: %s"):format(shown, tostring(message))
  end
  return conn, shown
end

-- redis.open(url, opts) -> a crawl's coordinator, joined; or nil, message, why (why:
-- "finished" when the crawl was over before this host joined, with a message to print).
-- opts: prefix (the crawl's key prefix), name, hash (the spider's), proxies (count),
-- outputs ({ items = path, failed = path }), lease (seconds), request_timeout (seconds).
function M.open(url, opts)
  local conn, shown = connect(url)
  if not conn then return nil, "forage.crawl: " .. shown end
  local message, kind
  local self = setmetatable({
    conn = conn, shown = shown, key = "forage:{" .. opts.prefix .. "}",
    lease_ms = math.floor((opts.lease or M.LEASE) * 1000), host = hostname(), pid = require("forage").getpid(),
    pushes = {}, acks = {}, seens = {}, pop_seq = 0, commit_seq = 0, last_stats = {},
    remote_queued = 0, remote_held = 0, finished = false, committed = {}, proxies_mine = {},
    draining = {}, proxy_count = opts.proxies or 0,
  }, Crawl)
  self.consumer = ("%s:%d:%04x"):format(self.host, self.pid, math.random(0, 0xffff))
  -- the outputs this host writes, named by machine and absolute path
  self.fields = {}
  for _, what in ipairs { "items", "failed" } do
    local path = opts.outputs and opts.outputs[what]
    if path then
      local field = what .. "\t" .. self.host .. "\t" .. canonical(path)
      self.fields[#self.fields + 1] = { kind = what, field = field, path = path }
    end
  end
  local argv = { self.consumer, opts.hash, opts.name, self.host, self.lease_ms, self.proxy_count,
    math.floor((opts.request_timeout or 0) * 1000) }
  for _, f in ipairs(self.fields) do argv[#argv + 1] = f.field end
  local reply
  reply, message, kind = conn:script(nil, "join", self.key, argv)
  if not reply then
    conn:close()
    return nil, ("forage.crawl: Redis at %s: %s"):format(shown, tostring(message)), kind
  end
  if reply[1] == "spider" then
    conn:close()
    return nil, ("forage.crawl: the crawl '%s' in Redis at %s runs a spider with file hash %s; this one has %s: "
      .. "every host must run the same spider file (or give another --redis-prefix)"):format(opts.prefix, shown,
      tostring(reply[2]), tostring(opts.hash))
  elseif reply[1] == "finished" then
    conn:close()
    return nil, ("the crawl '%s' in Redis at %s is finished (%s pages, %s items): nothing to do"):format(opts.prefix,
      shown, tostring(reply[2]), tostring(reply[3])), "finished"
  elseif reply[1] == "busy" then
    conn:close()
    local _, _, path = tostring(reply[2]):match("^([^\t]*)\t([^\t]*)\t(.*)$")
    return nil, ("forage.crawl: %s is written by another host of this crawl, still running (%s): give each host "
      .. "its own output (a host that was killed keeps it until its lease ends, %g s after its last commit)"):format(
      tostring(path), tostring(reply[3]), (opts.lease or M.LEASE))
  end
  self.number = tonumber(reply[2])
  self.next_local = 0
  -- what this host's outputs held when it last ran: cut back to that (resume)
  self.resume = {}
  for i, f in ipairs(self.fields) do
    local length = tonumber(reply[2 + i]) or 0
    self.committed[f.field] = length
    self.resume[f.kind] = { path = f.path, length = length }
  end
  return self
end

-- ids: this host's number in the high bits, a counter in the low 32
function Crawl:_next_id()
  self.next_local = self.next_local + 1
  return self.number * 4294967296 + self.next_local
end

-- Takes up to n requests from Redis (one script); a list of { id, record }, or nil, message, kind.
function Crawl:_fetch(now, n)
  if not self.pop_pending then
    self.pop_seq = self.pop_seq + 1
    self.pop_pending, self.pop_n = true, n
  end
  n = self.pop_n
  local reply, message, kind = self.conn:script(now, "pop", self.key,
    { self.consumer, self.pop_seq, n, self.lease_ms })
  if not reply then return nil, message, kind end
  self.pop_pending = false
  if reply[1] == "lost" then
    self.lost = true
    return nil, "lost", "lost"
  end
  self.remote_queued, self.remote_held = reply[2], reply[3]
  local got = {}
  for i = 4, #reply, 2 do got[#got + 1] = { id = reply[i], record = reply[i + 1] } end
  return got
end

-- The commit: every buffered push, ack and seen, the outputs' new lengths (files synced
-- first), the counters' deltas and the proxies' health, in one script. true, or nil,
-- message, kind ("io": try again later, nothing lost; "lost": this host lost its lease).
-- stats: the crawl's stats; idle: this host has nothing queued or in flight and has read
-- its whole start; files: open files to sync; records: sink:files()'s record; proxies:
-- { index = { state, cooldown (s), reason } } of the proxies this host holds.
function Crawl:commit(now, opts)
  if self.lost then return nil, "lost", "lost" end
  if self.pop_pending then
    -- a batch whose reply was lost: taken again first (the same one, if Redis applied it),
    -- so that the commit names the pop Redis has
    local ok, message, kind = self.fr:_refill(now, self.pop_n or 1)
    if not ok then return nil, message, kind end
  end
  local argv = self.pending
  if not argv then
    for _, file in ipairs(opts.files or {}) do
      local ok, message = core.fsync(file)
      if not ok then return nil, ("cannot sync an output before committing: %s"):format(message), "fatal" end
    end
    local pushes, acks, seens = self.pushes, self.acks, self.seens
    self.pushes, self.acks, self.seens = {}, {}, {}
    local outs, new_lengths = {}, {}
    for _, f in ipairs(self.fields) do
      local rec = opts.records and opts.records[f.kind]
      local length = rec and rec.length or self.committed[f.field]
      outs[#outs + 1] = { f.field, self.committed[f.field], length }
      new_lengths[f.field] = length
    end
    local stats_delta = {}
    for _, name in ipairs { "pages", "items", "failed", "requests", "retries", "bytes", "duplicates",
      "proxy_switches", "worker_deaths", "items_dropped" } do
      local v = opts.stats and opts.stats[name] or 0
      local d = v - (self.last_stats[name] or 0)
      if d ~= 0 then stats_delta[#stats_delta + 1] = { name, d } end
      self.last_stats[name] = v
    end
    local reports, released = {}, {}
    for i, p in pairs(opts.proxies or {}) do
      if self.proxies_mine[i] and not self.draining[i] then
        reports[#reports + 1] = { i, p.state, math.floor((p.cooldown or 0) * 1000), p.reason or "" }
      end
    end
    for i, mark in pairs(self.draining) do
      if (opts.oldest_running or math.huge) > mark then
        released[#released + 1] = i
        self.draining[i] = nil
        self.proxies_mine[i] = nil
      end
    end
    self.commit_seq = self.commit_seq + 1
    argv = { self.consumer, self.commit_seq, self.lease_ms, opts.idle and #pushes == 0 and "1" or "0", #pushes,
      #acks, #seens, #outs, #stats_delta, #reports, #released, self.pop_seq }
    for _, p in ipairs(pushes) do
      argv[#argv + 1], argv[#argv + 2], argv[#argv + 3], argv[#argv + 4] = p[1], p[2], p[3], p[4]
    end
    for _, id in ipairs(acks) do argv[#argv + 1] = id end
    for _, fp in ipairs(seens) do argv[#argv + 1] = fp end
    for _, o in ipairs(outs) do argv[#argv + 1], argv[#argv + 2], argv[#argv + 3] = o[1], o[2], o[3] end
    for _, s in ipairs(stats_delta) do argv[#argv + 1], argv[#argv + 2] = s[1], s[2] end
    for _, r in ipairs(reports) do
      argv[#argv + 1], argv[#argv + 2], argv[#argv + 3], argv[#argv + 4] = r[1], r[2], r[3], r[4]
    end
    for _, i in ipairs(released) do argv[#argv + 1] = i end
    self.pending, self.pending_lengths = argv, new_lengths
  end
  argv[12] = self.pop_seq   -- the last batch taken, which may be newer than this commit
  local reply, message, kind = self.conn:script(now, "commit", self.key, argv)
  if not reply then
    if kind == "reply" then return nil, ("Redis at %s refused a commit: %s"):format(self.shown, message), "fatal" end
    return nil, message, kind
  end
  if reply[1] == "lost" then
    self.lost = true
    return nil, "lost", "lost"
  end
  self.pending, self.last_sent = nil, argv
  for field, length in pairs(self.pending_lengths) do self.committed[field] = length end
  self.duplicates = (self.duplicates or 0) + reply[2]
  self.remote_queued, self.remote_held = reply[3], reply[4]
  self.finished = reply[5] == 1
  self.usable_proxies = tonumber(reply[9])
  -- the proxies: what this host holds now, what it got (with the cooldown another host
  -- gave it), and what it should hand on
  local mine = {}
  for i in tostring(reply[6]):gmatch("%d+") do mine[tonumber(i)] = true end
  local got = {}
  for line in tostring(reply[7]):gmatch("[^\n]+") do
    local i, ms, why = line:match("^(%d+)\t(%d+)\t(.*)$")
    if i then
      got[#got + 1] = { index = tonumber(i), cooldown = tonumber(ms) / 1000, reason = why ~= "" and why or nil }
    end
  end
  local give = {}
  for i in tostring(reply[8]):gmatch("%d+") do give[#give + 1] = tonumber(i) end
  self.proxies_mine = mine   -- those handed on stay in it until Redis is told they are released
  return true, got, give
end

-- True when this host has something to commit: pushes, acks, seen marks, counters, an
-- output grown, proxies to hand on, a commit to send again.
function Crawl:has_news(stats)
  if self.pending or #self.pushes > 0 or #self.acks > 0 or #self.seens > 0 or next(self.draining) then return true end
  return (stats.pages or 0) ~= (self.last_stats.pages or 0) or (stats.failed or 0) ~= (self.last_stats.failed or 0)
    or (stats.requests or 0) ~= (self.last_stats.requests or 0)
end

-- A proxy handed on: this host's slots stopped taking it; Redis is told once every request
-- sent to the workers before (number `mark` and lower: the only ones that may be using it)
-- has come back, so that it never serves more requests at once than its slots.
function Crawl:drain_proxy(i, mark)
  self.draining[i] = mark
end

-- The host leaves: what it holds goes back to the queue at once, its proxies to the others.
function Crawl:leave(state)
  if self.lost then return end
  self.conn:script(nil, "leave", self.key, { self.consumer, state or "left" })
end

function Crawl:close()
  self.conn:close()
end

-- ---------------------------------------------------------------- the frontier

local Frontier = {}
Frontier.__index = Frontier
Frontier.__name = "forage.crawl.frontier"

-- crawl:frontier{ per_host, batch } -> the crawl's frontier on Redis: the interface of
-- frontier.memory (docs/frontier.md), its requests taken from Redis in batches of `batch`.
function Crawl:frontier(opts)
  local fr = setmetatable({
    crawl = self, store = core.frontier { per_host = opts and opts.per_host or 0 }, _inflight = {}, _inflight_n = 0,
    batch = opts and opts.batch or 64, next_fetch = 0, now = opts and opts.now or os.time,
  }, Frontier)
  self.fr = fr
  return fr
end

local function open_store(fr)
  if fr.store == nil then error("attempt to use a closed forage.crawl.frontier", 3) end
  return fr.store
end

function Frontier:push(req)
  local store = open_store(self)
  args.check(1, req, "table", "push")
  local _, priority = frontier_mod._host_priority(req, "push")
  local fp = req.fp
  local filter = not req.dont_filter
  -- _once: a key that queues a dont_filter request once for the crawl (a start request,
  -- which every host reads); it is not part of the request
  local once = req._once
  req._once = nil
  if filter then
    if type(fp) ~= "string" then
      error(("bad argument #1 to 'push' (request needs a string fp (or dont_filter), got %s)"):format(args.show(fp)), 2)
    end
    if store:seen_has(fp) then return false end
  elseif once and store:seen_has(once) then
    return false
  end
  local crawl = self.crawl
  local id = crawl:_next_id()
  req.id = id
  local ok, record = pcall(frontier_mod._encoded, req, "push")
  if not ok then error(record, 2) end
  if filter then store:seen_add(fp) elseif once then store:seen_add(once) end
  priority = math.max(-MAX_PRIORITY, math.min(MAX_PRIORITY, priority))
  crawl.pushes[#crawl.pushes + 1] = { filter and fp or once or "", priority, id, record }
  crawl.remote_queued = crawl.remote_queued + 1
  return true
end

function Frontier:pop(n)
  local store = open_store(self)
  if n == nil then n = 1 end
  if math.type(n) ~= "integer" or n < 1 then
    error(("bad argument #1 to 'pop' (count must be a positive integer, got %s)"):format(args.show(n)), 2)
  end
  local crawl = self.crawl
  local now = self.now()
  local local_queued = store:counts().queued
  local worth = crawl.remote_queued > 0 or crawl.pop_pending
  if local_queued < n and not crawl.lost and worth and now >= self.next_fetch then
    self:_refill(now, math.max(n, self.batch) - local_queued)
  end
  local blobs = store:pop(n)
  local inflight = self._inflight
  for i = 1, #blobs do
    local req = frontier_mod._decoded(blobs[i])
    inflight[req.id] = req.host or frontier_mod._host_of_url(req.url)
    blobs[i] = req
  end
  self._inflight_n = self._inflight_n + #blobs
  return blobs
end

-- Takes a batch from Redis into the local queue: true, or nil, message, kind.
function Frontier:_refill(now, n)
  local store = self.store
  local got, message, kind = self.crawl:_fetch(now, n)
  if not got then
    self.next_fetch = now + M.COMMIT_EVERY
    return nil, message, kind
  end
  for _, g in ipairs(got) do
    local ok, req = pcall(frontier_mod._decoded, g.record)
    if not ok then return nil, ("a request from Redis does not decode: %s"):format(req), "fatal" end
    local host, priority = frontier_mod._host_priority(req, "pop")
    store:push(host, priority, g.record)
  end
  if #got == 0 then self.next_fetch = now + M.COMMIT_EVERY end
  return true
end

local settle = frontier_mod._settle

function Frontier:ack(req)
  settle(self, open_store(self), req, "ack")
  local acks = self.crawl.acks
  acks[#acks + 1] = req.id
end

-- A retry stays on this host (Redis still counts the request as this host's): it goes to
-- the back of the local queue with its fields as they are now.
function Frontier:retry(req)
  local store = open_store(self)
  args.check(1, req, "table", "retry")
  local host, priority = frontier_mod._host_priority(req, "retry")
  local ok, record = pcall(frontier_mod._encoded, req, "retry")
  if not ok then error(record, 2) end
  settle(self, store, req, "retry")
  store:push(host, priority, record)
end

function Frontier:seen(fp)
  local store = open_store(self)
  args.check(1, fp, "string", "seen")
  local new = store:seen_add(fp)
  if new then
    local seens = self.crawl.seens
    seens[#seens + 1] = fp
  end
  return new
end

-- counts(): queued counts what this host has and what is left anywhere else (queued in
-- Redis, or held by other hosts), as of the last reply: 0 only once the crawl is finished.
function Frontier:counts()
  local c = open_store(self):counts()
  local crawl = self.crawl
  local elsewhere = 0
  if not crawl.finished then
    elsewhere = crawl.remote_queued + math.max(0, crawl.remote_held - c.inflight - c.queued)
    if elsewhere == 0 and (#crawl.pushes > 0 or #crawl.acks > 0 or crawl.pending) then elsewhere = 1 end
  end
  return { queued = c.queued + elsewhere, local_queued = c.queued, inflight = c.inflight, seen = c.seen,
    hosts = c.hosts, bytes = c.bytes }
end

function Frontier:close()
  if self.store then
    self.store:close()
    self.store = nil
  end
end
Frontier.__close = Frontier.close

-- ---------------------------------------------------------------- forage status, forage merge

-- redis.inspect(url [, prefix]) -> a list of crawls as forage status shows them, or nil, message.
function M.inspect(url, prefix)
  local conn, err = connect(url)
  if not conn then return nil, err end
  local r = conn.r
  local keys
  if prefix then keys = { "forage:{" .. prefix .. "}" }
  else keys = r:call("SMEMBERS", "forage:crawls") or {} end
  table.sort(keys)
  local function hash(key)
    local kv = r:call("HGETALL", key) or {}
    local t = {}
    for i = 1, #kv, 2 do t[kv[i]] = kv[i + 1] end
    return t
  end
  local now = r:call("TIME")
  local now_ms = now and (tonumber(now[1]) * 1000 + tonumber(now[2]) // 1000) or 0
  local crawls = {}
  for _, key in ipairs(keys) do
    local meta = hash(key .. ":meta")
    if next(meta) then
      local c = { key = key, prefix = key:match("^forage:{(.*)}$"), meta = meta, stats = hash(key .. ":stats"),
        queued = r:call("ZCARD", key .. ":queue") or 0, held = tonumber(r:call("GET", key .. ":held_n") or 0) or 0,
        seen = r:call("SCARD", key .. ":seen") or 0, hosts = {}, outputs = {} }
      local consumers = r:call("ZRANGE", key .. ":consumers", 0, -1, "WITHSCORES") or {}
      local alive = {}
      for i = 1, #consumers, 2 do alive[consumers[i]] = tonumber(consumers[i + 1]) end
      local n = tonumber(r:call("GET", key .. ":consumer_n") or 0) or 0
      local scanned = r:call("SCAN", 0, "MATCH", key .. ":host:*", "COUNT", 1000 + n)
      local host_keys = {}
      local cursor = scanned
      while cursor do
        for _, hk in ipairs(cursor[2] or {}) do host_keys[#host_keys + 1] = hk end
        if cursor[1] == "0" then break end
        cursor = r:call("SCAN", cursor[1], "MATCH", key .. ":host:*", "COUNT", 1000)
      end
      table.sort(host_keys)
      for _, hk in ipairs(host_keys) do
        local id = hk:sub(#key + 7)
        local h = hash(hk)
        h.id = id
        h.held = r:call("SCARD", key .. ":held:" .. id) or 0
        if alive[id] then h.state = alive[id] >= now_ms and "running" or "lease expired" end
        c.hosts[#c.hosts + 1] = h
      end
      local lens = hash(key .. ":out_len")
      for field, length in pairs(lens) do
        local kind, host, path = field:match("^([^\t]*)\t([^\t]*)\t(.*)$")
        c.outputs[#c.outputs + 1] = { kind = kind, host = host, path = path, length = tonumber(length) }
      end
      table.sort(c.outputs, function(a, b) return a.host .. a.path < b.host .. b.path end)
      crawls[#crawls + 1] = c
    end
  end
  conn:close()
  return crawls
end

M.hostname = hostname

return M
