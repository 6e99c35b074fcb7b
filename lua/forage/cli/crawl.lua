-- forage crawl SPIDER.lua: runs a spider file, items to JSON Lines (or CSV), a failed
-- file beside them, stats at the end; exit 0 done, 1 fatal, 2 bad input, 3 no live proxy,
-- 130 interrupted, 143 terminated. With --state DIR, a stopped crawl resumes.
local M = {
  summary = "Run a spider file: items to a file, failures beside them, a live progress line.",
  description = "Run a spider file (a Lua file returning a spider table). Items go to -o FILE "
    .. "(JSON Lines, or CSV for .csv; stdout without -o), failures to items.failed.jsonl for -o "
    .. "items.jsonl or items.csv (at the first failure), stats to items.stats.json.\n"
    .. "Exit codes: 0 done (also when some requests failed), 1 a fatal error stopped the crawl, "
    .. "2 bad arguments or a bad spider, 3 no live proxy left, 130 interrupted (Ctrl-C), 143 terminated "
    .. "(SIGTERM).",
}

function M.configure(command)
  command:argument("spider", "The spider file: a Lua file that returns the spider table.")
  command:option("-o --output", "Write items to FILE (.jsonl JSON Lines, .csv CSV; - for stdout)."):argname("FILE")
  command:option("-s --set", "Override a setting: -s key=value (proxy.slots=4 for the proxy table); repeatable.")
    :argname("KEY=VALUE"):count("*")
  command:option("--workers", "Worker processes (default: the number of CPUs)."):argname("N")
  command:option("--concurrency", "Requests in flight in total (slots)."):argname("N")
  command:option("--proxies", "A file of proxy URLs, one a line."):argname("FILE")
  command:option("--max-pages", "Stop after N pages."):argname("N")
  command:option("--max-items", "Stop after N items."):argname("N")
  command:option("--cache", "Keep responses in DIR and serve them from there next time."):argname("DIR")
  command:flag("--cache-refresh", "Fetch again what the cache has (and store it anew).")
  command:option("--stats", "Write the stats as JSON to FILE (default: beside -o's file)."):argname("FILE")
  command:option("--state", "Keep the crawl's state in DIR: a stopped crawl (Ctrl-C, kill -9, a reboot) "
    .. "resumes when run again with the same DIR."):argname("DIR")
  command:flag("--fresh", "Start over: forget the state in --state DIR.")
  command:option("--redis", "Run this crawl with other hosts through Redis: redis://[user:password@]host:port/db "
    .. "(the password may come from FORAGE_REDIS_PASSWORD instead). Each host writes its own -o FILE.")
    :argname("URL")
  command:option("--redis-prefix", "The crawl's name in Redis (default: the spider's name): crawls with other "
    .. "prefixes share the same Redis.")
    :argname("NAME")
  command:option("--grace", "Seconds in-flight requests have to finish after Ctrl-C or SIGTERM (default 10).")
    :argname("S")
  command:option("--log-level", "debug, info, warn or error (default info)."):argname("LEVEL")
  command:flag("-q --quiet", "Print errors only: no progress line, no summary.")
end

-- Settings whose value is a string even when it looks like a number ("-s user_agent=1.0"),
-- and groups whose entries are strings (headers.X-Token, cookies.session).
local STRING_SETTINGS = { name = true, user_agent = true, cache = true, start = true, proxies = true, state = true,
  redis = true, redis_prefix = true }
local STRING_GROUPS = { headers = true, cookies = true }

-- The value of -s key=value: "10" -> 10, "true" -> true, except for string settings.
local function parse_value(key, v)
  local group = key:match("^(%w+)%.")
  if STRING_SETTINGS[key] or STRING_GROUPS[group] then return v end
  if v == "true" then return true elseif v == "false" then return false end
  local n = tonumber(v)
  if n then return math.tointeger(n) or n end
  return v
end

local LIST_SETTINGS = { allowed_domains = true, start = true, proxies = true, ["proxy.ban_status"] = true }

-- The overrides of -s key=value and the flags; nil and a message for a malformed one.
local function overrides_of(parsed)
  local o = {}
  for _, kv in ipairs(parsed.set or {}) do
    local key, value = kv:match("^([%w_]+%.?[%w_-]*)=(.*)$")
    if not key then return nil, ("-s %s: expected KEY=VALUE"):format(require("forage.args").show(kv)) end
    local v = parse_value(key, value)
    local url_list = (key == "start" or key == "proxies") and value:match("^%a[%w+.-]*://")
    if LIST_SETTINGS[key] and (value:find(",", 1, true) or url_list) then
      local list = {}
      for part in value:gmatch("[^,]+") do list[#list + 1] = parse_value(key, part) end
      v = list
    elseif LIST_SETTINGS[key] and key ~= "start" and key ~= "proxies" then
      v = { v }
    end
    local group, sub = key:match("^(%w+)%.([%w_-]+)$")
    if group then
      o[group] = o[group] or {}
      if type(o[group]) ~= "table" then return nil, ("-s %s: '%s' is not a table of settings"):format(kv, group) end
      o[group][sub] = v
    else
      o[key] = v
    end
  end
  local function number(flag, key)
    local v = parsed[flag]
    if v == nil then return true end
    local n = tonumber(v)
    if not n then
      return nil, ("--%s: expected a number, got %s"):format(flag:gsub("_", "-"), require("forage.args").show(v))
    end
    o[key] = math.tointeger(n) or n
    return true
  end
  for flag, key in pairs { workers = "workers", concurrency = "concurrency", max_pages = "max_pages",
    max_items = "max_items" } do
    local ok, err = number(flag, key)
    if not ok then return nil, err end
  end
  if parsed.proxies then o.proxies = parsed.proxies end
  if parsed.cache then o.cache = parsed.cache end
  if parsed.cache_refresh then o.cache_refresh = true end
  if parsed.state then o.state = parsed.state end
  if parsed.fresh then o.fresh = true end
  if parsed.redis then o.redis = parsed.redis end
  if parsed.redis_prefix then o.redis_prefix = parsed.redis_prefix end
  if parsed.grace then
    local g = tonumber(parsed.grace)
    if not g or g < 0 or g ~= g then
      return nil, ("--grace: expected a non-negative number of seconds, got %s"):format(
        require("forage.args").show(parsed.grace))
    end
    o.grace = g
  end
  return o
end

local function stats_path_for(output)
  if not output or output == "-" then return nil end
  return (output:gsub("%.[^./]*$", "")) .. ".stats.json"
end

-- Appends the proxy table (one line a proxy of the stats' list) to lines; nothing for none.
-- The crawl's summary and forage status print the same table.
function M.proxy_table(lines, proxies)
  if #proxies == 0 then return end
  lines[#lines + 1] = ("  %-32s %-8s %8s %8s %8s %5s %9s  %s"):format("proxy", "state", "requests", "ok",
    "failures", "bans", "cooldowns", "last error")
  for _, p in ipairs(proxies) do
    lines[#lines + 1] = ("  %-32s %-8s %8d %8d %8d %5d %9d  %s"):format(p.url, p.state or "?", p.requests or 0,
      p.successes or 0, p.failures or 0, p.bans or 0, p.cooldowns or 0,
      require("forage.args").show(p.last_error or ""):sub(2, -2))
  end
end

local function summary(stats, out)
  local lines = {}
  lines[#lines + 1] = ("%s: %s: %d pages, %d items, %d failed in %.1f s (%.0f pages/s, %.1f CPU s)"):format(
    stats.name, stats.finished, stats.pages, stats.items, stats.failed, stats.elapsed, stats.pages_per_s,
    stats.cpu_seconds)
  local extra = {}
  for _, k in ipairs { "retries", "proxy_switches", "duplicates", "skipped_links", "offsite", "depth_dropped",
    "robots_forbidden", "cache_hits", "items_dropped", "worker_deaths" } do
    if (stats[k] or 0) > 0 then extra[#extra + 1] = k .. " " .. stats[k] end
  end
  if #extra > 0 then lines[#lines + 1] = "  " .. table.concat(extra, ", ") end
  if stats.failed > 0 then
    lines[#lines + 1] = "  failed requests and items: " .. (stats.failed_output or "in the stats")
  end
  M.proxy_table(lines, stats.proxies)
  out:write(table.concat(lines, "\n"), "\n")
end
M.print_summary = summary

-- The command line that resumes a stopped crawl: this one, without --fresh.
local function resume_command(argv)
  local words = { "forage" }
  for _, a in ipairs(argv or {}) do
    if a ~= "--fresh" then
      words[#words + 1] = a:find("^[%w%-%./_=,:@]+$") and a or "'" .. a:gsub("'", "'\\''") .. "'"
    end
  end
  return table.concat(words, " ")
end

-- Runs spider (a table) with opts; prints the summary; returns the exit code.
function M.crawl(spider, opts, cli, quiet, argv)
  local crawl = require "forage.crawl"
  local ok, err = pcall(crawl.check, spider, opts)
  if not ok then return cli.fail(cli.USAGE, cli.clean_error(err)) end
  local done, stats = xpcall(crawl.run, function(e)
    -- a Ctrl-C before the crawl handles signals itself (while its state opens, say) is
    -- Lua's own "interrupted!"; what was opened is closed and nothing was committed
    if type(e) == "string" and e:find("interrupted!?$") then return "interrupted" end
    if type(e) == "string" then return debug.traceback(e, 2) end
    return e
  end, spider, opts)
  if not done then
    if stats == "interrupted" then return cli.fail(cli.INTERRUPTED, "interrupted") end
    if getmetatable(stats) == crawl.BadInput then return cli.fail(cli.USAGE, stats.message) end
    return cli.fail(cli.FAILED, cli.clean_error(stats))
  end
  if stats.finished == "already_done" then
    io.stderr:write("forage: ", tostring(stats.message), "\n")
    return stats.exit_code
  end
  if not quiet then summary(stats, io.stderr) end
  if stats.exit_code ~= crawl.DONE then
    io.stderr:write("forage: ", tostring(stats.message), "\n")
    if stats.state then
      io.stderr:write("forage: the state is saved in ", stats.state, "; resume with: ", resume_command(argv), "\n")
    elseif stats.redis and stats.exit_code ~= crawl.BAD_INPUT then
      io.stderr:write("forage: what this host held goes back to the crawl's queue in ", stats.redis,
        " (at once when it could leave, else when its lease ends); the same command rejoins the crawl\n")
    end
  end
  return stats.exit_code
end

function M.run(parsed, cli, context)
  local crawl = require "forage.crawl"
  local spider, err = crawl.load(parsed.spider)
  if not spider then return cli.fail(cli.USAGE, err) end
  local opts, bad = overrides_of(parsed)
  if not opts then return cli.fail(cli.USAGE, bad) end
  opts.output = parsed.output or "-"
  if opts.output == "-" then
    opts.failed = (type(spider.name) == "string" and spider.name or "spider") .. ".failed.jsonl"
  end
  opts.stats = parsed.stats or stats_path_for(parsed.output)
  if parsed.log_level then opts.log_level = parsed.log_level end
  opts.quiet = parsed.quiet or nil
  return M.crawl(spider, opts, cli, parsed.quiet, context and context.argv)
end

return M
