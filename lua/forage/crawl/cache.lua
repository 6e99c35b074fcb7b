-- Responses on disk by request fingerprint, as Scrapy's HTTPCACHE: a re-run of a spider
-- whose selectors are being edited costs no request and no proxy time.
--
-- One file a fingerprint, dir/ab/abcdef..., in forage's wire format, written to a
-- temporary file in the same directory and renamed, so a reader (another worker, the next
-- run) sees a whole entry or none. Entries are decoded in data mode (never code), and an
-- entry that does not decode or lacks a field is a miss: a truncated or corrupt file
-- costs one refetch, never a crash.
local args = require "forage.args"
local output = require "forage.crawl.output"
local forage = require "forage"

local M = {}

local Cache = {}
Cache.__index = Cache

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function mkdir_p(dir)
  return os.execute("mkdir -p -- " .. shell_quote(dir) .. " 2>/dev/null") == true
end

-- A fingerprint as a file name: a lower-case hex string is used as it is; other bytes
-- (forage.url.fingerprint's 16 raw bytes) are written in hex.
local function file_name(fp)
  if #fp >= 3 and fp:match("^[0-9a-f]+$") then return fp end
  return (fp:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function entry_path(self, fp, fname)
  args.check(1, fp, "string", fname, 3)
  if fp == "" then error(string.format("bad argument #1 to '%s' (empty fingerprint)", fname), 3) end
  local name = file_name(fp)
  local sub = name:sub(1, 2)
  return self.dir .. "/" .. sub, self.dir .. "/" .. sub .. "/" .. name
end

-- c:get(fp) -> { status, url, headers, body, request_url }, or nil when the entry is
-- missing, unreadable or corrupt, and always nil when opened with refresh.
function Cache:get(fp)
  local _, path = entry_path(self, fp, "get")
  if self.refresh then
    self.misses = self.misses + 1
    return nil
  end
  local f = io.open(path, "rb")
  local r
  if f then
    local bytes = f:read("a")
    f:close()
    r = bytes and forage.decode(bytes)
    if type(r) ~= "table" or math.type(r.status) ~= "integer" or type(r.url) ~= "string"
        or type(r.body) ~= "string" or type(r.headers) ~= "table" then
      r = nil
    end
  end
  if not r then
    self.misses = self.misses + 1
    return nil
  end
  self.hits = self.hits + 1
  return { status = r.status, url = r.url, headers = r.headers, body = r.body, request_url = r.request_url }
end

-- c:put(fp, response) -> true, or nil, message, "io". Only status, url, headers, body and
-- request_url are kept.
function Cache:put(fp, response)
  local sub, path = entry_path(self, fp, "put")
  args.check(2, response, "table", "put")
  local ok, bytes = pcall(forage.encode, {
    status = response.status, url = response.url, headers = response.headers, body = response.body,
    request_url = response.request_url,
  })
  if not ok then error("bad argument #2 to 'put' (" .. tostring(bytes) .. ")", 2) end
  local written, message = output.write_atomic(path, bytes)
  if not written and not self.made[sub] then   -- its directory, made on first need
    mkdir_p(sub)
    self.made[sub] = true
    written, message = output.write_atomic(path, bytes)
  end
  if not written then return nil, message, "io" end
  self.stores = self.stores + 1
  return true
end

-- open(dir [, { refresh = false }]) -> cache, or nil, message, "io" when dir cannot be
-- made or written. Creates dir and its parents.
function M.open(dir, opts)
  args.check(1, dir, "string", "open")
  opts = args.options("forage.crawl.cache.open", opts, { refresh = true })
  if opts.refresh ~= nil and type(opts.refresh) ~= "boolean" then
    args.bad_option("forage.crawl.cache.open", "refresh", "a boolean", opts.refresh)
  end
  if dir == "" then error("bad argument #1 to 'open' (empty directory name)", 2) end
  dir = dir:gsub("(.)/+$", "%1")
  mkdir_p(dir)
  local probe = string.format("%s/.probe.%d", dir, forage.getpid())
  local f, message = io.open(probe, "wb")
  if not f then return nil, "cache directory " .. args.show(dir) .. " is not writable: " .. message, "io" end
  f:close()
  os.remove(probe)
  return setmetatable({ dir = dir, refresh = opts.refresh == true, hits = 0, misses = 0, stores = 0, made = {} },
    Cache)
end

return M
