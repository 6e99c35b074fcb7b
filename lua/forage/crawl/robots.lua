-- robots.txt by RFC 9309, as Google's open-source parser reads it: groups chosen by the
-- crawler's product token (case-insensitive, the `*` group when none names it, groups
-- naming the same agent merged), the longest matching rule wins and Allow wins a tie,
-- `*` and a final `$` are wildcards, paths compared after percent-encoding is normalised.
-- Matching is a linear scan of positions (Google's algorithm), never a backtracking
-- pattern, so a robots.txt full of `*` cannot make it slow.
local args = require "forage.args"

local M = {}

local MAX_BYTES = 500 * 1024   -- RFC 9309 2.5: a crawler must parse at least 500 KiB

local Rules = {}
Rules.__index = Rules

-- Percent-encoding normalised: bytes that may not stand raw in a URL are encoded,
-- escapes of unreserved characters are decoded, the others written in upper-case hex.
local function normalise(s)
  s = s:gsub("%%(%x%x)", function(hex)
    local c = string.char(tonumber(hex, 16))
    if c:match("^[%w%-%._~]$") then return c end
    return "%" .. hex:upper()
  end)
  -- what RFC 3986 lets stand raw: unreserved, reserved, and '%' of the escapes themselves
  return (s:gsub("[^%w%-%._~:/?#%[%]@!$&'()*+,;=%%]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- The product token of a user agent ("Forage/1.0 (+url)" -> "forage"), as Google's
-- parser takes it: the leading run of letters, '_' and '-'.
local function product_token(ua)
  return (ua:match("^%s*([%a_%-]*)") or ""):lower()
end

-- True when `pattern` (normalised, with `*` and a final `$`) matches the start of path.
local function matches(path, pattern)
  local pathlen, patlen = #path, #pattern
  -- positions: the path offsets that the pattern prefix read so far can reach
  local pos, n = { 0 }, 1
  for i = 1, patlen do
    local c = pattern:byte(i)
    if c == 36 and i == patlen then          -- '$' at the end: anchored
      return pos[n] == pathlen
    elseif c == 42 then                      -- '*': every offset from the smallest on
      local first = pos[1]
      n = pathlen - first + 1
      for k = 1, n do pos[k] = first + k - 1 end
      for k = n + 1, #pos do pos[k] = nil end
    else
      local m = 0
      for k = 1, n do
        local p = pos[k]
        if p < pathlen and path:byte(p + 1) == c then
          m = m + 1
          pos[m] = p + 1
        end
      end
      for k = m + 1, n do pos[k] = nil end
      n = m
      if n == 0 then return false end
    end
  end
  return true
end

local function group_for(self, ua)
  local token = product_token(ua)
  return (token ~= "" and self.groups[token]) or self.groups["*"]
end

-- allowed(user_agent, path_with_query) -> boolean.
function Rules:allowed(ua, path)
  args.check(1, ua, "string", "allowed")
  args.check(2, path, "string", "allowed")
  if self.kind ~= "parsed" then return self.kind == "allow_all" end
  if path == "" then path = "/" end
  path = normalise(path)
  if path == "/robots.txt" then return true end   -- RFC 9309 2.2.2: implicitly allowed
  local group = group_for(self, ua)
  if not group then return true end
  local best_len, best_allow = -1, true
  for _, rule in ipairs(group.rules) do
    local len = #rule.pattern
    if (len > best_len or (len == best_len and rule.allow and not best_allow)) and matches(path, rule.pattern) then
      best_len, best_allow = len, rule.allow
    end
  end
  return best_allow
end

-- crawl_delay(user_agent) -> seconds, or nil when the agent's group gives none.
function Rules:crawl_delay(ua)
  args.check(1, ua, "string", "crawl_delay")
  if self.kind ~= "parsed" then return nil end
  local group = group_for(self, ua)
  return group and group.crawl_delay
end

local function new_rules(kind)
  return setmetatable({ kind = kind, groups = {}, sitemaps = {} }, Rules)
end

-- Keys as Google's parser accepts them, typos included.
local KEYS = {
  ["user-agent"] = "user-agent", useragent = "user-agent", ["user agent"] = "user-agent",
  allow = "allow",
  disallow = "disallow", dissallow = "disallow", dissalow = "disallow", disalow = "disallow",
  diasllow = "disallow", disallaw = "disallow",
  ["crawl-delay"] = "crawl-delay",
  sitemap = "sitemap", ["site-map"] = "sitemap",
}

-- parse(text) -> rules. Never raises on content: lines it cannot read are skipped.
function M.parse(text)
  args.check(1, text, "string", "parse")
  local rules = new_rules("parsed")
  if #text > MAX_BYTES then
    text = text:sub(1, MAX_BYTES):match("^(.*)[\r\n]") or ""   -- cut at the last whole line
  end
  text = text:gsub("^\239\187\191", "")    -- a UTF-8 byte order mark
  local current = {}     -- the groups the user-agent lines above name
  local in_rules = false -- a rule seen since the last user-agent line
  text = text:gsub("\r\n?", "\n") .. "\n"
  for line in text:gmatch("([^\n]*)\n") do
    line = line:gsub("#.*", "")
    local key, value = line:match("^%s*([^:]-)%s*:%s*(.-)%s*$")
    if not key then
      key, value = line:match("^%s*(%S+)%s+(.-)%s*$")   -- Google accepts a missing colon
    end
    key = key and KEYS[key:lower()]
    if key == "user-agent" then
      if in_rules then current, in_rules = {}, false end
      local token = value:match("^%*") and "*" or product_token(value)
      if token ~= "" then
        local group = rules.groups[token]
        if not group then
          group = { rules = {} }
          rules.groups[token] = group
        end
        current[#current + 1] = group
      end
    elseif key == "allow" or key == "disallow" then
      in_rules = true
      if value ~= "" then   -- an empty Disallow (or Allow) is no rule: all allowed
        local rule = { allow = key == "allow", pattern = normalise(value) }
        for _, group in ipairs(current) do group.rules[#group.rules + 1] = rule end
      end
    elseif key == "crawl-delay" then
      in_rules = true
      local delay = tonumber(value)
      if delay and delay >= 0 and delay < math.huge then
        for _, group in ipairs(current) do group.crawl_delay = group.crawl_delay or delay end
      end
    elseif key == "sitemap" then
      if value ~= "" then rules.sitemaps[#rules.sitemaps + 1] = value end
    end
  end
  return rules
end

-- for_status(status, body) -> rules, by RFC 9309 2.3.1: a 2xx is parsed; a 4xx means no
-- robots.txt (all allowed), but a 429 is read as the server's trouble, as Google does; a
-- 5xx, a 429 or no answer at all (status nil) disallows everything; a 3xx still standing
-- after the client's redirects is unavailable (all allowed).
function M.for_status(status, body)
  args.check(1, status, "number", "for_status", 2, true)
  args.check(2, body, "string", "for_status", 2, true)
  if status and status >= 200 and status < 300 then return M.parse(body or "") end
  if status and status >= 300 and status < 500 and status ~= 429 then return new_rules("allow_all") end
  return new_rules("disallow_all")
end

return M
