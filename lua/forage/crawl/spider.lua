-- A spider: a Lua table of settings and callbacks. This file checks one and fills in the
-- defaults, so that a typo or a bad value stops the crawl before any request, naming it.
--
-- Settings are the keys below; any other key must hold a function (a callback, named by
-- its key: `parse` is the callback of the start URLs). A key that is neither is an error:
-- `forage.crawl: unknown setting 'concurrancy' (a setting or a callback function)`.
local forage = require "forage"
local args = require "forage.args"

local M = {}

local FNAME = "forage.crawl"

-- Setting name -> checker(value, spider) returning the normalised value. nil values keep
-- the default (DEFAULTS) and never reach a checker.
local checkers = {}

-- The defaults a Scrapy user would expect, in forage's units (seconds, counts).
local DEFAULTS = {
  name = "spider",
  concurrency = 16,
  retries = 3,
  timeout = 30,
  connect_timeout = 10,
  delay = 0,
  depth_limit = 0,           -- 0: no limit
  max_pages = 0,             -- 0: no limit
  max_items = 0,
  per_host = 0,              -- 0: no limit
  follow_redirects = 5,      -- redirects followed (0: none)
  max_bytes = 10 << 20,
  cookies = true,            -- a jar per slot
  obey_robots = false,
  user_agent = "forage",
  cache_refresh = false,
}

local PROXY_DEFAULTS = {
  slots = 1,                 -- slots that may hold one proxy at once
  ban_status = { 403, 429 },
  max_failures = 2,          -- proxy failures in a row that cool it
  cooldown = 5,              -- first cooldown (seconds); doubles, jittered, up to max_cooldown
  max_cooldown = 300,
  retire_after = 5,          -- cooldowns in a row that retire it for good (0: never)
  switches = 10,             -- proxy switches one request may make before it fails
}

-- Spider errors carry no position: the spider's author did not write forage's files.
local function bad(key, what, v)
  error(string.format("%s: setting '%s' must be %s, got %s", FNAME, key, what, args.show(v)), 0)
end

local function positive_integer(key, max)
  return function(v)
    if type(v) ~= "number" or v ~= math.floor(v) or v < 1 or v > max then
      bad(key, "an integer from 1 to " .. max, v)
    end
    return math.tointeger(v)
  end
end

local function count(key)
  return function(v)
    if type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v > 1e15 then
      bad(key, "a non-negative integer", v)
    end
    return math.tointeger(v)
  end
end

local function seconds(key)
  return function(v)
    if type(v) ~= "number" or v ~= v or v < 0 then bad(key, "a non-negative number of seconds", v) end
    return v
  end
end

local function boolean(key)
  return function(v)
    if type(v) ~= "boolean" then bad(key, "a boolean", v) end
    return v
  end
end

local function string_setting(key)
  return function(v)
    if type(v) ~= "string" then bad(key, "a string", v) end
    if v:find("[\r\n%z]") then bad(key, "a string without line breaks or NUL bytes", v) end
    return v
  end
end

local function func(key)
  return function(v)
    if type(v) ~= "function" then bad(key, "a function", v) end
    return v
  end
end

checkers.name = string_setting("name")
checkers.concurrency = positive_integer("concurrency", 100000)
checkers.workers = positive_integer("workers", 1024)
checkers.retries = count("retries")
checkers.timeout = seconds("timeout")
checkers.connect_timeout = seconds("connect_timeout")
checkers.delay = seconds("delay")
checkers.depth_limit = count("depth_limit")
checkers.max_pages = count("max_pages")
checkers.max_items = count("max_items")
checkers.per_host = count("per_host")
checkers.max_bytes = count("max_bytes")
checkers.obey_robots = boolean("obey_robots")
checkers.user_agent = string_setting("user_agent")
checkers.cache = function(v)
  if type(v) ~= "string" or v == "" or v:find("[%z\r\n]") then bad("cache", "a directory name", v) end
  return v
end
checkers.cache_refresh = boolean("cache_refresh")
-- the crawl's state directory (docs/state.md): resume after any stop
checkers.state = function(v)
  if type(v) ~= "string" or v == "" or v:find("[%z\r\n]") then bad("state", "a directory name", v) end
  return v
end
-- one crawl on several hosts (docs/redis.md): the Redis it shares, its keys' prefix
-- (the crawl's name by default), and how long a silent host keeps its requests
checkers.redis = function(v)
  local redis = require "forage.crawl.redis"
  local ok, err = redis.parse_url(v)
  if not ok then error(string.format("%s: setting 'redis': %s", FNAME, err), 0) end   -- the password masked
  return v
end
checkers.redis_prefix = function(v)
  if type(v) ~= "string" or not v:match("^[%w_.:-]+$") or #v > 200 then
    bad("redis_prefix", "a name of letters, digits, _ . : -", v)
  end
  return v
end
checkers.redis_lease = function(v)
  if type(v) ~= "number" or v ~= v or v < 1 or v > 86400 then
    bad("redis_lease", "a number of seconds from 1 to 86400", v)
  end
  return v
end
checkers.banned = func("banned")
checkers.on_item = func("on_item")

checkers.follow_redirects = function(v)
  if v == true then return 5 elseif v == false then return 0 end
  return count("follow_redirects")(v)
end

checkers.cookies = function(v)
  if type(v) == "boolean" then return v end
  if type(v) ~= "table" then bad("cookies", "a boolean or a table of name = value", v) end
  for k, value in pairs(v) do
    if type(k) ~= "string" or type(value) ~= "string" or k:find("[=;%s]") or value:find("[;\r\n%z]") then
      bad("cookies", "a table of name = value strings", k)
    end
  end
  return v
end

checkers.allowed_domains = function(v)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then bad("allowed_domains", "a list of host names", v) end
  local list = {}
  for i, d in ipairs(v) do
    if type(d) ~= "string" or d == "" or d:find("[/:%s]") then
      bad("allowed_domains", "a list of host names (no scheme, port or path)", d)
    end
    list[i] = d:lower():gsub("^%.", "")
  end
  return list
end

checkers.headers = function(v)
  if type(v) ~= "table" then bad("headers", "a table of name = value", v) end
  for k, value in pairs(v) do
    if type(k) ~= "string" or type(value) ~= "string" then bad("headers", "a table of name = value strings", k) end
  end
  return v
end

checkers.pipelines = function(v)
  if type(v) == "function" then v = { v } end
  if type(v) ~= "table" then bad("pipelines", "a list of functions", v) end
  for i = 1, #v do
    if type(v[i]) ~= "function" then bad("pipelines", "a list of functions", v[i]) end
  end
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then bad("pipelines", "a list of functions", k) end
  end
  return v
end

-- start: a list of URLs, a file of URLs (one a line; blank lines and # comments skipped),
-- or a function returning an iterator of URLs (or of request tables { url, callback, ... }).
checkers.start = function(v)
  if type(v) == "string" then
    local f, err = io.open(v, "r")
    if not f then error(string.format("%s: cannot read the start file: %s", FNAME, err), 0) end
    f:close()
    return { file = v }
  elseif type(v) == "function" then
    return { fn = v }
  elseif type(v) == "table" then
    for i, u in ipairs(v) do
      if type(u) ~= "string" and not (type(u) == "table" and type(u.url) == "string") then
        bad("start", "a list of URLs", u)
      end
      if i > 1e7 then break end
    end
    return { list = v }
  end
  bad("start", "a list of URLs, the name of a file of URLs, or a function returning an iterator", v)
end

-- A proxy URL with its password masked, for every message and the stats: whatever stands
-- between "scheme://" (or the start) and the last "@" is credentials; "user:***@" keeps the
-- user name, and a user name alone (an API key) is masked whole.
function M.mask(u)
  local scheme, rest = u:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then scheme, rest = "", u end
  local at = rest:match("^.*()@")
  if not at then return u end
  local userinfo = rest:sub(1, at - 1)
  local user = userinfo:match("^([^:]*):")
  return scheme .. (user and user .. ":***" or "***") .. rest:sub(at)
end

local PROXY_SCHEMES = { http = true, https = true, socks5 = true, socks5h = true }

-- Checks one proxy URL; returns it, or raises naming it (password masked).
local function check_proxy_url(u, where)
  if type(u) ~= "string" then bad("proxies", "a list of proxy URLs", u) end
  u = u:match("^%s*(.-)%s*$")
  local parts = forage.url.parse(u)
  local scheme = u:match("^(%a[%w+.-]*)://")
  if not scheme or not parts then
    error(string.format("%s: malformed proxy URL '%s'%s", FNAME, M.mask(u), where), 0)
  end
  if not PROXY_SCHEMES[scheme:lower()] then
    error(string.format("%s: proxy '%s'%s: unknown scheme '%s' (known: http, https, socks5, socks5h)",
      FNAME, M.mask(u), where, scheme), 0)
  end
  if not parts.host or parts.host == "" or not parts.port then
    error(string.format("%s: proxy '%s'%s must name a host and a port", FNAME, M.mask(u), where), 0)
  end
  return u
end

checkers.proxies = function(v)
  local list = {}
  if type(v) == "string" then
    local f, err = io.open(v, "r")
    if not f then error(string.format("%s: cannot read the proxies file: %s", FNAME, err), 0) end
    local n = 0
    for line in f:lines() do
      n = n + 1
      if not line:match("^%s*$") and not line:match("^%s*#") then
        list[#list + 1] = check_proxy_url(line, (" (%s:%d)"):format(v, n))
      end
    end
    f:close()
  elseif type(v) == "table" then
    for i, u in ipairs(v) do list[i] = check_proxy_url(u, (" (proxies[%d])"):format(i)) end
  else
    bad("proxies", "a list of proxy URLs or the name of a file of them", v)
  end
  if #list == 0 then return nil end
  return list
end

local proxy_checkers = {
  slots = positive_integer("proxy.slots", 100000),
  max_failures = positive_integer("proxy.max_failures", 1000000),
  cooldown = seconds("proxy.cooldown"),
  max_cooldown = seconds("proxy.max_cooldown"),
  retire_after = count("proxy.retire_after"),
  switches = count("proxy.switches"),
  ban_status = function(v)
    if type(v) ~= "table" then bad("proxy.ban_status", "a list of HTTP status codes", v) end
    for _, s in ipairs(v) do
      if math.type(s) ~= "integer" or s < 100 or s > 599 then
        bad("proxy.ban_status", "a list of HTTP status codes", s)
      end
    end
    return v
  end,
}

checkers.proxy = function(v)
  if type(v) ~= "table" then bad("proxy", "a table of proxy settings", v) end
  local out = {}
  for k, value in pairs(v) do
    local check = proxy_checkers[k]
    if not check then
      local names = {}
      for name in pairs(proxy_checkers) do names[#names + 1] = name end
      table.sort(names)
      error(string.format("%s: unknown setting 'proxy.%s' (known: %s)", FNAME, tostring(k),
        table.concat(names, ", ")), 0)
    end
    out[k] = check(value)
  end
  return out
end

-- Settings that only forage.crawl's second argument or the command line give, with their
-- checks (nil values pass).
local LOG_LEVELS = { debug = true, info = true, warn = true, error = true }
local RUN_OPTIONS = {
  output = function(v)
    if type(v) ~= "string" or v == "" then bad("output", "a file name, or '-' for stdout", v) end
    if v ~= "-" then
      local ext = v:lower():match("%.(%w+)$")
      if ext ~= "jsonl" and ext ~= "ndjson" and ext ~= "json" and ext ~= "csv" then
        bad("output", "a .jsonl, .ndjson, .json or .csv file, or '-'", v)
      end
    end
  end,
  failed = function(v)
    if type(v) ~= "string" or not v:lower():match("%.jsonl$") and not v:lower():match("%.json$") then
      bad("failed", "a .jsonl file name", v)
    end
  end,
  stats = function(v) if type(v) ~= "string" or v == "" then bad("stats", "a file name", v) end end,
  on_progress = function(v) if type(v) ~= "function" then bad("on_progress", "a function", v) end end,
  log_level = function(v)
    if not LOG_LEVELS[v] then bad("log_level", "one of debug, info, warn, error", v) end
  end,
  quiet = function(v) if type(v) ~= "boolean" then bad("quiet", "a boolean", v) end end,
  fresh = function(v) if type(v) ~= "boolean" then bad("fresh", "a boolean", v) end end,
  grace = function(v)
    if type(v) ~= "number" or v ~= v or v < 0 then bad("grace", "a non-negative number of seconds", v) end
  end,
}

-- The known setting names, sorted, for messages.
local function known_names()
  local names = {}
  for k in pairs(checkers) do names[#names + 1] = k end
  names[#names + 1] = "parse"
  table.sort(names)
  return table.concat(names, ", ")
end

-- Checks spider (and overrides: a table of the same settings plus RUN_OPTIONS); returns a
-- new table: the settings with defaults, `callbacks` (name -> function), `run` (the run
-- options). Raises with a message naming the first bad key.
function M.check(spider, overrides)
  if type(spider) ~= "table" then
    error(string.format("%s: the spider must be a table, got %s", FNAME, type(spider)), 0)
  end
  local s = { callbacks = {}, run = {} }
  for k, v in pairs(DEFAULTS) do s[k] = v end
  local function take(key, value, from_overrides)
    if type(key) ~= "string" then
      error(string.format("%s: a spider's keys are names, got %s", FNAME, args.show(key)), 0)
    end
    if from_overrides and RUN_OPTIONS[key] then
      if value ~= nil then RUN_OPTIONS[key](value) end
      s.run[key] = value
    elseif checkers[key] then
      if value ~= nil then s[key] = checkers[key](value, s) end
    elseif type(value) == "function" then
      s.callbacks[key] = value
    else
      error(string.format("%s: unknown setting '%s' (a setting or a callback function; settings: %s)",
        FNAME, key, known_names()), 0)
    end
  end
  if overrides ~= nil and type(overrides) ~= "table" then
    error(string.format("bad argument #2 to 'crawl' (table expected, got %s)", type(overrides)), 0)
  end
  overrides = overrides or {}
  if type(overrides.proxy) == "table" and type(spider.proxy) == "table" then
    -- `-s proxy.slots=4` changes one proxy setting, not the spider's whole proxy table
    local merged = {}
    for k, v in pairs(spider.proxy) do merged[k] = v end
    for k, v in pairs(overrides.proxy) do merged[k] = v end
    local copy = { proxy = merged }
    for k, v in pairs(overrides) do
      if k ~= "proxy" then copy[k] = v end
    end
    overrides = copy
  end
  -- an overridden setting is not checked as the spider gives it: `start = "start.txt"` in a
  -- spider run with another start file must not need start.txt
  for k, v in pairs(spider) do
    if overrides[k] == nil then take(k, v, false) end
  end
  for k, v in pairs(overrides) do take(k, v, true) end
  if not s.start then
    error(string.format("%s: setting 'start' is required (a list of URLs, a file or a function)", FNAME), 0)
  end
  if not s.callbacks.parse then
    error(string.format("%s: the spider has no 'parse' function (the callback of its start URLs)", FNAME), 0)
  end
  local proxy = {}
  for k, v in pairs(PROXY_DEFAULTS) do proxy[k] = v end
  for k, v in pairs(s.proxy or {}) do proxy[k] = v end
  if proxy.max_cooldown < proxy.cooldown then proxy.max_cooldown = proxy.cooldown end
  s.proxy = proxy
  s.ban_status = {}
  for _, code in ipairs(proxy.ban_status) do s.ban_status[code] = true end
  s.workers = s.workers or forage.cpu_count()
  if s.workers > s.concurrency then s.workers = s.concurrency end
  if s.proxies and #s.proxies * proxy.slots < s.concurrency then
    -- more slots than proxies can serve: the extra slots wait (never a request without a proxy)
    s.idle_slots = s.concurrency - #s.proxies * proxy.slots
  end
  return s
end

-- hash(spider) -> a hex digest naming the spider's code: the files its functions were
-- loaded from (their text as it is now), or the chunks of those loaded from strings. A crawl
-- state belongs to one spider: another file (or the same file changed) does not resume it.
function M.hash(spider)
  local sources, seen = {}, {}
  for _, v in pairs(spider) do
    if type(v) == "function" then
      local source = debug.getinfo(v, "S").source
      if not seen[source] then
        seen[source] = true
        local text = source
        if source:sub(1, 1) == "@" then
          local f = io.open(source:sub(2), "rb")
          if f then text = f:read("a") f:close() end
        end
        sources[#sources + 1] = text
      end
    end
  end
  table.sort(sources)
  return require("forage.core").digest(table.concat(sources, "\0"))
end

-- Iterates the start requests: yields request tables { url, callback = "parse", ... }.
function M.start_iterator(s)
  local start = s.start
  if start.list then
    local i = 0
    return function()
      i = i + 1
      local v = start.list[i]
      if v == nil then return nil end
      if type(v) == "string" then return { url = v } end
      return v
    end
  elseif start.file then
    local f = assert(io.open(start.file, "r"))
    return function()
      while true do
        local line = f:read("l")
        if not line then f:close() return nil end
        line = line:match("^%s*(.-)%s*$")
        if line ~= "" and not line:match("^#") then return { url = line } end
      end
    end
  end
  local it, state, control = start.fn()
  if type(it) ~= "function" then
    error(string.format("%s: 'start' must return an iterator function, got %s", FNAME, type(it)), 0)
  end
  return function()
    local v = it(state, control)
    control = v
    if v == nil then return nil end
    if type(v) == "string" then return { url = v } end
    if type(v) ~= "table" or type(v.url) ~= "string" then
      error(string.format("%s: 'start' gave %s, not a URL or a request table", FNAME, args.show(v)), 0)
    end
    return v
  end
end

-- Loads a spider file: returns the table it returns, or nil and a message in Lua's words
-- ("spider.lua:12: ...") for a syntax error, an error while running it, or a result that
-- is not a table.
function M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, spider = xpcall(chunk, function(e)
    -- the message, and the spider file's own frames only
    local lines = {}
    for line in debug.traceback(tostring(e), 2):gmatch("[^\n]+") do
      if line:find("[C]: in function 'xpcall'", 1, true) then break end
      lines[#lines + 1] = line
    end
    if #lines <= 3 and (lines[#lines] or ""):find("in main chunk", 1, true) then return lines[1] end
    return table.concat(lines, "\n")
  end)
  if not ok then return nil, tostring(spider) end
  if type(spider) ~= "table" then
    return nil, string.format("%s: the spider file must return a table, got %s", path, type(spider))
  end
  return spider
end

return M
