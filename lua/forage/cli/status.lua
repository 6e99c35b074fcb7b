-- forage status --state DIR: where a crawl with a state stands (done, queued, in flight,
-- failed, items, each proxy's health), read without changing anything, also while the
-- crawl runs (SQLite's write-ahead log lets a reader in beside the writer).
local M = {
  summary = "Show where a crawl with a state, or on Redis, stands (also while it runs).",
  description = "Show where the crawl whose state is in DIR stands: running, stopped (it resumes when run "
    .. "again) or finished; pages, items, failed, queued and in-flight requests as of its last commit "
    .. "(twice a second while it runs), and each proxy's health. Reads the state without changing it.\n"
    .. "With --redis URL: the crawls that Redis holds (or the one of --redis-prefix), as a whole and per host.",
}

function M.configure(command)
  command:argument("dir", "The state directory (as given to forage crawl --state)."):args("?")
  command:option("--state", "The state directory."):argname("DIR")
  command:option("--redis", "A Redis that crawls on several hosts share: redis://[user:password@]host:port/db.")
    :argname("URL")
  command:option("--redis-prefix", "Only the crawl of this name (default: every crawl in that Redis)."):argname("NAME")
end

local function age(seconds)
  if seconds < 120 then return ("%d s ago"):format(seconds) end
  if seconds < 7200 then return ("%d min ago"):format(seconds // 60) end
  return ("%.1f h ago"):format(seconds / 3600)
end

-- forage status --redis URL: each crawl as a whole, then each host that joined it.
local function redis_status(parsed, cli)
  local redis = require "forage.crawl.redis"
  local crawls, err = redis.inspect(parsed.redis, parsed.redis_prefix)
  if not crawls then return cli.fail(cli.USAGE, "status: " .. err) end
  local lines = {}
  if #crawls == 0 then
    lines[1] = parsed.redis_prefix and ("no crawl '%s' in %s"):format(parsed.redis_prefix, redis.mask(parsed.redis))
      or ("no crawl in %s"):format(redis.mask(parsed.redis))
    io.stdout:write(lines[1], "\n")
    return parsed.redis_prefix and cli.USAGE or cli.OK
  end
  for _, c in ipairs(crawls) do
    local st = c.stats
    local running = 0
    for _, h in ipairs(c.hosts) do if h.state == "running" then running = running + 1 end end
    local where = c.meta.finished == "done" and "finished"
      or running > 0 and ("running on %d host%s"):format(running, running == 1 and "" or "s")
      or "stopped: hosts that run it again rejoin it"
    lines[#lines + 1] = ("crawl '%s' (prefix %s): %s"):format(tostring(c.meta.name), tostring(c.prefix), where)
    lines[#lines + 1] = ("  pages %s, items %s, failed %s, queued %d, in flight %d, seen %d"):format(st.pages or 0,
      st.items or 0, st.failed or 0, c.queued, c.held, c.seen)
    local extra = {}
    for _, key in ipairs { "requests", "retries", "duplicates", "reclaimed", "worker_deaths" } do
      if (tonumber(st[key]) or 0) > 0 then extra[#extra + 1] = key .. " " .. st[key] end
    end
    if #extra > 0 then lines[#lines + 1] = "  " .. table.concat(extra, ", ") end
    lines[#lines + 1] = ("  %-36s %-14s %8s %8s %8s %8s"):format("host", "state", "pages", "items", "failed",
      "held")
    for _, h in ipairs(c.hosts) do
      lines[#lines + 1] = ("  %-36s %-14s %8s %8s %8s %8d"):format(h.id, h.state or "?", h["s:pages"] or 0,
        h["s:items"] or 0, h["s:failed"] or 0, h.held or 0)
    end
    for _, o in ipairs(c.outputs) do
      lines[#lines + 1] = ("  %s on %s: %s (%d bytes committed)"):format(o.kind, o.host, o.path, o.length or 0)
    end
  end
  io.stdout:write(table.concat(lines, "\n"), "\n")
  return cli.OK
end

function M.run(parsed, cli)
  if parsed.redis then
    if parsed.state or parsed.dir then return cli.fail(cli.USAGE, "status: --state and --redis: give one") end
    return redis_status(parsed, cli)
  end
  local dir = parsed.state or parsed.dir
  if not dir then
    return cli.fail(cli.USAGE, "status: which crawl? give its state directory: forage status --state DIR")
  end
  local info, err = require("forage.crawl.state").read(dir)
  if not info then return cli.fail(cli.USAGE, "status: " .. err) end
  local meta = info.meta
  local stats = meta.stats or {}
  local progress = meta.progress or {}
  local lines = {}
  local where
  if info.running_pid then
    where = ("running (pid %d)"):format(info.running_pid)
  elseif meta.finished == "done" then
    where = "finished (forage crawl ... --fresh starts it over)"
  else
    where = "stopped: running it again with this state resumes it"
  end
  lines[#lines + 1] = ("crawl '%s': %s"):format(tostring(meta.name), where)
  lines[#lines + 1] = ("  state %s, last commit %s"):format(info.path,
    meta.updated and age(math.max(0, os.time() - meta.updated)) or "never")
  local queued = progress.queued or 0
  local inflight = progress.inflight or 0
  if not info.running_pid then
    -- stopped: everything in flight when it stopped is queued again at the next run
    queued, inflight = info.requests or queued + inflight, 0
  end
  lines[#lines + 1] = ("  pages %d, items %d, failed %d, queued %d, in flight %d, seen %d"):format(stats.pages or 0,
    stats.items or 0, stats.failed or 0, queued, inflight, progress.seen or 0)
  local extra = {}
  for _, k in ipairs { "requests", "retries", "proxy_switches", "duplicates", "worker_deaths" } do
    if (stats[k] or 0) > 0 then extra[#extra + 1] = k .. " " .. stats[k] end
  end
  if #extra > 0 then lines[#lines + 1] = "  " .. table.concat(extra, ", ") end
  local outputs = meta.outputs or {}
  for _, key in ipairs { "items", "failed" } do
    local o = outputs[key]
    if o then lines[#lines + 1] = ("  %s: %s (%d bytes committed)"):format(key, o.path, o.length) end
  end
  require("forage.cli.crawl").proxy_table(lines, stats.proxies or {})
  io.stdout:write(table.concat(lines, "\n"), "\n")
  return cli.OK
end

return M
