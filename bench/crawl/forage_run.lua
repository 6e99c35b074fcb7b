-- Runs bench/crawl/spider.lua with forage.crawl for the crawl benchmark (in a process of its
-- own, under bench/crawl/measure.py) and prints one JSON line of figures.
--
--   lua5.4 bench/crawl/forage_run.lua SPIDER START_FILE PROXIES_FILE SLOTS OUT_FILE [PROXY_SLOTS [STATE_DIR]]
--
-- SLOTS is the crawl's concurrency; PROXY_SLOTS (default 1) how many slots one proxy serves.
-- STATE_DIR: the crawl keeps its state there (issue 9: `--state DIR --fresh`, as a user
-- starting a crawl over would), and the JSON line gives state.db's size at the end.
-- When forage.crawl is not there yet it prints {"not_built": ...} and exits 0: the bench then
-- reports the forage rows as not built and still runs the peers.

local spider_file, start_file, proxies_file, slots, out_file, proxy_slots, state_dir = table.unpack(arg, 1, 7)
if not out_file then
  io.stderr:write("usage: forage_run.lua SPIDER START_FILE PROXIES_FILE SLOTS OUT_FILE [PROXY_SLOTS [STATE_DIR]]\n")
  os.exit(2)
end

local built, module = pcall(require, "forage.crawl")
local forage = require "forage"
-- forage.crawl as the issue names it; or the module itself when it is the function, or its .crawl
local has, field = pcall(function() return forage.crawl end)
local crawl = (has and type(field) == "function" and field) or (built and type(module) == "function" and module)
  or (built and type(module) == "table" and type(module.crawl) == "function" and module.crawl)
if not built and not tostring(module):match("^module 'forage%.crawl' not found") then
  error(module, 0) -- there, but broken: that is a failed measurement, not "not built yet"
end
if not crawl then
  local why = built and "forage.crawl is not a function" or tostring(module):match("^[^\n]*")
  io.write(string.format('{"not_built":%q}\n', why))
  os.exit(0)
end

local spider = dofile(spider_file)
local opts = {
  output = out_file,
  start = start_file,
  proxies = proxies_file,
  concurrency = math.tointeger(tonumber(slots)),
  workers = tonumber(os.getenv("CRAWL_FORAGE_WORKERS") or "") or forage.cpu_count(),
}
if proxy_slots and tonumber(proxy_slots) > 1 then opts.proxy = { slots = math.tointeger(tonumber(proxy_slots)) } end
if state_dir then opts.state, opts.fresh = state_dir, true end

local t0 = forage.now()
local stats = crawl(spider, opts)
local seconds = forage.now() - t0
local function num(v) return tonumber(v) or 0 end
local function size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end
-- with a state, a crawl that did not finish (a state it could not open or commit) is no figure
if state_dir and stats.exit_code ~= 0 then
  io.stderr:write(string.format("forage_run.lua: the crawl ended with exit %s (%s): %s\n", tostring(stats.exit_code),
    tostring(stats.finished), tostring(stats.message)))
  os.exit(1)
end
local state_bytes = state_dir and size(state_dir .. "/state.db") + size(state_dir .. "/state.db-wal") or 0
io.write(string.format('{"crawler":"forage","pages":%d,"items":%d,"seconds":%.6f,"retries":%d,"slots":%d,'
  .. '"workers":%d,"state":%s,"state_bytes":%d}\n', num(stats.pages), num(stats.items), seconds, num(stats.retries),
  opts.concurrency, opts.workers, state_dir and "true" or "false", state_bytes))
