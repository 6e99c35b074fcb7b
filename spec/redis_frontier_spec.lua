-- The Redis side of a crawl on several hosts, in one process against a real redis-server:
-- the URL rules, the coordinator's join, the frontier's interface (docs/frontier.md), and
-- the scripts' guarantees (a commit or a batch sent again counts once, a lost lease, a
-- Redis that lost writes, the proxies' shares). The multi-process crawls are in
-- spec/crawl_redis_spec.lua.
local forage = require "forage"
local redis_server = require "redis_server"
local redis = require "forage.crawl.redis"

local function fp(u) return forage.url.fingerprint(u) end

-- A request as the engine pushes it.
local function req(u, extra)
  local r = { url = u, fp = fp(u), callback = "parse", depth = 0 }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

local n = 0
-- A host joined to a new crawl (its own prefix unless given) on srv.
local function join(srv, opts)
  n = n + 1
  opts = opts or {}
  local crawl, err, why = redis.open(srv.url, { prefix = opts.prefix or ("spec" .. n), name = "spec",
    hash = opts.hash or "h1", proxies = opts.proxies or 0, lease = opts.lease or 30,
    request_timeout = opts.request_timeout,
    outputs = opts.outputs or {} })
  return crawl, err, why
end

describe("redis URLs", function()
  it("parses redis:// with a password, an ACL user, a database, and unix sockets", function()
    assert.same({ host = "10.0.0.5", port = 6379, db = 0 }, redis.parse_url("redis://10.0.0.5"))
    assert.same({ host = "h", port = 7000, db = 3, password = "p@ss:w" },
      redis.parse_url("redis://:p%40ss:w@h:7000/3"))
    assert.same({ host = "h", port = 6379, db = 0, user = "bob", password = "s3cret" },
      redis.parse_url("redis://bob:s3cret@h/0"))
    assert.same({ host = "::1", port = 6380, db = 0 }, redis.parse_url("redis://[::1]:6380"))
    assert.same({ path = "/run/redis.sock", db = 2 }, redis.parse_url("unix:///run/redis.sock?db=2"))
  end)

  it("refuses what it cannot use, naming the URL with its password masked", function()
    local _, err = redis.parse_url("redis://bob:s3cret@h:99999/0")
    assert.equal("redis://bob:***@h:99999/0: port must be from 1 to 65535", err)
    _, err = redis.parse_url("rediss://:s3cret@h/0")
    assert.matches("^rediss://%*%*%*@h/0: TLS %(rediss://%) is not supported", err)
    _, err = redis.parse_url("http://h/0")
    assert.matches("expected redis://", err)
    _, err = redis.parse_url("redis://h/x")
    assert.matches("the database must be a number", err)
    assert.equal("redis://bob:***@h:1/0", redis.mask("redis://bob:s3cret@h:1/0"))
    assert.equal("redis://***@h:1/0", redis.mask("redis://:s3cret@h:1/0"))
    assert.equal("redis://h:1/0", redis.mask("redis://h:1/0"))
  end)

  it("a spider's redis setting with a bad URL is refused without its password", function()
    local crawl = require "forage.crawl"
    local ok, err = pcall(crawl.check, { name = "x", start = { "http://127.0.0.1:1/" }, parse = function() end,
      redis = "redis://bob:s3cret@h:0/0" })
    assert.is_false(ok)
    assert.matches("setting 'redis': redis://bob:%*%*%*@h:0/0", err)
    assert.is_nil(tostring(err):find("s3cret", 1, true))
    ok, err = pcall(crawl.check, { name = "x", start = { "http://127.0.0.1:1/" }, parse = function() end,
      redis_prefix = "a b" })
    assert.is_false(ok)
    assert.matches("setting 'redis_prefix' must be a name", err)
    ok, err = pcall(crawl.check, { name = "x", start = { "http://127.0.0.1:1/" }, parse = function() end,
      redis_lease = 0 })
    assert.is_false(ok)
    assert.matches("setting 'redis_lease' must be a number of seconds from 1 to 86400", err)
  end)
end)

describe("a crawl's frontier on Redis", function()
  local srv
  setup(function() srv = redis_server.start {} end)
  teardown(function() srv:stop() end)

  it("pushes go to Redis at the commit, and any host pops them; acks settle them", function()
    local a = assert(join(srv, { prefix = "shared1" }))
    local b = assert(join(srv, { prefix = "shared1" }))
    local fa = a:frontier { per_host = 0, batch = 4 }
    local fb = b:frontier { per_host = 0, batch = 4 }
    for i = 1, 6 do assert.is_true(fa:push(req("http://s.test/" .. i))) end
    assert.is_false(fa:push(req("http://s.test/1")), "a duplicate is known here at once")
    assert.equal(0, #fb:pop(1), "nothing in Redis before a's commit")
    assert(a:commit(forage.now(), {}))
    assert(b:commit(forage.now(), {}))        -- b learns that 6 are queued
    local got = fb:pop(2)
    assert.equal(2, #got)
    assert.equal("http://s.test/1", got[1].url, "oldest first")
    assert.equal("http://s.test/2", got[2].url)
    assert.equal("parse", got[1].callback)
    assert.is_true(got[1].id ~= got[2].id)
    local c = fb:counts()
    assert.equal(2, c.inflight)
    assert.is_true(c.queued >= 2, "what b took beyond 2 is queued here; the rest is elsewhere")
    fb:ack(got[1])
    got[2].attempts = 1
    fb:retry(got[2])
    assert.has_error(function() fb:ack(got[1]) end, ("bad argument #1 to 'ack' (request %d is not in flight)"):format(
      got[1].id))
    assert(b:commit(forage.now(), {}))
    local r = srv:client()
    assert.equal(5, r:call("HLEN", "forage:{shared1}:req"), "one of 6 acked: its record is gone")
    assert.equal(3, r:call("SCARD", "forage:{shared1}:held:" .. b.consumer), "b took 4, acked 1: holds 3")
    assert.equal(2, r:call("ZCARD", "forage:{shared1}:queue"))
    a:close() b:close() fa:close() fb:close() r:close()
  end)

  it("a duplicate found by another host is counted at its commit, and queued once", function()
    local a = assert(join(srv, { prefix = "dups" }))
    local b = assert(join(srv, { prefix = "dups" }))
    local fa, fb = a:frontier {}, b:frontier {}
    assert.is_true(fa:push(req("http://d.test/x")))
    assert.is_true(fb:push(req("http://d.test/x")), "b cannot know before the commits")
    assert(a:commit(forage.now(), {}))
    assert(b:commit(forage.now(), {}))
    assert.equal(0, a.duplicates)
    assert.equal(1, b.duplicates)
    local r = srv:client()
    assert.equal(1, r:call("ZCARD", "forage:{dups}:queue"))
    assert.equal("1", r:call("HGET", "forage:{dups}:stats", "duplicates") or "1")
    a:close() b:close() fa:close() fb:close() r:close()
  end)

  it("a commit sent again after a lost reply counts once; a batch taken again is the same batch", function()
    local a = assert(join(srv, { prefix = "again" }))
    local fa = a:frontier { batch = 3 }
    for i = 1, 5 do fa:push(req("http://g.test/" .. i)) end
    assert(a:commit(forage.now(), { stats = { pages = 2 } }))
    -- the same commit again, as after a reply lost on the way back
    local r = srv:client()
    local before = r:call("ZCARD", "forage:{again}:queue")
    local reply = r:call("EVALSHA", a.conn.shas.commit, 1, a.key, table.unpack(a.last_sent))
    assert.equal("dup", reply[1])
    assert.equal(before, r:call("ZCARD", "forage:{again}:queue"), "not queued twice")
    assert.equal("2", r:call("HGET", "forage:{again}:stats", "pages"), "not counted twice")
    -- a batch whose reply was lost: the same seq gives the same requests
    local first = assert(a:_fetch(forage.now(), 3))
    a.pop_pending = true                           -- its reply lost: sent again, same seq
    local again = assert(a:_fetch(forage.now(), 3))
    assert.same(first, again)
    assert.equal(3, r:call("SCARD", "forage:{again}:held:" .. a.consumer))
    a:close() fa:close() r:close()
  end)

  it("a host whose lease ran out finds its requests given back and itself lost", function()
    local a = assert(join(srv, { prefix = "lease", lease = 1 }))
    local b = assert(join(srv, { prefix = "lease", lease = 30 }))
    local fa, fb = a:frontier { batch = 10 }, b:frontier { batch = 10 }
    for i = 1, 4 do fa:push(req("http://l.test/" .. i)) end
    assert(a:commit(forage.now(), {}))
    assert.equal(4, #fa:pop(4))
    local r = srv:client()
    -- a's lease ends: its deadline is put in the past (what 1 s without a commit does)
    r:call("ZADD", "forage:{lease}:consumers", 1, a.consumer)
    assert(b:commit(forage.now(), {}))             -- any host's commit reclaims
    assert.equal(4, r:call("ZCARD", "forage:{lease}:queue"))
    assert.equal("4", r:call("HGET", "forage:{lease}:stats", "reclaimed"))
    local ok, message, kind = a:commit(forage.now(), {})
    assert.is_nil(ok)
    assert.equal("lost", kind, message)
    assert.equal(4, #fb:pop(4), "b fetches what a held (its commit said 4 are queued)")
    a:close() b:close() fa:close() fb:close() r:close()
  end)

  it("a host whose earlier commits Redis lost (restarted without them) is lost, not trusted", function()
    local a = assert(join(srv, { prefix = "regress" }))
    local fa = a:frontier {}
    fa:push(req("http://r.test/1"))
    assert(a:commit(forage.now(), {}))
    local r = srv:client()
    r:call("HSET", "forage:{regress}:host:" .. a.consumer, "commit_seq", 0)   -- as if Redis forgot it
    fa:push(req("http://r.test/2"))
    a.commit_seq = a.commit_seq + 1                -- the host moved on: seq 3 where Redis has 0
    local ok, _, kind = a:commit(forage.now(), {})
    assert.is_nil(ok)
    assert.equal("lost", kind)
    assert.is_nil(r:call("ZSCORE", "forage:{regress}:consumers", a.consumer) or nil)
    a:close() fa:close() r:close()
  end)

  it("a lost host's proxies rest for its request timeout before another host uses them", function()
    local a = assert(join(srv, { prefix = "rest", proxies = 2, request_timeout = 31 }))
    local b
    a:frontier {}
    local ok, got = a:commit(forage.now(), {})
    assert.is_true(ok)
    assert.equal(2, #got, "alone, a holds both proxies")
    local r = srv:client()
    r:call("ZADD", "forage:{rest}:consumers", 1, a.consumer)   -- a's lease ends (frozen, cut off)
    b = assert(join(srv, { prefix = "rest", proxies = 2, request_timeout = 31 }))
    b:frontier {}
    ok, got = b:commit(forage.now(), {})
    assert.is_true(ok)
    assert.equal(2, #got, "b takes a's proxies ...")
    for _, g in ipairs(got) do
      assert.is_true(g.cooldown > 25 and g.cooldown <= 31, "... resting first: " .. g.cooldown)
      assert.equal("its host stopped answering", g.reason)
    end
    r:close() a:close() b:close()
  end)

  it("join refuses another spider (both hashes named) and a live host's output; says when finished", function()
    local a = assert(join(srv, { prefix = "who", hash = "aaaa", outputs = { items = "/tmp/who.jsonl" } }))
    local _, err = join(srv, { prefix = "who", hash = "bbbb" })
    assert.matches("file hash aaaa; this one has bbbb", err, 1, true)
    _, err = join(srv, { prefix = "who", hash = "aaaa", outputs = { items = "/tmp/who.jsonl" } })
    assert.matches("/tmp/who.jsonl is written by another host of this crawl, still running", err, 1, true)
    local fa = a:frontier {}
    assert(a:commit(forage.now(), { idle = true }))
    assert.is_true(a.finished, "nothing queued, nothing held, the host idle: finished")
    local why
    _, err, why = join(srv, { prefix = "who", hash = "aaaa" })
    assert.equal("finished", why)
    assert.matches("is finished", err)
    a:close() fa:close()
  end)

  it("shares the proxies evenly among live hosts, each proxy whole to one host, handed on when one joins", function()
    local hosts = {}
    for i = 1, 3 do hosts[i] = assert(join(srv, { prefix = "px", proxies = 7 })) end
    for i = 1, 3 do hosts[i]:frontier {} end
    for i = 1, 3 do assert(hosts[i]:commit(forage.now(), {})) end
    local r = srv:client()
    local function owned()
      local count = {}
      local kv = r:call("HGETALL", "forage:{px}:proxy_owner")
      for i = 1, #kv, 2 do count[kv[i + 1]] = (count[kv[i + 1]] or 0) + 1 end
      return count, #kv // 2
    end
    local count, total = owned()
    assert.equal(7, total, "every proxy held by exactly one host")
    assert.same({ 3, 2, 2 }, { count[hosts[1].consumer], count[hosts[2].consumer], count[hosts[3].consumer] },
      "7 over 3 hosts: the first to join takes the one left over")
    -- a fourth host: 7 over 4 is 2, 2, 2, 1; the first hands one on, once its requests are back
    hosts[4] = assert(join(srv, { prefix = "px", proxies = 7 }))
    hosts[4]:frontier {}
    assert(hosts[4]:commit(forage.now(), {}))
    assert.is_nil(owned()[hosts[4].consumer], "none free yet")
    local ok, _, give = hosts[1]:commit(forage.now(), {})
    assert.is_true(ok)
    assert.equal(1, #give)
    hosts[1]:drain_proxy(give[1], 10)              -- requests up to number 10 may still use it
    assert(hosts[1]:commit(forage.now(), { oldest_running = 5 }))
    assert.equal(3, owned()[hosts[1].consumer], "kept while a request sent before may use it")
    assert(hosts[1]:commit(forage.now(), { oldest_running = 11 }))
    assert.equal(2, owned()[hosts[1].consumer], "released once those are back")
    local got
    ok, got = hosts[4]:commit(forage.now(), {})
    assert.is_true(ok)
    assert.equal(1, #got)
    assert.equal(give[1], got[1].index, "the fourth host gets the one handed on")
    r:close()
    for i = 1, 4 do hosts[i]:close() end
  end)
end)
