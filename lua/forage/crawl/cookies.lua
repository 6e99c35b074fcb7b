-- A cookie jar by RFC 6265 (section 5): Set-Cookie values stored per URL, the Cookie
-- header given back for a URL. Domain (host-only without one), Path (the default path
-- of the request without one), Secure, Max-Age (which wins over Expires) and Expires are
-- honoured; a cookie set again with the same name, domain and path replaces the old one.
-- There is no public-suffix list: a Domain without a dot (`com`) is refused unless it
-- is the host itself, and an IP address host only takes host-only cookies.
local args = require "forage.args"
local url = require("forage").url
local retry_after = require "forage.crawl.retry_after"

local M = {}

local Jar = {}
Jar.__index = Jar

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
                 nov = 11, dec = 12 }

-- RFC 6265 5.1.1: the lenient cookie-date reader (tokens in any order), epoch or nil.
local function cookie_date(s)
  local h, mi, sec, day, month, year
  for token in s:gmatch("[^\9\32-\47\59-\64\91-\96\123-\126]+") do
    local a, b, c = token:match("^(%d%d?):(%d%d?):(%d%d?)")
    if not h and a then
      h, mi, sec = tonumber(a), tonumber(b), tonumber(c)
    elseif not day and token:match("^%d%d?%f[%D]") then
      day = tonumber(token:match("^%d+"))
    elseif not month and MONTHS[token:sub(1, 3):lower()] then
      month = MONTHS[token:sub(1, 3):lower()]
    elseif not year and token:match("^%d%d%d?%d?%f[%D]") then
      year = tonumber(token:match("^%d+"))
    end
  end
  if not (h and day and month and year) then return nil end
  if year >= 70 and year <= 99 then year = year + 1900 elseif year <= 69 then year = year + 2000 end
  if year < 1601 or day > 31 or h > 23 or mi > 59 or sec > 59 then return nil end
  return retry_after.epoch(year, month, day, h, mi, sec)
end

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

-- RFC 6265 5.1.3.
local function domain_match(host, domain)
  if host == domain then return true end
  return not is_ip(host) and #host > #domain and host:sub(-#domain - 1) == "." .. domain
end

-- RFC 6265 5.1.4.
local function default_path(path)
  if path == nil or path:sub(1, 1) ~= "/" then return "/" end
  local dir = path:match("^(.*)/")
  if dir == "" then return "/" end
  return dir
end

local function path_match(request_path, cookie_path)
  if request_path == cookie_path then return true end
  if request_path:sub(1, #cookie_path) ~= cookie_path then return false end
  return cookie_path:sub(-1) == "/" or request_path:sub(#cookie_path + 1, #cookie_path + 1) == "/"
end

local function target(u, fname)
  args.check(1, u, "string", fname, 3)
  local parts, message = url.parse(u)
  if not parts or not parts.host then return nil, message or "no host in url" end
  return { host = parts.host:lower():gsub("%.$", ""), path = parts.path or "/",
           secure = parts.scheme == "https" }
end

-- Splits a Set-Cookie value that forage.http joined with ", " into the cookies it holds:
-- a comma starts a new cookie only when `name=` follows it, which an Expires date's
-- comma ("Wed, 21 Oct 2015 ...") never is.
local function split_joined(s)
  local list, start = {}, 1
  local i = 1
  while true do
    local comma = s:find(",", i, true)
    if not comma then break end
    if s:find("^%s*[^=;,%s]+%s*=", comma + 1) then
      list[#list + 1] = s:sub(start, comma - 1)
      start = comma + 1
    end
    i = comma + 1
  end
  list[#list + 1] = s:sub(start)
  return list
end

local function trim(s) return s:match("^%s*(.-)%s*$") end

-- RFC 6265 5.2 and 5.3: one Set-Cookie value into the jar.
local function store_one(self, t, line, now)
  local pair, rest = line:match("^([^;]*)(.*)$")
  local name, value = pair:match("^([^=]*)=(.*)$")
  if not name then return end   -- no '=': ignored
  name, value = trim(name), trim(value)
  if name == "" then return end
  local cookie = { name = name, value = value, host_only = true, domain = t.host, secure = false }
  local max_age, expires, path
  for attr in rest:gmatch(";([^;]*)") do
    local k, v = attr:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if not k then k, v = trim(attr), "" end
    k = k:lower()
    if k == "expires" then
      expires = cookie_date(v) or expires
    elseif k == "max-age" then
      if v:match("^%-?%d+$") then max_age = tonumber(v) end
    elseif k == "domain" then
      local d = v:gsub("^%.", ""):lower()
      if d ~= "" then cookie.domain_attr = d end
    elseif k == "path" then
      if v:sub(1, 1) == "/" then path = v end
    elseif k == "secure" then
      cookie.secure = true
    end
  end
  if cookie.domain_attr then
    local d = cookie.domain_attr
    if not domain_match(t.host, d) or (not d:find(".", 1, true) and d ~= t.host) then return end
    cookie.host_only, cookie.domain = false, d
    cookie.domain_attr = nil
  end
  if cookie.secure and not t.secure then return end   -- RFC 6265bis: only a secure origin sets one
  cookie.path = path or default_path(t.path)
  if max_age then
    cookie.expires = max_age <= 0 and -math.huge or now + max_age
  elseif expires then
    cookie.expires = expires
  end
  local key = cookie.name .. "\0" .. cookie.domain .. "\0" .. cookie.path
  local old = self.cookies[key]
  if cookie.expires and cookie.expires <= now then
    self.cookies[key] = nil   -- expired already: a deletion
    return
  end
  self.serial = self.serial + 1
  cookie.created = old and old.created or self.serial
  self.cookies[key] = cookie
end

-- jar:store(url, set_cookie [, now_epoch]) -> true, or nil, message for a url it cannot
-- read. set_cookie: a Set-Cookie value, several joined by ", " (as forage.http joins a
-- repeated header), or a list of values. Cookies the rules refuse are left out silently,
-- as a browser does.
function Jar:store(u, values, now)
  local t, message = target(u, "store")
  if not t then return nil, message, "malformed" end
  args.check(2, values, "string|table", "store")
  args.check(3, now, "number", "store", 2, true)
  now = now or os.time()
  local list = type(values) == "string" and split_joined(values) or values
  for i, line in ipairs(list) do
    if type(line) ~= "string" then
      error(string.format("bad argument #2 to 'store' (item %d is a %s, not a string)", i, type(line)), 2)
    end
    store_one(self, t, line, now)
  end
  return true
end

-- jar:header(url [, now_epoch]) -> "a=1; b=2", or nil when no cookie goes to that url.
-- Longer paths first, then older cookies first (RFC 6265 5.4).
function Jar:header(u, now)
  if next(self.cookies) == nil then   -- the common case, without parsing the URL
    args.check(1, u, "string", "header", 2)
    return nil
  end
  local t = target(u, "header")
  if not t then return nil end
  args.check(2, now, "number", "header", 2, true)
  now = now or os.time()
  local chosen = {}
  for key, c in pairs(self.cookies) do
    if c.expires and c.expires <= now then
      self.cookies[key] = nil
    elseif (c.host_only and t.host == c.domain or not c.host_only and domain_match(t.host, c.domain))
        and path_match(t.path, c.path) and (t.secure or not c.secure) then
      chosen[#chosen + 1] = c
    end
  end
  if #chosen == 0 then return nil end
  table.sort(chosen, function(a, b)
    if #a.path ~= #b.path then return #a.path > #b.path end
    return a.created < b.created
  end)
  for i, c in ipairs(chosen) do chosen[i] = c.name .. "=" .. c.value end
  return table.concat(chosen, "; ")
end

-- jar:clear(): forgets every cookie (a slot that takes a new proxy starts a new session).
function Jar:clear()
  self.cookies = {}
end

-- jar() -> an empty jar.
function M.jar()
  return setmetatable({ cookies = {}, serial = 0 }, Jar)
end

return M
