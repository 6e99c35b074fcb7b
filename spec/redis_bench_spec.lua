-- The Redis section of `make bench` (bench/redis_bench.lua, issue 10): its own pieces, on tiny
-- sizes. How commandstats is split into what the hosts sent and what ran inside their scripts,
-- and one crawl through bench/redis/hosts.lua's runner (real redis-server, nginx, tinyproxy,
-- `forage crawl --redis` under bench/crawl/measure.py, `forage merge`): its figures are there,
-- a wrong answer is reported as wrong, a host that did no crawl is an error. The speeds are
-- for `make bench`; nothing here is timed.
package.path = "bench/?.lua;bench/crawl/?.lua;bench/redis/?.lua;" .. package.path
local h = require "harness"
h.dir = "bench" -- the harness takes its directory from arg[0], busted's here
local infra = require "infra"
local site = require "site"
local answers = require "answer"
local hosts = require "hosts"
infra.init(h)
hosts.init(h)

local NEEDS = { hosts.SERVER, infra.NGINX, infra.TINYPROXY, h.python }

local COMMANDSTATS = table.concat({
  "# Commandstats",
  "cmdstat_evalsha:calls=120,usec=9000,usec_per_call=75.00,rejected_calls=0,failed_calls=0",
  "cmdstat_script|load:calls=4,usec=80,usec_per_call=20.00,rejected_calls=0,failed_calls=0",
  "cmdstat_auth:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0",
  "cmdstat_zadd:calls=900,usec=1800,usec_per_call=2.00,rejected_calls=0,failed_calls=0",
  "cmdstat_hget:calls=1000,usec=500,usec_per_call=0.50,rejected_calls=0,failed_calls=0",
  "cmdstat_config|resetstat:calls=1,usec=10,usec_per_call=10.00,rejected_calls=0,failed_calls=0",
  "cmdstat_info:calls=3,usec=60,usec_per_call=20.00,rejected_calls=0,failed_calls=0",
  "",
}, "\r\n")

describe("the Redis bench's command count", function()
  it("reads INFO commandstats, subcommands included", function()
    local info = hosts.parse_info("# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n" .. COMMANDSTATS)
    assert.equal(1.5, info.used_cpu_sys)
    assert.equal(2.25, info.used_cpu_user)
    assert.same({ calls = 120, usec = 9000 }, info.commands.evalsha)
    assert.same({ calls = 4, usec = 80 }, info.commands["script|load"])
  end)

  it("counts as sent what the hosts send, as executed everything but the bench's own INFO and CONFIG", function()
    local split = hosts.split_commands(hosts.parse_info(COMMANDSTATS).commands)
    assert.equal(120 + 4 + 2, split.client)        -- EVALSHA, SCRIPT LOAD, AUTH
    assert.equal(900 + 1000, split.script)         -- ran inside the scripts
    assert.equal(126 + 1900, split.total)
    assert.equal(1 + 3, split.bench)
    assert.equal("hget 1000, zadd 900, evalsha 120, script 4, auth 2", hosts.describe_commands(split))
  end)
end)

describe("the Redis bench's runner (bench/redis/hosts.lua)", function()
  local tmp, srv, origin, proxies, start, answer
  local LISTS = 2
  local DETAILS = LISTS * site.PER_LIST

  local function missing()
    for _, path in ipairs(NEEDS) do
      if not h.sh("test -e " .. h.quote(path)) then return path end
    end
  end

  lazy_setup(function()
    if missing() then return end
    tmp = h.first_line { "mktemp", "-d", "/tmp/forage-redis-bench-spec.XXXXXX" }
    site.write(tmp, LISTS)
    srv = hosts.start_server(tmp .. "/redis")
    origin = infra.start_origin(tmp, 0)
    proxies = infra.start_proxies(tmp, 2, 20)
    start = tmp .. "/start.txt"
    h.write_file(start, string.format("%s/page/1\n%s/page/2\n", origin.url, origin.url))
    answer = answers.read(tmp .. "/answer.tsv", DETAILS)
  end)

  lazy_teardown(function()
    if proxies then infra.stop_proxies(proxies) end
    if origin then infra.stop(origin.pid) end
    if srv then hosts.stop_server(srv) end
    if tmp and tmp:match("^/tmp/forage%-redis%-bench%-spec%.") then h.sh("rm -rf " .. h.quote(tmp)) end
  end)

  -- One host (a second one could join a crawl already over: that is a timing, not a check).
  local function run(prefix, want)
    local need = missing()
    if need then
      pending("needs " .. need .. " (make deps, make bench-deps)")
      return nil
    end
    return hosts.run { hosts = 1, srv = srv, prefix = prefix, dir = tmp .. "/" .. prefix,
      spider = "bench/crawl/spider.lua", start = start, proxies = proxies.file, concurrency = 4, workers = 1,
      proxy_slots = 1, timeout = 60,
      answer = want or answer, details = DETAILS, forage = "bin/forage" }
  end

  it("runs a crawl on Redis, checks its merged items, and counts its pages, CPU and commands", function()
    local r = run("spec-ok")
    if not r then return end
    assert.is_true(r.ok, tostring(r.err or r.wrong))
    assert.equal(LISTS + DETAILS, r.pages)
    assert.equal(DETAILS, r.items)
    assert.equal(0, r.host_runs[1].exit)
    assert.is_true(r.host_runs[1].proxies_used >= 1)
    assert.is_true(r.wall > 0 and r.cpu > 0 and r.redis_cpu >= 0)
    -- at least a join, a batch taken and a commit, each one EVALSHA; the scripts ran more
    assert.is_true(r.commands.by_name.evalsha >= 3, hosts.describe_commands(r.commands))
    assert.is_true(r.commands.script > r.commands.client, hosts.describe_commands(r.commands))
    assert.is_true(r.commands.bench >= 1) -- the bench's CONFIG RESETSTAT, counted apart
    assert.equal(r.pages / r.wall, r.rate)
    assert.equal(r.commands.client / r.pages, r.client_per_page)
  end)

  it("reports a crawl whose items differ from the answer as wrong, not timed", function()
    local bad = {}
    for id, names in pairs(answer or {}) do bad[id] = names end
    bad[3] = "Nobody"
    local r = run("spec-wrong", bad)
    if not r then return end
    assert.is_nil(r.ok)
    assert.is_nil(r.rate)
    assert.truthy(r.wrong and r.wrong:find("1 wrong directors", 1, true), tostring(r.wrong or r.err))
  end)

  it("reports a host that joined a finished crawl as an error, not a run", function()
    local first = run("spec-again")
    if not first then return end
    assert.is_true(first.ok, tostring(first.err or first.wrong))
    local r = run("spec-again")
    assert.is_nil(r.ok)
    assert.truthy(r.err and r.err:find("not done", 1, true), tostring(r.err or r.wrong))
  end)
end)
