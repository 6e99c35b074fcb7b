-- The server-side scripts of a crawl shared through Redis (lua/forage/crawl/redis.lua says
-- how the crawl uses them; docs/redis.md, for users). Each runs atomically in Redis, so a
-- batch of pushes and the acks of the pages that found them land together or not at all.
--
-- Keys, all under one hash tag (KEYS[1] = "forage:{PREFIX}", so that Redis Cluster keeps a
-- crawl's keys on one node):
--   :meta         HASH   hash (the spider's), name, created, proxies, finished
--   :queue        ZSET   request ids by (priority, order of arrival): ZPOPMIN serves the
--                        highest priority first, the oldest first within one
--   :req          HASH   id -> "PRIORITY\n" .. record (the frontier's encoded request)
--   :seen         SET    fingerprints
--   :seq          STRING order of arrival
--   :held_n       STRING requests leased to hosts, all together
--   :held:C       SET    ids leased to host C
--   :consumers    ZSET   live hosts by the deadline of their lease (ms, Redis's clock)
--   :consumer_n   STRING hosts that ever joined (a host's number: its ids' high bits)
--   :host:C       HASH   host C: hostname, state, joined, pop_seq, pop_ids, commit_seq,
--                        outputs, and its counters ("s:pages" ...)
--   :stats        HASH   the crawl's counters, all hosts together
--   :out_len      HASH   "KIND\tHOSTNAME\tPATH" -> bytes of that output committed
--   :out_owner    HASH   the same field -> the host writing it
--   :proxy_owner  HASH   proxy index -> the host holding it
--   :proxy_state  HASH   proxy index -> "cooling\tUNTIL_MS\tREASON" or "retired\t0\tREASON"
-- and, outside the tag, forage:crawls (SET of the crawls' KEYS[1], for forage status).
--
-- Every value read from Redis and returned is a string or a number: the crawl decodes
-- records in data mode only, so nothing from Redis is ever run.
local M = {}

local COMMON = [[
local B = KEYS[1]
local function k(s) return B .. ':' .. s end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function record_of(v)
  local at = string.find(v, '\n', 1, true)
  return tonumber(string.sub(v, 1, at - 1)), string.sub(v, at + 1)
end
-- puts a leased request back in the queue, behind what is there
local function requeue(id)
  local v = redis.call('HGET', k('req'), id)
  if v then
    local p = record_of(v)
    local seq = redis.call('INCR', k('seq'))
    redis.call('ZADD', k('queue'), seq - p * 4294967296, id)
  end
end
-- gives back what host c held: its requests to the queue, its proxies to the others
local function release_host(c, state)
  local held = redis.call('SMEMBERS', k('held:' .. c))
  for _, id in ipairs(held) do requeue(id) end
  if #held > 0 then
    redis.call('DECRBY', k('held_n'), #held)
    redis.call('HINCRBY', k('stats'), 'reclaimed', #held)
  end
  redis.call('DEL', k('held:' .. c))
  local owners = redis.call('HGETALL', k('proxy_owner'))
  -- a host that stopped answering may still have requests running through its proxies
  -- (cut off, not dead): they rest for its request timeout before another host uses them
  local rest = 0
  if state == 'lost' then rest = tonumber(redis.call('HGET', k('host:' .. c), 'timeout_ms') or '0') or 0 end
  local now = now_ms()
  for i = 1, #owners, 2 do
    if owners[i + 1] == c then
      redis.call('HDEL', k('proxy_owner'), owners[i])
      local st = redis.call('HGET', k('proxy_state'), owners[i])
      local until_ms = st and tonumber(string.match(st, '^cooling\t(%d+)')) or 0
      if rest > 0 and not (st and string.sub(st, 1, 8) == 'retired\t') and until_ms < now + rest then
        redis.call('HSET', k('proxy_state'), owners[i], 'cooling\t' .. (now + rest) .. '\tits host stopped answering')
      end
    end
  end
  redis.call('ZREM', k('consumers'), c)
  redis.call('HSET', k('host:' .. c), 'state', state, 'left', now_ms())
  return #held
end
-- hosts whose lease ran out (killed, cut off): what they held goes back
local function reclaim(now)
  local dead = redis.call('ZRANGEBYSCORE', k('consumers'), '-inf', now, 'LIMIT', 0, 16)
  for _, c in ipairs(dead) do release_host(c, 'lost') end
end
local function counts()
  return redis.call('ZCARD', k('queue')), tonumber(redis.call('GET', k('held_n')) or '0')
end
]]

-- join(consumer, hash, name, hostname, lease_ms, nproxies, timeout_ms, field...) ->
--   { "ok", number, length... } | { "spider", hash } | { "finished", pages, items } |
--   { "busy", field, owner }
M.join = COMMON .. [[
local c, hash, name, hostname, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local h = redis.call('HGET', k('meta'), 'hash')
if h and h ~= hash then return { 'spider', h } end
if redis.call('HGET', k('meta'), 'finished') == 'done' then
  return { 'finished', redis.call('HGET', k('stats'), 'pages') or '0', redis.call('HGET', k('stats'), 'items') or '0' }
end
reclaim(now)
for j = 8, #ARGV do
  local owner = redis.call('HGET', k('out_owner'), ARGV[j])
  if owner and owner ~= c and redis.call('ZSCORE', k('consumers'), owner) then return { 'busy', ARGV[j], owner } end
end
if not h then
  redis.call('HSET', k('meta'), 'hash', hash, 'name', name, 'created', now, 'proxies', ARGV[6])
  redis.call('SADD', 'forage:crawls', B)
end
local out = { 'ok', redis.call('INCR', k('consumer_n')) }
for j = 8, #ARGV do
  redis.call('HSET', k('out_owner'), ARGV[j], c)
  out[#out + 1] = redis.call('HGET', k('out_len'), ARGV[j]) or '0'
end
redis.call('ZADD', k('consumers'), now + lease, c)
redis.call('HSET', k('host:' .. c), 'hostname', hostname, 'state', 'running', 'joined', now, 'pop_seq', 0,
  'commit_seq', 0, 'number', out[2], 'timeout_ms', ARGV[7], 'outputs', table.concat(ARGV, '\n', 8))
return out
]]

-- pop(consumer, pop_seq, n, lease_ms) -> { "ok", queued, held, id, record, id, record ... } | { "lost" }
-- A pop sent again with the same pop_seq (its reply was lost) returns what it took then.
M.pop = COMMON .. [[
local c, seq, n, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('ZSCORE', k('consumers'), c) then return { 'lost' } end
local hk, held = k('host:' .. c), k('held:' .. c)
local out = { 'ok', 0, 0 }
local last = tonumber(redis.call('HGET', hk, 'pop_seq') or '0')
if last < tonumber(seq) - 1 then
  -- Redis lost this host's last pop (restarted without it): what the host holds is unknown
  release_host(c, 'lost')
  return { 'lost' }
end
if last == tonumber(seq) then
  for id in string.gmatch(redis.call('HGET', hk, 'pop_ids') or '', '[^,]+') do
    local v = redis.call('HGET', k('req'), id)
    if v and redis.call('SISMEMBER', held, id) == 1 then
      local _, record = record_of(v)
      out[#out + 1] = id
      out[#out + 1] = record
    end
  end
else
  local popped = redis.call('ZPOPMIN', k('queue'), n)
  local ids = {}
  for i = 1, #popped, 2 do
    local id = popped[i]
    local v = redis.call('HGET', k('req'), id)
    if v then
      local _, record = record_of(v)
      ids[#ids + 1] = id
      out[#out + 1] = id
      out[#out + 1] = record
    end
  end
  if #ids > 0 then
    redis.call('SADD', held, unpack(ids))
    redis.call('INCRBY', k('held_n'), #ids)
  end
  redis.call('HSET', hk, 'pop_seq', seq, 'pop_ids', table.concat(ids, ','))
end
redis.call('ZADD', k('consumers'), 'XX', now_ms() + lease, c)
out[2], out[3] = counts()
return out
]]

-- commit(consumer, commit_seq, lease_ms, idle, npush, nack, nseen, nout, nstat, nproxy, nreleased, pop_seq,
--        pushes (fp, priority, id, record)..., acks (id)..., seen (fp)...,
--        outputs (field, old length, new length)..., stats (name, delta)...,
--        proxy reports (index, state, cooldown ms, reason)..., released (index)...)
-- -> { "ok" | "dup", duplicates, queued, held, finished (0/1), mine, new, give_back }
--    | { "lost", field, length, ... }
-- mine: the proxies this host holds ("1,4,7"); new: those it got now, "index\tcooldown
-- ms\treason" a line; give_back: those it should hand on (more than its share).
-- A commit sent again with a commit_seq already applied (its reply was lost) changes nothing.
-- One whose host's earlier commits or pops Redis does not have (it lost writes: restarted
-- from an AOF or RDB that missed them) is refused as lost: what the host holds is unknown.
M.commit = COMMON .. [[
local c, seq, lease, idle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local npush, nack, nseen, nout, nstat, nproxy, nrel =
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10]), tonumber(ARGV[11])
local now = now_ms()
local hk, held = k('host:' .. c), k('held:' .. c)
local function lost()
  local out = { 'lost' }
  local at = 13 + npush * 4 + nack + nseen
  for j = 0, nout - 1 do
    local f = ARGV[at + j * 3]
    out[#out + 1] = f
    out[#out + 1] = redis.call('HGET', k('out_len'), f) or '0'
  end
  return out
end
if not redis.call('ZSCORE', k('consumers'), c) then return lost() end
local dups = 0
local state = 'ok'
local seen_seq = tonumber(redis.call('HGET', hk, 'commit_seq') or '0')
if seen_seq < seq - 1 or redis.call('HGET', hk, 'pop_seq') ~= ARGV[12] then
  release_host(c, 'lost')
  return lost()
end
if seen_seq >= seq then
  state = 'dup'
else
  -- the outputs first: a length that is not the one this host committed last means Redis
  -- lost commits (restarted without them): this host starts over (its held requests go back)
  local at = 13 + npush * 4 + nack + nseen
  for j = 0, nout - 1 do
    local f, old = ARGV[at + j * 3], ARGV[at + j * 3 + 1]
    if (redis.call('HGET', k('out_len'), f) or '0') ~= old or redis.call('HGET', k('out_owner'), f) ~= c then
      release_host(c, 'lost')
      return lost()
    end
  end
  for j = 0, nout - 1 do redis.call('HSET', k('out_len'), ARGV[at + j * 3], ARGV[at + j * 3 + 2]) end
  -- the pages' follows, then the pages' acks: at least once
  at = 13
  for j = 0, npush - 1 do
    local fp, p, id, record = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], ARGV[at + 3]
    at = at + 4
    if fp == '' or redis.call('SADD', k('seen'), fp) == 1 then
      local s = redis.call('INCR', k('seq'))
      redis.call('HSET', k('req'), id, p .. '\n' .. record)
      redis.call('ZADD', k('queue'), s - p * 4294967296, id)
    else
      dups = dups + 1
    end
  end
  local acked = 0
  for j = 0, nack - 1 do
    local id = ARGV[at + j]
    if redis.call('SREM', held, id) == 1 then
      redis.call('HDEL', k('req'), id)
      acked = acked + 1
    end
  end
  if acked > 0 then redis.call('DECRBY', k('held_n'), acked) end
  at = at + nack
  for j = 0, nseen - 1 do redis.call('SADD', k('seen'), ARGV[at + j]) end
  at = at + nseen + nout * 3
  for j = 0, nstat - 1 do
    local name, delta = ARGV[at + j * 2], tonumber(ARGV[at + j * 2 + 1])
    redis.call('HINCRBY', k('stats'), name, delta)
    redis.call('HINCRBY', hk, 's:' .. name, delta)
  end
  if dups > 0 then
    redis.call('HINCRBY', k('stats'), 'duplicates', dups)
    redis.call('HINCRBY', hk, 's:duplicates', dups)
  end
  at = at + nstat * 2
  for j = 0, nproxy - 1 do
    local i, st, ms, why = ARGV[at + j * 4], ARGV[at + j * 4 + 1], tonumber(ARGV[at + j * 4 + 2]), ARGV[at + j * 4 + 3]
    if redis.call('HGET', k('proxy_owner'), i) == c then
      if st == 'ok' then
        redis.call('HDEL', k('proxy_state'), i)
      else
        redis.call('HSET', k('proxy_state'), i, st .. '\t' .. (now + ms) .. '\t' .. why)
      end
    end
  end
  at = at + nproxy * 4
  for j = 0, nrel - 1 do
    local i = ARGV[at + j]
    if redis.call('HGET', k('proxy_owner'), i) == c then redis.call('HDEL', k('proxy_owner'), i) end
  end
  redis.call('HSET', hk, 'commit_seq', seq)
end
redis.call('ZADD', k('consumers'), 'XX', now + lease, c)
reclaim(now)
-- the proxies: each host holds its share of the usable ones, whole (all the slots of a proxy)
local mine, new, give = {}, {}, {}
local usable = 0
local nproxies = tonumber(redis.call('HGET', k('meta'), 'proxies') or '0')
if nproxies > 0 then
  -- live hosts, and how many of them joined before this one
  local live = redis.call('ZRANGEBYSCORE', k('consumers'), now, '+inf')
  local hosts, before = #live, 0
  local number = tonumber(redis.call('HGET', hk, 'number')) or 0
  for _, o in ipairs(live) do
    if (tonumber(redis.call('HGET', k('host:' .. o), 'number')) or 0) < number then before = before + 1 end
  end
  local owner, pstate = {}, {}
  local kv = redis.call('HGETALL', k('proxy_owner'))
  for i = 1, #kv, 2 do owner[tonumber(kv[i])] = kv[i + 1] end
  kv = redis.call('HGETALL', k('proxy_state'))
  for i = 1, #kv, 2 do pstate[tonumber(kv[i])] = kv[i + 1] end
  for i = 1, nproxies do
    if pstate[i] and string.sub(pstate[i], 1, 8) == 'retired\t' then
      -- a retired proxy is nobody's: it counts in no host's share
      if owner[i] then
        redis.call('HDEL', k('proxy_owner'), i)
        owner[i] = nil
      end
    else
      usable = usable + 1
    end
  end
  -- an even share, the first hosts to join taking one more while some are left over
  hosts = math.max(hosts, 1)
  local share = math.floor(usable / hosts) + (before < usable % hosts and 1 or 0)
  for i = 1, nproxies do if owner[i] == c then mine[#mine + 1] = i end end
  if #mine < share then
    for i = 1, nproxies do
      if #mine >= share then break end
      local st = pstate[i]
      if not owner[i] and not (st and string.sub(st, 1, 8) == 'retired\t') then
        redis.call('HSET', k('proxy_owner'), i, c)
        mine[#mine + 1] = i
        local left, why = 0, ''
        if st then
          local _, _, until_ms, reason = string.find(st, '^[^\t]*\t([^\t]*)\t(.*)$')
          left = math.max(0, (tonumber(until_ms) or 0) - now)
          why = reason or ''
        end
        new[#new + 1] = i .. '\t' .. left .. '\t' .. why
      end
    end
  elseif #mine > share then
    for j = share + 1, #mine do give[#give + 1] = mine[j] end
  end
end
local queued, inflight = counts()
local finished = redis.call('HGET', k('meta'), 'finished') == 'done'
if not finished and idle and queued == 0 and inflight == 0 then
  redis.call('HSET', k('meta'), 'finished', 'done', 'finished_at', now)
  finished = true
end
return { state, dups, queued, inflight, finished and 1 or 0, table.concat(mine, ','), table.concat(new, '\n'),
  table.concat(give, ','), usable }
]]

-- leave(consumer): a host that stops gives back what it holds, at once.
M.leave = COMMON .. [[
if not redis.call('ZSCORE', k('consumers'), ARGV[1]) then return 0 end
return release_host(ARGV[1], ARGV[2])
]]

return M
