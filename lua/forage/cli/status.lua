-- forage status --state DIR: where a crawl with a state stands (done, queued, in flight,
-- failed, items, each proxy's health), read without changing anything, also while the
-- crawl runs (SQLite's write-ahead log lets a reader in beside the writer).
local M = {
  summary = "Show where a crawl with a state stands (also while it runs).",
  description = "Show where the crawl whose state is in DIR stands: running, stopped (it resumes when run "
    .. "again) or finished; pages, items, failed, queued and in-flight requests as of its last commit "
    .. "(twice a second while it runs), and each proxy's health. Reads the state without changing it.",
}

function M.configure(command)
  command:argument("dir", "The state directory (as given to forage crawl --state)."):args("?")
  command:option("--state", "The state directory."):argname("DIR")
end

local function age(seconds)
  if seconds < 120 then return ("%d s ago"):format(seconds) end
  if seconds < 7200 then return ("%d min ago"):format(seconds // 60) end
  return ("%.1f h ago"):format(seconds / 3600)
end

function M.run(parsed, cli)
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
