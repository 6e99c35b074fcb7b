-- The multi-host specs of issue 10: real `forage crawl --redis` process trees (bin/forage of
-- this checkout, each in a process group of its own) sharing one real redis-server
-- (spec/redis_server.lua), with forage.testing's site and proxies. Each spec checks the
-- outputs against the site's known answer: what `forage merge` writes, and the union of the
-- hosts' files cut at the lengths Redis holds as committed, has every movie once.
--
-- A point "before the end" is made certain by a gate (crawl_chaos.gate): a start URL served
-- by this process that answers nothing until the spec opens it, so that the crawl cannot
-- finish before; every other wait polls a condition (lines, committed lengths in Redis, a
-- host's state) with a hard limit that fails the spec.
local testing = require "forage.testing"
local cjson = require "cjson"
local socket = require "socket"
local helpers = require "helpers"
local redis_server = require "redis_server"
local chaos = require "crawl_chaos"

local LIMIT = 60   -- seconds a wait may last before the spec fails: a hang, not a slow machine
chaos.limit = LIMIT

local quote, tmpdir, processes_of = chaos.quote, chaos.tmpdir, chaos.processes_of
local PREFIX = "chaos"   -- the spider's name: the crawl's key prefix by default

-- ---------------------------------------------------------------- the answer

-- Checks text (JSON lines) against the site's answer: every line whole JSON, a movie of the
-- site with its directors, none twice; with `complete`, none missing. Returns the number of
-- items.
local function assert_items(text, answer, what, complete)
  assert.is_true(text == "" or text:sub(-1) == "\n", what .. " ends inside a line")
  local seen, n = {}, 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local decoded, item = pcall(cjson.decode, line)
    assert.is_true(decoded, ("%s, line %d is not JSON: %s"):format(what, n, line:sub(1, 80)))
    local want = answer[item.url]
    assert.is_truthy(want, ("%s, line %d: %s is not a movie of the site"):format(what, n, tostring(item.url)))
    assert.is_nil(seen[item.url], ("%s, line %d: %s twice (first on line %s)"):format(what, n, item.url,
      tostring(seen[item.url])))
    seen[item.url] = n
    assert.equal(table.concat(want, "|"), table.concat(item.directors, "|"), item.url)
  end
  if complete then
    local missing = {}
    for url in pairs(answer) do
      if not seen[url] then missing[#missing + 1] = url end
    end
    table.sort(missing)
    assert.equal(0, #missing, ("%s: %d movies missing, the first %s"):format(what, #missing, tostring(missing[1])))
  end
  return n
end

-- ---------------------------------------------------------------- Redis, read directly

-- Runs fn(r) with a connection to srv, closed after; returns what fn returns.
local function with_redis(srv, fn)
  local r = srv:client()
  local ok, a, b = pcall(fn, r)
  r:close()
  if not ok then error(a, 2) end
  return a, b
end

local function key(prefix, name)
  return ("forage:{%s}:%s"):format(prefix or PREFIX, name)
end

local function hgetall(r, k)
  local kv = assert(r:call("HGETALL", k))
  local t = {}
  for i = 1, #kv, 2 do t[kv[i]] = kv[i + 1] end
  return t
end

-- { [absolute path] = committed bytes } of the crawl's items files.
local function committed(srv, prefix)
  return with_redis(srv, function(r)
    local t = {}
    for field, length in pairs(hgetall(r, key(prefix, "out_len"))) do
      local kind, _, path = field:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      if kind == "items" then t[path] = tonumber(length) end
    end
    return t
  end)
end

local function finished(srv, prefix)
  return with_redis(srv, function(r) return r:call("HGET", key(prefix, "meta"), "finished") == "done" end)
end

-- The state Redis records for the host whose parent is pid (nil before it joined).
local function host_state(srv, pid, prefix)
  return with_redis(srv, function(r)
    local keys = assert(r:call("KEYS", key(prefix, "host:*:" .. pid .. ":*")))
    if #keys == 0 then return nil end
    assert.equal(1, #keys, "one host hash for pid " .. pid)
    return r:call("HGET", keys[1], "state")
  end)
end

-- The union of the hosts' items files, each cut at its committed length: checked against
-- the answer (each movie once, none missing).
-- The number of hosts whose first commit (their start's requests) reached Redis.
local function committed_hosts(srv, prefix)
  return with_redis(srv, function(r)
    local n = 0
    for _, hk in ipairs(assert(r:call("KEYS", key(prefix, "host:*")))) do
      if (tonumber(r:call("HGET", hk, "commit_seq")) or 0) >= 1 then n = n + 1 end
    end
    return n
  end)
end

local function assert_union(srv, site, paths, prefix)
  local lengths = committed(srv, prefix)
  local parts = {}
  for _, path in ipairs(paths) do
    local length = lengths[path] or 0
    local text = helpers.read(path) or ""
    assert.is_true(#text >= length, ("%s: %d bytes, %d committed"):format(path, #text, length))
    parts[#parts + 1] = text:sub(1, length)
  end
  assert_items(table.concat(parts), site:answer(), "the committed union", true)
end

-- ---------------------------------------------------------------- hosts

local running = {}   -- the hosts of the running test, reaped after it
local gates = {}     -- the gates of the running test, polled by every wait, closed after it

local function poll_gates()
  for _, gate in ipairs(gates) do gate:poll() end
end

local function wait_until(what, cond)
  chaos.wait_until(what, function()
    poll_gates()
    return cond()
  end)
end

-- Starts `forage ARGS` in dir (crawl_chaos.host: a process group of its own); its waits
-- poll the gates.
local function start(dir, args, env)
  local host = chaos.host(dir, args, env, poll_gates)
  running[#running + 1] = host
  return host
end

-- Waits for every host to end; each must exit 0.
local function assert_all_exit_0(list)
  for i, host in ipairs(list) do
    local code, err = host:wait()
    assert.equal(0, code, ("host %d (pid %d) exit %s; stderr:\n%s"):format(i, host.pid, tostring(code), err))
  end
end

-- The environment of a host of site (and proxies, and gate).
local function env_for(site, proxies, gate)
  return { CHAOS_SITE = site.url, CHAOS_PAGES = #site:start_urls(), CHAOS_PROXIES = proxies and
    table.concat(proxies:urls(), " ") or "", CHAOS_GATE = gate and gate.url or "" }
end

-- `forage ARGS` to its end: stdout, stderr, exit code (bounded by LIMIT, as a host).
local function forage_cli(dir, args, env)
  local host = start(dir, args, env)
  local code, err = host:wait()
  return host:stdout(), err, code
end

-- ---------------------------------------------------------------- the specs

describe("forage crawl --redis, three hosts on one real redis-server", function()
  local dir, spider
  before_each(function()
    dir = tmpdir()
    spider = dir .. "/spider.lua"
    helpers.write(spider, chaos.SPIDER_SHARED)
  end)
  after_each(function()
    for i, host in ipairs(running) do
      host:close()
      running[i] = nil
    end
    for i, gate in ipairs(gates) do
      gate:close()
      gates[i] = nil
    end
    -- a failed spec may leave workers of a killed parent: they go, whatever happened
    for _, pid in ipairs(processes_of(dir)) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    os.execute("rm -rf " .. quote(dir))
  end)

  local function new_gate()
    local gate = chaos.gate()
    gates[#gates + 1] = gate
    return gate
  end

  -- The command of host n: `crawl SPIDER --redis URL -o DIR/hostN.jsonl EXTRA`.
  local function host_args(url, n, extra)
    return ("crawl %s --redis %s -o %s %s"):format(quote(spider), quote(url), quote(("%s/host%d.jsonl"):format(dir, n)),
      extra or "")
  end

  local function out_path(n)
    return ("%s/host%d.jsonl"):format(dir, n)
  end

  -- forage merge of the crawl into DIR/NAME, checked against the answer; its text.
  local function assert_merge(url, site, name, prefix)
    local merged = dir .. "/" .. name
    local _, err, code = forage_cli(dir, ("merge --redis %s%s -o %s"):format(quote(url),
      prefix and " --redis-prefix " .. prefix or "", quote(merged)))
    assert.equal(0, code, err)
    local text = assert(helpers.read(merged), "no merged file")
    assert_items(text, site:answer(), "forage merge's output", true)
    return text
  end

  it("finish by themselves with every item once; a host that joins afterwards is told it is over", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 20, per_page = 10 }
    local gate = new_gate()
    local env = env_for(site, nil, gate)
    local hosts = {}
    for n = 1, 3 do hosts[n] = start(dir, host_args(srv.url, n), env) end
    -- all three in the crawl before it can end: the gate holds one start request until then
    wait_until("the three hosts to join", function()
      return with_redis(srv, function(r) return r:call("ZCARD", key(nil, "consumers")) end) == 3
    end)
    assert.is_false(finished(srv))
    gate:open()
    assert_all_exit_0(hosts)
    assert.is_true(finished(srv))
    assert.equal(1, gate.requests, "the gate's start URL was fetched once across the hosts")
    assert_merge(srv.url, site, "merged.jsonl")
    assert_union(srv, site, { out_path(1), out_path(2), out_path(3) })
    -- every host did part of the work? not required; but the three files hold the answer between them
    local status, err, code = forage_cli(dir, "status --redis " .. quote(srv.url))
    assert.equal(0, code, err)
    assert.matches("crawl 'chaos' (prefix chaos): finished", status, 1, true)
    for n, host in ipairs(hosts) do
      assert.matches(":" .. host.pid .. ":", status, 1, true)
      assert.matches(out_path(n), status, 1, true)
    end
    -- a fourth host: the crawl is over
    local late = start(dir, host_args(srv.url, 4), env)
    local late_code, late_err = late:wait()
    assert.equal(0, late_code, late_err)
    assert.matches("is finished", late_err, 1, true)
    assert.is_true((helpers.read(out_path(4)) or "") == "", "the late host wrote items")
    assert.is_nil(host_state(srv, late.pid), "the late host was recorded as one of the crawl")
  end)

  it("share proxies, some bad, each held by at most proxy.slots slots across the hosts at once", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 20, per_page = 10, latency = 20 }
    local proxies <close> = testing.proxies { "good", "good", "dead", "good", "ban_after:5", "good" }
    local env = env_for(site, proxies)
    local hosts = {}
    for n = 1, 3 do hosts[n] = start(dir, host_args(srv.url, n, "-s proxy.slots=2"), env) end
    assert_all_exit_0(hosts)
    assert_merge(srv.url, site, "merged.jsonl")
    assert_union(srv, site, { out_path(1), out_path(2), out_path(3) })
    local served = 0
    for i, proxy in ipairs(proxies) do
      if proxy.behaviour == "good" then
        local c = proxy:counters()
        assert.is_true(c.peak_inflight <= 2, ("proxy %d served %d requests at once"):format(i, c.peak_inflight))
        served = served + c.requests
      end
    end
    local banning = proxies[5]:counters()
    assert.is_true(banning.banned > 0, "the banning proxy banned")
    -- every page went through a proxy: the good ones, or the banning one before its bans
    served = served + banning.requests - banning.banned
    assert.is_true(served >= 220, ("the proxies forwarded %d requests for 220 pages"):format(served))
  end)

  it("finish the crawl when one host is killed with kill -9, and a host rejoins cutting its file back", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 20, per_page = 10, latency = 10 }
    local gate = new_gate()
    local env = env_for(site, nil, gate)
    local hosts = {}
    for n = 1, 3 do hosts[n] = start(dir, host_args(srv.url, n, "-s redis_lease=2"), env) end
    -- the victim: the first host with committed items (the gate keeps the crawl from ending)
    local victim
    wait_until("a host with committed items", function()
      local lengths = committed(srv)
      for n = 1, 3 do
        if (lengths[out_path(n)] or 0) > 0 then
          victim = n
          return true
        end
      end
      return false
    end)
    assert.is_false(finished(srv))
    local killed = hosts[victim]
    killed:kill_tree()
    local code = killed:wait()
    assert.equal(128 + 9, code)
    chaos.no_process_left(out_path(victim))
    -- a tail the host wrote past its last commit (a half line, as a kill leaves): cut back on rejoin
    local f = assert(io.open(out_path(victim), "ab"))
    f:write('{"url":"TAIL-PAST-THE-COMMIT","directors":[')
    f:close()
    -- its lease runs out (2 s without a commit): the others' commits mark it lost
    wait_until("the killed host to be marked lost", function() return host_state(srv, killed.pid) == "lost" end)
    assert.is_false(finished(srv))
    local length = committed(srv)[out_path(victim)]
    -- forage merge now (the crawl still running) leaves the killed host's tail out
    local partial = dir .. "/partial.jsonl"
    local _, merge_err, merge_code = forage_cli(dir, ("merge --redis %s -o %s"):format(quote(srv.url), quote(partial)))
    assert.equal(0, merge_code, merge_err)
    local partial_text = assert(helpers.read(partial), "no merged file")
    assert.is_nil(partial_text:find("TAIL-PAST-THE-COMMIT", 1, true), "forage merge took the uncommitted tail")
    assert.is_true(assert_items(partial_text, site:answer(), "forage merge's output mid-crawl") > 0)
    -- the same command again, on the unfinished crawl: it cuts its file back and rejoins
    local again = start(dir, killed.args, env)
    wait_until("the host to rejoin", function() return host_state(srv, again.pid) ~= nil end)
    gate:open()
    local others = {}
    for n = 1, 3 do
      if n ~= victim then others[#others + 1] = hosts[n] end
    end
    others[#others + 1] = again
    assert_all_exit_0(others)
    local text = assert(helpers.read(out_path(victim)))
    assert.is_nil(text:find("TAIL-PAST-THE-COMMIT", 1, true), "the uncommitted tail is still in the file")
    assert.is_true(#text >= length, ("the rejoined host's file has %d bytes, fewer than the %d committed"):format(
      #text, length))
    assert_merge(srv.url, site, "merged.jsonl")
    assert_union(srv, site, { out_path(1), out_path(2), out_path(3) })
    local status, err, status_code = forage_cli(dir, "status --redis " .. quote(srv.url))
    assert.equal(0, status_code, err)
    assert.matches("finished", status, 1, true)
    local line = status:match("\n%s*([^\n]*:" .. killed.pid .. ":[^\n]*)")
    assert.is_truthy(line, "the killed host is not in forage status:\n" .. status)
    assert.is_truthy(line:find("lost", 1, true) or status:find("reclaimed [1-9]"),
      "forage status shows neither the killed host as lost nor a reclaim:\n" .. status)
    -- the killed host's command once more, after the end: it says so, exits 0, and its file stays
    local before = helpers.read(out_path(victim))
    local last = start(dir, killed.args, env)
    local last_code, last_err = last:wait()
    assert.equal(0, last_code, last_err)
    assert.matches("is finished", last_err, 1, true)
    assert.equal(before, helpers.read(out_path(victim)), "a host joining a finished crawl changed its file")
  end)

  it("finish the crawl when redis-server is killed (AOF on) and restarted, then restarted cleanly", function()
    local srv = redis_server.start { appendonly = true, finally = finally }
    local site <close> = testing.site { pages = 20, per_page = 10, latency = 10 }
    local gate = new_gate()
    local env = env_for(site, nil, gate)
    local hosts = {}
    for n = 1, 3 do hosts[n] = start(dir, host_args(srv.url, n), env) end
    local function all_joined()
      return with_redis(srv, function(r) return r:call("ZCARD", key(nil, "consumers")) end) == 3
    end
    wait_until("the hosts to join and commit items", function()
      local total = 0
      for _, length in pairs(committed(srv)) do total = total + length end
      return total > 0 and all_joined()
    end)
    assert.is_false(finished(srv))
    -- every host commits after Redis is back: each lease deadline moves past the restart
    local function all_committed_since(t_ms)
      return with_redis(srv, function(r)
        local list = assert(r:call("ZRANGE", key(nil, "consumers"), 0, -1, "WITHSCORES"))
        if #list ~= 6 then return false end
        for i = 2, #list, 2 do
          if tonumber(list[i]) < t_ms then return false end
        end
        return true
      end)
    end
    local function redis_ms()
      return with_redis(srv, function(r)
        local t = assert(r:call("TIME"))
        return tonumber(t[1]) * 1000 + tonumber(t[2]) // 1000
      end)
    end
    local lease_ms = 30000
    srv:kill()
    srv:restart()
    local back = redis_ms()
    wait_until("every host to commit after the kill -9 of Redis", function()
      return all_committed_since(back + lease_ms)
    end)
    assert.is_false(finished(srv))
    srv:restart()   -- SIGTERM, then started again
    back = redis_ms()
    wait_until("every host to commit after the clean restart", function()
      return all_committed_since(back + lease_ms)
    end)
    gate:open()
    assert_all_exit_0(hosts)
    assert_merge(srv.url, site, "merged.jsonl")
    assert_union(srv, site, { out_path(1), out_path(2), out_path(3) })
  end)

  it("cannot reach Redis at start: exit 2 with a clear message, at once", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, port = probe:getsockname()
    probe:close()
    local site <close> = testing.site { pages = 2, per_page = 2 }
    local _, err, code = forage_cli(dir, host_args(("redis://127.0.0.1:%d/0"):format(port), 1), env_for(site))
    assert.equal(2, code, err)
    assert.matches("cannot reach Redis", err, 1, true)
    assert.matches("127.0.0.1:" .. port, err, 1, true)
    assert.equal(0, site:counters().requests, "a host that cannot reach Redis fetched pages")
  end)

  it("refuses a host whose spider file differs, naming both hashes", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 5, per_page = 5 }
    local gate = new_gate()
    local env = env_for(site, nil, gate)
    local first = start(dir, host_args(srv.url, 1), env)
    wait_until("the first host to join", function() return host_state(srv, first.pid) ~= nil end)
    local crawl_hash = with_redis(srv, function(r) return r:call("HGET", key(nil, "meta"), "hash") end)
    assert.is_truthy(crawl_hash)
    local other = dir .. "/other.lua"
    helpers.write(other, "-- one more line\n" .. chaos.SPIDER_SHARED)
    local _, err, code = forage_cli(dir, ("crawl %s --redis %s -o %s"):format(quote(other), quote(srv.url),
      quote(out_path(2))), env)
    assert.equal(2, code, err)
    assert.matches(crawl_hash, err, 1, true)
    local hashes = {}
    for h in err:gmatch("%x%x%x%x%x%x%x%x+") do hashes[h] = true end
    hashes[crawl_hash] = nil
    assert.is_truthy(next(hashes), "the refused host's own hash is not named:\n" .. err)
    assert.is_true((helpers.read(out_path(2)) or "") == "", "the refused host wrote items")
    gate:open()
    assert_all_exit_0 { first }
    assert_merge(srv.url, site, "merged.jsonl")
  end)

  it("refuses wrong credentials with a clear error that shows no password; the right ones work", function()
    local site <close> = testing.site { pages = 3, per_page = 3 }
    local env = env_for(site)
    local function assert_refused(url, wrong, n)
      local out, err, code = forage_cli(dir, host_args(url, n), env)
      assert.equal(2, code, err)
      assert.matches("authentication", err:lower(), 1, true)
      assert.is_nil(out:find(wrong, 1, true), "the password is on stdout")
      assert.is_nil(err:find(wrong, 1, true), "the password is on stderr:\n" .. err)
      local stats = helpers.read(("%s/host%d.stats.json"):format(dir, n)) or ""
      assert.is_nil(stats:find(wrong, 1, true), "the password is in the stats file")
      assert.is_true((helpers.read(out_path(n)) or "") == "", "a refused host wrote items")
    end
    local function assert_works(srv, password, n)
      local out, err, code = forage_cli(dir, host_args(srv.url, n), env)
      assert.equal(0, code, err)
      assert_items(helpers.read(out_path(n)) or "", site:answer(), "the items", true)
      assert.is_nil(out:find(password, 1, true), "the password is on stdout")
      assert.is_nil(err:find(password, 1, true), "the password is on stderr:\n" .. err)
      local stats = helpers.read(("%s/host%d.stats.json"):format(dir, n)) or ""
      assert.is_nil(stats:find(password, 1, true), "the password is in the stats file")
    end
    -- requirepass
    local srv = redis_server.start { password = "Right-Pass-7c1", finally = finally }
    assert_refused(("redis://:Wrong-Pass-93a@127.0.0.1:%d/0"):format(srv.port), "Wrong-Pass-93a", 1)
    assert_works(srv, "Right-Pass-7c1", 2)
    -- an ACL user (the default user off)
    local acl = redis_server.start { password = "Acl-Right-42d", acl_user = "crawler", finally = finally }
    assert_refused(("redis://crawler:Acl-Wrong-55e@127.0.0.1:%d/0"):format(acl.port), "Acl-Wrong-55e", 3)
    assert_works(acl, "Acl-Right-42d", 4)
    -- forage status with the right password does not show it either
    local status, err, code = forage_cli(dir, "status --redis " .. quote(acl.url))
    assert.equal(0, code, err)
    assert.is_nil(status:find("Acl-Right-42d", 1, true), "the password is in forage status")
  end)

  it("runs two crawls with different prefixes in one Redis at once", function()
    local srv = redis_server.start { finally = finally }
    local site_a <close> = testing.site { pages = 8, per_page = 5, seed = 1 }
    local site_b <close> = testing.site { pages = 6, per_page = 7, seed = 2 }
    local gate = new_gate()
    local a1 = start(dir, host_args(srv.url, 1, "--redis-prefix crawl-a"), env_for(site_a, nil, gate))
    local a2 = start(dir, host_args(srv.url, 2, "--redis-prefix crawl-a"), env_for(site_a, nil, gate))
    local b1 = start(dir, host_args(srv.url, 3, "--redis-prefix crawl-b"), env_for(site_b, nil, gate))
    wait_until("the three hosts to join", function()
      return host_state(srv, a1.pid, "crawl-a") and host_state(srv, a2.pid, "crawl-a")
        and host_state(srv, b1.pid, "crawl-b")
    end)
    gate:open()
    assert_all_exit_0 { a1, a2, b1 }
    assert.equal(2, gate.requests, "each crawl fetched the gate once")
    assert_merge(srv.url, site_a, "a.jsonl", "crawl-a")
    assert_merge(srv.url, site_b, "b.jsonl", "crawl-b")
    assert_union(srv, site_a, { out_path(1), out_path(2) }, "crawl-a")
    assert_union(srv, site_b, { out_path(3) }, "crawl-b")
    local status, err, code = forage_cli(dir, "status --redis " .. quote(srv.url))
    assert.equal(0, code, err)
    assert.matches("(prefix crawl-a): finished", status, 1, true)
    assert.matches("(prefix crawl-b): finished", status, 1, true)
  end)

  it("refuses -o - and --state with --redis (exit 2)", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 2, per_page = 2 }
    local env = env_for(site)
    local _, err, code = forage_cli(dir, ("crawl %s --redis %s -o -"):format(quote(spider), quote(srv.url)), env)
    assert.equal(2, code, err)
    assert.matches("output file", err, 1, true)
    _, err, code = forage_cli(dir, ("crawl %s --redis %s -o %s --state %s"):format(quote(spider), quote(srv.url),
      quote(out_path(1)), quote(dir .. "/state")), env)
    assert.equal(2, code, err)
    assert.matches("--state and --redis", err, 1, true)
    assert.equal(0, site:counters().requests, "a refused crawl fetched pages")
    assert.equal(0, with_redis(srv, function(r) return r:call("DBSIZE") end), "a refused crawl wrote to Redis")
  end)

  -- What a review that attacked the crawl with real processes broke: each spec below failed
  -- on the code as reviewed.

  -- A host's share counted the proxies it held, retired ones included: the first host kept
  -- a retired proxy as its whole share, the live one the second host handed on was taken by
  -- no one, and both waited for ever (so did "every proxy dead").
  it("a host whose proxy is retired takes the live proxy another host hands on (no hang)", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 10, per_page = 5, latency = 10 }
    local proxies <close> = testing.proxies { "ban_after:0", "good" }
    local env = env_for(site, proxies)
    local extra = "-s proxy.retire_after=1 -s proxy.cooldown=1"
    local first = start(dir, host_args(srv.url, 1, extra), env)
    -- the first host holds both proxies before the second joins; the second's joining makes
    -- it hand on proxy 2 (the good one) and keep proxy 1 (the banning one)
    wait_until("the first host to hold both proxies", function()
      return with_redis(srv, function(r) return r:call("HLEN", key(nil, "proxy_owner")) end) == 2
    end)
    local second = start(dir, host_args(srv.url, 2, extra), env)
    assert_all_exit_0 { first, second }
    assert_merge(srv.url, site, "merged.jsonl")
  end)

  -- Every host reads the whole start: a dont_filter start request skipped the shared seen
  -- set and was queued (and its items written) once per host.
  it("queues a dont_filter start request once for the crawl, not once per host", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 2, per_page = 10 }
    local gate = new_gate()
    helpers.write(spider, [[
local site = assert(os.getenv("CHAOS_SITE"))
local start = { os.getenv("CHAOS_GATE") }
for i = 1, 20 do start[#start + 1] = { url = site .. "/detail/" .. i, callback = "detail", dont_filter = true } end
return {
  name = "chaos", start = start, workers = 1, concurrency = 4,
  parse = function() end,
  detail = function(page) return { url = page.url, directors = page:css("div.directors p.name::text") } end,
}
]])
    local env = env_for(site, nil, gate)
    local hosts = { start(dir, host_args(srv.url, 1), env), start(dir, host_args(srv.url, 2), env) }
    -- both hosts have pushed their start before the crawl can end (the gate holds it)
    wait_until("both hosts' first commit", function() return committed_hosts(srv) == 2 end)
    gate:open()
    assert_all_exit_0(hosts)
    assert_merge(srv.url, site, "merged.jsonl")
  end)

  -- An output was named by its path as given: `-o out.jsonl` and `-o ./out.jsonl` in one
  -- directory were two outputs for Redis but one file (the second host cut the first's
  -- committed items, and merge copied the file twice).
  it("refuses a second host writing the same file under another spelling of its path", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 5, per_page = 10 }
    local gate = new_gate()
    local env = env_for(site, nil, gate)
    local a = start(dir, ("crawl %s --redis %s -o out.jsonl"):format(quote(spider), quote(srv.url)), env)
    wait_until("the first host's first commit", function() return committed_hosts(srv) == 1 end)
    local b = start(dir, ("crawl %s --redis %s -o ./out.jsonl"):format(quote(spider), quote(srv.url)), env)
    local code_b, err_b = b:wait()
    assert.equal(2, code_b, err_b)
    assert.matches("written by another host", err_b, 1, true)
    gate:open()
    assert_all_exit_0 { a }
    assert_merge(srv.url, site, "merged.jsonl")
  end)

  -- A password holding '/' (base64 passwords do) defeated the mask, and one holding '@' was
  -- split at the first '@' and shown as the host name.
  it("never prints a password holding '/' or '@', whatever the URL's fault", function()
    for _, url in ipairs { "redis://:abc/SECRETPW@127.0.0.1:1/0", "redis://:abc@SECRETPW@127.0.0.1:1/0",
      "redis://user/x:SECRETPW@127.0.0.1:1/0" } do
      for _, command in ipairs { "status --redis " .. quote(url),
        "crawl " .. quote(spider) .. " --redis " .. quote(url) .. " -o x.jsonl" } do
        local out, err, code = forage_cli(dir, command, { CHAOS_SITE = "http://127.0.0.1:1", CHAOS_PAGES = 1 })
        assert.is_true(code ~= 0, command)
        assert.is_nil((out .. err):find("SECRETPW", 1, true), ("forage %s printed the password: %s"):format(command,
          err))
      end
    end
  end)

  -- A host retried a Redis gone for good for ever; past its lease its work is the others'.
  it("a host that cannot reach Redis for longer than its lease stops with exit 1, saying so", function()
    local srv = redis_server.start { finally = finally }
    local site <close> = testing.site { pages = 5, per_page = 4 }
    local gate = new_gate()
    local a = start(dir, host_args(srv.url, 1, "-s redis_lease=2"), env_for(site, nil, gate))
    wait_until("the host to commit its start", function() return committed_hosts(srv) == 1 end)
    srv:kill()
    local code, err = a:wait()
    assert.equal(1, code, err)
    assert.matches("unreachable for %d+ s, longer than redis_lease %(2 s%)", err)
  end)
end)
