-- forage.testing: a local, deterministic copy of the blog's movie site and forward proxies
-- that misbehave on purpose, each served by a process forked on 127.0.0.1 and stopped by
-- close() (or <close>, or the end of the Lua state: dropping the last reference does not
-- stop a server, so that a spider file can start them as locals and return only their
-- URLs). docs/testing.md is the reference; the servers are C (src/fixture_site.c,
-- src/fixture_proxy.c).
local core = require "forage.core"
local args = require "forage.args"

local M = {}

-- The servers not closed yet: held here, so that only close() (or the state's end, when
-- __gc runs for everything) stops one, not the collection of a spider's local variable.
local live = {}

-- Holds obj in `live` until it is closed; returns it. Closed ones (whose counters raise)
-- are let go at the next call.
local function keep(obj)
  for other in pairs(live) do
    if not pcall(other.counters, other) then live[other] = nil end
  end
  live[obj] = true
  return obj
end

-- testing.site{ pages, per_page, latency, page_bytes, robots, seed } -> a Site:
-- site.url, site:start_urls(), site:answer(), site:counters(), site:close().
function M.site(opts)
  args.check(1, opts, "table", "site", 2, true)
  return keep(core.fixture_site(opts))
end

local PROXY_OPTIONS = { behaviour = true, seed = true }

-- testing.proxy("slow:50,ban_after:20") or testing.proxy{ behaviour = "...", seed = 1 }
-- -> a Proxy: p.url, p.bare_url, p.behaviour, p:counters(), p:close().
function M.proxy(spec)
  args.check(1, spec, "string|table", "proxy", 2)
  if type(spec) == "string" then return keep(core.fixture_proxy(spec, 1)) end
  args.options("forage.testing.proxy", spec, PROXY_OPTIONS, 2)
  if type(spec.behaviour) ~= "string" then
    args.bad_option("forage.testing.proxy", "behaviour", "a string", spec.behaviour, 2)
  end
  local seed = spec.seed
  if seed ~= nil and math.type(seed) ~= "integer" then
    args.bad_option("forage.testing.proxy", "seed", "an integer", seed, 2)
  end
  return keep(core.fixture_proxy(spec.behaviour, seed or 1))
end

local Set = {}
Set.__index = Set

-- set:urls() -> { p.url, ... } in order.
function Set:urls()
  local urls = {}
  for i = 1, #self do urls[i] = self[i].url end
  return urls
end

-- set:close(): closes every proxy of the set (idempotent).
function Set:close()
  for i = 1, #self do self[i]:close() end
end

Set.__close = Set.close

-- testing.proxies{ "good", "dead", { behaviour = "reset:0.3", seed = 7 }, ... } -> a list
-- of proxies (set[i], #set) with urls() and close(). A string entry i is seeded with i,
-- so that two "reset:0.3" proxies of one set fault on different requests.
function M.proxies(list)
  args.check(1, list, "table", "proxies", 2)
  local set = setmetatable({}, Set)
  local ok, err = pcall(function()
    for i, spec in ipairs(list) do
      if type(spec) == "string" then
        set[i] = keep(core.fixture_proxy(spec, i))
      elseif type(spec) == "table" then
        set[i] = M.proxy(spec)
      else
        error(string.format("forage.testing.proxies: entry %d must be a string or a table, got %s", i,
          type(spec)), 0)
      end
    end
  end)
  if not ok then
    set:close()   -- the proxies started before the bad entry
    -- said at the caller's line, not at this file's
    error((tostring(err):gsub("^[^\n]-testing%.lua:%d+: ", "")), 2)
  end
  return set
end

return M
