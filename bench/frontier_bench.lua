-- The frontier section of `make bench` (the crawl issue's row iv, scale): what the crawl's
-- frontier (lua/forage/crawl/frontier.lua over src/frontier.c) costs the parent process.
-- No peer: the targets are absolute.
--
--   queue   1,000,000 requests pushed through frontier.memory (realistic detail URLs, a
--           callback name, depth, priority and the url.fingerprint of each): bytes per
--           request, as the process's RSS grew and as the store counts its own allocations
--           (its seen set included). Target: at most 200 bytes per request.
--   dedupe  10,000,000 distinct fingerprints added to the seen set: ns per URL and bytes
--           per URL at 1M, 5M and 10M, fingerprint excluded (over each stretch, keys made
--           before the clock starts) and included (url.fingerprint + seen, on the last
--           200,000 URLs before each mark: fingerprinting all ten million would take a
--           minute by itself). Target: the amortised cost per URL (every add and every
--           doubling of the table so far, over the URLs so far) at 10M within 2x of that
--           at 1M (see FLAT_TARGET), and the store's bytes per URL no higher at 10M.
--
-- As a module (run.lua): returns a function(h) -> rows, h being bench/harness.lua.
-- As a script: `lua5.4 bench/frontier_bench.lua queue|dedupe` runs one measurement in this
-- fresh process and prints it as JSON.

local QUEUE_REQUESTS = 1000000
local QUEUE_TARGET = 200           -- bytes per request, at most
local DEDUPE_MARKS = { 1000000, 5000000, 10000000 }
local DEDUPE_SAMPLE = 200000       -- URLs fingerprinted and timed before each mark
local DEDUPE_BLOCK = 100000        -- keys made at a time, before the clock starts
-- ns/URL at 10M over ns/URL at 1M, at most. An add does the same work at any size (a hash,
-- a probe or two at a load of at most 3/4, the doublings amortised); what changes is where
-- the table lives: 32 MB at 1M keys sits about in a 32 MB L3 cache, 268 MB at 10M is in
-- DRAM, which costs 1.3x-1.7x per add on the 2-core machine this was written on. A table
-- with a fixed capacity past its load, or a tree, would go far beyond 2x.
local FLAT_TARGET = 2
local TRIAL_TIMEOUT = 60           -- seconds; each trial takes about 10-20 on 2 cores

local function detail_url(i)
  return string.format("http://127.0.0.1:8080/detail/%d?ref=list-%d&sort=rating", 100000 + i, i // 10)
end

-- ---------------------------------------------------------------------------------
-- The forage measurements (each runs in a process of its own)

local trials = {}

-- Resident set size of this process, bytes.
local function rss_bytes()
  local f = assert(io.open("/proc/self/status", "r"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match("VmRSS:%s+(%d+) kB")) * 1024
end

local function settle_heap()
  collectgarbage("collect")
  collectgarbage("collect")
end

function trials.queue(forage)
  local frontier = require "forage.crawl.frontier"
  local fingerprint = forage.url.fingerprint
  fingerprint(detail_url(0))   -- forage.web loaded before the first reading
  local fr = frontier.memory { per_host = 8 }
  settle_heap()
  local rss0, bytes0 = rss_bytes(), fr:counts().bytes
  local t0 = forage.now()
  local url_bytes = 0
  for i = 1, QUEUE_REQUESTS do
    local url = detail_url(i)
    local req = { url = url, host = "127.0.0.1:8080", callback = "detail", depth = 2, priority = -2,
                  fp = fingerprint(url) }
    url_bytes = url_bytes + #url
    if not fr:push(req) then error("a distinct URL was filtered: " .. url) end
  end
  local seconds = forage.now() - t0
  settle_heap()
  local rss1, counts = rss_bytes(), fr:counts()
  if counts.queued ~= QUEUE_REQUESTS then error("queued " .. counts.queued) end
  -- What went in comes out: the first requests, in order, whole.
  local got = fr:pop(8)
  for i, req in ipairs(got) do
    if req.url ~= detail_url(i) or req.callback ~= "detail" or req.depth ~= 2 then
      error("popped " .. tostring(req.url) .. " as request " .. i)
    end
  end
  local n = QUEUE_REQUESTS
  fr:close()
  return {
    requests = n,
    rss_per_request = (rss1 - rss0) / n,
    store_per_request = (counts.bytes - bytes0) / n,
    url_bytes = url_bytes / n,
    push_us = seconds / n * 1e6,
  }
end

function trials.dedupe(forage)
  local fingerprint = forage.url.fingerprint
  local now = forage.now
  local fmt = string.format
  -- Everything the bench itself holds is made before the first RSS reading, so that the
  -- RSS figures are the seen set's: the sample URLs of every mark, and the tables the keys
  -- and fingerprints are made into (reused, each string the size of the one it replaces).
  local samples = {}
  for m, mark in ipairs(DEDUPE_MARKS) do
    local urls = {}
    for i = mark - DEDUPE_SAMPLE + 1, mark do urls[#urls + 1] = detail_url(i) end
    samples[m] = urls
  end
  local keys, fps = {}, {}
  for j = 1, DEDUPE_BLOCK do keys[j] = fmt("%032x", j) end
  for j = 1, DEDUPE_SAMPLE do fps[j] = fmt("%032x", j) end
  -- Keys for URLs from..to, made before the clock starts: a fingerprint's size and shape
  -- (32 hex digits), distinct, cheap to make.
  local function make_keys(from, to)
    local k = 0
    for i = from, to do
      k = k + 1
      keys[k] = fmt("%016x%016x", i * 0x9E3779B1, i)
    end
    return k
  end
  -- One untimed round of the loop's own garbage (key blocks, a sample's fingerprints)
  -- before the first reading: the allocator keeps what the collector frees, so RSS grows by
  -- the bench's garbage once, here, and by the seen set afterwards.
  for round = 1, 4 do make_keys(round * DEDUPE_BLOCK, (round + 1) * DEDUPE_BLOCK - 1) end
  for j = 1, DEDUPE_SAMPLE do fps[j] = fingerprint(samples[1][j]) end
  local f = require("forage.core").frontier()
  settle_heap()
  local rss0, bytes0 = rss_bytes(), f:counts().bytes
  local marks = {}
  local done, stretch_seconds, stretch_start, total_seconds = 0, 0, 0, 0
  for m, mark in ipairs(DEDUPE_MARKS) do
    local sample_from = mark - DEDUPE_SAMPLE + 1
    while done < sample_from - 1 do
      local to = math.min(done + DEDUPE_BLOCK, sample_from - 1)
      local k = make_keys(done + 1, to)
      local t0 = now()
      for j = 1, k do
        if not f:seen_add(keys[j]) then error("a distinct key was seen: " .. keys[j]) end
      end
      stretch_seconds = stretch_seconds + (now() - t0)
      done = to
    end
    -- The last DEDUPE_SAMPLE URLs before the mark: fingerprint excluded, then included.
    local urls = samples[m]
    local t0 = now()
    for j = 1, #urls do fps[j] = fingerprint(urls[j]) end
    local fp_seconds = now() - t0
    t0 = now()
    for j = 1, #urls do
      if not f:seen_add(fps[j]) then error("a distinct URL was seen: " .. urls[j]) end
    end
    local add_seconds = now() - t0
    stretch_seconds = stretch_seconds + add_seconds
    total_seconds = total_seconds + stretch_seconds
    done = mark
    settle_heap()
    local counts = f:counts()
    marks[#marks + 1] = {
      urls = mark,
      ns_excluded = total_seconds / mark * 1e9,   -- amortised: every add and every doubling so far
      ns_stretch = stretch_seconds / (mark - stretch_start) * 1e9,
      ns_sample_excluded = add_seconds / DEDUPE_SAMPLE * 1e9,
      ns_sample_included = (fp_seconds + add_seconds) / DEDUPE_SAMPLE * 1e9,
      store_bytes = (counts.bytes - bytes0) / mark,
      rss_bytes = (rss_bytes() - rss0) / mark,
    }
    stretch_seconds, stretch_start = 0, mark
  end
  if f:counts().seen ~= DEDUPE_MARKS[#DEDUPE_MARKS] then error("seen " .. f:counts().seen) end
  f:close()
  local result = { flat = marks[#marks].ns_excluded / marks[1].ns_excluded }
  for i, m in ipairs(marks) do
    for k, v in pairs(m) do result[k .. "_" .. i] = v end
  end
  return result
end

-- ---------------------------------------------------------------------------------
-- The section

local function run_once(h, name)
  local me = h.dir .. "/frontier_bench.lua"
  local saved = h.trial_timeout
  h.trial_timeout = TRIAL_TIMEOUT
  local v, err = h.trial { h.lua, me, name }
  h.trial_timeout = saved
  return v, err
end

local function section(h)
  local rows = {}
  local q, qerr = run_once(h, "queue")
  local row = { name = string.format("(iv) %s queued requests, bytes/request (RSS | store)",
    h.thousands(QUEUE_REQUESTS)), peer = "-", target = 1, notes = {} }
  if q then
    local worst = math.max(q.rss_per_request, q.store_per_request)
    row.forage = string.format("%.0f B | %.0f B", q.rss_per_request, q.store_per_request)
    row.ratio = QUEUE_TARGET / worst
    row.pass = worst <= QUEUE_TARGET
    row.notes[#row.notes + 1] = string.format("target: at most %d B/request (ratio = %d / the larger figure); "
      .. "a request: URL of %.0f B, callback, depth, priority, 32-hex fingerprint",
      QUEUE_TARGET, QUEUE_TARGET, q.url_bytes)
    row.notes[#row.notes + 1] = string.format("the seen set of their fingerprints included; push %.2f us/request "
      .. "(fingerprint and encode included)", q.push_us)
  else
    row.forage, row.pass, row.err = "-", false, qerr
    row.notes[#row.notes + 1] = "ERROR " .. tostring(qerr)
  end
  rows[#rows + 1] = row

  local d, derr = run_once(h, "dedupe")
  row = { name = string.format("(iv) dedupe %s URLs, ns/URL at 10M vs 1M (fingerprint excluded)",
    h.thousands(DEDUPE_MARKS[#DEDUPE_MARKS])), peer = "-", notes = {},
    target = tonumber(string.format("%.2f", 1 / FLAT_TARGET)) }
  if d then
    row.forage = string.format("%.0f ns -> %.0f ns", d.ns_excluded_1, d.ns_excluded_3)
    row.ratio = 1 / d.flat
    row.pass = d.flat <= FLAT_TARGET and d.store_bytes_3 <= d.store_bytes_1
    row.notes[#row.notes + 1] = string.format("target: the amortised cost per URL at 10M at most %gx that at 1M "
      .. "(ratio = ns at 1M / ns at 10M; a 1M table fits in L3, a 10M one does not), bytes/URL no higher", FLAT_TARGET)
    for i, mark in ipairs(DEDUPE_MARKS) do
      row.notes[#row.notes + 1] = string.format("at %5s: %4.0f ns/URL fp excluded (%4.0f since the last mark), "
        .. "%4.0f ns excluded / %5.0f ns included on the last %s; %4.1f B/URL store, %4.1f B/URL RSS",
        h.thousands(mark / 1e6) .. "M", d["ns_excluded_" .. i], d["ns_stretch_" .. i], d["ns_sample_excluded_" .. i],
        d["ns_sample_included_" .. i], h.thousands(DEDUPE_SAMPLE), d["store_bytes_" .. i], d["rss_bytes_" .. i])
    end
  else
    row.forage, row.pass, row.err = "-", false, derr
    row.notes[#row.notes + 1] = "ERROR " .. tostring(derr)
  end
  rows[#rows + 1] = row
  return rows
end

-- ---------------------------------------------------------------------------------
-- Script mode: one forage measurement, printed as JSON.

if arg and arg[0] and arg[0]:match("frontier_bench%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  require("harness").run_trial(trials, "bench/frontier_bench.lua")
end

return section
