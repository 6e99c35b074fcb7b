-- The Redis section's machinery (bench/redis_bench.lua): a redis-server of its own, the
-- figures read from it (INFO commandstats and cpu), and one crawl run on H hosts at once.
--
-- Each host is `forage crawl SPIDER --redis URL --redis-prefix PREFIX -o DIR/hostK.jsonl` (the
-- command line a user types on each machine), a child of bench/crawl/measure.py (wall and CPU of
-- its whole process tree); the H of them are started together by one shell and waited for. The
-- crawl's wall time runs from before the first start to after the last exit. The answer is
-- checked on `forage merge`'s output: every movie of the site once, nothing else.

local socket = require "socket"

local M = {}

M.SERVER = os.getenv("BENCH_REDIS_SERVER") or "/usr/bin/redis-server"

-- What the crawl's hosts send Redis themselves (lua/forage/crawl/redis.lua: the connection's
-- AUTH, SELECT and SCRIPT LOAD, then one EVALSHA a batch taken, a commit or a leave), and what a
-- client library may add; every other command in INFO commandstats ran inside those scripts.
-- INFO and CONFIG are the bench's own (CONFIG RESETSTAT before a run, INFO before and after) and
-- are counted in neither.
M.CLIENT_COMMANDS = { evalsha = true, eval = true, evalsha_ro = true, eval_ro = true, fcall = true, auth = true,
  select = true, script = true, hello = true, ping = true, client = true, quit = true, reset = true }
M.BENCH_COMMANDS = { info = true, config = true }

local h -- bench/harness.lua

function M.init(harness) h = harness end

local function alive(pid) return h.sh("kill -0 " .. pid .. " 2>/dev/null") end

-- ---------------------------------------------------------------------------------
-- The server

-- Starts redis-server on a free loopback port in dir (no RDB, no AOF: what is measured is the
-- crawl's traffic, not the disk); returns { url, port, pid, dir, log }, or raises.
function M.start_server(dir)
  local loaded, why = pcall(require, "forage.redis")
  if not loaded then error("forage.redis is not built (make; it needs libhiredis-dev): " .. tostring(why), 0) end
  assert(h.sh("mkdir -p " .. h.quote(dir)))
  local log = dir .. "/redis.log"
  for _ = 1, 5 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    local words = { "exec", "env", "-u", "LD_PRELOAD", M.SERVER, "--bind", "127.0.0.1", "--port", tostring(port),
      "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes" }
    for i, w in ipairs(words) do words[i] = h.quote(w) end
    local f = assert(io.popen(string.format("(%s) >>%s 2>&1 </dev/null & echo $!", table.concat(words, " "),
      h.quote(log))))
    local pid = tonumber(f:read("l"))
    f:close()
    local srv = { url = string.format("redis://127.0.0.1:%d/0", port), port = tonumber(port), pid = pid, dir = dir,
      log = log }
    for _ = 1, 250 do
      if not alive(pid) then break end
      local ok, r = pcall(M.connect, srv)
      if ok and r then
        local pong = r:call("PING")
        r:close()
        if pong == "PONG" then return srv end
      end
      socket.sleep(0.02)
    end
    M.stop_server(srv)
  end
  error("redis-server did not start: " .. tostring(h.read_file(log)), 0)
end

-- Stops the server by its pid (TERM, then KILL) and waits until it is gone.
function M.stop_server(srv)
  if not srv or not srv.pid or not alive(srv.pid) then return end
  h.sh("kill " .. srv.pid .. " 2>/dev/null")
  for i = 1, 250 do
    if not alive(srv.pid) then return end
    if i == 150 then h.sh("kill -9 " .. srv.pid .. " 2>/dev/null") end
    socket.sleep(0.02)
  end
end

-- A forage.redis connection to the server (nil, message when it cannot connect).
function M.connect(srv)
  return require("forage.redis").connect { host = "127.0.0.1", port = srv.port, timeout = 5 }
end

-- INFO's text as { key = value } (numbers where the value is one); commandstats' lines as
-- t.commands = { name = { calls, usec } } (name lowercase, `cmdstat_` cut; a subcommand as
-- "config|resetstat").
function M.parse_info(text)
  local t = { commands = {} }
  for line in text:gmatch("[^\r\n]+") do
    local key, value = line:match("^([^#:][^:]*):(.*)$")
    if key then
      local name = key:match("^cmdstat_(.+)$")
      if name then
        t.commands[name:lower()] = { calls = tonumber(value:match("calls=(%d+)")) or 0,
          usec = tonumber(value:match(",usec=(%d+)")) or 0 }
      else
        t[key] = tonumber(value) or value
      end
    end
  end
  return t
end

-- Splits commandstats into what the clients sent and what ran inside their scripts: { client =
-- calls, script = calls, bench = calls, total = client + script, by_name = { name = calls },
-- script_usec = the microseconds Redis spent in EVALSHA, the commands inside included }. A
-- subcommand counts as its command ("script|load" is a client's SCRIPT).
function M.split_commands(commands)
  local out = { client = 0, script = 0, bench = 0, by_name = {}, script_usec = 0 }
  for name, c in pairs(commands) do
    local base = name:match("^([^|]+)") or name
    out.by_name[base] = (out.by_name[base] or 0) + c.calls
    if base == "evalsha" or base == "eval" then out.script_usec = out.script_usec + c.usec end
    if M.BENCH_COMMANDS[base] then out.bench = out.bench + c.calls
    elseif M.CLIENT_COMMANDS[base] then out.client = out.client + c.calls
    else out.script = out.script + c.calls end
  end
  out.total = out.client + out.script
  return out
end

-- "evalsha 123, zadd 456, ..." by calls, most first (the bench's own left out).
function M.describe_commands(split)
  local names = {}
  for name, calls in pairs(split.by_name) do
    if not M.BENCH_COMMANDS[name] then names[#names + 1] = { name, calls } end
  end
  table.sort(names, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  for i, n in ipairs(names) do names[i] = n[1] .. " " .. n[2] end
  return table.concat(names, ", ")
end

local function info(srv, section)
  local r, err = M.connect(srv)
  if not r then error("redis: " .. tostring(err), 0) end
  local text, message = r:call("INFO", section)
  r:close()
  if not text then error("redis INFO: " .. tostring(message), 0) end
  return M.parse_info(text)
end

local function redis_cpu(srv)
  local i = info(srv, "cpu")
  return (i.used_cpu_sys or 0) + (i.used_cpu_user or 0)
end

-- ---------------------------------------------------------------------------------
-- One crawl on several hosts

local function last_json(text, prefix) -- the JSON of the last line "PREFIX {...}"
  local found
  for line in text:gmatch("[^\n]+") do
    local body = line:match("^" .. prefix .. "%s*(%b{})%s*$")
    if body then found = body end
  end
  if not found then return nil end
  local ok, v = pcall(h.json_decode, found)
  return ok and v or nil
end

local function tail(text)
  local last
  for line in (text or ""):gmatch("[^\n]+") do
    if not line:match("^MEASURE") and line:match("%S") then last = line end
  end
  return (last or "(no output)"):sub(1, 300)
end

-- Runs one crawl on opts.hosts hosts at once and checks its merged output. opts: hosts, srv
-- (M.start_server's), prefix, dir (a directory for this run's files), spider, start (a file),
-- proxies (a file), concurrency, workers, proxy_slots, timeout, answer, details (bench/crawl/
-- answer.lua's), forage (bin/forage). Returns { hosts, wall, pages, items, cpu (all hosts'
-- process trees), host_runs = { { exit, wall, cpu, pages, items, proxies_used } }, commands
-- (M.split_commands'), redis_cpu (seconds: INFO's used_cpu_sys + used_cpu_user over the run), ok,
-- and per page: rate, cpu_per_page, client_per_page, total_per_page, redis_cpu_per_page,
-- script_seconds_per_page } or with .err (did not run) / .wrong (ran, wrong answer).
function M.run(opts)
  local srv = opts.srv
  assert(h.sh("mkdir -p " .. h.quote(opts.dir)))
  local r, err = M.connect(srv)
  if not r then return { hosts = opts.hosts, err = "redis: " .. tostring(err) } end
  local reset, message = r:call("CONFIG", "RESETSTAT")
  r:close()
  if not reset then return { hosts = opts.hosts, err = "CONFIG RESETSTAT: " .. tostring(message) } end
  local cpu0 = redis_cpu(srv)
  local cmds, outs = {}, {}
  for k = 1, opts.hosts do
    local out = string.format("%s/host%d.jsonl", opts.dir, k)
    outs[k] = out
    for _, stale in ipairs { out, (out:gsub("%.jsonl$", ".stats.json")), (out:gsub("%.jsonl$", ".failed.jsonl")) } do
      os.remove(stale) -- a file an earlier run left must not pass for this run's
    end
    local argv = { "env", "-u", "LD_PRELOAD", h.python, h.dir .. "/crawl/measure.py", "--timeout",
      tostring(opts.timeout), "--",
      opts.forage, "crawl", opts.spider, "--redis", srv.url, "--redis-prefix", opts.prefix, "-o", out,
      "--workers", tostring(opts.workers), "--concurrency", tostring(opts.concurrency), "--proxies", opts.proxies,
      "-s", "start=" .. opts.start, "-s", "proxy.slots=" .. tostring(opts.proxy_slots), "-q" }
    for i, a in ipairs(argv) do argv[i] = h.quote(a) end
    cmds[k] = string.format("%s >%s 2>&1 </dev/null &", table.concat(argv, " "),
      h.quote(string.format("%s/host%d.log", opts.dir, k)))
  end
  local forage = require "forage"
  local t0 = forage.now()
  h.sh(table.concat(cmds, "\n") .. "\nwait")
  local wall = forage.now() - t0
  local stats = info(srv, "commandstats")
  local res = { hosts = opts.hosts, wall = wall, cpu = 0, pages = 0, items = 0, host_runs = {},
    redis_cpu = redis_cpu(srv) - cpu0, commands = M.split_commands(stats.commands) }
  local broken = {}
  for k = 1, opts.hosts do
    local log = h.read_file(string.format("%s/host%d.log", opts.dir, k)) or ""
    local m = last_json(log, "MEASURE")
    local st_text = h.read_file((outs[k]:gsub("%.jsonl$", ".stats.json")))
    local st_ok, st = pcall(h.json_decode, st_text or "")
    if not st_ok or type(st) ~= "table" then st = {} end
    local used = 0
    for _, p in ipairs(st.proxies or {}) do
      if (tonumber(p.requests) or 0) > 0 then used = used + 1 end
    end
    local run = { exit = m and m.exit, wall = m and m.wall, cpu = m and m.cpu, pages = tonumber(st.pages) or 0,
      items = tonumber(st.items) or 0, retries = tonumber(st.retries) or 0, proxies_used = used }
    res.host_runs[k] = run
    if not m then
      broken[#broken + 1] = string.format("host %d: measure.py gave no figures: %s", k, tail(log))
    elseif m.timed_out then
      broken[#broken + 1] = string.format("host %d: timed out after %d s", k, opts.timeout)
    elseif m.exit ~= 0 then
      broken[#broken + 1] = string.format("host %d: exit %s: %s", k, tostring(m.exit), tail(log))
    elseif st.finished ~= "done" then
      broken[#broken + 1] = string.format("host %d: its stats say %s, not done: %s", k, tostring(st.finished),
        tail(log))
    end
    res.cpu = res.cpu + (run.cpu or 0)
    res.pages = res.pages + run.pages
    res.items = res.items + run.items
  end
  if #broken > 0 then
    res.err = table.concat(broken, "; ")
    return res
  end
  local merged = opts.dir .. "/merged.jsonl"
  os.remove(merged)
  local out, ok = h.capture({ "env", "-u", "LD_PRELOAD", opts.forage, "merge", "--redis", srv.url, "--redis-prefix",
    opts.prefix, "-o", merged }, 60)
  if not ok then
    res.err = "forage merge failed: " .. tail(out)
    return res
  end
  local good, why = require("answer").check(merged, opts.answer, opts.details)
  if not good then
    res.wrong = why
    return res
  end
  res.ok = true
  res.rate = res.pages / wall
  res.cpu_per_page = res.cpu / res.pages
  res.client_per_page = res.commands.client / res.pages
  res.total_per_page = res.commands.total / res.pages
  res.redis_cpu_per_page = res.redis_cpu / res.pages
  res.script_seconds_per_page = res.commands.script_usec / 1e6 / res.pages
  return res
end

return M
